//! What a receiver decides once, at start.

use std::time::Duration;

use rustls_pki_types::CertificateDer;

/// How revocation is established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationMode {
    /// A stapled response, else the responder; no status = refused (the
    /// seed's `fail_open: false`).
    Required,
    /// As `Required`, but a status that cannot be established lets the
    /// request through, marked unchecked. A revoked or unknown status still
    /// refuses.
    FailOpen,
    /// No revocation check. For receivers that check a CRL themselves.
    Off,
}

#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// CA certificates that agent certificates must chain to.
    pub trust_anchors: Vec<CertificateDer<'static>>,
    /// Required SPIFFE trust domain; None accepts any (the CA is already
    /// pinned by `trust_anchors`).
    pub trust_domain: Option<String>,
    /// Dotted OID of the scope extension.
    pub scope_oid: String,
    /// The RFC 9421 label read from `Signature-Input` / `Signature`.
    pub label: String,
    /// How old `created` may be (the seed's 60 s).
    pub max_age: Duration,
    /// How far ahead of this clock `created` may be.
    pub clock_skew: Duration,
    pub revocation: RevocationMode,
    /// A fetched OCSP answer is reused this long (the seed's 5 s), never past
    /// its nextUpdate.
    pub ocsp_cache_ttl: Duration,
    /// A stapled response is accepted if its thisUpdate is this recent.
    /// Default 10 s: the sender's 5 s cache plus the seed's 5 s TTL.
    pub staple_max_age: Duration,
    /// Ask this responder instead of the certificate's AIA URL.
    pub ocsp_url: Option<String>,
    /// At most this many nonces are remembered; beyond it requests are
    /// refused (`replay_cache_full`) rather than let through unchecked.
    pub replay_capacity: usize,
    /// `@authority` values this receiver answers for (lower case, port
    /// included when not the scheme's default). Empty: any.
    pub authorities: Vec<String>,
}

impl VerifierConfig {
    pub fn new(trust_anchors: Vec<CertificateDer<'static>>) -> VerifierConfig {
        VerifierConfig {
            trust_anchors,
            trust_domain: None,
            scope_oid: "1.3.6.1.4.1.32473.1.1".to_string(),
            label: kakunin_signer::httpsig::LABEL.to_string(),
            max_age: Duration::from_secs(60),
            clock_skew: Duration::from_secs(5),
            revocation: RevocationMode::Required,
            ocsp_cache_ttl: Duration::from_secs(5),
            staple_max_age: Duration::from_secs(10),
            ocsp_url: None,
            replay_capacity: 1_000_000,
            authorities: Vec::new(),
        }
    }
}

/// A configuration that cannot work, found at start rather than per request.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no trust anchors: give the CA certificate(s) that issue agent certificates")]
    NoTrustAnchors,
    #[error("trust anchor {index} is not a usable CA certificate: {reason}")]
    BadTrustAnchor { index: usize, reason: String },
    #[error("scope OID {0:?} is not a dotted object identifier")]
    BadScopeOid(String),
    #[error("{0}")]
    Invalid(String),
}
