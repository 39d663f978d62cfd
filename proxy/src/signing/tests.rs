//! Unit tests of request signing, one signature per request.

use super::*;
use crate::identity::CertSummary;
use base64::Engine;
use http::StatusCode;
use kakunin_signer::httpsig::{check_content_digest, parse_signature, verify_signature};
use kakunin_signer::{FileKey, KeyAlgorithm, KeyError, PendingSignature};
use rustls::SignatureScheme;
use rustls_pki_types::CertificateDer;
use std::sync::atomic::{AtomicUsize, Ordering};

pub(super) fn p256() -> FileKey {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &rng,
    )
    .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
    FileKey::from_pem("test", pem.as_bytes()).unwrap()
}

pub(crate) fn subject() -> Arc<Subject> {
    Arc::new(
        Subject::new(
            CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x07]),
            None,
            CertSummary {
                common_name: "trading_bot_v2".into(),
                serial_hex: "0a1b2c".into(),
                not_after: String::new(),
                not_before_unix: 0,
                not_after_unix: 0,
                client_auth: Some(true),
                scope: None,
            },
        )
        .unwrap(),
    )
}

pub(super) fn request(
    method: Method,
    host: &str,
    path: &str,
    content_type: Option<&[u8]>,
) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(Bytes::new()));
    *request.method_mut() = method;
    *request.uri_mut() = path.parse().unwrap();
    request.headers_mut().insert(HOST, host.parse().unwrap());
    if let Some(value) = content_type {
        request.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_bytes(value).unwrap(),
        );
    }
    request
}

/// Another locality, or a failing key, around a real one; records the
/// thread each signature ran on.
#[derive(Debug)]
pub(super) struct Wrapped {
    inner: FileKey,
    locality: Locality,
    broken: bool,
    pub(super) threads: std::sync::Mutex<Vec<std::thread::ThreadId>>,
    pub(super) async_calls: AtomicUsize,
}

impl Wrapped {
    pub(super) fn new(locality: Locality, broken: bool) -> Arc<Wrapped> {
        Arc::new(Wrapped {
            inner: p256(),
            locality,
            broken,
            threads: Default::default(),
            async_calls: AtomicUsize::new(0),
        })
    }
}

impl KeyBackend for Wrapped {
    fn describe(&self) -> String {
        "wrapped".into()
    }
    fn algorithm(&self) -> KeyAlgorithm {
        self.inner.algorithm()
    }
    fn public_key_spki(&self) -> &[u8] {
        self.inner.public_key_spki()
    }
    fn locality(&self) -> Locality {
        self.locality
    }
    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.threads
            .lock()
            .unwrap()
            .push(std::thread::current().id());
        if self.broken {
            return Err(KeyError::Sign {
                key: "wrapped".into(),
                reason: "KMS throttled the request".into(),
            });
        }
        self.inner.sign(scheme, message)
    }
    /// Signs on a thread of its own and answers through a channel, as
    /// the KMS client's runtime does, counting the calls.
    fn sign_async(&self, scheme: SignatureScheme, message: &[u8]) -> PendingSignature {
        self.async_calls.fetch_add(1, Ordering::SeqCst);
        let signed = if self.broken {
            Err(KeyError::Sign {
                key: "wrapped".into(),
                reason: "KMS throttled the request".into(),
            })
        } else {
            self.inner.sign(scheme, message)
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let _ = tx.send(signed);
        });
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(KeyError::Sign {
                    key: "wrapped".into(),
                    reason: "the signing thread went away".into(),
                })
            })
        })
    }
}

/// Verifies what `sign` wrote with the signer crate's own verifier (the
/// integration tests check it independently, with OpenSSL and Python).
pub(super) fn verify(request: &Request<Full<Bytes>>, body: &[u8], spki: &[u8]) {
    let headers = request.headers();
    let target = target_uri(request).unwrap();
    let parsed = parse_signature(headers, httpsig::LABEL).unwrap();
    let message = httpsig::Message::Request {
        method: request.method().as_str(),
        target: &target,
        headers,
    };
    verify_signature(&message, &parsed, spki).unwrap();
    httpsig::check_profile(&parsed, headers).unwrap();
    check_content_digest(headers["content-digest"].to_str().unwrap(), body).unwrap();
}

fn rule(json_sign: &str) -> kakunin_policy::Policy {
    let text = format!(
        r#"{{"agent_id": "a", "network_rules": {{"allowed_hosts": ["h"]}},
            "actions": [{{"match": {{"method": "*", "path": "/x"}} {json_sign}}}]}}"#
    );
    kakunin_policy::Policy::from_json_str("p.json", &text).unwrap()
}

#[test]
fn sign_decision_follows_the_rule_then_the_method() {
    let target = kakunin_policy::normalize_host("h").unwrap();
    let decide = |policy: &kakunin_policy::Policy, method: Method| {
        let action = policy.action_for(method.as_str(), &target, "/x").unwrap();
        should_sign(action, &method)
    };
    let unset = rule("");
    let on = rule(r#", "sign": true"#);
    let off = rule(r#", "sign": false"#);
    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        assert!(should_sign(None, &method), "{method} without a rule");
        assert!(
            decide(&unset, method.clone()),
            "{method}, rule without sign"
        );
        assert!(decide(&on, method.clone()));
        assert!(!decide(&off, method.clone()), "{method}, sign: false");
    }
    for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
        assert!(!should_sign(None, &method), "{method} without a rule");
        assert!(
            !decide(&unset, method.clone()),
            "{method}, rule without sign"
        );
        assert!(decide(&on, method.clone()), "{method}, sign: true");
        assert!(!decide(&off, method.clone()));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn in_process_keys_sign_inline_and_the_signature_verifies() {
    let key = Wrapped::new(Locality::InProcess, false);
    let body = Bytes::from_static(br#"{"size":1}"#);
    let mut req = request(
        Method::POST,
        "api.exchange.com:8443",
        "/v1/trades?x=1",
        Some(b"application/json"),
    );
    let signed = sign(&mut req, body.clone(), key.clone(), subject(), 90, None)
        .await
        .unwrap();
    assert_eq!(
        *key.threads.lock().unwrap(),
        vec![std::thread::current().id()]
    );
    verify(&req, &body, key.public_key_spki());
    let parsed = parse_signature(req.headers(), "kakunin").unwrap();
    let params = &parsed.input.params;
    assert_eq!(params.keyid.as_deref(), Some("0a1b2c"));
    assert_eq!(params.alg.as_deref(), Some("ecdsa-p256-sha256"));
    assert_eq!(params.nonce.as_deref(), Some(signed.nonce.as_str()));
    assert_eq!(params.created, Some(signed.created as i64));
    assert_eq!(params.expires, Some(signed.created as i64 + 90));
    let names: Vec<_> = parsed.input.covered.iter().map(|c| c.name()).collect();
    assert_eq!(
        names,
        [
            "@method",
            "@target-uri",
            "@authority",
            "content-digest",
            "content-type"
        ]
    );
    let timestamp: u64 = req.headers()["x-agent-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(timestamp / 1000, signed.created);
    assert_eq!(req.headers()["x-agent-certificate"], "MAMCAQc=");
    assert_eq!(
        serde_json::to_value(&signed).unwrap(),
        serde_json::json!({"keyid": "0a1b2c", "nonce": signed.nonce, "created": signed.created})
    );
}

#[tokio::test(flavor = "current_thread")]
async fn remote_keys_sign_off_the_runtime_thread() {
    let key = Wrapped::new(Locality::Remote, false);
    let mut req = request(Method::DELETE, "api.exchange.com", "/v1/orders/7", None);
    sign(&mut req, Bytes::new(), key.clone(), subject(), 60, None)
        .await
        .unwrap();
    let threads = key.threads.lock().unwrap().clone();
    assert_eq!(threads.len(), 1);
    assert_ne!(threads[0], std::thread::current().id());
    // Only the key's call went to the blocking pool; the request kept
    // its headers.
    assert_eq!(req.headers()[HOST], "api.exchange.com");
    verify(&req, b"", key.public_key_spki());
    let parsed = parse_signature(req.headers(), "kakunin").unwrap();
    assert_eq!(
        parsed.input.covered.len(),
        4,
        "no content-type, not covered"
    );
}

/// The runtime's only thread goes on serving while the signature is
/// out: nothing blocks on it, and the blocking `sign` is never called.
#[tokio::test(flavor = "current_thread")]
async fn async_remote_keys_are_awaited_without_blocking_a_thread() {
    let key = Wrapped::new(Locality::RemoteAsync, false);
    let ticks = Arc::new(AtomicUsize::new(0));
    let ticker = tokio::spawn({
        let ticks = ticks.clone();
        async move {
            loop {
                ticks.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
    });
    let body = Bytes::from_static(b"{}");
    let mut req = request(Method::PUT, "api.exchange.com", "/v1/orders/7", None);
    sign(&mut req, body.clone(), key.clone(), subject(), 60, None)
        .await
        .unwrap();
    ticker.abort();
    assert_eq!(key.async_calls.load(Ordering::SeqCst), 1);
    assert!(key.threads.lock().unwrap().is_empty(), "sign was called");
    assert!(
        ticks.load(Ordering::SeqCst) >= 2,
        "the runtime thread was blocked during the 20 ms signature"
    );
    verify(&req, &body, key.public_key_spki());
}

#[tokio::test(flavor = "current_thread")]
async fn a_key_that_fails_is_503_signer_unavailable() {
    for locality in [Locality::InProcess, Locality::Remote, Locality::RemoteAsync] {
        let key = Wrapped::new(locality, true);
        let mut req = request(Method::POST, "api.exchange.com", "/v1/trades", None);
        let err = sign(&mut req, Bytes::new(), key, subject(), 60, None)
            .await
            .unwrap_err();
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.code, "signer_unavailable");
        assert!(err.message.contains("KMS throttled"), "{}", err.message);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_content_type_outside_visible_ascii_is_the_agents_to_fix() {
    let key = Wrapped::new(Locality::InProcess, false);
    let mut req = request(
        Method::POST,
        "api.exchange.com",
        "/v1/trades",
        Some(b"text/plain; charset=\xe9"),
    );
    let err = sign(&mut req, Bytes::new(), key, subject(), 60, None)
        .await
        .unwrap_err();
    assert_eq!(err.status, StatusCode::BAD_REQUEST);
    assert!(err.message.contains("content-type"), "{}", err.message);
}

#[tokio::test(flavor = "current_thread")]
async fn two_signatures_have_different_nonces() {
    let key = Wrapped::new(Locality::InProcess, false);
    let mut nonces = Vec::new();
    for _ in 0..2 {
        let mut req = request(Method::POST, "api.exchange.com", "/v1/trades", None);
        nonces.push(
            sign(&mut req, Bytes::new(), key.clone(), subject(), 60, None)
                .await
                .unwrap()
                .nonce,
        );
    }
    assert_ne!(nonces[0], nonces[1]);
}
