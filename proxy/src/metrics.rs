//! The proxy's metrics, in Prometheus text format on `GET /metrics` of a
//! separate loopback listener (`metrics_listen`): never on the agents'
//! listener, where any path belongs to the agent's traffic.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabel {
    /// `file`, `aws-kms` or `pkcs11`.
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub backend: String,
    /// `KeyError::kind()`: timeout, throttled, unreachable, refused, busy, ...
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabel {
    /// `outside_allowed_hours` or `region_denied`.
    pub reason: String,
}

/// Signing through the agent's key: every call that reached the backend
/// (KMS, HSM or file), how long it took, and how the failed ones failed.
#[derive(Debug)]
pub struct KeyMetrics {
    pub calls: Family<BackendLabel, Counter>,
    pub errors: Family<ErrorLabel, Counter>,
    pub seconds: Family<BackendLabel, Histogram>,
    /// Signatures refused locally, before any call, by the context check.
    pub context_refusals: Family<RefusalLabel, Counter>,
}

/// Buckets from 0.1 ms (a file key) to 10 s (a KMS call at its deadline).
fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        10.0,
    ]
    .into_iter()
}

/// Batch signatures (`[signing] batch`): how many requests each key
/// signature covered, and how many requests wait for one now.
#[derive(Debug)]
pub struct BatchMetrics {
    pub size: Histogram,
    pub waiting: Gauge,
}

/// Every metric the proxy exports, and the registry that prints them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub key: Arc<KeyMetrics>,
    pub batch: Arc<BatchMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let key = Arc::new(KeyMetrics {
            calls: Family::default(),
            errors: Family::default(),
            seconds: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
            context_refusals: Family::default(),
        });
        let mut registry = Registry::with_prefix("kakunin");
        registry.register(
            "key_sign_calls",
            "Signatures asked of the agent key's backend (TLS handshakes and request signatures)",
            key.calls.clone(),
        );
        registry.register(
            "key_sign_errors",
            "Signatures the agent key's backend failed, by kind",
            key.errors.clone(),
        );
        registry.register(
            "key_sign_duration_seconds",
            "Time one signature took, waiting included",
            key.seconds.clone(),
        );
        registry.register(
            "key_context_refusals",
            "Signatures refused before calling the key, outside the policy's hours or regions",
            key.context_refusals.clone(),
        );
        let batch = Arc::new(BatchMetrics {
            // Powers of two up to MAX_BATCH (256).
            size: Histogram::new((0..=8).map(|p| f64::from(1u32 << p))),
            waiting: Gauge::default(),
        });
        registry.register(
            "request_signature_batch_size",
            "Requests covered by one batch signature",
            batch.size.clone(),
        );
        registry.register(
            "request_signature_batch_waiting",
            "Requests waiting for their batch signature",
            batch.waiting.clone(),
        );
        Metrics {
            registry,
            key,
            batch,
        }
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// Serves `/metrics` until the listener fails or the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors, most likely: wait instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(answer(&req, &metrics)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "GET only\n".to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: this listener serves GET /metrics\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// Binds the metrics listener; loopback only unless the operator allows
/// remote clients, like the agents' listener.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))
}
