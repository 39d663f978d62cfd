//! Policy file → `Policy`. Every problem is collected (except a JSON syntax error, after
//! which nothing can be trusted) so one run of `kakunin policy check` shows them all.

use jsonc_parser::ast::Value;
use jsonc_parser::common::{Range, Ranged};
use jsonc_parser::{parse_to_ast, CollectOptions};

use crate::action;
use crate::cidr::{self, DeniedNet};
use crate::error::{PolicyError, PolicyErrors};
use crate::host::HostPattern;
use crate::hours::HoursWindow;
use crate::model::{Access, DataAccessRule, ExecutionConstraints, Mode, RevocationCheck};
use crate::rate::RateLimit;
use crate::spanned::{child, json_options, Decoder};
use crate::Policy;

const TOP: &[&str] = &[
    "agent_id",
    "version",
    "execution_constraints",
    "data_access",
    "network_rules",
    "revocation_check",
    "mode",
    "actions",
];

pub(crate) fn load(source: &str, text: &str) -> Result<Policy, PolicyErrors> {
    // An editor's byte-order mark is invisible, so columns stay right without it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut d = Decoder::new(source, text);
    let root = match parse_to_ast(text, &CollectOptions::default(), &json_options(true)) {
        Ok(parsed) => parsed.value,
        Err(e) => {
            d.error(
                e.range(),
                "<document>",
                format!(
                    "JSON syntax error: {} (comments are allowed; trailing commas are not)",
                    e.kind()
                ),
            );
            return Err(PolicyErrors(d.errors));
        }
    };
    let Some(root) = root else {
        d.error(
            Range::new(0, 0),
            "<document>",
            "the file is empty; expected a JSON object with at least \"agent_id\"",
        );
        return Err(PolicyErrors(d.errors));
    };
    let policy = decode(&mut d, &root);
    let mut errors = d.errors;
    match policy {
        Some(mut p) if errors.is_empty() => {
            match serde_json_canonicalizer::to_string(&serde_json::Value::from(root)) {
                Ok(c) => p.canonical = c,
                Err(e) => errors.push(PolicyError {
                    source_name: source.to_string(),
                    line: 1,
                    column: 1,
                    key: "<document>".into(),
                    message: format!("cannot produce RFC 8785 canonical JSON: {e}"),
                }),
            }
            if errors.is_empty() {
                return Ok(p);
            }
            Err(PolicyErrors(errors))
        }
        _ => {
            errors.sort_by_key(|e| (e.line, e.column));
            Err(PolicyErrors(errors))
        }
    }
}

fn decode(d: &mut Decoder<'_>, root: &Value<'_>) -> Option<Policy> {
    let f = d.object(root, "", TOP)?;
    let agent_id = d
        .require(&f, "", "agent_id", "a string such as \"trading_bot_v2\"")
        .and_then(|v| agent_id(d, v));
    let version = f
        .get("version")
        .and_then(|v| d.string(v, "version", "a string"));
    let execution = f
        .get("execution_constraints")
        .map(|v| execution(d, v))
        .unwrap_or_default();
    let data_access = f
        .get("data_access")
        .map(|v| data_access(d, v))
        .unwrap_or_default();
    let (allowed_hosts, denied_hosts, policy_cidrs) = f
        .get("network_rules")
        .map(|v| network(d, v))
        .unwrap_or_default();
    let revocation = f
        .get("revocation_check")
        .map(|v| revocation(d, v))
        .unwrap_or_default();
    let mode = f.get("mode").map(|v| mode(d, v)).unwrap_or_default();
    let actions = f
        .get("actions")
        .map(|v| action::decode_all(d, v, "actions"))
        .unwrap_or_default();
    let mut denied_nets: Vec<DeniedNet> = cidr::default_denied_cidrs()
        .into_iter()
        .map(|net| DeniedNet {
            net,
            origin: "default",
        })
        .collect();
    denied_nets.extend(policy_cidrs.iter().map(|&net| DeniedNet {
        net,
        origin: "network_rules.denied_cidrs",
    }));
    Some(Policy {
        agent_id: agent_id?,
        version,
        mode,
        execution,
        data_access,
        allowed_hosts,
        denied_hosts,
        policy_cidrs,
        denied_nets,
        revocation,
        actions,
        canonical: String::new(),
    })
}

/// The agent id ends up in the certificate's CN and SPIFFE URI, so it is held to the
/// characters a SPIFFE path segment may use.
fn agent_id(d: &mut Decoder<'_>, v: &Value<'_>) -> Option<String> {
    let expected = "a non-empty string of letters, digits, '.', '_' and '-' (at most 128)";
    let s = d.string(v, "agent_id", expected)?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        d.error(
            v.range(),
            "agent_id",
            format!("{s:?} is not a valid agent id; expected {expected}"),
        );
        return None;
    }
    Some(s)
}

fn execution(d: &mut Decoder<'_>, v: &Value<'_>) -> ExecutionConstraints {
    let path = "execution_constraints";
    let Some(f) = d.object(
        v,
        path,
        &[
            "allowed_regions",
            "allowed_hours",
            "max_concurrent_trades",
            "rate_limit",
        ],
    ) else {
        return ExecutionConstraints::default();
    };
    let mut out = ExecutionConstraints::default();
    if let Some(r) = f.get("allowed_regions") {
        let k = child(path, "allowed_regions");
        for s in d
            .strings(r, &k, "region names such as \"eu-west-1\"")
            .unwrap_or_default()
        {
            if s.value.is_empty() {
                d.error(s.range, &s.key, "expected a non-empty region name");
            } else {
                out.allowed_regions.push(s.value);
            }
        }
    }
    if let Some(h) = f.get("allowed_hours") {
        let k = child(path, "allowed_hours");
        if let Some(s) = d.string(h, &k, "a UTC window such as \"08:00-17:00 UTC\"") {
            match HoursWindow::parse(&s) {
                Ok(w) => out.allowed_hours = Some(w),
                Err(e) => d.error(h.range(), &k, e),
            }
        }
    }
    if let Some(m) = f.get("max_concurrent_trades") {
        out.max_concurrent_trades = d.u32_at_least(m, &child(path, "max_concurrent_trades"), 1);
    }
    if let Some(r) = f.get("rate_limit") {
        let k = child(path, "rate_limit");
        if let Some(s) = d.string(r, &k, "a rate limit such as \"100 trades/hour\"") {
            match RateLimit::parse(&s) {
                Ok(l) => out.rate_limit = Some(l),
                Err(e) => d.error(r.range(), &k, e),
            }
        }
    }
    out
}

fn data_access(d: &mut Decoder<'_>, v: &Value<'_>) -> Vec<DataAccessRule> {
    let path = "data_access";
    let Some(f) = d.object(v, path, &[]) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (glob, perms) in f.iter() {
        let k = child(path, glob);
        if glob.is_empty() {
            d.error(
                perms.range(),
                &k,
                "expected a non-empty path glob as the key",
            );
            continue;
        }
        if let Err(e) = globset::Glob::new(glob) {
            d.error(
                perms.range(),
                &k,
                format!("invalid path glob {glob:?}: {e}"),
            );
            continue;
        }
        let Some(list) = d.strings(perms, &k, "permissions (\"read\", \"write\", \"execute\")")
        else {
            continue;
        };
        if list.is_empty() {
            d.error(
                perms.range(),
                &k,
                "expected at least one of \"read\", \"write\", \"execute\"",
            );
            continue;
        }
        let mut access = Vec::new();
        for s in list {
            let a = match s.value.as_str() {
                "read" => Access::Read,
                "write" => Access::Write,
                "execute" => Access::Execute,
                other => {
                    d.error(s.range, &s.key, format!("unknown permission {other:?}; expected \"read\", \"write\" or \"execute\""));
                    continue;
                }
            };
            if !access.contains(&a) {
                access.push(a);
            }
        }
        out.push(DataAccessRule {
            path: glob.to_string(),
            access,
        });
    }
    out
}

type Network = (Vec<HostPattern>, Vec<HostPattern>, Vec<ipnet::IpNet>);

fn network(d: &mut Decoder<'_>, v: &Value<'_>) -> Network {
    let path = "network_rules";
    let Some(f) = d.object(v, path, &["allowed_hosts", "denied_hosts", "denied_cidrs"]) else {
        return Network::default();
    };
    let hosts = |d: &mut Decoder<'_>, name: &str| {
        let Some(v) = f.get(name) else {
            return Vec::new();
        };
        let k = child(path, name);
        let mut out = Vec::new();
        for s in d.strings(v, &k, "host globs").unwrap_or_default() {
            match HostPattern::new(&s.value) {
                Ok(p) => out.push(p),
                Err(e) => d.error(s.range, &s.key, e),
            }
        }
        out
    };
    let allowed = hosts(d, "allowed_hosts");
    let denied = hosts(d, "denied_hosts");
    let mut cidrs = Vec::new();
    if let Some(v) = f.get("denied_cidrs") {
        let k = child(path, "denied_cidrs");
        for s in d
            .strings(v, &k, "CIDRs such as \"10.0.0.0/8\"")
            .unwrap_or_default()
        {
            match cidr::parse_cidr(&s.value) {
                Ok(n) => cidrs.push(n),
                Err(e) => d.error(s.range, &s.key, e),
            }
        }
    }
    (allowed, denied, cidrs)
}

fn revocation(d: &mut Decoder<'_>, v: &Value<'_>) -> RevocationCheck {
    let path = "revocation_check";
    let mut out = RevocationCheck::default();
    let Some(f) = d.object(v, path, &["enabled", "cache_ttl_seconds", "fail_open"]) else {
        return out;
    };
    if let Some(b) = f
        .get("enabled")
        .and_then(|v| d.boolean(v, &child(path, "enabled")))
    {
        out.enabled = b;
    }
    if let Some(t) = f
        .get("cache_ttl_seconds")
        .and_then(|v| d.u32_at_least(v, &child(path, "cache_ttl_seconds"), 0))
    {
        out.cache_ttl_seconds = t;
    }
    if let Some(b) = f
        .get("fail_open")
        .and_then(|v| d.boolean(v, &child(path, "fail_open")))
    {
        out.fail_open = b;
    }
    out
}

fn mode(d: &mut Decoder<'_>, v: &Value<'_>) -> Mode {
    match d.string(v, "mode", "\"enforce\" or \"report\"").as_deref() {
        Some("enforce") => Mode::Enforce,
        Some("report") => Mode::Report,
        Some(other) => {
            d.error(
                v.range(),
                "mode",
                format!("unknown mode {other:?}; expected \"enforce\" or \"report\""),
            );
            Mode::Enforce
        }
        None => Mode::Enforce,
    }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
