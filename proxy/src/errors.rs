//! The proxy's answers when it refuses or fails: a stable `code`, a message
//! that says what was wrong, and the status DESIGN.md assigns.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use kakunin_policy::{Denial, DenyCode};

use crate::body::{full, ProxyBody};

pub const ERROR_HEADER: &str = "x-kakunin-error";

#[derive(Debug, Clone)]
pub struct ProxyError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, for 429.
    pub retry_after: Option<u64>,
    /// For 405: the methods that are accepted (RFC 9110 §15.5.6).
    pub allow: Option<&'static str>,
}

impl ProxyError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ProxyError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            allow: None,
        }
    }

    pub fn connect_refused(message: impl Into<String>) -> Self {
        ProxyError {
            allow: Some("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            ..Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "connect_not_supported",
                message,
            )
        }
    }

    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_request", message)
    }

    pub fn too_many(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        ProxyError {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, code, message)
        }
    }

    pub fn bad_gateway(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, code, message)
    }

    /// The agent's key could not sign (a handshake or a request signature):
    /// our side is unavailable, not the upstream, so 503 and not 502.
    pub fn signer_unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "signer_unavailable",
            message,
        )
    }

    /// Whether report mode may let this through: policy denials only, never
    /// malformed input or failures.
    pub fn is_policy_denial(&self) -> bool {
        matches!(
            self.status,
            StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS
        )
    }

    pub fn into_response(self) -> Response<ProxyBody> {
        let body = serde_json::json!({ "code": self.code, "message": self.message });
        let mut response = Response::new(full(Bytes::from(body.to_string())));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(ERROR_HEADER, HeaderValue::from_static(self.code));
        if let Some(seconds) = self.retry_after {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(methods) = self.allow {
            headers.insert(http::header::ALLOW, HeaderValue::from_static(methods));
        }
        response
    }
}

impl From<Denial> for ProxyError {
    fn from(denial: Denial) -> Self {
        let status = match denial.code {
            DenyCode::MalformedTarget => StatusCode::BAD_REQUEST,
            _ => StatusCode::FORBIDDEN,
        };
        ProxyError::new(status, denial.code.as_str(), denial.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn response_carries_code_header_and_json() {
        let response = ProxyError::too_many("rate_limited", "slow down", 0).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[ERROR_HEADER], "rate_limited");
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "1");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["code"], "rate_limited");
        assert_eq!(json["message"], "slow down");
    }
}
