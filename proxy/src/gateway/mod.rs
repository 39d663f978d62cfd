//! `kakunin gateway`: the receiver's side as a reverse proxy, for services
//! that are not written in Rust and cannot embed `kakunin-verifier`.
//!
//! It terminates mutual TLS (a client certificate from the configured CAs
//! is required), runs the verifier on every request, and forwards accepted
//! ones over plain HTTP/1.1 to a backend on loopback, adding
//! `X-Kakunin-Agent-Id`, `X-Kakunin-Cert-Serial` and, when a scope action
//! rule matched, `X-Kakunin-Action`. Refused requests get the seed's
//! statuses (401 identity, revocation and signature; 400 timestamp; 403
//! scope) and never reach the backend. Every request leaves one JSON line in
//! the audit log with the seed's receiver fields.
//!
//! Until the handshake succeeds a client is anonymous, so what it can hold
//! is bounded: connections (`max_connections`, beyond which new ones are
//! closed at once) and the handshake time. After it, the request head,
//! the body's size and its arrival time are bounded too.

mod backend;
mod conn;
mod handle;
mod record;
#[cfg(test)]
mod tests;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kakunin_verifier::{Verifier, VerifierConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::audit::AuditLog;
use backend::Backend;

/// Bounds on what one client may make the gateway hold.
#[derive(Debug, Clone)]
pub struct GatewayLimits {
    /// Open connections at most; beyond that new ones are closed at once.
    pub max_connections: usize,
    /// Largest request head; hyper needs at least 8192.
    pub max_header_bytes: usize,
    /// Largest request body; 413 above.
    pub max_body_bytes: usize,
    /// For the TLS handshake, and for each request head (including the wait
    /// for the next one on a kept-alive connection).
    pub header_read_timeout: Duration,
    /// For the whole request body; 408 after.
    pub body_read_timeout: Duration,
    /// For the backend's response head, and for each piece of its body.
    pub backend_timeout: Duration,
    /// For one OCSP exchange with the responder.
    pub ocsp_timeout: Duration,
}

impl Default for GatewayLimits {
    fn default() -> Self {
        GatewayLimits {
            max_connections: 1024,
            max_header_bytes: 64 * 1024,
            max_body_bytes: 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            backend_timeout: Duration::from_secs(30),
            ocsp_timeout: Duration::from_secs(2),
        }
    }
}

/// Everything `start` needs, already read from wherever it came from.
#[derive(Clone)]
pub struct GatewaySettings {
    pub listen: SocketAddr,
    /// The gateway's own certificate chain (PEM, leaf first).
    pub server_chain_pem: String,
    /// Its private key (PEM: PKCS#8, SEC1 or PKCS#1).
    pub server_key_pem: String,
    /// The receiver's checks. Its trust anchors are also the only CAs whose
    /// client certificates the TLS layer accepts: one list, so the two
    /// layers cannot disagree about who may connect.
    pub verifier: VerifierConfig,
    /// Where accepted requests go, over plain HTTP.
    pub backend: SocketAddr,
    /// Permit a backend that is not on loopback (the hop after the gateway
    /// is plain HTTP, readable by anyone on the path).
    pub allow_remote_backend: bool,
    /// JSON-lines audit log; `None` = standard output.
    pub audit_log: Option<PathBuf>,
    pub limits: GatewayLimits,
}

impl std::fmt::Debug for GatewaySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the key.
        f.debug_struct("GatewaySettings")
            .field("listen", &self.listen)
            .field("verifier", &self.verifier)
            .field("backend", &self.backend)
            .field("allow_remote_backend", &self.allow_remote_backend)
            .field("audit_log", &self.audit_log)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl GatewaySettings {
    /// Settings with the default limits, the audit log on standard output
    /// and a loopback listener on an ephemeral port.
    pub fn new(
        verifier: VerifierConfig,
        server_chain_pem: String,
        server_key_pem: String,
        backend: SocketAddr,
    ) -> GatewaySettings {
        GatewaySettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            server_chain_pem,
            server_key_pem,
            verifier,
            backend,
            allow_remote_backend: false,
            audit_log: None,
            limits: GatewayLimits::default(),
        }
    }
}

/// Why the gateway cannot start; each says what to change.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("server certificate: {0}")]
    ServerCertificate(String),
    #[error("client CA: {0}")]
    ClientCa(String),
    #[error("verifier: {0}")]
    Verifier(#[from] kakunin_verifier::ConfigError),
    #[error(
        "backend {0} is not on loopback: the hop to it is plain HTTP; \
         put the backend on 127.0.0.1/::1 or pass --allow-remote-backend"
    )]
    RemoteBackend(SocketAddr),
    #[error("{0}")]
    Limits(String),
    #[error("cannot open audit log {path}: {source}")]
    AuditLog {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What every connection shares.
struct Shared {
    verifier: Verifier,
    audit: AuditLog,
    backend: Arc<Backend>,
    limits: GatewayLimits,
}

/// A running gateway. Dropping it does not stop it (use `shutdown`).
pub struct Gateway {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl Gateway {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections; requests in flight finish.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// `shutdown`, then waits until connections have closed (at most 10 s).
    pub async fn stopped(self) {
        self.shutdown();
        let _ = self.done.await;
    }
}

/// Checks the settings, binds the listener and serves in the background.
pub async fn start(settings: GatewaySettings) -> Result<Gateway, GatewayError> {
    if !settings.allow_remote_backend && !settings.backend.ip().is_loopback() {
        return Err(GatewayError::RemoteBackend(settings.backend));
    }
    let limits = settings.limits.clone();
    if limits.max_header_bytes < 8192 {
        return Err(GatewayError::Limits(format!(
            "max header bytes {} is below the minimum of 8192",
            limits.max_header_bytes
        )));
    }
    if limits.max_connections == 0 {
        return Err(GatewayError::Limits(
            "max connections must be at least 1".into(),
        ));
    }
    let acceptor = tls::acceptor(
        &settings.server_chain_pem,
        &settings.server_key_pem,
        &settings.verifier.trust_anchors,
    )?;
    let verifier = Verifier::new(settings.verifier)?;
    let audit =
        AuditLog::open(settings.audit_log.as_deref()).map_err(|source| GatewayError::AuditLog {
            path: settings
                .audit_log
                .as_deref()
                .map_or("-".into(), |p| p.display().to_string()),
            source,
        })?;
    let listener =
        TcpListener::bind(settings.listen)
            .await
            .map_err(|source| GatewayError::Listen {
                addr: settings.listen,
                source,
            })?;
    let addr = listener
        .local_addr()
        .map_err(|source| GatewayError::Listen {
            addr: settings.listen,
            source,
        })?;
    let shared = Arc::new(Shared {
        verifier,
        audit,
        backend: Arc::new(Backend::new(settings.backend, limits.backend_timeout)),
        limits,
    });
    let (stop, stopped) = watch::channel(false);
    let done = tokio::spawn(conn::accept_loop(listener, acceptor, shared, stopped));
    Ok(Gateway { addr, stop, done })
}
