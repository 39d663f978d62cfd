//! The agent's key in each supported form, made by openssl (not by us),
//! certified with `ca issue --public-key`, presented in a real mTLS handshake;
//! and TLS 1.2 upstreams.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use kakunin::demo::exchange::{Exchange, ExchangeTls};

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Certifies the public half of `key` for the POLICY agent.
fn certify(pki: &Pki, key: &Path, name: &str) -> std::path::PathBuf {
    let public = pki.path(&format!("{name}.pub.pem"));
    openssl(&[
        "pkey",
        "-in",
        key.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    let cert = pki.path(&format!("{name}.pem"));
    let out = Command::new(kakunin_bin())
        .args(["ca", "issue", "--dir"])
        .arg(pki.path("agents-ca"))
        .args(["--agent-id", "trading_bot_v2", "--policy"])
        .arg(pki.path("policy.json"))
        .arg("--public-key")
        .arg(&public)
        .arg("--out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cert
}

#[tokio::test(flavor = "multi_thread")]
async fn each_key_type_completes_mutual_tls() {
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    std::fs::write(pki.path("policy.json"), POLICY).unwrap();
    let key = |name: &str| pki.path(name).to_str().unwrap().to_string();
    // SEC1 ("EC PRIVATE KEY"), PKCS#8 and PKCS#1 ("RSA PRIVATE KEY").
    openssl(&[
        "ecparam",
        "-name",
        "secp384r1",
        "-genkey",
        "-noout",
        "-out",
        &key("p384-sec1.key"),
    ]);
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &key("p256-pkcs8.key"),
    ]);
    openssl(&[
        "genrsa",
        "-traditional",
        "-out",
        &key("rsa-pkcs1.key"),
        "2048",
    ]);
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:3072",
        "-out",
        &key("rsa-pkcs8.key"),
    ]);
    for name in ["p384-sec1", "p256-pkcs8", "rsa-pkcs1", "rsa-pkcs8"] {
        let key_path = pki.path(&format!("{name}.key"));
        let cert = certify(&pki, &key_path, name);
        let config = pki.write_config(
            &pki.path("policy.json"),
            &cert,
            &key_path,
            exchange.addr(),
            "",
        );
        let proxy = ProxyProcess::start(&config);
        let answer = curl(&proxy, &["http://api.exchange.com/v1/markets"]);
        assert_eq!(answer.status, 200, "{name}: {}", answer.body);
        assert_eq!(answer.json()["client_cert_cn"], "trading_bot_v2", "{name}");
    }
    assert_eq!(exchange.failed_handshakes(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_for_another_key_is_refused_at_start() {
    let pki = Pki::new();
    std::fs::write(pki.path("policy.json"), POLICY).unwrap();
    let key = pki.path("other.key");
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        key.to_str().unwrap(),
    ]);
    let cert = certify(&pki, &key, "agent-for-other");
    let (_, _, our_key) = pki.agent(POLICY);
    let config = pki.write_config(
        &pki.path("policy.json"),
        &cert,
        &our_key,
        "127.0.0.1:9".parse().unwrap(),
        "",
    );
    let out = Command::new(kakunin_bin())
        .arg("proxy")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not match key"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls12_only_upstream_is_reached() {
    let pki = Pki::new();
    let exchange = Exchange::start(
        "127.0.0.1:0".parse().unwrap(),
        &ExchangeTls {
            server_chain_pem: &pki.server_cert,
            server_key_pem: &pki.server_key,
            client_ca_pem: pki.agents_ca.certificate_pem(),
            tls12_only: true,
        },
    )
    .await
    .unwrap();
    let proxy = ProxyProcess::start(&pki.config(POLICY, exchange.addr(), ""));
    let answer = curl(&proxy, &["http://api.exchange.com/v1/markets"]);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["client_cert_cn"], "trading_bot_v2");
}
