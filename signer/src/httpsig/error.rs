use crate::backend::KeyError;

/// Why a message signature could not be made or does not hold.
///
/// [`HttpSigError::code`] is stable: receivers log it and map it to their
/// statuses, so a code once published keeps its meaning.
#[derive(Debug, thiserror::Error)]
pub enum HttpSigError {
    #[error("header {0} is missing")]
    MissingHeader(&'static str),
    #[error("header {field} is malformed: {reason}")]
    Malformed { field: &'static str, reason: String },
    #[error("no signature labelled {0:?} in Signature-Input and Signature")]
    LabelMissing(String),
    #[error("covered component {0:?} is not supported")]
    UnsupportedComponent(String),
    #[error("covered component {0:?} is not in the message")]
    ComponentMissing(String),
    #[error("covered component {0:?} is listed twice")]
    DuplicateComponent(String),
    #[error("signature algorithm {0:?} is not supported")]
    UnsupportedAlgorithm(String),
    #[error("the signature does not verify with the certificate's key")]
    BadSignature,
    #[error("Content-Digest does not match the body")]
    DigestMismatch,
    #[error("Content-Digest has no algorithm this receiver accepts (sha-256, sha-512)")]
    DigestUnsupported,
    #[error("signing failed: {0}")]
    Sign(#[from] KeyError),
}

impl HttpSigError {
    pub fn code(&self) -> &'static str {
        match self {
            HttpSigError::MissingHeader(_) => "signature_missing",
            HttpSigError::Malformed { .. } => "signature_malformed",
            HttpSigError::LabelMissing(_) => "signature_missing",
            HttpSigError::UnsupportedComponent(_) | HttpSigError::DuplicateComponent(_) => {
                "signature_malformed"
            }
            HttpSigError::ComponentMissing(_) => "signature_component_missing",
            HttpSigError::UnsupportedAlgorithm(_) => "signature_algorithm_unsupported",
            HttpSigError::BadSignature => "signature_invalid",
            HttpSigError::DigestMismatch => "content_digest_mismatch",
            HttpSigError::DigestUnsupported => "content_digest_unsupported",
            HttpSigError::Sign(_) => "signer_unavailable",
        }
    }
}

pub(crate) fn malformed(field: &'static str, reason: impl Into<String>) -> HttpSigError {
    HttpSigError::Malformed {
        field,
        reason: reason.into(),
    }
}
