//! KMS failures as the proxy needs them: transient (busy, slow, throttled,
//! unreachable: answer 503 and try again later) or final (the key itself is
//! refused: disabled, deleted, not found, denied).

use std::error::Error as StdError;
use std::time::Duration;

use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};

use crate::backend::KeyError;

/// Error codes KMS answers when the key cannot be used and waiting will not
/// change that.
const REFUSED_CODES: &[&str] = &[
    "DisabledException",
    "KMSInvalidStateException",
    "NotFoundException",
    "AccessDeniedException",
    "InvalidKeyUsageException",
    "InvalidGrantTokenException",
    "UnrecognizedClientException",
    "IncompleteSignature",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "ValidationException",
];

/// Error codes that mean "too many requests" (the SDK has already retried).
const THROTTLED_CODES: &[&str] = &[
    "ThrottlingException",
    "LimitExceededException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
];

/// The failure in a line: KMS's own code and message when it answered,
/// else the SDK's error chain (which names the connection failure).
fn describe<E, R>(err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + StdError + 'static,
    R: std::fmt::Debug + 'static,
{
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            format!(
                "KMS answered {}: {}",
                e.code().unwrap_or("an unnamed error"),
                e.message().unwrap_or("(no message)")
            )
        }
        SdkError::TimeoutError(_) => "timed out".into(),
        other => {
            // Each cause's own words, outermost first: "dispatch failure:
            // io error: ... Connection refused". (DisplayErrorContext adds a
            // Debug dump of the raw response, which is noise in a log.)
            let mut text = other.to_string();
            let mut cause = StdError::source(other);
            while let Some(inner) = cause {
                text.push_str(": ");
                text.push_str(&inner.to_string());
                cause = inner.source();
            }
            text
        }
    }
}

/// Classifies one failed call. `key` names the key in the message; the SDK's
/// own text (with its error chain) is kept as the reason.
pub(crate) fn classify<E, R>(key: &str, deadline: Duration, err: &SdkError<E, R>) -> KeyError
where
    E: ProvideErrorMetadata + StdError + 'static,
    R: std::fmt::Debug + 'static,
{
    let key = key.to_string();
    let reason = describe(err);
    match err {
        SdkError::TimeoutError(_) => KeyError::Timeout {
            key,
            after: deadline,
        },
        SdkError::DispatchFailure(failure) if failure.is_timeout() => KeyError::Timeout {
            key,
            after: deadline,
        },
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            KeyError::Unreachable { key, reason }
        }
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("");
            if THROTTLED_CODES.contains(&code) {
                KeyError::Throttled { key, reason }
            } else if code == "DependencyTimeoutException" {
                KeyError::Timeout {
                    key,
                    after: deadline,
                }
            } else if REFUSED_CODES.contains(&code) {
                KeyError::Refused { key, reason }
            } else {
                // KMSInternalException, KeyUnavailableException and anything
                // new: the service is there but could not serve us now.
                KeyError::Unreachable { key, reason }
            }
        }
        // Could not even build the request: most often no credentials.
        _ => KeyError::Refused { key, reason },
    }
}
