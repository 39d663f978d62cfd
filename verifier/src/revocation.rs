//! Is the certificate revoked? A stapled response answers when it is recent;
//! otherwise a cached answer from the responder; otherwise the caller is
//! asked to fetch one (`Outcome::NeedsOcsp`): this crate does no I/O.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use kakunin_authority::ocsp::{build_request, verify_response};
use kakunin_authority::CertStatus;
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::CertificateDer;

use crate::chain::CheckedLeaf;

/// Answers fetched from a responder are kept for at most this many
/// certificates; past it the expired ones go, and if none expired, all.
const CACHE_CAPACITY: usize = 10_000;
/// After a failed fetch the failure stands this long, so a down responder
/// is not asked again by every request.
const FAILURE_HOLD_SECS: i64 = 1;
/// A staple larger than this is not decoded.
const MAX_STAPLE_LEN: usize = 16 * 1024;

/// Where a revocation status came from, for the verdict and the audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationEvidence {
    /// The sender's stapled `X-Agent-OCSP` response.
    Stapled,
    /// A response fetched for this request.
    Fetched,
    /// A response fetched earlier, within the cache TTL.
    Cached,
    /// Not established, let through because the receiver fails open.
    Unchecked,
    /// Revocation checking is off.
    Off,
}

impl RevocationEvidence {
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationEvidence::Stapled => "stapled",
            RevocationEvidence::Fetched => "fetched",
            RevocationEvidence::Cached => "cached",
            RevocationEvidence::Unchecked => "unchecked",
            RevocationEvidence::Off => "off",
        }
    }
}

/// A request the caller sends (HTTP POST, `application/ocsp-request`) to
/// `url`, then hands the answer to `Verifier::complete_ocsp`.
#[derive(Debug, Clone)]
pub struct OcspQuery {
    pub url: String,
    pub request_der: Vec<u8>,
    pub(crate) serial: String,
    pub(crate) leaf: CertificateDer<'static>,
    pub(crate) issuer: CertificateDer<'static>,
    pub(crate) nonce: [u8; 16],
}

pub(crate) enum Established {
    Status(CertStatus, RevocationEvidence),
    Need(Box<OcspQuery>),
    Unavailable(String),
}

struct Entry {
    answer: Result<CertStatus, String>,
    until: i64,
    /// Recorded by `complete` and not read since: the request that asked
    /// for it reports the status as fetched, later ones as cached.
    unread: bool,
}

pub(crate) struct RevocationCache {
    entries: Mutex<HashMap<String, Entry>>,
    ttl_secs: i64,
    staple_max_age_secs: i64,
    ocsp_url: Option<String>,
}

impl RevocationCache {
    pub fn new(ttl_secs: i64, staple_max_age_secs: i64, ocsp_url: Option<String>) -> Self {
        RevocationCache {
            entries: Mutex::new(HashMap::new()),
            ttl_secs,
            staple_max_age_secs,
            ocsp_url,
        }
    }

    pub fn establish(
        &self,
        leaf_der: &CertificateDer<'_>,
        leaf: &CheckedLeaf,
        staple: Option<&str>,
        now: i64,
    ) -> Established {
        if let Some(status) = staple.and_then(|s| self.stapled(s, leaf_der, leaf, now)) {
            return Established::Status(status, RevocationEvidence::Stapled);
        }
        let serial = &leaf.agent.serial_hex;
        if let Ok(mut entries) = self.entries.lock() {
            if let Some(entry) = entries.get_mut(serial).filter(|e| e.until >= now) {
                let evidence = if std::mem::take(&mut entry.unread) {
                    RevocationEvidence::Fetched
                } else {
                    RevocationEvidence::Cached
                };
                return match &entry.answer {
                    Ok(status) => Established::Status(*status, evidence),
                    Err(why) => Established::Unavailable(why.clone()),
                };
            }
        }
        let Some(url) = self.ocsp_url.clone().or_else(|| leaf.ocsp_url.clone()) else {
            return Established::Unavailable(
                "the certificate names no OCSP responder and none is configured".into(),
            );
        };
        let mut nonce = [0u8; 16];
        if SystemRandom::new().fill(&mut nonce).is_err() {
            return Established::Unavailable("the system random source failed".into());
        }
        match build_request(leaf_der.as_ref(), leaf.issuer.as_ref(), Some(&nonce)) {
            Ok(request_der) => Established::Need(Box::new(OcspQuery {
                url,
                request_der,
                serial: serial.clone(),
                leaf: leaf_der.clone().into_owned(),
                issuer: leaf.issuer.clone(),
                nonce,
            })),
            Err(e) => Established::Unavailable(format!("cannot build the OCSP request: {e}")),
        }
    }

    /// A staple counts when it verifies against the issuer and is recent.
    /// One that does not is ignored (and the responder asked): the sender
    /// may have stapled an old answer, and stripping a staple gains an
    /// attacker nothing.
    fn stapled(
        &self,
        staple: &str,
        leaf_der: &CertificateDer<'_>,
        leaf: &CheckedLeaf,
        now: i64,
    ) -> Option<CertStatus> {
        if staple.len() > MAX_STAPLE_LEN {
            return None;
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(staple.trim())
            .ok()?;
        let verified =
            verify_response(&der, leaf_der.as_ref(), leaf.issuer.as_ref(), now, None).ok()?;
        // A revoked answer stands however old it is; a good one must be recent.
        match verified.status {
            CertStatus::Revoked { .. } => Some(verified.status),
            _ if now.saturating_sub(verified.this_update) <= self.staple_max_age_secs => {
                Some(verified.status)
            }
            _ => None,
        }
    }

    /// Records the responder's answer (or why there is none) for `query`.
    pub fn complete(&self, query: &OcspQuery, response: Result<&[u8], &str>, now: i64) {
        let answer = response.map_err(str::to_string).and_then(|der| {
            verify_response(
                der,
                query.leaf.as_ref(),
                query.issuer.as_ref(),
                now,
                Some(&query.nonce),
            )
            .map_err(|e| e.to_string())
            .and_then(|v| {
                // Without the nonce echoed, only a fresh answer rules out a
                // replayed old one.
                if v.nonce_echoed || now.saturating_sub(v.this_update) <= self.staple_max_age_secs {
                    Ok(v)
                } else {
                    Err("the responder's answer is old and does not echo our nonce".into())
                }
            })
        });
        let until = match &answer {
            Ok(v) => v
                .next_update
                .map_or(now + self.ttl_secs, |next| next.min(now + self.ttl_secs)),
            Err(_) => now + FAILURE_HOLD_SECS,
        };
        let entry = Entry {
            answer: answer.map(|v| v.status),
            until,
            unread: true,
        };
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CACHE_CAPACITY {
                entries.retain(|_, e| e.until >= now);
                if entries.len() >= CACHE_CAPACITY {
                    entries.clear();
                }
            }
            entries.insert(query.serial.clone(), entry);
        }
    }
}
