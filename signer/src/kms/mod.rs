//! Placeholder while the backend is written; refuses every reference.
use rustls::SignatureScheme;

use crate::backend::{KeyAlgorithm, KeyBackend, KeyError, Locality};
use crate::options::KeyOptions;

#[derive(Debug)]
pub(crate) struct AwsKmsKey;

impl AwsKmsKey {
    pub(crate) fn open(reference: &str, _options: &KeyOptions) -> Result<Self, KeyError> {
        Err(KeyError::Unsupported {
            reference: reference.into(),
            reason: "not written yet".into(),
        })
    }
}

impl KeyBackend for AwsKmsKey {
    fn describe(&self) -> String {
        String::new()
    }
    fn algorithm(&self) -> KeyAlgorithm {
        KeyAlgorithm::EcdsaP256
    }
    fn public_key_spki(&self) -> &[u8] {
        &[]
    }
    fn locality(&self) -> Locality {
        Locality::Remote
    }
    fn sign(&self, scheme: SignatureScheme, _message: &[u8]) -> Result<Vec<u8>, KeyError> {
        Err(KeyError::SchemeUnsupported {
            key: String::new(),
            scheme,
        })
    }
}
