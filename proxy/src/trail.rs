//! What the decision log records about one request as it moves through the
//! pipeline. Typed fields, serialized straight into the log's line: no map
//! of JSON values built and torn down per request.

use std::net::SocketAddr;
use std::sync::Arc;

use http::Method;
use serde::{Serialize, Serializer};

use crate::revocation::Subject;
use crate::signing::Signed;

/// One request's audit fields. A field appears in a line once it is known,
/// so a refused request's line shows how far the request got.
#[derive(Serialize)]
pub struct Trail<'p> {
    pub agent_id: &'p str,
    /// The certificate the request left (or would have left) with.
    #[serde(rename = "agent_cert_serial", serialize_with = "serial")]
    pub subject: Arc<Subject>,
    #[serde(serialize_with = "method")]
    pub method: Method,
    /// The path only: a query string or user information may hold secrets.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'p str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signed>,
    /// "allow" or "would_deny" once decided, "deny" when refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<&'static str>,
    /// Report mode: the checks that would have refused the request.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub would_deny: Vec<WouldDeny>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_addr: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why the request was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Serialize)]
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

fn serial<S: Serializer>(subject: &Arc<Subject>, out: S) -> Result<S::Ok, S::Error> {
    out.serialize_str(&subject.summary.serial_hex)
}

fn method<S: Serializer>(method: &Method, out: S) -> Result<S::Ok, S::Error> {
    out.serialize_str(method.as_str())
}
