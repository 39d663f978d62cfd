//! The load generator: keep-alive HTTP/1.1 connections to one path, each
//! sending `POST` requests with the same body, closed loop (each connection
//! sends again as soon as its answer is read) or open loop (a fixed
//! schedule that any free connection takes the next request of). Every
//! answer's latency goes into an HDR histogram with its status.
//!
//! The KMS benchmark (`kms/load.rs`) paces its agents the same way but
//! over a fixed request count and round-robin; it is left as it is, so
//! that its published figures stay reproducible.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Where requests go and how they are framed.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// The upstream's name (`Host`, and SNI on the direct path).
    pub host: &'static str,
    pub path: &'static str,
    /// `Some`: the client speaks mTLS to the upstream itself (the direct
    /// path, origin-form). `None`: plain HTTP to a proxy, absolute-form
    /// (`POST http://host/path`), as an agent with `HTTP_PROXY` sends.
    pub tls: Option<TlsConnector>,
    pub body: Bytes,
}

impl Target {
    fn request(&self) -> anyhow::Result<Request<Full<Bytes>>> {
        let uri = match self.tls {
            Some(_) => self.path.to_string(),
            None => format!("http://{}{}", self.host, self.path),
        };
        Ok(Request::builder()
            .method("POST")
            .uri(uri)
            .header(http::header::HOST, self.host)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(self.body.clone()))?)
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        match &self.tls {
            Some(connector) => {
                let tls = connector
                    .connect(ServerName::try_from(self.host)?, stream)
                    .await
                    .context("TLS handshake")?;
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
                tokio::spawn(connection);
                Ok(sender)
            }
            None => {
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(connection);
                Ok(sender)
            }
        }
    }
}

/// What a run measured at the client.
pub struct Outcome {
    /// Every answer, whatever its status (ns).
    pub histogram: Histogram<u64>,
    /// `200`, `503 signer_unavailable` (status and `X-Kakunin-Error`), or
    /// `transport error`.
    pub statuses: BTreeMap<String, u64>,
    pub wall: Duration,
}

impl Outcome {
    fn new() -> anyhow::Result<Outcome> {
        Ok(Outcome {
            // 1 µs .. 60 s, 3 significant digits.
            histogram: Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)?,
            statuses: BTreeMap::new(),
            wall: Duration::ZERO,
        })
    }

    fn merge(&mut self, other: &Outcome) -> anyhow::Result<()> {
        self.histogram.add(&other.histogram)?;
        for (status, n) in &other.statuses {
            *self.statuses.entry(status.clone()).or_default() += n;
        }
        Ok(())
    }

    fn record(&mut self, answer: anyhow::Result<String>, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(ns);
        let label = answer.unwrap_or_else(|_| "transport error".to_string());
        *self.statuses.entry(label).or_default() += 1;
    }

    pub fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }

    pub fn ok(&self) -> u64 {
        self.statuses.get("200").copied().unwrap_or(0)
    }

    /// Answers per second over the run.
    pub fn rate(&self) -> f64 {
        self.answered() as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// One client connection, reopened if the server closed it.
pub struct Connection {
    target: Arc<Target>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    pub async fn open(target: Arc<Target>) -> anyhow::Result<Connection> {
        let sender = Some(target.connect().await?);
        Ok(Connection { target, sender })
    }

    /// Sends one request and reads the whole answer; its status label.
    pub async fn send(&mut self) -> anyhow::Result<String> {
        let request = self.target.request()?;
        let mut sender = match self.sender.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.target.connect().await?,
        };
        let label = exchange(&mut sender, request).await?;
        self.sender = Some(sender);
        Ok(label)
    }
}

/// Sends `request` on `sender`, reads the whole answer and labels it: the
/// status, with Kakunin's `X-Kakunin-Error` code when there is one.
pub async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<String> {
    let (status, code) = answer(sender, request).await?;
    Ok(match code {
        Some(code) => format!("{} {code}", status.as_u16()),
        None => status.as_u16().to_string(),
    })
}

/// Sends `request` on `sender` and reads the whole answer: its status and
/// Kakunin's `X-Kakunin-Error` code, if any.
pub async fn answer<B>(
    sender: &mut SendRequest<B>,
    request: Request<B>,
) -> anyhow::Result<(StatusCode, Option<String>)>
where
    B: hyper::body::Body + 'static,
{
    sender
        .ready()
        .await
        .context("the connection cannot take a request")?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let code = response
        .headers()
        .get("x-kakunin-error")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    response.into_body().collect().await?;
    Ok((status, code))
}

/// Opens `count` connections, `at_once` at a time, each sending one
/// request so that the server has parsed a request on it and holds it as
/// an idle keep-alive connection. Returns the connections (close them by
/// dropping) and the answers.
pub async fn open_many(
    target: &Arc<Target>,
    count: usize,
    at_once: usize,
) -> anyhow::Result<(Vec<Connection>, Outcome)> {
    let mut connections = Vec::with_capacity(count);
    let mut outcome = Outcome::new()?;
    let start = Instant::now();
    let mut remaining = count;
    while remaining > 0 {
        let batch = remaining.min(at_once.max(1));
        remaining -= batch;
        let tasks: Vec<_> = (0..batch)
            .map(|_| {
                let target = target.clone();
                tokio::spawn(async move {
                    let mut connection = Connection::open(target).await?;
                    let sent = Instant::now();
                    let answer = connection.send().await;
                    anyhow::Ok((connection, answer, sent.elapsed()))
                })
            })
            .collect();
        for task in tasks {
            let (connection, answer, took) = task.await??;
            outcome.record(answer, took);
            connections.push(connection);
        }
    }
    outcome.wall = start.elapsed();
    Ok((connections, outcome))
}

/// Each connection sends back to back until `seconds` have passed.
pub async fn closed_loop(
    connections: Vec<Connection>,
    seconds: f64,
) -> anyhow::Result<(Vec<Connection>, Outcome)> {
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|mut connection| {
            tokio::spawn(async move {
                let mut outcome = Outcome::new()?;
                while Instant::now() < end {
                    let sent = Instant::now();
                    let answer = connection.send().await;
                    outcome.record(answer, sent.elapsed());
                }
                anyhow::Ok((connection, outcome))
            })
        })
        .collect();
    gather(tasks, start).await
}

/// `rate` requests per second for `seconds`, released by the pacer's
/// thread (see `pacer` for why not tokio's timer, and for when latency runs
/// from the release): whichever connection is free takes the next one.
pub async fn open_loop(
    connections: Vec<Connection>,
    rate: f64,
    seconds: f64,
) -> anyhow::Result<(Vec<Connection>, Outcome)> {
    let total = (rate * seconds).round().max(1.0) as usize;
    let start = Instant::now();
    let released = super::pacer::start(total, rate).context("starting the open loop's pacer")?;
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|mut connection| {
            let released = released.clone();
            tokio::spawn(async move {
                let mut outcome = Outcome::new()?;
                while let Some(from) = released.next().await {
                    let answer = connection.send().await;
                    outcome.record(answer, from.elapsed());
                }
                anyhow::Ok((connection, outcome))
            })
        })
        .collect();
    gather(tasks, start).await
}

type Task = tokio::task::JoinHandle<anyhow::Result<(Connection, Outcome)>>;

async fn gather(tasks: Vec<Task>, start: Instant) -> anyhow::Result<(Vec<Connection>, Outcome)> {
    let mut connections = Vec::with_capacity(tasks.len());
    let mut outcome = Outcome::new()?;
    for task in tasks {
        let (connection, part) = task.await??;
        outcome.merge(&part)?;
        connections.push(connection);
    }
    outcome.wall = start.elapsed();
    Ok((connections, outcome))
}

/// The client's side of the direct path: the agent's certificate and key,
/// the agents' CA pinned, as the proxies present and verify them.
pub fn connector(
    ca: &rustls_pki_types::CertificateDer<'static>,
    cert: &rustls_pki_types::CertificateDer<'static>,
    key_pem: &str,
) -> anyhow::Result<TlsConnector> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone())?;
    let key =
        rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("agent key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert.clone()], key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}
