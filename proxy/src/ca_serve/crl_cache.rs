//! The CRL at its distribution point. Each CRL the CA signs takes the next
//! CRL number, so one is signed only when something changed (a new event)
//! or the last one is half-way to its nextUpdate; relying parties that
//! fetch often all get the same one.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::{Response, StatusCode};

use super::{binary, plain, Shared};
use crate::body::ProxyBody;

#[derive(Default)]
pub struct CrlCache {
    current: Mutex<Option<Signed>>,
}

#[derive(Clone)]
struct Signed {
    der: Vec<u8>,
    made: Instant,
    last_event: i64,
}

pub async fn serve(shared: Arc<Shared>) -> Response<ProxyBody> {
    let last_event = shared.watchers.last_id();
    let cached = shared
        .crl
        .current
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some(signed) = cached {
        if signed.last_event == last_event
            && signed.made.elapsed() < shared.options.crl_validity / 2
        {
            return binary("application/pkix-crl", signed.der);
        }
    }
    let made = tokio::task::spawn_blocking(move || {
        let crl = shared.authority.crl(shared.options.crl_validity)?;
        let signed = Signed {
            der: crl.der,
            made: Instant::now(),
            last_event,
        };
        *shared.crl.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(signed.clone());
        Ok::<_, kakunin_authority::AuthorityError>(signed)
    })
    .await;
    match made {
        Ok(Ok(signed)) => binary("application/pkix-crl", signed.der),
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
