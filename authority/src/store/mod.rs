//! The CA's memory: `ca.db`, an SQLite database beside the key.
//!
//! Several short-lived `kakunin ca` processes may write at once and a
//! long-running `ca serve` reads and polls, so the database runs in WAL mode
//! (readers never wait for a writer), every write transaction starts
//! IMMEDIATE (it takes the write lock up front instead of failing half-way on
//! an upgrade), and a busy timeout makes writers queue instead of failing.

pub(crate) mod queries;
mod records;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, Transaction, TransactionBehavior};

use crate::{parse_serial, AuthorityError, CertStatus, RevocationReason};

pub use records::{
    rfc3339, CertKind, CertRecord, Event, EventKind, Lifecycle, NewCertificate, RevokedEntry,
};

pub(crate) use queries::QueryError;

/// Bumped with every schema change; `open` refuses a database newer than
/// this build understands rather than misreading it.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE certificates (
    serial        TEXT PRIMARY KEY NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('agent', 'server')),
    subject       TEXT NOT NULL,
    agent_id      TEXT,
    not_before    INTEGER NOT NULL,
    not_after     INTEGER NOT NULL,
    issued_at     INTEGER NOT NULL,
    spki          BLOB NOT NULL,
    der           BLOB NOT NULL,
    policy        TEXT,
    revoked_at    INTEGER,
    reason        INTEGER,
    revoke_at     INTEGER,
    superseded_by TEXT,
    CHECK ((revoked_at IS NULL) = (reason IS NULL))
) STRICT;
CREATE INDEX certificates_by_agent ON certificates (agent_id, issued_at);
CREATE INDEX certificates_by_revoke_at ON certificates (revoke_at) WHERE revoke_at IS NOT NULL;
CREATE TABLE events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    serial   TEXT NOT NULL,
    agent_id TEXT,
    kind     TEXT NOT NULL,
    reason   INTEGER,
    at       INTEGER NOT NULL
) STRICT;
CREATE TABLE crl_state (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    number INTEGER NOT NULL
) STRICT;
INSERT INTO crl_state (id, number) VALUES (1, 0);
";

/// How a store waits for other processes.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// How long a write waits for another process's write lock before
    /// giving up with [`AuthorityError::DatabaseLocked`].
    pub lock_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            lock_timeout: Duration::from_secs(5),
        }
    }
}

/// An open `ca.db`. Methods take `&self` and serialise on one connection,
/// so a server can share the store between threads; they block (SQLite I/O,
/// lock waits), so async callers run them on a blocking thread.
pub struct Store {
    path: PathBuf,
    options: StoreOptions,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Creates a new, empty database; refuses a path that exists.
    pub fn create(path: &Path, options: &StoreOptions) -> Result<Store, AuthorityError> {
        if path.exists() {
            return Err(AuthorityError::AlreadyInitialised {
                path: path.display().to_string(),
            });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
        let store = Store::connect(path, flags, options)?;
        {
            let mut conn = store.conn();
            let mode: String = conn
                .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
                .map_err(|e| store.error(e))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(AuthorityError::Database {
                    path: store.display(),
                    reason: format!(
                        "the file system refused WAL mode (got {mode:?}); put the CA directory on a local disk"
                    ),
                });
            }
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| store.error(e))?;
            tx.execute_batch(SCHEMA).map_err(|e| store.error(e))?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(|e| store.error(e))?;
            tx.commit().map_err(|e| store.error(e))?;
        }
        Ok(store)
    }

    /// Opens an existing database, checking that it is one of ours and not
    /// from a newer Kakunin.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<Store, AuthorityError> {
        if !path.exists() {
            return Err(AuthorityError::DatabaseMissing {
                path: path.display().to_string(),
            });
        }
        // No CREATE flag: a database that vanishes between the check and
        // here must not come back empty, forgetting every revocation.
        let store = Store::connect(path, OpenFlags::SQLITE_OPEN_READ_WRITE, options)?;
        store.check_schema()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn options(&self) -> StoreOptions {
        self.options
    }

    /// Records a certificate the CA has just signed (and an `issued` event).
    pub fn insert(&self, cert: &NewCertificate) -> Result<(), AuthorityError> {
        self.write(|tx| queries::insert(tx, cert))
    }

    pub fn get(&self, serial: &str) -> Result<Option<CertRecord>, AuthorityError> {
        let Ok(serial) = parse_serial(serial) else {
            return Ok(None);
        };
        self.read(|conn| queries::get(conn, &serial))
    }

    /// The status OCSP reports, as of the system clock.
    pub fn status(&self, serial: &str) -> Result<CertStatus, AuthorityError> {
        self.status_at(serial, unix_now())
    }

    /// The status OCSP reports at `now`. Text that cannot be a serial, and
    /// serials this CA never issued, are `Unknown`.
    pub fn status_at(&self, serial: &str, now: i64) -> Result<CertStatus, AuthorityError> {
        Ok(self
            .get(serial)?
            .map_or(CertStatus::Unknown, |record| record.status_at(now)))
    }

    /// Every certificate, oldest first; only `agent_id`'s when given.
    pub fn list(&self, agent_id: Option<&str>) -> Result<Vec<CertRecord>, AuthorityError> {
        self.read(|conn| queries::list(conn, agent_id))
    }

    /// Revokes `serial` as of `at`. Unknown and already revoked serials are
    /// errors that say so.
    pub fn revoke(
        &self,
        serial: &str,
        reason: RevocationReason,
        at: i64,
    ) -> Result<CertRecord, AuthorityError> {
        let serial = parse_serial(serial)?;
        self.write(|tx| queries::revoke(tx, &serial, reason, at))
    }

    /// Turns scheduled revocations whose time has come into revocations
    /// (reason superseded, dated at the scheduled time) and returns them.
    /// Cheap when nothing is due: the write lock is taken only if needed.
    pub fn materialize_due(&self, now: i64) -> Result<Vec<RevokedEntry>, AuthorityError> {
        if !self.read(|conn| queries::any_due(conn, now))? {
            return Ok(Vec::new());
        }
        self.write(|tx| queries::materialize_due(tx, now))
    }

    /// What a CRL lists at `now`, scheduled revocations already due included.
    pub fn revoked(&self, now: i64) -> Result<Vec<RevokedEntry>, AuthorityError> {
        self.read(|conn| queries::revoked(conn, now))
    }

    /// Takes the next CRL number; every CRL gets a larger one than the last.
    pub fn next_crl_number(&self) -> Result<u64, AuthorityError> {
        self.write(|tx| queries::next_crl_number(tx))
    }

    /// Events with id greater than `last_id`, oldest first, at most `limit`.
    /// Start from 0 for the whole history or from [`Store::last_event_id`]
    /// for only what happens next.
    pub fn events_after(&self, last_id: i64, limit: usize) -> Result<Vec<Event>, AuthorityError> {
        self.read(|conn| queries::events_after(conn, last_id, limit))
    }

    pub fn last_event_id(&self) -> Result<i64, AuthorityError> {
        self.read(queries::last_event_id)
    }

    /// Runs `f` in a write transaction that holds the write lock from the
    /// start; rolled back if `f` fails.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, QueryError>,
    ) -> Result<T, AuthorityError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.error(e))?;
        let value = f(&tx).map_err(|e| self.query_error(e))?;
        tx.commit().map_err(|e| self.error(e))?;
        Ok(value)
    }

    /// Runs `f` on one consistent snapshot.
    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, QueryError>,
    ) -> Result<T, AuthorityError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.error(e))?;
        let value = f(&tx).map_err(|e| self.query_error(e))?;
        tx.commit().map_err(|e| self.error(e))?;
        Ok(value)
    }

    fn connect(
        path: &Path,
        flags: OpenFlags,
        options: &StoreOptions,
    ) -> Result<Store, AuthorityError> {
        let flags = flags | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let display = path.display().to_string();
        let conn =
            Connection::open_with_flags(path, flags).map_err(|e| classify(&display, options, e))?;
        let store = Store {
            path: path.to_path_buf(),
            options: *options,
            conn: Mutex::new(conn),
        };
        {
            let conn = store.conn();
            conn.busy_timeout(options.lock_timeout)
                .map_err(|e| store.error(e))?;
            // A revocation the CA has acknowledged must survive a power cut;
            // WAL's default (NORMAL) may lose the last commits.
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(|e| store.error(e))?;
        }
        Ok(store)
    }

    fn check_schema(&self) -> Result<(), AuthorityError> {
        let conn = self.conn();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(|e| self.error(e))?;
        if version > SCHEMA_VERSION {
            return Err(AuthorityError::DatabaseTooNew {
                path: self.display(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'
                 AND name IN ('certificates', 'events', 'crl_state')",
                [],
                |row| row.get(0),
            )
            .map_err(|e| self.error(e))?;
        if version < 1 || tables != 3 {
            return Err(AuthorityError::DatabaseCorrupt {
                path: self.display(),
                reason: "it is an SQLite database, but not a Kakunin CA database".into(),
            });
        }
        Ok(())
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no half-done transaction:
        // rusqlite rolls back when the transaction is dropped.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn display(&self) -> String {
        self.path.display().to_string()
    }

    fn error(&self, e: rusqlite::Error) -> AuthorityError {
        classify(&self.display(), &self.options, e)
    }

    fn query_error(&self, e: QueryError) -> AuthorityError {
        match e {
            QueryError::Sql(e) => self.error(e),
            QueryError::Authority(e) => e,
        }
    }
}

fn classify(path: &str, options: &StoreOptions, e: rusqlite::Error) -> AuthorityError {
    let path = path.to_string();
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            AuthorityError::DatabaseLocked {
                path,
                waited_ms: options.lock_timeout.as_millis(),
            }
        }
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            AuthorityError::DatabaseCorrupt {
                path,
                reason: e.to_string(),
            }
        }
        _ => match e {
            // A value of the wrong shape in a column: written by something
            // other than this code.
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => AuthorityError::DatabaseCorrupt {
                path,
                reason: e.to_string(),
            },
            other => AuthorityError::Database {
                path,
                reason: other.to_string(),
            },
        },
    }
}

pub(crate) fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
