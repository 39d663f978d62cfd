//! The pieces the KMS benchmark runs in one process: an agents' CA (the
//! project's own), an mTLS exchange that requires the agent's certificate,
//! an agent certificate per key backend (a PEM file; a key in the KMS
//! stand-in, certified from the public key KMS reports), and the proxy
//! itself, built from a `Config` as `kakunin proxy` builds it, with its
//! `/metrics` listener.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use kakunin::config::{CertSource, Config};
use kakunin::demo::exchange::{Exchange, ExchangeTls};
use kakunin_authority::{AgentRequest, ServerRequest, SubjectKey, Validity};
use kakunin_signer::KeyOptions;
use serde_json::json;

use crate::agents;

pub const AGENT_ID: &str = "bench_kms_bot";
pub const HOST: &str = "api.exchange.com";
pub const TRADE_PATH: &str = "/v1/trades";
pub const READ_PATH: &str = "/v1/markets";
pub const TRADE: &str = r#"{"market":"EUR_USD","size":45000}"#;
pub const REGION: &str = "eu-west-1";

/// The agent's scope: trades are an action, so signed (POSTs are signed by
/// default); reads match no action, so GETs go out unsigned. Revocation
/// checks are off so that no OCSP traffic, nor a responder's connections,
/// mixes into what is measured: the question is the key's cost.
fn policy_json() -> String {
    json!({
        "agent_id": AGENT_ID,
        "network_rules": { "allowed_hosts": [HOST] },
        "actions": [{
            "name": "submit_trade",
            "match": { "method": "POST", "host": HOST, "path": TRADE_PATH },
            "body": { "/market": { "in": ["EUR_USD", "GBP_USD"] }, "/size": { "max": 50000 } }
        }],
        "revocation_check": { "enabled": false }
    })
    .to_string()
}

/// The CA, the exchange and the files every proxy run shares.
pub struct Site {
    pub lab: agents::Lab,
    pub exchange: Exchange,
    dir: tempfile::TempDir,
    policy_path: PathBuf,
    policy: kakunin_policy::Policy,
}

/// Which key the proxy signs with.
#[derive(Clone, Debug)]
pub enum Backend {
    /// `file:` a P-256 PEM key.
    File,
    /// `aws-kms:ARN` in the stand-in at `endpoint`.
    AwsKms { arn: String, endpoint: String },
}

impl Backend {
    /// The `backend` label the proxy's metrics use.
    pub fn label(&self) -> &'static str {
        match self {
            Backend::File => "file",
            Backend::AwsKms { .. } => "aws-kms",
        }
    }
}

impl Site {
    pub async fn new() -> anyhow::Result<Site> {
        let lab = agents::Lab::new()?;
        let dir = tempfile::tempdir()?;
        let server = lab.ca.issue_server(&ServerRequest {
            names: vec![HOST.into()],
            validity: Validity::Days(1),
        })?;
        let exchange = Exchange::start(
            "127.0.0.1:0".parse()?,
            &ExchangeTls {
                server_chain_pem: &server.cert_pem,
                server_key_pem: server.key_pem.as_deref().context("the server key")?,
                client_ca_pem: lab.ca.certificate_pem(),
                tls12_only: false,
            },
        )
        .await?;
        let text = policy_json();
        let policy_path = dir.path().join("policy.json");
        std::fs::write(&policy_path, &text)?;
        let policy = kakunin_policy::Policy::from_json_str("policy.json", &text)
            .map_err(|e| anyhow::anyhow!("bench policy: {e}"))?;
        Ok(Site {
            lab,
            exchange,
            dir,
            policy_path,
            policy,
        })
    }

    /// Issues the agent certificate for `backend` and returns the proxy's
    /// configuration for it. For KMS the CA certifies the public key KMS
    /// reports (GetPublicKey through the proxy's own backend and the SDK),
    /// as `kakunin ca issue --public-key-from aws-kms:ARN` does.
    pub fn config(&self, backend: &Backend) -> anyhow::Result<Config> {
        let name = backend.label();
        let mut key_options = KeyOptions::default();
        let (subject, identity_key) = match backend {
            Backend::File => (SubjectKey::Generate, String::new()),
            Backend::AwsKms { arn, endpoint } => {
                key_options.kms_endpoint = Some(endpoint.clone());
                let reference = format!("aws-kms:{arn}");
                let key = kakunin_signer::open_key_with(&reference, &key_options)
                    .with_context(|| format!("opening {reference} in the stand-in"))?;
                (
                    SubjectKey::SpkiDer(key.public_key_spki().to_vec()),
                    reference,
                )
            }
        };
        let issued = self.lab.ca.issue_agent(&AgentRequest {
            agent_id: AGENT_ID,
            policy: &self.policy,
            key: subject,
            validity: Validity::Days(1),
        })?;
        let cert_path = self.path(&format!("agent-{name}.pem"));
        std::fs::write(&cert_path, &issued.cert_pem)?;
        let identity_key = match &issued.key_pem {
            Some(pem) => {
                let key_path = self.path(&format!("agent-{name}-key.pem"));
                kakunin_authority::write_private_key(&key_path, pem)?;
                format!("file:{}", key_path.display())
            }
            None => identity_key,
        };
        let mut resolve = BTreeMap::new();
        resolve.insert(HOST.to_string(), self.exchange.addr());
        Ok(Config {
            listen: "127.0.0.1:0".parse()?,
            policy: self.policy_path.clone(),
            region: Some(REGION.into()),
            body_limit: kakunin::config::DEFAULT_BODY_LIMIT,
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            audit_log: Some(self.path(&format!("audit-{name}.jsonl"))),
            identity_cert: CertSource::File(cert_path),
            identity_key,
            key_options,
            identity_issuer: Some(self.lab.ca.certificate_path()),
            reload_interval: Duration::from_secs(1),
            ocsp_url: None,
            watch_url: Some("off".into()),
            revocation_timeout: Duration::from_secs(2),
            require_nonce: true,
            signing_lifetime_secs: kakunin::signing::DEFAULT_LIFETIME_SECS,
            signing_batch: false,
            upstream_ca: self.lab.ca.certificate_path(),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            // The seed's default: as many idle upstream connections as the
            // benchmark's default concurrency.
            max_idle_per_host: 16,
            resolve,
            metrics_listen: Some("127.0.0.1:0".parse()?),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A proxy serving in this process, as `kakunin proxy` serves, with its
/// `/metrics` listener.
pub struct Proxy {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    metrics: tokio::task::JoinHandle<()>,
    _background: kakunin::run::Background,
}

impl Proxy {
    /// A fresh proxy: empty upstream pool, no TLS session tickets, its
    /// metrics at zero, so each run counts from a cold start.
    pub async fn start(config: &Config) -> anyhow::Result<Proxy> {
        // Opening an `aws-kms:` key waits for KMS on a channel; that must
        // not stall a worker of this runtime, which also serves the
        // stand-in.
        let built = tokio::task::block_in_place(|| kakunin::run::build(config))?;
        let metrics = built.metrics.clone();
        let (proxy, settings, background) = built.start();
        let listener = kakunin::server::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let metrics_listener =
            kakunin::metrics::bind(config.metrics_listen.context("metrics_listen")?).await?;
        let metrics_addr = metrics_listener.local_addr()?;
        let metrics = tokio::spawn(kakunin::metrics::serve(metrics_listener, metrics));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(kakunin::server::serve(listener, proxy, settings, async {
            let _ = stopped.await;
        }));
        Ok(Proxy {
            addr,
            metrics_addr,
            stop: Some(stop),
            server,
            metrics,
            _background: background,
        })
    }

    /// The proxy's `/metrics` text, fetched over HTTP as a scraper would.
    pub async fn scrape(&self) -> anyhow::Result<String> {
        let stream = tokio::net::TcpStream::connect(self.metrics_addr).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = http::Request::get("/metrics")
            .header(http::header::HOST, self.metrics_addr.to_string())
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let body = response.into_body().collect().await?.to_bytes();
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(11), &mut self.server).await;
        self.metrics.abort();
    }
}

/// What the proxy's `/metrics` said about its key.
#[derive(Debug, Default, Clone)]
pub struct KeyCounts {
    pub sign_calls: u64,
    /// By `kind` label.
    pub sign_errors: BTreeMap<String, u64>,
    pub sign_seconds_sum: f64,
    pub sign_seconds_count: u64,
}

/// Reads the key metrics from Prometheus/OpenMetrics text (summed over
/// label sets; one proxy has one backend).
pub fn key_counts(text: &str) -> KeyCounts {
    let mut counts = KeyCounts::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        // Counters are whole numbers printed as floats.
        let whole = value.max(0.0).round() as u64;
        match name {
            "kakunin_key_sign_calls_total" => counts.sign_calls += whole,
            "kakunin_key_sign_errors_total" => {
                let kind = label(series, "kind").unwrap_or("unknown").to_string();
                *counts.sign_errors.entry(kind).or_default() += whole;
            }
            "kakunin_key_sign_duration_seconds_sum" => counts.sign_seconds_sum += value,
            "kakunin_key_sign_duration_seconds_count" => counts.sign_seconds_count += whole,
            _ => {}
        }
    }
    counts
}

fn label<'a>(series: &'a str, name: &str) -> Option<&'a str> {
    let labels = series.split_once('{')?.1.trim_end_matches('}');
    labels.split(',').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name).then(|| value.trim().trim_matches('"'))
    })
}
