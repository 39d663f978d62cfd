use std::time::Duration;

use crate::{Access, Mode, Policy, PolicyError};

const SEED: &str = include_str!("../tests/fixtures/seed-policy.json");

fn load(text: &str) -> Policy {
    Policy::from_json_str("policy.json", text).unwrap_or_else(|e| panic!("should load:\n{e}"))
}

fn errors(text: &str) -> Vec<PolicyError> {
    match Policy::from_json_str("policy.json", text) {
        Ok(_) => panic!("should not load:\n{text}"),
        Err(e) => e.0,
    }
}

/// The single error at `key`, failing with the full list otherwise.
fn error_at(errs: &[PolicyError], key: &str) -> PolicyError {
    let hits: Vec<_> = errs.iter().filter(|e| e.key == key).collect();
    assert_eq!(hits.len(), 1, "one error at {key} expected in {errs:#?}");
    hits[0].clone()
}

#[test]
fn seed_policy_loads_with_its_comments() {
    assert!(
        SEED.contains("// block IMDS on AWS"),
        "fixture must be the seed verbatim"
    );
    let p = load(SEED);
    assert_eq!(p.agent_id(), "trading_bot_v2");
    assert_eq!(p.version(), Some("1.0.0"));
    assert_eq!(p.mode(), Mode::Enforce);
    let ex = p.execution_constraints();
    assert_eq!(ex.allowed_regions, vec!["eu-west-1".to_string()]);
    let hours = ex.allowed_hours.unwrap_or_else(|| panic!("hours"));
    assert_eq!((hours.start_minute, hours.end_minute), (8 * 60, 17 * 60));
    assert_eq!(p.max_concurrent_actions(), Some(5));
    let rate = p.rate_limit().unwrap_or_else(|| panic!("rate"));
    assert_eq!(rate.count.get(), 100);
    assert_eq!(rate.period, Duration::from_secs(3600));
    assert_eq!(rate.text, "100 trades/hour");
    let da = p.data_access();
    assert_eq!(da.len(), 3);
    assert_eq!(da[0].path, "/data/market-feeds/*");
    assert_eq!(da[0].access, vec![Access::Read]);
    assert_eq!(da[1].access, vec![Access::Read, Access::Write]);
    assert_eq!(da[2].access, vec![Access::Write]);
    let hosts: Vec<&str> = p
        .allowed_hosts
        .iter()
        .map(|h| h.normalised.as_str())
        .collect();
    assert_eq!(hosts, ["api.exchange.com", "market-data.provider.com"]);
    let denied: Vec<&str> = p
        .denied_hosts
        .iter()
        .map(|h| h.normalised.as_str())
        .collect();
    assert_eq!(denied, ["*.internal-network.local", "169.254.169.254"]);
    let r = p.revocation();
    assert!(r.enabled && !r.fail_open);
    assert_eq!(r.cache_ttl_seconds, 5);
    assert!(p.actions().is_empty());
    assert_eq!(p.denied_networks().len(), 15);
}

#[test]
fn canonical_json_is_rfc8785() {
    let p = load(SEED);
    assert_eq!(
        p.canonical_json(),
        concat!(
            r#"{"agent_id":"trading_bot_v2","data_access":{"/data/market-feeds/*":["read"],"#,
            r#""/data/positions/*":["read","write"],"/logs/trades/*":["write"]},"#,
            r#""execution_constraints":{"allowed_hours":"08:00-17:00 UTC","allowed_regions":["eu-west-1"],"#,
            r#""max_concurrent_trades":5,"rate_limit":"100 trades/hour"},"#,
            r#""network_rules":{"allowed_hosts":["api.exchange.com","market-data.provider.com"],"#,
            r#""denied_hosts":["*.internal-network.local","169.254.169.254"]},"#,
            r#""revocation_check":{"cache_ttl_seconds":5,"enabled":true,"fail_open":false},"#,
            r#""version":"1.0.0"}"#
        )
    );
    // Numbers in JCS form, non-ASCII left as is, keys sorted by UTF-16 code units.
    let p = load(
        r#"{"agent_id":"a","actions":[{"match":{"path":"/x"},"body":{"/b":{"max":1.50E3,"in":[1e21, "é", 0.000001]}}}]}"#,
    );
    assert_eq!(
        p.canonical_json(),
        r#"{"actions":[{"body":{"/b":{"in":[1e+21,"é",0.000001],"max":1500}},"match":{"path":"/x"}}],"agent_id":"a"}"#
    );
}

#[test]
fn defaults_are_filled_in() {
    let p = load(r#"{"agent_id": "a"}"#);
    assert_eq!(p.mode(), Mode::Enforce);
    assert_eq!(*p.revocation(), crate::RevocationCheck::default());
    assert!(p.revocation().enabled);
    assert_eq!(p.revocation().cache_ttl_seconds, 5);
    assert!(!p.revocation().fail_open);
    assert_eq!(p.rate_limit(), None);
    assert_eq!(p.max_concurrent_actions(), None);
    let p = load(r#"{"agent_id": "a", "mode": "report", "revocation_check": {"enabled": false}}"#);
    assert_eq!(p.mode(), Mode::Report);
    assert_eq!(p.mode().as_str(), "report");
    assert!(!p.revocation().enabled);
    assert_eq!(p.revocation().cache_ttl_seconds, 5);
}

#[test]
fn effective_json_spells_out_defaults_and_normal_forms() {
    let p = load(
        r#"{"agent_id": "a", "network_rules": {"allowed_hosts": ["BÜCHER.example"], "denied_hosts": ["0xA9FEA9FE"], "denied_cidrs": ["10.1.2.3/8"]},
            "actions": [{"name": "trade", "match": {"method": ["post", "PUT"], "path": "/v1/trades/"}, "body": {"/size": {"max": 50000}}, "rate_limit": "20 trades/minute", "sign": true}]}"#,
    );
    let v: serde_json::Value =
        serde_json::from_str(&p.effective_json()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["mode"], "enforce");
    assert_eq!(v["revocation_check"]["cache_ttl_seconds"], 5);
    assert_eq!(v["revocation_check"]["enabled"], true);
    assert_eq!(
        v["network_rules"]["allowed_hosts"][0],
        "xn--bcher-kva.example"
    );
    assert_eq!(v["network_rules"]["denied_hosts"][0], "169.254.169.254");
    assert_eq!(v["network_rules"]["denied_cidrs"][0], "10.0.0.0/8");
    let defaults = v["network_rules"]["default_denied_cidrs"]
        .as_array()
        .map(Vec::len);
    assert_eq!(defaults, Some(15));
    assert_eq!(v["actions"][0]["name"], "trade");
    assert_eq!(v["actions"][0]["match"]["method"][0], "POST");
    assert_eq!(v["actions"][0]["match"]["host"], "*");
    assert_eq!(v["actions"][0]["match"]["path"], "/v1/trades");
    assert_eq!(v["actions"][0]["body"]["/size"]["max"], 50000);
    assert_eq!(v["actions"][0]["rate_limit"]["period_seconds"], 60);
    assert!(p.effective_json().contains('\n'), "pretty-printed");
}

#[test]
fn typo_in_a_key_is_an_error_with_position_and_suggestion() {
    let text = "{\n  \"agent_id\": \"a\",\n  \"network_rules\": {\n    \"allowd_hosts\": [\"x.com\"]\n  }\n}\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    let e = &errs[0];
    assert_eq!((e.line, e.column), (4, 5));
    assert_eq!(e.key, "network_rules.allowd_hosts");
    assert!(
        e.message.contains("did you mean \"allowed_hosts\""),
        "{}",
        e.message
    );
    assert!(e
        .to_string()
        .starts_with("policy.json:4:5: network_rules.allowd_hosts: unknown key"));
}

#[test]
fn unknown_keys_anywhere_are_errors() {
    let errs = errors(
        r#"{"agent_id": "a", "extra": 1, "execution_constraints": {"max_trades": 1},
            "revocation_check": {"ttl": 5}, "actions": [{"match": {"path": "/x", "verb": "GET"}, "limit": 1,
            "body": {"/size": {"maximum": 1}}}]}"#,
    );
    for key in [
        "extra",
        "execution_constraints.max_trades",
        "revocation_check.ttl",
        "actions[0].match.verb",
        "actions[0].limit",
        "actions[0].body./size.maximum",
    ] {
        let e = error_at(&errs, key);
        assert!(e.message.starts_with("unknown key"), "{e}");
    }
}

#[test]
fn wrong_types_are_errors() {
    let errs = errors(
        r#"{
  "agent_id": 5,
  "version": 1,
  "mode": "audit",
  "execution_constraints": {
    "allowed_regions": "eu-west-1",
    "max_concurrent_trades": "5",
    "rate_limit": 100
  },
  "data_access": {"/data/*": ["read", "delete"], "/x/*": "read"},
  "network_rules": {"allowed_hosts": ["a.com", 7], "denied_cidrs": "10.0.0.0/8"},
  "revocation_check": {"enabled": "yes", "cache_ttl_seconds": -1, "fail_open": null},
  "actions": {"match": {}}
}"#,
    );
    let check = |key: &str, line: usize, column: usize, needle: &str| {
        let e = error_at(&errs, key);
        assert_eq!((e.line, e.column), (line, column), "{e}");
        assert!(e.message.contains(needle), "{e}");
    };
    check("agent_id", 2, 15, "found a number");
    check("version", 3, 14, "expected a string");
    check("mode", 4, 11, "unknown mode \"audit\"");
    check(
        "execution_constraints.allowed_regions",
        6,
        24,
        "found a string",
    );
    check(
        "execution_constraints.max_concurrent_trades",
        7,
        30,
        "found a string",
    );
    check("execution_constraints.rate_limit", 8, 19, "found a number");
    check(
        "data_access./data/*[1]",
        10,
        39,
        "unknown permission \"delete\"",
    );
    check("data_access./x/*", 10, 58, "found a string");
    check("network_rules.allowed_hosts[1]", 11, 48, "found a number");
    check("network_rules.denied_cidrs", 11, 68, "found a string");
    check("revocation_check.enabled", 12, 35, "expected true or false");
    check("revocation_check.cache_ttl_seconds", 12, 63, "found -1");
    check("revocation_check.fail_open", 12, 80, "found null");
    check("actions", 13, 14, "expected an array");
    assert_eq!(errs.len(), 14, "{errs:#?}");
    // Sorted by position, one line each.
    let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
}

#[test]
fn numbers_must_be_whole_and_in_range() {
    for (v, ok) in [
        ("5", true),
        ("1", true),
        ("0", false),
        ("5.0", false),
        ("5e0", false),
        ("4294967296", false),
        ("-3", false),
    ] {
        let text = format!(
            r#"{{"agent_id": "a", "execution_constraints": {{"max_concurrent_trades": {v}}}}}"#
        );
        assert_eq!(Policy::from_json_str("p", &text).is_ok(), ok, "{v}");
    }
}

#[test]
fn every_error_in_a_file_is_reported() {
    let errs = errors(
        r#"{
  "network_rules": {"allowd_hosts": [], "denied_hosts": ["{a,b"], "denied_cidrs": ["10.0.0.0/33", "fd00::/8", "nope"]},
  "execution_constraints": {"allowed_hours": "8-17", "rate_limit": "lots/hour"},
  "actions": [
    {"match": {"method": "POST", "path": "/v1/trades"}, "body": {"size": {"max": 1}, "/a": {"min": 5, "max": 1}, "/b": {"in": []}, "/c~2": {"max": 1}, "/d": {}, "/e": {"max": "10"}}},
    {"match": {"method": "P OST"}, "rate_limit": "1/fortnight"}
  ]
}"#,
    );
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    for key in [
        "agent_id",
        "network_rules.allowd_hosts",
        "network_rules.denied_hosts[0]",
        "network_rules.denied_cidrs[0]",
        "network_rules.denied_cidrs[2]",
        "execution_constraints.allowed_hours",
        "execution_constraints.rate_limit",
        "actions[0].body.size",
        "actions[0].body./a.min",
        "actions[0].body./b.in",
        "actions[0].body./c~2",
        "actions[0].body./d",
        "actions[0].body./e.max",
        "actions[1].match.method",
        "actions[1].match.path",
        "actions[1].rate_limit",
    ] {
        assert!(keys.contains(&key), "missing error at {key}: {errs:#?}");
    }
    assert_eq!(errs.len(), 16, "{errs:#?}");
    let agent = error_at(&errs, "agent_id");
    assert_eq!((agent.line, agent.column), (1, 1));
    assert!(agent.message.contains("missing required key"));
    let glob = error_at(&errs, "network_rules.denied_hosts[0]");
    assert!(glob.message.contains("invalid host glob"), "{glob}");
    let hours = error_at(&errs, "execution_constraints.allowed_hours");
    assert!(hours.message.contains("HH:MM-HH:MM UTC"), "{hours}");
    let ptr = error_at(&errs, "actions[0].body.size");
    assert!(ptr.message.contains("must start with '/'"), "{ptr}");
    let minmax = error_at(&errs, "actions[0].body./a.min");
    assert!(minmax.message.contains("greater than max"), "{minmax}");
}

#[test]
fn duplicate_keys_are_errors() {
    let errs = errors("{\"agent_id\": \"a\",\n \"agent_id\": \"b\",\n \"network_rules\": {\"allowed_hosts\": [], \"allowed_hosts\": [\"x\"]}}");
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_eq!(
        (errs[0].line, errs[0].column, errs[0].key.as_str()),
        (2, 2, "agent_id")
    );
    assert!(errs[0]
        .message
        .contains("first defined at line 1, column 2"));
    assert_eq!(errs[1].key, "network_rules.allowed_hosts");
}

#[test]
fn syntax_errors_stop_parsing_with_a_position() {
    let errs = errors("{\n  \"agent_id\": \"a\",\n}\n");
    assert_eq!(errs.len(), 1);
    assert_eq!((errs[0].line, errs[0].column), (2, 18), "{}", errs[0]);
    assert!(errs[0].message.contains("Trailing commas"), "{}", errs[0]);
    // A missing comma is reported where the comma should be.
    let errs = errors("{\n  \"agent_id\": \"a\"\n  \"mode\": \"report\"\n}");
    assert_eq!((errs[0].line, errs[0].column), (2, 18), "{}", errs[0]);
    assert!(errs[0].message.contains("Expected comma"), "{}", errs[0]);
    let errs = errors("{\"agent_id\": 'a'}");
    assert_eq!(errs[0].line, 1);
    for bad in [
        "",
        "   // only a comment\n",
        "[1]",
        "\"x\"",
        "{\"agent_id\": \"a\"} {}",
        "{\"agent_id\": \"a\", /* unterminated",
    ] {
        assert!(Policy::from_json_str("p", bad).is_err(), "{bad:?}");
    }
}

#[test]
fn byte_order_mark_and_block_comments_are_fine() {
    let p = load("\u{feff}{/* id */ \"agent_id\": \"a\"}");
    assert_eq!(p.agent_id(), "a");
    let e = errors("\u{feff}{\"agent_idd\": \"a\"}");
    let typo = error_at(&e, "agent_idd");
    assert_eq!((typo.line, typo.column), (1, 2));
}

#[test]
fn agent_ids_are_restricted_to_spiffe_safe_characters() {
    for id in ["", "a b", "a/b", "..", "ü"] {
        let text = format!(r#"{{"agent_id": {id:?}}}"#);
        assert!(Policy::from_json_str("p", &text).is_err(), "{id:?}");
    }
    assert_eq!(
        load(r#"{"agent_id": "Trading-bot_v2.1"}"#).agent_id(),
        "Trading-bot_v2.1"
    );
}

#[test]
fn action_rules_decode() {
    let p = load(
        r#"{"agent_id": "a", "actions": [
            {"match": {"method": "post", "host": "API.Exchange.com", "path": "/v1/trades"}, "sign": true, "rate_limit": "20 trades/minute",
             "body": {"/size": {"max": 50000, "min": 1}, "/market": {"in": ["EUR_USD", "GBP_USD"]}}},
            {"name": "reads", "match": {"method": "*", "path": "/v1/**"}, "sign": false},
            {"match": {"path": "/"}}
        ]}"#,
    );
    let a = p.actions();
    assert_eq!(a.len(), 3);
    assert_eq!(a[0].name, "actions[0]");
    assert_eq!(a[0].index, 0);
    assert_eq!(a[0].sign, Some(true));
    assert_eq!(a[0].methods(), Some(&["POST".to_string()][..]));
    assert_eq!(a[0].host_pattern(), Some("api.exchange.com"));
    assert_eq!(a[0].rate_limit.as_ref().map(|r| r.count.get()), Some(20));
    assert!(a[0].has_body_constraints());
    assert_eq!(a[1].name, "reads");
    assert_eq!(a[1].methods(), None);
    assert_eq!(a[1].sign, Some(false));
    assert!(!a[1].has_body_constraints());
    assert_eq!(a[2].sign, None);
    assert_eq!(a[2].methods(), None);
    assert_eq!(a[2].path_pattern(), "/");
}

#[test]
fn invalid_action_parts_are_errors() {
    let errs = errors(
        r#"{"agent_id": "a", "actions": [
            {"match": {"method": [], "path": "v1"}},
            {"match": {"method": ["GET", "*"], "path": "/v1/../x", "host": "a..b"}},
            {"match": {"path": "/a/{b"}, "body": {"/x": {"in": [1e999]}}, "name": ""},
            {"match": {"path": "/a"}, "body": {"/x": {"max": 1e999}}}
        ]}"#,
    );
    for key in [
        "actions[0].match.method",
        "actions[0].match.path",
        "actions[1].match.method[1]",
        "actions[1].match.path",
        "actions[1].match.host",
        "actions[2].match.path",
        "actions[2].body./x.in[0]",
        "actions[2].name",
        "actions[3].body./x.max",
    ] {
        error_at(&errs, key);
    }
    assert_eq!(errs.len(), 9, "{errs:#?}");
}

#[test]
fn display_lists_one_error_per_line() {
    let e = Policy::from_json_str("p.json", r#"{"a": 1, "b": 2}"#)
        .err()
        .unwrap_or_else(|| panic!("should fail"));
    let text = e.to_string();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.lines().all(|l| l.starts_with("p.json:1:")), "{text}");
}
