//! Step 8 of the pipeline (DESIGN.md "Request signature"): the request
//! leaves with an RFC 9421 signature, its RFC 9530 `Content-Digest` and the
//! seed's `X-Agent-*` mirrors, made with the agent's key over the request
//! exactly as the upstream receives it.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::HOST;
use http::{Method, Request};
use http_body_util::Full;
use kakunin_policy::ActionRule;
use kakunin_signer::httpsig::{self, HttpSigError, RequestSigner, TargetUri};
use kakunin_signer::{KeyBackend, Locality};
use rustls::SignatureScheme;

use crate::batch_signer::BatchSigner;
use crate::errors::ProxyError;
use crate::revocation::Subject;

/// `expires` - `created` unless configured.
pub const DEFAULT_LIFETIME_SECS: u64 = 60;
/// An hour: past that, a captured request stays replayable for longer than
/// any receiver should remember its nonce.
pub const MAX_LIFETIME_SECS: u64 = 3600;

/// Whether a request is signed: as its action rule says when the rule says
/// so, otherwise every request that may change something (any method but
/// GET, HEAD and OPTIONS), which is what DESIGN.md calls an action.
pub fn should_sign(rule: Option<&ActionRule>, method: &Method) -> bool {
    match rule.and_then(|r| r.sign) {
        Some(explicit) => explicit,
        None => !crate::pipeline::is_safe_method(method),
    }
}

/// What the audit log keeps of a signature: enough to find the request a
/// receiver reports (by nonce) and the certificate it names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Signed {
    pub keyid: String,
    pub nonce: String,
    pub created: u64,
    /// Where the request sits in a batch signature, when it was batched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchPlace>,
}

/// A batched request's leaf: its index among the batch's `size` requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BatchPlace {
    pub index: u64,
    pub size: u64,
}

/// Signs `request` in place. `body` must be the bytes the request carries
/// (the built request's `Full` body cannot be read back).
///
/// `key` must be the key `subject`'s certificate certifies: the pipeline
/// passes the gate's key and the gate's admitted subject, which rotation
/// keeps in step (see `RevocationGate::key`).
pub async fn sign(
    request: &mut Request<Full<Bytes>>,
    body: Bytes,
    key: Arc<dyn KeyBackend>,
    subject: Arc<Subject>,
    lifetime_secs: u64,
    batcher: Option<&BatchSigner>,
) -> Result<Signed, ProxyError> {
    let target = target_uri(request)?;
    let method = request.method().clone();
    let nonce = httpsig::new_nonce().map_err(|e| {
        ProxyError::signer_unavailable(format!("no nonce for the request signature: {e}"))
    })?;
    // `created` is in the signature base, so it is taken before the key is
    // asked: a remote key's wait (bounded by its deadline, 3 s by default)
    // comes out of the signature's lifetime, which is a minute by default.
    let created_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let keyid = subject.summary.serial_hex.as_str();
    let prepare = if batcher.is_some() {
        httpsig::prepare_batch_request
    } else {
        httpsig::prepare_request
    };
    let unsigned = prepare(
        request.headers_mut(),
        method.as_str(),
        &target,
        &body,
        &RequestSigner {
            key: key.as_ref(),
            keyid,
            certificate: &subject.certificate_header,
            created_ms,
            lifetime_secs,
            nonce: nonce.clone(),
        },
    )
    .map_err(refusal)?;
    let batch = match batcher {
        None => {
            let signature = key_signature(key.clone(), unsigned.scheme(), unsigned.base()).await?;
            unsigned
                .finish(request.headers_mut(), key.as_ref(), signature)
                .map_err(refusal)?;
            None
        }
        Some(batcher) => {
            let share = batcher
                .sign(key, unsigned.scheme(), unsigned.leaf_hash())
                .await?;
            let place = BatchPlace {
                index: share.proof.index,
                size: share.proof.size,
            };
            unsigned
                .finish_batch(request.headers_mut(), &share.signature, &share.proof)
                .map_err(refusal)?;
            Some(place)
        }
    };
    Ok(Signed {
        keyid: keyid.to_string(),
        nonce,
        created: created_ms / 1000,
        batch,
    })
}

/// The key's signature (DER for ECDSA, as backends return it) of `message`,
/// asked where the key's locality says: inline for a key in memory, awaited
/// for an async remote key, on the blocking pool for a blocking one.
pub async fn key_signature(
    key: Arc<dyn KeyBackend>,
    scheme: SignatureScheme,
    message: &[u8],
) -> Result<Vec<u8>, ProxyError> {
    match key.locality() {
        Locality::InProcess => key.sign(scheme, message),
        // Awaited with no thread held: a slow KMS costs a future per
        // request in flight, not a thread.
        Locality::RemoteAsync => key.sign_async(scheme, message).await,
        // A blocking call (an HSM's C API) never runs on a runtime worker,
        // where it would stall every other request on that thread.
        Locality::Remote => {
            let message = message.to_vec();
            tokio::task::spawn_blocking(move || key.sign(scheme, &message))
                .await
                .map_err(|e| {
                    ProxyError::signer_unavailable(format!("the request signing task failed: {e}"))
                })?
        }
    }
    .map_err(|e| refusal(HttpSigError::Sign(e)))
}

/// The `@target-uri` read back from the built request, so that what is
/// signed is what is sent: scheme https (the proxy always opens TLS), the
/// `Host` header the upstream receives, and the request target written on
/// the wire.
fn target_uri(request: &Request<Full<Bytes>>) -> Result<TargetUri, ProxyError> {
    let host = request
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or_else(|| ProxyError::malformed("the request has no Host header to sign"))?;
    let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    Ok(TargetUri::new("https", host, path))
}

/// A key that fails is our side being unavailable (503); anything else is
/// a request that cannot be put into a signature base as it is (say, a
/// `Content-Type` that is not visible ASCII), which the agent must fix.
fn refusal(err: HttpSigError) -> ProxyError {
    match err {
        HttpSigError::Sign(key) => ProxyError::signer_unavailable(format!(
            "the agent's key could not sign the request: {key}"
        )),
        other => ProxyError::malformed(format!("the request cannot be signed: {other}")),
    }
}

#[cfg(test)]
mod batch_tests;
#[cfg(test)]
pub(crate) mod tests;
