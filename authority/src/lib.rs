//! Kakunin's certificate authority: a root CA in a directory, and agent
//! certificates that carry their scope (the policy's canonical JSON) in an
//! extension, per DESIGN.md's certificate contract.
//!
//! Revocation (CRL, OCSP) and rotation build on the same directory later.

mod ca;
mod der;
mod issue;
pub mod ocsp;
mod status;

pub use ca::{Authority, CaSettings, InitOptions};
pub use status::{parse_serial, serial_hex, CertStatus, RevocationReason};

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
}
