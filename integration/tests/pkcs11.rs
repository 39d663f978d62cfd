//! The `pkcs11:` key backend through the real binary, against SoftHSM2: the
//! key is generated inside a token, its public key is certified by the CA,
//! and the proxy presents that certificate in mutual TLS and signs requests
//! with the token. Fails (does not skip) when SoftHSM2 is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use common::softhsm::{softhsm, KeyKind, Token};
use common::*;

const TRADE: &str = r#"{"market":"EUR_USD","size":45000}"#;

/// POLICY with room for the parallel test's concurrent trades.
const PARALLEL_POLICY: &str = r#"{
  "agent_id": "trading_bot_v2",
  "execution_constraints": { "allowed_regions": ["eu-west-1"], "max_concurrent_trades": 64 },
  "network_rules": { "allowed_hosts": ["api.exchange.com", "market-data.provider.com"] },
  "actions": [{
    "name": "submit_trade",
    "match": { "method": "POST", "path": "/v1/trades" },
    "body": { "/market": { "in": ["EUR_USD", "GBP_USD"] }, "/size": { "max": 50000 } }
  }]
}"#;

/// The SubjectPublicKeyInfo of an EC or Ed25519 key, built here from the
/// token's CKA_EC_POINT (not by the backend under test): the fixed DER
/// head for the curve, then the point.
fn spki_from_point(kind: KeyKind, ec_point: &[u8]) -> Option<Vec<u8>> {
    let (head, len): (&str, usize) = match kind {
        KeyKind::P256 => ("3059301306072a8648ce3d020106082a8648ce3d030107034200", 65),
        KeyKind::P384 => ("3076301006072a8648ce3d020106052b81040022036200", 97),
        KeyKind::Ed25519 => ("302a300506032b6570032100", 32),
        KeyKind::Rsa2048 => return None,
    };
    let head: Vec<u8> = (0..head.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&head[i..i + 2], 16).unwrap())
        .collect();
    // The point is the value's tail, whether or not the token wrapped it in
    // a DER OCTET STRING.
    let point = &ec_point[ec_point.len() - len..];
    Some([head, point.to_vec()].concat())
}

/// An agent whose key lives in a SoftHSM token, certified by the agents'
/// CA, and the exchange (mTLS, client certificate required) it trades with.
struct HsmAgent {
    pki: Pki,
    exchange: kakunin::demo::exchange::Exchange,
    token: Token,
    uri: String,
    cert_der: Vec<u8>,
}

impl HsmAgent {
    async fn new(kind: KeyKind, policy: &str) -> HsmAgent {
        let token = softhsm().token();
        let public = token.generate(kind, "agent", &[0x4b, 0x01]);
        let uri = token.uri("object=agent;id=%4B%01");
        // The backend's reading of the public key, checked against ours.
        let spki = kakunin_signer::open_key(&uri)
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"))
            .public_key_spki()
            .to_vec();
        if let Some(expected) = spki_from_point(kind, &public) {
            assert_eq!(
                spki, expected,
                "{kind:?}: the backend read another public key"
            );
        }
        let pki = Pki::new();
        let exchange = pki.exchange().await;
        let cert_der = pki.certify_public_key(policy, &spki);
        HsmAgent {
            pki,
            exchange,
            token,
            uri,
            cert_der,
        }
    }

    fn config(&self, key_ref: &str, identity: &str) -> PathBuf {
        self.pki.write_config_for_key(
            &self.pki.path("policy.json"),
            &self.pki.path("agent.pem"),
            key_ref,
            self.exchange.addr(),
            "metrics_listen = \"127.0.0.1:0\"",
            identity,
        )
    }

    /// The proxy inherits SOFTHSM2_CONF, so it sees the same tokens.
    fn start(&self, identity: &str) -> ProxyProcess {
        ProxyProcess::try_start(&self.config(&self.uri, identity), &[], &[])
            .unwrap_or_else(|stderr| panic!("proxy did not start:\n{stderr}"))
    }

    fn refused_start(&self, key_ref: &str) -> String {
        match ProxyProcess::try_start(&self.config(key_ref, ""), &[], &[]) {
            Ok(_) => panic!("the proxy started with {key_ref}"),
            Err(stderr) => stderr,
        }
    }
}

fn trade_args() -> Vec<String> {
    [
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "--data",
        TRADE,
        "http://api.exchange.com/v1/trades",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Checks the exchange's echo of a signed request with kakunin-verifier,
/// against the agents' CA, as a receiver would.
fn verify_echo(agent: &HsmAgent, answer: &Answer) {
    verify_signed_echo(&agent.pki, &agent.cert_der, answer);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_token_key_type_completes_mutual_tls_and_signs_what_the_verifier_accepts() {
    for kind in [
        KeyKind::P256,
        KeyKind::P384,
        KeyKind::Rsa2048,
        KeyKind::Ed25519,
    ] {
        let agent = HsmAgent::new(kind, POLICY).await;
        let proxy = agent.start("");
        let answer = curl_async(proxy.url(), trade_args()).await;
        verify_echo(&agent, &answer);
        // The exchange requires a client certificate: the handshake it
        // completed was signed by the token.
        assert_eq!(agent.exchange.handshakes(), 1, "{kind:?}");
        assert_eq!(agent.exchange.failed_handshakes(), 0, "{kind:?}");
        // One handshake and one request signature: two calls to the token.
        let calls = proxy.metric(r#"kakunin_key_sign_calls_total{backend="pkcs11"}"#);
        assert_eq!(calls, 2.0, "{kind:?}: {}", proxy.metrics());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_four_concurrent_trades_are_all_signed_by_the_token_and_verified() {
    let agent = HsmAgent::new(KeyKind::P256, PARALLEL_POLICY).await;
    // Fewer sessions than requests, so signatures queue for a session.
    let proxy = agent.start("pkcs11_sessions = 2");
    let answers = futures_join(
        (0..24)
            .map(|_| tokio::spawn(curl_async(proxy.url(), trade_args())))
            .collect(),
    )
    .await;
    for answer in &answers {
        verify_echo(&agent, answer);
    }
    assert_eq!(agent.exchange.requests(), 24);
    assert_eq!(agent.exchange.failed_handshakes(), 0);
    // Each request signature and each upstream handshake was one signature
    // by the token, and none failed.
    let calls = proxy.metric(r#"kakunin_key_sign_calls_total{backend="pkcs11"}"#);
    assert!(calls >= 25.0, "{}", proxy.metrics());
    let errors: f64 = proxy
        .metrics()
        .lines()
        .filter(|l| l.starts_with("kakunin_key_sign_errors_total{backend=\"pkcs11\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(errors, 0.0, "{}", proxy.metrics());
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<Answer>>) -> Vec<Answer> {
    let mut answers = Vec::with_capacity(handles.len());
    for handle in handles {
        answers.push(handle.await.unwrap());
    }
    answers
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_pkcs11_reference_stops_the_start_with_its_reason() {
    let agent = HsmAgent::new(KeyKind::P256, POLICY).await;

    let err = agent.refused_start(&agent.uri.replace("object=agent", "object=nobody"));
    assert!(err.contains("no private key matches"), "{err}");

    let err = agent.refused_start(
        &agent
            .uri
            .replace(&format!("token={}", agent.token.label), "token=absent"),
    );
    assert!(err.contains("no token matches"), "{err}");

    let wrong = agent.pki.path("wrong.pin");
    std::fs::write(&wrong, "0000\n").unwrap();
    let err = agent.refused_start(&agent.uri.replace(
        &format!("file:{}", agent.token.pin_file.display()),
        &format!("file:{}", wrong.display()),
    ));
    assert!(err.contains("wrong PIN"), "{err}");

    // A second key in the same token that the certificate is not for.
    agent.token.generate(KeyKind::P256, "other", &[0x4b, 0x02]);
    let other = agent.uri.replace("object=agent;id=%4B%01", "object=other");
    let err = agent.refused_start(&other);
    assert!(err.contains("does not match key pkcs11:"), "{err}");

    assert_eq!(agent.exchange.requests(), 0);
}
