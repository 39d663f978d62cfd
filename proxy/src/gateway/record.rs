//! What the gateway says about a request: the JSON error a refused client
//! gets, and the audit line every request leaves (the seed's receiver
//! fields: `event_type`, `agent_id`, `agent_cert_serial`, `action`,
//! `signature_valid`, `scope_check_passed`, `timestamp`, `duration_ms`).

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use kakunin_verifier::{Agent, Reason, Rejection};
use serde_json::{json, Map, Value};

use crate::audit::AuditLog;
use crate::body::{full, ProxyBody};

/// A body larger than this is not copied into the audit line.
const MAX_AUDITED_BODY: usize = 4 * 1024;

/// A refusal: the verifier's, or the gateway's own (a malformed request, a
/// body too large or too slow, a backend that failed).
#[derive(Debug)]
pub(super) struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    /// The seed's `error` text.
    pub error: &'static str,
    pub detail: String,
    /// Set when the verifier refused.
    pub reason: Option<Reason>,
    /// Boxed: refusals travel in `Result`s and should stay small.
    pub agent: Option<Box<Agent>>,
}

impl Refusal {
    pub fn gateway(
        status: StatusCode,
        code: &'static str,
        error: &'static str,
        detail: impl Into<String>,
    ) -> Refusal {
        Refusal {
            status,
            code,
            error,
            detail: detail.into(),
            reason: None,
            agent: None,
        }
    }

    pub fn response(&self) -> Response<ProxyBody> {
        let body = json!({"error": self.error, "code": self.code, "detail": self.detail});
        let mut response = Response::new(full(Bytes::from(body.to_string())));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert("x-kakunin-error", HeaderValue::from_static(self.code));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

impl From<Rejection> for Refusal {
    fn from(rejection: Rejection) -> Refusal {
        let reason = rejection.reason;
        Refusal {
            // Every status the verifier names is a valid one; 401 is the
            // seed's answer to an identity it could not establish.
            status: StatusCode::from_u16(reason.http_status()).unwrap_or(StatusCode::UNAUTHORIZED),
            code: reason.code(),
            error: reason.summary(),
            detail: rejection.detail,
            reason: Some(reason),
            agent: rejection.agent.map(Box::new),
        }
    }
}

/// One audit line; filled in as the request is decided.
pub(super) struct Entry {
    pub started: Instant,
    pub peer: SocketAddr,
    pub method: String,
    pub path: String,
    pub body: Value,
    pub agent: Option<Agent>,
    pub rule: Option<String>,
    pub signature_valid: bool,
    pub scope_check_passed: bool,
    pub revocation: Option<&'static str>,
    pub status: u16,
    pub reason: Option<&'static str>,
    pub detail: Option<String>,
}

impl Entry {
    pub fn new(peer: SocketAddr, method: &str, path: &str) -> Entry {
        Entry {
            started: Instant::now(),
            peer,
            method: method.to_string(),
            path: path.to_string(),
            body: Value::Null,
            agent: None,
            rule: None,
            signature_valid: false,
            scope_check_passed: false,
            revocation: None,
            status: 0,
            reason: None,
            detail: None,
        }
    }

    /// The body as the audit keeps it: a JSON object of at most 4 KiB (the
    /// seed logs `{market, size}`); anything else is not copied.
    pub fn set_body(&mut self, body: &[u8]) {
        if body.len() <= MAX_AUDITED_BODY {
            if let Ok(value @ Value::Object(_)) = serde_json::from_slice::<Value>(body) {
                self.body = value;
            }
        }
    }

    pub fn refused(&mut self, refusal: &Refusal) {
        self.status = refusal.status.as_u16();
        self.reason = Some(refusal.code);
        self.detail = Some(refusal.detail.clone());
        if let Some(agent) = &refusal.agent {
            self.agent = Some(Agent::clone(agent));
        }
        if let Some(reason) = refusal.reason {
            self.signature_valid = reason.signature_held();
        }
    }

    /// Writes the line: `action.verified` when the verifier accepted the
    /// request (whatever the backend then did), else `action.rejected`.
    pub fn write(self, audit: &AuditLog, verified: bool) -> crate::audit::Queued<'_> {
        let event = if verified {
            "action.verified"
        } else {
            "action.rejected"
        };
        let agent = self.agent.as_ref();
        let mut fields = Map::new();
        let mut put = |key: &str, value: Value| {
            fields.insert(key.to_string(), value);
        };
        put("agent_id", json!(agent.map(|a| a.agent_id.as_str())));
        put(
            "agent_cert_serial",
            json!(agent.map(|a| a.serial_hex.as_str())),
        );
        put("spiffe_id", json!(agent.map(|a| a.spiffe_id.as_str())));
        put(
            "action",
            json!({
                "method": self.method,
                "path": self.path,
                "rule": self.rule,
                "body": self.body,
            }),
        );
        put("signature_valid", json!(self.signature_valid));
        put("scope_check_passed", json!(self.scope_check_passed));
        let millis = self.started.elapsed().as_secs_f64() * 1000.0;
        put("duration_ms", json!((millis * 1000.0).round() / 1000.0));
        put("status", json!(self.status));
        put("reason", json!(self.reason));
        put("detail", json!(self.detail));
        put("revocation", json!(self.revocation));
        put("peer", json!(self.peer.to_string()));
        audit.record(event, &fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_after_the_signature_step_say_it_held() {
        assert!(Reason::ScopeDenied.signature_held());
        assert!(Reason::ScopeInvalid.signature_held());
        assert!(Reason::Replayed.signature_held());
        for reason in [
            Reason::ChainInvalid,
            Reason::Revoked,
            Reason::TimestampExpired,
            Reason::SignatureInvalid,
            Reason::ContentDigestMismatch,
            Reason::SignatureMissing,
        ] {
            assert!(!reason.signature_held(), "{reason}");
        }
    }

    #[test]
    fn only_small_json_objects_are_copied() {
        let peer = SocketAddr::from(([127, 0, 0, 1], 1));
        let mut entry = Entry::new(peer, "POST", "/v1/trades");
        entry.set_body(br#"{"market":"EUR_USD","size":45000}"#);
        assert_eq!(entry.body["size"], 45000);
        for body in [&b"[1,2]"[..], b"not json", b"\"text\""] {
            let mut entry = Entry::new(peer, "POST", "/");
            entry.set_body(body);
            assert_eq!(entry.body, Value::Null);
        }
        let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(MAX_AUDITED_BODY));
        entry.body = Value::Null;
        entry.set_body(big.as_bytes());
        assert_eq!(entry.body, Value::Null);
    }
}
