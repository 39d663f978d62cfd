//! What the decision log records about one request as it moves through the
//! pipeline. Typed fields, written straight into the log's line: no map of
//! JSON values built and torn down per request, and no serde serializer
//! (see `json_line`). Under test, serde's derive of the same struct is the
//! reference the line is compared with, byte for byte.

use std::net::SocketAddr;
use std::sync::Arc;

use http::Method;

use crate::audit::LineFields;
use crate::json_line::Members;
use crate::revocation::Subject;
use crate::signing::{BatchPlace, Signed};

/// One request's audit fields. A field appears in a line once it is known,
/// so a refused request's line shows how far the request got.
#[cfg_attr(test, derive(serde::Serialize))]
pub struct Trail<'p> {
    pub agent_id: &'p str,
    /// The certificate the request left (or would have left) with.
    #[cfg_attr(test, serde(rename = "agent_cert_serial", serialize_with = "serial"))]
    pub subject: Arc<Subject>,
    #[cfg_attr(test, serde(serialize_with = "method"))]
    pub method: Method,
    /// The path only: a query string or user information may hold secrets.
    pub path: String,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub host: Option<String>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub port: Option<u16>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub action: Option<&'p str>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub revocation: Option<&'static str>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub revocation_error: Option<String>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub signed: Option<bool>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub signature: Option<Signed>,
    /// "allow" or "would_deny" once decided, "deny" when refused.
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub decision: Option<&'static str>,
    /// Report mode: the checks that would have refused the request.
    #[cfg_attr(test, serde(skip_serializing_if = "Vec::is_empty"))]
    pub would_deny: Vec<WouldDeny>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub upstream_addr: Option<SocketAddr>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub duration_ms: Option<u64>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub status: Option<u16>,
    /// Why the request was refused.
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub code: Option<&'static str>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub reason: Option<String>,
}

#[cfg_attr(test, derive(serde::Serialize))]
pub struct WouldDeny {
    pub code: &'static str,
    pub reason: String,
}

impl<'p> Trail<'p> {
    pub fn new(agent_id: &'p str, subject: Arc<Subject>, method: Method, path: &str) -> Self {
        Trail {
            agent_id,
            subject,
            method,
            path: path.to_string(),
            host: None,
            port: None,
            action: None,
            revocation: None,
            revocation_error: None,
            signed: None,
            signature: None,
            decision: None,
            would_deny: Vec::new(),
            upstream_addr: None,
            duration_ms: None,
            status: None,
            code: None,
            reason: None,
        }
    }
}

impl LineFields for Trail<'_> {
    /// The struct's fields in their order, absent ones left out: what the
    /// derive writes (see the test). Every struct is taken apart whole, so
    /// a field added to it does not compile until it is written here too.
    fn write_members(&self, m: &mut Members<'_>) {
        let Trail {
            agent_id,
            subject,
            method,
            path,
            host,
            port,
            action,
            revocation,
            revocation_error,
            signed,
            signature,
            decision,
            would_deny,
            upstream_addr,
            duration_ms,
            status,
            code,
            reason,
        } = self;
        m.str("agent_id", agent_id);
        m.str("agent_cert_serial", &subject.summary.serial_hex);
        m.str("method", method.as_str());
        m.str("path", path);
        m.opt_str("host", host.as_deref());
        m.opt_u64("port", port.map(u64::from));
        m.opt_str("action", *action);
        m.opt_str("revocation", *revocation);
        m.opt_str("revocation_error", revocation_error.as_deref());
        if let Some(signed) = signed {
            m.bool("signed", *signed);
        }
        if let Some(Signed {
            keyid,
            nonce,
            created,
            batch,
        }) = signature
        {
            m.object("signature", |m| {
                m.str("keyid", keyid);
                m.str("nonce", nonce);
                m.u64("created", *created);
                if let Some(BatchPlace { index, size }) = batch {
                    m.object("batch", |m| {
                        m.u64("index", *index);
                        m.u64("size", *size);
                    });
                }
            });
        }
        m.opt_str("decision", *decision);
        if !would_deny.is_empty() {
            m.objects("would_deny", would_deny, |WouldDeny { code, reason }, m| {
                m.str("code", code);
                m.str("reason", reason);
            });
        }
        if let Some(addr) = upstream_addr {
            m.display("upstream_addr", addr);
        }
        m.opt_u64("duration_ms", *duration_ms);
        m.opt_u64("status", status.map(u64::from));
        m.opt_str("code", *code);
        m.opt_str("reason", reason.as_deref());
    }
}

#[cfg(test)]
fn serial<S: serde::Serializer>(subject: &Arc<Subject>, out: S) -> Result<S::Ok, S::Error> {
    out.serialize_str(&subject.summary.serial_hex)
}

#[cfg(test)]
fn method<S: serde::Serializer>(method: &Method, out: S) -> Result<S::Ok, S::Error> {
    out.serialize_str(method.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The members as the log writes them, in an object of their own.
    fn ours(trail: &Trail<'_>) -> String {
        let mut out = b"{\"x\":0".to_vec();
        trail.write_members(&mut Members::after_others(&mut out));
        out.push(b'}');
        String::from_utf8(out).unwrap()
    }

    fn serde(trail: &Trail<'_>) -> String {
        let json = serde_json::to_string(trail).unwrap();
        format!("{{\"x\":0,{}", &json[1..])
    }

    #[test]
    fn lines_are_byte_for_byte_what_serde_writes() {
        let subject = crate::signing::tests::subject();
        let hostile = "/v1/\"q\\\n\u{1}é 漢";
        let minimal = Trail::new("bot", subject.clone(), Method::GET, "/");
        assert_eq!(ours(&minimal), serde(&minimal));

        let mut full = Trail::new("bot \"x\"", subject, Method::POST, hostile);
        full.host = Some("api.exchange.com".into());
        full.port = Some(8443);
        full.action = Some("submit_trade");
        full.revocation = Some("good");
        full.revocation_error = Some("responder said \"try later\"\n".into());
        full.signed = Some(true);
        full.signature = Some(Signed {
            keyid: "0a1b2c".into(),
            nonce: "UGKQEk87Mi7K3qOxjVn5Aw".into(),
            created: 1_795_455_385,
            batch: Some(BatchPlace { index: 3, size: 20 }),
        });
        full.decision = Some("would_deny");
        full.would_deny = vec![
            WouldDeny {
                code: "rate_limited",
                reason: "5/s \"burst\"".into(),
            },
            WouldDeny {
                code: "host_denied",
                reason: String::new(),
            },
        ];
        full.upstream_addr = Some("[::1]:8443".parse().unwrap());
        full.duration_ms = Some(u64::MAX);
        full.status = Some(403);
        full.code = Some("policy_denied");
        full.reason = Some(hostile.into());
        assert_eq!(ours(&full), serde(&full));

        full.signature = Some(Signed {
            keyid: "k".into(),
            nonce: "n".into(),
            created: 0,
            batch: None,
        });
        full.upstream_addr = Some("127.0.0.1:443".parse().unwrap());
        assert_eq!(ours(&full), serde(&full));
        serde_json::from_str::<serde_json::Value>(&ours(&full)).unwrap();
    }
}
