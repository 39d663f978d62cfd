//! The gateway's added latency: the same signed requests sent (a) straight
//! to an mTLS server that answers without verifying anything, the floor,
//! and (b) through `kakunin gateway` (mTLS, the verifier with a stapled
//! OCSP response, an audit line, then plain HTTP to a backend) to a backend
//! with the same answer. Everything runs in this process on loopback.
//!
//! Requests are signed before a pass starts (signing is the sender's cost),
//! each with its own nonce; connections are opened and warmed before the
//! clock runs and kept alive. Each pass records every request's latency in
//! an HDR histogram.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kakunin::gateway::{Gateway, GatewaySettings};
use kakunin_authority::{ServerRequest, Validity};
use kakunin_verifier::{RevocationMode, VerifierConfig};
use rustls::pki_types::ServerName;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::PrivateKeyDer;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::agents::{self, Agent, KeyKind, Lab, Signed, BODY, METHOD, PATH};

pub struct Settings {
    /// Timed requests per pass.
    pub requests: usize,
    /// Connections sending at once (one measurement per value).
    pub concurrency: Vec<usize>,
    /// Passes per path and concurrency.
    pub runs: usize,
}

/// Untimed requests per connection before each pass.
const WARMUP_PER_CONNECTION: usize = 50;
const SERVER_NAME: &str = "localhost";
/// The backend's whole answer, on both paths.
const ANSWER: &str = r#"{"status":"accepted","order_id":"bench-1"}"#;

/// The backend logic both paths share: read the body, answer small JSON.
async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let body = request.into_body().collect().await?.to_bytes();
    std::hint::black_box(body);
    let mut response = Response::new(Full::new(Bytes::from_static(ANSWER.as_bytes())));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// Serves `answer` on `listener`, over TLS when `tls` is given.
fn serve(listener: TcpListener, tls: Option<TlsAcceptor>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let tls = tls.clone();
            tokio::spawn(async move {
                let http = hyper::server::conn::http1::Builder::new();
                let service = service_fn(answer);
                let _ = match tls {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => http.serve_connection(TokioIo::new(stream), service).await,
                        Err(_) => return,
                    },
                    None => http.serve_connection(TokioIo::new(stream), service).await,
                };
            });
        }
    })
}

/// The agent's side of mTLS: its certificate and key, the CA pinned.
fn connector(lab: &Lab, agent: &Agent) -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(lab.ca_der.clone())?;
    let key = PrivateKeyDer::from_pem_slice(agent.key_pem.as_bytes()).context("agent key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![agent.cert_der.clone()], key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

async fn connect(
    connector: &TlsConnector,
    addr: SocketAddr,
) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let tls = connector
        .connect(ServerName::try_from(SERVER_NAME)?, stream)
        .await
        .context("TLS handshake")?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

fn http_request(signed: &Signed) -> anyhow::Result<Request<Full<Bytes>>> {
    let mut request = Request::builder()
        .method(METHOD)
        .uri(PATH)
        .body(Full::new(Bytes::from_static(BODY)))?;
    *request.headers_mut() = signed.headers.clone();
    Ok(request)
}

/// Sends one request and reads the whole answer; fails unless 200.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<()> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if status != StatusCode::OK {
        anyhow::bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
    }
    std::hint::black_box(body);
    Ok(())
}

/// What one pass measured.
struct Pass {
    histogram: Histogram<u64>,
    wall: Duration,
}

/// Sends `timed` over `concurrency` kept-alive connections to `addr`, after
/// `warmup` untimed requests on the same connections.
async fn pass(
    connector: &TlsConnector,
    addr: SocketAddr,
    warmup: &[Signed],
    timed: Arc<Vec<Signed>>,
    concurrency: usize,
) -> anyhow::Result<Pass> {
    let mut senders = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        senders.push(connect(connector, addr).await?);
    }
    for (i, signed) in warmup.iter().enumerate() {
        let n = senders.len();
        if let Some(sender) = senders.get_mut(i % n) {
            exchange(sender, http_request(signed)?)
                .await
                .context("warm-up")?;
        }
    }
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            let next = next.clone();
            let timed = timed.clone();
            tokio::spawn(async move {
                let mut histogram = new_histogram()?;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(signed) = timed.get(i) else {
                        break;
                    };
                    let request = http_request(signed)?;
                    let sent = Instant::now();
                    exchange(&mut sender, request).await?;
                    let took = u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    histogram.saturating_record(took);
                }
                anyhow::Ok(histogram)
            })
        })
        .collect();
    let mut histogram = new_histogram()?;
    for task in tasks {
        histogram.add(task.await??)?;
    }
    Ok(Pass {
        histogram,
        wall: start.elapsed(),
    })
}

/// Latencies in ns, 1 µs .. 60 s, 3 significant digits.
fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)?)
}

const QUANTILES: [(&str, f64); 4] = [
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p99.9", 0.999),
];

/// The figures of one pass, latencies in µs.
fn figures(pass: &Pass) -> Vec<(&'static str, f64)> {
    let us = |ns: u64| ns as f64 / 1000.0;
    let mut out: Vec<(&'static str, f64)> = QUANTILES
        .iter()
        .map(|(name, q)| (*name, us(pass.histogram.value_at_quantile(*q))))
        .collect();
    out.push(("max", us(pass.histogram.max())));
    out.push(("mean", pass.histogram.mean() / 1000.0));
    out.push((
        "requests_per_s",
        pass.histogram.len() as f64 / pass.wall.as_secs_f64(),
    ));
    out
}

pub async fn run(settings: &Settings, out: &std::path::Path) -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let agent = lab.issue(KeyKind::P256)?;
    let server = lab.ca.issue_server(&ServerRequest {
        names: vec![SERVER_NAME.into()],
        validity: Validity::Days(1),
    })?;
    let server_key = server.key_pem.clone().context("the server key")?;
    let dir = tempfile::tempdir()?;

    // The backend, plain HTTP on loopback.
    let backend_listener = TcpListener::bind("127.0.0.1:0").await?;
    let backend_addr = backend_listener.local_addr()?;
    let backend = serve(backend_listener, None);
    // (a) the floor: same answer over mTLS, nothing verified.
    let direct_listener = TcpListener::bind("127.0.0.1:0").await?;
    let direct_addr = direct_listener.local_addr()?;
    let direct = serve(
        direct_listener,
        // The floor: mTLS with a client certificate required from the agents'
        // CA (as the gateway's TLS layer requires), then the answer.
        Some(crate::tls::mtls_acceptor(
            &server.cert_pem,
            &server_key,
            &lab.ca_der,
        )?),
    );
    // (b) the gateway before the backend, checking revocation by staple.
    let mut verifier = VerifierConfig::new(vec![lab.ca_der.clone()]);
    verifier.revocation = RevocationMode::Required;
    // Requests are signed, and the staple made, just before each pass; the
    // windows are widened only so that a long pass on a loaded machine does
    // not age them out (the checks cost the same).
    verifier.max_age = Duration::from_secs(300);
    verifier.staple_max_age = Duration::from_secs(300);
    let mut gateway_settings =
        GatewaySettings::new(verifier, server.cert_pem.clone(), server_key, backend_addr);
    let audit_path = dir.path().join("gateway-audit.jsonl");
    gateway_settings.audit_log = Some(audit_path.clone());
    let gateway: Gateway = kakunin::gateway::start(gateway_settings).await?;
    let gateway_addr = gateway.local_addr();
    let connector = connector(&lab, &agent)?;

    println!(
        "gateway added latency: {} timed requests per pass, {} passes per path, P-256 agent, stapled OCSP",
        settings.requests, settings.runs
    );
    let mut results = Vec::new();
    for &concurrency in &settings.concurrency {
        let concurrency = concurrency.max(1);
        let mut direct_runs: Vec<Vec<(&str, f64)>> = Vec::new();
        let mut gateway_runs: Vec<Vec<(&str, f64)>> = Vec::new();
        let mut direct_all = new_histogram()?;
        let mut gateway_all = new_histogram()?;
        for round in 0..settings.runs.max(1) {
            // The same signed requests for both paths (the direct server
            // does not look at nonces; the gateway sees each once).
            let signed_at = SystemTime::now();
            let staple = lab.staple(&agent, signed_at)?;
            let warmup_count = WARMUP_PER_CONNECTION * concurrency;
            let mut signed = agents::sign_many(
                &agent,
                &staple,
                signed_at,
                warmup_count + settings.requests,
                2,
            )?;
            let timed = Arc::new(signed.split_off(warmup_count));
            let warmup = signed;
            // Alternate which path goes first, so that drift in the
            // machine's load does not favour one.
            let order: [bool; 2] = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for through_gateway in order {
                let addr = if through_gateway {
                    gateway_addr
                } else {
                    direct_addr
                };
                let measured = pass(&connector, addr, &warmup, timed.clone(), concurrency)
                    .await
                    .with_context(|| {
                        if through_gateway {
                            "through the gateway"
                        } else {
                            "direct"
                        }
                    })?;
                let figures = figures(&measured);
                if through_gateway {
                    gateway_runs.push(figures);
                    gateway_all.add(&measured.histogram)?;
                } else {
                    direct_runs.push(figures);
                    direct_all.add(&measured.histogram)?;
                }
            }
        }
        let mut entry = report(concurrency, &direct_runs, &gateway_runs);
        let merged = |h: &Histogram<u64>| {
            let mut out = serde_json::Map::new();
            for (name, q) in QUANTILES {
                out.insert(
                    name.into(),
                    agents::round1(h.value_at_quantile(q) as f64 / 1000.0).into(),
                );
            }
            out.insert("max".into(), agents::round1(h.max() as f64 / 1000.0).into());
            out.insert("requests".into(), h.len().into());
            serde_json::Value::Object(out)
        };
        let (d, g) = (merged(&direct_all), merged(&gateway_all));
        println!(
            "all passes merged ({} requests per path): p99 {} vs {} µs, p99.9 {} vs {} µs, max {} vs {} µs",
            gateway_all.len(),
            d["p99"], g["p99"], d["p99.9"], g["p99.9"], d["max"], g["max"]
        );
        entry["all_passes_merged"] = json!({ "direct": d, "gateway": g });
        results.push(entry);
    }
    gateway.stopped().await;
    direct.abort();
    backend.abort();
    let audit_lines = std::fs::read_to_string(&audit_path).map_or(0, |t| t.lines().count());
    let report = json!({
        "question": "latency the gateway adds (mTLS + verification with a stapled OCSP response + audit line + plain-HTTP hop) over the same request sent straight to an mTLS server",
        "machine": { "cores": std::thread::available_parallelism().map_or(1, |n| n.get()), "note": "client, servers and gateway share one process and the cores" },
        "requests_per_pass": settings.requests,
        "passes_per_path": settings.runs,
        "agent_key": "P-256",
        "revocation": "stapled OCSP (X-Agent-OCSP), verified by the gateway on every request",
        "gateway_audit_lines": audit_lines,
        "latency_unit": "µs",
        "by_concurrency": results,
        "measured_at_unix": agents::unix_secs(SystemTime::now()),
    });
    agents::write_report(out, &report)
}

/// Prints and returns one concurrency's comparison.
fn report(
    concurrency: usize,
    direct: &[Vec<(&str, f64)>],
    gateway: &[Vec<(&str, f64)>],
) -> serde_json::Value {
    println!("\nconcurrency {concurrency} (median of passes [min..max])");
    println!(
        "{:<15} {:>24} {:>24} {:>24}",
        "", "direct (mTLS floor)", "through the gateway", "difference"
    );
    let names: Vec<&str> = direct
        .first()
        .map(|f| f.iter().map(|(n, _)| *n).collect())
        .unwrap_or_default();
    let column = |runs: &[Vec<(&str, f64)>], i: usize| -> Vec<f64> {
        runs.iter()
            .filter_map(|f| f.get(i).map(|(_, v)| *v))
            .collect()
    };
    let mut entry = serde_json::Map::new();
    entry.insert("concurrency".into(), concurrency.into());
    let mut direct_json = serde_json::Map::new();
    let mut gateway_json = serde_json::Map::new();
    let mut difference_json = serde_json::Map::new();
    for (i, name) in names.iter().enumerate() {
        let d = column(direct, i);
        let g = column(gateway, i);
        // Per round: both paths sent the same requests back to back.
        let diff: Vec<f64> = g.iter().zip(&d).map(|(g, d)| g - d).collect();
        let (ds, gs, xs) = (
            agents::spread(&d),
            agents::spread(&g),
            agents::spread(&diff),
        );
        let show = agents::show;
        let label = if *name == "requests_per_s" {
            "requests/s".to_string()
        } else {
            format!("{name} µs")
        };
        println!(
            "{label:<15} {:>24} {:>24} {:>24}",
            show(&ds),
            show(&gs),
            show(&xs)
        );
        direct_json.insert((*name).into(), ds);
        gateway_json.insert((*name).into(), gs);
        difference_json.insert((*name).into(), xs);
    }
    entry.insert("direct".into(), direct_json.into());
    entry.insert("gateway".into(), gateway_json.into());
    entry.insert(
        "gateway_minus_direct_per_round".into(),
        difference_json.into(),
    );
    entry.into()
}
