//! The revocation gate (DESIGN.md step 7): before the proxy acts with the
//! agent's identity, it knows that identity's status.
//!
//! - A fresh, verified OCSP answer of `good` (younger than the policy's
//!   `cache_ttl_seconds`, and before its nextUpdate) lets requests through and
//!   is stapled to them (`X-Agent-OCSP`). The answer must echo the request's
//!   nonce (unless `require_nonce` is off): OCSP runs over plain HTTP, and
//!   without the nonce an old "good" saved before a revocation could be
//!   replayed until its nextUpdate.
//! - `revoked` halts that certificate: every later action is refused with
//!   403 `identity_revoked`, it is no longer presented in handshakes, and
//!   pooled connections are dropped. Only a different certificate (rotation)
//!   lifts it; rotating back to a revoked one is refused.
//! - `unknown` (the CA does not know a certificate it signed) is refused
//!   with 403 `identity_unknown`, whatever `fail_open` says.
//! - No valid fresh answer: 503 `revocation_unavailable`, unless the policy
//!   says `fail_open`, in which case the request goes out marked unchecked.
//! - The watch stream (see `watch`) invalidates the cache the moment the CA
//!   announces a revocation; the signed OCSP answer fetched then is what
//!   halts, so a forged announcement can at most cause a re-check.

mod ask;
mod fetch;
mod gate;
mod refusals;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use kakunin_authority::RevocationReason;
use kakunin_signer::httpsig::CertificateHeader;
use rustls_pki_types::CertificateDer;

use crate::identity::CertSummary;

pub use fetch::HttpUrl;
pub use gate::RevocationGate;
pub use refusals::revoked_error;
pub use watch::spawn_watch;

/// Header carrying the stapled OCSP response (base64 DER).
pub const OCSP_HEADER: &str = "x-agent-ocsp";

#[derive(Debug, Clone)]
pub struct GateSettings {
    pub enabled: bool,
    pub ttl: Duration,
    pub fail_open: bool,
    /// Overrides the certificate's AIA OCSP URL.
    pub ocsp_url: Option<HttpUrl>,
    pub timeout: Duration,
    /// Refuse answers that do not echo the request's nonce (replay defence).
    pub require_nonce: bool,
}

/// The certificate the proxy currently acts with.
#[derive(Debug, Clone)]
pub struct Subject {
    pub leaf: CertificateDer<'static>,
    pub issuer: Option<CertificateDer<'static>>,
    pub summary: CertSummary,
    /// `leaf` as signed requests carry it (`X-Agent-Certificate`), encoded
    /// once per certificate.
    pub certificate_header: CertificateHeader,
}

impl Subject {
    pub fn new(
        leaf: CertificateDer<'static>,
        issuer: Option<CertificateDer<'static>>,
        summary: CertSummary,
    ) -> anyhow::Result<Subject> {
        let certificate_header = CertificateHeader::new(&leaf)
            .map_err(|e| anyhow::anyhow!("the agent certificate as a header: {e}"))?;
        Ok(Subject {
            leaf,
            issuer,
            summary,
            certificate_header,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Halt {
    pub serial: String,
    pub reason: RevocationReason,
    pub revoked_at: i64,
}

/// What the gate lets through with a request.
#[derive(Debug)]
pub struct Admission {
    /// The certificate the status is about; the request must leave with it.
    pub subject: Arc<Subject>,
    pub staple: Option<HeaderValue>,
    /// For the audit log: "good", "disabled" or "unchecked" (failed open).
    pub status: &'static str,
    /// Why the status could not be checked, when failing open.
    pub note: Option<String>,
}
