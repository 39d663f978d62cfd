//! Subscription to the CA's revocation watch stream (server-sent events,
//! served by `kakunin ca serve` at /watch).
//!
//! An announcement is only a hint: it invalidates the cached status and
//! triggers an OCSP fetch, and the signed OCSP answer decides. So the stream
//! needs no authentication of its own, and a missed event costs at most the
//! cache TTL, as without the stream.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;

use super::fetch::HttpUrl;
use super::RevocationGate;

/// The server sends a comment at least this often; silence for longer means
/// the connection is dead even if TCP has not noticed.
const SILENCE_LIMIT: Duration = Duration::from_secs(45);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_EVENT_BYTES: usize = 64 * 1024;
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A responder without a watch stream (404) is asked again rarely.
const ABSENT_BACKOFF: Duration = Duration::from_secs(60);

pub fn spawn_watch(gate: Arc<RevocationGate>, url: HttpUrl) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(250);
        loop {
            match subscribe(&gate, &url).await {
                Ended::Absent => {
                    tracing::warn!(url = %url.as_str(), "no revocation watch stream there; relying on the OCSP cache TTL");
                    tokio::time::sleep(ABSENT_BACKOFF).await;
                    continue;
                }
                Ended::AfterEvents => backoff = Duration::from_millis(250),
                Ended::Failed(message) => {
                    tracing::debug!(url = %url.as_str(), %message, "revocation watch stream unavailable");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    })
}

enum Ended {
    Absent,
    AfterEvents,
    Failed(String),
}

async fn subscribe(gate: &RevocationGate, url: &HttpUrl) -> Ended {
    let response = match url.get_stream(CONNECT_TIMEOUT).await {
        Ok(response) => response,
        Err(message) => return Ended::Failed(message),
    };
    if response.status() == http::StatusCode::NOT_FOUND {
        return Ended::Absent;
    }
    if response.status() != http::StatusCode::OK {
        return Ended::Failed(format!("HTTP {}", response.status()));
    }
    tracing::info!(url = %url.as_str(), "subscribed to the revocation watch stream");
    // Announcements may have been missed while disconnected.
    gate.refresh_now().await;
    let mut body = response.into_body();
    let mut parser = EventParser::default();
    loop {
        let frame = match tokio::time::timeout(SILENCE_LIMIT, body.frame()).await {
            Err(_) => return Ended::Failed("the stream went silent".into()),
            Ok(None) => return Ended::AfterEvents,
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
            if event.kind == "revoked" && concerns(gate, &event.data) {
                tracing::info!("revocation announced for this identity; checking its status now");
                gate.refresh_now().await;
            }
        }
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
}

/// Incremental text/event-stream parser (the subset the CA sends: `event`,
/// `data`, `id` fields and `:` comments).
#[derive(Default)]
struct EventParser {
    buffer: Vec<u8>,
}

impl EventParser {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, String> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = find_blank_line(&self.buffer) {
            let block: Vec<u8> = self.buffer.drain(..end.0 + end.1).collect();
            let text = String::from_utf8_lossy(&block[..end.0]).into_owned();
            if let Some(event) = parse_block(&text) {
                events.push(event);
            }
        }
        if self.buffer.len() > MAX_EVENT_BYTES {
            return Err(format!("an event exceeded {MAX_EVENT_BYTES} bytes"));
        }
        Ok(events)
    }
}

/// (position, separator length) of the first blank line.
fn find_blank_line(buffer: &[u8]) -> Option<(usize, usize)> {
    for i in 0..buffer.len() {
        if buffer[i..].starts_with(b"\n\n") {
            return Some((i, 2));
        }
        if buffer[i..].starts_with(b"\r\n\r\n") {
            return Some((i, 4));
        }
    }
    None
}

fn parse_block(text: &str) -> Option<Event> {
    let mut kind = "message".to_string();
    let mut data: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => kind = value.to_string(),
            "data" => data.push(value),
            _ => {}
        }
    }
    if data.is_empty() {
        return None;
    }
    Some(Event {
        kind,
        data: data.join("\n"),
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
                    data: "{\"serial\":\"0a\"}".into()
                },
                Event {
                    kind: "hello".into(),
                    data: "x".into()
                }
            ]
        );
    }

    #[test]
    fn an_endless_event_is_refused() {
        let mut parser = EventParser::default();
        let err = parser.push(&vec![b'a'; MAX_EVENT_BYTES + 1]).unwrap_err();
        assert!(err.contains("exceeded"));
    }
}
