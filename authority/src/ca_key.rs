//! The CA's private key as rcgen sees it: any [`KeyBackend`] (a file, AWS
//! KMS, an HSM), so certificates, CRLs and OCSP responses are signed where
//! the key lives and the key never enters this process unless it is a file.

use std::cell::RefCell;
use std::sync::Arc;

use kakunin_signer::{KeyAlgorithm, KeyBackend, KeyError};
use rcgen::{PublicKeyData, SignatureAlgorithm, SigningKey};
use rustls::SignatureScheme;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::AuthorityError;

/// A backend adapted to rcgen's signing traits.
pub(crate) struct CaKey {
    backend: Arc<dyn KeyBackend>,
    /// The backend's SubjectPublicKeyInfo, byte for byte: what ca.pem holds.
    spki: Vec<u8>,
    /// The subjectPublicKey BIT STRING's contents (rcgen's `der_bytes`).
    raw: Vec<u8>,
    algorithm: &'static SignatureAlgorithm,
    scheme: SignatureScheme,
}

impl std::fmt::Debug for CaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaKey")
            .field("key", &self.backend.describe())
            .finish_non_exhaustive()
    }
}

impl CaKey {
    pub(crate) fn new(backend: Arc<dyn KeyBackend>) -> Result<CaKey, AuthorityError> {
        let spki = backend.public_key_spki().to_vec();
        let raw = subject_public_key(&spki).map_err(|reason| AuthorityError::CaKey {
            context: format!("CA key {}", backend.describe()),
            error: KeyError::Open {
                key: backend.describe(),
                reason,
            },
        })?;
        // One signature algorithm per key type: SHA-256/384 match the ECDSA
        // curves' strength; RSA uses PKCS#1 v1.5, which every X.509 and OCSP
        // client verifies (PSS certificates are still refused by some).
        let (algorithm, scheme) = match backend.algorithm() {
            KeyAlgorithm::EcdsaP256 => (
                &rcgen::PKCS_ECDSA_P256_SHA256,
                SignatureScheme::ECDSA_NISTP256_SHA256,
            ),
            KeyAlgorithm::EcdsaP384 => (
                &rcgen::PKCS_ECDSA_P384_SHA384,
                SignatureScheme::ECDSA_NISTP384_SHA384,
            ),
            KeyAlgorithm::Rsa => (&rcgen::PKCS_RSA_SHA256, SignatureScheme::RSA_PKCS1_SHA256),
            KeyAlgorithm::Ed25519 => (&rcgen::PKCS_ED25519, SignatureScheme::ED25519),
        };
        Ok(CaKey {
            backend,
            spki,
            raw,
            algorithm,
            scheme,
        })
    }

    pub(crate) fn describe(&self) -> String {
        self.backend.describe()
    }

    /// Whether `cert_spki` (a certificate's SubjectPublicKeyInfo) holds this
    /// key. The algorithm and key bits are compared, not the encoding, so an
    /// equivalent encoding of the same key (RSA parameters written or not)
    /// still matches.
    pub(crate) fn matches(&self, cert_spki: &SubjectPublicKeyInfo<'_>) -> Result<bool, String> {
        let (_, ours) = SubjectPublicKeyInfo::from_der(&self.spki)
            .map_err(|e| format!("the key's public key does not parse: {e}"))?;
        Ok(ours.algorithm.algorithm == cert_spki.algorithm.algorithm
            && parameters(&ours) == parameters(cert_spki)
            && ours.subject_public_key.data == cert_spki.subject_public_key.data)
    }
}

/// The algorithm parameters' contents; absent and NULL (RSA) read alike.
fn parameters<'a>(spki: &'a SubjectPublicKeyInfo<'_>) -> &'a [u8] {
    spki.algorithm.parameters.as_ref().map_or(&[], |p| p.data)
}

fn subject_public_key(spki: &[u8]) -> Result<Vec<u8>, String> {
    let (rest, parsed) = SubjectPublicKeyInfo::from_der(spki)
        .map_err(|e| format!("its public key is not a DER SubjectPublicKeyInfo: {e}"))?;
    if !rest.is_empty() {
        return Err("its public key has trailing bytes after the SubjectPublicKeyInfo".into());
    }
    Ok(parsed.subject_public_key.data.to_vec())
}

impl PublicKeyData for CaKey {
    /// The backend's own encoding: a KMS or token may write the algorithm
    /// parameters differently from rcgen, and ca.pem must hold what the
    /// backend reports so that a later open finds the same key.
    fn subject_public_key_info(&self) -> Vec<u8> {
        self.spki.clone()
    }

    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.algorithm
    }
}

thread_local! {
    /// rcgen's error for a failed external signature carries no text, so the
    /// backend's error waits here for the caller on the same thread (rcgen
    /// signs synchronously) to pick it up: a KMS timeout must say so.
    static LAST_SIGN_ERROR: RefCell<Option<KeyError>> = const { RefCell::new(None) };
}

impl SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.backend.sign(self.scheme, msg).map_err(|error| {
            LAST_SIGN_ERROR.with(|slot| *slot.borrow_mut() = Some(error));
            rcgen::Error::RemoteKeyError
        })
    }
}

/// An rcgen error from signing with the CA key, with the backend's reason
/// when the key itself failed.
pub(crate) fn signing_error(error: rcgen::Error) -> AuthorityError {
    let backend = match error {
        rcgen::Error::RemoteKeyError => LAST_SIGN_ERROR.with(|slot| slot.borrow_mut().take()),
        _ => None,
    };
    match backend {
        Some(error) => AuthorityError::CaKey {
            context: "the CA key did not sign".into(),
            error,
        },
        None => AuthorityError::Rcgen(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A remote key whose service has gone away after it was opened.
    #[derive(Debug)]
    struct Unreachable(Vec<u8>);

    impl KeyBackend for Unreachable {
        fn describe(&self) -> String {
            "aws-kms:arn:aws:kms:eu-west-1:1:key/test".into()
        }
        fn algorithm(&self) -> KeyAlgorithm {
            KeyAlgorithm::EcdsaP256
        }
        fn public_key_spki(&self) -> &[u8] {
            &self.0
        }
        fn locality(&self) -> kakunin_signer::Locality {
            kakunin_signer::Locality::Remote
        }
        fn sign(&self, _: SignatureScheme, _: &[u8]) -> Result<Vec<u8>, KeyError> {
            Err(KeyError::Unreachable {
                key: self.describe(),
                reason: "connection refused".into(),
            })
        }
    }

    #[test]
    fn a_failed_signature_says_which_key_and_why() {
        let pair = rcgen::KeyPair::generate().unwrap();
        let key = CaKey::new(Arc::new(Unreachable(pair.subject_public_key_info()))).unwrap();
        assert_eq!(key.der_bytes(), pair.der_bytes());
        let err = rcgen::CertificateParams::default()
            .self_signed(&key)
            .map_err(signing_error)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("key/test") && err.contains("connection refused"),
            "{err}"
        );
        // Taken once: a later, unrelated rcgen error is not blamed on it.
        assert!(matches!(
            signing_error(rcgen::Error::RemoteKeyError),
            AuthorityError::Rcgen(_)
        ));
    }

    #[test]
    fn a_public_key_that_does_not_parse_is_refused() {
        let err = CaKey::new(Arc::new(Unreachable(b"junk".to_vec()))).unwrap_err();
        assert!(err.to_string().contains("SubjectPublicKeyInfo"), "{err}");
    }
}
