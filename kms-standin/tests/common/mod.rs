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

/// Runs the `openssl` CLI (the test's source of RSA keys, which ring cannot
/// make) and returns its stdout.
pub fn openssl(args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl CLI runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A fresh RSA private key of `bits` bits as PKCS#8 PEM.
pub fn rsa_pkcs8_pem(bits: u32) -> Vec<u8> {
    // PEM, because OpenSSL 3.0's `genpkey -outform DER` writes the
    // traditional (PKCS#1) form, where PEM output is PKCS#8.
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        &format!("rsa_keygen_bits:{bits}"),
    ])
}

/// A fresh RSA private key of `bits` bits as PKCS#8 DER.
pub fn rsa_pkcs8(bits: u32) -> Vec<u8> {
    pkcs8_der(&rsa_pkcs8_pem(bits))
}

/// The DER inside a PKCS#8 PEM ("PRIVATE KEY").
pub fn pkcs8_der(pem: &[u8]) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject as _;
    rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem)
        .unwrap()
        .secret_pkcs8_der()
        .to_vec()
}

/// The same RSA key as a bare PKCS#1 RSAPrivateKey (not PKCS#8), DER.
pub fn rsa_pkcs1_der(pkcs8_pem: &[u8]) -> Vec<u8> {
    let dir = tempdir();
    let path = dir.join("key.pem");
    std::fs::write(&path, pkcs8_pem).unwrap();
    let der = openssl(&[
        "rsa",
        "-in",
        path.to_str().unwrap(),
        "-outform",
        "DER",
        "-traditional",
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    der
}

/// What openssl makes of a PKCS#8 DER private key's public half: the DER
/// SubjectPublicKeyInfo, independent of the stand-in's own encoding.
pub fn openssl_spki(pkcs8_der: &[u8]) -> Vec<u8> {
    let dir = tempdir();
    let path = dir.join("key.der");
    std::fs::write(&path, pkcs8_der).unwrap();
    let spki = openssl(&[
        "pkey",
        "-inform",
        "DER",
        "-in",
        path.to_str().unwrap(),
        "-pubout",
        "-outform",
        "DER",
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    spki
}

/// A fresh directory under the system's temp dir.
fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "kms-standin-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Checks an RSA signature (KMS's algorithm name) against a DER SPKI with
/// ring alone. ring's PSS verification insists on a salt as long as the
/// digest, so a PSS signature that passes has the salt TLS 1.3 needs.
pub fn verify_rsa(spki: &[u8], algorithm: &str, message: &[u8], signature: &[u8]) {
    use ring::signature::*;
    let alg: &dyn VerificationAlgorithm = match algorithm {
        "RSASSA_PSS_SHA_256" => &RSA_PSS_2048_8192_SHA256,
        "RSASSA_PSS_SHA_384" => &RSA_PSS_2048_8192_SHA384,
        "RSASSA_PSS_SHA_512" => &RSA_PSS_2048_8192_SHA512,
        "RSASSA_PKCS1_V1_5_SHA_256" => &RSA_PKCS1_2048_8192_SHA256,
        "RSASSA_PKCS1_V1_5_SHA_384" => &RSA_PKCS1_2048_8192_SHA384,
        "RSASSA_PKCS1_V1_5_SHA_512" => &RSA_PKCS1_2048_8192_SHA512,
        other => panic!("no RSA verifier for {other}"),
    };
    UnparsedPublicKey::new(alg, rsa_public_key(spki))
        .verify(message, signature)
        .unwrap_or_else(|_| panic!("{algorithm} signature verifies against the public key"));
}

/// The PKCS#1 RSAPublicKey inside a DER SPKI, after checking that the SPKI
/// names rsaEncryption with NULL parameters (as KMS's do).
pub fn rsa_public_key(spki: &[u8]) -> &[u8] {
    const RSA_ENCRYPTION_NULL: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    // SEQUENCE header: 0x30 0x82 len len for every RSA size KMS has.
    assert_eq!(&spki[..2], &[0x30, 0x82], "SPKI header");
    let rest = &spki[4..];
    assert!(
        rest.starts_with(RSA_ENCRYPTION_NULL),
        "not rsaEncryption/NULL"
    );
    let bit_string = &rest[RSA_ENCRYPTION_NULL.len()..];
    assert_eq!(&bit_string[..2], &[0x03, 0x82], "BIT STRING header");
    assert_eq!(bit_string[4], 0x00, "unused bits");
    &bit_string[5..]
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
