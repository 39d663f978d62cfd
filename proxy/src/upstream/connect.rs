use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::error::UpstreamError;
use super::pool::RequestSender;

/// Opens new upstream connections: TCP to an address that already passed the
/// policy's checks, then TLS naming the host, then HTTP/1.1.
#[derive(Clone)]
pub struct Connector {
    /// Replaced when the identity changes: the old one's TLS session cache
    /// would resume sessions authenticated with the old certificate.
    tls: Arc<std::sync::RwLock<TlsConnector>>,
    connect_timeout: Duration,
    handshakes: Arc<AtomicU64>,
}

impl Connector {
    pub fn new(config: Arc<rustls::ClientConfig>, connect_timeout: Duration) -> Self {
        Connector {
            tls: Arc::new(std::sync::RwLock::new(TlsConnector::from(config))),
            connect_timeout,
            handshakes: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Forgets every TLS session ticket: a resumed session would carry the
    /// client certificate of the handshake it resumes, not the current one.
    pub fn forget_sessions(&self) {
        let mut tls = self.tls.write().unwrap_or_else(|p| p.into_inner());
        let mut config = rustls::ClientConfig::clone(tls.config());
        config.resumption = rustls::client::Resumption::default();
        *tls = TlsConnector::from(Arc::new(config));
    }

    fn tls(&self) -> TlsConnector {
        self.tls.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// TLS handshakes completed so far (a pooling health figure).
    pub fn handshakes(&self) -> u64 {
        self.handshakes.load(Ordering::Relaxed)
    }

    /// Tries each address in order; the first that completes TCP + TLS wins.
    /// The error returned is the last address's, which names the reason.
    pub async fn connect(
        &self,
        host: &str,
        addrs: &[SocketAddr],
    ) -> Result<(RequestSender, SocketAddr), UpstreamError> {
        let server_name = ServerName::try_from(host.to_string()).map_err(|_| {
            UpstreamError::new(
                "upstream_tls_failed",
                format!("{host:?} cannot be used as a TLS server name"),
            )
        })?;
        let mut last = UpstreamError::new("upstream_connect_failed", "no address to connect to");
        for addr in addrs {
            match self.connect_one(server_name.clone(), *addr).await {
                Ok(sender) => return Ok((sender, *addr)),
                Err(err) => last = err,
            }
        }
        Err(last)
    }

    async fn connect_one(
        &self,
        server_name: ServerName<'static>,
        addr: SocketAddr,
    ) -> Result<RequestSender, UpstreamError> {
        // One deadline for TCP and TLS together: a peer that accepts and then
        // never answers the handshake must not hold the request forever.
        let dial = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| UpstreamError::from_io(&e, addr))?;
            // Requests are small and latency-bound.
            let _ = tcp.set_nodelay(true);
            self.tls()
                .connect(server_name, tcp)
                .await
                .map_err(|e| UpstreamError::from_io(&e, addr))
        };
        let tls = tokio::time::timeout(self.connect_timeout, dial)
            .await
            .map_err(|_| UpstreamError::timeout("TCP/TLS connection", addr))??;
        self.handshakes.fetch_add(1, Ordering::Relaxed);

        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| {
                UpstreamError::new(
                    "upstream_protocol_error",
                    format!("HTTP/1.1 setup with {addr} failed: {e}"),
                )
            })?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%addr, error = %err, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}
