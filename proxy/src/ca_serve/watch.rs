//! The revocation watch stream: server-sent events, one per CA event
//! (`issued`, `revocation_scheduled`, `revoked`), each with its database id
//! as the SSE `id`, so a client that reconnects with `Last-Event-ID` gets
//! what it missed. A comment line every `KEEPALIVE` lets clients detect a
//! dead connection.

use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use kakunin_authority::store::Event;
use tokio::sync::{broadcast, mpsc};

use super::{plain, Shared};
use crate::body::{BoxError, ProxyBody};

const KEEPALIVE: Duration = Duration::from_secs(15);
/// Events replayed to a reconnecting client at most; beyond that it should
/// re-check everything anyway (which the proxy does on every reconnect).
const MAX_REPLAY: usize = 1000;

pub struct Watchers {
    events: broadcast::Sender<Arc<Bytes>>,
    last_id: AtomicI64,
    connected: Arc<AtomicUsize>,
    max: usize,
}

impl Watchers {
    pub fn new(last_id: i64, max: usize) -> Watchers {
        Watchers {
            events: broadcast::channel(1024).0,
            last_id: AtomicI64::new(last_id),
            connected: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    pub fn last_id(&self) -> i64 {
        self.last_id.load(Ordering::SeqCst)
    }
}

fn render(event: &Event) -> Bytes {
    let data = serde_json::json!({
        "serial": event.serial,
        "agent_id": event.agent_id,
        "reason": event.reason.map(|r| r.name()),
        "at": event.at,
    });
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {}\n\n",
        event.id,
        event.kind.as_str(),
        data
    ))
}

/// Reads new events (and matures due scheduled revocations) every poll
/// interval, and fans them out.
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
                    if event.kind == kakunin_authority::store::EventKind::Revoked {
                        tracing::info!(serial = %event.serial, reason = ?event.reason, "revocation announced");
                    }
                    shared.watchers.last_id.store(event.id, Ordering::SeqCst);
                    // No watcher connected is not an error.
                    let _ = shared.watchers.events.send(Arc::new(render(&event)));
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
    mut stopped: tokio::sync::watch::Receiver<bool>,
    headers: &HeaderMap,
) -> Response<ProxyBody> {
    let connected = shared.watchers.connected.clone();
    if connected.fetch_add(1, Ordering::SeqCst) >= shared.watchers.max {
        connected.fetch_sub(1, Ordering::SeqCst);
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many watch subscriptions\n",
        );
    }
    let resume_from = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    // Subscribe before reading the backlog, so nothing falls in between
    // (a duplicate is harmless; clients act on ids they have not seen).
    let mut live = shared.watchers.events.subscribe();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let hello = format!(
        "retry: 1000\nevent: hello\ndata: {}\n\n",
        serde_json::json!({"last_event_id": shared.watchers.last_id()})
    );
    tokio::spawn(async move {
        let _count = Decrement(connected);
        if tx.send(Bytes::from(hello)).await.is_err() {
            return;
        }
        let mut seen = resume_from.unwrap_or(i64::MAX);
        if let Some(from) = resume_from {
            let backlog = {
                let shared = shared.clone();
                tokio::task::spawn_blocking(move || {
                    shared.authority.store().events_after(from, MAX_REPLAY)
                })
                .await
            };
            for event in backlog.ok().and_then(Result::ok).unwrap_or_default() {
                seen = event.id;
                if tx.send(render(&event)).await.is_err() {
                    return;
                }
            }
        }
        loop {
            let next = tokio::select! {
                received = live.recv() => received,
                _ = tokio::time::sleep(KEEPALIVE) => {
                    if tx.send(Bytes::from_static(b": keepalive\n\n")).await.is_err() {
                        return;
                    }
                    continue;
                }
                _ = stopped.changed() => return,
            };
            match next {
                Ok(rendered) => {
                    if resume_from.is_some() && event_id(&rendered) <= Some(seen) {
                        continue;
                    }
                    if tx.send(Bytes::clone(&rendered)).await.is_err() {
                        return;
                    }
                }
                // A slow client that fell behind is cut off; on reconnect it
                // re-checks everything.
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
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
    response
}

fn event_id(rendered: &Bytes) -> Option<i64> {
    let text = std::str::from_utf8(rendered).ok()?;
    text.strip_prefix("id: ")?.split('\n').next()?.parse().ok()
}

struct Decrement(Arc<AtomicUsize>);

impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
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

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
