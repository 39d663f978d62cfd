//! The real `aws-sdk-kms` client against the stand-in: the calls Kakunin's
//! backend makes, and the KMS errors arriving as the SDK's typed errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aws_sdk_kms::operation::get_public_key::GetPublicKeyError;
use aws_sdk_kms::operation::sign::SignError;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyState, KeyUsageType, MessageType, SigningAlgorithmSpec};
use common::{sdk_client, verify};
use kakunin_kms_standin::{Settings, Standin};

async fn start() -> (Standin, aws_sdk_kms::Client) {
    let standin = Standin::start(Settings::default()).await.unwrap();
    let client = sdk_client(&standin.endpoint_url(), standin.region(), true).await;
    (standin, client)
}

async fn create(client: &aws_sdk_kms::Client, spec: KeySpec) -> String {
    let out = client
        .create_key()
        .key_usage(KeyUsageType::SignVerify)
        .key_spec(spec)
        .description("test key")
        .send()
        .await
        .unwrap();
    let meta = out.key_metadata().unwrap();
    assert_eq!(meta.key_state(), Some(&KeyState::Enabled));
    assert!(meta.enabled());
    meta.arn().unwrap().to_string()
}

async fn sign(
    client: &aws_sdk_kms::Client,
    key: &str,
    alg: SigningAlgorithmSpec,
    message: &[u8],
) -> Result<Vec<u8>, SignError> {
    client
        .sign()
        .key_id(key)
        .message(Blob::new(message))
        .message_type(MessageType::Raw)
        .signing_algorithm(alg)
        .send()
        .await
        .map(|o| o.signature().unwrap().as_ref().to_vec())
        .map_err(|e| e.into_service_error())
}

#[tokio::test(flavor = "multi_thread")]
async fn create_describe_get_public_key_sign_verify_both_curves() {
    let (standin, client) = start().await;
    for (spec, alg) in [
        (KeySpec::EccNistP256, SigningAlgorithmSpec::EcdsaSha256),
        (KeySpec::EccNistP384, SigningAlgorithmSpec::EcdsaSha384),
    ] {
        let arn = create(&client, spec.clone()).await;
        let id = arn.rsplit('/').next().unwrap().to_string();
        assert_eq!(
            arn,
            format!("arn:aws:kms:eu-west-1:111122223333:key/{id}"),
            "ARN names region, documentation account and id"
        );

        let described = client.describe_key().key_id(&id).send().await.unwrap();
        let meta = described.key_metadata().unwrap();
        assert_eq!(meta.key_id(), id);
        assert_eq!(meta.key_spec(), Some(&spec));
        assert_eq!(meta.key_usage(), Some(&KeyUsageType::SignVerify));
        assert_eq!(meta.signing_algorithms(), std::slice::from_ref(&alg));

        let public = client.get_public_key().key_id(&arn).send().await.unwrap();
        assert_eq!(public.key_id(), Some(arn.as_str()));
        assert_eq!(public.key_spec(), Some(&spec));
        assert_eq!(public.signing_algorithms(), std::slice::from_ref(&alg));
        let spki = public.public_key().unwrap().as_ref().to_vec();

        let message = b"TLS 1.3, client CertificateVerify\x00 and then some bytes";
        let out = client
            .sign()
            .key_id(&id)
            .message(Blob::new(&message[..]))
            .message_type(MessageType::Raw)
            .signing_algorithm(alg.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(out.key_id(), Some(arn.as_str()), "Sign answers the key ARN");
        assert_eq!(out.signing_algorithm(), Some(&alg));
        verify(
            &spki,
            spec.as_str(),
            message,
            out.signature().unwrap().as_ref(),
        );
    }
    let stats = standin.stats();
    assert_eq!(stats.sign_accepted, 2);
    assert_eq!(stats.per_op["CreateKey"].calls, 2);
    assert_eq!(stats.per_op["GetPublicKey"].errors, 0);
    standin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn alias_names_and_in_process_keys_sign() {
    let (standin, client) = start().await;
    let key = standin
        .create_key(kakunin_kms_standin::KeySpec::EccNistP256)
        .unwrap();
    client
        .create_alias()
        .alias_name("alias/kakunin-agent")
        .target_key_id(&key.key_id)
        .send()
        .await
        .unwrap();
    let public = client
        .get_public_key()
        .key_id("alias/kakunin-agent")
        .send()
        .await
        .unwrap();
    let spki = public.public_key().unwrap().as_ref().to_vec();
    let alias_arn = "arn:aws:kms:eu-west-1:111122223333:alias/kakunin-agent";
    for name in [
        key.key_id.as_str(),
        &key.arn,
        "alias/kakunin-agent",
        alias_arn,
    ] {
        let sig = sign(&client, name, SigningAlgorithmSpec::EcdsaSha256, b"m")
            .await
            .unwrap_or_else(|e| panic!("sign via {name}: {e:?}"));
        verify(&spki, "ECC_NIST_P256", b"m", &sig);
    }
    let again = client
        .create_alias()
        .alias_name("alias/kakunin-agent")
        .target_key_id(&key.key_id)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(again.is_already_exists_exception(), "{again:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_disabled_and_pending_deletion_keys_are_typed_errors() {
    let (_standin, client) = start().await;
    let alg = SigningAlgorithmSpec::EcdsaSha256;

    let unknown = "arn:aws:kms:eu-west-1:111122223333:key/00000000-0000-4000-8000-000000000000";
    let e = sign(&client, unknown, alg.clone(), b"m").await.unwrap_err();
    assert!(matches!(e, SignError::NotFoundException(_)), "{e:?}");
    let other_region = create(&client, KeySpec::EccNistP256)
        .await
        .replace("eu-west-1", "us-east-1");
    let e = sign(&client, &other_region, alg.clone(), b"m")
        .await
        .unwrap_err();
    assert!(matches!(e, SignError::NotFoundException(_)), "{e:?}");
    let e = sign(&client, "alias/none", alg.clone(), b"m")
        .await
        .unwrap_err();
    assert!(matches!(e, SignError::NotFoundException(_)), "{e:?}");

    let arn = create(&client, KeySpec::EccNistP256).await;
    let e = sign(&client, &arn, SigningAlgorithmSpec::EcdsaSha384, b"m")
        .await
        .unwrap_err();
    assert!(matches!(e, SignError::InvalidKeyUsageException(_)), "{e:?}");

    client.disable_key().key_id(&arn).send().await.unwrap();
    let e = sign(&client, &arn, alg.clone(), b"m").await.unwrap_err();
    assert!(matches!(e, SignError::DisabledException(_)), "{e:?}");
    let e = client
        .get_public_key()
        .key_id(&arn)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(e, GetPublicKeyError::DisabledException(_)),
        "{e:?}"
    );
    client.enable_key().key_id(&arn).send().await.unwrap();
    sign(&client, &arn, alg.clone(), b"m").await.unwrap();

    let scheduled = client
        .schedule_key_deletion()
        .key_id(&arn)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    assert_eq!(scheduled.key_state(), Some(&KeyState::PendingDeletion));
    let e = sign(&client, &arn, alg.clone(), b"m").await.unwrap_err();
    assert!(matches!(e, SignError::KmsInvalidStateException(_)), "{e:?}");
    let meta = client.describe_key().key_id(&arn).send().await.unwrap();
    let meta = meta.key_metadata().unwrap();
    assert_eq!(meta.key_state(), Some(&KeyState::PendingDeletion));
    assert!(meta.deletion_date().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn unsupported_requests_are_clear_errors() {
    let (_standin, client) = start().await;
    let e = client
        .create_key()
        .key_usage(KeyUsageType::SignVerify)
        .key_spec(KeySpec::Rsa2048)
        .send()
        .await
        .unwrap_err();
    let text = format!("{:?}", e.into_service_error());
    assert!(
        text.contains("ValidationException")
            && text.contains("ECC_NIST_P256")
            && text.contains("import"),
        "{text}"
    );

    let arn = create(&client, KeySpec::EccNistP256).await;
    let e = client
        .sign()
        .key_id(&arn)
        .message(Blob::new(vec![0u8; 32]))
        .message_type(MessageType::Digest)
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    let text = format!("{e:?}");
    assert!(
        text.contains("ValidationException") && text.contains("RAW"),
        "{text}"
    );

    let e = sign(&client, &arn, SigningAlgorithmSpec::EcdsaSha256, &[1; 4097])
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("ValidationException"), "{e:?}");
}
