//! The agent-facing listener: HTTP/1.1, header size and read-time limits,
//! graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};

use crate::pipeline::Proxy;

#[derive(Debug, Clone)]
pub struct ListenerSettings {
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
}

pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Serves agents until `shutdown` resolves, then lets requests in flight
/// finish (up to 10 s) before returning.
/// The next connection. Errors (EMFILE and friends) are logged and waited
/// out instead of spinning; they do not end the listener.
pub async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(err) => {
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    settings: ListenerSettings,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let service = service_fn(move |request| {
            let proxy = proxy.clone();
            // Boxed: hyper keeps a slot for the in-flight future in every
            // connection, idle or not, so an unboxed handler (a large state
            // machine) would cost its full size per open connection.
            async move { Ok::<_, std::convert::Infallible>(Box::pin(proxy.handle(request)).await) }
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%peer, error = %err, "agent connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all agent connections closed"),
        () = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!("requests still in flight after 10 s; stopping anyway");
        }
    }
}
