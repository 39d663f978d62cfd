//! OCSP over HTTP (RFC 6960 appendix A.1): POST with the DER request as
//! the body, or GET with it base64-encoded (and URL-encoded) in the path.
//!
//! Whatever arrives, the answer to a request that reached the OCSP layer is
//! an OCSP response (`malformedRequest` for garbage), because that is what
//! OCSP clients understand; HTTP errors are kept for HTTP-level problems
//! (too large, wrong method).

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use kakunin_authority::ocsp::ResponseOptions;

use super::{binary, plain, Shared};
use crate::body::ProxyBody;

/// Real requests are about 100 bytes; a few dozen CertIDs fit easily.
const MAX_REQUEST_BYTES: usize = 16 * 1024;

pub async fn post(shared: Arc<Shared>, request: Request<Incoming>) -> Response<ProxyBody> {
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES as u64) {
        return too_large();
    }
    let body = match Limited::new(request.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => return too_large(),
        Err(_) => {
            return plain(
                StatusCode::BAD_REQUEST,
                "the request body could not be read\n",
            )
        }
    };
    answer(shared, body).await
}

pub async fn get(shared: Arc<Shared>, encoded: &str) -> Response<ProxyBody> {
    if encoded.len() > MAX_REQUEST_BYTES * 2 {
        return too_large();
    }
    let unescaped: Vec<u8> = percent_encoding::percent_decode_str(encoded).collect();
    // Clients differ on '+' (some send it raw, some as %2B) and on padding;
    // standard and URL-safe alphabets are both accepted.
    let text = String::from_utf8_lossy(&unescaped).replace(' ', "+");
    let text = text.trim_end_matches('=');
    let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text));
    // Undecodable text gets the OCSP answer to garbage: malformedRequest.
    answer(shared, Bytes::from(decoded.unwrap_or_default())).await
}

async fn answer(shared: Arc<Shared>, der: Bytes) -> Response<ProxyBody> {
    let replied = tokio::task::spawn_blocking(move || {
        let options = ResponseOptions {
            now: time::OffsetDateTime::now_utc(),
            validity: time::Duration::try_from(shared.options.ocsp_validity)
                .unwrap_or(time::Duration::HOUR),
        };
        let store = shared.authority.store();
        let mut lookup = |serial: &str| store.status(serial);
        shared.authority.respond_ocsp(&der, &mut lookup, &options)
    })
    .await;
    match replied {
        Ok(reply) => {
            tracing::info!(outcome = ?reply.outcome, "OCSP request answered");
            binary("application/ocsp-response", reply.der)
        }
        Err(_) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the OCSP responder failed\n",
        ),
    }
}

fn too_large() -> Response<ProxyBody> {
    plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        "OCSP request too large (limit 16 KiB)\n",
    )
}
