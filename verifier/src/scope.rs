//! The scope the certificate states (its extension holds the agent's policy
//! as canonical JSON) applied to the request as the receiver sees it: the
//! host must be allowed, the action rule's body constraints hold (e.g.
//! `/market` in the allowed list, `/size` at most the maximum), and the
//! allowed hours hold by this receiver's clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kakunin_policy::Policy;
use x509_parser::der_parser::der::parse_der_utf8string;

use crate::reason::{Reason, Rejection};

/// Parsed policies are kept per extension value: the same agent sends the
/// same scope with every request.
const CACHE_CAPACITY: usize = 1024;

pub(crate) struct ScopeCache {
    parsed: Mutex<HashMap<Vec<u8>, Arc<Policy>>>,
}

impl ScopeCache {
    pub fn new() -> ScopeCache {
        ScopeCache {
            parsed: Mutex::new(HashMap::new()),
        }
    }

    pub fn policy(
        &self,
        extension: Option<&[u8]>,
        agent_id: &str,
    ) -> Result<Arc<Policy>, Rejection> {
        let invalid = |detail: String| Rejection::new(Reason::ScopeInvalid, detail);
        let value = extension
            .ok_or_else(|| invalid("the certificate carries no scope extension".into()))?;
        if let Some(policy) = self.parsed.lock().ok().and_then(|m| m.get(value).cloned()) {
            return Ok(policy);
        }
        let (rest, object) = parse_der_utf8string(value)
            .map_err(|e| invalid(format!("scope extension is not a DER UTF8String: {e}")))?;
        if !rest.is_empty() {
            return Err(invalid("scope extension has trailing bytes".into()));
        }
        let text = object
            .as_str()
            .map_err(|e| invalid(format!("scope extension is not UTF-8 text: {e}")))?;
        let policy = Policy::from_json_str("certificate scope", text)
            .map_err(|e| invalid(format!("scope extension is not a valid policy: {e}")))?;
        if policy.agent_id() != agent_id {
            return Err(invalid(format!(
                "scope is for agent {:?}, the certificate names {agent_id:?}",
                policy.agent_id()
            )));
        }
        let policy = Arc::new(policy);
        if let Ok(mut parsed) = self.parsed.lock() {
            if parsed.len() >= CACHE_CAPACITY {
                parsed.clear();
            }
            parsed.insert(value.to_vec(), policy.clone());
        }
        Ok(policy)
    }
}

/// Checks the request against `policy`; returns the matching action rule's
/// name, if a rule matched.
pub(crate) fn check(
    policy: &Policy,
    method: &str,
    authority: &str,
    path_and_query: &str,
    body: &[u8],
    now_unix: i64,
) -> Result<Option<String>, Rejection> {
    let denied = |detail: String| Rejection::new(Reason::ScopeDenied, detail);
    let target = policy
        .target(host_of(authority))
        .map_err(|d| denied(d.message))?;
    if let Some(window) = policy.execution_constraints().allowed_hours {
        if !window.contains(now_unix) {
            return Err(denied(format!(
                "outside the agent's allowed_hours {window}"
            )));
        }
    }
    let rule = policy
        .action_for(method, &target, path_and_query)
        .map_err(|d| denied(d.message))?;
    match rule {
        Some(rule) => {
            policy
                .check_body(rule, body)
                .map_err(|d| denied(format!("action {}: {}", rule.name, d.message)))?;
            Ok(Some(rule.name.clone()))
        }
        None => Ok(None),
    }
}

/// The host part of an authority: `[v6]:port`, `[v6]`, `host:port`, `host`.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_authorities() {
        assert_eq!(host_of("api.example:8443"), "api.example");
        assert_eq!(host_of("api.example"), "api.example");
        assert_eq!(host_of("[::1]:443"), "::1");
        assert_eq!(host_of("[::1]"), "::1");
    }

    #[test]
    fn body_constraints_and_hosts() {
        let policy = Policy::from_json_str(
            "t",
            r#"{"agent_id": "bot", "network_rules": {"allowed_hosts": ["api.exchange.test"]},
                "actions": [{"name": "trade", "match": {"method": "POST", "path": "/v1/trades"},
                             "body": {"/market": {"in": ["EUR_USD"]}, "/size": {"max": 50000}}}]}"#,
        )
        .unwrap();
        let ok = br#"{"market": "EUR_USD", "size": 45000}"#;
        let big = br#"{"market": "EUR_USD", "size": 500000}"#;
        let name = check(
            &policy,
            "POST",
            "api.exchange.test:8443",
            "/v1/trades",
            ok,
            0,
        )
        .unwrap();
        assert_eq!(name.as_deref(), Some("trade"));
        let err = check(&policy, "POST", "api.exchange.test", "/v1/trades", big, 0).unwrap_err();
        assert_eq!(err.reason, Reason::ScopeDenied);
        let err = check(&policy, "POST", "evil.test", "/v1/trades", ok, 0).unwrap_err();
        assert_eq!(err.reason, Reason::ScopeDenied);
    }
}
