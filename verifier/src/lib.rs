//! Receiver-side verification of Kakunin agent requests.
//!
//! A receiver (an exchange, an internal API) hands each request to
//! [`Verifier::verify`] and gets an [`Outcome`]. The checks run in the
//! seed's order:
//!
//! 1. certificate: chains to the configured trust anchors (rustls-webpki,
//!    client-auth usage), valid now, a SPIFFE ID naming the agent;
//! 2. revocation: a recent stapled OCSP response, else a cached or fetched
//!    one (fail closed unless configured otherwise);
//! 3. freshness: `created` within the window, `expires` not passed,
//!    `X-Agent-Timestamp` consistent;
//! 4. signature: RFC 9421, rebuilt from the request, with the
//!    certificate's key; `Content-Digest` recomputed from the body;
//! 5. replay: the nonce was not accepted before within the window (checked
//!    after the signature, so only authenticated requests touch the window);
//! 6. scope: the certificate's scope extension applied to the request.
//!
//! No I/O and no async: when a revocation status must be fetched the
//! outcome is [`Outcome::NeedsOcsp`]; the caller POSTs the query with its own
//! HTTP client, passes the answer to [`Verifier::complete_ocsp`] and calls
//! `verify` again ([`Verifier::verify_with`] does that loop for blocking
//! callers). The wire format is in docs/wire-format.md.

mod chain;
mod config;
mod reason;
mod replay;
mod revocation;
mod scope;

use std::time::SystemTime;

use base64::Engine;
use http::HeaderMap;
use kakunin_authority::CertStatus;
use kakunin_signer::httpsig::{HttpSigError, Message, ParsedSignature, TargetUri};
use rustls_pki_types::CertificateDer;

/// The RFC 9421 building blocks, for receivers that check other profiles.
pub use kakunin_signer::httpsig;

pub use chain::Agent;
pub use config::{ConfigError, RevocationMode, VerifierConfig};
pub use reason::{Reason, Rejection};
pub use revocation::{OcspQuery, RevocationEvidence};

use chain::{Anchors, CheckedLeaf};
use replay::{ReplayCache, ReplayError};
use revocation::{Established, RevocationCache};
use scope::ScopeCache;

/// A header that carries a certificate larger than this is refused unread.
const MAX_CERT_HEADER_LEN: usize = 16 * 1024;
/// Longer nonces are refused: they would only cost memory in the window.
const MAX_NONCE_LEN: usize = 128;

/// One request as the receiver got it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// `https` behind TLS.
    pub scheme: &'a str,
    /// The `Host` header (or HTTP/2 `:authority`).
    pub authority: &'a str,
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// The client's certificate chain from the TLS session, leaf first;
    /// empty when the request did not come over mutual TLS (the leaf is then
    /// read from `X-Agent-Certificate`).
    pub peer_chain: &'a [CertificateDer<'a>],
}

/// An accepted request: who sent it and what was established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub agent: Agent,
    /// The scope's action rule the request matched, if any.
    pub action: Option<String>,
    pub revocation: RevocationEvidence,
    pub alg: &'static str,
    /// `created`, Unix seconds.
    pub created: i64,
    pub nonce: String,
}

#[derive(Debug)]
pub enum Outcome {
    Accepted(Verdict),
    Rejected(Rejection),
    /// Fetch this, hand it to [`Verifier::complete_ocsp`], verify again.
    NeedsOcsp(Box<OcspQuery>),
}

pub struct Verifier {
    config: VerifierConfig,
    anchors: Anchors,
    revocation: RevocationCache,
    replay: ReplayCache,
    scopes: ScopeCache,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn unix(now: SystemTime) -> i64 {
    now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, secs)
}

impl Verifier {
    pub fn new(config: VerifierConfig) -> Result<Verifier, ConfigError> {
        let anchors = Anchors::new(&config.trust_anchors)?;
        let oid_ok = config.scope_oid.split('.').count() >= 2
            && config
                .scope_oid
                .split('.')
                .all(|arc| !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit()));
        if !oid_ok {
            return Err(ConfigError::BadScopeOid(config.scope_oid.clone()));
        }
        if config.replay_capacity == 0 {
            return Err(ConfigError::Invalid(
                "replay_capacity must be at least 1".into(),
            ));
        }
        Ok(Verifier {
            revocation: RevocationCache::new(
                secs(config.ocsp_cache_ttl),
                secs(config.staple_max_age),
                config.ocsp_url.clone(),
            ),
            replay: ReplayCache::new(config.replay_capacity),
            scopes: ScopeCache::new(),
            anchors,
            config,
        })
    }

    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// Runs every check on `request` as of `now`.
    pub fn verify(&self, request: &Request<'_>, now: SystemTime) -> Outcome {
        let now = unix(now);
        let mut agent = None;
        match self.run(request, now, &mut agent) {
            Ok(verdict) => Outcome::Accepted(verdict),
            Err(Step::Need(query)) => Outcome::NeedsOcsp(query),
            Err(Step::Refuse(mut rejection)) => {
                rejection.agent = agent;
                Outcome::Rejected(rejection)
            }
        }
    }

    /// Records the responder's answer to `query` (`Err` with the reason when
    /// there was none: unreachable, timed out, not HTTP 200).
    pub fn complete_ocsp(&self, query: &OcspQuery, response: Result<&[u8], &str>, now: SystemTime) {
        self.revocation.complete(query, response, unix(now));
    }

    /// `verify`, fetching a revocation status with `fetch` when one is
    /// needed (at most once per call).
    pub fn verify_with<F>(
        &self,
        request: &Request<'_>,
        now: SystemTime,
        fetch: F,
    ) -> Result<Verdict, Rejection>
    where
        F: FnOnce(&OcspQuery) -> Result<Vec<u8>, String>,
    {
        let mut fetch = Some(fetch);
        loop {
            match self.verify(request, now) {
                Outcome::Accepted(verdict) => return Ok(verdict),
                Outcome::Rejected(rejection) => return Err(rejection),
                Outcome::NeedsOcsp(query) => {
                    let Some(fetch) = fetch.take() else {
                        return Err(Rejection::new(
                            Reason::RevocationUnavailable,
                            "the revocation status is still unknown after a fetch",
                        ));
                    };
                    let answer = fetch(&query);
                    self.complete_ocsp(&query, answer.as_deref().map_err(String::as_str), now);
                }
            }
        }
    }

    fn run(
        &self,
        req: &Request<'_>,
        now: i64,
        agent_out: &mut Option<Agent>,
    ) -> Result<Verdict, Step> {
        // 1. Certificate.
        let leaf_der = self.leaf(req)?;
        let intermediates = req.peer_chain.get(1..).unwrap_or(&[]);
        let leaf = self.anchors.check(
            &leaf_der,
            intermediates,
            now,
            self.config.trust_domain.as_deref(),
            &self.config.scope_oid,
        )?;
        *agent_out = Some(leaf.agent.clone());

        // 2. Revocation.
        let revocation = self.revocation_status(&leaf_der, &leaf, req.headers, now)?;

        // 3. Freshness (after parsing what it is read from).
        let parsed =
            httpsig::parse_signature(req.headers, &self.config.label).map_err(sig_refusal)?;
        httpsig::check_profile(&parsed, req.headers).map_err(sig_refusal)?;
        let params = &parsed.input.params;
        let (created, expires, nonce) = match (params.created, params.expires, &params.nonce) {
            (Some(c), Some(e), Some(n)) => (c, e, n.clone()),
            _ => {
                return Err(refuse(
                    Reason::SignatureMalformed,
                    "created, expires and nonce are required",
                ))
            }
        };
        if params.keyid.as_deref() != Some(leaf.agent.serial_hex.as_str()) {
            return Err(refuse(
                Reason::KeyIdMismatch,
                format!(
                    "keyid {:?} is not the certificate's serial {}",
                    params.keyid.as_deref().unwrap_or(""),
                    leaf.agent.serial_hex
                ),
            ));
        }
        self.check_freshness(req.headers, &parsed, created, expires, now)?;

        if nonce.len() > MAX_NONCE_LEN {
            return Err(refuse(Reason::SignatureMalformed, "nonce is too long"));
        }

        // 4. Signature over the rebuilt base, then the body's digest.
        if !self.config.authorities.is_empty() {
            let target = TargetUri::new(req.scheme, req.authority, req.path_and_query);
            if !self
                .config
                .authorities
                .iter()
                .any(|a| a == target.authority())
            {
                return Err(refuse(
                    Reason::AuthorityMismatch,
                    format!(
                        "the request is for {:?}, not for this receiver",
                        target.authority()
                    ),
                ));
            }
        }
        let alg = self.check_signature(req, &parsed, &leaf.spki)?;

        // 5. Replay: only a request that proved its origin is recorded, so
        // forged requests cannot fill the window or probe which nonces it
        // holds; a changed replay is refused for the change.
        if let Err(e) = self.replay.insert(
            &leaf.agent.serial_hex,
            &nonce,
            created
                .saturating_add(secs(self.config.max_age))
                .min(expires)
                .saturating_add(secs(self.config.clock_skew)),
            now,
        ) {
            return Err(match e {
                ReplayError::Replayed => {
                    refuse(Reason::Replayed, "this nonce was already accepted")
                }
                ReplayError::Full => refuse(
                    Reason::ReplayCacheFull,
                    "too many requests within the freshness window",
                ),
            });
        }

        // 6. Scope.
        let policy = self
            .scopes
            .policy(leaf.scope.as_deref(), &leaf.agent.agent_id)?;
        let action = scope::check(
            &policy,
            req.method,
            req.authority,
            req.path_and_query,
            req.body,
            now,
        )?;

        Ok(Verdict {
            agent: leaf.agent,
            action,
            revocation,
            alg,
            created,
            nonce,
        })
    }

    fn leaf(&self, req: &Request<'_>) -> Result<CertificateDer<'static>, Step> {
        let from_header = match req.headers.get(httpsig::X_AGENT_CERTIFICATE) {
            None => None,
            Some(value) => {
                let bad = || {
                    refuse(
                        Reason::ChainInvalid,
                        "X-Agent-Certificate is not base64 DER",
                    )
                };
                let text = value.to_str().map_err(|_| bad())?;
                if text.len() > MAX_CERT_HEADER_LEN {
                    return Err(refuse(
                        Reason::ChainInvalid,
                        "X-Agent-Certificate is too large",
                    ));
                }
                let der = base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .map_err(|_| bad())?;
                Some(CertificateDer::from(der))
            }
        };
        match (req.peer_chain.first(), from_header) {
            (Some(tls), Some(header)) if tls.as_ref() != header.as_ref() => Err(refuse(
                Reason::CertificateMismatch,
                "X-Agent-Certificate is not the certificate of the TLS session",
            )),
            (Some(tls), _) => Ok(tls.clone().into_owned()),
            (None, Some(header)) => Ok(header),
            (None, None) => Err(refuse(
                Reason::CertificateMissing,
                "no client certificate in the TLS session and no X-Agent-Certificate",
            )),
        }
    }

    fn revocation_status(
        &self,
        leaf_der: &CertificateDer<'_>,
        leaf: &CheckedLeaf,
        headers: &HeaderMap,
        now: i64,
    ) -> Result<RevocationEvidence, Step> {
        if self.config.revocation == RevocationMode::Off {
            return Ok(RevocationEvidence::Off);
        }
        let staple = headers
            .get(httpsig::X_AGENT_OCSP)
            .and_then(|v| v.to_str().ok());
        match self.revocation.establish(leaf_der, leaf, staple, now) {
            Established::Status(CertStatus::Good, evidence) => Ok(evidence),
            Established::Status(CertStatus::Revoked { revoked_at, reason }, _) => Err(refuse(
                Reason::Revoked,
                format!("revoked at {revoked_at} (Unix time), reason {reason}"),
            )),
            Established::Status(CertStatus::Unknown, _) => Err(refuse(
                Reason::RevocationUnknown,
                "the CA's responder does not know this certificate",
            )),
            Established::Need(query) => Err(Step::Need(query)),
            Established::Unavailable(_) if self.config.revocation == RevocationMode::FailOpen => {
                Ok(RevocationEvidence::Unchecked)
            }
            Established::Unavailable(why) => Err(refuse(Reason::RevocationUnavailable, why)),
        }
    }

    fn check_freshness(
        &self,
        headers: &HeaderMap,
        parsed: &ParsedSignature,
        created: i64,
        expires: i64,
        now: i64,
    ) -> Result<(), Step> {
        let skew = secs(self.config.clock_skew);
        if now.saturating_sub(created) > secs(self.config.max_age) {
            return Err(refuse(
                Reason::TimestampExpired,
                format!(
                    "created {} s ago; the limit is {} s",
                    now - created,
                    self.config.max_age.as_secs()
                ),
            ));
        }
        if created > now.saturating_add(skew) {
            return Err(refuse(
                Reason::TimestampInFuture,
                format!("created {} s in the future", created - now),
            ));
        }
        if expires < now.saturating_sub(skew) {
            return Err(refuse(
                Reason::SignatureExpired,
                format!("expired {} s ago", now - expires),
            ));
        }
        if let Some(value) = headers.get(httpsig::X_AGENT_TIMESTAMP) {
            let ms = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok());
            if ms.map(|ms| ms.div_euclid(1000)) != Some(created) {
                return Err(refuse(
                    Reason::TimestampMismatch,
                    "X-Agent-Timestamp is not the signature's created time",
                ));
            }
        }
        if let Some(value) = headers.get(httpsig::X_AGENT_SIGNATURE) {
            let mirrored = base64::engine::general_purpose::STANDARD.encode(&parsed.signature);
            if value.as_bytes() != mirrored.as_bytes() {
                return Err(refuse(
                    Reason::SignatureMalformed,
                    "X-Agent-Signature is not the RFC 9421 signature",
                ));
            }
        }
        Ok(())
    }

    fn check_signature(
        &self,
        req: &Request<'_>,
        parsed: &ParsedSignature,
        spki: &[u8],
    ) -> Result<&'static str, Step> {
        let target = TargetUri::new(req.scheme, req.authority, req.path_and_query);
        let message = Message::Request {
            method: req.method,
            target: &target,
            headers: req.headers,
        };
        let alg = httpsig::verify_signature(&message, parsed, spki).map_err(sig_refusal)?;
        let digest = httpsig::field_value(req.headers, "content-digest")
            .ok()
            .flatten()
            .ok_or_else(|| refuse(Reason::SignatureMalformed, "Content-Digest is missing"))?;
        httpsig::check_content_digest(&digest, req.body).map_err(sig_refusal)?;
        Ok(alg.name())
    }
}

/// Why `run` stopped early.
enum Step {
    Refuse(Rejection),
    Need(Box<OcspQuery>),
}

impl From<Rejection> for Step {
    fn from(rejection: Rejection) -> Step {
        Step::Refuse(rejection)
    }
}

fn refuse(reason: Reason, detail: impl Into<String>) -> Step {
    Step::Refuse(Rejection::new(reason, detail))
}

fn sig_refusal(err: HttpSigError) -> Step {
    let reason = match &err {
        HttpSigError::MissingHeader(_) | HttpSigError::LabelMissing(_) => Reason::SignatureMissing,
        HttpSigError::BadSignature => Reason::SignatureInvalid,
        HttpSigError::DigestMismatch => Reason::ContentDigestMismatch,
        HttpSigError::UnsupportedAlgorithm(_) => Reason::SignatureAlgorithmUnsupported,
        _ => Reason::SignatureMalformed,
    };
    refuse(reason, err.to_string())
}
