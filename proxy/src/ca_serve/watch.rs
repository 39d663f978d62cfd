//! The revocation watch stream: server-sent events, one per revocation
//! (`revoked`), each with its database id as the SSE `id`, so a client that
//! reconnects with `Last-Event-ID` gets what it missed. A comment line every
//! `KEEPALIVE` lets clients detect a dead connection.
//!
//! The stream is public, so it says no more than the CRL does: the serial,
//! the reason and the time. Issuances and scheduled revocations are not
//! announced (they would publish which agents exist and when they get
//! certificates), and no event names an agent; the proxy matches on serial.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use kakunin_authority::store::{Event, EventKind};
use tokio::sync::{broadcast, mpsc};

use super::watch_slots::{Refused, WatchSlots};
use super::{plain, Shared};
use crate::body::{BoxError, ProxyBody};
use crate::clock::unix_now;

const KEEPALIVE: Duration = Duration::from_secs(15);
/// Events read for a reconnecting client at most; beyond that it should
/// re-check everything anyway (which the proxy does on every reconnect).
const MAX_REPLAY: usize = 1000;

pub struct Watchers {
    events: broadcast::Sender<Arc<Bytes>>,
    last_id: AtomicI64,
    slots: WatchSlots,
}

impl Watchers {
    pub fn new(last_id: i64, max: usize, max_per_client: usize) -> Watchers {
        Watchers {
            events: broadcast::channel(1024).0,
            last_id: AtomicI64::new(last_id),
            slots: WatchSlots::new(max, max_per_client),
        }
    }

    /// The newest CA event seen, of any kind (the CRL cache keys on it).
    pub fn last_id(&self) -> i64 {
        self.last_id.load(Ordering::SeqCst)
    }
}

/// The SSE block for an event, or None for what the stream does not carry.
fn render(event: &Event) -> Option<Bytes> {
    if event.kind != EventKind::Revoked {
        return None;
    }
    let data = serde_json::json!({
        "serial": event.serial,
        "reason": event.reason.map(|r| r.name()),
        "at": event.at,
    });
    Some(Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {}\n\n",
        event.id,
        event.kind.as_str(),
        data
    )))
}

/// Reads new events (and matures due scheduled revocations) every poll
/// interval, and fans the revocations out.
pub async fn poll_events(shared: Arc<Shared>, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(shared.options.poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopped.changed() => return,
        }
        let polled = {
            let shared = shared.clone();
            tokio::task::spawn_blocking(move || {
                let store = shared.authority.store();
                store.materialize_due(unix_now())?;
                store.events_after(shared.watchers.last_id(), 256)
            })
            .await
        };
        match polled {
            Ok(Ok(events)) => {
                failing = false;
                for event in events {
                    shared.watchers.last_id.store(event.id, Ordering::SeqCst);
                    let Some(rendered) = render(&event) else {
                        continue;
                    };
                    tracing::info!(serial = %event.serial, reason = ?event.reason, "revocation announced");
                    // No watcher connected is not an error.
                    let _ = shared.watchers.events.send(Arc::new(rendered));
                }
            }
            Ok(Err(err)) if !failing => {
                failing = true;
                tracing::error!(error = %err, "cannot read CA events; watchers will miss announcements until this clears");
            }
            _ => {}
        }
    }
}

pub async fn subscribe(
    shared: Arc<Shared>,
    stopped: tokio::sync::watch::Receiver<bool>,
    peer: IpAddr,
    headers: &HeaderMap,
) -> Response<ProxyBody> {
    let slot = match shared.watchers.slots.take(peer) {
        Ok(slot) => slot,
        Err(Refused::Full) => {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many watch subscriptions\n",
            )
        }
        Err(Refused::ClientFull) => {
            let mut response = plain(
                StatusCode::TOO_MANY_REQUESTS,
                "too many watch subscriptions from this address\n",
            );
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("10"),
            );
            return response;
        }
    };
    let resume_from = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    // Subscribe before reading the backlog, so nothing falls in between
    // (a duplicate is harmless; clients act on ids they have not seen).
    let live = shared.watchers.events.subscribe();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        // The slot is held for as long as this task runs.
        let _slot = slot;
        let watcher = Watcher {
            tx,
            send_timeout: shared.options.stall_timeout,
        };
        watcher.run(shared, stopped, live, resume_from).await;
    });
    let mut response = Response::new(ChannelBody { rx }.boxed_unsync());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    // Reverse proxies such as nginx would otherwise hold events back.
    headers.insert("x-accel-buffering", http::HeaderValue::from_static("no"));
    response
}

struct Watcher {
    tx: mpsc::Sender<Bytes>,
    send_timeout: Duration,
}

impl Watcher {
    async fn run(
        &self,
        shared: Arc<Shared>,
        mut stopped: tokio::sync::watch::Receiver<bool>,
        mut live: broadcast::Receiver<Arc<Bytes>>,
        resume_from: Option<i64>,
    ) {
        let hello = format!(
            "retry: 1000\nevent: hello\ndata: {}\n\n",
            serde_json::json!({"last_event_id": shared.watchers.last_id()})
        );
        if !self.send(Bytes::from(hello)).await {
            return;
        }
        let mut seen = i64::MAX;
        if let Some(from) = resume_from {
            seen = from;
            let backlog = tokio::task::spawn_blocking(move || {
                shared.authority.store().events_after(from, MAX_REPLAY)
            })
            .await;
            for event in backlog.ok().and_then(Result::ok).unwrap_or_default() {
                seen = event.id;
                if let Some(rendered) = render(&event) {
                    if !self.send(rendered).await {
                        return;
                    }
                }
            }
        }
        loop {
            let next = tokio::select! {
                received = live.recv() => received,
                _ = tokio::time::sleep(KEEPALIVE) => {
                    if !self.send(Bytes::from_static(b": keepalive\n\n")).await {
                        return;
                    }
                    continue;
                }
                // The client went away: give the slot back now, not at the
                // next keepalive.
                _ = self.tx.closed() => return,
                _ = stopped.changed() => return,
            };
            match next {
                Ok(rendered) => {
                    if resume_from.is_some() && event_id(&rendered) <= Some(seen) {
                        continue;
                    }
                    if !self.send(Bytes::clone(&rendered)).await {
                        return;
                    }
                }
                // A slow client that fell behind is cut off; on reconnect it
                // re-checks everything.
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// False when the watcher is gone, or its buffer stayed full for the
    /// send timeout: a client that does not read is cut off rather than
    /// holding its slot and this task forever.
    async fn send(&self, chunk: Bytes) -> bool {
        matches!(
            tokio::time::timeout(self.send_timeout, self.tx.send(chunk)).await,
            Ok(Ok(()))
        )
    }
}

fn event_id(rendered: &Bytes) -> Option<i64> {
    let text = std::str::from_utf8(rendered).ok()?;
    text.strip_prefix("id: ")?.split('\n').next()?.parse().ok()
}

struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn a_watcher_whose_buffer_stays_full_is_cut_off() {
        let (tx, _rx) = mpsc::channel(1);
        let watcher = Watcher {
            tx,
            send_timeout: Duration::from_millis(10),
        };
        assert!(watcher.send(Bytes::from_static(b"one")).await);
        // Nobody reads: the second send gives up instead of waiting.
        assert!(!watcher.send(Bytes::from_static(b"two")).await);
    }

    fn event(kind: EventKind) -> Event {
        Event {
            id: 7,
            serial: "0a".into(),
            agent_id: Some("trading_bot_v2".into()),
            kind,
            reason: None,
            at: 0,
        }
    }

    #[test]
    fn only_revocations_are_rendered_and_without_the_agent() {
        assert!(render(&event(EventKind::Issued)).is_none());
        assert!(render(&event(EventKind::RevocationScheduled)).is_none());
        let rendered = render(&event(EventKind::Revoked)).unwrap();
        let text = std::str::from_utf8(&rendered).unwrap();
        assert!(text.starts_with("id: 7\nevent: revoked\n"), "{text}");
        assert!(!text.contains("agent"), "{text}");
        assert!(!text.contains("trading_bot_v2"), "{text}");
    }
}
