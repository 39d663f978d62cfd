//! Denied networks, including the IPv4 addresses hidden inside IPv6 ones: a NAT64 or
//! IPv4-mapped address reaches the same IPv4 host, so it must meet the same rules.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Networks that are denied whatever the policy says: this host, private and link-local
/// networks (169.254.169.254 is the cloud metadata service), CGNAT, multicast, reserved.
pub fn default_denied_cidrs() -> Vec<IpNet> {
    let v4: [([u8; 4], u8); 10] = [
        ([0, 0, 0, 0], 8),
        ([127, 0, 0, 0], 8),
        ([10, 0, 0, 0], 8),
        ([172, 16, 0, 0], 12),
        ([192, 168, 0, 0], 16),
        ([169, 254, 0, 0], 16),
        ([100, 64, 0, 0], 10),
        ([224, 0, 0, 0], 4),
        ([240, 0, 0, 0], 4),
        ([255, 255, 255, 255], 32),
    ];
    let v6: [([u16; 8], u8); 5] = [
        ([0; 8], 128),
        ([0, 0, 0, 0, 0, 0, 0, 1], 128),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
    ];
    let v4 = v4
        .iter()
        .filter_map(|(a, p)| IpNet::new(IpAddr::V4(Ipv4Addr::from(*a)), *p).ok());
    let v6 = v6
        .iter()
        .filter_map(|(a, p)| IpNet::new(IpAddr::V6(Ipv6Addr::from(*a)), *p).ok());
    v4.chain(v6).collect()
}

/// Parses a `denied_cidrs` entry; a bare address is a single host. Host bits are cleared
/// (`10.0.0.1/8` denies `10.0.0.0/8`): in a deny list the wider reading is the safe one.
pub(crate) fn parse_cidr(s: &str) -> Result<IpNet, String> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(format!(
        "{s:?} is not a CIDR; expected e.g. \"10.0.0.0/8\", \"fd00::/8\" or a single address"
    ))
}

/// An IPv4 address found inside an IPv6 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Embedded {
    pub v4: Ipv4Addr,
    pub how: &'static str,
    /// The connection really ends at `v4` (not merely routed through it).
    pub same_destination: bool,
}

fn v4_at(o: &[u8; 16], idx: [usize; 4]) -> Ipv4Addr {
    Ipv4Addr::new(o[idx[0]], o[idx[1]], o[idx[2]], o[idx[3]])
}

/// Every IPv4 address an IPv6 address may stand for. Where the layout is not fixed (the
/// NAT64 local-use prefix may be any RFC 6052 length), every candidate is returned: a false
/// candidate can only cause a denial, a missed one could let a request through.
pub(crate) fn embedded_ipv4(a: &Ipv6Addr) -> Vec<Embedded> {
    let o = a.octets();
    let s = a.segments();
    let last = v4_at(&o, [12, 13, 14, 15]);
    let mut out = Vec::new();
    let mut push = |v4, how, same_destination| {
        out.push(Embedded {
            v4,
            how,
            same_destination,
        })
    };
    if s[..5] == [0; 5] && s[5] == 0xffff {
        push(last, "IPv4-mapped", true);
    }
    if s[..6] == [0; 6] {
        push(last, "IPv4-compatible", false);
    }
    if s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 {
        push(last, "IPv4-translated (SIIT)", false);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        push(last, "NAT64 (64:ff9b::/96)", true);
    }
    if s[..3] == [0x64, 0xff9b, 1] {
        // RFC 6052 layouts for prefixes /48, /56, /64 and /96 (bits 64..71 are the "u" octet).
        push(
            v4_at(&o, [6, 7, 9, 10]),
            "NAT64 local-use (64:ff9b:1::/48)",
            false,
        );
        push(
            v4_at(&o, [7, 9, 10, 11]),
            "NAT64 local-use (64:ff9b:1::/48)",
            false,
        );
        push(
            v4_at(&o, [9, 10, 11, 12]),
            "NAT64 local-use (64:ff9b:1::/48)",
            false,
        );
        push(last, "NAT64 local-use (64:ff9b:1::/48)", false);
    }
    if s[0] == 0x2002 {
        push(v4_at(&o, [2, 3, 4, 5]), "6to4 (2002::/16)", false);
    }
    if s[0] == 0x2001 && s[1] == 0 {
        let client = Ipv4Addr::from(!u32::from(last));
        push(client, "Teredo client (2001::/32)", false);
    }
    out
}

/// A denied network with where it came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeniedNet {
    pub net: IpNet,
    pub origin: &'static str,
}

/// The first reason `addr` is denied, as a sentence; None when it may be dialled.
pub(crate) fn denial_reason(addr: IpAddr, nets: &[DeniedNet]) -> Option<String> {
    let hit = |ip: IpAddr| nets.iter().find(|d| d.net.contains(&ip));
    if let Some(d) = hit(addr) {
        return Some(format!(
            "address {addr} is in denied network {} ({})",
            d.net, d.origin
        ));
    }
    if let IpAddr::V6(v6) = addr {
        for e in embedded_ipv4(&v6) {
            if let Some(d) = hit(IpAddr::V4(e.v4)) {
                return Some(format!(
                    "address {addr} embeds IPv4 {} ({}), which is in denied network {} ({})",
                    e.v4, e.how, d.net, d.origin
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Vec<DeniedNet> {
        default_denied_cidrs()
            .into_iter()
            .map(|net| DeniedNet {
                net,
                origin: "default",
            })
            .collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn default_list_is_complete() {
        let d = default_denied_cidrs();
        assert_eq!(d.len(), 15);
        for s in ["169.254.0.0/16", "100.64.0.0/10", "fc00::/7", "::1/128"] {
            assert!(
                d.contains(&s.parse().unwrap_or_else(|e| panic!("{e}"))),
                "{s}"
            );
        }
    }

    #[test]
    fn internal_addresses_are_denied_by_default() {
        let nets = defaults();
        for s in [
            "0.0.0.0",
            "127.0.0.1",
            "10.1.2.3",
            "172.31.255.255",
            "192.168.0.1",
            "169.254.169.254",
            "100.100.100.200",
            "224.0.0.251",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "ff02::1",
            "::ffff:169.254.169.254",
            "::ffff:7f00:1",
            "::169.254.169.254",
            "::ffff:0:a9fe:a9fe",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::10.0.0.1",
            "64:ff9b:1:a9fe:a9:fe00::",
            "64:ff9b:1::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "2002:7f00:1::",
            "2001:0:4136:e378:8000:63bf:5601:5601",
        ] {
            assert!(
                denial_reason(ip(s), &nets).is_some(),
                "{s} should be denied"
            );
        }
    }

    #[test]
    fn public_addresses_pass() {
        let nets = defaults();
        for s in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert_eq!(denial_reason(ip(s), &nets), None, "{s}");
        }
    }

    #[test]
    fn teredo_client_is_the_inverted_last_32_bits() {
        let e = embedded_ipv4(
            &"2001:0:4136:e378:8000:63bf:3fff:fdd2"
                .parse()
                .unwrap_or(Ipv6Addr::UNSPECIFIED),
        );
        assert!(e.iter().any(|e| e.v4 == Ipv4Addr::new(192, 0, 2, 45)));
    }

    #[test]
    fn messages_name_address_and_network() {
        let m = denial_reason(ip("64:ff9b::a9fe:a9fe"), &defaults()).unwrap_or_default();
        assert!(m.contains("64:ff9b::a9fe:a9fe"), "{m}");
        assert!(m.contains("169.254.169.254"), "{m}");
        assert!(m.contains("169.254.0.0/16"), "{m}");
    }

    #[test]
    fn cidr_entries_parse() {
        assert_eq!(
            parse_cidr("10.0.0.1/8"),
            Ok("10.0.0.0/8".parse().unwrap_or_else(|e| panic!("{e}")))
        );
        assert_eq!(
            parse_cidr("1.2.3.4"),
            Ok("1.2.3.4/32".parse().unwrap_or_else(|e| panic!("{e}")))
        );
        assert_eq!(
            parse_cidr("fd00::1"),
            Ok("fd00::1/128".parse().unwrap_or_else(|e| panic!("{e}")))
        );
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("10.0.0/8").is_err());
        assert!(parse_cidr("").is_err());
    }
}
