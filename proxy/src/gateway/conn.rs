//! Accepting connections: a cap on how many are open, a deadline for the
//! TLS handshake, hyper's deadline for each request head, and a drain on
//! shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use rustls_pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::{handle, Shared};

/// How long connections may take to finish after shutdown.
const DRAIN: Duration = Duration::from_secs(10);

pub(super) async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let max = shared.limits.max_connections;
    let slots = Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS)));
    let graceful = GracefulShutdown::new();
    // Logged once per episode: a flood must not also flood the log.
    let mut refusing = false;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = crate::server::accept(&listener) => accepted,
            _ = stopped.changed() => break,
        };
        // Accept-and-close rather than leave connections in the kernel's
        // backlog: the client learns at once, and the backlog stays free.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if !refusing {
                tracing::warn!(
                    max_connections = max,
                    "connection limit reached; closing new connections until one ends"
                );
                refusing = true;
            }
            drop(stream);
            continue;
        };
        refusing = false;
        tokio::spawn(serve(
            stream,
            peer,
            acceptor.clone(),
            shared.clone(),
            graceful.watcher(),
            slot,
        ));
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all gateway connections closed"),
        () = tokio::time::sleep(DRAIN) => {
            tracing::warn!("requests still in flight after {DRAIN:?}; stopping anyway");
        }
    }
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    watcher: Watcher,
    _slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let limits = &shared.limits;
    let tls = match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await
    {
        Ok(Ok(tls)) => tls,
        // A certificate from another CA, an expired one, none at all:
        // refused before any request exists, so there is no audit line;
        // the operational log says who and why.
        Ok(Err(err)) => {
            tracing::info!(%peer, error = %err, "TLS handshake refused");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out");
            return;
        }
    };
    // The verified chain, leaf first, as the verifier wants it; copied once
    // per connection rather than per request.
    let chain: Arc<[CertificateDer<'static>]> = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    let service = service_fn(move |request| {
        let shared = shared.clone();
        let chain = chain.clone();
        async move {
            Ok::<_, std::convert::Infallible>(handle::handle(&shared, &chain, peer, request).await)
        }
    });
    let connection = builder.serve_connection(TokioIo::new(tls), service);
    if let Err(err) = watcher.watch(connection).await {
        tracing::debug!(%peer, error = %err, "gateway connection ended with an error");
    }
}
