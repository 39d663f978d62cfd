//! HTTP Message Signatures (RFC 9421) and `Content-Digest` (RFC 9530): the
//! signature base, structured-field parsing of the signature headers, and
//! signing and verifying through a [`crate::KeyBackend`] and ring. The
//! proxy signs with this module and the verifier crate checks with it, so
//! both build the same base by construction.
//!
//! No async and no I/O: a receiver embeds this as it is.

mod alg;
mod base;
pub mod batch;
mod component;
mod digest;
mod error;
#[doc(hidden)]
pub mod fuzz_checks;
mod header;
mod nonce;
mod params;
mod profile;

pub use alg::{sign, verify, SigAlg};
pub use base::{kakunin_components, signature_base};
pub use component::{field_value, Component, Message, TargetUri};
pub use digest::{check_content_digest, content_digest};
pub use error::HttpSigError;
pub use header::{
    dictionary, parse_signature, parse_signature_fields, ParsedSignature, MAX_FIELD_LEN,
};
pub use nonce::new_nonce;
pub use params::{SignatureInput, SignatureParams};
pub use profile::{
    check_profile, prepare_batch_request, prepare_request, sign_request, verify_signature,
    BatchSignature, CertificateHeader, RequestSigner, UnsignedRequest, LABEL, TAG,
    X_AGENT_CERTIFICATE, X_AGENT_OCSP, X_AGENT_SIGNATURE, X_AGENT_TIMESTAMP,
};
