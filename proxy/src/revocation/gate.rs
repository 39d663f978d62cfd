//! The gate's state: the certificate in use, its cached status, and the
//! certificates known to be revoked.
//!
//! Locking: `state` (a std mutex, never held across an await) guards the
//! cache, the halts, and the swap of certificate and TLS identity together,
//! so an admission always sees a certificate and a status that belong to
//! each other. `refresh` (an async mutex) lets one OCSP fetch run at a time;
//! requests that waited on it take its answer whatever its age.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kakunin_signer::{AgentIdentity, KeyBackend};
use rustls_pki_types::CertificateDer;
use serde_json::{json, Map};

use super::ask::{Answer, Ask, Good};
use super::fetch::HttpUrl;
use super::refusals::{check_validity, revoked_error, unavailable_error, unknown_error};
use super::{Admission, GateSettings, Halt, Subject};
use crate::audit::AuditLog;
use crate::clock::unix_now;
use crate::errors::ProxyError;
use crate::upstream::Upstream;

/// After a failed fetch, requests within this window get the same answer
/// instead of each waiting on a responder that just failed.
const FAILURE_HOLD: Duration = Duration::from_secs(1);
/// Admission retries when the certificate changes while it is checked.
const ADMIT_ATTEMPTS: usize = 3;

struct Failure {
    at: Instant,
    message: String,
    /// A verified `unknown`: refused whatever fail_open says.
    unknown: bool,
}

#[derive(Default)]
struct State {
    /// For the current subject only; cleared when it changes.
    good: Option<Good>,
    failure: Option<Failure>,
    /// Bumped on every invalidation and certificate change, so a fetch that
    /// started before one cannot store its (possibly outdated) answer.
    epoch: u64,
    /// Completed fetches, so that a request that waited for one uses it.
    fetches: u64,
    /// By serial; a halt outlives rotations.
    halts: HashMap<String, Halt>,
}

pub struct RevocationGate {
    settings: GateSettings,
    /// Replaced only while `state` is held.
    subject: RwLock<Arc<Subject>>,
    state: Mutex<State>,
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

    /// The key behind every certificate this gate admits, for request
    /// signatures. Rotation never changes it: `AgentIdentity::replace_chain`
    /// refuses a certificate for another key, so whichever certificate an
    /// admission names, this key is the one it certifies.
    pub fn key(&self) -> &Arc<dyn KeyBackend> {
        self.identity.backend()
    }

    /// Whether the TLS identity presents `subject`'s certificate now.
    pub fn presents(&self, subject: &Subject) -> bool {
        self.identity.presents(&subject.leaf)
    }

    /// Where `subject`'s status is asked. Checked at start and on rotation
    /// so that a certificate without a responder, or with the wrong issuer,
    /// fails loudly instead of at the first request.
    pub fn responder_for(&self, subject: &Subject) -> Result<Option<HttpUrl>, String> {
        if !self.settings.enabled {
            return Ok(None);
        }
        let Some(issuer) = &subject.issuer else {
            return Err(format!(
                "revocation checking needs the certificate of the CA that issued serial {}: set \
                 identity.issuer, or put it after the agent certificate in the identity file",
                subject.summary.serial_hex
            ));
        };
        kakunin_authority::ocsp::check_issuer(subject.leaf.as_ref(), issuer.as_ref()).map_err(
            |e| {
                format!(
                    "the issuer certificate did not issue serial {}: {e}",
                    subject.summary.serial_hex
                )
            },
        )?;
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

    /// Switches to a new certificate (rotation): the TLS identity and the
    /// gate's subject change together. A revoked certificate is refused, as
    /// is one whose key does not match the key backend.
    pub fn rotate_to(
        &self,
        subject: Subject,
        chain: Vec<CertificateDer<'static>>,
    ) -> Result<(), String> {
        self.responder_for(&subject)?;
        let mut state = self.lock();
        if let Some(halt) = state.halts.get(&subject.summary.serial_hex) {
            return Err(format!(
                "serial {} was revoked ({}); a revoked certificate is never used again",
                halt.serial, halt.reason
            ));
        }
        self.identity
            .replace_chain(chain)
            .map_err(|e| e.to_string())?;
        *self.subject.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(subject);
        state.good = None;
        state.failure = None;
        state.epoch += 1;
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
        let state = self.lock();
        state.halts.get(&self.subject().summary.serial_hex).cloned()
    }

    /// The gate itself: the admission to attach to the request, or the
    /// refusal.
    pub async fn admit(&self) -> Result<Admission, ProxyError> {
        for _ in 1..ADMIT_ATTEMPTS {
            if let Some(admission) = self.admit_once().await? {
                return Ok(admission);
            }
        }
        match self.admit_once().await? {
            Some(admission) => Ok(admission),
            None => self.unavailable(
                self.subject(),
                "the certificate kept changing while its status was checked".into(),
            ),
        }
    }

    /// None when the certificate changed under the check (try again).
    async fn admit_once(&self) -> Result<Option<Admission>, ProxyError> {
        let (subject, seen) = {
            let state = self.lock();
            (self.subject(), state.fetches)
        };
        check_validity(&subject.summary, unix_now())?;
        if !self.settings.enabled {
            if let Some(halt) = self.lock().halts.get(&subject.summary.serial_hex) {
                return Err(revoked_error(halt));
            }
            return Ok(Some(Admission {
                subject,
                staple: None,
                status: "disabled",
                note: None,
            }));
        }
        if let Some(admission) = self.answer_from_state(&subject, false)? {
            return Ok(Some(admission));
        }
        let Some(_single) = self.fetch_turn().await else {
            return self
                .unavailable(
                    subject,
                    "the status check in progress did not finish in time".into(),
                )
                .map(Some);
        };
        if self.lock().fetches == seen {
            self.fetch(&subject).await;
        }
        if !Arc::ptr_eq(&subject, &self.subject()) {
            return Ok(None);
        }
        match self.answer_from_state(&subject, true)? {
            Some(admission) => Ok(Some(admission)),
            None => self
                .unavailable(subject, "the responder gave no usable answer".into())
                .map(Some),
        }
    }

    /// Asks the responder now (the watch stream's trigger), so a revocation
    /// is acted on before the next request arrives.
    pub async fn refresh_now(&self) {
        self.invalidate();
        if !self.settings.enabled {
            return;
        }
        let subject = self.subject();
        let Some(_single) = self.fetch_turn().await else {
            return;
        };
        let needed = {
            let state = self.lock();
            state.good.is_none() && !state.halts.contains_key(&subject.summary.serial_hex)
        };
        if needed {
            self.fetch(&subject).await;
        }
    }

    /// The right to fetch, once the fetch in progress (if any) is done; None
    /// if that one overran its own deadline by far.
    async fn fetch_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        let wait = self.settings.timeout + Duration::from_secs(1);
        tokio::time::timeout(wait, self.refresh.lock()).await.ok()
    }

    /// Some(admission) when the state answers for `subject` without a fetch.
    /// `just_fetched`: the caller waited for a fetch, whose answer counts
    /// whatever the TTL (with a TTL of 0 every request would otherwise make
    /// its own round trip, one at a time).
    fn answer_from_state(
        &self,
        subject: &Arc<Subject>,
        just_fetched: bool,
    ) -> Result<Option<Admission>, ProxyError> {
        let state = self.lock();
        if let Some(halt) = state.halts.get(&subject.summary.serial_hex) {
            return Err(revoked_error(halt));
        }
        if !Arc::ptr_eq(subject, &self.subject()) {
            return Ok(None);
        }
        if let Some(good) = &state.good {
            let young = just_fetched || good.fetched.elapsed() < self.settings.ttl;
            let current = good.next_update.is_none_or(|n| unix_now() < n);
            if young && current {
                return Ok(Some(Admission {
                    subject: subject.clone(),
                    staple: Some(good.staple.clone()),
                    status: "good",
                    note: None,
                }));
            }
        }
        if let Some(failure) = &state.failure {
            if just_fetched || failure.at.elapsed() < FAILURE_HOLD.min(self.settings.ttl) {
                if failure.unknown {
                    return Err(unknown_error(&failure.message));
                }
                let message = failure.message.clone();
                drop(state);
                return self.unavailable(subject.clone(), message).map(Some);
            }
        }
        Ok(None)
    }

    fn unavailable(&self, subject: Arc<Subject>, message: String) -> Result<Admission, ProxyError> {
        if !self.settings.fail_open {
            return Err(unavailable_error(&message));
        }
        tracing::warn!(%message, "revocation status unknown; forwarding because fail_open is set");
        Ok(Admission {
            subject,
            staple: None,
            status: "unchecked",
            note: Some(message),
        })
    }

    /// One OCSP round trip; the outcome lands in `state`.
    async fn fetch(&self, subject: &Arc<Subject>) {
        let epoch = self.lock().epoch;
        let outcome = match (self.responder_for(subject), &subject.issuer) {
            (Ok(Some(url)), Some(issuer)) => {
                Ask {
                    url: &url,
                    issuer: issuer.as_ref(),
                    timeout: self.settings.timeout,
                    require_nonce: self.settings.require_nonce,
                    now_unix: unix_now(),
                }
                .about(subject)
                .await
            }
            (Err(message), _) => Err(message),
            _ => Err("no responder or issuer for this certificate".into()),
        };
        let mut state = self.lock();
        state.fetches += 1;
        let current = state.epoch == epoch && Arc::ptr_eq(subject, &self.subject());
        let failure = |message: String, unknown: bool| Failure {
            at: Instant::now(),
            message,
            unknown,
        };
        match outcome {
            Ok(Answer::Good(good)) if current => {
                state.good = Some(good);
                state.failure = None;
            }
            Ok(Answer::Good(_)) => {}
            // Authoritative whenever it arrives.
            Ok(Answer::Revoked(halt)) => {
                let first = state
                    .halts
                    .insert(halt.serial.clone(), halt.clone())
                    .is_none();
                if current {
                    state.good = None;
                }
                drop(state);
                self.halt(subject, &halt, first, current);
            }
            Ok(Answer::Unknown(message)) if current => {
                tracing::error!(serial = %subject.summary.serial_hex, %message, "certificate unknown to its CA");
                state.good = None;
                state.failure = Some(failure(message, true));
            }
            Err(message) if current => {
                tracing::warn!(serial = %subject.summary.serial_hex, %message, "revocation check failed");
                state.good = None;
                state.failure = Some(failure(message, false));
            }
            Ok(Answer::Unknown(_)) | Err(_) => {}
        }
    }

    /// The incident: that certificate is never presented again, connections
    /// made with it are dropped, and it is logged once.
    fn halt(&self, subject: &Subject, halt: &Halt, first: bool, current: bool) {
        self.identity.halt(&subject.leaf);
        if current {
            self.upstream.pool().retire_all();
            self.upstream.connector().forget_sessions();
        }
        if !first {
            return;
        }
        tracing::error!(
            serial = %halt.serial,
            reason = %halt.reason,
            revoked_at = halt.revoked_at,
            "agent certificate REVOKED: identity halted; every action with it is refused"
        );
        let mut fields = Map::new();
        fields.insert("agent_id".into(), json!(subject.summary.common_name));
        fields.insert("agent_cert_serial".into(), json!(halt.serial));
        fields.insert("revocation_reason".into(), json!(halt.reason.name()));
        fields.insert("revoked_at".into(), json!(halt.revoked_at));
        fields.insert("current_certificate".into(), json!(current));
        fields.insert("decision".into(), json!("halt"));
        // Goes out on its own: a halt must not wait on the log.
        drop(self.audit.record("identity.revoked", &fields));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}
