//! Subscription to the CA's revocation watch stream (server-sent events,
//! served by `kakunin ca serve` at /watch).
//!
//! An announcement is only a hint: it invalidates the cached status and
//! triggers an OCSP fetch, and the signed OCSP answer decides. So the stream
//! needs no authentication of its own, and a missed event costs at most the
//! cache TTL, as without the stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;

use super::fetch::HttpUrl;
use super::RevocationGate;

/// The server sends a comment at least this often; silence for longer means
/// the connection is dead even if TCP has not noticed.
const SILENCE_LIMIT: Duration = Duration::from_secs(45);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_EVENT_BYTES: usize = 64 * 1024;
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A stream that lived this long was healthy: reconnect quickly after it.
const HEALTHY_STREAM: Duration = Duration::from_secs(30);
/// A responder without a watch stream is asked again rarely.
const ABSENT_BACKOFF: Duration = Duration::from_secs(60);
/// Announcements trigger at most this many re-checks per second, so that
/// a flood of (possibly forged) events cannot defeat the status cache.
const MIN_REFRESH_GAP: Duration = Duration::from_millis(100);

pub fn spawn_watch(gate: Arc<RevocationGate>, url: HttpUrl) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut watcher = Watcher {
            gate,
            url,
            last_event_id: None,
            last_refresh: None,
        };
        let mut backoff = MIN_BACKOFF;
        loop {
            let started = Instant::now();
            match watcher.subscribe().await {
                Ended::Absent(why) => {
                    tracing::warn!(url = %watcher.url.as_str(), %why, "no revocation watch stream there; relying on the OCSP cache TTL");
                    tokio::time::sleep(ABSENT_BACKOFF).await;
                    continue;
                }
                Ended::Failed(message) => {
                    tracing::debug!(url = %watcher.url.as_str(), %message, "revocation watch stream unavailable");
                }
            }
            if started.elapsed() >= HEALTHY_STREAM {
                backoff = MIN_BACKOFF;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    })
}

enum Ended {
    Absent(String),
    Failed(String),
}

struct Watcher {
    gate: Arc<RevocationGate>,
    url: HttpUrl,
    /// Resumes the stream after a reconnect (the server replays what was
    /// missed), instead of re-checking at every reconnect.
    last_event_id: Option<i64>,
    last_refresh: Option<Instant>,
}

impl Watcher {
    async fn subscribe(&mut self) -> Ended {
        let response = match self
            .url
            .get_stream(CONNECT_TIMEOUT, self.last_event_id)
            .await
        {
            Ok(response) => response,
            Err(message) => return Ended::Failed(message),
        };
        if response.status() == http::StatusCode::NOT_FOUND {
            return Ended::Absent("HTTP 404".into());
        }
        if response.status() != http::StatusCode::OK {
            return Ended::Failed(format!("HTTP {}", response.status()));
        }
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !content_type.starts_with("text/event-stream") {
            return Ended::Absent(format!("content type {content_type:?}"));
        }
        tracing::info!(url = %self.url.as_str(), "subscribed to the revocation watch stream");
        let mut body = response.into_body();
        let mut parser = EventParser::default();
        loop {
            let frame = match tokio::time::timeout(SILENCE_LIMIT, body.frame()).await {
                Err(_) => return Ended::Failed("the stream went silent".into()),
                Ok(None) => return Ended::Failed("the stream ended".into()),
                Ok(Some(Err(err))) => return Ended::Failed(err.to_string()),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let events = match parser.push(&data) {
                Ok(events) => events,
                Err(message) => return Ended::Failed(message),
            };
            for event in events {
                self.handle(event).await;
            }
        }
    }

    async fn handle(&mut self, event: Event) {
        if let Some(id) = event.id {
            self.last_event_id = Some(id);
        }
        match event.kind.as_str() {
            "hello" => {
                let announced = serde_json::from_str::<serde_json::Value>(&event.data)
                    .ok()
                    .and_then(|v| v["last_event_id"].as_i64());
                // A server whose history is behind ours (restored from a
                // backup) cannot replay what we missed: re-check instead.
                if let (Some(ours), Some(theirs)) = (self.last_event_id, announced) {
                    if theirs < ours {
                        self.refresh().await;
                    }
                }
                if self.last_event_id.is_none() {
                    self.last_event_id = announced;
                }
            }
            "revoked" if concerns(&self.gate, &event.data) => {
                tracing::info!("revocation announced for this identity; checking its status now");
                self.refresh().await;
            }
            _ => {}
        }
    }

    async fn refresh(&mut self) {
        if let Some(last) = self.last_refresh {
            tokio::time::sleep(MIN_REFRESH_GAP.saturating_sub(last.elapsed())).await;
        }
        self.last_refresh = Some(Instant::now());
        self.gate.refresh_now().await;
    }
}

/// Whether an announcement names the certificate in use. An unreadable one
/// is treated as relevant: re-checking is cheap and errs on the safe side.
fn concerns(gate: &RevocationGate, data: &str) -> bool {
    let serial = gate.subject().summary.serial_hex.clone();
    match serde_json::from_str::<serde_json::Value>(data) {
        Ok(value) => value
            .get("serial")
            .and_then(|s| s.as_str())
            .is_none_or(|s| s.eq_ignore_ascii_case(&serial)),
        Err(_) => true,
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Event {
    kind: String,
    data: String,
    id: Option<i64>,
}

/// Incremental text/event-stream parser (the subset the CA sends: `event`,
/// `data`, `id` fields and `:` comments).
#[derive(Default)]
struct EventParser {
    buffer: Vec<u8>,
    /// Bytes already searched for a blank line (minus a separator's
    /// length), so each byte is scanned about once.
    scanned: usize,
    /// The previous byte was CR: a following LF belongs to it.
    after_cr: bool,
}

impl EventParser {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, String> {
        // CRLF and bare CR end lines too (the SSE grammar); turning both
        // into LF keeps the search simple.
        for &byte in chunk {
            match byte {
                b'\r' => self.buffer.push(b'\n'),
                b'\n' if self.after_cr => {}
                _ => self.buffer.push(byte),
            }
            self.after_cr = byte == b'\r';
        }
        let mut events = Vec::new();
        while let Some(end) = find_blank_line(&self.buffer, self.scanned) {
            let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
            self.scanned = 0;
            let text = String::from_utf8_lossy(&block[..end]).into_owned();
            if let Some(event) = parse_block(&text) {
                events.push(event);
            }
        }
        self.scanned = self.buffer.len().saturating_sub(1);
        if self.buffer.len() > MAX_EVENT_BYTES {
            return Err(format!("an event exceeded {MAX_EVENT_BYTES} bytes"));
        }
        Ok(events)
    }
}

/// Position of the first "\n\n" at or after `from`.
fn find_blank_line(buffer: &[u8], from: usize) -> Option<usize> {
    buffer
        .get(from..)?
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|p| p + from)
}

fn parse_block(text: &str) -> Option<Event> {
    let mut kind = "message".to_string();
    let mut data: Vec<&str> = Vec::new();
    let mut id = None;
    for line in text.lines() {
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => kind = value.to_string(),
            "data" => data.push(value),
            "id" => id = value.trim().parse().ok(),
            _ => {}
        }
    }
    if data.is_empty() {
        return None;
    }
    Some(Event {
        kind,
        data: data.join("\n"),
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks() {
        let mut parser = EventParser::default();
        assert!(parser
            .push(b": keepalive\n\nevent: rev")
            .unwrap()
            .is_empty());
        let events = parser
            .push(b"oked\nid: 7\ndata: {\"serial\":\"0a\"}\n\nevent: hello\r\ndata: x\r\n\r\n")
            .unwrap();
        assert_eq!(
            events,
            vec![
                Event {
                    kind: "revoked".into(),
                    data: "{\"serial\":\"0a\"}".into(),
                    id: Some(7),
                },
                Event {
                    kind: "hello".into(),
                    data: "x".into(),
                    id: None,
                }
            ]
        );
    }

    #[test]
    fn bare_cr_and_split_crlf_end_lines() {
        let mut parser = EventParser::default();
        assert!(parser
            .push(b"event: revoked\rdata: a\r")
            .unwrap()
            .is_empty());
        let events = parser.push(b"\r").unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "a");
        // CRLF split across chunks is one line end, not two.
        assert!(parser.push(b"data: b\r").unwrap().is_empty());
        assert!(parser.push(b"\ndata: c\r\n").unwrap().is_empty());
        let events = parser.push(b"\r\n").unwrap();
        assert_eq!(events[0].data, "b\nc");
    }

    #[test]
    fn an_endless_event_is_refused() {
        let mut parser = EventParser::default();
        let err = parser.push(&vec![b'a'; MAX_EVENT_BYTES + 1]).unwrap_err();
        assert!(err.contains("exceeded"));
    }
}
