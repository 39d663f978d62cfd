use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rustls::SignatureScheme;

/// Where a key's signing operation runs, which decides how the TLS adapter
/// may call it from inside an async runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locality {
    /// Signing is a short CPU-bound call; it may run inline on any thread.
    InProcess,
    /// Signing is a network or device round trip that blocks; it must not
    /// occupy an async worker thread.
    Remote,
    /// Signing is a network round trip made by an async client (KMS).
    /// [`KeyBackend::sign_async`] waits for it without holding any thread,
    /// so a thousand signatures in flight cost a thousand small futures, not
    /// a thousand threads; [`KeyBackend::sign`] still works, and blocks as
    /// for `Remote`.
    RemoteAsync,
}

/// A signature being made elsewhere (see [`Locality::RemoteAsync`]).
pub type PendingSignature = Pin<Box<dyn Future<Output = Result<Vec<u8>, KeyError>> + Send>>;

/// The public-key algorithm of a backend's key. The signature scheme is
/// chosen from this, never from the certificate's signature algorithm (which
/// describes the issuer's key, not ours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    EcdsaP256,
    EcdsaP384,
    Rsa,
    Ed25519,
}

impl KeyAlgorithm {
    /// The TLS signature schemes this key can produce, most preferred first.
    pub fn tls_schemes(self) -> &'static [SignatureScheme] {
        match self {
            KeyAlgorithm::EcdsaP256 => &[SignatureScheme::ECDSA_NISTP256_SHA256],
            KeyAlgorithm::EcdsaP384 => &[SignatureScheme::ECDSA_NISTP384_SHA384],
            KeyAlgorithm::Ed25519 => &[SignatureScheme::ED25519],
            // PSS first: TLS 1.3 forbids PKCS#1 v1.5 in CertificateVerify;
            // v1.5 stays available for TLS 1.2 peers that offer nothing else.
            KeyAlgorithm::Rsa => &[
                SignatureScheme::RSA_PSS_SHA512,
                SignatureScheme::RSA_PSS_SHA384,
                SignatureScheme::RSA_PSS_SHA256,
                SignatureScheme::RSA_PKCS1_SHA512,
                SignatureScheme::RSA_PKCS1_SHA384,
                SignatureScheme::RSA_PKCS1_SHA256,
            ],
        }
    }

    pub fn tls_algorithm(self) -> rustls::SignatureAlgorithm {
        match self {
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => rustls::SignatureAlgorithm::ECDSA,
            KeyAlgorithm::Rsa => rustls::SignatureAlgorithm::RSA,
            KeyAlgorithm::Ed25519 => rustls::SignatureAlgorithm::ED25519,
        }
    }

    /// The algorithm of the key in a DER SubjectPublicKeyInfo, if it is one
    /// an agent can use. Remote backends read it from the public key they
    /// are given, which is what certificates will be checked against.
    pub fn of_spki(spki_der: &[u8]) -> Option<KeyAlgorithm> {
        use crate::httpsig::SigAlg;
        Some(match SigAlg::for_spki(spki_der)? {
            SigAlg::EcdsaP256Sha256 => KeyAlgorithm::EcdsaP256,
            SigAlg::EcdsaP384Sha384 => KeyAlgorithm::EcdsaP384,
            SigAlg::RsaPssSha512 => KeyAlgorithm::Rsa,
            SigAlg::Ed25519 => KeyAlgorithm::Ed25519,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::EcdsaP384 => "ecdsa-p384",
            KeyAlgorithm::Rsa => "rsa",
            KeyAlgorithm::Ed25519 => "ed25519",
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path} holds no usable private key: {reason}")]
    Parse { path: String, reason: String },
    #[error("key reference {reference:?} is not supported: {reason}")]
    Unsupported { reference: String, reason: String },
    /// Opening a remote key failed: it does not exist, cannot sign, or the
    /// service could not be asked. Said at start, before anything is served.
    #[error("cannot use key {key}: {reason}")]
    Open { key: String, reason: String },
    #[error("key {key} cannot sign with {scheme:?}")]
    SchemeUnsupported {
        key: String,
        scheme: SignatureScheme,
    },
    #[error("signing with {key} failed: {reason}")]
    Sign { key: String, reason: String },
    /// More signatures are waiting than the backend admits; refused at once
    /// rather than queued without bound.
    #[error("{key} is busy: {waiting} signatures already waiting (limit {limit})")]
    Busy {
        key: String,
        waiting: usize,
        limit: usize,
    },
    #[error("{key} did not sign within {after:?}")]
    Timeout { key: String, after: Duration },
    /// The service is rate limiting us and kept doing so through the retries.
    #[error("{key} is throttled: {reason}")]
    Throttled { key: String, reason: String },
    #[error("{key} cannot be reached: {reason}")]
    Unreachable { key: String, reason: String },
    /// The service refused this key for good (disabled, scheduled for
    /// deletion, not found, access denied): retrying will not help.
    #[error("{key} refused to sign: {reason}")]
    Refused { key: String, reason: String },
    /// Outside the context the policy allows the key to be used in (hours,
    /// region); checked locally before any remote call.
    #[error("{key} may not sign here and now: {reason}")]
    OutOfContext { key: String, reason: String },
}

impl KeyError {
    /// A short stable name for metrics and audit records.
    pub fn kind(&self) -> &'static str {
        match self {
            KeyError::Read { .. } | KeyError::Parse { .. } => "key_file",
            KeyError::Unsupported { .. } => "unsupported",
            KeyError::Open { .. } => "open",
            KeyError::SchemeUnsupported { .. } => "scheme_unsupported",
            KeyError::Sign { .. } => "sign_failed",
            KeyError::Busy { .. } => "busy",
            KeyError::Timeout { .. } => "timeout",
            KeyError::Throttled { .. } => "throttled",
            KeyError::Unreachable { .. } => "unreachable",
            KeyError::Refused { .. } => "refused",
            KeyError::OutOfContext { .. } => "out_of_context",
        }
    }
}

/// A private key that signs on request and never exposes its secret.
///
/// `sign` may block (a KMS call, an HSM session); callers inside an async
/// runtime must honour [`KeyBackend::locality`].
pub trait KeyBackend: Send + Sync + fmt::Debug {
    /// A description safe to log (a path or a key id, never key material).
    fn describe(&self) -> String;
    fn algorithm(&self) -> KeyAlgorithm;
    /// DER SubjectPublicKeyInfo of the key, compared with certificates.
    fn public_key_spki(&self) -> &[u8];
    fn locality(&self) -> Locality;
    /// Sign `message` (not a digest) with `scheme`, which must be one of
    /// `self.algorithm().tls_schemes()`. ECDSA signatures are DER-encoded, as
    /// TLS wants them.
    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, KeyError>;

    /// [`KeyBackend::sign`] as a future that holds no thread while it waits,
    /// for keys whose `locality` is [`Locality::RemoteAsync`]; the call is
    /// started before this returns. Others keep the default, which refuses:
    /// a caller that asks anyway gets an error, never a blocked worker.
    fn sign_async(&self, scheme: SignatureScheme, message: &[u8]) -> PendingSignature {
        let _ = (scheme, message);
        let refused = KeyError::Unsupported {
            reference: self.describe(),
            reason: "this key signs synchronously; call sign".into(),
        };
        Box::pin(std::future::ready(Err(refused)))
    }
}
