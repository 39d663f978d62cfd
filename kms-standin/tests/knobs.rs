//! The measurement knobs through the real SDK client: the Sign quota answers
//! KMS's ThrottlingException, and a slow Sign holds up nothing else.
//! Ordering is asserted, never time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use common::{raw_http, sdk_client, verify};
use kakunin_kms_standin::{KeySpec, Settings, Standin};

async fn sign(client: &aws_sdk_kms::Client, key: &str) -> Result<Vec<u8>, String> {
    client
        .sign()
        .key_id(key)
        .message(Blob::new(&b"knobs"[..]))
        .message_type(MessageType::Raw)
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .map(|o| o.signature().unwrap().as_ref().to_vec())
        .map_err(|e| {
            let e = e.into_service_error();
            format!("{}: {}", e.code().unwrap_or("?"), e.message().unwrap_or(""))
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn over_quota_sign_is_throttling_exception_and_other_calls_are_not_limited() {
    let standin = Standin::start(Settings {
        sign_quota_per_sec: Some(1),
        ..Settings::default()
    })
    .await
    .unwrap();
    let key = standin.create_key(KeySpec::EccNistP256).unwrap();
    // Retries off: the SDK would retry a ThrottlingException and hide it.
    let client = sdk_client(&standin.endpoint_url(), standin.region(), false).await;

    // The bucket holds one second's worth: the first call passes, and of a
    // quick run after it at least one is over the quota.
    sign(&client, &key.arn).await.unwrap();
    let mut throttled = None;
    for _ in 0..20 {
        if let Err(e) = sign(&client, &key.arn).await {
            throttled = Some(e);
            break;
        }
    }
    assert_eq!(
        throttled.as_deref(),
        Some("ThrottlingException: Rate exceeded")
    );

    // A quota of zero throttles every Sign, and only Sign.
    standin.set_quota(Some(0));
    assert_eq!(
        sign(&client, &key.arn).await.unwrap_err(),
        "ThrottlingException: Rate exceeded"
    );
    client
        .get_public_key()
        .key_id(&key.arn)
        .send()
        .await
        .unwrap();
    standin.set_quota(None);
    sign(&client, &key.arn).await.unwrap();

    let stats = standin.stats();
    assert!(stats.sign_throttled >= 2, "{stats:?}");
    assert_eq!(stats.sign_errors, 0);
    assert_eq!(
        stats.sign_accepted + stats.sign_throttled,
        stats.per_op["Sign"].calls
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_sign_does_not_hold_up_a_concurrent_get_public_key() {
    let standin = Standin::start(Settings::default()).await.unwrap();
    let key = standin.create_key(KeySpec::EccNistP256).unwrap();
    let client = sdk_client(&standin.endpoint_url(), standin.region(), true).await;
    // Long enough that the Sign cannot finish by itself during the test; it
    // is released below by lowering the delay.
    standin.set_sign_delay(Duration::from_secs(3600));

    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    let slow = {
        let (client, arn, done_tx) = (client.clone(), key.arn.clone(), done_tx.clone());
        tokio::spawn(async move {
            let r = sign(&client, &arn).await;
            let _ = done_tx.send("Sign");
            r
        })
    };
    while standin.stats().sign_in_flight == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let public = client
        .get_public_key()
        .key_id(&key.arn)
        .send()
        .await
        .unwrap();
    let _ = done_tx.send("GetPublicKey");
    assert_eq!(done.recv().await, Some("GetPublicKey"), "answered first");
    assert_eq!(standin.stats().sign_in_flight, 1, "the Sign still waits");

    standin.set_sign_delay(Duration::ZERO);
    let signature = slow.await.unwrap().unwrap();
    assert_eq!(done.recv().await, Some("Sign"));
    verify(
        public.public_key().unwrap().as_ref(),
        "ECC_NIST_P256",
        b"knobs",
        &signature,
    );
    assert_eq!(standin.stats().sign_in_flight_max, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_routes_change_settings_and_report_stats() {
    let standin = Standin::start(Settings::default()).await.unwrap();
    let key = standin.create_key(KeySpec::EccNistP256).unwrap();
    let client = sdk_client(&standin.endpoint_url(), standin.region(), false).await;
    let addr = standin.local_addr();
    let post = |body: &str| {
        format!(
            "POST /__standin/settings HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };

    let (status, body) = raw_http(
        addr,
        post(r#"{"sign_delay_ms": 7, "sign_quota_per_sec": 0}"#).as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["sign_delay_ms"], 7);
    assert_eq!(v["sign_quota_per_sec"], 0);
    assert_eq!(standin.sign_delay(), Duration::from_millis(7));
    assert_eq!(
        sign(&client, &key.arn).await.unwrap_err(),
        "ThrottlingException: Rate exceeded"
    );

    // An absent field is kept; null removes the quota.
    let (status, body) = raw_http(addr, post(r#"{"sign_quota_per_sec": null}"#).as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(standin.quota(), None);
    assert_eq!(standin.sign_delay(), Duration::from_millis(7));
    sign(&client, &key.arn).await.unwrap();

    let (status, body) = raw_http(addr, post(r#"{"sign_delay": 1}"#).as_bytes()).await;
    assert_eq!(status, 400, "unknown setting refused: {body}");
    assert!(body.contains("sign_delay"), "{body}");

    let (status, body) = raw_http(
        addr,
        b"GET /__standin/stats HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let stats: kakunin_kms_standin::Stats = serde_json::from_str(&body).unwrap();
    assert_eq!(stats.sign_accepted, 1);
    assert_eq!(stats.sign_throttled, 1);
    assert_eq!(stats.per_op["Sign"].calls, 2);
    assert_eq!(stats.per_op["Sign"].errors, 1);
}
