//! Unit tests of batch signatures (`[signing] batch = true`) through
//! [`sign`]: every request verifies on its own, requests that are ready
//! together share key calls, and a failing key fails each of them.

use super::tests::{request, subject, verify, Wrapped};
use super::*;
use crate::batch_signer::BatchSigner;
use http::StatusCode;
use kakunin_signer::httpsig::batch::BATCH_PROOF;
use kakunin_signer::httpsig::parse_signature;
use std::sync::atomic::Ordering;

fn batcher() -> BatchSigner {
    let metrics = crate::metrics::Metrics::new();
    BatchSigner::start(&tokio::runtime::Handle::current(), metrics.batch.clone())
}

/// `n` requests to sign at once, each with its own body.
fn trades(n: usize) -> Vec<(Request<Full<Bytes>>, Bytes)> {
    (0..n)
        .map(|i| {
            let req = request(
                Method::POST,
                "api.exchange.com",
                "/v1/trades",
                Some(b"application/json"),
            );
            (req, Bytes::from(format!(r#"{{"size":{i}}}"#)))
        })
        .collect()
}

/// `sign` with the test subject, a minute's lifetime and `batcher`.
async fn sign_batched(
    req: &mut Request<Full<Bytes>>,
    body: &Bytes,
    key: Arc<Wrapped>,
    batcher: &BatchSigner,
) -> Result<Signed, ProxyError> {
    sign(req, body.clone(), key, subject(), 60, Some(batcher)).await
}

/// Signs every request in its own task, all spawned before any runs.
async fn sign_together(
    key: Arc<Wrapped>,
    batcher: &BatchSigner,
    n: usize,
) -> Vec<(Request<Full<Bytes>>, Bytes, Result<Signed, ProxyError>)> {
    let tasks: Vec<_> = trades(n)
        .into_iter()
        .map(|(mut req, body)| {
            let (key, batcher) = (key.clone(), batcher.clone());
            tokio::spawn(async move {
                let signed = sign_batched(&mut req, &body, key, &batcher).await;
                (req, body, signed)
            })
        })
        .collect();
    let mut done = Vec::new();
    for task in tasks {
        done.push(task.await.unwrap());
    }
    done
}

#[tokio::test(flavor = "current_thread")]
async fn requests_ready_together_share_signatures_and_each_verifies() {
    let key = Wrapped::new(Locality::InProcess, false);
    let batcher = batcher();
    let signed = sign_together(key.clone(), &batcher, 20).await;
    let mut sizes = Vec::new();
    for (req, body, signed) in &signed {
        let signed = signed.as_ref().unwrap();
        verify(req, body, key.public_key_spki());
        let parsed = parse_signature(req.headers(), "kakunin").unwrap();
        assert_eq!(parsed.input.params.tag.as_deref(), Some("kakunin-batch"));
        assert_eq!(
            parsed.input.params.nonce.as_deref(),
            Some(signed.nonce.as_str())
        );
        let place = signed.batch.unwrap();
        assert!(place.index < place.size);
        sizes.push(place.size);
        assert!(req.headers().contains_key(BATCH_PROOF));
    }
    let key_calls = key.threads.lock().unwrap().len();
    assert!(key_calls < 20, "{key_calls} key signatures for 20 requests");
    assert!(sizes.iter().any(|&size| size > 1), "{sizes:?}");
    // The audit record says where the request sat.
    let recorded = serde_json::to_value(signed[0].2.as_ref().unwrap()).unwrap();
    assert!(recorded["batch"]["size"].as_u64().unwrap() >= 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_lone_request_is_a_batch_of_one() {
    let key = Wrapped::new(Locality::InProcess, false);
    let batcher = batcher();
    let (mut req, body) = trades(1).remove(0);
    let signed = sign_batched(&mut req, &body, key.clone(), &batcher)
        .await
        .unwrap();
    assert_eq!(signed.batch, Some(BatchPlace { index: 0, size: 1 }));
    assert_eq!(req.headers()[BATCH_PROOF], "kakunin=();index=0;size=1");
    verify(&req, &body, key.public_key_spki());
}

#[tokio::test(flavor = "current_thread")]
async fn remote_keys_sign_batches_where_their_locality_says() {
    for locality in [Locality::Remote, Locality::RemoteAsync] {
        let key = Wrapped::new(locality, false);
        let batcher = batcher();
        for (req, body, signed) in sign_together(key.clone(), &batcher, 8).await {
            signed.unwrap();
            verify(&req, &body, key.public_key_spki());
        }
        let blocking = key.threads.lock().unwrap().clone();
        let awaited = key.async_calls.load(Ordering::SeqCst);
        match locality {
            Locality::Remote => {
                assert!(awaited == 0 && !blocking.is_empty() && blocking.len() < 8);
                assert!(blocking.iter().all(|t| *t != std::thread::current().id()));
            }
            _ => assert!(blocking.is_empty() && awaited > 0 && awaited < 8),
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn each_key_signs_its_own_requests_in_a_mixed_batch() {
    // A rotation between two requests of one batch: each request verifies
    // with the key it was prepared for.
    let (old, new) = (
        Wrapped::new(Locality::InProcess, false),
        Wrapped::new(Locality::InProcess, false),
    );
    let batcher = batcher();
    let tasks: Vec<_> = trades(6)
        .into_iter()
        .enumerate()
        .map(|(i, (mut req, body))| {
            let key = if i % 2 == 0 { old.clone() } else { new.clone() };
            let batcher = batcher.clone();
            tokio::spawn(async move {
                sign_batched(&mut req, &body, key.clone(), &batcher)
                    .await
                    .unwrap();
                (req, body, key)
            })
        })
        .collect();
    for task in tasks {
        let (req, body, key) = task.await.unwrap();
        verify(&req, &body, key.public_key_spki());
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_failing_key_fails_every_request_of_its_batch_with_503() {
    for locality in [Locality::InProcess, Locality::Remote, Locality::RemoteAsync] {
        let key = Wrapped::new(locality, true);
        let batcher = batcher();
        for (req, _, signed) in sign_together(key, &batcher, 5).await {
            let err = signed.unwrap_err();
            assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(err.code, "signer_unavailable");
            assert!(err.message.contains("KMS throttled"), "{}", err.message);
            assert!(!req.headers().contains_key("signature"));
        }
    }
}
