//! `kakunin demo`: a throwaway CA and agent, an in-process mTLS exchange, the
//! proxy in front of it, and a handful of requests that show each check.

pub mod exchange;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use kakunin_authority::{
    AgentRequest, Authority, InitOptions, ServerRequest, SubjectKey, Validity,
};
use tokio::net::TcpStream;

use crate::config::{CertSource, Config};
use exchange::{Exchange, ExchangeTls};

const POLICY: &str = include_str!("demo-policy.json");
const EXCHANGE_HOST: &str = "api.exchange.com";

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

    // Two CAs, as in real life: Kakunin's for agents, the exchange's own for its servers.
    let agents_ca = Authority::init(
        &root.join("kakunin-ca"),
        &InitOptions {
            trust_domain: "demo.kakunin.local".into(),
            ..InitOptions::default()
        },
    )?;
    let exchange_ca = Authority::init(
        &root.join("exchange-ca"),
        &InitOptions {
            trust_domain: "exchange.example".into(),
            common_name: "Exchange Root CA".into(),
            ..InitOptions::default()
        },
    )?;
    let server = exchange_ca.issue_server(&ServerRequest {
        names: vec![EXCHANGE_HOST.into()],
        validity: Validity::Days(1),
    })?;
    let policy_path = root.join("policy.json");
    std::fs::write(&policy_path, POLICY)?;
    let policy = kakunin_policy::Policy::from_json_str("demo-policy.json", POLICY)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let agent = agents_ca.issue_agent(&AgentRequest {
        agent_id: policy.agent_id(),
        policy: &policy,
        key: SubjectKey::Generate,
        validity: Validity::Hours(1),
    })?;
    let cert_path = root.join("agent.pem");
    let key_path = root.join("agent-key.pem");
    std::fs::write(&cert_path, &agent.cert_pem)?;
    kakunin_authority::write_private_key(&key_path, agent.key_pem.as_deref().unwrap_or_default())?;
    println!(
        "  agent {} certificate serial {} (key {})",
        policy.agent_id(),
        agent.serial_hex,
        key_path.display()
    );

    let exchange = Exchange::start(
        "127.0.0.1:0".parse()?,
        &ExchangeTls {
            server_chain_pem: &server.cert_pem,
            server_key_pem: server.key_pem.as_deref().unwrap_or_default(),
            client_ca_pem: agents_ca.certificate_pem(),
            tls12_only: false,
        },
    )
    .await?;
    println!(
        "  exchange {EXCHANGE_HOST} on {} (mTLS, client certificate required)",
        exchange.addr()
    );

    let mut pinned = BTreeMap::new();
    pinned.insert(EXCHANGE_HOST.to_string(), exchange.addr());
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        policy: policy_path,
        region: Some("eu-west-1".into()),
        body_limit: crate::config::DEFAULT_BODY_LIMIT,
        max_header_bytes: 64 * 1024,
        header_read_timeout: Duration::from_secs(10),
        body_read_timeout: Duration::from_secs(30),
        audit_log: Some(root.join("audit.jsonl")),
        identity_cert: CertSource::File(cert_path),
        identity_key: format!("file:{}", key_path.display()),
        upstream_ca: exchange_ca.certificate_path(),
        connect_timeout: Duration::from_secs(5),
        response_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(90),
        max_idle_per_host: 16,
        resolve: pinned,
    };
    let (proxy, settings) = crate::run::build(&config)?;
    let listener = crate::server::bind(config.listen).await?;
    let proxy_addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::server::serve(
        listener,
        proxy.clone(),
        settings,
        async {
            let _ = stopped.await;
        },
    ));
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
            "read market data (not an action)",
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
    for step in &steps {
        let (status, detail) = match send(proxy_addr, step).await {
            Ok(answer) => answer,
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
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(11), server).await;
    println!(
        "\nexchange saw {} request(s) over {} TLS handshake(s) (pooled keep-alive)",
        exchange.requests(),
        exchange.handshakes(),
    );
    let audit = std::fs::read_to_string(root.join("audit.jsonl")).unwrap_or_default();
    println!("audit log: {} record(s); the first:", audit.lines().count());
    println!("  {}", audit.lines().next().unwrap_or("(none)"));
    if mismatches == 0 {
        println!("demo: every request got the expected answer");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("demo: {mismatches} request(s) got an unexpected answer");
        Ok(ExitCode::FAILURE)
    }
}

/// Sends one absolute-form request, as a client with HTTP_PROXY set does.
async fn send(proxy: SocketAddr, step: &Step) -> anyhow::Result<(StatusCode, String)> {
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
    Ok((status, detail))
}
