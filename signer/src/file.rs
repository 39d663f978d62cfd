use std::path::Path;
use std::sync::Arc;

use rustls::sign::SigningKey;
use rustls::SignatureScheme;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use crate::backend::{KeyAlgorithm, KeyBackend, KeyError, Locality};

/// A private key read from a PEM file (PKCS#8, SEC1 or PKCS#1).
///
/// The key lives in this process's memory: fine for development, tests and
/// deployments that accept it; production identities use a remote backend.
#[derive(Debug)]
pub struct FileKey {
    path: String,
    algorithm: KeyAlgorithm,
    spki: Vec<u8>,
    key: Arc<dyn SigningKey>,
}

impl FileKey {
    pub fn open(path: &Path) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|source| KeyError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::from_pem(&shown, &pem)
    }

    /// `origin` names the key in errors and logs.
    pub fn from_pem(origin: &str, pem: &[u8]) -> Result<Self, KeyError> {
        let parse_error = |reason: String| KeyError::Parse {
            path: origin.to_string(),
            reason,
        };
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
            parse_error(format!(
                "{e}; expected a PEM \"PRIVATE KEY\" (PKCS#8), \"EC PRIVATE KEY\" (SEC1) or \"RSA PRIVATE KEY\" block"
            ))
        })?;
        let key = rustls::crypto::ring::sign::any_supported_type(&der)
            .map_err(|e| parse_error(format!("unsupported key type or curve: {e}")))?;
        let algorithm = classify(key.as_ref()).ok_or_else(|| {
            parse_error("key type is not one of EC P-256, EC P-384, RSA, Ed25519".into())
        })?;
        let spki = key
            .public_key()
            .ok_or_else(|| parse_error("cannot derive the public key".into()))?
            .as_ref()
            .to_vec();
        Ok(FileKey {
            path: origin.to_string(),
            algorithm,
            spki,
            key,
        })
    }
}

/// ring's ECDSA keys accept only their own curve's scheme, which tells the
/// curve without parsing the key again.
fn classify(key: &dyn SigningKey) -> Option<KeyAlgorithm> {
    match key.algorithm() {
        rustls::SignatureAlgorithm::RSA => Some(KeyAlgorithm::Rsa),
        rustls::SignatureAlgorithm::ED25519 => Some(KeyAlgorithm::Ed25519),
        rustls::SignatureAlgorithm::ECDSA => [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384]
            .into_iter()
            .find(|alg| key.choose_scheme(alg.tls_schemes()).is_some()),
        _ => None,
    }
}

impl KeyBackend for FileKey {
    fn describe(&self) -> String {
        format!("file:{}", self.path)
    }

    fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn public_key_spki(&self) -> &[u8] {
        &self.spki
    }

    fn locality(&self) -> Locality {
        Locality::InProcess
    }

    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let signer =
            self.key
                .choose_scheme(&[scheme])
                .ok_or_else(|| KeyError::SchemeUnsupported {
                    key: self.describe(),
                    scheme,
                })?;
        signer.sign(message).map_err(|e| KeyError::Sign {
            key: self.describe(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_for(alg: &'static rcgen::SignatureAlgorithm) -> String {
        rcgen::KeyPair::generate_for(alg).unwrap().serialize_pem()
    }

    #[test]
    fn loads_each_supported_key_type_from_pkcs8() {
        for (alg, expected) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, KeyAlgorithm::EcdsaP256),
            (&rcgen::PKCS_ECDSA_P384_SHA384, KeyAlgorithm::EcdsaP384),
            (&rcgen::PKCS_ED25519, KeyAlgorithm::Ed25519),
        ] {
            let key = FileKey::from_pem("test", pem_for(alg).as_bytes()).unwrap();
            assert_eq!(key.algorithm(), expected);
            let scheme = expected.tls_schemes()[0];
            let sig = key.sign(scheme, b"message").unwrap();
            assert!(!sig.is_empty());
        }
    }

    #[test]
    fn loads_sec1_ec_key() {
        // SEC1 ("EC PRIVATE KEY") is what `openssl ecparam -genkey` writes.
        let sec1 = include_str!("../tests/fixtures/p256-sec1.pem");
        let key = FileKey::from_pem("sec1", sec1.as_bytes()).unwrap();
        assert_eq!(key.algorithm(), KeyAlgorithm::EcdsaP256);
    }

    #[test]
    fn loads_rsa_pkcs1_and_signs_pss() {
        let pkcs1 = include_str!("../tests/fixtures/rsa2048-pkcs1.pem");
        let key = FileKey::from_pem("rsa", pkcs1.as_bytes()).unwrap();
        assert_eq!(key.algorithm(), KeyAlgorithm::Rsa);
        let sig = key.sign(SignatureScheme::RSA_PSS_SHA512, b"m").unwrap();
        assert_eq!(sig.len(), 256);
    }

    #[test]
    fn refuses_wrong_scheme_for_key() {
        let key =
            FileKey::from_pem("p256", pem_for(&rcgen::PKCS_ECDSA_P256_SHA256).as_bytes()).unwrap();
        let err = key
            .sign(SignatureScheme::ECDSA_NISTP384_SHA384, b"m")
            .unwrap_err();
        assert!(matches!(err, KeyError::SchemeUnsupported { .. }), "{err}");
    }

    #[test]
    fn refuses_garbage_and_certificates() {
        for bad in [
            "".as_bytes(),
            b"not pem at all",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            let err = FileKey::from_pem("bad.pem", bad).unwrap_err();
            assert!(err.to_string().contains("bad.pem"), "{err}");
        }
    }
}
