//! One request: read it (bounded), verify it (fetching a revocation status
//! once if the verifier asks), then forward it or refuse it, and write its
//! audit line.

use std::net::SocketAddr;
use std::time::SystemTime;

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use kakunin_verifier::{OcspQuery, Outcome, Reason, Rejection, Verdict};
use rustls_pki_types::CertificateDer;

use super::record::{Entry, Refusal};
use super::Shared;
use crate::body::ProxyBody;
use crate::headers::strip_hop_by_hop;
use crate::revocation::HttpUrl;

pub const X_KAKUNIN_AGENT_ID: &str = "x-kakunin-agent-id";
pub const X_KAKUNIN_CERT_SERIAL: &str = "x-kakunin-cert-serial";
pub const X_KAKUNIN_ACTION: &str = "x-kakunin-action";

pub(super) async fn handle(
    shared: &Shared,
    chain: &[CertificateDer<'static>],
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let (parts, body) = request.into_parts();
    let target = parts.uri.path_and_query().map_or("", |pq| pq.as_str());
    let mut entry = Entry::new(peer, parts.method.as_str(), target);
    let admitted = admit(shared, chain, &parts, body, &mut entry).await;
    let (verdict, body) = match admitted {
        Ok(admitted) => admitted,
        Err(refusal) => {
            entry.refused(&refusal);
            tracing::debug!(%peer, code = refusal.code, detail = %refusal.detail, "request refused");
            entry.write(&shared.audit, false).written().await;
            return refusal.response();
        }
    };
    entry.signature_valid = true;
    entry.scope_check_passed = true;
    entry.revocation = Some(verdict.revocation.as_str());
    entry.rule = verdict.action.clone();
    entry.agent = Some(verdict.agent.clone());
    let response = forward(shared, parts, body, &verdict).await;
    match response {
        Ok(response) => {
            entry.status = response.status().as_u16();
            entry.write(&shared.audit, true).written().await;
            response
        }
        Err(refusal) => {
            tracing::warn!(%peer, code = refusal.code, detail = %refusal.detail, "backend failed");
            entry.status = refusal.status.as_u16();
            entry.reason = Some(refusal.code);
            entry.detail = Some(refusal.detail.clone());
            entry.write(&shared.audit, true).written().await;
            refusal.response()
        }
    }
}

/// Everything up to the verifier's verdict.
async fn admit(
    shared: &Shared,
    chain: &[CertificateDer<'static>],
    parts: &Parts,
    body: Incoming,
    entry: &mut Entry,
) -> Result<(Verdict, Bytes), Refusal> {
    let authority = host(parts)?;
    let path_and_query = origin_form(parts)?;
    let body = read_body(shared, &parts.headers, body).await?;
    entry.set_body(&body);
    let request = kakunin_verifier::Request {
        method: parts.method.as_str(),
        scheme: "https",
        authority,
        path_and_query,
        headers: &parts.headers,
        body: &body,
        peer_chain: chain,
    };
    let mut outcome = shared.verifier.verify(&request, SystemTime::now());
    if let Outcome::NeedsOcsp(query) = outcome {
        let answer = fetch_ocsp(shared, &query).await;
        let answer = answer.as_deref().map_err(String::as_str);
        shared
            .verifier
            .complete_ocsp(&query, answer, SystemTime::now());
        outcome = shared.verifier.verify(&request, SystemTime::now());
    }
    match outcome {
        Outcome::Accepted(verdict) => Ok((verdict, body)),
        Outcome::Rejected(rejection) => Err(rejection.into()),
        // Asked again right after an answer was recorded: only a cache
        // that could not keep it gets here. Fail closed.
        Outcome::NeedsOcsp(_) => Err(Rejection {
            reason: Reason::RevocationUnavailable,
            detail: "the revocation status is still unknown after a fetch".into(),
            agent: None,
        }
        .into()),
    }
}

async fn fetch_ocsp(shared: &Shared, query: &OcspQuery) -> Result<Bytes, String> {
    let url = HttpUrl::parse(&query.url)?;
    url.post_ocsp(query.request_der.clone(), shared.limits.ocsp_timeout)
        .await
}

fn malformed(detail: impl Into<String>) -> Refusal {
    Refusal::gateway(
        StatusCode::BAD_REQUEST,
        "malformed_request",
        "Malformed request",
        detail,
    )
}

/// The `@authority` the signature must cover: exactly one `Host`.
fn host(parts: &Parts) -> Result<&str, Refusal> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return Err(malformed("the request must carry exactly one Host header"));
    };
    host.to_str()
        .ok()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| malformed("the Host header is empty or not text"))
}

/// A gateway is addressed in origin form (`/path?query`); an absolute-form
/// target would name an authority beside `Host`, and which one was signed
/// would be ambiguous.
fn origin_form(parts: &Parts) -> Result<&str, Refusal> {
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        return Err(malformed(
            "absolute-form request targets are not accepted; send /path with a Host header",
        ));
    }
    match parts.uri.path_and_query() {
        Some(pq) if pq.as_str().starts_with('/') => Ok(pq.as_str()),
        _ => Err(malformed("the request target must start with '/'")),
    }
}

async fn read_body(shared: &Shared, headers: &HeaderMap, body: Incoming) -> Result<Bytes, Refusal> {
    let limit = shared.limits.max_body_bytes;
    let too_large = || {
        Refusal::gateway(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "Request body too large",
            format!("the body is larger than {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let timeout = shared.limits.body_read_timeout;
    // hyper bounds the wait for the head, not for the body.
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(Refusal::gateway(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "Request body timeout",
            format!("the body did not arrive within {timeout:?}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(err)) => Err(malformed(format!("the body could not be read: {err}"))),
    }
}

/// Sends an accepted request on, with who sent it, and returns the
/// backend's answer.
async fn forward(
    shared: &Shared,
    parts: Parts,
    body: Bytes,
    verdict: &Verdict,
) -> Result<Response<ProxyBody>, Refusal> {
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    // Only the gateway speaks in this namespace: a client's copies would
    // otherwise pass as the gateway's word.
    let forged: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-kakunin-"))
        .cloned()
        .collect();
    for name in forged {
        headers.remove(name);
    }
    let mut add = |name: &'static str, value: &str| -> Result<(), Refusal> {
        // Agent ids are SPIFFE-safe and serials hex, so this holds for any
        // certificate the verifier accepted; refuse rather than drop it.
        let value = HeaderValue::from_str(value).map_err(|_| {
            Refusal::gateway(
                StatusCode::BAD_GATEWAY,
                "backend_header_invalid",
                "Bad gateway",
                format!("{name} cannot carry {value:?}"),
            )
        })?;
        headers.insert(HeaderName::from_static(name), value);
        Ok(())
    };
    add(X_KAKUNIN_AGENT_ID, &verdict.agent.agent_id)?;
    add(X_KAKUNIN_CERT_SERIAL, &verdict.agent.serial_hex)?;
    if let Some(rule) = &verdict.action {
        add(X_KAKUNIN_ACTION, rule)?;
    }
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = parts.method;
    // Origin form, as `admit` checked.
    *request.uri_mut() = parts.uri;
    *request.headers_mut() = headers;
    let response = shared.backend.send(request).await.map_err(|err| {
        Refusal::gateway(
            StatusCode::BAD_GATEWAY,
            err.code(),
            "Bad gateway",
            err.to_string(),
        )
    })?;
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, body.boxed_unsync()))
}
