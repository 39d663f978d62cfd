//! Which headers cross the proxy.

use http::header::{
    HeaderMap, HeaderName, CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};

/// RFC 9110 §7.6.1 hop-by-hop fields, plus the proxy-era ones clients still
/// send. Names, not strings: this runs twice per request, and a string would
/// be parsed into a name on every removal.
const HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Removes hop-by-hop fields, including any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most requests carry no Connection header: nothing to collect.
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Removes what only the proxy may write: proof headers (an agent must not
/// be able to supply its own signature, certificate, timestamp or batch
/// proof) and the proxy's own `X-Kakunin-*` and `Kakunin-*` namespaces.
pub fn strip_agent_supplied_proof(headers: &mut HeaderMap) {
    let reserved: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            name.starts_with("x-agent-")
                || name.starts_with("x-kakunin-")
                || name.starts_with("kakunin-")
                || name == "signature"
                || name == "signature-input"
                || name == "content-digest"
        })
        .cloned()
        .collect();
    for name in reserved {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_fields() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, X-Secret-Hop".parse().unwrap());
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("proxy-authorization", "Basic x".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
    }

    #[test]
    fn strips_agent_supplied_proof() {
        let mut h = HeaderMap::new();
        for name in [
            "x-agent-signature",
            "X-Agent-Certificate",
            "x-agent-timestamp",
            "x-agent-ocsp",
            "signature",
            "signature-input",
            "content-digest",
            "x-kakunin-agent-id",
            "kakunin-batch-proof",
        ] {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                "forged".parse().unwrap(),
            );
        }
        h.insert("x-agentless", "kept".parse().unwrap());
        h.insert("authorization", "kept".parse().unwrap());
        strip_agent_supplied_proof(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
    }
}
