//! What the CA database holds, as the rest of the crate and a server see it.
//! Times are Unix seconds (UTC) throughout: the database, OCSP and CRLs all
//! work to the second.

use crate::{CertStatus, RevocationReason};

/// Which profile a certificate was issued under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKind {
    Agent,
    Server,
}

impl CertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CertKind::Agent => "agent",
            CertKind::Server => "server",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<CertKind> {
        match text {
            "agent" => Some(CertKind::Agent),
            "server" => Some(CertKind::Server),
            _ => None,
        }
    }
}

/// One issued certificate and what has happened to it since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRecord {
    /// Canonical hex (see [`crate::serial_hex`]).
    pub serial: String,
    pub kind: CertKind,
    /// The subject CN: the agent id, or a server certificate's first name.
    pub subject: String,
    /// Present for agent certificates only.
    pub agent_id: Option<String>,
    pub not_before: i64,
    pub not_after: i64,
    pub issued_at: i64,
    /// DER SubjectPublicKeyInfo: rotation re-certifies it by default.
    pub spki_der: Vec<u8>,
    pub der: Vec<u8>,
    /// The scope the certificate carries (canonical JSON); agents only.
    pub policy_json: Option<String>,
    pub revoked_at: Option<i64>,
    pub reason: Option<RevocationReason>,
    /// A rotation's scheduled revocation that has not been materialised yet.
    pub revoke_at: Option<i64>,
    pub superseded_by: Option<String>,
}

/// A certificate's state for display (`ca list`): the OCSP view plus expiry
/// and a pending rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Good,
    Expired,
    Revoked {
        at: i64,
        reason: RevocationReason,
    },
    /// Still good; a rotation revokes it (superseded) at `at`.
    RevokeScheduled {
        at: i64,
    },
}

impl CertRecord {
    /// What OCSP says at `now`. A scheduled revocation whose time has come
    /// counts even before `materialize_due` writes it down, so a responder
    /// never answers "good" for a certificate that is already past its grace.
    pub fn status_at(&self, now: i64) -> CertStatus {
        if let (Some(revoked_at), Some(reason)) = (self.revoked_at, self.reason) {
            return CertStatus::Revoked { revoked_at, reason };
        }
        match self.revoke_at {
            Some(at) if at <= now => CertStatus::Revoked {
                revoked_at: at,
                reason: RevocationReason::Superseded,
            },
            _ => CertStatus::Good,
        }
    }

    pub fn lifecycle_at(&self, now: i64) -> Lifecycle {
        match self.status_at(now) {
            CertStatus::Revoked { revoked_at, reason } => Lifecycle::Revoked {
                at: revoked_at,
                reason,
            },
            _ if self.not_after < now => Lifecycle::Expired,
            _ => match self.revoke_at {
                Some(at) => Lifecycle::RevokeScheduled { at },
                None => Lifecycle::Good,
            },
        }
    }
}

/// A certificate about to be recorded.
#[derive(Debug, Clone)]
pub struct NewCertificate {
    pub serial: String,
    pub kind: CertKind,
    pub subject: String,
    pub agent_id: Option<String>,
    pub not_before: i64,
    pub not_after: i64,
    pub issued_at: i64,
    pub spki_der: Vec<u8>,
    pub der: Vec<u8>,
    pub policy_json: Option<String>,
}

/// One line of a CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedEntry {
    pub serial: String,
    pub revoked_at: i64,
    pub reason: RevocationReason,
}

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Issued,
    /// A rotation scheduled a revocation; the event's `at` is when it takes
    /// effect.
    RevocationScheduled,
    /// The certificate is revoked; `at` is the revocation time.
    Revoked,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Issued => "issued",
            EventKind::RevocationScheduled => "revocation_scheduled",
            EventKind::Revoked => "revoked",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<EventKind> {
        [
            EventKind::Issued,
            EventKind::RevocationScheduled,
            EventKind::Revoked,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

/// A row of the append-only `events` table. Ids only grow, and a row becomes
/// visible only with ids above every earlier committed row (writers are
/// serialised), so a poller that remembers the last id it saw misses nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: i64,
    pub serial: String,
    pub agent_id: Option<String>,
    pub kind: EventKind,
    pub reason: Option<RevocationReason>,
    pub at: i64,
}

/// `2025-01-02T03:04:05Z` for Unix seconds; the time crate's formatter is
/// behind a feature this crate does not otherwise need.
pub fn rfc3339(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("@{unix}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
