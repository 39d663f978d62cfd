use std::sync::{Arc, Mutex, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use rustls_pki_types::{CertificateDer, SubjectPublicKeyInfoDer};

use crate::backend::{KeyBackend, Locality};

/// The key backend failed to sign during a TLS handshake. Carried inside
/// `rustls::Error::Other`; find it with [`SignerUnavailable::find`].
#[derive(Debug, thiserror::Error)]
#[error("the agent's key could not sign: {0}")]
pub struct SignerUnavailable(pub crate::backend::KeyError);

impl SignerUnavailable {
    /// Looks for a signer failure behind a TLS error.
    pub fn find(err: &rustls::Error) -> Option<&SignerUnavailable> {
        match err {
            rustls::Error::Other(other) => other.0.downcast_ref::<SignerUnavailable>(),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("certificate does not match key {key}: {reason}; keep the certificate that was issued for this key")]
    KeyMismatch { key: String, reason: String },
    #[error("certificate chain is empty")]
    EmptyChain,
}

/// The agent's TLS client identity: a certificate chain and the backend that
/// holds its key. The chain can be replaced while connections are being made
/// (rotation); a replacement whose public key does not match the backend's is
/// refused and the current one stays.
#[derive(Debug)]
pub struct AgentIdentity {
    backend: Arc<dyn KeyBackend>,
    current: RwLock<Arc<CertifiedKey>>,
    /// Certificates known to be revoked: none is presented in a handshake
    /// again, whatever path asks, and a rotation back to one stays halted.
    /// Per certificate, so that a halt decided for an old certificate never
    /// silences the one that replaced it.
    halted: Mutex<Vec<CertificateDer<'static>>>,
}

impl AgentIdentity {
    pub fn new(
        backend: Arc<dyn KeyBackend>,
        chain: Vec<CertificateDer<'static>>,
    ) -> Result<Self, IdentityError> {
        let certified = certify(&backend, chain)?;
        Ok(AgentIdentity {
            backend,
            current: RwLock::new(certified),
            halted: Mutex::new(Vec::new()),
        })
    }

    /// Never presents `leaf` again: while it is the current certificate,
    /// handshakes send none, so a server that requires one refuses them.
    pub fn halt(&self, leaf: &CertificateDer<'_>) {
        let mut halted = self.halted.lock().unwrap_or_else(|p| p.into_inner());
        if !halted.iter().any(|h| h.as_ref() == leaf.as_ref()) {
            halted.push(leaf.clone().into_owned());
        }
    }

    /// Whether the current certificate is a halted one.
    pub fn is_halted(&self) -> bool {
        let current = self.snapshot();
        let Some(leaf) = current.cert.first() else {
            return true;
        };
        self.halted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|h| h.as_ref() == leaf.as_ref())
    }

    pub fn backend(&self) -> &Arc<dyn KeyBackend> {
        &self.backend
    }

    /// The leaf certificate currently presented.
    pub fn leaf(&self) -> CertificateDer<'static> {
        let current = self.snapshot();
        // certify() refuses empty chains, so index 0 exists.
        current
            .cert
            .first()
            .cloned()
            .unwrap_or_else(|| CertificateDer::from(Vec::new()))
    }

    /// Whether `leaf` is the certificate presented now (no copy made: this
    /// runs once per request).
    pub fn presents(&self, leaf: &CertificateDer<'_>) -> bool {
        self.snapshot().cert.first().map(|c| c.as_ref()) == Some(leaf.as_ref())
    }

    pub fn replace_chain(&self, chain: Vec<CertificateDer<'static>>) -> Result<(), IdentityError> {
        let certified = certify(&self.backend, chain)?;
        match self.current.write() {
            Ok(mut guard) => *guard = certified,
            Err(poisoned) => *poisoned.into_inner() = certified,
        }
        Ok(())
    }

    fn snapshot(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

fn certify(
    backend: &Arc<dyn KeyBackend>,
    chain: Vec<CertificateDer<'static>>,
) -> Result<Arc<CertifiedKey>, IdentityError> {
    if chain.is_empty() {
        return Err(IdentityError::EmptyChain);
    }
    let key = Arc::new(BackendSigningKey {
        backend: backend.clone(),
    });
    let certified = CertifiedKey::new(chain, key);
    certified
        .keys_match()
        .map_err(|e| IdentityError::KeyMismatch {
            key: backend.describe(),
            reason: e.to_string(),
        })?;
    Ok(Arc::new(certified))
}

impl ResolvesClientCert for AgentIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let current = self.snapshot();
        let halted = self.halted.lock().unwrap_or_else(|p| p.into_inner());
        let leaf = current.cert.first()?;
        if halted.iter().any(|h| h.as_ref() == leaf.as_ref()) {
            return None;
        }
        drop(halted);
        // Present the certificate only if we can sign with a scheme the server
        // offered; otherwise rustls sends no certificate and the server's
        // refusal names the real problem.
        current.key.choose_scheme(sigschemes)?;
        Some(current)
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[derive(Debug)]
struct BackendSigningKey {
    backend: Arc<dyn KeyBackend>,
}

impl SigningKey for BackendSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = self
            .backend
            .algorithm()
            .tls_schemes()
            .iter()
            .find(|s| offered.contains(s))?;
        Some(Box::new(BackendSigner {
            backend: self.backend.clone(),
            scheme: *scheme,
        }))
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(
            self.backend.public_key_spki(),
        ))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.backend.algorithm().tls_algorithm()
    }
}

#[derive(Debug)]
struct BackendSigner {
    backend: Arc<dyn KeyBackend>,
    scheme: SignatureScheme,
}

impl Signer for BackendSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let sign = || {
            self.backend.sign(self.scheme, message).map_err(|e| {
                // Typed, so the proxy can tell "our key could not sign" (503)
                // from "the peer broke the handshake" (502).
                rustls::Error::Other(rustls::OtherError(Arc::new(SignerUnavailable(e))))
            })
        };
        match self.backend.locality() {
            Locality::InProcess => sign(),
            Locality::Remote | Locality::RemoteAsync => run_blocking(sign),
        }
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// rustls calls `Signer::sign` synchronously inside the handshake, which runs
/// on an async worker. A remote key's call is done elsewhere (a KMS call on
/// the key's own runtime, an HSM call on one of its sessions) and bounded by
/// the key's deadline, but this thread still waits for the answer; so on a
/// multi-threaded tokio runtime the worker first hands its other tasks to
/// another thread (`block_in_place`), and only this connection waits.
#[cfg(feature = "tokio")]
fn run_blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Without tokio there is no runtime worker to protect.
#[cfg(not(feature = "tokio"))]
fn run_blocking<T>(f: impl FnOnce() -> T) -> T {
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::FileKey;

    fn self_signed(key: &rcgen::KeyPair) -> CertificateDer<'static> {
        let params = rcgen::CertificateParams::new(vec!["agent".into()]).unwrap();
        params.self_signed(key).unwrap().der().clone()
    }

    fn file_key(key: &rcgen::KeyPair) -> Arc<dyn KeyBackend> {
        Arc::new(FileKey::from_pem("test", key.serialize_pem().as_bytes()).unwrap())
    }

    #[test]
    fn matching_certificate_is_accepted_and_resolved() {
        let key = rcgen::KeyPair::generate().unwrap();
        let identity = AgentIdentity::new(file_key(&key), vec![self_signed(&key)]).unwrap();
        let resolved = identity
            .resolve(&[], &[SignatureScheme::ECDSA_NISTP256_SHA256])
            .unwrap();
        assert_eq!(resolved.cert.len(), 1);
        // A server that offers only RSA schemes gets no certificate from a P-256 key.
        assert!(identity
            .resolve(&[], &[SignatureScheme::RSA_PSS_SHA256])
            .is_none());
    }

    #[test]
    fn a_halt_silences_that_certificate_only() {
        let key = rcgen::KeyPair::generate().unwrap();
        let (first, second) = (self_signed(&key), self_signed(&key));
        let identity = AgentIdentity::new(file_key(&key), vec![first.clone()]).unwrap();
        let schemes = [SignatureScheme::ECDSA_NISTP256_SHA256];
        identity.halt(&first);
        assert!(identity.is_halted());
        assert!(identity.resolve(&[], &schemes).is_none());
        // A new certificate is presented ...
        identity.replace_chain(vec![second.clone()]).unwrap();
        assert!(!identity.is_halted());
        assert!(identity.resolve(&[], &schemes).is_some());
        // ... and going back to the revoked one does not revive it.
        identity.replace_chain(vec![first]).unwrap();
        assert!(identity.resolve(&[], &schemes).is_none());
    }

    #[derive(Debug)]
    struct BrokenKey(Arc<dyn KeyBackend>);

    impl KeyBackend for BrokenKey {
        fn describe(&self) -> String {
            "broken".into()
        }
        fn algorithm(&self) -> crate::KeyAlgorithm {
            self.0.algorithm()
        }
        fn public_key_spki(&self) -> &[u8] {
            self.0.public_key_spki()
        }
        fn locality(&self) -> Locality {
            Locality::Remote
        }
        fn sign(&self, _: SignatureScheme, _: &[u8]) -> Result<Vec<u8>, crate::KeyError> {
            Err(crate::KeyError::Sign {
                key: "broken".into(),
                reason: "service unavailable".into(),
            })
        }
    }

    #[test]
    fn backend_failure_is_recognisable_behind_the_tls_error() {
        let key = rcgen::KeyPair::generate().unwrap();
        let identity =
            AgentIdentity::new(Arc::new(BrokenKey(file_key(&key))), vec![self_signed(&key)])
                .unwrap();
        let certified = identity
            .resolve(&[], &[SignatureScheme::ECDSA_NISTP256_SHA256])
            .unwrap();
        let signer = certified
            .key
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
            .unwrap();
        let err = signer.sign(b"transcript").unwrap_err();
        let found = SignerUnavailable::find(&err).expect("typed signer failure");
        assert!(found.to_string().contains("service unavailable"));
    }

    #[test]
    fn mismatched_certificate_is_refused_and_old_one_kept() {
        let key = rcgen::KeyPair::generate().unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let original = self_signed(&key);
        let identity = AgentIdentity::new(file_key(&key), vec![original.clone()]).unwrap();
        let err = identity
            .replace_chain(vec![self_signed(&other)])
            .unwrap_err();
        assert!(matches!(err, IdentityError::KeyMismatch { .. }), "{err}");
        assert_eq!(identity.leaf(), original);
        assert!(AgentIdentity::new(file_key(&key), vec![self_signed(&other)]).is_err());
        assert!(AgentIdentity::new(file_key(&key), vec![]).is_err());
    }
}
