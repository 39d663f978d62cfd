//! OCSP over HTTP (RFC 6960 appendix A.1): POST with the DER request as
//! the body, or GET with it base64-encoded (and URL-encoded) in the path.
//!
//! Whatever arrives, the answer to a request that reached the OCSP layer is
//! an OCSP response (`malformedRequest` for garbage, `tryLater` when the
//! server is saturated), because that is what OCSP clients understand; HTTP
//! errors are kept for HTTP-level problems (too large, too slow, wrong
//! method).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use kakunin_authority::ocsp::{ResponseOptions, ResponseStatus};

use super::{binary, plain, Shared};
use crate::body::ProxyBody;

/// Real requests are about 100 bytes; a few dozen CertIDs fit easily.
const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// OCSPResponse { responseStatus tryLater } with no responseBytes.
const TRY_LATER: &[u8] = &[0x30, 0x03, 0x0a, 0x01, 0x03];
/// How long a shared cache may keep a successful GET answer (RFC 5019
/// section 6). Caches could keep it until nextUpdate, but then a GET client
/// behind a cache would not see a revocation for up to the whole validity;
/// a minute still absorbs bursts of identical requests.
const GET_MAX_AGE: Duration = Duration::from_secs(60);

pub async fn post(shared: Arc<Shared>, request: Request<Incoming>) -> Response<ProxyBody> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES as u64) {
        return too_large();
    }
    let collect = Limited::new(request.into_body(), MAX_REQUEST_BYTES).collect();
    // Hyper bounds the wait for the head, not for the body: a client that
    // declares 100 bytes and sends 2 would otherwise hold the connection.
    let body = match tokio::time::timeout(shared.options.body_read_timeout, collect).await {
        Err(_) => return too_slow(),
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => return too_large(),
        Ok(Err(_)) => {
            return plain(
                StatusCode::BAD_REQUEST,
                "the request body could not be read\n",
            )
        }
    };
    let (der, _) = match answer(shared, body).await {
        Ok(answered) => answered,
        Err(failed) => return failed,
    };
    // POST answers are per request (they may echo a nonce) and HTTP caches
    // do not key on bodies: nothing should keep them.
    ocsp_response(der, HeaderValue::from_static("no-store"))
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
    let max_age = GET_MAX_AGE.min(shared.options.ocsp_validity).as_secs();
    // Undecodable text gets the OCSP answer to garbage: malformedRequest.
    let (der, successful) = match answer(shared, Bytes::from(decoded.unwrap_or_default())).await {
        Ok(answered) => answered,
        Err(failed) => return failed,
    };
    // Only a signed answer may be cached; an error status (tryLater above
    // all) must not outlive the moment.
    let cache = if successful {
        HeaderValue::from_str(&format!(
            "max-age={max_age}, public, no-transform, must-revalidate"
        ))
        .unwrap_or(HeaderValue::from_static("no-store"))
    } else {
        HeaderValue::from_static("no-store")
    };
    ocsp_response(der, cache)
}

/// The DER answer, and whether it is `successful`; an HTTP error response
/// when the responder task itself failed.
async fn answer(shared: Arc<Shared>, der: Bytes) -> Result<(Vec<u8>, bool), Response<ProxyBody>> {
    // Each answer takes a blocking thread for a database lookup and a
    // signature; past the pool's size, refuse at once rather than queue
    // without bound behind an unauthenticated flood.
    let Ok(permit) = shared.work.clone().try_acquire_owned() else {
        tracing::info!(
            outcome = "tryLater",
            "OCSP request refused: the responder is busy"
        );
        return Ok((TRY_LATER.to_vec(), false));
    };
    let replied = tokio::task::spawn_blocking(move || {
        // Held until the work is done, even if the client has gone.
        let _permit = permit;
        let now = time::OffsetDateTime::now_utc();
        let mut options = ResponseOptions {
            now,
            validity: time::Duration::try_from(shared.options.ocsp_validity)
                .unwrap_or(time::Duration::HOUR),
        };
        let store = shared.authority.store();
        // A certificate that rotation will revoke at a set time must not be
        // vouched for past it: a relying party would trust the "good" (a
        // staple, say) until nextUpdate.
        let mut good_until: Option<i64> = None;
        let mut lookup = |serial: &str| {
            let status = store.status(serial)?;
            if status == kakunin_authority::CertStatus::Good {
                if let Ok(Some(record)) = store.get(serial) {
                    if let Some(at) = record.revoke_at {
                        good_until = Some(good_until.map_or(at, |g| g.min(at)));
                    }
                }
            }
            Ok(status)
        };
        let reply = shared.authority.respond_ocsp(&der, &mut lookup, &options);
        let ends = now
            .unix_timestamp()
            .saturating_add(options.validity.whole_seconds());
        match good_until {
            Some(until) if until < ends => {
                let left = (until - now.unix_timestamp()).max(1);
                options.validity = time::Duration::seconds(left);
                let mut lookup = |serial: &str| store.status(serial);
                shared.authority.respond_ocsp(&der, &mut lookup, &options)
            }
            _ => reply,
        }
    })
    .await;
    match replied {
        Ok(reply) => {
            tracing::info!(outcome = ?reply.outcome, "OCSP request answered");
            let successful = reply.outcome.status == ResponseStatus::Successful;
            Ok((reply.der, successful))
        }
        Err(_) => Err(plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the OCSP responder failed\n",
        )),
    }
}

fn ocsp_response(der: Vec<u8>, cache: HeaderValue) -> Response<ProxyBody> {
    let mut response = binary("application/ocsp-response", der);
    response.headers_mut().insert(header::CACHE_CONTROL, cache);
    response
}

fn too_large() -> Response<ProxyBody> {
    plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        "OCSP request too large (limit 16 KiB)\n",
    )
}

fn too_slow() -> Response<ProxyBody> {
    let mut response = plain(
        StatusCode::REQUEST_TIMEOUT,
        "the request body did not arrive in time\n",
    );
    // The rest of the body may still be on its way; the connection cannot
    // be reused.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
