//! A small mTLS "exchange" for the demo, the tests and the benchmarks: it
//! requires a client certificate from a given CA, counts TLS handshakes, and
//! answers every request with a JSON echo of what it received.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

use crate::identity::summarize;

/// PEM inputs for [`Exchange::start`].
pub struct ExchangeTls<'a> {
    pub server_chain_pem: &'a str,
    pub server_key_pem: &'a str,
    /// Client certificates must chain to this CA.
    pub client_ca_pem: &'a str,
    /// Offer TLS 1.2 only (an older API gateway).
    pub tls12_only: bool,
}

#[derive(Default)]
struct Counters {
    handshakes: AtomicU64,
    failed_handshakes: AtomicU64,
    requests: AtomicU64,
}

pub struct Exchange {
    addr: SocketAddr,
    counters: Arc<Counters>,
    stop: Option<oneshot::Sender<()>>,
}

impl Exchange {
    pub async fn start(listen: SocketAddr, tls: &ExchangeTls<'_>) -> anyhow::Result<Exchange> {
        let chain = CertificateDer::pem_slice_iter(tls.server_chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .context("exchange certificate")?;
        let key =
            PrivateKeyDer::from_pem_slice(tls.server_key_pem.as_bytes()).context("exchange key")?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(tls.client_ca_pem.as_bytes()) {
            roots.add(ca.context("client CA")?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .context("client certificate verifier")?;
        let versions: &[&rustls::SupportedProtocolVersion] = if tls.tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .context("exchange certificate and key")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        Self::serve(listen, Some(acceptor)).await
    }

    /// The same exchange over plain HTTP, as the backend behind
    /// `kakunin gateway`: the gateway terminates mTLS and verifies, and
    /// names the client in `X-Kakunin-Agent-Id` / `X-Kakunin-Cert-Serial`.
    pub async fn start_plain(listen: SocketAddr) -> anyhow::Result<Exchange> {
        Self::serve(listen, None).await
    }

    async fn serve(listen: SocketAddr, tls: Option<TlsAcceptor>) -> anyhow::Result<Exchange> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let (stop, mut stopped) = oneshot::channel();
        let accept_counters = counters.clone();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                    _ = &mut stopped => break,
                };
                let counters = accept_counters.clone();
                match tls.clone() {
                    Some(acceptor) => {
                        tokio::spawn(serve_tls(acceptor, stream, counters));
                    }
                    None => {
                        tokio::spawn(serve_connection(TokioIo::new(stream), None, counters));
                    }
                }
            }
        });
        Ok(Exchange {
            addr,
            counters,
            stop: Some(stop),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Completed TLS handshakes (each a new connection from the proxy).
    pub fn handshakes(&self) -> u64 {
        self.counters.handshakes.load(Ordering::Relaxed)
    }

    /// Handshakes that failed, e.g. a client without a valid certificate.
    pub fn failed_handshakes(&self) -> u64 {
        self.counters.failed_handshakes.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.counters.requests.load(Ordering::Relaxed)
    }
}

async fn serve_tls(acceptor: TlsAcceptor, stream: tokio::net::TcpStream, counters: Arc<Counters>) {
    let tls = match acceptor.accept(stream).await {
        Ok(tls) => tls,
        Err(_) => {
            counters.failed_handshakes.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    counters.handshakes.fetch_add(1, Ordering::Relaxed);
    let client = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|leaf| summarize(leaf).ok())
        .map(|c| (c.common_name, c.serial_hex));
    serve_connection(TokioIo::new(tls), client, counters).await;
}

/// `client` is the TLS client certificate's (CN, serial); without TLS the
/// gateway's `X-Kakunin-*` headers say who it verified.
async fn serve_connection<I>(io: I, client: Option<(String, String)>, counters: Arc<Counters>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let client = client.clone().or_else(|| {
            let header = |name| {
                request
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            Some((
                header("x-kakunin-agent-id")?,
                header("x-kakunin-cert-serial")?,
            ))
        });
        echo(request, client)
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await;
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

type EchoBody = http_body_util::combinators::UnsyncBoxBody<Bytes, hyper::Error>;

/// Sends a first piece of its body and then nothing, ever: an upstream that
/// hangs mid-response.
struct StalledBody {
    sent: bool,
}

impl http_body::Body for StalledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        if self.sent {
            return std::task::Poll::Pending;
        }
        self.sent = true;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
            b"{\"partial\":",
        )))))
    }
}

async fn echo(
    request: Request<Incoming>,
    client: Option<(String, String)>,
) -> Result<Response<EchoBody>, hyper::Error> {
    let (parts, body) = request.into_parts();
    // `/stall` answers 200 with a body that never finishes.
    if parts.uri.path() == "/stall" {
        let mut response = Response::new(StalledBody { sent: false }.boxed_unsync());
        response.headers_mut().insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from_static("100"),
        );
        return Ok(response);
    }
    // `/slow?ms=N` holds the response (tests of in-flight limits).
    if parts.uri.path() == "/slow" {
        let ms = parts
            .uri
            .query()
            .and_then(|q| q.strip_prefix("ms="))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(1000)
            .min(10_000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let body = body.collect().await?.to_bytes();
    let headers: BTreeMap<String, Value> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()),
            )
        })
        .collect();
    let reply = json!({
        "status": "accepted",
        "method": parts.method.as_str(),
        "path": parts.uri.to_string(),
        "client_cert_cn": client.as_ref().map(|c| c.0.clone()),
        "client_cert_serial": client.as_ref().map(|c| c.1.clone()),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut response = Response::new(
        Full::new(Bytes::from(reply.to_string()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
