//! DNS, done once per request: the addresses returned here are the ones the
//! policy checks and the only ones dialled.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use kakunin_policy::Target;

use crate::errors::ProxyError;

pub enum Resolved {
    /// From `upstream.resolve`: the operator pinned this address, so it is
    /// not subject to the policy's denied networks (that is how a private
    /// deployment or a loopback test reaches its API).
    Pinned(SocketAddr),
    /// From the literal or from DNS: every address must pass the policy.
    Checked(Vec<SocketAddr>),
}

impl Resolved {
    pub fn addrs(&self) -> Vec<SocketAddr> {
        match self {
            Resolved::Pinned(addr) => vec![*addr],
            Resolved::Checked(addrs) => addrs.clone(),
        }
    }
}

pub async fn resolve(
    target: &Target,
    port: u16,
    pinned: &BTreeMap<String, SocketAddr>,
    timeout: Duration,
) -> Result<Resolved, ProxyError> {
    if let Some(addr) = pinned.get(&target.host) {
        return Ok(Resolved::Pinned(*addr));
    }
    if let Some(ip) = target.ip {
        return Ok(Resolved::Checked(vec![SocketAddr::new(ip, port)]));
    }
    let lookup = tokio::net::lookup_host((target.host.as_str(), port));
    let found = tokio::time::timeout(timeout, lookup)
        .await
        .map_err(|_| {
            ProxyError::bad_gateway(
                "upstream_dns_failed",
                format!("DNS lookup of {} timed out", target.host),
            )
        })?
        .map_err(|e| {
            ProxyError::bad_gateway(
                "upstream_dns_failed",
                format!("DNS lookup of {} failed: {e}", target.host),
            )
        })?;
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for addr in found {
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    if addrs.is_empty() {
        return Err(ProxyError::bad_gateway(
            "upstream_dns_failed",
            format!("DNS lookup of {} returned no address", target.host),
        ));
    }
    Ok(Resolved::Checked(addrs))
}
