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
    idle: Pin<Box<Sleep>>,
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
            idle: Box::pin(tokio::time::sleep(stall)),
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
                let deadline = tokio::time::Instant::now() + this.stall;
                this.idle.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                this.ticket = None;
                Poll::Ready(Some(Err(Box::new(err))))
            }
            Poll::Pending => {
                if this.idle.as_mut().poll(cx).is_ready() {
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
