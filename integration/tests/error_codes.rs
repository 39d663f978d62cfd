//! Each error the proxy can answer with, reached through a real socket, and
//! nothing forwarded when a check fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::*;
use kakunin_authority::{ServerRequest, Validity};

fn assert_refused(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.code(), code, "{}", answer.body);
    assert!(!answer.json()["message"].as_str().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_denials_and_request_errors() {
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    let config = pki.config(POLICY, exchange.addr(), "body_limit = 4096");
    let proxy = ProxyProcess::start(&config);

    assert_refused(
        &curl(&proxy, &["http://evil.example.net/"]),
        403,
        "host_denied",
    );
    assert_refused(
        &curl(&proxy, &["http://db.internal-network.local/"]),
        403,
        "host_denied",
    );
    assert_refused(
        &curl(
            &proxy,
            &[
                "http://api.exchange.com/v1/trades",
                "-d",
                r#"{"market":"EUR_USD","size":50001}"#,
            ],
        ),
        403,
        "action_denied",
    );
    assert_refused(
        &curl(
            &proxy,
            &[
                "http://api.exchange.com/v1/trades",
                "-d",
                r#"{"market":"DOGE_USD","size":1}"#,
            ],
        ),
        403,
        "action_denied",
    );
    // A duplicate key: the upstream might read the other one.
    assert_refused(
        &curl(
            &proxy,
            &[
                "http://api.exchange.com/v1/trades",
                "-d",
                r#"{"market":"EUR_USD","size":1,"size":900000}"#,
            ],
        ),
        403,
        "action_denied",
    );
    // A spelling variant of the constrained path still meets the constraint.
    assert_refused(
        &curl(
            &proxy,
            &[
                "http://api.exchange.com/V1//trades/",
                "-d",
                r#"{"market":"EUR_USD","size":900000}"#,
            ],
        ),
        403,
        "action_denied",
    );
    let big = pki.path("big.json");
    std::fs::write(&big, vec![b'x'; 10_000]).unwrap();
    let answer = curl(
        &proxy,
        &[
            "http://api.exchange.com/v1/upload",
            "--data-binary",
            &format!("@{}", big.display()),
        ],
    );
    assert_refused(&answer, 413, "body_too_large");

    let addr = proxy.addr;
    let origin_form = raw(
        addr,
        b"GET /v1/markets HTTP/1.1\r\nHost: api.exchange.com\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&origin_form), 400, "{origin_form}");
    assert!(
        origin_form.contains("x-kakunin-error: malformed_request"),
        "{origin_form}"
    );
    let empty_label = raw(
        addr,
        b"GET http://api..exchange.com/ HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&empty_label), 400, "{empty_label}");
    assert!(empty_label.contains("malformed_target"), "{empty_label}");
    let connect = raw(
        addr,
        b"CONNECT api.exchange.com:443 HTTP/1.1\r\nHost: api.exchange.com:443\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&connect), 405, "{connect}");
    assert!(
        connect.contains("connect_not_supported") && connect.contains("http://"),
        "{connect}"
    );

    assert_eq!(
        exchange.requests(),
        0,
        "nothing may be forwarded when a check fails"
    );
    assert_eq!(exchange.handshakes(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn region_and_hours() {
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    let config = pki.config(POLICY, exchange.addr(), "");
    // The flag overrides the file's region.
    let proxy = ProxyProcess::start_with(&config, &["--region", "us-east-1"]);
    assert_refused(
        &curl(&proxy, &["http://api.exchange.com/v1/markets"]),
        403,
        "region_denied",
    );
    drop(proxy);

    // A one-hour window that starts two hours from now never contains now.
    let hour = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3600
        + 2)
        % 24;
    let policy = POLICY.replacen(
        r#""allowed_regions": ["eu-west-1"],"#,
        &format!(
            r#""allowed_regions": ["eu-west-1"], "allowed_hours": "{hour:02}:00-{:02}:00 UTC","#,
            (hour + 1) % 24
        ),
        1,
    );
    let proxy = ProxyProcess::start(&pki.config(&policy, exchange.addr(), ""));
    assert_refused(
        &curl(&proxy, &["http://api.exchange.com/v1/markets"]),
        403,
        "outside_allowed_hours",
    );
    assert_eq!(exchange.requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_and_concurrency_limits() {
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    let policy = POLICY.replacen(
        r#""max_concurrent_trades": 5"#,
        r#""max_concurrent_trades": 1, "rate_limit": "3 trades/hour""#,
        1,
    );
    let proxy = ProxyProcess::start(&pki.config(&policy, exchange.addr(), ""));

    // Hold the one in-flight slot with a slow action, then try another.
    let slow = tokio::spawn(curl_async(
        proxy.url(),
        vec![
            "-X".into(),
            "POST".into(),
            "http://api.exchange.com/slow?ms=3000".into(),
        ],
    ));
    while exchange.requests() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = curl(
        &proxy,
        &["-X", "POST", "http://api.exchange.com/v1/orders/cancel"],
    );
    assert_refused(&answer, 429, "concurrency_limited");
    assert_eq!(slow.await.unwrap().status, 200);

    // Reads are not actions: they pass whatever the trade budget says.
    assert_eq!(
        curl(&proxy, &["http://api.exchange.com/v1/markets"]).status,
        200
    );
    // One of the three trades an hour went to the slow action (the refused
    // one took no budget): two more pass, then 429.
    let mut refused = None;
    for _ in 0..3 {
        let answer = curl(
            &proxy,
            &[
                "http://api.exchange.com/v1/trades",
                "-d",
                r#"{"market":"EUR_USD","size":1}"#,
            ],
        );
        if answer.status == 429 {
            refused = Some(answer);
            break;
        }
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let refused = refused.expect("the rate limit never refused");
    assert_refused(&refused, 429, "rate_limited");
    let headers = curl(
        &proxy,
        &[
            "-i",
            "http://api.exchange.com/v1/trades",
            "-d",
            r#"{"market":"EUR_USD","size":1}"#,
        ],
    );
    let retry_after = headers
        .body
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("retry-after:")
                .map(|v| v.trim().to_string())
        })
        .expect("Retry-After on 429");
    assert!(retry_after.parse::<u64>().unwrap() >= 1);
    assert!(headers
        .body
        .to_ascii_lowercase()
        .contains("x-kakunin-error: rate_limited"));
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_failures_name_their_reason() {
    let pki = Pki::new();
    let exchange = pki.exchange().await;

    // Pinned CA that did not issue the upstream's certificate.
    let config = pki.config(POLICY, exchange.addr(), "");
    let proxy = ProxyProcess::start_with(
        &config,
        &[
            "--upstream-ca",
            pki.agents_ca.certificate_path().to_str().unwrap(),
        ],
    );
    assert_refused(
        &curl(&proxy, &["http://api.exchange.com/v1/markets"]),
        502,
        "upstream_unknown_ca",
    );
    drop(proxy);

    // Connection refused: a port nobody listens on.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let proxy = ProxyProcess::start(&pki.config(POLICY, closed, ""));
    assert_refused(
        &curl(&proxy, &["http://api.exchange.com/v1/markets"]),
        502,
        "upstream_connection_refused",
    );
    drop(proxy);

    // A peer that accepts TCP and never speaks: the handshake times out.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let config = pki.config(POLICY, silent.local_addr().unwrap(), "");
    let proxy = ProxyProcess::start_with(&config, &["--upstream-connect-timeout-ms", "500"]);
    assert_refused(
        &curl(&proxy, &["http://api.exchange.com/v1/markets"]),
        502,
        "upstream_timeout",
    );
    drop(proxy);

    // An upstream whose certificate has expired.
    let now = time::OffsetDateTime::now_utc();
    let expired = pki
        .exchange_ca
        .issue_server(&ServerRequest {
            names: vec![EXCHANGE_HOST.into()],
            validity: Validity::Window {
                not_before: now - time::Duration::days(2),
                not_after: now - time::Duration::days(1),
            },
        })
        .unwrap();
    let stale = kakunin::demo::exchange::Exchange::start(
        "127.0.0.1:0".parse().unwrap(),
        &kakunin::demo::exchange::ExchangeTls {
            server_chain_pem: &expired.cert_pem,
            server_key_pem: expired.key_pem.as_deref().unwrap(),
            client_ca_pem: pki.agents_ca.certificate_pem(),
            tls12_only: false,
        },
    )
    .await
    .unwrap();
    let proxy = ProxyProcess::start(&pki.config(POLICY, stale.addr(), ""));
    assert_refused(
        &curl(&proxy, &["http://api.exchange.com/v1/markets"]),
        502,
        "upstream_certificate_expired",
    );
    assert_eq!(stale.requests(), 0);
    assert_eq!(exchange.requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_upstream_body_releases_its_in_flight_slot() {
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    let policy = POLICY.replacen(
        r#""max_concurrent_trades": 5"#,
        r#""max_concurrent_trades": 1"#,
        1,
    );
    let config = pki.config(&policy, exchange.addr(), "");
    // Long enough that a loaded machine still gets the response head (and
    // its first body bytes) in time; the stall itself lasts forever.
    let proxy = ProxyProcess::start_with(&config, &["--upstream-response-timeout-ms", "1500"]);
    // The upstream sends part of the body and stops: the proxy cuts it off,
    // so the agent sees a truncated response rather than waiting forever.
    let stalled = curl(&proxy, &["-X", "POST", "http://api.exchange.com/stall"]);
    assert_eq!(stalled.status, 200);
    assert!(stalled.body.len() < 100, "{}", stalled.body);
    // ... and the only in-flight slot is free again.
    let next = curl(&proxy, &["-X", "POST", "http://api.exchange.com/v1/orders"]);
    assert_eq!(next.status, 200, "{}", next.body);
}
