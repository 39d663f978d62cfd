//! Errors: the KMS exceptions the wire protocol carries, and the library's
//! own failures (start, key generation, key import).

use std::net::SocketAddr;

use crate::keys::{KeySpec, KeyState};

/// What went wrong in the stand-in itself (not in a KMS call).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}; pick a free port, or 127.0.0.1:0 for any")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "key spec {0:?} is not supported by the KMS stand-in; use ECC_NIST_P256 or \
         ECC_NIST_P384, or import an RSA_2048, RSA_3072 or RSA_4096 key"
    )]
    UnsupportedKeySpec(String),
    #[error(
        "the KMS stand-in cannot generate {} keys (ring cannot generate RSA keys); create \
         ECC_NIST_P256 or ECC_NIST_P384, or import the key (Standin::import_key, --import-key)",
        .0.as_str()
    )]
    CannotGenerate(KeySpec),
    #[error("cannot import the key: {0}")]
    Import(String),
    #[error("the system random number generator failed while making a key")]
    KeyGeneration,
}

/// A KMS exception, as the AWS JSON 1.1 protocol carries it: HTTP 400 and
/// `{"__type": NAME, "message": TEXT}`. The SDK maps NAME to its typed error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsError {
    pub name: &'static str,
    pub message: String,
}

impl KmsError {
    pub fn new(name: &'static str, message: impl Into<String>) -> Self {
        KmsError {
            name,
            message: message.into(),
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new("ValidationException", message)
    }

    pub fn serialization(message: impl Into<String>) -> Self {
        Self::new("SerializationException", message)
    }

    /// KMS's answer over quota; the SDK classifies the name as throttling.
    pub fn throttled() -> Self {
        Self::new("ThrottlingException", "Rate exceeded")
    }

    pub fn not_found_key(name: &str) -> Self {
        Self::new("NotFoundException", format!("Key '{name}' does not exist"))
    }

    pub fn not_found_alias(name: &str) -> Self {
        Self::new("NotFoundException", format!("Alias {name} is not found."))
    }

    pub fn invalid_arn(name: &str) -> Self {
        Self::new("InvalidArnException", format!("Invalid arn {name}"))
    }

    pub fn invalid_alias(message: &str) -> Self {
        Self::new("InvalidAliasNameException", message)
    }

    pub fn already_exists(message: &str) -> Self {
        Self::new("AlreadyExistsException", message)
    }

    pub fn disabled(arn: &str) -> Self {
        Self::new("DisabledException", format!("{arn} is disabled."))
    }

    pub fn invalid_state(arn: &str, state: KeyState) -> Self {
        let state = match state {
            KeyState::PendingDeletion => "pending deletion",
            KeyState::Disabled => "disabled",
            KeyState::Enabled => "enabled",
        };
        Self::new("KMSInvalidStateException", format!("{arn} is {state}."))
    }

    pub fn unknown_operation(target: &str) -> Self {
        Self::new(
            "UnknownOperationException",
            format!("operation {target:?} is not known to the KMS stand-in"),
        )
    }

    pub fn to_json(&self) -> String {
        serde_json::json!({"__type": self.name, "message": self.message}).to_string()
    }
}
