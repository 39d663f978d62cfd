//! Which public keys an agent certificate may certify: only keys the agent
//! side (kakunin-signer: TLS client authentication and RFC 9421 request
//! signatures, checked by receivers with ring) can sign with. A certificate
//! for any other key would be issued, recorded, and useless.

use kakunin_signer::KeyOptions;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::AuthorityError;

const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const ED25519: &str = "1.3.101.112";
const P256: &str = "1.2.840.10045.3.1.7";
const P384: &str = "1.3.132.0.34";

/// ring verifies RSA signatures with 2048 to 8192 bit moduli only.
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

const SUPPORTED: &str = "agents sign with ECDSA P-256 or P-384, RSA (2048 to 8192 bits) \
                         or Ed25519 keys";

/// Refuses a DER SubjectPublicKeyInfo that an agent could not sign with.
pub(crate) fn check_agent_key(spki_der: &[u8]) -> Result<(), AuthorityError> {
    let invalid = |reason: String| AuthorityError::Invalid {
        what: "agent public key",
        reason,
    };
    let (rest, spki) = SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|e| invalid(format!("not a DER SubjectPublicKeyInfo: {e}")))?;
    if !rest.is_empty() {
        return Err(invalid(
            "trailing bytes after the SubjectPublicKeyInfo".into(),
        ));
    }
    let algorithm = spki.algorithm.algorithm.to_id_string();
    match algorithm.as_str() {
        EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string());
            match curve.as_deref() {
                Some(P256 | P384) => Ok(()),
                Some(other) => Err(invalid(format!(
                    "an EC key on curve {other} cannot be used; {SUPPORTED}"
                ))),
                None => Err(invalid(format!(
                    "an EC key without a named curve cannot be used; {SUPPORTED}"
                ))),
            }
        }
        RSA_ENCRYPTION => match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) if RSA_BITS.contains(&rsa.key_size()) => Ok(()),
            Ok(PublicKey::RSA(rsa)) => Err(invalid(format!(
                "a {}-bit RSA key cannot be used; {SUPPORTED}",
                rsa.key_size()
            ))),
            _ => Err(invalid("the RSA public key does not parse".into())),
        },
        ED25519 if spki.subject_public_key.data.len() == 32 => Ok(()),
        ED25519 => Err(invalid("the Ed25519 public key is not 32 bytes".into())),
        other => Err(invalid(format!(
            "a key of algorithm {other} cannot be used; {SUPPORTED}"
        ))),
    }
}

/// The public key (DER SubjectPublicKeyInfo) of the key `reference` names
/// (`file:`, `aws-kms:`, `pkcs11:`), checked to be one an agent can use.
/// Only the public half is read: KMS GetPublicKey, the token's public key
/// object, or the file's key (whose private half is then dropped).
pub fn public_key_from_reference(
    reference: &str,
    options: &KeyOptions,
) -> Result<Vec<u8>, AuthorityError> {
    let backend = kakunin_signer::open_key_with(reference, options).map_err(|error| {
        AuthorityError::CaKey {
            context: format!("cannot read the public key of {reference:?}"),
            error,
        }
    })?;
    let spki = backend.public_key_spki().to_vec();
    check_agent_key(&spki).map_err(|e| match e {
        AuthorityError::Invalid { what, reason } => AuthorityError::Invalid {
            what,
            reason: format!("{} ({reference}): {reason}", backend.describe()),
        },
        other => other,
    })?;
    Ok(spki)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{KeyPair, PublicKeyData};

    #[test]
    fn supported_keys_pass() {
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let key = KeyPair::generate_for(alg).unwrap();
            check_agent_key(&key.subject_public_key_info()).unwrap();
        }
    }

    #[test]
    fn unusable_keys_are_refused_with_what_is_supported() {
        // secp256k1: a curve KMS offers (ECC_SECG_P256K1) that agents cannot use.
        let k1 = der(include_str!("../tests/fixtures/secp256k1-public.pem"));
        let err = check_agent_key(&k1).unwrap_err().to_string();
        assert!(
            err.contains("1.3.132.0.10") && err.contains("P-256"),
            "{err}"
        );
        let rsa = der(include_str!("../tests/fixtures/rsa1024-public.pem"));
        let err = check_agent_key(&rsa).unwrap_err().to_string();
        assert!(err.contains("1024-bit RSA"), "{err}");
        assert!(check_agent_key(b"junk").is_err());
    }

    #[test]
    fn a_reference_yields_its_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let path = dir.path().join("agent.pem");
        std::fs::write(&path, key.serialize_pem()).unwrap();
        let reference = format!("file:{}", path.display());
        let spki = public_key_from_reference(&reference, &KeyOptions::default()).unwrap();
        assert_eq!(spki, key.subject_public_key_info());
        let err = public_key_from_reference("vault:x", &KeyOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("vault:x"), "{err}");
    }

    fn der(pem: &str) -> Vec<u8> {
        x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .unwrap()
            .1
            .contents
    }
}
