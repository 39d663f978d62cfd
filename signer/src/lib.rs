//! Keys and the identity they back.
//!
//! A [`KeyBackend`] signs without ever handing out its private key. The file
//! backend holds the key in process memory (for development and tests); remote
//! backends (AWS KMS, PKCS#11) implement the same trait and report
//! [`Locality::Remote`] or [`Locality::RemoteAsync`], which makes the TLS
//! adapter move their blocking calls off the async runtime's worker threads,
//! and lets the proxy await a KMS signature without a thread of its own.
//!
//! This crate is the only one that names rustls' signing traits.

mod backend;
mod cert;
mod file;
pub mod httpsig;
mod keyref;
#[cfg(feature = "aws-kms")]
mod kms;
mod options;
#[cfg(feature = "pkcs11")]
mod pkcs11;
mod tls;
mod verify;

pub use backend::{KeyAlgorithm, KeyBackend, KeyError, Locality, PendingSignature};
pub use cert::{load_certificate_chain, parse_certificate_chain, CertError};
pub use file::FileKey;
pub use keyref::{open_key, open_key_with, KeyRef};
pub use options::KeyOptions;
pub use tls::{AgentIdentity, IdentityError, SignerUnavailable};
pub use verify::verifies;
