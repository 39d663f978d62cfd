//! The SQL, one function per question. Each runs inside a transaction the
//! caller opened, so several can make up one atomic change (rotation).

use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::records::{
    rfc3339, CertKind, CertRecord, Event, EventKind, NewCertificate, RevokedEntry,
};
use crate::{AuthorityError, CertStatus, RevocationReason};

/// A failure inside a transaction: SQLite's own (the store adds the path and
/// classifies it) or a refusal the CA explains itself.
#[derive(Debug)]
pub(crate) enum QueryError {
    Sql(rusqlite::Error),
    Authority(AuthorityError),
}

impl From<rusqlite::Error> for QueryError {
    fn from(e: rusqlite::Error) -> Self {
        QueryError::Sql(e)
    }
}

impl From<AuthorityError> for QueryError {
    fn from(e: AuthorityError) -> Self {
        QueryError::Authority(e)
    }
}

type Result<T> = std::result::Result<T, QueryError>;

const COLUMNS: &str = "serial, kind, subject, agent_id, not_before, not_after, issued_at, \
                       spki, der, policy, revoked_at, reason, revoke_at, superseded_by";

pub(crate) fn insert(conn: &Connection, cert: &NewCertificate) -> Result<()> {
    conn.execute(
        &format!(
            "INSERT INTO certificates ({COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, NULL, NULL, NULL)"
        ),
        params![
            cert.serial,
            cert.kind.as_str(),
            cert.subject,
            cert.agent_id,
            cert.not_before,
            cert.not_after,
            cert.issued_at,
            cert.spki_der,
            cert.der,
            cert.policy_json,
        ],
    )?;
    event(
        conn,
        &cert.serial,
        cert.agent_id.as_deref(),
        EventKind::Issued,
        None,
        cert.issued_at,
    )
}

pub(crate) fn get(conn: &Connection, serial: &str) -> Result<Option<CertRecord>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM certificates WHERE serial = ?1"),
            [serial],
            record,
        )
        .optional()?)
}

pub(crate) fn list(conn: &Connection, agent_id: Option<&str>) -> Result<Vec<CertRecord>> {
    let mut statement = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM certificates
         WHERE ?1 IS NULL OR agent_id = ?1
         ORDER BY issued_at, rowid"
    ))?;
    let rows = statement.query_map([agent_id], record)?;
    Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
}

/// The certificate a rotation replaces: the agent's newest one that is not
/// revoked and not already due to be.
pub(crate) fn newest_current(
    conn: &Connection,
    agent_id: &str,
    now: i64,
) -> Result<Option<CertRecord>> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {COLUMNS} FROM certificates
                 WHERE kind = 'agent' AND agent_id = ?1 AND revoked_at IS NULL
                   AND (revoke_at IS NULL OR revoke_at > ?2)
                 ORDER BY issued_at DESC, rowid DESC LIMIT 1"
            ),
            params![agent_id, now],
            record,
        )
        .optional()?)
}

pub(crate) fn revoke(
    conn: &Connection,
    serial: &str,
    reason: RevocationReason,
    at: i64,
) -> Result<CertRecord> {
    let existing = get(conn, serial)?.ok_or_else(|| AuthorityError::UnknownSerial {
        serial: serial.to_string(),
    })?;
    if let CertStatus::Revoked { revoked_at, reason } = existing.status_at(at) {
        return Err(AuthorityError::AlreadyRevoked {
            serial: serial.to_string(),
            at: rfc3339(revoked_at),
            reason,
        }
        .into());
    }
    conn.execute(
        "UPDATE certificates SET revoked_at = ?2, reason = ?3 WHERE serial = ?1",
        params![serial, at, reason.code()],
    )?;
    event(
        conn,
        serial,
        existing.agent_id.as_deref(),
        EventKind::Revoked,
        Some(reason),
        at,
    )?;
    get(conn, serial)?.ok_or_else(|| QueryError::Sql(rusqlite::Error::QueryReturnedNoRows))
}

/// Schedules `serial` to be revoked as superseded at `revoke_at`. An earlier
/// schedule stands: a second rotation never extends a grace period.
pub(crate) fn schedule_revocation(
    conn: &Connection,
    serial: &str,
    revoke_at: i64,
    superseded_by: &str,
    agent_id: Option<&str>,
) -> Result<i64> {
    conn.execute(
        "UPDATE certificates
         SET revoke_at = min(coalesce(revoke_at, ?2), ?2), superseded_by = ?3
         WHERE serial = ?1",
        params![serial, revoke_at, superseded_by],
    )?;
    let effective: i64 = conn.query_row(
        "SELECT revoke_at FROM certificates WHERE serial = ?1",
        [serial],
        |row| row.get(0),
    )?;
    event(
        conn,
        serial,
        agent_id,
        EventKind::RevocationScheduled,
        Some(RevocationReason::Superseded),
        effective,
    )?;
    Ok(effective)
}

pub(crate) fn any_due(conn: &Connection, now: i64) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM certificates
                        WHERE revoked_at IS NULL AND revoke_at <= ?1)",
        [now],
        |row| row.get(0),
    )?)
}

pub(crate) fn materialize_due(conn: &Connection, now: i64) -> Result<Vec<RevokedEntry>> {
    let due: Vec<(String, Option<String>, i64)> = {
        let mut statement = conn.prepare(
            "SELECT serial, agent_id, revoke_at FROM certificates
             WHERE revoked_at IS NULL AND revoke_at <= ?1 ORDER BY revoke_at, rowid",
        )?;
        let rows = statement.query_map([now], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        rows.collect::<std::result::Result<_, _>>()?
    };
    let reason = RevocationReason::Superseded;
    let mut done = Vec::with_capacity(due.len());
    for (serial, agent_id, revoke_at) in due {
        conn.execute(
            "UPDATE certificates SET revoked_at = ?2, reason = ?3 WHERE serial = ?1",
            params![serial, revoke_at, reason.code()],
        )?;
        event(
            conn,
            &serial,
            agent_id.as_deref(),
            EventKind::Revoked,
            Some(reason),
            revoke_at,
        )?;
        done.push(RevokedEntry {
            serial,
            revoked_at: revoke_at,
            reason,
        });
    }
    Ok(done)
}

pub(crate) fn revoked(conn: &Connection, now: i64) -> Result<Vec<RevokedEntry>> {
    let mut statement = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM certificates
         WHERE revoked_at IS NOT NULL OR revoke_at <= ?1
         ORDER BY rowid"
    ))?;
    let rows = statement.query_map([now], record)?;
    let mut entries = Vec::new();
    for row in rows {
        let row = row?;
        if let CertStatus::Revoked { revoked_at, reason } = row.status_at(now) {
            entries.push(RevokedEntry {
                serial: row.serial,
                revoked_at,
                reason,
            });
        }
    }
    Ok(entries)
}

pub(crate) fn next_crl_number(conn: &Connection) -> Result<u64> {
    let number: i64 = conn.query_row(
        "UPDATE crl_state SET number = number + 1 WHERE id = 1 RETURNING number",
        [],
        |row| row.get(0),
    )?;
    Ok(u64::try_from(number).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, number))?)
}

pub(crate) fn events_after(conn: &Connection, last_id: i64, limit: usize) -> Result<Vec<Event>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut statement = conn.prepare(
        "SELECT id, serial, agent_id, kind, reason, at FROM events
         WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = statement.query_map(params![last_id, limit], |row| {
        Ok(Event {
            id: row.get(0)?,
            serial: row.get(1)?,
            agent_id: row.get(2)?,
            kind: EventKind::parse(&row.get::<_, String>(3)?)
                .ok_or_else(|| bad_value(3, "event kind"))?,
            reason: optional_reason(row, 4)?,
            at: row.get(5)?,
        })
    })?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

pub(crate) fn last_event_id(conn: &Connection) -> Result<i64> {
    Ok(
        conn.query_row("SELECT coalesce(max(id), 0) FROM events", [], |row| {
            row.get(0)
        })?,
    )
}

fn event(
    conn: &Connection,
    serial: &str,
    agent_id: Option<&str>,
    kind: EventKind,
    reason: Option<RevocationReason>,
    at: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO events (serial, agent_id, kind, reason, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            serial,
            agent_id,
            kind.as_str(),
            reason.map(|r| r.code()),
            at
        ],
    )?;
    Ok(())
}

fn record(row: &Row<'_>) -> rusqlite::Result<CertRecord> {
    Ok(CertRecord {
        serial: row.get(0)?,
        kind: CertKind::parse(&row.get::<_, String>(1)?)
            .ok_or_else(|| bad_value(1, "certificate kind"))?,
        subject: row.get(2)?,
        agent_id: row.get(3)?,
        not_before: row.get(4)?,
        not_after: row.get(5)?,
        issued_at: row.get(6)?,
        spki_der: row.get(7)?,
        der: row.get(8)?,
        policy_json: row.get(9)?,
        revoked_at: row.get(10)?,
        reason: optional_reason(row, 11)?,
        revoke_at: row.get(12)?,
        superseded_by: row.get(13)?,
    })
}

fn optional_reason(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<RevocationReason>> {
    match row.get::<_, Option<u8>>(index)? {
        None => Ok(None),
        Some(code) => RevocationReason::from_code(code)
            .map(Some)
            .ok_or_else(|| bad_value(index, "revocation reason code")),
    }
}

fn bad_value(index: usize, what: &'static str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        index,
        Type::Text,
        format!("not a valid {what}").into(),
    )
}
