//! Accepting connections: a cap on how many are open at once, hyper's
//! header deadline, and a write-stall deadline, so that no client (slow,
//! silent or not reading) can hold a connection slot forever.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

use super::{route, Shared};

pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(
        shared.options.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    // Logged once per episode: a flood must not also flood the log.
    let mut refusing = false;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = crate::server::accept(&listener) => accepted,
            _ = stopped.changed() => return,
        };
        // Accept-and-close rather than leaving connections in the kernel's
        // backlog: the client learns at once that it should retry, and the
        // backlog stays free for when a slot opens.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if !refusing {
                tracing::warn!(
                    max_connections = shared.options.max_connections,
                    "connection limit reached; closing new connections until one ends"
                );
                refusing = true;
            }
            drop(stream);
            continue;
        };
        refusing = false;
        tokio::spawn(serve_connection(
            stream,
            peer,
            shared.clone(),
            stopped.clone(),
            slot,
        ));
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stopped: tokio::sync::watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let options = &shared.options;
    let io = TokioIo::new(WriteDeadline::new(stream, options.stall_timeout));
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Also bounds idle keep-alive connections: hyper starts this timer
    // whenever it waits for the next request's head.
    builder
        .header_read_timeout(options.header_read_timeout)
        .timer(hyper_util::rt::TokioTimer::new());
    let service = hyper::service::service_fn(move |request| {
        let shared = shared.clone();
        let stopped = stopped.clone();
        async move {
            Ok::<_, std::convert::Infallible>(route(shared, stopped, peer.ip(), request).await)
        }
    });
    let _ = builder.serve_connection(io, service).await;
}

/// A socket whose writes must make progress: hyper has no write timeout,
/// so a peer that stops reading (its receive window full) would otherwise
/// keep the connection, and its slot, forever. Any progress restarts the
/// clock; reads are untouched (hyper's header deadline and the body
/// deadline cover them).
pub struct WriteDeadline<T> {
    inner: T,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteDeadline<T> {
    pub fn new(inner: T, limit: Duration) -> WriteDeadline<T> {
        WriteDeadline {
            inner,
            limit,
            stalled: None,
        }
    }

    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let limit = self.limit;
        let stall = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_peer_that_stops_reading_is_cut_off() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut near = WriteDeadline::new(near, Duration::from_millis(20));
        let err = near.write_all(&[7u8; 4096]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        // What did fit was delivered.
        let mut got = [0u8; 64];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [7u8; 64]);
    }

    #[tokio::test]
    async fn a_peer_that_keeps_reading_is_not() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut near = WriteDeadline::new(near, Duration::from_secs(3600));
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            far.read_to_end(&mut all).await.unwrap();
            all.len()
        });
        near.write_all(&[7u8; 4096]).await.unwrap();
        near.shutdown().await.unwrap();
        drop(near);
        assert_eq!(reader.await.unwrap(), 4096);
    }
}
