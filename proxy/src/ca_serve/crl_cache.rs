//! The CRL at its distribution point. Each CRL the CA signs takes the next
//! CRL number, so one is signed only when something changed (a new event)
//! or the last one is half-way to its nextUpdate; relying parties that
//! fetch often all get the same one.
//!
//! Regeneration is single-flight: requests that find the cache stale queue
//! on one lock, the first signs, and the rest find its CRL when their turn
//! comes. Without that, a burst arriving just after a revocation would sign
//! (and number) one CRL per request.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use super::{binary, plain, Shared};
use crate::body::ProxyBody;

#[derive(Default)]
pub struct CrlCache {
    current: Mutex<Option<Signed>>,
    regenerating: Arc<tokio::sync::Mutex<()>>,
}

struct Signed {
    der: Bytes,
    made: Instant,
    last_event: i64,
}

pub async fn serve(shared: Arc<Shared>) -> Response<ProxyBody> {
    if let Some(der) = fresh(&shared) {
        return crl_response(der);
    }
    let turn = shared.crl.regenerating.clone().lock_owned().await;
    if let Some(der) = fresh(&shared) {
        return crl_response(der);
    }
    // Signing shares the pool that bounds OCSP work: a flood of either
    // cannot pile up blocking tasks.
    let Ok(permit) = shared.work.clone().try_acquire_owned() else {
        return busy();
    };
    let made = tokio::task::spawn_blocking(move || {
        // Both are held until the CRL is cached, even if this request's
        // client has gone: the next waiter must find the CRL, not sign one.
        let (_turn, _permit) = (turn, permit);
        // Read before signing: the CRL covers at least every event up to it.
        let last_event = shared.watchers.last_id();
        let crl = shared.authority.crl(shared.options.crl_validity)?;
        let der = Bytes::from(crl.der);
        *lock(&shared.crl.current) = Some(Signed {
            der: der.clone(),
            made: Instant::now(),
            last_event,
        });
        Ok::<_, kakunin_authority::AuthorityError>(der)
    })
    .await;
    match made {
        Ok(Ok(der)) => crl_response(der),
        Ok(Err(err)) => {
            tracing::error!(error = %err, "cannot produce the CRL");
            plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the CRL cannot be produced right now\n",
            )
        }
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "the CRL task failed\n"),
    }
}

/// The cached CRL, if no event came since it was signed and it is not yet
/// half-way to its nextUpdate.
fn fresh(shared: &Shared) -> Option<Bytes> {
    let current = lock(&shared.crl.current);
    let signed = current.as_ref()?;
    let fresh = signed.last_event == shared.watchers.last_id()
        && signed.made.elapsed() < shared.options.crl_validity / 2;
    fresh.then(|| signed.der.clone())
}

fn lock(current: &Mutex<Option<Signed>>) -> std::sync::MutexGuard<'_, Option<Signed>> {
    current.lock().unwrap_or_else(|p| p.into_inner())
}

fn crl_response(der: Bytes) -> Response<ProxyBody> {
    let mut response = binary("application/pkix-crl", der);
    // A revocation changes the CRL at once; a shared cache may keep it a
    // minute at most, so that it does not hide a revocation for a day.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=60, public, no-transform, must-revalidate"),
    );
    response
}

fn busy() -> Response<ProxyBody> {
    let mut response = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "the CA is busy; retry shortly\n",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}
