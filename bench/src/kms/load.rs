//! The agent side: keep-alive plain-HTTP connections to the proxy, each
//! sending absolute-form requests (`http://api.exchange.com/...`) as an
//! agent configured with `HTTP_PROXY` does, and recording every answer's
//! latency and status.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::Request;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::setup::{HOST, READ_PATH, TRADE, TRADE_PATH};

/// What each request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// `GET /v1/markets`: no action matches, so it goes out unsigned; only
    /// new upstream connections ask the key for a signature.
    UnsignedGet,
    /// `POST /v1/trades`: the trade action, signed per request (RFC 9421).
    SignedPost,
}

impl Workload {
    pub fn label(self) -> &'static str {
        match self {
            Workload::UnsignedGet => "unsigned GET",
            Workload::SignedPost => "signed POST",
        }
    }

    fn request(self) -> anyhow::Result<Request<Full<Bytes>>> {
        let builder = Request::builder().header(http::header::HOST, HOST);
        Ok(match self {
            Workload::UnsignedGet => builder
                .method("GET")
                .uri(format!("http://{HOST}{READ_PATH}"))
                .body(Full::new(Bytes::new()))?,
            Workload::SignedPost => builder
                .method("POST")
                .uri(format!("http://{HOST}{TRADE_PATH}"))
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from_static(TRADE.as_bytes())))?,
        })
    }
}

/// How requests are paced.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// Each connection sends its next request as soon as the last answer
    /// arrived, until `requests` have been sent in all.
    Closed { requests: usize },
    /// `rate` requests per second for `seconds`, on a fixed schedule spread
    /// round-robin over the connections.
    Open { rate: f64, seconds: f64 },
}

/// What one run measured at the agent.
pub struct Outcome {
    /// Every answer, whatever its status (ns).
    pub all: Histogram<u64>,
    /// 200 answers only (ns).
    pub ok: Histogram<u64>,
    /// `200`, `503 signer_unavailable`, ... (status and `X-Kakunin-Error`),
    /// or `transport error` when the connection failed.
    pub statuses: BTreeMap<String, u64>,
    pub wall: Duration,
}

impl Outcome {
    fn new() -> anyhow::Result<Outcome> {
        Ok(Outcome {
            all: new_histogram()?,
            ok: new_histogram()?,
            statuses: BTreeMap::new(),
            wall: Duration::ZERO,
        })
    }

    fn merge(&mut self, other: Outcome) -> anyhow::Result<()> {
        self.all.add(&other.all)?;
        self.ok.add(&other.ok)?;
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        Ok(())
    }

    pub fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }

    pub fn count(&self, status: &str) -> u64 {
        self.statuses.get(status).copied().unwrap_or(0)
    }
}

/// Latencies in ns, 1 µs .. 60 s, 3 significant digits.
fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)?)
}

/// One agent connection to the proxy, reopened if the proxy closes it.
struct Connection {
    proxy: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    async fn open(proxy: SocketAddr) -> anyhow::Result<Connection> {
        let mut connection = Connection {
            proxy,
            sender: None,
        };
        connection.sender = Some(connection.connect().await?);
        Ok(connection)
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(self.proxy).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(sender)
    }

    /// Sends one request and reads the whole answer; the status label.
    async fn send(&mut self, workload: Workload) -> anyhow::Result<String> {
        let request = workload.request()?;
        let mut sender = match self.sender.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.connect().await?,
        };
        let label = crate::all::load::exchange(&mut sender, request).await?;
        self.sender = Some(sender);
        Ok(label)
    }
}

/// Records one answer (or a failed exchange) that took `took`.
fn record(outcome: &mut Outcome, answer: anyhow::Result<String>, took: Duration) {
    let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
    outcome.all.saturating_record(ns);
    let label = answer.unwrap_or_else(|_| "transport error".to_string());
    if label == "200" {
        outcome.ok.saturating_record(ns);
    }
    *outcome.statuses.entry(label).or_default() += 1;
}

/// Runs `workload` at `pace` over `concurrency` keep-alive connections to
/// the proxy at `proxy`.
pub async fn drive(
    proxy: SocketAddr,
    workload: Workload,
    pace: Pace,
    concurrency: usize,
) -> anyhow::Result<Outcome> {
    let concurrency = concurrency.max(1);
    let mut connections = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        connections.push(Connection::open(proxy).await?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(index, connection)| {
            let next = next.clone();
            tokio::spawn(async move {
                match pace {
                    Pace::Closed { requests } => {
                        closed_loop(connection, workload, &next, requests).await
                    }
                    Pace::Open { rate, seconds } => {
                        open_loop(
                            connection,
                            workload,
                            start,
                            index,
                            concurrency,
                            rate,
                            seconds,
                        )
                        .await
                    }
                }
            })
        })
        .collect();
    let mut outcome = Outcome::new()?;
    for task in tasks {
        outcome.merge(task.await??)?;
    }
    outcome.wall = start.elapsed();
    Ok(outcome)
}

async fn closed_loop(
    mut connection: Connection,
    workload: Workload,
    next: &AtomicUsize,
    requests: usize,
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::new()?;
    while next.fetch_add(1, Ordering::Relaxed) < requests {
        let sent = Instant::now();
        let answer = connection.send(workload).await;
        record(&mut outcome, answer, sent.elapsed());
    }
    Ok(outcome)
}

/// Request `i` is due at `start + i / rate`; this connection sends every
/// `i` with `i % connections == index`. Latency runs from the due time, not
/// the send: a request held up behind a slow one on its connection counts
/// its wait (no coordinated omission).
async fn open_loop(
    mut connection: Connection,
    workload: Workload,
    start: Instant,
    index: usize,
    connections: usize,
    rate: f64,
    seconds: f64,
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::new()?;
    let total = (rate * seconds).round() as usize;
    let interval = 1.0 / rate.max(0.001);
    for i in (index..total).step_by(connections) {
        let due = start + Duration::from_secs_f64(i as f64 * interval);
        tokio::time::sleep_until(due.into()).await;
        let answer = connection.send(workload).await;
        record(&mut outcome, answer, due.elapsed());
    }
    Ok(outcome)
}
