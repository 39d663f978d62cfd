//! The gate's refusals, each with the status DESIGN.md assigns.

use http::StatusCode;

use super::Halt;
use crate::errors::ProxyError;
use crate::identity::CertSummary;

pub fn revoked_error(halt: &Halt) -> ProxyError {
    ProxyError::new(
        StatusCode::FORBIDDEN,
        "identity_revoked",
        format!(
            "the agent certificate (serial {}) was revoked ({}) at unix time {}: this identity \
             is halted and every action is refused; the operator must issue a new certificate",
            halt.serial, halt.reason, halt.revoked_at
        ),
    )
}

pub fn unknown_error(message: &str) -> ProxyError {
    ProxyError::new(
        StatusCode::FORBIDDEN,
        "identity_unknown",
        format!(
            "{message}: the CA has no record of the certificate it signed, so it is not used \
             (whatever fail_open says)"
        ),
    )
}

pub fn unavailable_error(message: &str) -> ProxyError {
    ProxyError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "revocation_unavailable",
        format!(
            "the agent certificate's revocation status cannot be confirmed, so nothing is sent \
             (revocation_check.fail_open is false): {message}"
        ),
    )
}

/// The gate refuses to act with a certificate outside its validity period,
/// whatever the responder says.
pub fn check_validity(cert: &CertSummary, now: i64) -> Result<(), ProxyError> {
    if now < cert.not_before_unix {
        return Err(ProxyError::new(
            StatusCode::FORBIDDEN,
            "identity_not_yet_valid",
            format!(
                "the agent certificate (serial {}) is not valid until unix time {}",
                cert.serial_hex, cert.not_before_unix
            ),
        ));
    }
    if now > cert.not_after_unix {
        return Err(ProxyError::new(
            StatusCode::FORBIDDEN,
            "identity_expired",
            format!(
                "the agent certificate (serial {}) expired at {}: rotate it",
                cert.serial_hex, cert.not_after
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kakunin_authority::RevocationReason;

    fn summary(not_before: i64, not_after: i64) -> CertSummary {
        CertSummary {
            common_name: "bot".into(),
            serial_hex: "0a".into(),
            not_after: "then".into(),
            not_before_unix: not_before,
            not_after_unix: not_after,
            client_auth: Some(true),
            scope: None,
        }
    }

    #[test]
    fn validity_is_enforced_by_the_gate() {
        assert!(check_validity(&summary(10, 20), 15).is_ok());
        assert_eq!(
            check_validity(&summary(10, 20), 21).unwrap_err().code,
            "identity_expired"
        );
        assert_eq!(
            check_validity(&summary(10, 20), 9).unwrap_err().code,
            "identity_not_yet_valid"
        );
    }

    #[test]
    fn revoked_error_names_reason_and_serial() {
        let err = revoked_error(&Halt {
            serial: "0a".into(),
            reason: RevocationReason::KeyCompromise,
            revoked_at: 5,
        });
        assert_eq!(err.status, StatusCode::FORBIDDEN);
        assert!(err.message.contains("keyCompromise") && err.message.contains("0a"));
    }
}
