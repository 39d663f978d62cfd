//! Whether a signature in TLS form verifies with a SubjectPublicKeyInfo
//! (ring): the self-test a remote backend runs at open, and what tests check
//! a backend's signatures with.

use der::Decode;
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use rustls::SignatureScheme;
use spki::SubjectPublicKeyInfoRef;

/// Whether `signature` (as TLS carries it) over `message` verifies with the
/// SubjectPublicKeyInfo `spki`.
pub fn verifies(scheme: SignatureScheme, spki: &[u8], message: &[u8], signature: &[u8]) -> bool {
    use SignatureScheme as S;
    let algorithm: &dyn VerificationAlgorithm = match scheme {
        S::ECDSA_NISTP256_SHA256 => &signature::ECDSA_P256_SHA256_ASN1,
        S::ECDSA_NISTP384_SHA384 => &signature::ECDSA_P384_SHA384_ASN1,
        S::ED25519 => &signature::ED25519,
        S::RSA_PSS_SHA256 => &signature::RSA_PSS_2048_8192_SHA256,
        S::RSA_PSS_SHA384 => &signature::RSA_PSS_2048_8192_SHA384,
        S::RSA_PSS_SHA512 => &signature::RSA_PSS_2048_8192_SHA512,
        S::RSA_PKCS1_SHA256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        S::RSA_PKCS1_SHA384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        S::RSA_PKCS1_SHA512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        _ => return false,
    };
    let Ok(info) = SubjectPublicKeyInfoRef::from_der(spki) else {
        return false;
    };
    let Some(key) = info.subject_public_key.as_bytes() else {
        return false;
    };
    UnparsedPublicKey::new(algorithm, key)
        .verify(message, signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FileKey, KeyBackend};

    #[test]
    fn verifies_tls_signatures_and_nothing_else() {
        let key = FileKey::from_pem("rsa", include_bytes!("../tests/fixtures/rsa2048-pkcs1.pem"))
            .unwrap();
        for scheme in KeyBackend::algorithm(&key).tls_schemes() {
            let sig = key.sign(*scheme, b"m").unwrap();
            assert!(verifies(*scheme, key.public_key_spki(), b"m", &sig));
            assert!(!verifies(*scheme, key.public_key_spki(), b"n", &sig));
        }
        let sig = key.sign(SignatureScheme::RSA_PSS_SHA256, b"m").unwrap();
        assert!(!verifies(
            SignatureScheme::ED448,
            key.public_key_spki(),
            b"m",
            &sig
        ));
        assert!(!verifies(
            SignatureScheme::RSA_PSS_SHA256,
            b"junk",
            b"m",
            &sig
        ));
    }
}
