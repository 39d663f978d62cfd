//! The binary as a test starts it: flags in, one `listening on` line out,
//! then the real SDK client against the printed address and ARN.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use common::{rsa_pkcs8_pem, sdk_client, verify, verify_rsa};

/// Kills the process however the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_prints_address_and_key_and_serves_the_sdk() {
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_kakunin-kms-standin"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--region",
                "eu-central-1",
                "--sign-delay-ms",
                "1",
                "--quota",
                "300",
                "--create-key",
                "ECC_NIST_P384",
                "--alias",
                "alias/agent",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    let [listening, on, addr, key_word, arn] = words.as_slice() else {
        panic!("unexpected line {line:?}");
    };
    assert_eq!((*listening, *on, *key_word), ("listening", "on", "key"));
    assert!(
        arn.starts_with("arn:aws:kms:eu-central-1:111122223333:key/"),
        "{arn}"
    );

    let client = sdk_client(&format!("http://{addr}"), "eu-central-1", true).await;
    let public = client.get_public_key().key_id(*arn).send().await.unwrap();
    let out = client
        .sign()
        .key_id("alias/agent")
        .message(Blob::new(&b"from a process"[..]))
        .message_type(MessageType::Raw)
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha384)
        .send()
        .await
        .unwrap();
    assert_eq!(out.key_id(), Some(*arn));
    verify(
        public.public_key().unwrap().as_ref(),
        "ECC_NIST_P384",
        b"from a process",
        out.signature().unwrap().as_ref(),
    );
}

/// Reads the `listening on` line of a started binary.
async fn first_line(child: &mut Running) -> String {
    let stdout = child.0.stdout.take().unwrap();
    tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_imports_an_rsa_key_from_pkcs8_pem() {
    let dir = std::env::temp_dir().join(format!("kms-standin-binary-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pem = dir.join("rsa.pem");
    std::fs::write(&pem, rsa_pkcs8_pem(3072)).unwrap();
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_kakunin-kms-standin"))
            .args(["--create-key", "ECC_NIST_P256", "--import-key"])
            .arg(&pem)
            .args(["--alias", "alias/first"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let line = first_line(&mut child).await;
    let _ = std::fs::remove_dir_all(&dir);
    let words: Vec<&str> = line.split_whitespace().collect();
    let ["listening", "on", addr, "key", ec_arn, "key", rsa_arn] = words.as_slice() else {
        panic!("unexpected line {line:?}");
    };

    let client = sdk_client(&format!("http://{addr}"), "eu-west-1", true).await;
    let public = client
        .get_public_key()
        .key_id(*rsa_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(public.key_spec().map(|s| s.as_str()), Some("RSA_3072"));
    let out = client
        .sign()
        .key_id(*rsa_arn)
        .message(Blob::new(&b"from a process"[..]))
        .message_type(MessageType::Raw)
        .signing_algorithm(SigningAlgorithmSpec::RsassaPssSha384)
        .send()
        .await
        .unwrap();
    verify_rsa(
        public.public_key().unwrap().as_ref(),
        "RSASSA_PSS_SHA_384",
        b"from a process",
        out.signature().unwrap().as_ref(),
    );
    // The alias names the first key: the created one.
    let aliased = client
        .describe_key()
        .key_id("alias/first")
        .send()
        .await
        .unwrap();
    assert_eq!(aliased.key_metadata().unwrap().arn(), Some(*ec_arn));
}

#[test]
fn binary_refuses_a_file_that_is_not_a_pkcs8_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_kakunin-kms-standin"))
        .args(["--import-key", "/dev/null"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--import-key /dev/null"), "{err}");
}

#[test]
fn binary_refuses_an_unsupported_key_spec() {
    let out = Command::new(env!("CARGO_BIN_EXE_kakunin-kms-standin"))
        .args(["--create-key", "RSA_2048"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("RSA_2048") && err.contains("ECC_NIST_P256"),
        "{err}"
    );
}
