//! Host normalisation: one canonical spelling per destination, so that rules written for
//! one spelling hold for all of them (`0251.0376.0251.0376` is `169.254.169.254`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

use crate::cidr;
use crate::error::{Denial, DenyCode};
use crate::glob::Matcher;

/// A request's destination after normalisation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Lower-case punycode name, or an IP address's canonical text (IPv6 without brackets).
    pub host: String,
    /// Some when the host is an IP literal.
    pub ip: Option<IpAddr>,
}

impl Target {
    /// Spellings the host rules are matched against. The bool says whether an allow rule may
    /// match that spelling: an IPv4 address embedded in an IPv6 literal always counts for
    /// denial, but only counts for allowance where the connection really goes to that IPv4
    /// address (IPv4-mapped, NAT64 well-known prefix); 6to4 and Teredo only route via it.
    pub(crate) fn forms(&self) -> Forms<'_> {
        let mut embedded: Vec<(String, bool)> = Vec::new();
        if let Some(IpAddr::V6(v6)) = self.ip {
            // The host itself is IPv6 text here, never one of these.
            for e in cidr::embedded_ipv4(&v6) {
                let text = e.v4.to_string();
                if !embedded.iter().any(|(t, _)| *t == text) {
                    embedded.push((text, e.same_destination));
                } else if e.same_destination {
                    for (t, allow) in &mut embedded {
                        if *t == text {
                            *allow = true;
                        }
                    }
                }
            }
        }
        Forms {
            host: &self.host,
            embedded,
        }
    }
}

/// A target's spellings (see [`Target::forms`]). A name or an IPv4 address
/// has only its own, which is borrowed: nothing is allocated per request.
pub(crate) struct Forms<'a> {
    host: &'a str,
    embedded: Vec<(String, bool)>,
}

impl Forms<'_> {
    /// Each spelling, the host first, with whether an allow rule may match it.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, bool)> {
        std::iter::once((self.host, true)).chain(
            self.embedded
                .iter()
                .map(|(text, allow)| (text.as_str(), *allow)),
        )
    }
}

/// The canonical form of a host without applying any rule (what `Policy::target` checks
/// the rules against); for report mode, where a denied host is still forwarded.
pub fn normalize_host(raw_host: &str) -> Result<Target, Denial> {
    normalise(raw_host).map_err(|m| Denial::new(DenyCode::MalformedTarget, m))
}

/// Normalises a host as the agent wrote it (no port). Errors say what is wrong with it.
pub(crate) fn normalise(raw: &str) -> Result<Target, String> {
    if raw.is_empty() {
        return Err("empty host".into());
    }
    if let Some(inner) = raw.strip_prefix('[') {
        let Some(inner) = inner.strip_suffix(']') else {
            return Err(format!("host {raw:?} has an unclosed '['"));
        };
        return ipv6(inner, raw);
    }
    if raw.contains(':') {
        // Only an IPv6 literal may contain ':' here; a port must already be split off.
        return ipv6(raw, raw);
    }
    check_raw_chars(raw)?;
    let ascii = Uts46::new()
        .to_ascii(
            raw.as_bytes(),
            AsciiDenyList::URL,
            Hyphens::Allow,
            DnsLength::Ignore,
        )
        .map_err(|_| {
            format!("host {raw:?} is not a valid internationalised domain name (UTS-46)")
        })?;
    let name = ascii.strip_suffix('.').unwrap_or(&ascii);
    check_name(name, raw)?;
    if ends_in_number(name) {
        return match parse_ipv4(name) {
            Some(v4) => Ok(Target {
                host: v4.to_string(),
                ip: Some(IpAddr::V4(v4)),
            }),
            None => Err(format!(
                "host {raw:?} ends in a number but is not a valid IPv4 address"
            )),
        };
    }
    Ok(Target {
        host: name.to_string(),
        ip: None,
    })
}

fn ipv6(text: &str, raw: &str) -> Result<Target, String> {
    if text.contains('%') {
        return Err(format!(
            "host {raw:?}: IPv6 zone identifiers are not allowed"
        ));
    }
    let v6: Ipv6Addr = text.parse().map_err(|_| {
        format!("host {raw:?} is not a valid IPv6 literal (and a host must not carry a port)")
    })?;
    Ok(Target {
        host: v6.to_string(),
        ip: Some(IpAddr::V6(v6)),
    })
}

fn check_raw_chars(raw: &str) -> Result<(), String> {
    for c in raw.chars() {
        let ok = if c.is_ascii() {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')
        } else {
            !c.is_control() && !c.is_whitespace()
        };
        if !ok {
            return Err(format!(
                "host {raw:?} contains {c:?}, which a host name cannot contain"
            ));
        }
    }
    Ok(())
}

/// Checks the ASCII result of UTS-46 processing, which can map exotic characters to ASCII
/// ones (a full-width dot becomes '.'), so this runs after it.
fn check_name(name: &str, raw: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("host {raw:?} is empty"));
    }
    if name.len() > 253 {
        return Err(format!("host {raw:?} is longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(format!("host {raw:?} has an empty label"));
        }
        if label.len() > 63 {
            return Err(format!(
                "host {raw:?} has a label longer than 63 characters"
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_')))
        {
            return Err(format!(
                "host {raw:?} contains {c:?}, which a host name cannot contain"
            ));
        }
    }
    Ok(())
}

/// WHATWG URL "ends in a number": such a host is an IPv4 address or invalid, never a name.
fn ends_in_number(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    match last.strip_prefix("0x") {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => false,
    }
}

/// inet_aton / WHATWG IPv4 parsing: 1–4 parts, each decimal, octal (leading 0) or hex (0x);
/// the last part fills the remaining bytes.
pub(crate) fn parse_ipv4(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(parts.len());
    for p in &parts {
        nums.push(parse_ipv4_number(p)?);
    }
    let (last, init) = nums.split_last()?;
    if init.iter().any(|&n| n > 255) {
        return None;
    }
    let last_bits = 8 * (5 - nums.len() as u32);
    if *last >= 1u64 << last_bits {
        return None;
    }
    let mut value: u64 = 0;
    for (i, n) in init.iter().enumerate() {
        value |= n << (24 - 8 * i as u32);
    }
    value |= last;
    u32::try_from(value).ok().map(Ipv4Addr::from)
}

fn parse_ipv4_number(p: &str) -> Option<u64> {
    let (digits, radix) = if let Some(hex) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        (hex, 16)
    } else if p.len() > 1 && p.starts_with('0') {
        (&p[1..], 8)
    } else {
        (p, 10)
    };
    if digits.is_empty() {
        // "0x" alone is zero in WHATWG; a bare empty part is not a number.
        return if radix == 16 { Some(0) } else { None };
    }
    let mut value: u64 = 0;
    for c in digits.chars() {
        let d = c.to_digit(radix)?;
        value = value
            .checked_mul(u64::from(radix))?
            .checked_add(u64::from(d))?;
        if value > u64::from(u32::MAX) {
            return None;
        }
    }
    Some(value)
}

/// A host rule from the policy: the entry as written (for messages) and its matcher.
#[derive(Debug, Clone)]
pub(crate) struct HostPattern {
    pub written: String,
    pub normalised: String,
    matcher: Matcher,
}

impl HostPattern {
    /// Normalises an entry so it means the same for every spelling of a host: literal hosts
    /// (no glob characters) go through `normalise`; glob labels are lower-cased and their
    /// plain labels converted to punycode.
    pub fn new(entry: &str) -> Result<HostPattern, String> {
        let normalised = normalise_pattern(entry)?;
        let matcher = Matcher::new(&normalised, |b| {
            b.literal_separator(false);
        })
        .map_err(|e| format!("invalid host glob {entry:?}: {e}"))?;
        Ok(HostPattern {
            written: entry.to_string(),
            normalised,
            matcher,
        })
    }

    pub fn is_match(&self, host: &str) -> bool {
        self.matcher.is_match(host)
    }
}

const GLOB_CHARS: &[char] = &['*', '?', '[', ']', '{', '}'];

fn normalise_pattern(entry: &str) -> Result<String, String> {
    if entry.is_empty() {
        return Err("empty host pattern".into());
    }
    let bracketed_ip = entry.starts_with('[') && entry.ends_with(']');
    if bracketed_ip || !entry.contains(GLOB_CHARS) {
        return normalise(entry).map(|t| t.host);
    }
    if let Some(c) = entry
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || matches!(c, '/' | '\\' | '@' | '%' | '#'))
    {
        return Err(format!(
            "host glob {entry:?} contains {c:?}, which no host can contain"
        ));
    }
    let lower = entry.to_ascii_lowercase();
    let trimmed = lower.strip_suffix('.').unwrap_or(&lower);
    let mut labels = Vec::new();
    for label in trimmed.split('.') {
        if label.is_empty() {
            return Err(format!("host glob {entry:?} has an empty label"));
        }
        if label.contains(GLOB_CHARS) {
            if !label.is_ascii() {
                return Err(format!(
                    "host glob {entry:?}: a label with glob characters must be ASCII (write it in punycode)"
                ));
            }
            labels.push(label.to_string());
        } else {
            let ascii = Uts46::new()
                .to_ascii(
                    label.as_bytes(),
                    AsciiDenyList::URL,
                    Hyphens::Allow,
                    DnsLength::Ignore,
                )
                .map_err(|_| {
                    format!("host glob {entry:?}: label {label:?} is not a valid IDNA label")
                })?;
            labels.push(ascii.into_owned());
        }
    }
    Ok(labels.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(raw: &str) -> String {
        match normalise(raw) {
            Ok(t) => t.host,
            Err(e) => panic!("{raw:?} should normalise: {e}"),
        }
    }

    #[test]
    fn ipv4_spellings_are_canonicalised() {
        for s in [
            "169.254.169.254",
            "2852039166",
            "0251.0376.0251.0376",
            "0xa9fea9fe",
            "0xA9FEA9FE",
            "0XA9FEA9FE",
            "0xA9.0xFE.0xA9.0xFE",
            "169.254.43518",
            "169.16689662",
            "0251.254.169.254",
            "0xa9.254.0251.0xfe",
            "169.254.169.254.",
            "00000251.0376.0251.0376",
            "0x000000a9.0xfe.0xa9.0xfe",
            "１６９.２５４.１６９.２５４",
            "169。254。169。254",
        ] {
            assert_eq!(host(s), "169.254.169.254", "{s}");
        }
        assert_eq!(host("127.1"), "127.0.0.1");
        assert_eq!(host("0x7f.1"), "127.0.0.1");
        assert_eq!(host("0"), "0.0.0.0");
        assert_eq!(host("0x"), "0.0.0.0");
        assert_eq!(host("4294967295"), "255.255.255.255");
    }

    #[test]
    fn invalid_numeric_hosts_are_refused() {
        for s in [
            "4294967296",
            "256.1.1.1",
            "1.2.3.256",
            "1.2.65536",
            "1.2.3.4.5",
            "08.1.1.1",
            "0x1g.1.1.1",
            "example.123",
            "example.0x10",
            "99999999999999999999999",
            "1.2.3.09",
        ] {
            assert!(normalise(s).is_err(), "{s} should be refused");
        }
    }

    #[test]
    fn names_are_lower_cased_punycoded_and_validated() {
        assert_eq!(host("API.Exchange.COM."), "api.exchange.com");
        assert_eq!(host("BÜCHER.example"), "xn--bcher-kva.example");
        assert_eq!(host("a_b.example"), "a_b.example");
        assert_eq!(host("localhost"), "localhost");
        assert_eq!(normalise("localhost").map(|t| t.ip), Ok(None));
        assert_eq!(host("1.2.3.example"), "1.2.3.example");
        for s in [
            "",
            ".",
            "a..b",
            ".a",
            "a..",
            "a b",
            "a%2eb",
            "a/b",
            "a\\b",
            "u@h",
            "h\u{0}",
            "xn--zz.com",
            "℀.com",
            "example.com:443",
            "[::1",
            "[fe80::1%eth0]",
            "a\tb",
        ] {
            assert!(normalise(s).is_err(), "{s:?} should be refused");
        }
        let long = format!("{}.com", "a".repeat(64));
        assert!(normalise(&long).is_err());
    }

    #[test]
    fn normalize_host_is_public_and_rule_free() {
        let t = normalize_host("0xA9FEA9FE").unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(t.host, "169.254.169.254");
        assert_eq!(t.ip, Some(IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254))));
        let d = normalize_host("a b").err().map(|d| d.code);
        assert_eq!(d, Some(DenyCode::MalformedTarget));
    }

    #[test]
    fn ipv6_literals_are_canonical_rfc5952() {
        assert_eq!(host("[::1]"), "::1");
        assert_eq!(host("[0:0:0:0:0:0:0:1]"), "::1");
        assert_eq!(host("[2001:DB8:0:0:1:0:0:1]"), "2001:db8::1:0:0:1");
        assert_eq!(host("[::FFFF:A9FE:A9FE]"), "::ffff:169.254.169.254");
        assert_eq!(host("::ffff:169.254.169.254"), "::ffff:169.254.169.254");
    }

    #[test]
    fn embedded_ipv4_forms_count_for_denial_and_only_exact_ones_for_allowance() {
        let t = normalise("[::ffff:a9fe:a9fe]").unwrap_or_else(|e| panic!("{e}"));
        assert!(t.forms().iter().any(|f| f == ("169.254.169.254", true)));
        let t = normalise("[2002:a9fe:a9fe::1]").unwrap_or_else(|e| panic!("{e}"));
        assert!(t.forms().iter().any(|f| f == ("169.254.169.254", false)));
    }

    #[test]
    fn patterns_are_normalised_like_hosts() {
        let n = |s: &str| normalise_pattern(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(n("0xA9FEA9FE"), "169.254.169.254");
        assert_eq!(n("*.Internal-Network.LOCAL."), "*.internal-network.local");
        assert_eq!(n("*.bücher.example"), "*.xn--bcher-kva.example");
        assert_eq!(n("[::1]"), "::1");
        assert!(normalise_pattern("*.a..b").is_err());
        assert!(normalise_pattern("*/x").is_err());
        assert!(HostPattern::new("{a,b").is_err());
        assert!(HostPattern::new("1.2.3.256").is_err());
    }

    #[test]
    fn star_crosses_dots_but_needs_the_dot() {
        let p = HostPattern::new("*.internal-network.local").unwrap_or_else(|e| panic!("{e}"));
        assert!(p.is_match("a.internal-network.local"));
        assert!(p.is_match("a.b.internal-network.local"));
        assert!(!p.is_match("internal-network.local"));
        assert!(!p.is_match("evilinternal-network.local"));
    }
}
