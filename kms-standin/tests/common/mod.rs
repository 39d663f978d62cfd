//! Shared by the integration tests: the real `aws-sdk-kms` client pointed at
//! a stand-in, and a raw HTTP/1.1 exchange for what the SDK cannot send.
#![allow(dead_code)] // Each test file uses its own part of this module.

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_kms::config::Credentials;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The SDK client as Kakunin's backend builds it (rustls on ring), with a
/// static test credential; `retries` off where a test needs to see the first
/// answer (the SDK retries a ThrottlingException).
pub async fn sdk_client(endpoint: &str, region: &str, retries: bool) -> aws_sdk_kms::Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let retry = if retries {
        RetryConfig::standard()
    } else {
        RetryConfig::disabled()
    };
    let conf = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .credentials_provider(Credentials::new(
            "AKIDSTANDINTEST",
            "standin-test-secret",
            None,
            None,
            "kms-standin-test",
        ))
        .endpoint_url(endpoint)
        .http_client(http)
        .retry_config(retry)
        .load()
        .await;
    aws_sdk_kms::Client::new(&conf)
}

/// Checks a DER ECDSA signature against a DER SPKI with ring alone, so the
/// check is independent of the stand-in's own encoding code.
pub fn verify(spki: &[u8], spec: &str, message: &[u8], signature: &[u8]) {
    const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
    let (alg, oid, point_len) = match spec {
        "ECC_NIST_P256" => (&ECDSA_P256_SHA256_ASN1, P256_OID, 65),
        "ECC_NIST_P384" => (&ECDSA_P384_SHA384_ASN1, P384_OID, 97),
        other => panic!("no verifier for {other}"),
    };
    assert!(
        spki.windows(oid.len()).any(|w| w == oid),
        "SPKI does not name the curve of {spec}"
    );
    // The SPKI ends with the BIT STRING's uncompressed point (0x04 || X || Y).
    let point = &spki[spki.len() - point_len..];
    assert_eq!(point[0], 0x04, "point is not uncompressed");
    UnparsedPublicKey::new(alg, point)
        .verify(message, signature)
        .expect("signature verifies against the public key");
}

/// One raw HTTP/1.1 exchange; returns (status, body).
pub async fn raw_http(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A KMS call with a raw body, over a closed connection.
pub async fn kms_raw(addr: std::net::SocketAddr, target: &str, body: &[u8]) -> (u16, String) {
    let mut req = format!(
        "POST / HTTP/1.1\r\nHost: kms\r\nConnection: close\r\nX-Amz-Target: {target}\r\n\
         Content-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    raw_http(addr, &req).await
}

/// The `__type` of a JSON error body.
pub fn error_type(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("error body {body:?} is not JSON: {e}"));
    assert!(v["message"].is_string(), "error without message: {body}");
    v["__type"].as_str().unwrap_or_default().to_string()
}
