//! `kakunin ca serve`: the CA's public face over plain HTTP.
//!
//! - `POST /ocsp` and `GET /ocsp/{base64 request}`: RFC 6960 OCSP (A.1).
//! - `GET /crl`: the current CRL (DER, `application/pkix-crl`).
//! - `GET /healthz`: the database answers.
//! - `GET /watch`: revocation announcements as server-sent events.
//!
//! The database may be changed by other processes (`kakunin ca revoke`), so
//! a poller reads new events every `poll_interval`, matures scheduled
//! revocations (rotation grace periods), and fans the events out to
//! watchers. Database calls block, so they run on blocking threads.
//!
//! Nothing here is authenticated, so every resource a client can make the
//! server hold is bounded: connections (`max_connections`), the time to
//! send a request head or body and to read a response, watch
//! subscriptions (in total and per client address), and blocking work
//! (`max_ocsp_in_flight`, answered with OCSP `tryLater` or HTTP 503 when
//! full, never queued).

mod conn;
mod crl_cache;
mod ocsp_http;
mod watch;
mod watch_slots;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use kakunin_authority::Authority;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::body::{full, ProxyBody};
use crl_cache::CrlCache;
use watch::Watchers;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How often the database is polled for revocations made elsewhere.
    pub poll_interval: Duration,
    /// OCSP answers' nextUpdate - thisUpdate.
    pub ocsp_validity: Duration,
    /// CRLs' nextUpdate - thisUpdate.
    pub crl_validity: Duration,
    /// Open connections at most (watch streams included); beyond that, new
    /// connections are accepted and closed at once.
    pub max_connections: usize,
    /// Time allowed for a request head to arrive (and for an idle
    /// keep-alive connection to send its next request).
    pub header_read_timeout: Duration,
    /// Time allowed for a request body (POST /ocsp) to arrive; then 408.
    pub body_read_timeout: Duration,
    /// A client that reads nothing for this long is cut off: its writes
    /// stalled, or its watch stream's buffer stayed full.
    pub stall_timeout: Duration,
    pub max_watchers: usize,
    /// Watch subscriptions per client (an IPv4 address or an IPv6 /64);
    /// beyond it, 429.
    pub max_watchers_per_ip: usize,
    /// OCSP answers (and CRL signatures, health checks) being worked on at
    /// once; beyond it OCSP gets `tryLater`, the others 503.
    pub max_ocsp_in_flight: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            poll_interval: Duration::from_millis(20),
            ocsp_validity: Duration::from_secs(3600),
            crl_validity: Duration::from_secs(24 * 3600),
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
            max_watchers: 1024,
            max_watchers_per_ip: 16,
            max_ocsp_in_flight: 64,
        }
    }
}

pub(crate) struct Shared {
    authority: Authority,
    options: ServeOptions,
    watchers: Watchers,
    crl: CrlCache,
    /// Permits for blocking work requested by clients.
    work: Arc<Semaphore>,
}

/// A running responder; dropping it does not stop it (use `shutdown`).
pub struct Responder {
    addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Responder {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }
}

/// Binds and serves until `shutdown` (or the runtime ends).
pub async fn start(
    authority: Authority,
    listener: TcpListener,
    options: ServeOptions,
) -> anyhow::Result<Responder> {
    let addr = listener.local_addr()?;
    let last_event = {
        let store = authority.store();
        store.last_event_id()?
    };
    let shared = Arc::new(Shared {
        watchers: Watchers::new(
            last_event,
            options.max_watchers,
            options.max_watchers_per_ip,
        ),
        crl: CrlCache::default(),
        work: Arc::new(Semaphore::new(
            options.max_ocsp_in_flight.min(Semaphore::MAX_PERMITS),
        )),
        authority,
        options,
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(watch::poll_events(shared.clone(), stopped.clone()));
    tokio::spawn(conn::accept_loop(listener, shared, stopped));
    Ok(Responder { addr, stop })
}

/// `kakunin ca serve`: binds, prints the address, serves until SIGINT or
/// SIGTERM.
pub async fn serve_until_signalled(
    authority: Authority,
    listen: SocketAddr,
    options: ServeOptions,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let public_url = authority.settings().public_url.clone();
    let responder = start(authority, listener, options).await?;
    tracing::info!(%public_url, "certificates point relying parties at this URL");
    // Tests and supervisors wait for this exact line.
    eprintln!("kakunin: ca serving on {}", responder.addr());
    crate::run::shutdown_signal().await;
    responder.shutdown();
    Ok(())
}

async fn route(
    shared: Arc<Shared>,
    stopped: tokio::sync::watch::Receiver<bool>,
    peer: IpAddr,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let path = request.uri().path().to_string();
    match (request.method().clone(), path.as_str()) {
        (Method::POST, "/ocsp" | "/ocsp/" | "/") => ocsp_http::post(shared, request).await,
        (Method::GET, p) if p.starts_with("/ocsp/") => {
            let encoded = p.trim_start_matches("/ocsp/").to_string();
            ocsp_http::get(shared, &encoded).await
        }
        (Method::GET, "/crl") => crl_cache::serve(shared).await,
        (Method::GET, "/healthz") => healthz(shared).await,
        (Method::GET, "/watch") => watch::subscribe(shared, stopped, peer, request.headers()).await,
        (_, "/ocsp" | "/crl" | "/healthz" | "/watch") => plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed for this path\n",
        ),
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found: this server answers /ocsp, /crl, /healthz and /watch\n",
        ),
    }
}

async fn healthz(shared: Arc<Shared>) -> Response<ProxyBody> {
    // A check is blocking work like any other; a saturated server says so
    // (which is also what a load balancer should hear).
    let Ok(permit) = shared.work.clone().try_acquire_owned() else {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "busy"}),
        );
    };
    let checked = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        shared.authority.store().last_event_id()
    })
    .await;
    match checked {
        Ok(Ok(last)) => json(
            StatusCode::OK,
            serde_json::json!({"status": "ok", "last_event_id": last}),
        ),
        Ok(Err(err)) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "error", "error": err.to_string()}),
        ),
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "health check failed\n"),
    }
}

pub(crate) fn plain(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(full(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<ProxyBody> {
    let mut response = Response::new(full(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

pub(crate) fn binary(content_type: &'static str, der: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut response = Response::new(full(der));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}
