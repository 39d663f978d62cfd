//! RFC 9421 §3.3 algorithms, mapped onto the key backends and onto ring's
//! verifiers. The algorithm always follows the key (§3.2: a verifier derives
//! it from the key material and treats a differing `alg` as an error).

use der::asn1::UintRef;
use der::{Decode, Reader, SliceReader};
use ring::signature::{self, UnparsedPublicKey};
use rustls::SignatureScheme;
use spki::ObjectIdentifier;

use super::error::HttpSigError;
use crate::backend::{KeyAlgorithm, KeyBackend, KeyError};

const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// A signature algorithm from the RFC 9421 registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigAlg {
    EcdsaP256Sha256,
    EcdsaP384Sha384,
    RsaPssSha512,
    Ed25519,
}

impl SigAlg {
    /// The registry name, as written in the `alg` parameter.
    pub fn name(self) -> &'static str {
        match self {
            SigAlg::EcdsaP256Sha256 => "ecdsa-p256-sha256",
            SigAlg::EcdsaP384Sha384 => "ecdsa-p384-sha384",
            SigAlg::RsaPssSha512 => "rsa-pss-sha512",
            SigAlg::Ed25519 => "ed25519",
        }
    }

    pub fn from_name(name: &str) -> Option<SigAlg> {
        [
            SigAlg::EcdsaP256Sha256,
            SigAlg::EcdsaP384Sha384,
            SigAlg::RsaPssSha512,
            SigAlg::Ed25519,
        ]
        .into_iter()
        .find(|alg| alg.name() == name)
    }

    pub fn for_key(key: KeyAlgorithm) -> SigAlg {
        match key {
            KeyAlgorithm::EcdsaP256 => SigAlg::EcdsaP256Sha256,
            KeyAlgorithm::EcdsaP384 => SigAlg::EcdsaP384Sha384,
            KeyAlgorithm::Rsa => SigAlg::RsaPssSha512,
            KeyAlgorithm::Ed25519 => SigAlg::Ed25519,
        }
    }

    /// The algorithm a DER SubjectPublicKeyInfo's key signs with, or None for
    /// a key type this crate does not verify.
    pub fn for_spki(spki_der: &[u8]) -> Option<SigAlg> {
        let spki = spki::SubjectPublicKeyInfoRef::from_der(spki_der).ok()?;
        match spki.algorithm.oid {
            EC_PUBLIC_KEY => {
                let curve = spki
                    .algorithm
                    .parameters?
                    .decode_as::<ObjectIdentifier>()
                    .ok()?;
                match curve {
                    P256 => Some(SigAlg::EcdsaP256Sha256),
                    P384 => Some(SigAlg::EcdsaP384Sha384),
                    _ => None,
                }
            }
            RSA_ENCRYPTION => Some(SigAlg::RsaPssSha512),
            ED25519 => Some(SigAlg::Ed25519),
            _ => None,
        }
    }

    /// The TLS scheme that asks a key backend for this algorithm's signature.
    pub(crate) fn scheme(self) -> SignatureScheme {
        match self {
            SigAlg::EcdsaP256Sha256 => SignatureScheme::ECDSA_NISTP256_SHA256,
            SigAlg::EcdsaP384Sha384 => SignatureScheme::ECDSA_NISTP384_SHA384,
            SigAlg::RsaPssSha512 => SignatureScheme::RSA_PSS_SHA512,
            SigAlg::Ed25519 => SignatureScheme::ED25519,
        }
    }

    /// Width of one ECDSA scalar, for the fixed r||s form RFC 9421 uses.
    fn scalar_len(self) -> Option<usize> {
        match self {
            SigAlg::EcdsaP256Sha256 => Some(32),
            SigAlg::EcdsaP384Sha384 => Some(48),
            SigAlg::RsaPssSha512 | SigAlg::Ed25519 => None,
        }
    }

    fn verification(self) -> &'static dyn signature::VerificationAlgorithm {
        match self {
            SigAlg::EcdsaP256Sha256 => &signature::ECDSA_P256_SHA256_FIXED,
            SigAlg::EcdsaP384Sha384 => &signature::ECDSA_P384_SHA384_FIXED,
            SigAlg::RsaPssSha512 => &signature::RSA_PSS_2048_8192_SHA512,
            SigAlg::Ed25519 => &signature::ED25519,
        }
    }
}

/// Signs `message` (the signature base) through the key backend, in the
/// wire form RFC 9421 wants (see [`wire_form`]).
pub fn sign(key: &dyn KeyBackend, alg: SigAlg, message: &[u8]) -> Result<Vec<u8>, KeyError> {
    let signature = key.sign(alg.scheme(), message)?;
    wire_form(key, alg, signature)
}

/// A backend's signature in the wire form RFC 9421 wants: ECDSA as
/// fixed-width r||s, not the DER that TLS uses and backends return.
pub(crate) fn wire_form(
    key: &dyn KeyBackend,
    alg: SigAlg,
    signature: Vec<u8>,
) -> Result<Vec<u8>, KeyError> {
    match alg.scalar_len() {
        None => Ok(signature),
        Some(width) => ecdsa_der_to_fixed(&signature, width).ok_or_else(|| KeyError::Sign {
            key: key.describe(),
            reason: "the backend returned an ECDSA signature that is not DER".into(),
        }),
    }
}

/// Checks `signature` over `message` with the key in `spki_der`. The key
/// must be of `alg`'s type.
pub fn verify(
    alg: SigAlg,
    spki_der: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), HttpSigError> {
    if SigAlg::for_spki(spki_der) != Some(alg) {
        return Err(HttpSigError::UnsupportedAlgorithm(format!(
            "{} does not match the certificate's key",
            alg.name()
        )));
    }
    let spki = spki::SubjectPublicKeyInfoRef::from_der(spki_der)
        .map_err(|_| HttpSigError::BadSignature)?;
    let public_key = spki
        .subject_public_key
        .as_bytes()
        .ok_or(HttpSigError::BadSignature)?;
    UnparsedPublicKey::new(alg.verification(), public_key)
        .verify(message, signature)
        .map_err(|_| HttpSigError::BadSignature)
}

/// `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` → r||s, each
/// left-padded to `width`.
fn ecdsa_der_to_fixed(der: &[u8], width: usize) -> Option<Vec<u8>> {
    let mut reader = SliceReader::new(der).ok()?;
    let (r, s) = reader
        .sequence(|seq| Ok((UintRef::decode(seq)?, UintRef::decode(seq)?)))
        .ok()?;
    reader.finish(()).ok()?;
    let mut out = vec![0u8; 2 * width];
    for (scalar, slot) in [(r, 0), (s, width)] {
        let bytes = scalar.as_bytes();
        if bytes.len() > width {
            return None;
        }
        let start = slot + width - bytes.len();
        out.get_mut(start..slot + width)?.copy_from_slice(bytes);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FileKey;

    fn key(alg: &'static rcgen::SignatureAlgorithm) -> FileKey {
        let pem = rcgen::KeyPair::generate_for(alg).unwrap().serialize_pem();
        FileKey::from_pem("test", pem.as_bytes()).unwrap()
    }

    #[test]
    fn signs_and_verifies_with_each_key_type() {
        let rsa = FileKey::from_pem(
            "rsa",
            include_bytes!("../../tests/fixtures/rsa2048-pkcs1.pem"),
        )
        .unwrap();
        let keys = [
            key(&rcgen::PKCS_ECDSA_P256_SHA256),
            key(&rcgen::PKCS_ECDSA_P384_SHA384),
            key(&rcgen::PKCS_ED25519),
            rsa,
        ];
        for key in keys {
            let alg = SigAlg::for_key(key.algorithm());
            assert_eq!(SigAlg::for_spki(key.public_key_spki()), Some(alg));
            let sig = sign(&key, alg, b"base").unwrap();
            if let Some(width) = alg.scalar_len() {
                assert_eq!(sig.len(), 2 * width, "{}", alg.name());
            }
            verify(alg, key.public_key_spki(), b"base", &sig).unwrap();
            let err = verify(alg, key.public_key_spki(), b"basE", &sig).unwrap_err();
            assert!(matches!(err, HttpSigError::BadSignature));
        }
    }

    #[test]
    fn refuses_an_algorithm_that_is_not_the_keys() {
        let p256 = key(&rcgen::PKCS_ECDSA_P256_SHA256);
        let sig = sign(&p256, SigAlg::EcdsaP256Sha256, b"m").unwrap();
        let err = verify(SigAlg::EcdsaP384Sha384, p256.public_key_spki(), b"m", &sig).unwrap_err();
        assert!(
            matches!(err, HttpSigError::UnsupportedAlgorithm(_)),
            "{err}"
        );
    }

    #[test]
    fn der_to_fixed_pads_short_scalars_and_refuses_junk() {
        // r = 1, s = 0x0102 (short scalars are common: 1 in 256 signatures).
        let der = [0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x02, 0x01, 0x02];
        let fixed = ecdsa_der_to_fixed(&der, 4).unwrap();
        assert_eq!(fixed, [0, 0, 0, 1, 0, 0, 1, 2]);
        assert!(ecdsa_der_to_fixed(&der[..5], 4).is_none());
        assert!(ecdsa_der_to_fixed(&[0x30, 0x00, 0x00], 4).is_none());
        assert!(ecdsa_der_to_fixed(&der, 1).is_none());
    }
}
