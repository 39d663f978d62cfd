//! The decision log: one JSON line when a request is decided (the intent,
//! written before anything is forwarded) and one when it is finished.
//!
//! Lines are written by one thread with group commit: a request formats its
//! line, queues it, and (where the order matters) waits until the writer has
//! handed it to the file. Under load many requests' lines go out in one
//! write instead of one syscall each, and a request still never leaves
//! before its intent is in the log.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tokio::sync::oneshot;

pub struct AuditLog {
    shared: Arc<Shared>,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// Lines waiting for the writer, and who waits for them.
struct Queue {
    bytes: Vec<u8>,
    /// Told once the lines queued with them are in the sink: each waiter
    /// is woken once, by the write that carried its line.
    waiters: Vec<oneshot::Sender<()>>,
    closing: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

/// A queued line; [`Queued::written`] waits until the writer has handed it
/// to the file (dropping it instead lets the line go out on its own).
#[must_use = "await .written() where the line must be in the log before going on"]
pub struct Queued {
    written: oneshot::Receiver<()>,
}

impl Queued {
    pub async fn written(self) {
        // An error means the writer is gone (shut down): nothing to wait for.
        let _ = self.written.await;
    }
}

impl AuditLog {
    pub fn open(path: Option<&Path>) -> io::Result<AuditLog> {
        let sink: Box<dyn Write + Send> = match path {
            None => Box::new(io::stdout()),
            Some(path) => Box::new(OpenOptions::new().create(true).append(true).open(path)?),
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                bytes: Vec::new(),
                waiters: Vec::new(),
                closing: false,
            }),
            wake: Condvar::new(),
        });
        let for_writer = shared.clone();
        let writer = std::thread::Builder::new()
            .name("kakunin-audit".into())
            .spawn(move || write_lines(&for_writer, sink))?;
        Ok(AuditLog {
            shared,
            writer: Some(writer),
        })
    }

    /// Queues one record; `event` names it, `fields` fill it. A failed write
    /// is reported on the operational log: losing an audit line must be seen.
    pub fn record(&self, event: &str, fields: &Map<String, Value>) -> Queued {
        self.record_with(event, fields, &[])
    }

    /// `record`, with `extra` fields after `fields` (which they must not
    /// repeat): the caller's map is written as it is, not copied. Formatted
    /// here, on the caller's thread, so the writer only writes.
    pub fn record_with(
        &self,
        event: &str,
        fields: &Map<String, Value>,
        extra: &[(&str, &Value)],
    ) -> Queued {
        let line = format_line(event, &now_rfc3339(), fields, extra);
        let (tell, written) = oneshot::channel();
        let was_idle = {
            let mut queue = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            let was_idle = queue.bytes.is_empty();
            queue.bytes.extend_from_slice(&line);
            queue.waiters.push(tell);
            was_idle
        };
        // A writer with lines already queued is awake or about to take them.
        if was_idle {
            self.shared.wake.notify_one();
        }
        Queued { written }
    }
}

/// One JSON object on one line, written straight from the borrowed fields.
fn format_line(
    event: &str,
    timestamp: &str,
    fields: &Map<String, Value>,
    extra: &[(&str, &Value)],
) -> Vec<u8> {
    use serde::ser::{SerializeMap, Serializer};
    let mut line = Vec::with_capacity(512);
    let mut serializer = serde_json::Serializer::new(&mut line);
    let written = (|| {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("timestamp", timestamp)?;
        map.serialize_entry("event_type", event)?;
        for (key, value) in fields {
            // The log's own two keys are never repeated: a line with
            // duplicate keys means different things to different readers.
            if key != "timestamp" && key != "event_type" {
                map.serialize_entry(key, value)?;
            }
        }
        for (key, value) in extra {
            map.serialize_entry(key, value)?;
        }
        map.end()
    })();
    if let Err(err) = written {
        // Strings and JSON values always serialize; keep the line whole.
        tracing::error!(error = %err, event, "audit record could not be formatted");
        line.clear();
        line.extend_from_slice(b"{}");
    }
    line.push(b'\n');
    line
}

/// The writer: takes everything queued, writes it in one go, says how far
/// it got, and sleeps until there is more. Whole lines only, so appends from
/// one process never interleave mid-line.
fn write_lines(shared: &Shared, mut sink: Box<dyn Write + Send>) {
    let mut bytes = Vec::new();
    let mut waiters = Vec::new();
    loop {
        let closing = {
            let mut queue = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            while queue.bytes.is_empty() && !queue.closing {
                queue = shared.wake.wait(queue).unwrap_or_else(|p| p.into_inner());
            }
            // Swapped, not copied: the buffers go back and forth.
            std::mem::swap(&mut bytes, &mut queue.bytes);
            std::mem::swap(&mut waiters, &mut queue.waiters);
            queue.closing
        };
        if !bytes.is_empty() {
            if let Err(err) = sink.write_all(&bytes).and_then(|()| sink.flush()) {
                tracing::error!(error = %err, "audit log write failed");
            }
            bytes.clear();
        }
        // Told even after a failure, which is logged: a request must not
        // hang on a log that cannot be written.
        for waiter in waiters.drain(..) {
            let _ = waiter.send(());
        }
        if closing {
            return;
        }
    }
}

impl Drop for AuditLog {
    /// Writes what is queued before the process goes on without the log.
    fn drop(&mut self) {
        {
            let mut queue = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            queue.closing = true;
        }
        self.shared.wake.notify_one();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn now_rfc3339() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let millis = now.subsec_millis();
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil: the date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_619), (2026, 6, 15));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[tokio::test]
    async fn records_are_json_lines_in_the_file_once_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(Some(&path)).unwrap();
        let mut fields = Map::new();
        fields.insert("agent_id".into(), "a".into());
        log.record("action.decided", &fields).written().await;
        log.record_with(
            "action.completed",
            &fields,
            &[("status", &Value::from(200))],
        )
        .written()
        .await;
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event_type"], "action.decided");
        assert_eq!(lines[1]["agent_id"], "a");
        assert_eq!(lines[1]["status"], 200);
        assert!(lines[1]["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn lines_queued_without_waiting_are_written_by_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(Some(&path)).unwrap();
        for i in 0..1000 {
            let mut fields = Map::new();
            fields.insert("i".into(), i.into());
            drop(log.record("identity.rotated", &fields));
        }
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1000);
        assert!(text
            .lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()));
    }
}
