use std::io;

use http::StatusCode;
use rustls::{AlertDescription, CertificateError};

use crate::errors::ProxyError;

/// Our own key could not sign: not the upstream's fault, so 503.
pub const SIGNER_UNAVAILABLE: &str = "signer_unavailable";

/// Why an upstream exchange failed, named so the agent's operator can act.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct UpstreamError {
    pub code: &'static str,
    pub message: String,
}

impl UpstreamError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        UpstreamError {
            code,
            message: message.into(),
        }
    }

    pub fn timeout(what: &str, addr: impl std::fmt::Display) -> Self {
        Self::new("upstream_timeout", format!("{what} to {addr} timed out"))
    }

    /// Classifies a TCP or TLS failure while connecting to `addr`.
    pub fn from_io(err: &io::Error, addr: impl std::fmt::Display) -> Self {
        if let Some(tls) = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Self::from_tls(tls, addr);
        }
        match err.kind() {
            io::ErrorKind::ConnectionRefused => Self::new(
                "upstream_connection_refused",
                format!("connection to {addr} refused"),
            ),
            io::ErrorKind::TimedOut => Self::timeout("connection", addr),
            io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof => Self::new(
                "upstream_connection_closed",
                format!("{addr} closed the connection during the TLS handshake: {err}"),
            ),
            _ => Self::new(
                "upstream_connect_failed",
                format!("cannot connect to {addr}: {err}"),
            ),
        }
    }

    fn from_tls(err: &rustls::Error, addr: impl std::fmt::Display) -> Self {
        use rustls::Error as E;
        if let Some(failure) = kakunin_signer::SignerUnavailable::find(err) {
            return Self::new(
                SIGNER_UNAVAILABLE,
                format!("{failure} (handshake with {addr})"),
            );
        }
        match err {
            E::InvalidCertificate(CertificateError::UnknownIssuer) => Self::new(
                "upstream_unknown_ca",
                format!("{addr}'s certificate is not issued by the pinned upstream CA ({err})"),
            ),
            E::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            ) => Self::new(
                "upstream_certificate_expired",
                format!("{addr}'s certificate has expired ({err})"),
            ),
            E::InvalidCertificate(
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
            ) => Self::new(
                "upstream_certificate_not_yet_valid",
                format!("{addr}'s certificate is not valid yet ({err})"),
            ),
            E::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => Self::new(
                "upstream_name_mismatch",
                format!("{addr}'s certificate does not name the host ({err})"),
            ),
            E::InvalidCertificate(_) => Self::new(
                "upstream_certificate_invalid",
                format!("{addr}'s certificate was refused: {err}"),
            ),
            E::AlertReceived(
                alert @ (AlertDescription::CertificateRequired
                | AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateExpired
                | AlertDescription::AccessDenied),
            ) => Self::new(
                "upstream_refused_client_certificate",
                format!("{addr} refused the agent's client certificate (alert {alert:?})"),
            ),
            _ => Self::new(
                "upstream_tls_failed",
                format!("TLS with {addr} failed: {err}"),
            ),
        }
    }
}

impl From<UpstreamError> for ProxyError {
    fn from(err: UpstreamError) -> Self {
        let status = if err.code == SIGNER_UNAVAILABLE {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::BAD_GATEWAY
        };
        ProxyError::new(status, err.code, err.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signer_failures_are_503_and_peer_failures_502() {
        let failure = kakunin_signer::SignerUnavailable(kakunin_signer::KeyError::Sign {
            key: "aws-kms:k".into(),
            reason: "throttled".into(),
        });
        let tls = rustls::Error::Other(rustls::OtherError(std::sync::Arc::new(failure)));
        let io = io::Error::new(io::ErrorKind::InvalidData, tls);
        let err: ProxyError = UpstreamError::from_io(&io, "127.0.0.1:443").into();
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.code, SIGNER_UNAVAILABLE);

        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = io::Error::new(io::ErrorKind::InvalidData, unknown);
        let err: ProxyError = UpstreamError::from_io(&io, "127.0.0.1:443").into();
        assert_eq!(err.status, StatusCode::BAD_GATEWAY);
        assert_eq!(err.code, "upstream_unknown_ca");

        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            UpstreamError::from_io(&refused, "127.0.0.1:1").code,
            "upstream_connection_refused"
        );
    }
}
