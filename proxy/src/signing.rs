//! Step 8 of the pipeline (DESIGN.md "Request signature"): the request
//! leaves with an RFC 9421 signature, its RFC 9530 `Content-Digest` and the
//! seed's `X-Agent-*` mirrors, made with the agent's key over the request
//! exactly as the upstream receives it.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, Method, Request};
use http_body_util::Full;
use kakunin_policy::ActionRule;
use kakunin_signer::httpsig::{self, HttpSigError, RequestSigner, TargetUri};
use kakunin_signer::{KeyBackend, Locality};

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
) -> Result<Signed, ProxyError> {
    let job = Job {
        target: target_uri(request)?,
        method: request.method().clone(),
        body,
        key,
        subject,
        lifetime_secs,
    };
    match job.key.locality() {
        Locality::InProcess => job.run(request.headers_mut()),
        // A KMS or HSM call blocks on the network: never on a runtime
        // worker, where it would stall every other request on that thread.
        Locality::Remote => {
            let mut headers = std::mem::take(request.headers_mut());
            let (headers, signed) = tokio::task::spawn_blocking(move || {
                let signed = job.run(&mut headers);
                (headers, signed)
            })
            .await
            .map_err(|e| {
                ProxyError::signer_unavailable(format!("the request signing task failed: {e}"))
            })?;
            *request.headers_mut() = headers;
            signed
        }
    }
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

/// Everything one signature needs, owned, so that it can move to the
/// blocking pool.
struct Job {
    target: TargetUri,
    method: Method,
    body: Bytes,
    key: Arc<dyn KeyBackend>,
    subject: Arc<Subject>,
    lifetime_secs: u64,
}

impl Job {
    fn run(&self, headers: &mut HeaderMap) -> Result<Signed, ProxyError> {
        let nonce = httpsig::new_nonce().map_err(|e| {
            ProxyError::signer_unavailable(format!("no nonce for the request signature: {e}"))
        })?;
        // Taken here, not earlier: on the blocking pool a remote key may
        // start late, and `created` should say when the signature was made.
        let created_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let keyid = self.subject.summary.serial_hex.as_str();
        httpsig::sign_request(
            headers,
            self.method.as_str(),
            &self.target,
            &self.body,
            &RequestSigner {
                key: self.key.as_ref(),
                keyid,
                certificate: self.subject.leaf.as_ref(),
                created_ms,
                lifetime_secs: self.lifetime_secs,
                nonce: nonce.clone(),
            },
        )
        .map_err(refusal)?;
        Ok(Signed {
            keyid: keyid.to_string(),
            nonce,
            created: created_ms / 1000,
        })
    }
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
mod tests {
    use super::*;
    use crate::identity::CertSummary;
    use base64::Engine;
    use http::StatusCode;
    use kakunin_signer::httpsig::{check_content_digest, parse_signature, verify_signature};
    use kakunin_signer::{FileKey, KeyAlgorithm, KeyError};
    use rustls::SignatureScheme;
    use rustls_pki_types::CertificateDer;

    fn p256() -> FileKey {
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

    fn subject() -> Arc<Subject> {
        Arc::new(Subject {
            leaf: CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x07]),
            issuer: None,
            summary: CertSummary {
                common_name: "trading_bot_v2".into(),
                serial_hex: "0a1b2c".into(),
                not_after: String::new(),
                not_before_unix: 0,
                not_after_unix: 0,
                client_auth: Some(true),
                scope: None,
            },
        })
    }

    fn request(
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
    struct Wrapped {
        inner: FileKey,
        locality: Locality,
        broken: bool,
        threads: std::sync::Mutex<Vec<std::thread::ThreadId>>,
    }

    impl Wrapped {
        fn new(locality: Locality, broken: bool) -> Arc<Wrapped> {
            Arc::new(Wrapped {
                inner: p256(),
                locality,
                broken,
                threads: Default::default(),
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
    }

    /// Verifies what `sign` wrote with the signer crate's own verifier (the
    /// integration tests check it independently, with OpenSSL and Python).
    fn verify(request: &Request<Full<Bytes>>, body: &[u8], spki: &[u8]) {
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
        let signed = sign(&mut req, body.clone(), key.clone(), subject(), 90)
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
        sign(&mut req, Bytes::new(), key.clone(), subject(), 60)
            .await
            .unwrap();
        let threads = key.threads.lock().unwrap().clone();
        assert_eq!(threads.len(), 1);
        assert_ne!(threads[0], std::thread::current().id());
        // The headers came back from the blocking pool with the signature.
        assert_eq!(req.headers()[HOST], "api.exchange.com");
        verify(&req, b"", key.public_key_spki());
        let parsed = parse_signature(req.headers(), "kakunin").unwrap();
        assert_eq!(
            parsed.input.covered.len(),
            4,
            "no content-type, not covered"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_key_that_fails_is_503_signer_unavailable() {
        for locality in [Locality::InProcess, Locality::Remote] {
            let key = Wrapped::new(locality, true);
            let mut req = request(Method::POST, "api.exchange.com", "/v1/trades", None);
            let err = sign(&mut req, Bytes::new(), key, subject(), 60)
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
        let err = sign(&mut req, Bytes::new(), key, subject(), 60)
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
                sign(&mut req, Bytes::new(), key.clone(), subject(), 60)
                    .await
                    .unwrap()
                    .nonce,
            );
        }
        assert_ne!(nonces[0], nonces[1]);
    }
}
