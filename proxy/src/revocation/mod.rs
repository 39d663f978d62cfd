//! The revocation gate (DESIGN.md step 7): before the proxy acts with the
//! agent's identity, it knows that identity's status.
//!
//! - A fresh, verified OCSP answer of `good` (younger than the policy's
//!   `cache_ttl_seconds`, and before its nextUpdate) lets requests through and
//!   is stapled to them (`X-Agent-OCSP`).
//! - `revoked` halts the identity: every later action is refused with 403
//!   `identity_revoked`, the certificate is no longer presented in
//!   handshakes, and pooled connections are dropped. Only a new certificate
//!   (rotation) lifts it.
//! - No valid fresh answer: 503 `revocation_unavailable`, unless the policy
//!   says `fail_open`, in which case the request goes out marked unchecked.
//! - The watch stream (see `watch`) invalidates the cache the moment the CA
//!   announces a revocation; the signed OCSP answer fetched then is what
//!   halts, so a forged announcement can at most cause a re-check.

mod fetch;
mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::{HeaderValue, StatusCode};
use kakunin_authority::{CertStatus, RevocationReason};
use kakunin_signer::AgentIdentity;
use rustls_pki_types::CertificateDer;
use serde_json::{json, Map, Value};

pub use fetch::HttpUrl;
pub use watch::spawn_watch;

use crate::audit::AuditLog;
use crate::errors::ProxyError;
use crate::identity::CertSummary;
use crate::upstream::Upstream;

/// Header carrying the stapled OCSP response (base64 DER).
pub const OCSP_HEADER: &str = "x-agent-ocsp";

/// After a failed fetch, requests within this window get the same answer
/// instead of each waiting on a responder that just failed.
const FAILURE_HOLD: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct GateSettings {
    pub enabled: bool,
    pub ttl: Duration,
    pub fail_open: bool,
    /// Overrides the certificate's AIA OCSP URL.
    pub ocsp_url: Option<HttpUrl>,
    pub timeout: Duration,
}

/// The certificate the proxy currently acts with.
#[derive(Debug, Clone)]
pub struct Subject {
    pub leaf: CertificateDer<'static>,
    pub issuer: Option<CertificateDer<'static>>,
    pub summary: CertSummary,
}

#[derive(Debug, Clone)]
pub struct Halt {
    pub serial: String,
    pub reason: RevocationReason,
    pub revoked_at: i64,
}

struct Cached {
    staple: HeaderValue,
    fetched: Instant,
    next_update: Option<i64>,
}

struct Failure {
    at: Instant,
    message: String,
}

#[derive(Default)]
struct State {
    /// For the current subject only; cleared when it changes.
    good: Option<Cached>,
    failure: Option<Failure>,
    /// Bumped on every invalidation, so a fetch that started before one
    /// cannot store its (possibly outdated) answer.
    epoch: u64,
    /// By serial: a halt outlives a rotation attempt back to a revoked cert.
    halts: HashMap<String, Halt>,
}

/// What the gate lets through with a request.
#[derive(Debug)]
pub struct Admission {
    pub staple: Option<HeaderValue>,
    /// For the audit log: "good", "disabled" or "unchecked" (failed open).
    pub status: &'static str,
    /// Why the status could not be checked, when failing open.
    pub note: Option<String>,
}

pub struct RevocationGate {
    settings: GateSettings,
    subject: RwLock<Arc<Subject>>,
    state: Mutex<State>,
    /// One fetch at a time; waiters then read its result from `state`.
    refresh: tokio::sync::Mutex<()>,
    identity: Arc<AgentIdentity>,
    upstream: Upstream,
    audit: Arc<AuditLog>,
}

impl RevocationGate {
    pub fn new(
        settings: GateSettings,
        subject: Subject,
        identity: Arc<AgentIdentity>,
        upstream: Upstream,
        audit: Arc<AuditLog>,
    ) -> Result<RevocationGate, String> {
        let gate = RevocationGate {
            settings,
            subject: RwLock::new(Arc::new(subject)),
            state: Mutex::new(State::default()),
            refresh: tokio::sync::Mutex::new(()),
            identity,
            upstream,
            audit,
        };
        gate.responder_for(&gate.subject())?;
        Ok(gate)
    }

    pub fn settings(&self) -> &GateSettings {
        &self.settings
    }

    pub fn subject(&self) -> Arc<Subject> {
        self.subject
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Where the current certificate's status is asked. Checked at start and
    /// on rotation so that a certificate without a responder fails loudly.
    pub fn responder_for(&self, subject: &Subject) -> Result<Option<HttpUrl>, String> {
        if !self.settings.enabled {
            return Ok(None);
        }
        if subject.issuer.is_none() {
            return Err(format!(
                "revocation checking needs the certificate of the CA that issued serial {}: put \
                 it after the agent certificate in the identity file, or set revocation.issuer",
                subject.summary.serial_hex
            ));
        }
        if let Some(url) = &self.settings.ocsp_url {
            return Ok(Some(url.clone()));
        }
        match kakunin_authority::ocsp::ocsp_url(subject.leaf.as_ref()) {
            Some(text) => HttpUrl::parse(&text)
                .map(Some)
                .map_err(|e| format!("the certificate's OCSP URL: {e}")),
            None => Err(format!(
                "the agent certificate (serial {}) names no OCSP responder (AIA); set \
                 revocation.ocsp_url, or disable revocation_check in the policy",
                subject.summary.serial_hex
            )),
        }
    }

    /// Makes `subject` the identity acted with (rotation). The caller has
    /// already swapped the TLS identity.
    pub fn replace_subject(&self, subject: Subject) -> Result<(), String> {
        self.responder_for(&subject)?;
        *self.subject.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(subject);
        self.invalidate();
        Ok(())
    }

    /// Forgets the cached answer: the next action asks the responder.
    pub fn invalidate(&self) {
        let mut state = self.lock();
        state.good = None;
        state.failure = None;
        state.epoch += 1;
    }

    pub fn halted(&self) -> Option<Halt> {
        let serial = self.subject().summary.serial_hex.clone();
        self.lock().halts.get(&serial).cloned()
    }

    /// The gate itself: Ok with what to attach, or the refusal.
    pub async fn admit(&self) -> Result<Admission, ProxyError> {
        let subject = self.subject();
        if let Some(halt) = self.lock().halts.get(&subject.summary.serial_hex) {
            return Err(revoked_error(halt));
        }
        check_validity(&subject.summary, unix_now())?;
        if !self.settings.enabled {
            return Ok(Admission {
                staple: None,
                status: "disabled",
                note: None,
            });
        }
        if let Some(admission) = self.answer_from_state(&subject)? {
            return Ok(admission);
        }
        let _single = self.refresh.lock().await;
        // Another task may have fetched while this one waited.
        if let Some(admission) = self.answer_from_state(&subject)? {
            return Ok(admission);
        }
        self.fetch(&subject).await;
        match self.answer_from_state(&subject)? {
            Some(admission) => Ok(admission),
            None => self.unavailable("no answer was stored".into()),
        }
    }

    /// Asks the responder now (the watch stream's trigger), so a revocation
    /// is acted on before the next request arrives.
    pub async fn refresh_now(&self) {
        self.invalidate();
        let subject = self.subject();
        if !self.settings.enabled {
            return;
        }
        let _single = self.refresh.lock().await;
        if self.lock().good.is_none() {
            self.fetch(&subject).await;
        }
    }

    /// Some(admission) when the state answers without a fetch.
    fn answer_from_state(&self, subject: &Subject) -> Result<Option<Admission>, ProxyError> {
        let state = self.lock();
        if let Some(halt) = state.halts.get(&subject.summary.serial_hex) {
            return Err(revoked_error(halt));
        }
        if let Some(good) = &state.good {
            let young = good.fetched.elapsed() < self.settings.ttl;
            let current = good.next_update.is_none_or(|n| unix_now() < n);
            if young && current {
                return Ok(Some(Admission {
                    staple: Some(good.staple.clone()),
                    status: "good",
                    note: None,
                }));
            }
        }
        if let Some(failure) = &state.failure {
            if failure.at.elapsed() < FAILURE_HOLD.min(self.settings.ttl) {
                let message = failure.message.clone();
                drop(state);
                return self.unavailable(message).map(Some);
            }
        }
        Ok(None)
    }

    fn unavailable(&self, message: String) -> Result<Admission, ProxyError> {
        if self.settings.fail_open {
            tracing::warn!(%message, "revocation status unknown; forwarding because fail_open is set");
            return Ok(Admission {
                staple: None,
                status: "unchecked",
                note: Some(message),
            });
        }
        Err(ProxyError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "revocation_unavailable",
            format!(
                "the agent certificate's revocation status cannot be confirmed, so nothing is \
                 sent (revocation_check.fail_open is false): {message}"
            ),
        ))
    }

    /// One OCSP round trip; the outcome lands in `state`.
    async fn fetch(&self, subject: &Subject) {
        let epoch = self.lock().epoch;
        let outcome = self.ask(subject).await;
        let mut state = self.lock();
        let same_subject = self.subject().summary.serial_hex == subject.summary.serial_hex;
        match outcome {
            Ok(Answer::Good(cached)) if same_subject && state.epoch == epoch => {
                state.good = Some(cached);
                state.failure = None;
            }
            Ok(Answer::Good(_)) => {}
            Ok(Answer::Revoked(halt)) => {
                let first = !state.halts.contains_key(&halt.serial);
                state.halts.insert(halt.serial.clone(), halt.clone());
                state.good = None;
                drop(state);
                if first && same_subject {
                    self.halt(subject, &halt);
                }
            }
            Err(message) => {
                tracing::warn!(serial = %subject.summary.serial_hex, %message, "revocation check failed");
                state.good = None;
                state.failure = Some(Failure {
                    at: Instant::now(),
                    message,
                });
            }
        }
    }

    async fn ask(&self, subject: &Subject) -> Result<Answer, String> {
        let url = self
            .responder_for(subject)?
            .ok_or("revocation checking is disabled")?;
        let issuer = subject
            .issuer
            .as_ref()
            .ok_or("the issuing CA certificate is unknown")?;
        let nonce = random_nonce()?;
        let request = kakunin_authority::ocsp::build_request(
            subject.leaf.as_ref(),
            issuer.as_ref(),
            Some(&nonce),
        )
        .map_err(|e| format!("cannot build the OCSP request: {e}"))?;
        let der = url.post_ocsp(request, self.settings.timeout).await?;
        let verified = kakunin_authority::ocsp::verify_response(
            &der,
            subject.leaf.as_ref(),
            issuer.as_ref(),
            unix_now(),
            Some(&nonce),
        )
        .map_err(|e| format!("the answer from {} was refused: {e}", url.as_str()))?;
        match verified.status {
            CertStatus::Good => {
                let staple =
                    HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(&der))
                        .map_err(|_| "the OCSP answer cannot be stapled".to_string())?;
                Ok(Answer::Good(Cached {
                    staple,
                    fetched: Instant::now(),
                    next_update: verified.next_update,
                }))
            }
            CertStatus::Revoked { revoked_at, reason } => Ok(Answer::Revoked(Halt {
                serial: subject.summary.serial_hex.clone(),
                reason,
                revoked_at,
            })),
            CertStatus::Unknown => Err(format!(
                "{} does not know serial {} (status unknown): is it the right CA's responder?",
                url.as_str(),
                subject.summary.serial_hex
            )),
        }
    }

    /// The incident: logged once, the identity stops being presented, and
    /// connections made with it are dropped.
    fn halt(&self, subject: &Subject, halt: &Halt) {
        self.identity.halt();
        self.upstream.pool().retire_all();
        self.upstream.connector().forget_sessions();
        tracing::error!(
            serial = %halt.serial,
            reason = %halt.reason,
            revoked_at = halt.revoked_at,
            "agent certificate REVOKED: identity halted; every action is refused"
        );
        let mut fields = Map::new();
        fields.insert("agent_id".into(), json!(subject.summary.common_name));
        fields.insert("agent_cert_serial".into(), json!(halt.serial));
        fields.insert("revocation_reason".into(), json!(halt.reason.name()));
        fields.insert("revoked_at".into(), json!(halt.revoked_at));
        fields.insert("decision".into(), Value::from("halt"));
        self.audit.record("identity.revoked", fields);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

enum Answer {
    Good(Cached),
    Revoked(Halt),
}

pub fn revoked_error(halt: &Halt) -> ProxyError {
    ProxyError::new(
        StatusCode::FORBIDDEN,
        "identity_revoked",
        format!(
            "the agent certificate (serial {}) was revoked ({}) at unix time {}: this identity \
             is halted and every action is refused; the operator must issue a new certificate",
            halt.serial, halt.reason, halt.revoked_at
        ),
    )
}

/// The gate refuses to act with a certificate outside its validity period,
/// whatever the responder says.
fn check_validity(cert: &CertSummary, now: i64) -> Result<(), ProxyError> {
    if now < cert.not_before_unix {
        return Err(ProxyError::new(
            StatusCode::FORBIDDEN,
            "identity_not_yet_valid",
            format!(
                "the agent certificate (serial {}) is not valid until unix time {}",
                cert.serial_hex, cert.not_before_unix
            ),
        ));
    }
    if now > cert.not_after_unix {
        return Err(ProxyError::new(
            StatusCode::FORBIDDEN,
            "identity_expired",
            format!(
                "the agent certificate (serial {}) expired at {}: rotate it",
                cert.serial_hex, cert.not_after
            ),
        ));
    }
    Ok(())
}

fn random_nonce() -> Result<[u8; 16], String> {
    use ring::rand::SecureRandom;
    let mut nonce = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| "the system random source failed".to_string())?;
    Ok(nonce)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(not_before: i64, not_after: i64) -> CertSummary {
        CertSummary {
            common_name: "bot".into(),
            serial_hex: "0a".into(),
            not_after: "then".into(),
            not_before_unix: not_before,
            not_after_unix: not_after,
            client_auth: Some(true),
            scope: None,
        }
    }

    #[test]
    fn validity_is_enforced_by_the_gate() {
        assert!(check_validity(&summary(10, 20), 15).is_ok());
        assert_eq!(
            check_validity(&summary(10, 20), 21).unwrap_err().code,
            "identity_expired"
        );
        assert_eq!(
            check_validity(&summary(10, 20), 9).unwrap_err().code,
            "identity_not_yet_valid"
        );
    }

    #[test]
    fn revoked_error_names_reason_and_serial() {
        let err = revoked_error(&Halt {
            serial: "0a".into(),
            reason: RevocationReason::KeyCompromise,
            revoked_at: 5,
        });
        assert_eq!(err.status, StatusCode::FORBIDDEN);
        assert!(err.message.contains("keyCompromise") && err.message.contains("0a"));
    }
}
