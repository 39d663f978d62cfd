//! Why a request was refused: stable codes for logs and for other languages,
//! and the HTTP statuses the seed's receiver answers with (401 identity,
//! revocation and signature; 400 timestamp; 403 scope).

use std::fmt;

use crate::Agent;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No client certificate in the TLS session and no `X-Agent-Certificate`.
    CertificateMissing,
    /// Not DER, does not chain to a trust anchor, wrong key usage.
    ChainInvalid,
    CertificateExpired,
    CertificateNotYetValid,
    /// `X-Agent-Certificate` names another certificate than the TLS session.
    CertificateMismatch,
    /// The URI SAN is not `spiffe://<trust domain>/agent/<CN>`.
    SpiffeIdInvalid,
    Revoked,
    /// The CA does not know the certificate.
    RevocationUnknown,
    /// No revocation status could be established (fail closed).
    RevocationUnavailable,
    SignatureMissing,
    SignatureMalformed,
    /// `keyid` is not the certificate's serial.
    KeyIdMismatch,
    SignatureAlgorithmUnsupported,
    /// `created` is older than the freshness window.
    TimestampExpired,
    TimestampInFuture,
    /// `X-Agent-Timestamp` disagrees with `created`.
    TimestampMismatch,
    /// `expires` has passed.
    SignatureExpired,
    /// The nonce was already accepted within the window.
    Replayed,
    /// The replay window is full: refusing is the only safe answer.
    ReplayCacheFull,
    SignatureInvalid,
    ContentDigestMismatch,
    /// `@authority` is not one this receiver answers for.
    AuthorityMismatch,
    /// The certificate carries no scope extension, or one that is not a policy.
    ScopeInvalid,
    /// The request is outside the scope the certificate states.
    ScopeDenied,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::CertificateMissing => "certificate_missing",
            Reason::ChainInvalid => "certificate_chain_invalid",
            Reason::CertificateExpired => "certificate_expired",
            Reason::CertificateNotYetValid => "certificate_not_yet_valid",
            Reason::CertificateMismatch => "certificate_mismatch",
            Reason::SpiffeIdInvalid => "spiffe_id_invalid",
            Reason::Revoked => "certificate_revoked",
            Reason::RevocationUnknown => "certificate_unknown",
            Reason::RevocationUnavailable => "revocation_unavailable",
            Reason::SignatureMissing => "signature_missing",
            Reason::SignatureMalformed => "signature_malformed",
            Reason::KeyIdMismatch => "keyid_mismatch",
            Reason::SignatureAlgorithmUnsupported => "signature_algorithm_unsupported",
            Reason::TimestampExpired => "timestamp_expired",
            Reason::TimestampInFuture => "timestamp_in_future",
            Reason::TimestampMismatch => "timestamp_mismatch",
            Reason::SignatureExpired => "signature_expired",
            Reason::Replayed => "nonce_replayed",
            Reason::ReplayCacheFull => "replay_cache_full",
            Reason::SignatureInvalid => "signature_invalid",
            Reason::ContentDigestMismatch => "content_digest_mismatch",
            Reason::AuthorityMismatch => "authority_mismatch",
            Reason::ScopeInvalid => "scope_invalid",
            Reason::ScopeDenied => "scope_denied",
        }
    }

    /// The status a receiver answers with.
    pub fn http_status(self) -> u16 {
        match self {
            Reason::TimestampExpired
            | Reason::TimestampInFuture
            | Reason::TimestampMismatch
            | Reason::SignatureExpired => 400,
            Reason::ScopeInvalid | Reason::ScopeDenied => 403,
            Reason::RevocationUnavailable | Reason::ReplayCacheFull => 503,
            _ => 401,
        }
    }

    /// Whether a request refused for this reason had a valid signature: the
    /// checks after the signature are replay and scope. Kept here, beside
    /// the order `Verifier::verify` runs them in, so that audit records
    /// (the seed's `signature_valid`) cannot drift from it.
    pub fn signature_held(self) -> bool {
        matches!(
            self,
            Reason::Replayed | Reason::ReplayCacheFull | Reason::ScopeDenied | Reason::ScopeInvalid
        )
    }

    /// The seed's error text for the family this reason belongs to.
    pub fn summary(self) -> &'static str {
        match self {
            Reason::CertificateMissing
            | Reason::ChainInvalid
            | Reason::CertificateExpired
            | Reason::CertificateNotYetValid
            | Reason::CertificateMismatch
            | Reason::SpiffeIdInvalid => "Invalid certificate chain",
            Reason::Revoked | Reason::RevocationUnknown => "Certificate revoked",
            Reason::RevocationUnavailable => "Revocation status unavailable",
            Reason::TimestampExpired
            | Reason::TimestampInFuture
            | Reason::TimestampMismatch
            | Reason::SignatureExpired => "Request timestamp expired",
            Reason::ReplayCacheFull => "Replay protection unavailable",
            Reason::ScopeInvalid | Reason::ScopeDenied => "Action not in agent scope",
            _ => "Signature verification failed",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A refused request: the reason, what exactly was wrong, and who sent it
/// when that was established before the refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
    pub agent: Option<Agent>,
}

impl Rejection {
    pub(crate) fn new(reason: Reason, detail: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            detail: detail.into(),
            agent: None,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.code(), self.detail)
    }
}

impl std::error::Error for Rejection {}
