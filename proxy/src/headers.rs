//! Which headers cross the proxy.

use http::header::{
    HeaderMap, HeaderName, CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};

/// RFC 9110 §7.6.1 hop-by-hop fields, plus the proxy-era ones clients still
/// send.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == PROXY_AUTHENTICATE
        || name == PROXY_AUTHORIZATION
        || name == TE
        || name == TRAILER
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || matches!(name.as_str(), "keep-alive" | "proxy-connection")
}

/// Removes hop-by-hop fields, including any the `Connection` header names.
/// Runs twice per request: one pass over the names finds what to remove,
/// and the usual request, which has none, is left as it is (a removal per
/// listed name was a hash lookup each, every time).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .chain(headers.keys().filter(|name| is_hop_by_hop(name)).cloned())
        .collect();
    for name in named {
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
        h.insert("proxy-connection", "keep-alive".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));

        // Without any hop-by-hop field, a field the Connection header
        // would have named stays.
        let mut h = HeaderMap::new();
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
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
