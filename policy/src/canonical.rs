//! The effective policy as people should read it: defaults spelled out, globs normalised.
//! (The canonical JSON for the certificate is made in `parse`, from the document itself.)

use serde_json::{json, Value};

use crate::Policy;

pub(crate) fn effective_json(p: &Policy) -> String {
    let ex = &p.execution;
    let hosts = |list: &[crate::host::HostPattern]| -> Vec<String> {
        list.iter().map(|h| h.normalised.clone()).collect()
    };
    let data_access: serde_json::Map<String, Value> = p
        .data_access
        .iter()
        .map(|r| {
            let access: Vec<&str> = r.access.iter().map(|a| a.as_str()).collect();
            (r.path.clone(), json!(access))
        })
        .collect();
    let doc = json!({
        "agent_id": p.agent_id,
        "version": p.version,
        "mode": p.mode.as_str(),
        "execution_constraints": {
            "allowed_regions": ex.allowed_regions,
            "allowed_hours": ex.allowed_hours.map(|h| h.to_string()),
            "max_concurrent_trades": ex.max_concurrent_trades,
            "rate_limit": ex.rate_limit.as_ref().map(|r| json!({
                "text": r.text,
                "count": r.count.get(),
                "period_seconds": r.period.as_secs(),
            })),
        },
        "data_access": data_access,
        "network_rules": {
            "allowed_hosts": hosts(&p.allowed_hosts),
            "denied_hosts": hosts(&p.denied_hosts),
            "denied_cidrs": p.policy_cidrs.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            "default_denied_cidrs": crate::default_denied_cidrs().iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        },
        "revocation_check": {
            "enabled": p.revocation.enabled,
            "cache_ttl_seconds": p.revocation.cache_ttl_seconds,
            "fail_open": p.revocation.fail_open,
        },
        "actions": p.actions.iter().map(|a| a.describe()).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}
