//! The `aws-kms:` key backend against moto's KMS-compatible server: the
//! real binary opens a key that exists only in "KMS", presents its
//! certificate in mutual TLS, signs requests with it, and fails closed when
//! the key or the service goes away. No test reads a private key: there is
//! none to read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::SystemTime;

use common::moto::{aws_env, KmsKey, Moto};
use common::*;
use http::HeaderMap;
use kakunin_verifier::{Outcome, RevocationMode, Verifier, VerifierConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

const TRADE: &str = r#"{"market":"EUR_USD","size":45000}"#;

/// An agent whose key is `key` in moto, and the exchange it trades with:
/// the certificate is issued for the public key KMS reports, and the
/// config names the key by `key_ref` (its ARN unless a test says otherwise).
struct KmsAgent {
    pki: Pki,
    exchange: kakunin::demo::exchange::Exchange,
    cert_der: Vec<u8>,
    endpoint: String,
}

impl KmsAgent {
    async fn new(moto: &Moto, key: &KmsKey) -> KmsAgent {
        let pki = Pki::new();
        let exchange = pki.exchange().await;
        let public = pki.path("agent-public.pem");
        std::fs::write(&public, moto.public_key_pem(key)).unwrap();
        std::fs::write(pki.path("policy.json"), POLICY).unwrap();
        let cert = pki.path("agent.pem");
        pki.ca(&[
            "issue",
            "--agent-id",
            "trading_bot_v2",
            "--policy",
            pki.path("policy.json").to_str().unwrap(),
            "--public-key",
            public.to_str().unwrap(),
            "--out",
            cert.to_str().unwrap(),
        ]);
        let cert_der = CertificateDer::from_pem_file(&cert).unwrap().to_vec();
        KmsAgent {
            pki,
            exchange,
            cert_der,
            endpoint: moto.endpoint(),
        }
    }

    /// A config naming the key by `key_ref`, with `identity` lines added to
    /// its [identity] section.
    fn config(&self, key_ref: &str, identity: &str) -> std::path::PathBuf {
        self.pki.write_config_for_key(
            &self.pki.path("policy.json"),
            &self.pki.path("agent.pem"),
            &format!("aws-kms:{key_ref}"),
            self.exchange.addr(),
            "metrics_listen = \"127.0.0.1:0\"",
            &format!("kms_endpoint = \"{}\"\n{identity}", self.endpoint),
        )
    }

    fn start(&self, key_ref: &str) -> ProxyProcess {
        ProxyProcess::try_start(&self.config(key_ref, ""), &[], &aws_env())
            .unwrap_or_else(|stderr| panic!("proxy did not start:\n{stderr}"))
    }

    /// The start's failure: the proxy's stderr.
    fn refused_start(&self, key_ref: &str, identity: &str) -> String {
        match ProxyProcess::try_start(&self.config(key_ref, identity), &[], &aws_env()) {
            Ok(_) => panic!("the proxy started with aws-kms:{key_ref}"),
            Err(stderr) => stderr,
        }
    }
}

fn trade(proxy: &ProxyProcess) -> Answer {
    curl(
        proxy,
        &[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "--data",
            TRADE,
            "http://api.exchange.com/v1/trades",
        ],
    )
}

/// Checks the exchange's echo of a signed request with kakunin-verifier,
/// against the agents' CA, as a receiver would.
fn verify_echo(agent: &KmsAgent, answer: &Answer) {
    let echo = answer.json();
    let mut headers = HeaderMap::new();
    for (name, value) in echo["headers"].as_object().unwrap() {
        headers.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.as_str().unwrap().parse().unwrap(),
        );
    }
    assert!(headers.contains_key("signature"), "not signed: {echo}");
    let anchor = CertificateDer::from_pem_slice(agent.pki.agents_ca.certificate_pem().as_bytes())
        .unwrap()
        .into_owned();
    let mut config = VerifierConfig::new(vec![anchor]);
    config.revocation = RevocationMode::Off;
    let verifier = Verifier::new(config).unwrap();
    let chain = [CertificateDer::from(agent.cert_der.clone())];
    let request = kakunin_verifier::Request {
        method: echo["method"].as_str().unwrap(),
        scheme: "https",
        authority: headers["host"].to_str().unwrap(),
        path_and_query: echo["path"].as_str().unwrap(),
        headers: &headers,
        body: echo["body"].as_str().unwrap().as_bytes(),
        peer_chain: &chain,
    };
    match verifier.verify(&request, SystemTime::now()) {
        Outcome::Accepted(verdict) => assert_eq!(verdict.agent.agent_id, "trading_bot_v2"),
        other => panic!("the verifier refused the KMS-signed request: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kms_key_completes_mutual_tls_and_signs_requests_the_verifier_accepts() {
    let moto = Moto::start();
    // RSA keys are left out here: moto signs RSASSA-PSS with the largest
    // salt, where KMS (and TLS 1.3, RFC 8446 4.2.3) use the digest's length,
    // so no TLS peer accepts moto's RSA signatures. The RSA path is tested
    // against the KMS stand-in (kms_standin.rs), which signs as KMS does.
    for spec in ["ECC_NIST_P256", "ECC_NIST_P384"] {
        let key = moto.create_key(spec);
        let agent = KmsAgent::new(&moto, &key).await;
        let proxy = agent.start(&key.arn);

        let answer = trade(&proxy);
        assert_eq!(answer.status, 200, "{spec}: {}", answer.body);
        assert_eq!(agent.exchange.handshakes(), 1, "{spec}");
        verify_echo(&agent, &answer);

        // One handshake and one request signature so far: two KMS calls.
        let calls = proxy.metric(r#"kakunin_key_sign_calls_total{backend="aws-kms"}"#);
        assert_eq!(calls, 2.0, "{spec}: {}", proxy.metrics());
        assert_eq!(
            proxy.metric(r#"kakunin_key_sign_duration_seconds_count{backend="aws-kms"}"#),
            2.0
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alias_arn_names_the_key_too() {
    let moto = Moto::start();
    let key = moto.create_key("ECC_NIST_P256");
    let alias = moto.alias(&key, "trading-bot");
    let agent = KmsAgent::new(&moto, &key).await;
    let proxy = agent.start(&alias);
    let answer = trade(&proxy);
    assert_eq!(answer.status, 200, "{}", answer.body);
    verify_echo(&agent, &answer);
}

/// Each way a key can be unusable at start stops the proxy with KMS's
/// reason, before it listens.
#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_key_stops_the_start_with_a_clear_reason() {
    let moto = Moto::start();

    let disabled = moto.create_key("ECC_NIST_P256");
    let agent = KmsAgent::new(&moto, &disabled).await;
    moto.disable(&disabled);
    let err = agent.refused_start(&disabled.arn, "");
    assert!(err.contains("Disabled"), "{err}");

    let deleted = moto.create_key("ECC_NIST_P256");
    let agent = KmsAgent::new(&moto, &deleted).await;
    moto.schedule_deletion(&deleted);
    let err = agent.refused_start(&deleted.arn, "");
    assert!(err.contains("PendingDeletion"), "{err}");

    let key = moto.create_key("ECC_NIST_P256");
    let agent = KmsAgent::new(&moto, &key).await;
    // A key id that does not exist.
    let err = agent.refused_start(
        "arn:aws:kms:eu-west-1:123456789012:key/0b8a9e0e-0000-4000-8000-000000000000",
        "",
    );
    assert!(err.contains("NotFoundException"), "{err}");

    // A key that exists, but is not the certificate's.
    let other = moto.create_key("ECC_NIST_P256");
    let err = agent.refused_start(&other.arn, "");
    assert!(err.contains("does not match key aws-kms:"), "{err}");

    // Nothing listens at the endpoint.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let unreachable = KmsAgent {
        endpoint: dead,
        ..agent
    };
    let err = unreachable.refused_start(&key.arn, "sign_deadline_ms = 1000");
    assert!(err.contains("cannot be reached"), "{err}");
    assert_eq!(unreachable.exchange.requests(), 0);
}

/// KMS going away while the proxy runs: the next request that needs a
/// signature, and the next handshake, get 503 signer_unavailable, and the
/// exchange sees nothing more. (moto does not refuse Sign for a disabled
/// key, so a key disabled at run time is tested against the KMS stand-in.)
#[tokio::test(flavor = "multi_thread")]
async fn kms_unreachable_at_run_time_fails_closed_with_503() {
    let mut moto = Moto::start();
    let key = moto.create_key("ECC_NIST_P256");
    let agent = KmsAgent::new(&moto, &key).await;
    let config = agent.config(&key.arn, "sign_deadline_ms = 1000\nsign_attempts = 2");
    let proxy = ProxyProcess::try_start(&config, &[], &aws_env()).unwrap();
    assert_eq!(trade(&proxy).status, 200);
    let before = agent.exchange.requests();

    moto.stop();
    // A signed request over the pooled connection: the request signature
    // fails.
    let refused = trade(&proxy);
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(
        refused.json()["code"],
        "signer_unavailable",
        "{}",
        refused.body
    );
    // An unsigned GET to a host with no pooled connection: the handshake's
    // signature fails.
    let refused = curl(&proxy, &["http://market-data.provider.com/v1/prices"]);
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(
        refused.json()["code"],
        "signer_unavailable",
        "{}",
        refused.body
    );
    assert_eq!(
        agent.exchange.requests(),
        before,
        "something went out unsigned"
    );
    assert_eq!(agent.exchange.handshakes(), 1);
    assert_eq!(
        proxy.metric(r#"kakunin_key_sign_errors_total{backend="aws-kms",kind="unreachable"}"#),
        2.0,
        "{}",
        proxy.metrics()
    );
}
