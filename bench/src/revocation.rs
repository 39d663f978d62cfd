//! Revocation-to-refusal: how long after the CA records a revocation does
//! the agent's next request get 403 `identity_revoked`?
//!
//! Each trial runs the whole chain in one process (the demo's lab): the
//! agents' CA and its responder (`ca serve`), an mTLS exchange, and the
//! proxy. An agent loop sends requests back to back over one keep-alive
//! connection; at a random moment within one cache TTL the CA revokes the
//! certificate (a committed SQLite write, as `kakunin ca revoke` makes), and
//! the clock runs from the commit to the first refusal the agent receives.
//! With the watch stream the proxy hears of it on the stream and confirms
//! by OCSP; without it, it learns at the next cache expiry.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use kakunin::demo::lab::{Lab, LabOptions};
use kakunin_authority::RevocationReason;
use serde_json::json;

pub struct Settings {
    pub trials: usize,
    pub ttl_seconds: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct Trial {
    /// Commit of the revocation → first 403 `identity_revoked` seen.
    pub refusal: Duration,
    /// Requests the upstream still answered after the commit.
    pub forwarded_after: u64,
}

fn policy(ttl_seconds: u32) -> String {
    json!({
        "agent_id": "bench_bot",
        "network_rules": { "allowed_hosts": ["api.exchange.com"] },
        // The exchange sits behind `kakunin gateway`, which wants every
        // request signed: reads too.
        "actions": [{ "match": { "method": "GET", "path": "/v1/markets" }, "sign": true }],
        "revocation_check": { "enabled": true, "cache_ttl_seconds": ttl_seconds, "fail_open": false }
    })
    .to_string()
}

pub async fn trial(watch: bool, settings: &Settings) -> anyhow::Result<Trial> {
    let dir = tempfile::tempdir()?;
    let policy = policy(settings.ttl_seconds);
    let mut lab = Lab::start(
        dir.path(),
        &LabOptions {
            policy_json: &policy,
            watch,
        },
    )
    .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::<(Instant, StatusCode, String)>::new()));
    let agent = tokio::spawn(agent_loop(lab.proxy_addr, stop.clone(), answers.clone()));

    // Let the cache fill and the subscription connect, then revoke at a
    // random phase of the cache TTL.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ttl_ms = u64::from(settings.ttl_seconds.max(1)) * 1000;
    tokio::time::sleep(Duration::from_millis(random_below(ttl_ms))).await;
    let revoked_at = {
        let serial = lab.agent_serial.clone();
        let ca = &lab.agents_ca;
        ca.revoke(&serial, RevocationReason::KeyCompromise)?;
        Instant::now()
    };
    let deadline = revoked_at + Duration::from_millis(ttl_ms) + Duration::from_secs(10);
    let refusal = loop {
        let refused = answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(at, status, code)| {
                *at >= revoked_at && *status == StatusCode::FORBIDDEN && code == "identity_revoked"
            })
            .map(|(at, _, _)| at.duration_since(revoked_at));
        if let Some(refusal) = refused {
            break refusal;
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "no refusal within {:?} of the revocation",
                deadline - revoked_at
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    stop.store(true, Ordering::SeqCst);
    let _ = agent.await;
    let forwarded_after = answers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(at, status, _)| *at >= revoked_at && *status == StatusCode::OK)
        .count() as u64;
    lab.shutdown().await;
    Ok(Trial {
        refusal,
        forwarded_after,
    })
}

/// Back-to-back GETs over one keep-alive connection to the proxy; each
/// answer is recorded with the time it arrived.
async fn agent_loop(
    proxy: SocketAddr,
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<(Instant, StatusCode, String)>>>,
) -> anyhow::Result<()> {
    let stream = tokio::net::TcpStream::connect(proxy).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    while !stop.load(Ordering::SeqCst) {
        let request = Request::get("http://api.exchange.com/v1/markets")
            .header(http::header::HOST, "api.exchange.com")
            .body(Empty::<Bytes>::new())?;
        let (status, code) = crate::all::load::answer(&mut sender, request).await?;
        answers.lock().unwrap_or_else(|p| p.into_inner()).push((
            Instant::now(),
            status,
            code.unwrap_or_default(),
        ));
    }
    Ok(())
}

fn random_below(limit: u64) -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        return limit / 2;
    }
    u64::from_le_bytes(bytes) % limit.max(1)
}

/// min / median / max of a set of durations, in milliseconds.
pub fn summary(samples: &[Duration]) -> serde_json::Value {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let median = match ms.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => ms[n / 2],
        n => (ms[n / 2 - 1] + ms[n / 2]) / 2.0,
    };
    json!({
        "n": ms.len(),
        "min_ms": ms.first().copied().unwrap_or(f64::NAN),
        "median_ms": median,
        "max_ms": ms.last().copied().unwrap_or(f64::NAN),
        "samples_ms": ms,
    })
}
