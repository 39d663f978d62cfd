//! The decision log: one JSON line when a request is decided (the intent,
//! written before anything is forwarded) and one when it is finished.
//!
//! Group commit, on the caller's own thread: a request formats its line and
//! queues it; where the order matters it then waits until the line is in the
//! file. The first waiter to run after a yield writes every line queued so far
//! in one `write(2)`, so under load many requests share one syscall, and no
//! request ever leaves before its intent is in the log.
//!
//! There is no writer thread on purpose. A thread woken per batch cost a
//! context switch pair per request on a busy core (a third of the proxy's CPU
//! in the benchmark's profile); an append to a file is a short copy into the
//! page cache, cheaper than waking anyone. A sink that blocks (a stalled
//! pipe on stdout) stalls the requests waiting on it either way: nothing is
//! forwarded without its intent on record.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tokio::sync::Notify;

use crate::json_line::{self, Members};

pub struct AuditLog {
    /// Lines formatted and waiting for a write, newest last.
    pending: Mutex<Pending>,
    /// Held while writing; whoever holds it writes for everyone.
    sink: Mutex<Sink>,
    /// Every line numbered up to this one is in the sink.
    written: AtomicU64,
    /// Told after each write, for waiters whose line another thread was
    /// writing.
    flushed: Notify,
}

struct Pending {
    bytes: Vec<u8>,
    /// Number of the newest line in `bytes` (lines are numbered from 1).
    last: u64,
}

struct Sink {
    out: Box<dyn Write + Send>,
    /// The previous batch's buffer, swapped back in for the next one.
    spare: Vec<u8>,
}

/// A queued line. [`Queued::written`] waits until it is in the file;
/// dropping it unwaited writes it before going on.
#[must_use = "await .written() where the line must be in the log before going on"]
pub struct Queued<'a> {
    log: &'a AuditLog,
    line: u64,
}

impl Queued<'_> {
    pub async fn written(self) {
        if self.log.has_written(self.line) {
            return;
        }
        // Let the other tasks that are ready queue their lines first: the
        // write below then carries all of them.
        tokio::task::yield_now().await;
        loop {
            if self.log.has_written(self.line) {
                return;
            }
            let notified = self.log.flushed.notified();
            tokio::pin!(notified);
            // Registered before looking, so a write finishing in between
            // still wakes this waiter.
            notified.as_mut().enable();
            if !self.log.try_write_pending() {
                // Another thread is writing; it may not have taken this line.
                notified.await;
            }
        }
    }
}

impl Drop for Queued<'_> {
    /// A line nobody waited for (an event, or a request whose agent went
    /// away mid-wait) still goes out now rather than with some later line.
    fn drop(&mut self) {
        if !self.log.has_written(self.line) {
            self.log.write_pending(&mut self.log.lock_sink());
        }
    }
}

impl AuditLog {
    pub fn open(path: Option<&Path>) -> io::Result<AuditLog> {
        Ok(match path {
            None => AuditLog::to_sink(Box::new(io::stdout())),
            Some(path) => AuditLog::to_sink(Box::new(
                OpenOptions::new().create(true).append(true).open(path)?,
            )),
        })
    }

    fn to_sink(out: Box<dyn Write + Send>) -> AuditLog {
        AuditLog {
            pending: Mutex::new(Pending {
                bytes: Vec::new(),
                last: 0,
            }),
            sink: Mutex::new(Sink {
                out,
                spare: Vec::new(),
            }),
            written: AtomicU64::new(0),
            flushed: Notify::new(),
        }
    }

    /// Queues one record; `event` names it, `fields` fill it. A failed write
    /// is reported on the operational log: losing an audit line must be seen.
    pub fn record(&self, event: &str, fields: &Map<String, Value>) -> Queued<'_> {
        self.record_fields(event, &WithoutLogKeys(fields))
    }

    /// `record` for typed fields (a request's trail), written as they are,
    /// not copied.
    pub fn record_fields<F: LineFields + ?Sized>(&self, event: &str, fields: &F) -> Queued<'_> {
        let timestamp = now_rfc3339();
        // ASCII digits and separators only, so never the fallback.
        let timestamp = std::str::from_utf8(&timestamp).unwrap_or("1970-01-01T00:00:00.000Z");
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        // Formatted straight into the batch: no line buffer of its own.
        format_line(&mut pending.bytes, event, timestamp, fields);
        pending.last += 1;
        Queued {
            log: self,
            line: pending.last,
        }
    }

    fn has_written(&self, line: u64) -> bool {
        self.written.load(Ordering::Acquire) >= line
    }

    /// Writes what is queued unless another thread is writing already;
    /// false if it was.
    fn try_write_pending(&self) -> bool {
        match self.sink.try_lock() {
            Ok(mut sink) => self.write_pending(&mut sink),
            Err(TryLockError::Poisoned(poisoned)) => self.write_pending(&mut poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => return false,
        }
        true
    }

    fn lock_sink(&self) -> MutexGuard<'_, Sink> {
        self.sink.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes every line queued so far, in one go, and says how far that
    /// got. Whole lines only, so appends from one process never interleave
    /// mid-line. Waiters are released even after a failure, which is
    /// logged: a request must not hang on a log that cannot be written.
    fn write_pending(&self, sink: &mut Sink) {
        let last = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            // Swapped, not copied: the two buffers go back and forth.
            std::mem::swap(&mut sink.spare, &mut pending.bytes);
            pending.last
        };
        if !sink.spare.is_empty() {
            let Sink { out, spare } = sink;
            if let Err(err) = out.write_all(spare).and_then(|()| out.flush()) {
                tracing::error!(error = %err, "audit log write failed");
            }
            spare.clear();
        }
        self.written.fetch_max(last, Ordering::Release);
        self.flushed.notify_waiters();
    }
}

impl Drop for AuditLog {
    /// Writes what is queued before the process goes on without the log.
    fn drop(&mut self) {
        self.write_pending(&mut self.lock_sink());
    }
}

/// A record's fields: the members of its line after the log's own two keys
/// (which the fields must not repeat: a line with duplicate keys means
/// different things to different readers).
pub trait LineFields {
    fn write_members(&self, members: &mut Members<'_>);
}

/// A map of fields without the log's own two keys.
struct WithoutLogKeys<'a>(&'a Map<String, Value>);

impl LineFields for WithoutLogKeys<'_> {
    fn write_members(&self, members: &mut Members<'_>) {
        for (key, value) in self.0 {
            if key != "timestamp" && key != "event_type" {
                members.entry(key, value);
            }
        }
    }
}

/// One JSON object on one line, appended to `out`: the log's own two keys,
/// then the record's fields.
fn format_line<F: LineFields + ?Sized>(
    out: &mut Vec<u8>,
    event: &str,
    timestamp: &str,
    fields: &F,
) {
    out.extend_from_slice(b"{\"timestamp\":");
    json_line::string(out, timestamp);
    out.extend_from_slice(b",\"event_type\":");
    json_line::string(out, event);
    fields.write_members(&mut Members::after_others(out));
    out.extend_from_slice(b"}\n");
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, the length of every timestamp in the log.
const TIMESTAMP_LEN: usize = 24;

/// The current UTC time with milliseconds, as RFC 3339 bytes. Digits are
/// written into a fixed array: `format!` with padded fields cost about a
/// microsecond a request in the benchmark's profile, for a string of known
/// shape.
fn now_rfc3339() -> [u8; TIMESTAMP_LEN] {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339_millis(now.as_secs(), now.subsec_millis())
}

fn rfc3339_millis(unix_secs: u64, millis: u32) -> [u8; TIMESTAMP_LEN] {
    let secs = i64::try_from(unix_secs).unwrap_or(i64::MAX);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    let mut out = *b"0000-00-00T00:00:00.000Z";
    // A year past 9999 (a clock gone wrong) keeps its last four digits
    // rather than widening the field.
    put_digits(&mut out[0..4], year.rem_euclid(10_000) as u64);
    put_digits(&mut out[5..7], u64::from(month));
    put_digits(&mut out[8..10], u64::from(day));
    put_digits(&mut out[11..13], (rem / 3600) as u64);
    put_digits(&mut out[14..16], (rem % 3600 / 60) as u64);
    put_digits(&mut out[17..19], (rem % 60) as u64);
    put_digits(&mut out[20..23], u64::from(millis.min(999)));
    out
}

/// `value`'s last `field.len()` decimal digits, zero-padded, into `field`.
fn put_digits(field: &mut [u8], mut value: u64) {
    for digit in field.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
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

    #[test]
    fn timestamps_are_rfc3339_with_milliseconds() {
        let at = |secs, millis| String::from_utf8(rfc3339_millis(secs, millis).to_vec()).unwrap();
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        // 2026-11-23T09:05:07.042Z
        assert_eq!(at(1_795_424_707, 42), "2026-11-23T09:05:07.042Z");
        assert_eq!(at(951_782_399, 999), "2000-02-28T23:59:59.999Z");
        assert_eq!(at(951_782_400, 1), "2000-02-29T00:00:00.001Z");
        // Out of range stays the same shape.
        assert_eq!(at(u64::MAX, 5_000).len(), TIMESTAMP_LEN);
    }

    #[tokio::test]
    async fn records_are_json_lines_in_the_file_once_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(Some(&path)).unwrap();
        let mut fields = Map::new();
        fields.insert("agent_id".into(), "a".into());
        log.record("action.decided", &fields).written().await;
        fields.insert("status".into(), 200.into());
        // The log's own keys in the fields are not repeated.
        fields.insert("event_type".into(), "forged".into());
        log.record("action.completed", &fields).written().await;
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event_type"], "action.decided");
        assert_eq!(lines[1]["agent_id"], "a");
        assert_eq!(lines[1]["status"], 200);
        assert_eq!(lines[1]["event_type"], "action.completed");
        assert_eq!(
            text.lines().nth(1).unwrap().matches("event_type").count(),
            1
        );
        assert!(lines[1]["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn lines_are_one_object_with_the_log_keys_first() {
        let hostile = "/a\"b\\c\nd\u{7}é";
        let mut fields = Map::new();
        fields.insert("path".into(), hostile.into());
        fields.insert("nested".into(), serde_json::json!({"k": [1, 2]}));
        fields.insert("timestamp".into(), "forged".into());
        let mut out = Vec::new();
        format_line(
            &mut out,
            "action.decided",
            "2026-11-23T09:05:07.042Z",
            &WithoutLogKeys(&fields),
        );
        // An object with no fields still makes one whole line.
        format_line(&mut out, "e\"vent", "t", &WithoutLogKeys(&Map::new()));
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.split_terminator('\n').collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with(
            r#"{"timestamp":"2026-11-23T09:05:07.042Z","event_type":"action.decided","#
        ));
        let first: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(first["path"], hostile);
        assert_eq!(first["nested"]["k"][1], 2);
        assert_eq!(first["timestamp"], "2026-11-23T09:05:07.042Z");
        assert_eq!(first.as_object().unwrap().len(), 4);
        assert_eq!(lines[0].matches("timestamp").count(), 1);
        let second: Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(second["event_type"], "e\"vent");
        assert_eq!(second.as_object().unwrap().len(), 2);
    }

    /// Counts the writes that reach it and keeps what they carried.
    #[derive(Clone, Default)]
    struct CountingSink(std::sync::Arc<Mutex<(usize, Vec<u8>)>>);

    impl Write for CountingSink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut seen = self.0.lock().unwrap();
            seen.0 += 1;
            seen.1.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn lines_of_requests_ready_together_share_one_write() {
        let sink = CountingSink::default();
        let log = std::sync::Arc::new(AuditLog::to_sink(Box::new(sink.clone())));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..64 {
            let log = log.clone();
            tasks.spawn(async move {
                let mut fields = Map::new();
                fields.insert("i".into(), i.into());
                log.record("action.decided", &fields).written().await;
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        let (writes, bytes) = sink.0.lock().unwrap().clone();
        assert_eq!(String::from_utf8(bytes).unwrap().lines().count(), 64);
        assert_eq!(
            writes, 1,
            "64 lines ready at once went out in {writes} writes"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn waiters_on_many_threads_all_find_their_line_written() {
        let sink = CountingSink::default();
        let log = std::sync::Arc::new(AuditLog::to_sink(Box::new(sink.clone())));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..2000u64 {
            let log = log.clone();
            let sink = sink.clone();
            tasks.spawn(async move {
                let mut fields = Map::new();
                fields.insert("n".into(), format!("<{i}>").into());
                log.record("action.decided", &fields).written().await;
                let seen = sink.0.lock().unwrap().1.clone();
                let needle = format!("<{i}>");
                assert!(
                    seen.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "line {i} was not in the sink when its waiter went on"
                );
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        let text = String::from_utf8(sink.0.lock().unwrap().1.clone()).unwrap();
        assert_eq!(text.lines().count(), 2000);
        assert!(text
            .lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()));
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
