//! The decision log: one JSON line when a request is decided (the intent,
//! written before anything is forwarded) and one when it is finished.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

pub struct AuditLog {
    sink: Mutex<Sink>,
}

enum Sink {
    Stdout,
    File(File),
}

impl AuditLog {
    pub fn open(path: Option<&Path>) -> io::Result<AuditLog> {
        let sink = match path {
            None => Sink::Stdout,
            Some(path) => Sink::File(OpenOptions::new().create(true).append(true).open(path)?),
        };
        Ok(AuditLog {
            sink: Mutex::new(sink),
        })
    }

    /// Writes one record; `event` names it, `fields` fill it. A failed write
    /// is reported on the operational log: losing an audit line must be seen.
    pub fn record(&self, event: &str, fields: Map<String, Value>) {
        let mut record = Map::new();
        record.insert("timestamp".into(), Value::String(now_rfc3339()));
        record.insert("event_type".into(), Value::String(event.into()));
        record.extend(fields);
        let mut line = Value::Object(record).to_string();
        line.push('\n');
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        let written = match &mut *sink {
            Sink::Stdout => io::stdout().lock().write_all(line.as_bytes()),
            // One write per line with O_APPEND keeps lines whole.
            Sink::File(file) => file.write_all(line.as_bytes()),
        };
        if let Err(err) = written {
            tracing::error!(error = %err, "audit log write failed");
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

    #[test]
    fn records_are_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(Some(&path)).unwrap();
        let mut fields = Map::new();
        fields.insert("agent_id".into(), "a".into());
        log.record("action.decided", fields.clone());
        log.record("action.completed", fields);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event_type"], "action.decided");
        assert_eq!(lines[1]["agent_id"], "a");
    }
}
