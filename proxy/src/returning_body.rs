//! A client connection's response body that hands the connection back to
//! its pool when read to the end, and drops it when abandoned halfway (the
//! rest of the body would otherwise have to be drained). The upstream pool
//! and the gateway's backend pool both answer with it.
//!
//! A peer that stops sending mid-body is cut off after `stall` without a
//! frame: a stalled body must not hold a connection (and whatever else the
//! request holds, such as an in-flight slot) forever.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use crate::body::BoxError;

/// What returns a finished connection to its pool.
pub trait Ticket: Send + Unpin + 'static {
    fn give_back(self);
}

pub struct ReturningBody<T: Ticket> {
    inner: Incoming,
    ticket: Option<T>,
    /// Armed the first time the body has nothing to give, for `stall`
    /// after the last progress: a response that is read in one go (the
    /// usual small one) never sets a timer.
    idle: Option<Pin<Box<Sleep>>>,
    /// The head's arrival, then each frame's: what `stall` counts from.
    progress: tokio::time::Instant,
    stall: Duration,
    /// Names the peer in the stall error ("upstream", "backend").
    peer: &'static str,
    /// Held until the body is done (e.g. a concurrency slot).
    _guard: Option<Box<dyn Send>>,
}

impl<T: Ticket> ReturningBody<T> {
    pub fn new(
        inner: Incoming,
        ticket: T,
        stall: Duration,
        peer: &'static str,
        guard: Option<Box<dyn Send>>,
    ) -> Self {
        ReturningBody {
            inner,
            ticket: Some(ticket),
            idle: None,
            progress: tokio::time::Instant::now(),
            stall,
            peer,
            _guard: guard,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the {peer} sent no part of the response body for {after:?}")]
pub struct BodyStalled {
    peer: &'static str,
    after: Duration,
}

impl<T: Ticket> Body for ReturningBody<T> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                if let Some(ticket) = this.ticket.take() {
                    ticket.give_back();
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.progress = tokio::time::Instant::now();
                if let Some(idle) = this.idle.as_mut() {
                    idle.as_mut().reset(this.progress + this.stall);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                this.ticket = None;
                Poll::Ready(Some(Err(Box::new(err))))
            }
            Poll::Pending => {
                let deadline = this.progress + this.stall;
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if idle.as_mut().poll(cx).is_ready() {
                    this.ticket = None;
                    return Poll::Ready(Some(Err(Box::new(BodyStalled {
                        peer: this.peer,
                        after: this.stall,
                    }))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<T: Ticket> Drop for ReturningBody<T> {
    fn drop(&mut self) {
        // hyper does not poll a body that says it is empty (204, 304,
        // Content-Length: 0): such a body is complete when dropped.
        if self.inner.is_end_stream() {
            if let Some(ticket) = self.ticket.take() {
                ticket.give_back();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioIo;
    use tokio::io::AsyncWriteExt;

    use super::*;

    struct Counted(Arc<AtomicUsize>);

    impl Ticket for Counted {
        fn give_back(self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A response from a peer that writes `parts` with `gap` between them
    /// and then goes quiet (its end stays open), through hyper's client on a
    /// pipe.
    async fn response_in_parts(
        parts: &'static [&'static [u8]],
        gap: Duration,
    ) -> hyper::Response<Incoming> {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client))
            .await
            .unwrap();
        tokio::spawn(conn);
        tokio::spawn(async move {
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(gap).await;
                }
                server.write_all(part).await.unwrap();
            }
            // Held open, silent, until the test ends.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(server);
        });
        let request = http::Request::get("/").body(Empty::<Bytes>::new()).unwrap();
        sender.send_request(request).await.unwrap()
    }

    fn returning(
        response: hyper::Response<Incoming>,
        stall: Duration,
    ) -> (ReturningBody<Counted>, Arc<AtomicUsize>) {
        let returned = Arc::new(AtomicUsize::new(0));
        let body = ReturningBody::new(
            response.into_body(),
            Counted(returned.clone()),
            stall,
            "upstream",
            None,
        );
        (body, returned)
    }

    #[tokio::test]
    async fn a_slow_but_steady_body_is_not_cut_off() {
        // Four frames, half a stall apart: longer than a stall in all, never
        // a stall without progress.
        let stall = Duration::from_millis(300);
        let response = response_in_parts(
            &[
                b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nab",
                b"cd",
                b"ef",
                b"gh",
            ],
            stall / 2,
        )
        .await;
        let (body, returned) = returning(response, stall);
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"abcdefgh");
        assert_eq!(returned.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_stall_counts_from_the_head_not_from_the_first_read() {
        // The head came and no byte of the body: read late, the body is
        // already past its stall and fails at once.
        let stall = Duration::from_secs(1);
        let response = response_in_parts(
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"],
            Duration::ZERO,
        )
        .await;
        let (body, returned) = returning(response, stall);
        tokio::time::sleep(stall + stall / 2).await;
        let read = Instant::now();
        let err = body.collect().await.expect_err("a stalled body fails");
        assert!(err.is::<BodyStalled>(), "{err}");
        assert!(
            read.elapsed() < stall * 7 / 10,
            "waited {:?} more after the stall had passed",
            read.elapsed()
        );
        assert_eq!(returned.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_body_that_stalls_is_cut_off_and_its_connection_not_returned() {
        let stall = Duration::from_millis(300);
        let response = response_in_parts(
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"],
            Duration::ZERO,
        )
        .await;
        let started = Instant::now();
        let (body, returned) = returning(response, stall);
        let err = body.collect().await.expect_err("a stalled body fails");
        assert!(err.is::<BodyStalled>(), "{err}");
        assert!(
            started.elapsed() >= stall,
            "cut off after {:?}",
            started.elapsed()
        );
        assert_eq!(returned.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_returns_its_connection_once() {
        let response = response_in_parts(
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"],
            Duration::ZERO,
        )
        .await;
        let (body, returned) = returning(response, Duration::from_millis(300));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"abc");
        assert_eq!(returned.load(Ordering::SeqCst), 1);
    }
}
