//! DER between PKCS#11's raw forms and what TLS and X.509 expect: the
//! public key as a SubjectPublicKeyInfo, ECDSA signatures as
//! `ECDSA-Sig-Value`.

use der::asn1::{AnyRef, BitStringRef, ObjectIdentifier, OctetStringRef, SequenceOf, UintRef};
use der::{Decode, Encode};
use spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};

use crate::backend::KeyAlgorithm;

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const ID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const ID_ED448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.113");

/// The key algorithm a `CKA_EC_PARAMS` value names: a DER OID (namedCurve),
/// or for Edwards keys the PrintableString some tokens write instead.
pub(crate) fn curve_from_ec_params(params: &[u8]) -> Result<KeyAlgorithm, String> {
    if let Ok(oid) = ObjectIdentifier::from_der(params) {
        return match oid {
            SECP256R1 => Ok(KeyAlgorithm::EcdsaP256),
            SECP384R1 => Ok(KeyAlgorithm::EcdsaP384),
            ID_ED25519 => Ok(KeyAlgorithm::Ed25519),
            ID_ED448 => Err("Ed448 keys are not supported (TLS client keys: Ed25519)".into()),
            other => Err(format!(
                "curve {other} is not supported (P-256, P-384 or Ed25519)"
            )),
        };
    }
    if let Ok(name) = der::asn1::PrintableStringRef::from_der(params) {
        return match name.as_str() {
            "edwards25519" => Ok(KeyAlgorithm::Ed25519),
            other => Err(format!("curve {other:?} is not supported")),
        };
    }
    Err("CKA_EC_PARAMS is neither a curve OID nor a curve name".into())
}

/// The length of a public point (uncompressed SEC1 for ECDSA, the raw key
/// for Ed25519) for each key algorithm.
fn point_len(algorithm: KeyAlgorithm) -> usize {
    match algorithm {
        KeyAlgorithm::EcdsaP256 => 65,
        KeyAlgorithm::EcdsaP384 => 97,
        KeyAlgorithm::Ed25519 => 32,
        KeyAlgorithm::Rsa => 0,
    }
}

/// `CKA_EC_POINT` is specified as a DER OCTET STRING holding the point, but
/// some tokens return the bare point; the length tells them apart (a bare
/// point has exactly the curve's size).
pub(crate) fn ec_point(algorithm: KeyAlgorithm, value: &[u8]) -> Result<Vec<u8>, String> {
    let expected = point_len(algorithm);
    let point = if value.len() == expected {
        value
    } else {
        OctetStringRef::from_der(value)
            .map_err(|e| format!("CKA_EC_POINT is not a DER OCTET STRING: {e}"))?
            .as_bytes()
    };
    if point.len() != expected {
        return Err(format!(
            "CKA_EC_POINT holds {} bytes; a {algorithm} public key has {expected}",
            point.len()
        ));
    }
    if algorithm != KeyAlgorithm::Ed25519 && point.first() != Some(&0x04) {
        return Err("CKA_EC_POINT is not an uncompressed point".into());
    }
    Ok(point.to_vec())
}

/// SubjectPublicKeyInfo for an EC (ECDSA or Ed25519) public point.
pub(crate) fn ec_spki(algorithm: KeyAlgorithm, point: &[u8]) -> Result<Vec<u8>, String> {
    let (oid, curve) = match algorithm {
        KeyAlgorithm::EcdsaP256 => (ID_EC_PUBLIC_KEY, Some(SECP256R1)),
        KeyAlgorithm::EcdsaP384 => (ID_EC_PUBLIC_KEY, Some(SECP384R1)),
        // RFC 8410: the parameters are absent.
        KeyAlgorithm::Ed25519 => (ID_ED25519, None),
        KeyAlgorithm::Rsa => return Err("an RSA key has no EC point".into()),
    };
    spki(oid, curve.as_ref().map(AnyRef::from), point)
}

/// SubjectPublicKeyInfo for an RSA key (`RSAPublicKey`, RFC 8017), from the
/// big-endian `CKA_MODULUS` and `CKA_PUBLIC_EXPONENT`.
pub(crate) fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Result<Vec<u8>, String> {
    let bad = |e: der::Error| format!("cannot encode the RSA public key: {e}");
    let mut key = SequenceOf::<UintRef<'_>, 2>::new();
    key.add(UintRef::new(modulus).map_err(bad)?).map_err(bad)?;
    key.add(UintRef::new(exponent).map_err(bad)?).map_err(bad)?;
    let key = key.to_der().map_err(bad)?;
    // RFC 3279: rsaEncryption's parameters are NULL.
    spki(RSA_ENCRYPTION, Some(AnyRef::NULL), &key)
}

fn spki(
    oid: ObjectIdentifier,
    parameters: Option<AnyRef<'_>>,
    key: &[u8],
) -> Result<Vec<u8>, String> {
    let bad = |e: der::Error| format!("cannot encode the public key: {e}");
    SubjectPublicKeyInfoRef {
        algorithm: AlgorithmIdentifierRef { oid, parameters },
        subject_public_key: BitStringRef::from_bytes(key).map_err(bad)?,
    }
    .to_der()
    .map_err(bad)
}

/// PKCS#11 returns ECDSA signatures as r||s (each the curve's size); TLS
/// wants `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`.
pub(crate) fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, String> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return Err(format!(
            "the token returned a {}-byte ECDSA signature; r||s has an even length",
            raw.len()
        ));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let bad = |e: der::Error| format!("cannot encode the ECDSA signature: {e}");
    let mut sig = SequenceOf::<UintRef<'_>, 2>::new();
    sig.add(UintRef::new(r).map_err(bad)?).map_err(bad)?;
    sig.add(UintRef::new(s).map_err(bad)?).map_err(bad)?;
    sig.to_der().map_err(bad)
}

#[cfg(test)]
#[path = "encoding_tests.rs"]
mod tests;
