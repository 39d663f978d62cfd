//! What KMS is asked for a given key and TLS scheme: the key spec that
//! decides our algorithm, the signing algorithm, and whether the message
//! goes as is (`RAW`) or as a digest computed here (`DIGEST`).

use aws_sdk_kms::types::{KeySpec, MessageType, SigningAlgorithmSpec};
use ring::digest;
use rustls::SignatureScheme;

use crate::backend::KeyAlgorithm;

/// KMS takes `RAW` messages up to this size; longer ones must be sent as a
/// digest.
pub(crate) const MAX_RAW_MESSAGE: usize = 4096;

/// Our algorithm for a KMS key spec, or why the key cannot be an agent key.
pub(crate) fn algorithm_for(spec: &KeySpec) -> Result<KeyAlgorithm, String> {
    match spec {
        KeySpec::EccNistP256 => Ok(KeyAlgorithm::EcdsaP256),
        KeySpec::EccNistP384 => Ok(KeyAlgorithm::EcdsaP384),
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => Ok(KeyAlgorithm::Rsa),
        KeySpec::EccNistEdwards25519 => Ok(KeyAlgorithm::Ed25519),
        other => Err(format!(
            "key spec {} cannot sign TLS handshakes; use ECC_NIST_P256, ECC_NIST_P384, \
             RSA_2048, RSA_3072, RSA_4096 or ECC_NIST_EDWARDS25519",
            other.as_str()
        )),
    }
}

/// One Sign call, ready to send.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SignCall {
    pub(crate) algorithm: SigningAlgorithmSpec,
    pub(crate) message_type: MessageType,
    pub(crate) message: Vec<u8>,
}

/// Plans the Sign call for `scheme` over `message`. Short messages go raw, so
/// that KMS itself hashes what it signs (and its CloudTrail record shows a
/// RAW request); long ones are hashed here, as KMS requires.
pub(crate) fn plan(
    key: KeyAlgorithm,
    scheme: SignatureScheme,
    message: &[u8],
) -> Result<SignCall, String> {
    if !key.tls_schemes().contains(&scheme) {
        return Err(format!("a {key} key does not sign {scheme:?}"));
    }
    let (algorithm, hash) = match scheme {
        SignatureScheme::ECDSA_NISTP256_SHA256 => {
            (SigningAlgorithmSpec::EcdsaSha256, &digest::SHA256)
        }
        SignatureScheme::ECDSA_NISTP384_SHA384 => {
            (SigningAlgorithmSpec::EcdsaSha384, &digest::SHA384)
        }
        SignatureScheme::RSA_PSS_SHA256 => (SigningAlgorithmSpec::RsassaPssSha256, &digest::SHA256),
        SignatureScheme::RSA_PSS_SHA384 => (SigningAlgorithmSpec::RsassaPssSha384, &digest::SHA384),
        SignatureScheme::RSA_PSS_SHA512 => (SigningAlgorithmSpec::RsassaPssSha512, &digest::SHA512),
        SignatureScheme::RSA_PKCS1_SHA256 => {
            (SigningAlgorithmSpec::RsassaPkcs1V15Sha256, &digest::SHA256)
        }
        SignatureScheme::RSA_PKCS1_SHA384 => {
            (SigningAlgorithmSpec::RsassaPkcs1V15Sha384, &digest::SHA384)
        }
        SignatureScheme::RSA_PKCS1_SHA512 => {
            (SigningAlgorithmSpec::RsassaPkcs1V15Sha512, &digest::SHA512)
        }
        SignatureScheme::ED25519 => {
            // Pure Ed25519 hashes inside the algorithm; there is no digest
            // to send, so long messages cannot be signed at all.
            if message.len() > MAX_RAW_MESSAGE {
                return Err(format!(
                    "an Ed25519 KMS key signs messages up to {MAX_RAW_MESSAGE} bytes; this one has {}",
                    message.len()
                ));
            }
            return Ok(SignCall {
                algorithm: SigningAlgorithmSpec::Ed25519Sha512,
                message_type: MessageType::Raw,
                message: message.to_vec(),
            });
        }
        other => return Err(format!("{other:?} has no KMS signing algorithm")),
    };
    if message.len() <= MAX_RAW_MESSAGE {
        return Ok(SignCall {
            algorithm,
            message_type: MessageType::Raw,
            message: message.to_vec(),
        });
    }
    Ok(SignCall {
        algorithm,
        message_type: MessageType::Digest,
        message: digest::digest(hash, message).as_ref().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_specs_map_to_agent_algorithms() {
        assert_eq!(
            algorithm_for(&KeySpec::EccNistP256),
            Ok(KeyAlgorithm::EcdsaP256)
        );
        assert_eq!(algorithm_for(&KeySpec::Rsa4096), Ok(KeyAlgorithm::Rsa));
        let refused = algorithm_for(&KeySpec::SymmetricDefault).unwrap_err();
        assert!(refused.contains("SYMMETRIC_DEFAULT"), "{refused}");
        assert!(algorithm_for(&KeySpec::EccSecgP256K1).is_err());
    }

    #[test]
    fn short_messages_go_raw() {
        let call = plan(
            KeyAlgorithm::EcdsaP256,
            SignatureScheme::ECDSA_NISTP256_SHA256,
            &[7u8; MAX_RAW_MESSAGE],
        )
        .unwrap();
        assert_eq!(call.message_type, MessageType::Raw);
        assert_eq!(call.algorithm, SigningAlgorithmSpec::EcdsaSha256);
        assert_eq!(call.message, vec![7u8; MAX_RAW_MESSAGE]);
    }

    /// The DIGEST path cannot be tested end to end against moto (it hashes
    /// whatever it is sent), so its contract is checked here: the digest is
    /// the scheme's own hash of the whole message.
    #[test]
    fn long_messages_go_as_the_schemes_digest() {
        let message = vec![0x5a; MAX_RAW_MESSAGE + 1];
        for (key, scheme, spec, hash) in [
            (
                KeyAlgorithm::EcdsaP256,
                SignatureScheme::ECDSA_NISTP256_SHA256,
                SigningAlgorithmSpec::EcdsaSha256,
                &digest::SHA256,
            ),
            (
                KeyAlgorithm::EcdsaP384,
                SignatureScheme::ECDSA_NISTP384_SHA384,
                SigningAlgorithmSpec::EcdsaSha384,
                &digest::SHA384,
            ),
            (
                KeyAlgorithm::Rsa,
                SignatureScheme::RSA_PSS_SHA512,
                SigningAlgorithmSpec::RsassaPssSha512,
                &digest::SHA512,
            ),
            (
                KeyAlgorithm::Rsa,
                SignatureScheme::RSA_PKCS1_SHA256,
                SigningAlgorithmSpec::RsassaPkcs1V15Sha256,
                &digest::SHA256,
            ),
        ] {
            let call = plan(key, scheme, &message).unwrap();
            assert_eq!(call.message_type, MessageType::Digest, "{scheme:?}");
            assert_eq!(call.algorithm, spec);
            assert_eq!(call.message, digest::digest(hash, &message).as_ref());
        }
    }

    /// A change in the last byte of a long message changes the digest: it
    /// covers the whole message, not the part a RAW call could carry.
    #[test]
    fn digest_is_of_the_whole_message_not_a_prefix() {
        let mut message = vec![1u8; MAX_RAW_MESSAGE * 2];
        let first = plan(
            KeyAlgorithm::EcdsaP256,
            SignatureScheme::ECDSA_NISTP256_SHA256,
            &message,
        )
        .unwrap();
        if let Some(last) = message.last_mut() {
            *last = 2;
        }
        let second = plan(
            KeyAlgorithm::EcdsaP256,
            SignatureScheme::ECDSA_NISTP256_SHA256,
            &message,
        )
        .unwrap();
        assert_ne!(first.message, second.message);
    }

    #[test]
    fn schemes_outside_the_key_are_refused() {
        assert!(plan(
            KeyAlgorithm::EcdsaP256,
            SignatureScheme::ECDSA_NISTP384_SHA384,
            b"m"
        )
        .is_err());
        assert!(plan(KeyAlgorithm::Rsa, SignatureScheme::ED25519, b"m").is_err());
        let long = vec![0u8; MAX_RAW_MESSAGE + 1];
        assert!(plan(KeyAlgorithm::Ed25519, SignatureScheme::ED25519, &long).is_err());
        assert_eq!(
            plan(KeyAlgorithm::Ed25519, SignatureScheme::ED25519, b"m")
                .unwrap()
                .message_type,
            MessageType::Raw
        );
    }
}
