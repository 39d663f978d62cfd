//! The `aws-kms:` key backend against the KMS stand-in (kms-standin/),
//! where moto cannot serve: a KMS that is slow (a Sign held for as long as
//! the test wants), one that throttles, and a key disabled while the proxy
//! runs; and an RSA key, whose RSASSA-PSS signatures moto makes with a salt
//! no TLS peer accepts. The real binary and the real AWS SDK on both sides.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::kms::{aws_env, trade, KmsAdmin, KmsAgent, KmsKey};
use common::*;
use kakunin_kms_standin::{KeySpec, Settings, Standin};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivatePkcs8KeyDer;

/// A stand-in with one P-256 key, its admin client and an agent for it.
async fn standin_agent() -> (Standin, KmsAdmin, KmsKey, KmsAgent) {
    standin_agent_with(POLICY).await
}

/// As `standin_agent`, with the agent certified for `policy`.
async fn standin_agent_with(policy: &str) -> (Standin, KmsAdmin, KmsKey, KmsAgent) {
    let standin = Standin::start(Settings::default()).await.unwrap();
    let made = standin.create_key(KeySpec::EccNistP256).unwrap();
    let key = KmsKey {
        id: made.key_id,
        arn: made.arn,
    };
    let admin = KmsAdmin::new(&standin.endpoint_url());
    let agent = KmsAgent::with_policy(&admin, &key, standin.endpoint_url(), policy).await;
    (standin, admin, key, agent)
}

/// Waits (a minute at most) until `count` Sign calls are held inside the
/// stand-in.
async fn until_held(standin: &Standin, count: u64, failure: &str) {
    let mut polls = 0;
    while standin.stats().sign_in_flight < count {
        polls += 1;
        assert!(
            polls < 3000,
            "only {} of {count} signatures reached KMS{failure}",
            standin.stats().sign_in_flight
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fresh RSA-2048 private key as PKCS#8 DER, from the `openssl` CLI
/// (ring, which the stand-in signs with, cannot generate RSA keys).
fn openssl_rsa_2048_pkcs8() -> Vec<u8> {
    // PEM and then its DER: OpenSSL 3.0's `genpkey -outform DER` writes the
    // traditional PKCS#1 form, where its PEM output is PKCS#8.
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("the openssl CLI runs");
    assert!(
        out.status.success(),
        "openssl genpkey: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PrivatePkcs8KeyDer::from_pem_slice(&out.stdout)
        .expect("openssl wrote a PKCS#8 PEM")
        .secret_pkcs8_der()
        .to_vec()
}

fn get(proxy: &ProxyProcess, url: &str) -> tokio::task::JoinHandle<Answer> {
    tokio::spawn(curl_async(proxy.url(), vec![url.to_string()]))
}

fn post_trade(proxy: &ProxyProcess) -> tokio::task::JoinHandle<Answer> {
    tokio::spawn(curl_async(
        proxy.url(),
        [
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "--data",
            common::kms::TRADE,
            "http://api.exchange.com/v1/trades",
        ]
        .map(String::from)
        .to_vec(),
    ))
}

/// KMS stops answering Sign (held by the stand-in) while handshakes and
/// request signatures wait for it, more of them than the proxy has worker
/// threads. A request that needs no new signature (an unsigned GET over the
/// pooled connection) still completes while they wait; releasing KMS
/// completes them too.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_kms_delays_only_the_requests_that_wait_for_it() {
    let (standin, _admin, key, agent) = standin_agent().await;
    let proxy = agent.start(&key.arn, "sign_deadline_ms = 120000");
    // The pooled connection to the exchange: one handshake, one signature.
    let warm = get(&proxy, "http://api.exchange.com/v1/prices")
        .await
        .unwrap();
    assert_eq!(warm.status, 200, "{}", warm.body);
    let signs_before = standin.stats().sign_accepted;

    // Hold every Sign: the stand-in applies a delay change to calls
    // already waiting, so lowering it later releases them.
    standin.set_sign_delay(Duration::from_secs(3600));
    let mut waiting = Vec::new();
    for _ in 0..4 {
        // A signed trade: its request signature waits.
        waiting.push(post_trade(&proxy));
        // A new host: its handshake's signature waits.
        waiting.push(get(&proxy, "http://market-data.provider.com/v1/prices"));
    }
    // All eight are inside the stand-in before the check below. Were a
    // waiting handshake to hold a proxy worker, the proxy would stall here
    // with fewer: that is the failure this test is for.
    until_held(&standin, 8, ": the proxy stalled behind the held ones").await;

    for _ in 0..3 {
        let quick = get(&proxy, "http://api.exchange.com/v1/prices")
            .await
            .unwrap();
        assert_eq!(quick.status, 200, "{}", quick.body);
    }
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "a request that waits for KMS finished while KMS was held"
    );
    assert_eq!(standin.stats().sign_accepted, signs_before);

    standin.set_sign_delay(Duration::ZERO);
    for answer in waiting {
        let answer = answer.await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    // The eight held, and the handshakes of any new connections the
    // released trades needed (how many depends on how they interleave).
    assert!(standin.stats().sign_accepted >= signs_before + 8);
}

/// Request signatures held in KMS are awaited, not waited on by threads:
/// 32 trades whose Sign the stand-in holds add no threads to the proxy (a
/// thread each, as a blocking wait would take, is 32 stacks and as many
/// malloc arenas), and all complete once KMS answers.
#[tokio::test(flavor = "multi_thread")]
async fn held_kms_signatures_cost_no_threads() {
    // The seed's policy allows 5 trades in flight; this test holds 32.
    let policy = POLICY.replace(r#", "max_concurrent_trades": 5"#, "");
    assert_ne!(policy, POLICY);
    let (standin, _admin, key, agent) = standin_agent_with(&policy).await;
    let proxy = agent.start(&key.arn, "sign_deadline_ms = 120000");
    // Pool one connection first, so the held trades need no handshake.
    let warm = get(&proxy, "http://api.exchange.com/v1/prices")
        .await
        .unwrap();
    assert_eq!(warm.status, 200, "{}", warm.body);
    let threads_before = proxy.threads();

    standin.set_sign_delay(Duration::from_secs(3600));
    let trades: Vec<_> = (0..32).map(|_| post_trade(&proxy)).collect();
    until_held(&standin, 32, "").await;
    let threads_held = proxy.threads();
    // A little slack for the runtime's own housekeeping, far below 32.
    assert!(
        threads_held <= threads_before + 4,
        "{threads_held} threads with 32 signatures held in KMS, {threads_before} before"
    );

    standin.set_sign_delay(Duration::ZERO);
    for trade in trades {
        let answer = trade.await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
}

/// With batch signatures, trades that wait for KMS together share one Sign:
/// with the proxy's two batches held in KMS, every other trade queues and
/// goes out under one more Sign, and each verifies on its own. (Without
/// batching this is 32 Sign calls, and 32 shares of the key's quota.)
#[tokio::test(flavor = "multi_thread")]
async fn batched_trades_share_kms_sign_calls() {
    let policy = POLICY.replace(r#", "max_concurrent_trades": 5"#, "");
    let (standin, _admin, key, agent) = standin_agent_with(&policy).await;
    let config = agent.config(&key.arn, "sign_deadline_ms = 120000");
    let proxy = ProxyProcess::try_start(&config, &["--signing-batch", "true"], &aws_env())
        .unwrap_or_else(|stderr| panic!("proxy did not start:\n{stderr}"));
    let warm = get(&proxy, "http://api.exchange.com/v1/prices")
        .await
        .unwrap();
    assert_eq!(warm.status, 200, "{}", warm.body);
    standin.set_sign_delay(Duration::from_secs(3600));
    let mut trades = vec![post_trade(&proxy)];
    until_held(&standin, 1, "").await;
    trades.push(post_trade(&proxy));
    until_held(&standin, 2, "").await;
    trades.extend((0..30).map(|_| post_trade(&proxy)));
    let waiting = "kakunin_request_signature_batch_waiting";
    let mut polls = 0;
    while proxy.metric(waiting) < 32.0 {
        polls += 1;
        assert!(polls < 3000, "{}", proxy.metrics());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(standin.stats().sign_in_flight, 2, "two batches at a time");

    standin.set_sign_delay(Duration::ZERO);
    for trade in trades {
        agent.verify_echo(&trade.await.unwrap());
    }
    // Three request signatures (the stand-in also signed the TLS
    // handshakes of the upstream connections the 32 trades opened, so its
    // own count is not the batches').
    assert_eq!(
        proxy.metric("kakunin_request_signature_batch_size_count"),
        3.0
    );
    assert_eq!(
        proxy.metric("kakunin_request_signature_batch_size_sum"),
        32.0
    );
    assert_eq!(proxy.metric(waiting), 0.0);
}

/// A Sign that outlasts the deadline fails the request closed, and the
/// ones that need no signature are untouched.
#[tokio::test(flavor = "multi_thread")]
async fn a_signature_past_its_deadline_is_a_503_and_nothing_goes_out() {
    let (standin, _admin, key, agent) = standin_agent().await;
    let proxy = agent.start(&key.arn, "sign_deadline_ms = 500\nsign_attempts = 1");
    assert_eq!(trade(&proxy).status, 200);
    let before = agent.exchange.requests();

    standin.set_sign_delay(Duration::from_secs(3600));
    let refused = trade(&proxy);
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.json()["code"], "signer_unavailable");
    assert_eq!(
        agent.exchange.requests(),
        before,
        "an unsigned trade went out"
    );
    let read = curl(&proxy, &["http://api.exchange.com/v1/prices"]);
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(
        proxy.metric(r#"kakunin_key_sign_errors_total{backend="aws-kms",kind="timeout"}"#),
        1.0,
        "{}",
        proxy.metrics()
    );
    standin.set_sign_delay(Duration::ZERO);
}

/// Over KMS's request quota: the SDK retries a bounded number of times,
/// then the request gets 503 and is not forwarded.
#[tokio::test(flavor = "multi_thread")]
async fn throttling_past_the_retries_is_a_503() {
    let (standin, _admin, key, agent) = standin_agent().await;
    let proxy = agent.start(&key.arn, "sign_attempts = 2");
    assert_eq!(trade(&proxy).status, 200);
    let before = agent.exchange.requests();
    let throttled_before = standin.stats().sign_throttled;

    standin.set_quota(Some(0));
    let refused = trade(&proxy);
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.json()["code"], "signer_unavailable");
    assert_eq!(agent.exchange.requests(), before);
    // Both attempts reached KMS, and no more.
    assert_eq!(standin.stats().sign_throttled - throttled_before, 2);
    assert_eq!(
        proxy.metric(r#"kakunin_key_sign_errors_total{backend="aws-kms",kind="throttled"}"#),
        1.0,
        "{}",
        proxy.metrics()
    );

    standin.set_quota(None);
    assert_eq!(trade(&proxy).status, 200);
}

/// A key disabled while the proxy runs: the next signature is refused by
/// KMS, the request gets 503, and nothing goes out.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_disabled_at_run_time_fails_closed_with_503() {
    let (_standin, admin, key, agent) = standin_agent().await;
    let proxy = agent.start(&key.arn, "");
    assert_eq!(trade(&proxy).status, 200);
    let before = agent.exchange.requests();

    admin.disable(&key);
    let refused = trade(&proxy);
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.json()["code"], "signer_unavailable");
    let refused = curl(&proxy, &["http://market-data.provider.com/v1/prices"]);
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(
        agent.exchange.requests(),
        before,
        "something went out unsigned"
    );
    assert_eq!(
        proxy.metric(r#"kakunin_key_sign_errors_total{backend="aws-kms",kind="refused"}"#),
        2.0,
        "{}",
        proxy.metrics()
    );
}

/// An RSA key in "KMS": the exchange requires a client certificate, so the
/// trade's TLS 1.3 handshake is signed by KMS with RSASSA-PSS (a salt as
/// long as the digest, which the exchange's TLS stack insists on), and its
/// request signature is `rsa-pss-sha512`, again made by KMS.
#[tokio::test(flavor = "multi_thread")]
async fn an_rsa_kms_key_completes_tls13_and_signs_requests() {
    let standin = Standin::start(Settings::default()).await.unwrap();
    // The key material is made here only because the stand-in plays KMS's
    // HSM and cannot generate RSA keys itself: it goes into the stand-in and
    // nowhere else. The proxy gets the key's ARN and never sees the key.
    let made = standin.import_key(&openssl_rsa_2048_pkcs8()).unwrap();
    assert_eq!(made.spec, KeySpec::Rsa2048);
    let key = KmsKey {
        id: made.key_id,
        arn: made.arn,
    };
    let admin = KmsAdmin::new(&standin.endpoint_url());
    let agent = KmsAgent::new(&admin, &key, standin.endpoint_url()).await;
    let proxy = agent.start(&key.arn, "");

    let answer = trade(&proxy);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(agent.exchange.handshakes(), 1);
    assert_eq!(answer.json()["client_cert_cn"], "trading_bot_v2");
    agent.verify_echo(&answer);
    let echo = answer.json();
    let input = echo["headers"]["signature-input"].as_str().unwrap_or("");
    assert!(
        input.contains("alg=\"rsa-pss-sha512\""),
        "request signature algorithm: {echo}"
    );

    // One handshake and one request signature: two KMS calls, both made by
    // the stand-in.
    assert_eq!(
        proxy.metric(r#"kakunin_key_sign_calls_total{backend="aws-kms"}"#),
        2.0,
        "{}",
        proxy.metrics()
    );
    assert_eq!(standin.stats().sign_accepted, 2);
}
