use super::ResponseStatus;

/// Why an OCSP request could not be built or a response was not accepted.
/// Any of these means "status not established": a caller that fails closed
/// treats them all as a failed revocation check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OcspError {
    #[error("{which} is not a DER X.509 certificate ({reason}); pass the DER bytes, not PEM")]
    Certificate { which: &'static str, reason: String },

    #[error(
        "the certificate was issued by \"{cert_issuer}\", not by the given issuer \
         \"{issuer_subject}\"; pass the CA certificate that signed it"
    )]
    IssuerMismatch {
        cert_issuer: String,
        issuer_subject: String,
    },

    #[error(
        "the certificate is not signed by the given issuer's key ({0}); pass the CA \
         certificate that signed it"
    )]
    NotIssuedBy(String),

    #[error("OCSP nonce of {len} bytes; RFC 8954 asks for 16 to 32 random bytes")]
    NonceLength { len: usize },

    #[error("could not encode the OCSP request: {0}")]
    Encode(String),

    #[error(
        "OCSP response is malformed ({0}); the responder did not send an RFC 6960 OCSPResponse"
    )]
    Malformed(String),

    #[error("OCSP responder answered {status} instead of a certificate status; {}", advice(*.status))]
    Unsuccessful { status: ResponseStatus },

    #[error(
        "OCSP response type {0} is not id-pkix-ocsp-basic, the only type responders must support"
    )]
    UnsupportedResponseType(String),

    #[error(
        "OCSP response signature algorithm {algorithm} is not accepted for a {key} key \
         (accepted: ECDSA P-256/P-384 with SHA-256/384, RSA PKCS#1 v1.5 with SHA-256/384/512, Ed25519)"
    )]
    UnsupportedSignature { algorithm: String, key: String },

    #[error("OCSP response signature does not verify with the {signer}'s key; it was altered or signed by another key")]
    BadSignature { signer: &'static str },

    #[error(
        "OCSP response was signed by a responder that is neither the issuer nor a certificate \
         included in the response; the responder must sign with the CA key or include its \
         delegated OCSP signing certificate"
    )]
    UnknownResponder,

    #[error("delegated OCSP responder certificate refused: {0}")]
    ResponderNotAuthorized(String),

    #[error(
        "OCSP response has no answer for serial {serial} of this issuer; the responder was \
         asked about another certificate or answered for another CA"
    )]
    NoMatchingResponse { serial: String },

    #[error(
        "OCSP response's thisUpdate (Unix time {this_update}) is more than 5 minutes after now \
         ({now}); check the clocks of this host and the responder"
    )]
    NotYetValid { this_update: i64, now: i64 },

    #[error(
        "OCSP response is stale: nextUpdate (Unix time {next_update}) is more than 5 minutes \
         before now ({now}); fetch a fresh response"
    )]
    Stale { next_update: i64, now: i64 },

    #[error("OCSP response nonce does not match the request's; it may be a replayed response")]
    NonceMismatch,

    #[error("OCSP response has a critical extension {oid} this client does not understand")]
    UnsupportedCriticalExtension { oid: String },
}

fn advice(status: ResponseStatus) -> &'static str {
    match status {
        ResponseStatus::Successful => "this is a bug in the client",
        ResponseStatus::MalformedRequest => "the responder could not parse the request",
        ResponseStatus::InternalError | ResponseStatus::TryLater => {
            "the responder has a problem; retry later"
        }
        ResponseStatus::SigRequired => "the responder only answers signed requests",
        ResponseStatus::Unauthorized => {
            "the responder does not answer for this issuer; check the OCSP URL and issuer"
        }
    }
}
