//! Signature algorithms: which AlgorithmIdentifier the CA key signs with,
//! and which ring verifier a received (algorithm, key) pair maps to.
//! Anything not listed is refused rather than guessed.

use der::asn1::{Any, ObjectIdentifier};
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::OcspError;

const ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";
const RSA_SHA256: &str = "1.2.840.113549.1.1.11";
const RSA_SHA384: &str = "1.2.840.113549.1.1.12";
const RSA_SHA512: &str = "1.2.840.113549.1.1.13";
const ED25519: &str = "1.3.101.112";

const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// The signatureAlgorithm for what an rcgen key produces, so the CA's
/// responses follow its key (P-256 today, a KMS key of another type later).
pub(crate) fn for_signing_key(
    alg: &'static rcgen::SignatureAlgorithm,
) -> Option<AlgorithmIdentifierOwned> {
    // RFC 4055: RSA PKCS#1 identifiers carry NULL; RFC 5758 and RFC 8410:
    // ECDSA and Ed25519 identifiers carry nothing.
    let (oid, null_params) = if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        (ECDSA_SHA256, false)
    } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        (ECDSA_SHA384, false)
    } else if alg == &rcgen::PKCS_RSA_SHA256 {
        (RSA_SHA256, true)
    } else if alg == &rcgen::PKCS_RSA_SHA384 {
        (RSA_SHA384, true)
    } else if alg == &rcgen::PKCS_RSA_SHA512 {
        (RSA_SHA512, true)
    } else if alg == &rcgen::PKCS_ED25519 {
        (ED25519, false)
    } else {
        return None;
    };
    Some(AlgorithmIdentifierOwned {
        oid: ObjectIdentifier::new(oid).ok()?,
        parameters: null_params.then(Any::null),
    })
}

/// Why a signature was not accepted; the caller says whose signature it was.
#[derive(Debug)]
pub(crate) enum SigFailure {
    Unsupported { algorithm: String, key: String },
    Invalid,
}

impl SigFailure {
    /// As the error for a response's own signature.
    pub(crate) fn on_response(self, signer: &'static str) -> OcspError {
        match self {
            SigFailure::Unsupported { algorithm, key } => {
                OcspError::UnsupportedSignature { algorithm, key }
            }
            SigFailure::Invalid => OcspError::BadSignature { signer },
        }
    }
}

impl std::fmt::Display for SigFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SigFailure::Unsupported { algorithm, key } => {
                write!(
                    f,
                    "signature algorithm {algorithm} is not accepted for a {key} key"
                )
            }
            SigFailure::Invalid => f.write_str("signature does not verify"),
        }
    }
}

/// Checks `signature` over `message` by `key`, with the algorithm named by
/// the dotted OID `algorithm`.
pub(crate) fn verify(
    algorithm: &str,
    key: &SubjectPublicKeyInfo<'_>,
    message: &[u8],
    signature: &[u8],
) -> Result<(), SigFailure> {
    let verifier = verifier(algorithm, key).ok_or_else(|| SigFailure::Unsupported {
        algorithm: algorithm_name(algorithm),
        key: key_name(key),
    })?;
    UnparsedPublicKey::new(verifier, &key.subject_public_key.data)
        .verify(message, signature)
        .map_err(|_| SigFailure::Invalid)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    P256,
    P384,
    Rsa,
    Ed25519,
}

fn key_kind(key: &SubjectPublicKeyInfo<'_>) -> Option<KeyKind> {
    match key.algorithm.algorithm.to_id_string().as_str() {
        EC_PUBLIC_KEY => {
            let curve = key.algorithm.parameters.as_ref()?.data;
            if curve == P256.as_bytes() {
                Some(KeyKind::P256)
            } else if curve == P384.as_bytes() {
                Some(KeyKind::P384)
            } else {
                None
            }
        }
        RSA_ENCRYPTION => Some(KeyKind::Rsa),
        ED25519 => Some(KeyKind::Ed25519),
        _ => None,
    }
}

fn verifier(
    algorithm: &str,
    key: &SubjectPublicKeyInfo<'_>,
) -> Option<&'static dyn VerificationAlgorithm> {
    // SHA-1 signatures (sha1WithRSAEncryption, ecdsa-with-SHA1) are left
    // out on purpose: a forged status is exactly what collisions buy.
    Some(match (algorithm, key_kind(key)?) {
        (ECDSA_SHA256, KeyKind::P256) => &signature::ECDSA_P256_SHA256_ASN1,
        (ECDSA_SHA256, KeyKind::P384) => &signature::ECDSA_P384_SHA256_ASN1,
        (ECDSA_SHA384, KeyKind::P256) => &signature::ECDSA_P256_SHA384_ASN1,
        (ECDSA_SHA384, KeyKind::P384) => &signature::ECDSA_P384_SHA384_ASN1,
        (RSA_SHA256, KeyKind::Rsa) => &signature::RSA_PKCS1_2048_8192_SHA256,
        (RSA_SHA384, KeyKind::Rsa) => &signature::RSA_PKCS1_2048_8192_SHA384,
        (RSA_SHA512, KeyKind::Rsa) => &signature::RSA_PKCS1_2048_8192_SHA512,
        (ED25519, KeyKind::Ed25519) => &signature::ED25519,
        _ => return None,
    })
}

fn algorithm_name(oid: &str) -> String {
    let name = match oid {
        ECDSA_SHA256 => "ecdsa-with-SHA256",
        ECDSA_SHA384 => "ecdsa-with-SHA384",
        RSA_SHA256 => "sha256WithRSAEncryption",
        RSA_SHA384 => "sha384WithRSAEncryption",
        RSA_SHA512 => "sha512WithRSAEncryption",
        ED25519 => "Ed25519",
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption",
        "1.2.840.10045.4.1" => "ecdsa-with-SHA1",
        "1.2.840.113549.1.1.10" => "RSASSA-PSS",
        _ => return oid.to_string(),
    };
    format!("{name} ({oid})")
}

fn key_name(key: &SubjectPublicKeyInfo<'_>) -> String {
    match key_kind(key) {
        Some(KeyKind::P256) => "ECDSA P-256".into(),
        Some(KeyKind::P384) => "ECDSA P-384".into(),
        Some(KeyKind::Rsa) => "RSA".into(),
        Some(KeyKind::Ed25519) => "Ed25519".into(),
        None => format!("{} key", key.algorithm.algorithm.to_id_string()),
    }
}
