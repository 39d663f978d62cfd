//! Request path normalisation. Deliberately conservative: every spelling of a constrained
//! path must still hit the constraint, and spellings that servers disagree about
//! (encoded slashes and dots, backslashes, dot segments) are refused outright.

/// Normalises a request path (`/v1//Trades/?x=1` → `/v1/Trades`): query and fragment are
/// dropped, `;` path parameters ignored (servers that strip them would otherwise see a path
/// the rules never saw), unreserved characters percent-decoded, slashes collapsed.
pub(crate) fn normalise_request_path(raw: &str) -> Result<String, String> {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    normalise(&raw[..end], false)
}

/// Normalises a policy path glob the same way, so that it means what a request path means.
pub(crate) fn normalise_pattern(raw: &str) -> Result<String, String> {
    if raw.contains(';') || raw.contains('#') {
        return Err(format!(
            "path glob {raw:?} must not contain ';' or '#' (path parameters and fragments are ignored when matching)"
        ));
    }
    normalise(raw, true)
}

fn normalise(raw: &str, pattern: bool) -> Result<String, String> {
    if !raw.starts_with('/') {
        return Err(format!("path {raw:?} does not start with '/'"));
    }
    let decoded = decode(raw)?;
    // "/" and the non-empty segments joined by "/", built in one string.
    let mut normal = String::with_capacity(decoded.len() + 1);
    for seg in decoded.split('/') {
        let base = if pattern {
            seg
        } else {
            seg.split(';').next().unwrap_or(seg)
        };
        if base == "." || base == ".." {
            return Err(format!("path {raw:?} contains a dot segment"));
        }
        if !base.is_empty() {
            normal.push('/');
            normal.push_str(base);
        }
    }
    if normal.is_empty() {
        normal.push('/');
    }
    Ok(normal)
}

fn decode(raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b < 0x20 || b == 0x7f {
            return Err(format!("path {raw:?} contains a control character"));
        }
        if b >= 0x80 || b == b' ' {
            return Err(format!(
                "path {raw:?} contains a character that must be percent-encoded"
            ));
        }
        if b == b'\\' {
            return Err(format!("path {raw:?} contains '\\'"));
        }
        if b != b'%' {
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let hex = |j: usize| bytes.get(j).and_then(|c| char::from(*c).to_digit(16));
        let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
            return Err(format!("path {raw:?} contains invalid percent-encoding"));
        };
        let v = (hi * 16 + lo) as u8;
        match v {
            b'/' | b'\\' | b'.' => {
                return Err(format!(
                    "path {raw:?} contains an encoded '{}', which servers decode differently",
                    char::from(v)
                ))
            }
            0..=0x1f | 0x7f => {
                return Err(format!(
                    "path {raw:?} contains an encoded control character"
                ))
            }
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => out.push(char::from(v)),
            _ => out.push_str(&format!("%{v:02X}")),
        }
        i += 3;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        normalise_request_path(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn spelling_variants_collapse_to_one_form() {
        for s in [
            "/v1/trades",
            "/v1//trades",
            "//v1///trades//",
            "/v1/trades/",
            "/v1/%74rades",
            "/v1/%74%72%61%64%65%73",
            "/%76%31/trades",
            "/v1/trades?size=1",
            "/v1/trades#frag",
            "/v1/trades;jsessionid=1",
            "/v1;x=1/trades",
        ] {
            assert_eq!(n(s), "/v1/trades", "{s}");
        }
        assert_eq!(n("/V1/Trades/"), "/V1/Trades");
        assert_eq!(n("/"), "/");
        assert_eq!(n("//"), "/");
        assert_eq!(n("//;x/"), "/");
        assert_eq!(n("/?x"), "/");
        assert_eq!(n("/a%20b"), "/a%20b");
        assert_eq!(n("/a%2ab"), "/a%2Ab");
        assert_eq!(n("/a/.b/c..d"), "/a/.b/c..d");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for s in [
            "",
            "v1/trades",
            "*",
            "http://h/v1/trades",
            "/v1/./trades",
            "/v1/../trades",
            "/v1/trades/.",
            "/v1/trades/..",
            "/..",
            "/v1/..;/admin",
            "/v1/%2e%2e/x",
            "/v1/%2E/x",
            "/v1/.%2e/x",
            "/v1%2ftrades",
            "/v1%2Ftrades",
            "/v1%5ctrades",
            "/v1\\trades",
            "/v1/trades\u{0}",
            "/v1/%00",
            "/v1/%7f",
            "/v1/tr\tades",
            "/v1/%zz",
            "/v1/%4",
            "/v1/%",
            "/v1/tr ades",
            "/v1/träde",
        ] {
            assert!(
                normalise_request_path(s).is_err(),
                "{s:?} should be refused"
            );
        }
    }

    #[test]
    fn patterns_normalise_like_paths() {
        let p = |s: &str| normalise_pattern(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(p("/v1/trades/"), "/v1/trades");
        assert_eq!(p("/v1//orders/*"), "/v1/orders/*");
        assert_eq!(p("/v1/**"), "/v1/**");
        assert!(normalise_pattern("v1/*").is_err());
        assert!(normalise_pattern("/v1/../x").is_err());
        assert!(normalise_pattern("/v1;x").is_err());
    }
}
