//! curl (and Python) through HTTP_PROXY to a real mTLS upstream on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn curl_reaches_mtls_upstream_with_the_agent_certificate() {
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    let proxy = ProxyProcess::start(&pki.config(POLICY, exchange.addr(), ""));
    let answer = curl(
        &proxy,
        &[
            "http://api.exchange.com/v1/trades",
            "-H",
            "content-type: application/json",
            // Forged proof headers and a hop-by-hop header must not reach the upstream.
            "-H",
            "X-Agent-Signature: forged",
            "-H",
            "X-Agent-Certificate: forged",
            "-H",
            "Signature: kakunin=:Zm9yZ2Vk:",
            "-H",
            "Signature-Input: kakunin=()",
            "-H",
            "Content-Digest: sha-256=:Zm9yZ2Vk:",
            "-H",
            "X-Kakunin-Agent-Id: someone-else",
            "-H",
            "Connection: close, X-Hop",
            "-H",
            "X-Hop: secret",
            "-H",
            "X-Request-Id: kept",
            "-d",
            r#"{"market":"EUR_USD","size":45000}"#,
        ],
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let echo = answer.json();
    assert_eq!(echo["client_cert_cn"], "trading_bot_v2");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/v1/trades");
    assert_eq!(echo["body"], r#"{"market":"EUR_USD","size":45000}"#);
    let headers = echo["headers"].as_object().unwrap();
    assert_eq!(headers["host"], "api.exchange.com");
    assert_eq!(headers["x-request-id"], "kept");
    // A POST is signed: the proxy's own proof headers replace the forged
    // ones (request_signing.rs verifies them).
    for replaced in [
        "x-agent-signature",
        "x-agent-certificate",
        "signature",
        "signature-input",
        "content-digest",
    ] {
        let value = headers[replaced].as_str().unwrap();
        assert!(
            !value.contains("forged") && !value.contains("Zm9yZ2Vk") && value != "kakunin=()",
            "the agent's {replaced} reached the upstream: {value}"
        );
    }
    for stripped in [
        "x-kakunin-agent-id",
        "x-hop",
        "connection",
        "proxy-connection",
    ] {
        assert!(
            !headers.contains_key(stripped),
            "{stripped} reached the upstream: {headers:?}"
        );
    }
    // The audit log has the intent and the outcome.
    let audit = std::fs::read_to_string(pki.path("audit.jsonl")).unwrap();
    assert!(
        audit.contains("\"event_type\":\"action.decided\""),
        "{audit}"
    );
    assert!(
        audit.contains("\"event_type\":\"action.completed\""),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_refuses_a_client_without_certificate() {
    // The upstream is real mTLS: curl straight to it, without a client
    // certificate, fails the handshake; through the proxy it works.
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    let ca = pki.exchange_ca.certificate_path();
    let resolve = format!("api.exchange.com:{}:127.0.0.1", exchange.addr().port());
    let url = format!(
        "https://api.exchange.com:{}/v1/markets",
        exchange.addr().port()
    );
    let direct = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(ca)
            .args(["--resolve", &resolve, &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        !direct.status.success(),
        "upstream accepted a client without a certificate"
    );
    assert_eq!(exchange.requests(), 0);

    let proxy = ProxyProcess::start(&pki.config(POLICY, exchange.addr(), ""));
    let answer = curl(&proxy, &["http://api.exchange.com/v1/markets"]);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(exchange.requests(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn many_requests_share_one_upstream_handshake() {
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    let proxy = ProxyProcess::start(&pki.config(POLICY, exchange.addr(), ""));
    // Separate curl processes: separate agent connections, one upstream connection.
    for i in 0..20 {
        let answer = curl(
            &proxy,
            &[&format!("http://api.exchange.com/v1/markets?i={i}")],
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    assert_eq!(exchange.requests(), 20);
    assert_eq!(
        exchange.handshakes(),
        1,
        "pooled keep-alive must reuse one connection"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn python_urllib_honours_http_proxy() {
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    let proxy = ProxyProcess::start(&pki.config(POLICY, exchange.addr(), ""));
    let script = r#"
import json, urllib.request
req = urllib.request.Request("http://api.exchange.com/v1/trades",
    data=json.dumps({"market": "GBP_USD", "size": 10}).encode(),
    headers={"Content-Type": "application/json"}, method="POST")
print(json.load(urllib.request.urlopen(req, timeout=20))["client_cert_cn"])
"#;
    let url = proxy.url();
    let mut python = Command::new("python3");
    python
        .args(["-c", script])
        .env("HTTP_PROXY", &url)
        .env("http_proxy", &url)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    assert_eq!(run_client(python).await, "trading_bot_v2");
}

#[tokio::test(flavor = "multi_thread")]
async fn report_mode_forwards_denials_and_logs_would_deny() {
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    let policy = POLICY.replacen('{', r#"{ "mode": "report","#, 1);
    let proxy = ProxyProcess::start(&pki.config(&policy, exchange.addr(), ""));
    let answer = curl(
        &proxy,
        &[
            "http://api.exchange.com/v1/trades",
            "-d",
            r#"{"market":"EUR_USD","size":900000}"#,
        ],
    );
    assert_eq!(answer.status, 200, "report mode forwards: {}", answer.body);
    assert_eq!(exchange.requests(), 1);
    let audit = std::fs::read_to_string(pki.path("audit.jsonl")).unwrap();
    assert!(
        audit.contains("would_deny") && audit.contains("action_denied"),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_that_resolves_to_loopback_is_refused() {
    // "localhost" is an allowed host in POLICY, but it resolves to 127.0.0.1
    // (and ::1), and loopback is denied by default.
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    let proxy = ProxyProcess::start(&pki.config(POLICY, exchange.addr(), ""));
    let answer = curl(
        &proxy,
        &[&format!("http://localhost:{}/", exchange.addr().port())],
    );
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(answer.code(), "destination_denied");
    assert_eq!(exchange.requests(), 0);
    assert_eq!(exchange.handshakes() + exchange.failed_handshakes(), 0);
}

/// Every spelling of a blocked address is refused, by a policy that allows
/// every host name, so only canonicalisation and the denied networks stand
/// between the agent and the address.
#[tokio::test(flavor = "multi_thread")]
async fn blocked_address_spellings_are_all_refused() {
    let spellings = [
        "169.254.169.254",
        "2852039166",
        "0251.0376.0251.0376",
        "0xa9fea9fe",
        "0xA9FEA9FE",
        "0xa9.0xfe.0xa9.0xfe",
        "169.254.43518",
        "169.16689662",
        "0251.0xfe.43518",
        "169.254.169.254.",
        "0251.254.169.254",
        "00000251.0376.0251.0376",
        "[::ffff:169.254.169.254]",
        "[::ffff:a9fe:a9fe]",
        "[0:0:0:0:0:ffff:a9fe:a9fe]",
        "[::169.254.169.254]",
        "[64:ff9b::a9fe:a9fe]",
        "[64:ff9b::169.254.169.254]",
        "[2002:a9fe:a9fe::1]",
        "[2001:0:4136:e378:8000:63bf:5601:5601]",
        "127.0.0.1",
        "127.1",
        "0x7f000001",
        "2130706433",
        "017700000001",
        "0x7f.1",
        "0",
        "0.0.0.0",
        "[::1]",
        "[::]",
        "[0:0:0:0:0:0:0:1]",
        "[::ffff:127.0.0.1]",
        "10.0.0.1",
        "192.168.1.1",
        "172.16.0.1",
        "100.64.0.1",
        "[fc00::1]",
        "[fd12:3456::1]",
        "[fe80::1]",
        "LOCALHOST",
        "localhost.",
    ];
    assert!(spellings.len() >= 30);
    let open = r#"{ "agent_id": "trading_bot_v2", "network_rules": { "allowed_hosts": ["*"] } }"#;
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    let proxy = ProxyProcess::start(&pki.config(open, exchange.addr(), ""));
    let addr = proxy.addr;
    let mut failures = Vec::new();
    for host in spellings {
        let request = format!("GET http://{host}/latest/meta-data/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let response = tokio::task::spawn_blocking(move || {
            raw(addr, request.as_bytes(), Duration::from_secs(10))
        })
        .await
        .unwrap();
        let status = status_of(&response);
        if status != 403 && status != 400 {
            failures.push(format!(
                "{host}: {}",
                response.lines().next().unwrap_or("<no answer>")
            ));
        }
    }
    assert!(failures.is_empty(), "not refused:\n{}", failures.join("\n"));
    assert_eq!(exchange.requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn node_http_request_in_proxy_form() {
    // What Node's HTTP proxy agents send: the absolute URL as the path.
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    let proxy = ProxyProcess::start(&pki.config(POLICY, exchange.addr(), ""));
    let script = format!(
        r#"
const http = require('http');
const req = http.request({{ host: '127.0.0.1', port: {port}, method: 'POST',
  path: 'http://api.exchange.com/v1/trades',
  headers: {{ Host: 'api.exchange.com', 'Content-Type': 'application/json' }} }}, res => {{
  let body = '';
  res.on('data', d => body += d);
  res.on('end', () => {{ console.log(res.statusCode, JSON.parse(body).client_cert_cn); }});
}});
req.on('error', e => {{ console.error(e); process.exit(1); }});
req.end(JSON.stringify({{ market: 'EUR_USD', size: 5 }}));
"#,
        port = proxy.addr.port()
    );
    let mut node = Command::new("node");
    node.args(["-e", &script]);
    assert_eq!(run_client(node).await, "200 trading_bot_v2");
}
