//! The proxy's revocation gate against the real responder (`ca serve`,
//! in-process) and the real `kakunin ca revoke`: stapling, halting on
//! revocation with and without the watch stream, and a responder outage
//! with fail_open false and true.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;

const TRADE: &str = r#"{"market":"EUR_USD","size":100}"#;
/// Config lines for tests that must not learn of revocations by the stream.
const WATCH_OFF: &str = "[revocation]\nwatch_url = \"off\"\n";

fn policy_with(revocation: &str) -> String {
    POLICY.replacen(
        '{',
        &format!("{{\n  \"revocation_check\": {revocation},"),
        1,
    )
}

fn trade(proxy: &ProxyProcess) -> Answer {
    post_json(proxy, "http://api.exchange.com/v1/trades", TRADE)
}

/// Trades until one is refused (or `limit` passes); the refusal.
fn trade_until_refused(proxy: &ProxyProcess, limit: Duration) -> Answer {
    let started = Instant::now();
    loop {
        let answer = trade(proxy);
        if answer.status != 200 || started.elapsed() > limit {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstream_gets_a_stapled_good_response_that_openssl_accepts() {
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    let config = pki.config(POLICY, exchange.addr(), "");
    let proxy = ProxyProcess::start(&config);
    let answer = curl_async(
        proxy.url(),
        [
            "-X",
            "POST",
            "--data",
            TRADE,
            "http://api.exchange.com/v1/trades",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let echoed = answer.json();
    let staple = echoed["headers"]["x-agent-ocsp"]
        .as_str()
        .expect("X-Agent-OCSP reaches the upstream");
    let der = base64::engine::general_purpose::STANDARD
        .decode(staple)
        .unwrap();
    let staple_path = pki.path("staple.der");
    std::fs::write(&staple_path, der).unwrap();
    let output = std::process::Command::new("openssl")
        // -no_nonce: with -cert, openssl builds a request of its own (with a
        // fresh nonce) and would compare against that, not the proxy's.
        .args(["ocsp", "-no_nonce", "-respin"])
        .arg(&staple_path)
        .arg("-issuer")
        .arg(pki.agents_ca.certificate_path())
        .arg("-cert")
        .arg(pki.path("agent.pem"))
        .arg("-CAfile")
        .arg(pki.agents_ca.certificate_path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("Response verify OK"), "{text}");
    assert!(text.contains("agent.pem: good"), "{text}");
    let decided = pki.audit_events("action.decided");
    assert_eq!(decided[0]["revocation"], "good", "{decided:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revocation_halts_the_identity_within_the_ttl_without_the_watch_stream() {
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    let policy = policy_with(r#"{"enabled": true, "cache_ttl_seconds": 1, "fail_open": false}"#);
    let config = pki.config(&policy, exchange.addr(), WATCH_OFF);
    let proxy = tokio::task::spawn_blocking(move || ProxyProcess::start(&config))
        .await
        .unwrap();
    let serial = serial_of(&pki.path("agent.pem"));
    let pki = std::sync::Arc::new(pki);
    let refused = tokio::task::spawn_blocking({
        let pki = pki.clone();
        move || {
            assert_eq!(trade(&proxy).status, 200);
            pki.ca(&["revoke", "--serial", &serial, "--reason", "keyCompromise"]);
            let refused = trade_until_refused(&proxy, Duration::from_secs(15));
            // Every later action too, not only trades.
            let read = curl(&proxy, &["http://api.exchange.com/v1/markets"]);
            (refused, read)
        }
    })
    .await
    .unwrap();
    let (refused, read) = refused;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.code(), "identity_revoked");
    assert!(refused.body.contains("keyCompromise"), "{}", refused.body);
    assert_eq!(read.code(), "identity_revoked");
    let incidents = pki.audit_events("identity.revoked");
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(incidents[0]["revocation_reason"], "keyCompromise");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watch_stream_halts_the_identity_long_before_the_ttl() {
    let pki = Pki::new();
    let exchange = std::sync::Arc::new(pki.exchange().await);
    // An hour's TTL: only the watch stream can explain a refusal here.
    let policy = policy_with(r#"{"enabled": true, "cache_ttl_seconds": 3600, "fail_open": false}"#);
    let config = pki.config(&policy, exchange.addr(), "");
    let serial = serial_of(&pki.path("agent.pem"));
    let pki = std::sync::Arc::new(pki);
    let (refused, forwarded_before, forwarded_after) = tokio::task::spawn_blocking({
        let pki = pki.clone();
        let exchange = exchange.clone();
        move || {
            let exchange_requests = || exchange.requests();
            let proxy = ProxyProcess::start(&config);
            assert_eq!(trade(&proxy).status, 200);
            // Let the subscription settle (it re-checks once on connect).
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(trade(&proxy).status, 200);
            pki.ca(&[
                "revoke",
                "--serial",
                &serial,
                "--reason",
                "cessationOfOperation",
            ]);
            let refused = trade_until_refused(&proxy, Duration::from_secs(15));
            let before = exchange_requests();
            for _ in 0..3 {
                assert_eq!(trade(&proxy).status, 403);
            }
            (refused, before, exchange_requests())
        }
    })
    .await
    .unwrap();
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.code(), "identity_revoked");
    assert!(refused.body.contains("cessationOfOperation"));
    assert_eq!(
        forwarded_before, forwarded_after,
        "nothing reaches the upstream once halted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn responder_down_fails_closed_and_the_upstream_sees_nothing() {
    let mut pki = Pki::new();
    let exchange = pki.exchange().await;
    let config = pki.config(POLICY, exchange.addr(), WATCH_OFF);
    pki.responder.stop();
    let answers = tokio::task::spawn_blocking(move || {
        let proxy = ProxyProcess::start(&config);
        let trade = trade(&proxy);
        let read = curl(&proxy, &["http://api.exchange.com/v1/markets"]);
        (trade, read)
    })
    .await
    .unwrap();
    for answer in [&answers.0, &answers.1] {
        assert_eq!(answer.status, 503, "{}", answer.body);
        assert_eq!(answer.code(), "revocation_unavailable");
    }
    assert_eq!(exchange.requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn responder_down_with_fail_open_forwards_and_logs_it() {
    let mut pki = Pki::new();
    let exchange = pki.exchange().await;
    let policy = policy_with(r#"{"enabled": true, "cache_ttl_seconds": 5, "fail_open": true}"#);
    let config = pki.config(&policy, exchange.addr(), WATCH_OFF);
    pki.responder.stop();
    let answer = tokio::task::spawn_blocking(move || {
        let proxy = ProxyProcess::start(&config);
        trade(&proxy)
    })
    .await
    .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(exchange.requests(), 1);
    assert!(
        answer.json()["headers"].get("x-agent-ocsp").is_none(),
        "no staple without an answer"
    );
    let decided = pki.audit_events("action.decided");
    assert_eq!(decided[0]["revocation"], "unchecked", "{decided:?}");
    assert!(decided[0]["revocation_error"]
        .as_str()
        .unwrap()
        .contains("connect"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_supplied_staple_never_reaches_the_upstream() {
    let mut pki = Pki::new();
    let exchange = pki.exchange().await;
    let policy = policy_with(r#"{"enabled": true, "cache_ttl_seconds": 5, "fail_open": true}"#);
    let config = pki.config(&policy, exchange.addr(), WATCH_OFF);
    pki.responder.stop();
    let answer = tokio::task::spawn_blocking(move || {
        let proxy = ProxyProcess::start(&config);
        curl(
            &proxy,
            &[
                "-H",
                "X-Agent-OCSP: Zm9yZ2Vk",
                "http://api.exchange.com/v1/markets",
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.json()["headers"].get("x-agent-ocsp").is_none());
}

/// A "responder" that answers every request with the same saved bytes:
/// what an attacker on the plain-HTTP path can do.
async fn replaying_responder(saved: Vec<u8>) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let saved = saved.clone();
            tokio::spawn(async move {
                let mut request = vec![0u8; 16 * 1024];
                let _ = stream.read(&mut request).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/ocsp-response\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n",
                    saved.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&saved).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_good_answer_does_not_hide_a_revocation() {
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    let serial = {
        let (_, cert, _) = pki.agent(POLICY);
        serial_of(&cert)
    };
    // Before the revocation, the attacker saves a "good" answer (nonce-less,
    // as anyone may ask for one, valid for an hour)...
    let request = pki.path("saved-req.der");
    let status = std::process::Command::new("openssl")
        .args(["ocsp", "-no_nonce", "-reqout"])
        .arg(&request)
        .arg("-issuer")
        .arg(pki.agents_ca.certificate_path())
        .arg("-cert")
        .arg(pki.path("agent.pem"))
        .status()
        .unwrap();
    assert!(status.success());
    let saved = tokio::task::spawn_blocking({
        let url = format!("http://{}/ocsp", pki.responder.addr);
        let request = request.clone();
        move || {
            let output = std::process::Command::new("curl")
                .args([
                    "-sf",
                    "-H",
                    "content-type: application/ocsp-request",
                    "--data-binary",
                ])
                .arg(format!("@{}", request.display()))
                .arg(url)
                .output()
                .unwrap();
            assert!(output.status.success());
            output.stdout
        }
    })
    .await
    .unwrap();
    // ... the agent is revoked, and the attacker answers for the responder.
    pki.ca(&["revoke", "--serial", &serial, "--reason", "keyCompromise"]);
    let fake = replaying_responder(saved).await;
    let extra = format!("[revocation]\nocsp_url = \"http://{fake}/ocsp\"\nwatch_url = \"off\"\n");
    let (policy, cert, key) = (
        pki.path("policy.json"),
        pki.path("agent.pem"),
        pki.path("agent-key.pem"),
    );
    let config = pki.write_config(&policy, &cert, &key, exchange.addr(), &extra);
    let answer = tokio::task::spawn_blocking(move || {
        let proxy = ProxyProcess::start(&config);
        trade(&proxy)
    })
    .await
    .unwrap();
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.code(), "revocation_unavailable");
    assert!(answer.body.contains("nonce"), "{}", answer.body);
    assert_eq!(exchange.requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_its_ca_does_not_know_is_refused_even_with_fail_open() {
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    pki.agent(&policy_with(
        r#"{"enabled": true, "cache_ttl_seconds": 5, "fail_open": true}"#,
    ));
    // OpenSSL's own responder, with the CA's key and an empty index: it
    // signs "unknown" for every serial (and echoes the nonce).
    let index = pki.path("index.txt");
    std::fs::write(&index, "").unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let ca_dir = pki.path("agents-ca");
    let mut responder = std::process::Command::new("openssl")
        .args([
            "ocsp",
            "-timeout",
            "5",
            "-port",
            &port.to_string(),
            "-index",
        ])
        .arg(&index)
        .arg("-CA")
        .arg(ca_dir.join("ca.pem"))
        .arg("-rsigner")
        .arg(ca_dir.join("ca.pem"))
        .arg("-rkey")
        .arg(ca_dir.join("ca-key.pem"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // openssl serves one connection at a time and spins on one that closes
    // without a request, so no probe connection: wait for the port to be
    // taken instead.
    let started = Instant::now();
    while std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "openssl ocsp did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let extra =
        format!("[revocation]\nocsp_url = \"http://127.0.0.1:{port}/\"\nwatch_url = \"off\"\n");
    let (policy, cert, key) = (
        pki.path("policy.json"),
        pki.path("agent.pem"),
        pki.path("agent-key.pem"),
    );
    let config = pki.write_config(&policy, &cert, &key, exchange.addr(), &extra);
    let answer = tokio::task::spawn_blocking(move || {
        let proxy = ProxyProcess::start(&config);
        trade(&proxy)
    })
    .await
    .unwrap();
    let _ = responder.kill();
    let _ = responder.wait();
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(answer.code(), "identity_unknown");
    assert_eq!(exchange.requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_that_expires_while_running_is_refused() {
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    let now = time::OffsetDateTime::now_utc();
    let not_after = now + time::Duration::seconds(5);
    let (policy_path, cert, key) = pki.agent_with(
        POLICY,
        kakunin_authority::Validity::Window {
            not_before: now - time::Duration::minutes(1),
            not_after,
        },
    );
    let config = pki.write_config(&policy_path, &cert, &key, exchange.addr(), "");
    let (before, after) = tokio::task::spawn_blocking(move || {
        let proxy = ProxyProcess::start(&config);
        let before = trade(&proxy);
        // Past notAfter (whole seconds) by a margin.
        let expired_at =
            std::time::UNIX_EPOCH + Duration::from_secs(not_after.unix_timestamp() as u64 + 2);
        if let Ok(wait) = expired_at.duration_since(std::time::SystemTime::now()) {
            std::thread::sleep(wait);
        }
        (before, trade(&proxy))
    })
    .await
    .unwrap();
    assert_eq!(before.status, 200, "{}", before.body);
    assert_eq!(after.status, 403, "{}", after.body);
    assert_eq!(after.code(), "identity_expired");
    assert_eq!(exchange.requests(), 1);
}
