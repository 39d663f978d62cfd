//! RSA keys, which reach the stand-in only by import (ring cannot generate
//! them): the real `aws-sdk-kms` client reads them as KMS describes RSA
//! keys, and every RSA signing algorithm's signature verifies with ring.
//! The keys come from the `openssl` CLI, made fresh for each run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aws_sdk_kms::operation::sign::SignError;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{
    KeySpec, KeyUsageType, MessageType, OriginType, SigningAlgorithmSpec as Alg,
};
use common::{
    openssl, openssl_spki, pkcs8_der, rsa_pkcs1_der, rsa_pkcs8, rsa_pkcs8_pem, sdk_client, verify,
    verify_rsa,
};
use kakunin_kms_standin::{Error, Settings, Standin};

async fn start() -> (Standin, aws_sdk_kms::Client) {
    let standin = Standin::start(Settings::default()).await.unwrap();
    let client = sdk_client(&standin.endpoint_url(), standin.region(), true).await;
    (standin, client)
}

async fn sign(
    client: &aws_sdk_kms::Client,
    key: &str,
    alg: Alg,
    message: &[u8],
) -> Result<Vec<u8>, SignError> {
    let out = client
        .sign()
        .key_id(key)
        .message(Blob::new(message))
        .message_type(MessageType::Raw)
        .signing_algorithm(alg.clone())
        .send()
        .await
        .map_err(|e| e.into_service_error())?;
    assert_eq!(
        out.signing_algorithm(),
        Some(&alg),
        "Sign names its algorithm"
    );
    Ok(out.signature().unwrap().as_ref().to_vec())
}

/// KMS's list for an RSA key, in its order.
fn rsa_algorithms() -> Vec<Alg> {
    vec![
        Alg::RsassaPkcs1V15Sha256,
        Alg::RsassaPkcs1V15Sha384,
        Alg::RsassaPkcs1V15Sha512,
        Alg::RsassaPssSha256,
        Alg::RsassaPssSha384,
        Alg::RsassaPssSha512,
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn imported_rsa_keys_describe_publish_and_sign_like_kms() {
    let (standin, client) = start().await;
    for (bits, spec) in [
        (2048, KeySpec::Rsa2048),
        (3072, KeySpec::Rsa3072),
        (4096, KeySpec::Rsa4096),
    ] {
        let pkcs8 = rsa_pkcs8(bits);
        let made = standin.import_key(&pkcs8).unwrap();
        assert_eq!(made.spec.as_str(), spec.as_str(), "spec from the modulus");

        let described = client
            .describe_key()
            .key_id(&made.arn)
            .send()
            .await
            .unwrap();
        let meta = described.key_metadata().unwrap();
        assert_eq!(meta.key_spec(), Some(&spec));
        assert_eq!(meta.key_usage(), Some(&KeyUsageType::SignVerify));
        assert_eq!(meta.origin(), Some(&OriginType::External));
        assert_eq!(meta.signing_algorithms(), rsa_algorithms().as_slice());

        let public = client
            .get_public_key()
            .key_id(&made.key_id)
            .send()
            .await
            .unwrap();
        assert_eq!(public.key_spec(), Some(&spec));
        assert_eq!(public.signing_algorithms(), rsa_algorithms().as_slice());
        let spki = public.public_key().unwrap().as_ref().to_vec();
        assert_eq!(
            spki,
            openssl_spki(&pkcs8),
            "{spec:?}: the SPKI is openssl's, byte for byte"
        );

        // A TLS 1.3 CertificateVerify's shape: 64 spaces, context, 0, hash.
        let mut message = vec![0x20; 64];
        message.extend_from_slice(b"TLS 1.3, client CertificateVerify\x00");
        message.extend_from_slice(&[0xab; 32]);
        for alg in rsa_algorithms() {
            let sig = sign(&client, &made.arn, alg.clone(), &message)
                .await
                .unwrap_or_else(|e| panic!("{spec:?} {alg:?}: {e:?}"));
            assert_eq!(sig.len(), bits as usize / 8, "{alg:?}");
            verify_rsa(&spki, alg.as_str(), &message, &sig);
        }
        // PSS is randomized (a fresh salt each time), PKCS#1 v1.5 is not.
        let pss = [
            sign(&client, &made.arn, Alg::RsassaPssSha256, b"m")
                .await
                .unwrap(),
            sign(&client, &made.arn, Alg::RsassaPssSha256, b"m")
                .await
                .unwrap(),
        ];
        assert_ne!(pss[0], pss[1], "PSS salts are random");
        let pkcs1 = [
            sign(&client, &made.arn, Alg::RsassaPkcs1V15Sha256, b"m")
                .await
                .unwrap(),
            sign(&client, &made.arn, Alg::RsassaPkcs1V15Sha256, b"m")
                .await
                .unwrap(),
        ];
        assert_eq!(pkcs1[0], pkcs1[1]);
    }
    assert_eq!(standin.stats().sign_accepted, 3 * 10);
    standin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_algorithm_of_the_other_key_type_is_invalid_key_usage() {
    let (standin, client) = start().await;
    let rsa = standin.import_key(&rsa_pkcs8(2048)).unwrap();
    let ec = standin
        .create_key(kakunin_kms_standin::KeySpec::EccNistP256)
        .unwrap();
    for (key, alg) in [
        (&rsa.arn, Alg::EcdsaSha256),
        (&rsa.arn, Alg::EcdsaSha384),
        (&rsa.arn, Alg::Ed25519Sha512),
        (&ec.arn, Alg::RsassaPssSha256),
        (&ec.arn, Alg::RsassaPkcs1V15Sha512),
    ] {
        let e = sign(&client, key, alg.clone(), b"m").await.unwrap_err();
        assert!(
            matches!(e, SignError::InvalidKeyUsageException(_)),
            "{alg:?}: {e:?}"
        );
    }
    assert_eq!(standin.stats().sign_accepted, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn ecdsa_keys_import_too_and_other_keys_are_refused() {
    let (standin, client) = start().await;
    for (curve, spec, alg) in [
        ("P-256", KeySpec::EccNistP256, Alg::EcdsaSha256),
        ("P-384", KeySpec::EccNistP384, Alg::EcdsaSha384),
    ] {
        let pkcs8 = pkcs8_der(&openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            &format!("ec_paramgen_curve:{curve}"),
        ]));
        let made = standin.import_key(&pkcs8).unwrap();
        assert_eq!(made.spec.as_str(), spec.as_str());
        let public = client
            .get_public_key()
            .key_id(&made.arn)
            .send()
            .await
            .unwrap();
        let spki = public.public_key().unwrap().as_ref().to_vec();
        assert_eq!(spki, openssl_spki(&pkcs8), "{curve}");
        let sig = sign(&client, &made.arn, alg, b"imported").await.unwrap();
        verify(&spki, spec.as_str(), b"imported", &sig);
    }

    // ring refuses RSA below 2048 bits, and sizes whose primes are not a
    // multiple of 512 bits (of KMS's sizes it takes all three).
    for bits in [1024, 2560] {
        let e = standin.import_key(&rsa_pkcs8(bits)).unwrap_err();
        assert!(matches!(e, Error::Import(_)), "{e:?}");
        assert!(e.to_string().contains("ring refuses"), "{bits}: {e}");
    }
    // A bare PKCS#1 key (what OpenSSL 3.0's `genpkey -outform DER` writes)
    // is refused with the conversion to do.
    let pkcs1 = rsa_pkcs1_der(&rsa_pkcs8_pem(2048));
    let e = standin.import_key(&pkcs1).unwrap_err();
    assert!(e.to_string().contains("openssl pkcs8 -topk8"), "{e}");
    let e = standin.import_key(b"not a key").unwrap_err();
    assert!(matches!(e, Error::Import(_)), "{e:?}");
}
