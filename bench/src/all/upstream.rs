//! The upstream every path reaches: an mTLS server on loopback that
//! requires a client certificate from the agents' CA, reads the request
//! body, answers a small JSON, and counts TLS handshakes and requests.
//!
//! The demo exchange (`kakunin::demo::exchange`) also counts handshakes,
//! but it echoes every header and the body back: with 1 KiB bodies and the
//! signature headers that answer would be several KiB and differ by path
//! (signed requests carry more headers), which would weigh on the paths
//! unequally. This one answers the same 43 bytes to everyone.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The whole answer, on every path.
pub const ANSWER: &str = r#"{"status":"accepted","order_id":"bench-1"}"#;

#[derive(Default)]
struct Counters {
    handshakes: AtomicU64,
    failed_handshakes: AtomicU64,
    requests: AtomicU64,
}

/// The running upstream; stops accepting when dropped.
pub struct Upstream {
    addr: SocketAddr,
    counters: Arc<Counters>,
    accept: tokio::task::JoinHandle<()>,
}

/// Handshake and request counts at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub handshakes: u64,
    pub failed_handshakes: u64,
    pub requests: u64,
}

impl std::ops::Sub for Counts {
    type Output = Counts;
    fn sub(self, before: Counts) -> Counts {
        Counts {
            handshakes: self.handshakes.saturating_sub(before.handshakes),
            failed_handshakes: self
                .failed_handshakes
                .saturating_sub(before.failed_handshakes),
            requests: self.requests.saturating_sub(before.requests),
        }
    }
}

impl Upstream {
    pub async fn start(
        server_chain_pem: &str,
        server_key_pem: &str,
        client_ca: &CertificateDer<'static>,
    ) -> anyhow::Result<Upstream> {
        let acceptor = crate::tls::mtls_acceptor(server_chain_pem, server_key_pem, client_ca)?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let accept_counters = counters.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(acceptor.clone(), stream, accept_counters.clone()));
            }
        });
        Ok(Upstream {
            addr,
            counters,
            accept,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn counts(&self) -> Counts {
        Counts {
            handshakes: self.counters.handshakes.load(Ordering::Relaxed),
            failed_handshakes: self.counters.failed_handshakes.load(Ordering::Relaxed),
            requests: self.counters.requests.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve(acceptor: TlsAcceptor, stream: tokio::net::TcpStream, counters: Arc<Counters>) {
    let tls = match acceptor.accept(stream).await {
        Ok(tls) => tls,
        Err(_) => {
            counters.failed_handshakes.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    counters.handshakes.fetch_add(1, Ordering::Relaxed);
    let service = service_fn(move |request: Request<Incoming>| {
        counters.requests.fetch_add(1, Ordering::Relaxed);
        answer(request)
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .await;
}

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
