//! Kakunin's certificate authority: a root CA in a directory, and agent
//! certificates that carry their scope (the policy's canonical JSON) in an
//! extension, per DESIGN.md's certificate contract.
//!
//! What the CA issued and revoked lives in `ca.db` ([`Store`]); CRLs,
//! rotation and (elsewhere) OCSP answer from it.

mod agent_key;
mod aia;
mod ca;
mod ca_key;
mod crl;
mod csr;
mod der;
mod issue;
mod key_location;
pub mod ocsp;
#[cfg(test)]
mod remote_key_tests;
mod rotate;
mod status;
pub mod store;

pub use agent_key::public_key_from_reference;
pub use aia::DEFAULT_PUBLIC_URL;
pub use ca::{Authority, CaSettings, InitOptions};
pub use crl::Crl;
pub use csr::{public_key_from_csr, public_key_from_pem};
pub use rotate::{RotateRequest, Rotated};
pub use status::{parse_serial, serial_hex, CertStatus, RevocationReason};
pub use store::{
    rfc3339, CertKind, CertRecord, Event, EventKind, Lifecycle, RevokedEntry, Store, StoreOptions,
};

/// The scope extension's value for a policy: a DER UTF8String holding its
/// canonical JSON. Relying parties compare or decode this.
pub fn scope_extension_value(policy: &kakunin_policy::Policy) -> Vec<u8> {
    der::utf8_string(policy.canonical_json())
}

/// Writes a private key file readable by its owner only.
pub fn write_private_key(path: &std::path::Path, pem: &str) -> Result<(), AuthorityError> {
    ca::write_private(path, pem.as_bytes())
}
pub use issue::{AgentRequest, Issued, ServerRequest, SubjectKey, Validity};

/// The scope extension's OID until a private enterprise number is registered
/// (RFC 5612's documentation arc). Receivers read it from the CA settings.
pub const DEFAULT_SCOPE_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 32473, 1, 1];

#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} already holds a CA; refusing to overwrite it (use another --dir)")]
    AlreadyInitialised { path: String },
    #[error("{path}: not a CA directory (run `kakunin ca init --dir {path}` first)")]
    NotInitialised { path: String },
    #[error("{path}: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The CA key (or a key named for its public half) could not be opened
    /// or did not sign; `error` says which backend and why.
    #[error("{context}: {error}")]
    CaKey {
        context: String,
        error: kakunin_signer::KeyError,
    },
    #[error(
        "the CA key {key} does not belong to {cert}: its public key differs from the \
         certificate's. {hint}"
    )]
    KeyMismatch {
        key: String,
        cert: String,
        hint: String,
    },
    #[error(
        "{path}: the CA database is missing. Restore ca.db from a backup of this CA directory; \
         without it the CA has no record of what it issued or revoked"
    )]
    DatabaseMissing { path: String },
    #[error(
        "{path}: the CA database is damaged or is not a Kakunin CA database ({reason}). \
         Restore ca.db from a backup, and keep the damaged file for inspection"
    )]
    DatabaseCorrupt { path: String, reason: String },
    #[error(
        "{path} is locked by another process (waited {waited_ms} ms): another `kakunin ca` \
         command or a backup is writing to it. Retry when it finishes, or wait longer with \
         --lock-timeout-ms"
    )]
    DatabaseLocked { path: String, waited_ms: u128 },
    #[error(
        "{path}: the CA database has schema version {found}, newer than this kakunin \
         understands ({supported}); use the kakunin that wrote it, or a newer one"
    )]
    DatabaseTooNew {
        path: String,
        found: i64,
        supported: i64,
    },
    #[error("{path}: database error: {reason}")]
    Database { path: String, reason: String },
    #[error(
        "serial {serial} was not issued by this CA (`kakunin ca list` shows the serials it knows)"
    )]
    UnknownSerial { serial: String },
    #[error(
        "serial {serial} is already revoked ({reason}, since {at}); a revocation is final, \
         nothing was changed"
    )]
    AlreadyRevoked {
        serial: String,
        at: String,
        reason: RevocationReason,
    },
    #[error(
        "agent {agent_id:?} has no current certificate to rotate (none issued, or all revoked); \
         issue one with `kakunin ca issue`"
    )]
    NothingToRotate { agent_id: String },
}
