//! `kakunin demo`: a throwaway CA and agent, an in-process mTLS exchange, the
//! proxy in front of it, and a handful of requests that show each check.

mod attacker;
pub mod exchange;
pub mod lab;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use kakunin_authority::RevocationReason;
use tokio::net::TcpStream;

use lab::{Lab, LabOptions, EXCHANGE_HOST};

const POLICY: &str = include_str!("demo-policy.json");

struct Step {
    what: &'static str,
    method: Method,
    url: &'static str,
    body: Option<&'static str>,
    expect: StatusCode,
}

pub async fn run() -> anyhow::Result<ExitCode> {
    let dir = tempfile::tempdir().context("temporary directory")?;
    let root = dir.path();
    println!("kakunin demo (files in {})", root.display());
    let mut lab = Lab::start(
        root,
        &LabOptions {
            policy_json: POLICY,
            watch: true,
        },
    )
    .await?;
    let proxy_addr = lab.proxy_addr;
    println!(
        "  agent {} certificate serial {} (key {})",
        lab.proxy.policy.agent_id(),
        lab.agent_serial,
        root.join("agent-key.pem").display()
    );
    println!(
        "  agents' CA responder (OCSP, CRL, watch stream) on {}",
        lab.responder.addr()
    );
    println!(
        "  exchange {EXCHANGE_HOST}: kakunin gateway on {} (mTLS, client certificate required, \
         every request verified) in front of the service on {}",
        lab.gateway.local_addr(),
        lab.exchange.addr()
    );
    println!("  proxy on {proxy_addr} (HTTP_PROXY=http://{proxy_addr})\n");

    let trade = |what, body, expect| Step {
        what,
        method: Method::POST,
        url: "http://api.exchange.com/v1/trades",
        body: Some(body),
        expect,
    };
    let get = |what, url, expect| Step {
        what,
        method: Method::GET,
        url,
        body: None,
        expect,
    };
    let mut steps = vec![
        trade(
            "trade within scope",
            r#"{"market":"EUR_USD","size":45000}"#,
            StatusCode::OK,
        ),
        trade(
            "trade over the maximum size",
            r#"{"market":"EUR_USD","size":500000}"#,
            StatusCode::FORBIDDEN,
        ),
        trade(
            "market not in scope",
            r#"{"market":"BTC_USD","size":1000}"#,
            StatusCode::FORBIDDEN,
        ),
        get(
            "read market data (signed by its rule, as the gateway wants)",
            "http://api.exchange.com/v1/markets",
            StatusCode::OK,
        ),
        get(
            "denied host",
            "http://vault.internal-network.local/secrets",
            StatusCode::FORBIDDEN,
        ),
        get(
            "cloud metadata (IMDS)",
            "http://169.254.169.254/latest/meta-data/",
            StatusCode::FORBIDDEN,
        ),
        get(
            "IMDS spelled as one decimal number",
            "http://2852039166/latest/meta-data/",
            StatusCode::FORBIDDEN,
        ),
    ];
    // "3 trades/minute" and one trade already done: two more pass, then 429.
    for expect in [
        StatusCode::OK,
        StatusCode::OK,
        StatusCode::TOO_MANY_REQUESTS,
        StatusCode::TOO_MANY_REQUESTS,
    ] {
        steps.push(trade(
            "burst of trades",
            r#"{"market":"GBP_USD","size":1000}"#,
            expect,
        ));
    }

    let mut mismatches = 0;
    let mut captured = None;
    for step in &steps {
        let (status, detail) = match send(proxy_addr, step).await {
            Ok((status, detail, echo)) => {
                if captured.is_none() && status == StatusCode::OK && step.method == Method::POST {
                    captured = attacker::Captured::from_echo(&echo);
                }
                (status, detail)
            }
            Err(err) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("client error: {err:#}"),
            ),
        };
        let mark = if status == step.expect {
            "ok "
        } else {
            mismatches += 1;
            "!! "
        };
        let body = step.body.map(|b| format!(" {b}")).unwrap_or_default();
        println!(
            "{mark}{} {:<6} {}{body}\n      {} -> {}",
            status.as_u16(),
            step.method.as_str(),
            step.url,
            step.what,
            detail
        );
    }
    match &captured {
        Some(captured) => mismatches += replay_captured(&lab, captured).await,
        None => {
            println!("!! no signed trade reached the exchange to capture");
            mismatches += 1;
        }
    }
    if !revoke_and_trade(&lab).await? {
        mismatches += 1;
    }
    lab.shutdown().await;
    println!(
        "\nthe exchange's service saw {} request(s), each verified by the gateway first",
        lab.exchange.requests(),
    );
    let audit = std::fs::read_to_string(&lab.audit_log).unwrap_or_default();
    println!(
        "proxy audit log: {} record(s); the first:",
        audit.lines().count()
    );
    println!("  {}", audit.lines().next().unwrap_or("(none)"));
    let receiver = std::fs::read_to_string(&lab.gateway_audit_log).unwrap_or_default();
    println!(
        "gateway (receiver) audit log: {} record(s); the first:",
        receiver.lines().count()
    );
    println!("  {}", receiver.lines().next().unwrap_or("(none)"));
    if mismatches == 0 {
        println!("demo: every request got the expected answer");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("demo: {mismatches} request(s) got an unexpected answer");
        Ok(ExitCode::FAILURE)
    }
}

/// Sends one absolute-form request, as a client with HTTP_PROXY set does.
/// The admin revokes the agent's certificate (what `kakunin ca revoke`
/// does); the proxy hears of it on the watch stream, confirms it by OCSP and
/// halts; the agent's next trade is refused. True if it went that way.
async fn revoke_and_trade(lab: &Lab) -> anyhow::Result<bool> {
    println!(
        "\nthe admin revokes serial {} (keyCompromise)",
        lab.agent_serial
    );
    let revoked = Instant::now();
    lab.agents_ca
        .revoke(&lab.agent_serial, RevocationReason::KeyCompromise)?;
    let mut halted_after = None;
    while revoked.elapsed() < Duration::from_secs(10) {
        if lab.proxy.gate.halted().is_some() {
            halted_after = Some(revoked.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    match halted_after {
        Some(after) => println!(
            "  the proxy halted the identity {:.1} ms after the revocation (watch stream + OCSP)",
            after.as_secs_f64() * 1000.0
        ),
        None => println!("!! the proxy did not learn of the revocation within 10 s"),
    }
    let step = Step {
        what: "the next trade after the revocation",
        method: Method::POST,
        url: "http://api.exchange.com/v1/trades",
        body: Some(r#"{"market":"EUR_USD","size":1000}"#),
        expect: StatusCode::FORBIDDEN,
    };
    let (status, detail, _) = send(lab.proxy_addr, &step).await?;
    let ok = status == StatusCode::FORBIDDEN && detail.starts_with("identity_revoked");
    println!(
        "{}{} POST   {}\n      {} -> {}\n  refused {:.1} ms after the revocation",
        if ok { "ok " } else { "!! " },
        status.as_u16(),
        step.url,
        step.what,
        detail,
        revoked.elapsed().as_secs_f64() * 1000.0
    );
    Ok(ok && halted_after.is_some())
}

/// The first signed trade, as captured on its way into the exchange, sent
/// again to the gateway: changed, then as it was. Returns the number of
/// answers that were not the expected refusal.
async fn replay_captured(lab: &Lab, captured: &attacker::Captured) -> u32 {
    println!(
        "\nsomeone holding the agent's TLS identity sends the first signed trade again, \
         straight to the gateway:"
    );
    let changed = captured.body.replace("45000", "450000");
    let attempts = [
        (
            "body changed after signing",
            changed.as_str(),
            "content_digest_mismatch",
        ),
        (
            "replayed exactly as captured",
            captured.body.as_str(),
            "nonce_replayed",
        ),
    ];
    let mut mismatches = 0;
    for (what, body, expect) in attempts {
        let (status, code, detail) = match attacker::send(lab, captured, body).await {
            Ok((status, answer)) => (
                status,
                answer["code"].as_str().unwrap_or("?").to_string(),
                answer["detail"].as_str().unwrap_or("").to_string(),
            ),
            Err(err) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "client_error".into(),
                format!("{err:#}"),
            ),
        };
        let ok = status == StatusCode::UNAUTHORIZED && code == expect;
        if !ok {
            mismatches += 1;
        }
        println!(
            "{}{} POST   https://{EXCHANGE_HOST}{} {body}\n      {what} -> {code}: {detail}",
            if ok { "ok " } else { "!! " },
            status.as_u16(),
            captured.path,
        );
    }
    mismatches
}

async fn send(
    proxy: SocketAddr,
    step: &Step,
) -> anyhow::Result<(StatusCode, String, serde_json::Value)> {
    let stream = TcpStream::connect(proxy).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let host = step.url.split('/').nth(2).unwrap_or_default();
    let mut request = Request::builder()
        .method(step.method.clone())
        .uri(step.url)
        .header(http::header::HOST, host);
    if step.body.is_some() {
        request = request.header(http::header::CONTENT_TYPE, "application/json");
    }
    let request = request.body(Full::new(Bytes::from(step.body.unwrap_or_default())))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let detail = if status.is_success() {
        format!(
            "exchange accepted it (client certificate CN={})",
            json["client_cert_cn"].as_str().unwrap_or("?")
        )
    } else {
        format!(
            "{}: {}",
            json["code"].as_str().unwrap_or("?"),
            json["message"].as_str().unwrap_or("?")
        )
    };
    Ok((status, detail, json))
}
