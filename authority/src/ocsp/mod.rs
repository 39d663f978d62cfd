//! RFC 6960 OCSP, both ends, as pure functions (no I/O): the CA answers
//! requests, the proxy's revocation gate and receivers ask and check.
//!
//! Responder side:
//! - [`Authority::respond_ocsp`](crate::Authority::respond_ocsp)`(request_der,
//!   lookup, &ResponseOptions) -> OcspReply`. `lookup` maps a canonical
//!   serial ([`serial_hex`](crate::serial_hex)) to a
//!   [`CertStatus`](crate::CertStatus). The reply's `der` is always a valid
//!   DER OCSPResponse, also when the request is refused, so an HTTP layer
//!   can send it as it is; `outcome` ([`OcspOutcome`]) summarises it for the
//!   log: the [`ResponseStatus`], one [`SerialAnswer`] per CertID, and why a
//!   request was refused. Refusals: `malformedRequest` (undecodable, trailing
//!   bytes, empty list, more than [`MAX_REQUESTS`], unknown version),
//!   `unauthorized` (no CertID names this CA), `internalError` (lookup or
//!   signing failed). Answers are signed by the CA key itself, responder
//!   named by key hash, the request's nonce echoed.
//!
//! Client side:
//! - [`build_request`]`(cert_der, issuer_der, nonce) -> Vec<u8>`: one SHA-1
//!   CertID (what every responder answers), optional RFC 8954 nonce.
//! - [`verify_response`]`(response_der, cert_der, issuer_der, now_unix,
//!   expected_nonce) -> VerifiedResponse`: signature (by the issuer or a
//!   delegated OCSP signer it certified), CertID, freshness and nonce.
//! - [`ocsp_url`]`(cert_der)`: the responder named in the certificate's AIA.
//!
//! What both sides accept: CertIDs hashed with SHA-1, SHA-256, SHA-384 or
//! SHA-512; signatures ECDSA P-256/P-384 (SHA-256/384), RSA PKCS#1 v1.5
//! (SHA-256/384/512) and Ed25519.

mod certid;
mod error;
mod request;
mod respond;
mod sigalg;
mod verify;

#[cfg(test)]
mod tests;

pub use error::OcspError;
pub use request::{build_request, ocsp_url};
pub use respond::{OcspOutcome, OcspReply, ResponseOptions, SerialAnswer};
pub use verify::{check_issuer, verify_response, VerifiedResponse};

use der::asn1::ObjectIdentifier;

/// A request may ask about this many certificates at most: answering costs
/// a lookup and response bytes per entry, and clients ask about one.
pub const MAX_REQUESTS: usize = 32;

/// Clock difference tolerated between responder and relying party.
pub const CLOCK_SKEW_SECS: i64 = 300;

/// RFC 8954: nonces shorter than this are guessable, longer ones are
/// refused by conforming responders.
pub const NONCE_LEN: std::ops::RangeInclusive<usize> = 16..=32;

pub(crate) const OID_NONCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2");
pub(crate) const OID_BASIC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");

/// OCSPResponseStatus (RFC 6960 section 4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseStatus {
    Successful,
    MalformedRequest,
    InternalError,
    TryLater,
    SigRequired,
    Unauthorized,
}

impl ResponseStatus {
    pub fn code(self) -> u8 {
        match self {
            ResponseStatus::Successful => 0,
            ResponseStatus::MalformedRequest => 1,
            ResponseStatus::InternalError => 2,
            ResponseStatus::TryLater => 3,
            ResponseStatus::SigRequired => 5,
            ResponseStatus::Unauthorized => 6,
        }
    }

    /// The RFC's name, as `openssl ocsp` prints it.
    pub fn name(self) -> &'static str {
        match self {
            ResponseStatus::Successful => "successful",
            ResponseStatus::MalformedRequest => "malformedRequest",
            ResponseStatus::InternalError => "internalError",
            ResponseStatus::TryLater => "tryLater",
            ResponseStatus::SigRequired => "sigRequired",
            ResponseStatus::Unauthorized => "unauthorized",
        }
    }

    pub(crate) fn from_x509(status: x509_ocsp::OcspResponseStatus) -> ResponseStatus {
        use x509_ocsp::OcspResponseStatus as S;
        match status {
            S::Successful => ResponseStatus::Successful,
            S::MalformedRequest => ResponseStatus::MalformedRequest,
            S::InternalError => ResponseStatus::InternalError,
            S::TryLater => ResponseStatus::TryLater,
            S::SigRequired => ResponseStatus::SigRequired,
            S::Unauthorized => ResponseStatus::Unauthorized,
        }
    }
}

impl std::fmt::Display for ResponseStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
