use std::net::IpAddr;

use crate::{Context, Decision, DenyCode, Policy, RequestFacts, Target};

const SEED: &str = include_str!("../tests/fixtures/seed-policy.json");

fn policy(text: &str) -> Policy {
    Policy::from_json_str("test.json", text).unwrap_or_else(|e| panic!("{e}"))
}

/// Any host may be named, 169.254.169.254 may not; the default CIDRs apply.
fn open_policy() -> Policy {
    policy(
        r#"{"agent_id": "a", "network_rules": {"allowed_hosts": ["*"], "denied_hosts": ["169.254.169.254"]}}"#,
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn code<T: std::fmt::Debug>(r: Result<T, crate::Denial>) -> DenyCode {
    match r {
        Ok(v) => panic!("expected a denial, got {v:?}"),
        Err(d) => d.code,
    }
}

fn target(p: &Policy, host: &str) -> Target {
    p.target(host).unwrap_or_else(|d| panic!("{host}: {d}"))
}

/// Business hours on 2026-06-15 (a Monday), 12:00 UTC, in the seed's region.
fn ctx() -> Context {
    Context {
        now_unix_secs: 1_781_481_600 + 12 * 3600,
        region: Some("eu-west-1".into()),
    }
}

const PUBLIC: &[IpAddr] = &[IpAddr::V4(std::net::Ipv4Addr::new(93, 184, 216, 34))];

fn decide(
    p: &Policy,
    method: &str,
    host: &str,
    path: &str,
    resolved: &[IpAddr],
    body: &[u8],
) -> Decision {
    p.decide(
        &RequestFacts {
            method,
            host,
            path,
            resolved,
            body,
        },
        &ctx(),
    )
}

fn denied(d: Decision) -> crate::Denial {
    match d {
        Decision::Deny(d) => d,
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[test]
fn every_spelling_of_the_metadata_address_matches_the_denied_host_entry() {
    let p = open_policy();
    let spellings = [
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
        "0xa9.0376.43518",
        "0x00a9.0xfe.0xa9.0xfe",
        "00000251.0376.0251.0376",
        "169.254.169.254.",
        "0251.0376.0251.0376.",
        "１６９.２５４.１６９.２５４",
        "169。254。169。254",
        "[::ffff:169.254.169.254]",
        "[::ffff:a9fe:a9fe]",
        "[::FFFF:A9FE:A9FE]",
        "[0:0:0:0:0:ffff:a9fe:a9fe]",
        "::ffff:169.254.169.254",
        "[::169.254.169.254]",
        "[::a9fe:a9fe]",
        "[::ffff:0:a9fe:a9fe]",
        "[64:ff9b::a9fe:a9fe]",
        "[64:ff9b::169.254.169.254]",
        "[64:ff9b:1::a9fe:a9fe]",
        "[2002:a9fe:a9fe::]",
        "[2002:A9FE:A9FE:1::1]",
        "[2001:0:4136:e378:8000:63bf:5601:5601]",
    ];
    assert!(spellings.len() >= 30);
    for s in spellings {
        let d = p
            .target(s)
            .err()
            .unwrap_or_else(|| panic!("{s} must be refused"));
        assert_eq!(d.code, DenyCode::HostDenied, "{s}: {d}");
        assert!(
            d.message.contains("denied_hosts entry \"169.254.169.254\""),
            "{s}: {d}"
        );
        // And even without the host rule, the default CIDRs refuse it.
        let t = crate::host::normalise(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(
            code(p.check_addresses(&t, PUBLIC)),
            DenyCode::DestinationDenied,
            "{s}"
        );
    }
    let d = p.target("169.254.169.254").err().map(|d| d.message);
    assert_eq!(
        d.as_deref(),
        Some("host 169.254.169.254 matches denied_hosts entry \"169.254.169.254\"")
    );
}

#[test]
fn internal_addresses_in_any_spelling_are_refused_by_the_default_cidrs() {
    let p = open_policy();
    for s in [
        "127.0.0.1",
        "127.1",
        "0x7f.1",
        "0x7f000001",
        "2130706433",
        "017700000001",
        "0177.0.0.1",
        "0",
        "0.0.0.0",
        "[::1]",
        "[0:0:0:0:0:0:0:1]",
        "[::]",
        "10.0.0.1",
        "012.1",
        "167772161",
        "192.168.1.1",
        "0xc0a80101",
        "172.16.0.1",
        "100.64.0.1",
        "224.0.0.1",
        "255.255.255.255",
        "0xffffffff",
        "[fe80::1]",
        "[FD00::1]",
        "[ff02::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[::127.0.0.1]",
        "[64:ff9b::7f00:1]",
        "[64:ff9b::10.0.0.1]",
        "[2002:7f00:1::]",
        "[2002:c0a8:101::1]",
    ] {
        let d = denied(decide(&p, "GET", s, "/", &[], b""));
        assert_eq!(d.code, DenyCode::DestinationDenied, "{s}: {d}");
        assert!(d.message.contains("denied network"), "{s}: {d}");
    }
}

#[test]
fn localhost_style_names_are_names_and_their_addresses_are_checked() {
    let p = open_policy();
    for name in [
        "localhost",
        "LOCALHOST.",
        "metadata.google.internal",
        "127.0.0.1.nip.io",
        "0x7f.example",
    ] {
        let t = target(&p, name);
        assert_eq!(t.ip, None, "{name}");
        assert_eq!(
            code(p.check_addresses(&t, &[ip("127.0.0.1")])),
            DenyCode::DestinationDenied
        );
        assert!(p.check_addresses(&t, PUBLIC).is_ok());
    }
    assert_eq!(target(&p, "LOCALHOST.").host, "localhost");
    let d = denied(decide(&p, "GET", "localhost", "/", &[], b""));
    assert_eq!(d.code, DenyCode::DestinationDenied);
    assert!(d.message.contains("no resolved address"), "{d}");
}

#[test]
fn malformed_hosts_are_refused_as_malformed() {
    let p = open_policy();
    for s in [
        "",
        "1.2.3.256",
        "example.123",
        "4294967296",
        "ex ample.com",
        "a%2eb.com",
        "a/b",
        "user@host",
        "host:443",
        "[::1",
        "a..b",
        "xn--zz.com",
    ] {
        assert_eq!(code(p.target(s)), DenyCode::MalformedTarget, "{s:?}");
    }
}

#[test]
fn host_rules_from_the_seed() {
    let p = policy(SEED);
    assert_eq!(target(&p, "API.Exchange.COM.").host, "api.exchange.com");
    assert!(p.target("market-data.provider.com").is_ok());
    let d = p
        .target("a.b.internal-network.local")
        .err()
        .map(|d| (d.code, d.message));
    assert_eq!(
        d,
        Some((
            DenyCode::HostDenied,
            "host a.b.internal-network.local matches denied_hosts entry \"*.internal-network.local\"".into()
        ))
    );
    let d = p
        .target("evil.example")
        .err()
        .unwrap_or_else(|| panic!("not allowed"));
    assert_eq!(d.code, DenyCode::HostDenied);
    assert!(
        d.message
            .contains("matches no network_rules.allowed_hosts entry"),
        "{d}"
    );
    assert_eq!(
        code(p.target("internal-network.local")),
        DenyCode::HostDenied
    );
    assert_eq!(
        code(p.target("api.exchange.com.evil.example")),
        DenyCode::HostDenied
    );
}

#[test]
fn no_allowed_hosts_means_nothing_is_allowed() {
    let p = policy(r#"{"agent_id": "a"}"#);
    let d = p
        .target("api.exchange.com")
        .err()
        .unwrap_or_else(|| panic!("denied"));
    assert_eq!(d.code, DenyCode::HostDenied);
    assert!(d.message.contains("no network_rules.allowed_hosts"), "{d}");
}

#[test]
fn idna_hosts_are_matched_in_punycode() {
    let p = policy(
        r#"{"agent_id": "a", "network_rules": {"allowed_hosts": ["bücher.example", "*.xn--caf-dma.example"]}}"#,
    );
    let t = target(&p, "BÜCHER.example");
    assert_eq!(t.host, "xn--bcher-kva.example");
    assert_eq!(
        target(&p, "xn--bcher-kva.example").host,
        "xn--bcher-kva.example"
    );
    assert_eq!(
        target(&p, "www.café.example").host,
        "www.xn--caf-dma.example"
    );
    assert_eq!(code(p.target("buecher.example")), DenyCode::HostDenied);
}

#[test]
fn ip_literal_rules_match_every_spelling_and_embedded_ipv4() {
    let p = policy(
        r#"{"agent_id": "a", "network_rules": {"allowed_hosts": ["93.184.216.34", "[2606:2800::1]"]}}"#,
    );
    assert_eq!(target(&p, "1572395042").host, "93.184.216.34");
    assert_eq!(
        target(&p, "[::ffff:93.184.216.34]").host,
        "::ffff:93.184.216.34"
    );
    assert_eq!(
        target(&p, "[64:ff9b::5db8:d822]").ip,
        Some(ip("64:ff9b::5db8:d822"))
    );
    assert_eq!(target(&p, "[2606:2800:0::0001]").host, "2606:2800::1");
    // 6to4 only routes via the IPv4 address; it does not make the IPv6 host allowed.
    assert_eq!(code(p.target("[2002:5db8:d822::1]")), DenyCode::HostDenied);
}

#[test]
fn check_addresses_checks_every_address() {
    let p = policy(
        r#"{"agent_id": "a", "network_rules": {"allowed_hosts": ["*"], "denied_cidrs": ["203.0.113.0/24", "2001:db8::/32"]}}"#,
    );
    let t = target(&p, "api.example");
    assert!(p
        .check_addresses(&t, &[ip("93.184.216.34"), ip("2606:2800::1")])
        .is_ok());
    let d = p
        .check_addresses(&t, &[ip("93.184.216.34"), ip("10.0.0.7")])
        .err()
        .unwrap_or_else(|| panic!("denied"));
    assert_eq!(d.code, DenyCode::DestinationDenied);
    assert!(
        d.message.contains("10.0.0.7") && d.message.contains("10.0.0.0/8"),
        "{d}"
    );
    let d = p
        .check_addresses(&t, &[ip("203.0.113.9")])
        .err()
        .map(|d| d.message)
        .unwrap_or_default();
    assert!(
        d.contains("203.0.113.0/24") && d.contains("network_rules.denied_cidrs"),
        "{d}"
    );
    assert_eq!(
        code(p.check_addresses(&t, &[ip("2001:db8::5")])),
        DenyCode::DestinationDenied
    );
    assert_eq!(
        code(p.check_addresses(&t, &[ip("::ffff:203.0.113.9")])),
        DenyCode::DestinationDenied
    );
    assert_eq!(
        code(p.check_addresses(&t, &[])),
        DenyCode::DestinationDenied
    );
    // An IP literal's own address counts even when the resolved list looks harmless.
    let literal = target(&p, "10.0.0.1");
    assert_eq!(
        code(p.check_addresses(&literal, PUBLIC)),
        DenyCode::DestinationDenied
    );
}

const TRADING: &str = r#"{
  "agent_id": "trading_bot_v2",
  "network_rules": {"allowed_hosts": ["api.exchange.com", "*.exchange.com"]},
  "execution_constraints": {"allowed_regions": ["eu-west-1"], "allowed_hours": "08:00-17:00 UTC"},
  "actions": [
    {"name": "trade", "match": {"method": ["POST", "PUT"], "host": "api.exchange.com", "path": "/v1/trades"},
     "sign": true, "rate_limit": "20 trades/minute",
     "body": {"/size": {"max": 50000, "min": 1}, "/market": {"in": ["EUR_USD", "GBP_USD"]}}},
    {"match": {"method": "GET", "path": "/v1/orders/*"}},
    {"match": {"method": "*", "path": "/v1/**"}}
  ]
}"#;

fn rule_index(p: &Policy, method: &str, host: &str, path: &str) -> Result<Option<usize>, DenyCode> {
    let t = target(p, host);
    p.action_for(method, &t, path)
        .map(|r| r.map(|r| r.index))
        .map_err(|d| d.code)
}

#[test]
fn path_spellings_all_hit_the_constrained_rule() {
    let p = policy(TRADING);
    for path in [
        "/v1/trades",
        "/v1//trades",
        "/V1/Trades/",
        "/v1/%74rades",
        "/v1/%54RADES",
        "//v1/trades",
        "/v1/trades?size=1",
        "/v1/trades/?",
        "/v1/trades;x=1",
    ] {
        assert_eq!(
            rule_index(&p, "POST", "api.exchange.com", path),
            Ok(Some(0)),
            "{path}"
        );
    }
    assert_eq!(
        rule_index(&p, "post", "API.EXCHANGE.COM", "/v1/trades"),
        Ok(Some(0))
    );
    assert_eq!(
        rule_index(&p, "PUT", "api.exchange.com", "/v1/trades"),
        Ok(Some(0))
    );
    for path in [
        "/v1/./trades",
        "/v1/%2e%2e/x",
        "/v1/x/../trades",
        "/v1%2ftrades",
        "/v1\\trades",
        "v1/trades",
        "/v1/tr%zzades",
    ] {
        assert_eq!(
            rule_index(&p, "POST", "api.exchange.com", path),
            Err(DenyCode::MalformedTarget),
            "{path}"
        );
    }
    assert_eq!(
        rule_index(&p, "PO ST", "api.exchange.com", "/v1/trades"),
        Err(DenyCode::MalformedTarget)
    );
}

#[test]
fn rules_match_in_order_by_method_host_and_path() {
    let p = policy(TRADING);
    // Another host skips rule 0 (host-specific) and lands on the catch-all.
    assert_eq!(
        rule_index(&p, "POST", "eu.exchange.com", "/v1/trades"),
        Ok(Some(2))
    );
    assert_eq!(
        rule_index(&p, "GET", "api.exchange.com", "/v1/trades"),
        Ok(Some(2))
    );
    assert_eq!(
        rule_index(&p, "GET", "api.exchange.com", "/v1/orders/42"),
        Ok(Some(1))
    );
    // `*` stays within a segment, `**` crosses.
    assert_eq!(
        rule_index(&p, "GET", "api.exchange.com", "/v1/orders/42/fills"),
        Ok(Some(2))
    );
    assert_eq!(
        rule_index(&p, "DELETE", "api.exchange.com", "/v1/a/b/c"),
        Ok(Some(2))
    );
    assert_eq!(rule_index(&p, "GET", "api.exchange.com", "/v2/x"), Ok(None));
    assert_eq!(rule_index(&p, "GET", "api.exchange.com", "/"), Ok(None));
}

fn body_check(p: &Policy, body: &str) -> Result<(), String> {
    let rule = &p.actions()[0];
    p.check_body(rule, body.as_bytes()).map_err(|d| {
        assert_eq!(d.code, DenyCode::ActionDenied, "{d}");
        d.message
    })
}

#[test]
fn body_constraints() {
    let p = policy(TRADING);
    assert_eq!(
        body_check(&p, r#"{"market": "EUR_USD", "size": 45000}"#),
        Ok(())
    );
    assert_eq!(
        body_check(&p, r#"{"market": "GBP_USD", "size": "45000"}"#),
        Ok(())
    );
    assert!(body_check(&p, r#"{"market": "GBP_USD", "size": "0.5e1"}"#).is_err());
    assert_eq!(
        body_check(&p, r#"{"market": "EUR_USD", "size": 50000.0}"#),
        Ok(())
    );
    assert_eq!(
        body_check(&p, r#"{"market": "EUR_USD", "size": 5e4}"#),
        Ok(())
    );
    assert_eq!(
        body_check(&p, r#"{"market": "EUR_USD", "size": 500000}"#),
        Err("/size = 500000 exceeds max 50000 (trade)".into())
    );
    assert!(body_check(&p, r#"{"market": "EUR_USD", "size": 50000.000001}"#).is_err());
    assert!(body_check(&p, r#"{"market": "EUR_USD", "size": "500000"}"#).is_err());
    assert!(body_check(&p, r#"{"market": "EUR_USD", "size": 0.5}"#)
        .is_err_and(|m| m.contains("below min 1")));
    assert!(body_check(&p, r#"{"market": "EUR_USD", "size": -45000}"#).is_err());
    assert!(body_check(&p, r#"{"market": "EUR_USD", "size": 1e400}"#).is_err());
    for size in [
        "\"45,000\"",
        "\" 45000\"",
        "\"+45000\"",
        "\"0x10\"",
        "\"1e3\"",
        "\"045000\"",
        "\"NaN\"",
        "\"Infinity\"",
        "true",
        "null",
        "[1]",
        "{}",
    ] {
        let body = format!(r#"{{"market": "EUR_USD", "size": {size}}}"#);
        assert!(body_check(&p, &body).is_err(), "{size}");
    }
    assert!(
        body_check(&p, r#"{"market": "EUR_USD"}"#).is_err_and(|m| m.contains("/size is missing"))
    );
    assert!(body_check(&p, r#"{"market": "XAU_USD", "size": 1}"#)
        .is_err_and(|m| m.contains("is not one of")));
    assert!(body_check(&p, r#"{"market": "eur_usd", "size": 1}"#).is_err());
    assert!(
        body_check(&p, r#"{"size": 1, "size": 900000, "market": "EUR_USD"}"#)
            .is_err_and(|m| m.contains("duplicate key"))
    );
    assert!(body_check(
        &p,
        r#"{"market": "EUR_USD", "size": 1, "meta": {"a": 1, "a": 2}}"#
    )
    .is_err());
    for body in [
        "",
        "   ",
        "not json",
        "{\"market\": \"EUR_USD\", \"size\": 1,}",
        "{'size': 1}",
        "[1]",
        "{\"size\": 1} {}",
        "/*c*/{\"market\": \"EUR_USD\", \"size\": 1}",
    ] {
        assert!(body_check(&p, body).is_err(), "{body:?}");
    }
    let rule = &p.actions()[0];
    assert!(p.check_body(rule, &[0xff, 0xfe]).is_err());
    // A rule without body constraints needs no body.
    assert!(p.check_body(&p.actions()[1], b"\xff").is_ok());
}

#[test]
fn in_compares_numbers_by_value_and_nested_pointers_work() {
    let p = policy(
        r#"{"agent_id": "a", "actions": [{"match": {"path": "/x"}, "body": {"/order/legs/0/qty": {"in": [1, 2.5, 10]}, "/order/flag": {"in": [true, null, {"k": [1]}]}, "/a~1b": {"min": -5}}}]}"#,
    );
    let check = |b: &str| p.check_body(&p.actions()[0], b.as_bytes());
    assert!(check(r#"{"order": {"legs": [{"qty": 2.50}], "flag": true}, "a/b": -5}"#).is_ok());
    assert!(
        check(r#"{"order": {"legs": [{"qty": 1e1}], "flag": {"k": [1.0]}}, "a/b": "3"}"#).is_ok()
    );
    assert!(check(r#"{"order": {"legs": [{"qty": 3}], "flag": true}, "a/b": 0}"#).is_err());
    assert!(check(r#"{"order": {"legs": [{"qty": "1"}], "flag": true}, "a/b": 0}"#).is_err());
    assert!(check(r#"{"order": {"legs": [{"qty": 1}], "flag": false}, "a/b": 0}"#).is_err());
    assert!(check(r#"{"order": {"legs": [{"qty": 1}], "flag": null}, "a/b": -5.1}"#).is_err());
    assert!(check(r#"{"order": {"legs": [], "flag": null}, "a/b": 0}"#).is_err());
}

#[test]
fn execution_hours_and_regions() {
    let p = policy(SEED);
    let at = |h: i64, m: i64, region: Option<&str>| Context {
        now_unix_secs: 1_781_481_600 + h * 3600 + m * 60,
        region: region.map(str::to_string),
    };
    assert!(p.check_execution(&at(8, 0, Some("eu-west-1"))).is_ok());
    assert!(p.check_execution(&at(16, 59, Some("eu-west-1"))).is_ok());
    let d = p
        .check_execution(&at(17, 0, Some("eu-west-1")))
        .err()
        .unwrap_or_else(|| panic!("after hours"));
    assert_eq!(d.code, DenyCode::OutsideAllowedHours);
    assert_eq!(
        d.message,
        "it is 17:00 UTC, outside allowed_hours 08:00-17:00 UTC"
    );
    assert_eq!(
        code(p.check_execution(&at(7, 59, Some("eu-west-1")))),
        DenyCode::OutsideAllowedHours
    );
    assert_eq!(
        code(p.check_execution(&at(12, 0, Some("us-east-1")))),
        DenyCode::RegionDenied
    );
    assert_eq!(
        code(p.check_execution(&at(12, 0, None))),
        DenyCode::RegionDenied
    );
    assert_eq!(
        code(p.check_execution(&at(12, 0, Some("EU-WEST-1")))),
        DenyCode::RegionDenied
    );
    let night = policy(
        r#"{"agent_id": "a", "execution_constraints": {"allowed_hours": "22:00-06:00 UTC", "allowed_regions": []}}"#,
    );
    assert!(night.check_execution(&at(23, 30, None)).is_ok());
    assert!(night.check_execution(&at(5, 59, None)).is_ok());
    assert_eq!(
        code(night.check_execution(&at(6, 0, None))),
        DenyCode::OutsideAllowedHours
    );
    assert!(policy(r#"{"agent_id": "a"}"#)
        .check_execution(&at(3, 0, None))
        .is_ok());
}

#[test]
fn decide_runs_the_stages_in_order() {
    let p = policy(TRADING);
    let good = br#"{"market": "EUR_USD", "size": 45000}"#;
    assert_eq!(
        decide(&p, "POST", "api.exchange.com", "/v1/trades", PUBLIC, good),
        Decision::Allow { action: Some(0) }
    );
    assert_eq!(
        decide(&p, "GET", "api.exchange.com", "/v2/status", PUBLIC, b""),
        Decision::Allow { action: None }
    );
    type Case<'a> = (&'a str, &'a str, &'a [IpAddr], &'a [u8], DenyCode);
    let cases: [Case<'_>; 6] = [
        (
            "evil.example",
            "/v1/trades",
            PUBLIC,
            good,
            DenyCode::HostDenied,
        ),
        (
            "api.exchange.com",
            "/v1/trades",
            &[],
            good,
            DenyCode::DestinationDenied,
        ),
        (
            "api.exchange.com",
            "/v1/trades",
            &[IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 169, 254))],
            good,
            DenyCode::DestinationDenied,
        ),
        (
            "api.exchange.com",
            "/v1/../trades",
            PUBLIC,
            good,
            DenyCode::MalformedTarget,
        ),
        (
            "api.exchange.com",
            "/v1/trades",
            PUBLIC,
            br#"{"market": "EUR_USD", "size": 500000}"#,
            DenyCode::ActionDenied,
        ),
        (
            "api.exchange.com:443",
            "/v1/trades",
            PUBLIC,
            good,
            DenyCode::MalformedTarget,
        ),
    ];
    for (host, path, resolved, body, want) in cases {
        assert_eq!(
            denied(decide(&p, "POST", host, path, resolved, body)).code,
            want,
            "{host} {path}"
        );
    }
    let late = Context {
        now_unix_secs: 1_781_481_600 + 20 * 3600,
        region: Some("eu-west-1".into()),
    };
    let facts = RequestFacts {
        method: "POST",
        host: "api.exchange.com",
        path: "/v1/trades",
        resolved: PUBLIC,
        body: good,
    };
    assert!(
        matches!(p.decide(&facts, &late), Decision::Deny(d) if d.code == DenyCode::OutsideAllowedHours)
    );
}

#[test]
fn deny_codes_have_stable_names() {
    let all = [
        (DenyCode::MalformedTarget, "malformed_target"),
        (DenyCode::HostDenied, "host_denied"),
        (DenyCode::DestinationDenied, "destination_denied"),
        (DenyCode::ActionDenied, "action_denied"),
        (DenyCode::OutsideAllowedHours, "outside_allowed_hours"),
        (DenyCode::RegionDenied, "region_denied"),
    ];
    for (c, s) in all {
        assert_eq!(c.as_str(), s);
        assert_eq!(c.to_string(), s);
    }
    let d = crate::Denial::new(DenyCode::HostDenied, "x");
    assert_eq!(d.to_string(), "host_denied: x");
}

#[test]
fn policy_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync + Clone + std::fmt::Debug>() {}
    assert_send_sync::<Policy>();
    assert_send_sync::<Target>();
    assert_send_sync::<crate::Denial>();
}

/// Deterministic pseudo-random inputs over characters that matter to the parsers; any
/// panic fails the test.
#[test]
fn no_input_panics() {
    let alphabet: Vec<char> =
        "{}[]\":,./\\%~*?0123456789abcdefxX:[]-_ \t\n\u{0}é。１\u{200b}eE+-trufalsn/"
            .chars()
            .collect();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let p = policy(TRADING);
    let t = target(&p, "api.exchange.com");
    let rule = &p.actions()[0];
    for _ in 0..4000 {
        let len = (next() % 40) as usize;
        let s: String = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let _ = Policy::from_json_str("fuzz", &s);
        let _ = Policy::from_json_str(
            "fuzz",
            &format!("{{\"agent_id\": \"a\", \"actions\": [{s}]}}"),
        );
        let _ = p.target(&s);
        let _ = crate::host::HostPattern::new(&s);
        let _ = p.action_for("GET", &t, &s);
        let _ = p.action_for(&s, &t, "/v1/trades");
        let _ = p.check_body(rule, s.as_bytes());
        let _ = crate::hours::HoursWindow::parse(&s);
        let _ = crate::RateLimit::parse(&s);
        let _ = crate::decimal::Decimal::parse(&s, true);
    }
    let deep = "[".repeat(10_000);
    assert!(p.check_body(rule, deep.as_bytes()).is_err());
    assert!(Policy::from_json_str("deep", &deep).is_err());
}
