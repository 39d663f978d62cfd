//! The `aws-kms:` key backend against moto's KMS-compatible server: the
//! real binary opens a key that exists only in "KMS", presents its
//! certificate in mutual TLS, signs requests with it, and fails closed when
//! the key or the service goes away. No test reads a private key: there is
//! none to read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::kms::{trade, KmsAgent};
use common::moto::Moto;
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_kms_key_completes_mutual_tls_and_signs_requests_the_verifier_accepts() {
    let moto = Moto::start();
    // RSA keys are left out here: moto signs RSASSA-PSS with the largest
    // salt, where KMS (and TLS 1.3, RFC 8446 4.2.3) use the digest's length,
    // so no TLS peer accepts moto's RSA signatures. The RSA path is tested
    // against the KMS stand-in (kms_standin.rs), which signs as KMS does.
    for spec in ["ECC_NIST_P256", "ECC_NIST_P384"] {
        let key = moto.create_key(spec);
        let agent = KmsAgent::new(&moto, &key, moto.endpoint()).await;
        let proxy = agent.start(&key.arn, "");

        let answer = trade(&proxy);
        assert_eq!(answer.status, 200, "{spec}: {}", answer.body);
        assert_eq!(agent.exchange.handshakes(), 1, "{spec}");
        agent.verify_echo(&answer);

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
    let agent = KmsAgent::new(&moto, &key, moto.endpoint()).await;
    let proxy = agent.start(&alias, "");
    let answer = trade(&proxy);
    assert_eq!(answer.status, 200, "{}", answer.body);
    agent.verify_echo(&answer);
}

/// Each way a key can be unusable at start stops the proxy with KMS's
/// reason, before it listens.
#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_key_stops_the_start_with_a_clear_reason() {
    let moto = Moto::start();

    let disabled = moto.create_key("ECC_NIST_P256");
    let agent = KmsAgent::new(&moto, &disabled, moto.endpoint()).await;
    moto.disable(&disabled);
    let err = agent.refused_start(&disabled.arn, "");
    assert!(err.contains("Disabled"), "{err}");

    let deleted = moto.create_key("ECC_NIST_P256");
    let agent = KmsAgent::new(&moto, &deleted, moto.endpoint()).await;
    moto.schedule_deletion(&deleted);
    let err = agent.refused_start(&deleted.arn, "");
    assert!(err.contains("PendingDeletion"), "{err}");

    let key = moto.create_key("ECC_NIST_P256");
    let agent = KmsAgent::new(&moto, &key, moto.endpoint()).await;
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
    let agent = KmsAgent::new(&moto, &key, moto.endpoint()).await;
    let proxy = agent.start(&key.arn, "sign_deadline_ms = 1000\nsign_attempts = 2");
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
