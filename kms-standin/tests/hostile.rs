//! Malformed and hostile requests get a 400 (or 404) with a JSON message,
//! and the server goes on serving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{error_type, kms_raw, raw_http};
use kakunin_kms_standin::{KeySpec, Settings, Standin};

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_answered_not_crashed_on() {
    let standin = Standin::start(Settings::default()).await.unwrap();
    let key = standin.create_key(KeySpec::EccNistP256).unwrap();
    let addr = standin.local_addr();
    let sign_body = |message: &str| {
        format!(
            r#"{{"KeyId":"{}","Message":"{message}","MessageType":"RAW","SigningAlgorithm":"ECDSA_SHA_256"}}"#,
            key.arn
        )
    };

    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "TrentService.Sign",
            b"{not json".to_vec(),
            400,
            "SerializationException",
        ),
        (
            "TrentService.Sign",
            b"[]".to_vec(),
            400,
            "ValidationException",
        ),
        ("TrentService.Sign", Vec::new(), 400, "ValidationException"),
        (
            "TrentService.Sign",
            sign_body("%%%").into_bytes(),
            400,
            "SerializationException",
        ),
        (
            "TrentService.Sign",
            sign_body("").into_bytes(),
            400,
            "ValidationException",
        ),
        (
            "TrentService.Sign",
            br#"{"KeyId":"arn:aws:kms:x","Message":"bQ==","SigningAlgorithm":"ECDSA_SHA_256"}"#
                .to_vec(),
            400,
            "InvalidArnException",
        ),
        (
            "TrentService.Sign",
            br#"{"KeyId":"k","Message":"bQ==","SigningAlgorithm":"NOPE"}"#.to_vec(),
            400,
            "ValidationException",
        ),
        (
            "TrentService.DescribeKey",
            br#"{"KeyId": 5}"#.to_vec(),
            400,
            "ValidationException",
        ),
        (
            "TrentService.ScheduleKeyDeletion",
            format!(r#"{{"KeyId":"{}","PendingWindowInDays":1}}"#, key.key_id).into_bytes(),
            400,
            "ValidationException",
        ),
        (
            "TrentService.CreateAlias",
            format!(
                r#"{{"AliasName":"alias/aws/x","TargetKeyId":"{}"}}"#,
                key.key_id
            )
            .into_bytes(),
            400,
            "InvalidAliasNameException",
        ),
        (
            "TrentService.Decrypt",
            b"{}".to_vec(),
            400,
            "UnknownOperationException",
        ),
        (
            "Other.Sign",
            b"{}".to_vec(),
            400,
            "UnknownOperationException",
        ),
    ];
    for (target, body, status, name) in cases {
        let (got, text) = kms_raw(addr, target, &body).await;
        assert_eq!(
            (got, error_type(&text).as_str()),
            (status, name),
            "{target} {:?}: {text}",
            String::from_utf8_lossy(&body)
        );
    }

    // Over the body limit: refused from the declared length, unread.
    let huge = format!(
        "POST / HTTP/1.1\r\nHost: k\r\nConnection: close\r\nX-Amz-Target: TrentService.Sign\r\n\
         Content-Length: {}\r\n\r\n{{",
        kakunin_kms_standin::MAX_BODY + 1
    );
    let (got, text) = raw_http(addr, huge.as_bytes()).await;
    assert_eq!(
        (got, error_type(&text).as_str()),
        (400, "ValidationException"),
        "{text}"
    );

    let (got, text) = raw_http(
        addr,
        b"GET / HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(got, 404, "{text}");

    // Every unknown target is counted under one name, so the table stays small.
    let stats = standin.stats();
    assert_eq!(stats.per_op["Unknown"].calls, 2);
    assert!(stats.per_op.keys().all(|k| k != "Decrypt"));

    // Still serving.
    let (got, text) = kms_raw(addr, "TrentService.Sign", sign_body("bQ==").as_bytes()).await;
    assert_eq!(got, 200, "{text}");
}
