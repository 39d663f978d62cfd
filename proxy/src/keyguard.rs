//! What stands between the proxy and the agent's key backend: a local
//! context check before every signature, and the metrics of every call.
//!
//! The seed has KMS itself refuse to sign outside business hours or the
//! agent's network. A KMS key policy can hold the network part
//! (`aws:SourceIp`, `aws:SourceVpce`; see deploy/kms/) but has no
//! time-of-day condition, so the policy's `allowed_hours` and
//! `allowed_regions` are checked here, before the call is made, for
//! handshakes as well as request signatures.

use std::sync::Arc;
use std::time::Instant;

use kakunin_policy::{Context, Mode, Policy};
use kakunin_signer::{KeyAlgorithm, KeyBackend, KeyError, Locality, PendingSignature};
use rustls::SignatureScheme;

use crate::clock::unix_now;
use crate::metrics::{BackendLabel, ErrorLabel, KeyMetrics, RefusalLabel};

/// The metrics' name for a backend, from its description's scheme.
fn backend_name(backend: &dyn KeyBackend) -> String {
    let described = backend.describe();
    match described.split_once(':') {
        Some((scheme, _)) if scheme == "aws-kms" || scheme == "pkcs11" => scheme.to_string(),
        _ => "file".to_string(),
    }
}

/// Wraps `backend` in the context check and the metrics. The order matters:
/// a signature refused by the context never reaches the backend, so it is
/// counted as a refusal, not as a call.
pub fn guard(
    backend: Arc<dyn KeyBackend>,
    policy: &Policy,
    region: Option<String>,
    metrics: Arc<KeyMetrics>,
) -> Arc<dyn KeyBackend> {
    let metered = Arc::new(MeteredKey {
        label: BackendLabel {
            backend: backend_name(backend.as_ref()),
        },
        inner: backend,
        metrics: metrics.clone(),
    });
    Arc::new(ContextGuard {
        inner: metered,
        policy: policy.clone(),
        region,
        metrics,
    })
}

#[derive(Debug)]
struct ContextGuard {
    inner: Arc<dyn KeyBackend>,
    policy: Policy,
    region: Option<String>,
    metrics: Arc<KeyMetrics>,
}

impl ContextGuard {
    fn check(&self) -> Result<(), KeyError> {
        let context = Context {
            now_unix_secs: unix_now(),
            region: self.region.clone(),
        };
        let Err(denial) = self.policy.check_execution(&context) else {
            return Ok(());
        };
        self.metrics
            .context_refusals
            .get_or_create(&RefusalLabel {
                reason: denial.code.as_str().to_string(),
            })
            .inc();
        // Report mode lets the request through everywhere else, so it does
        // here too; the refusal is still counted and logged.
        if self.policy.mode() == Mode::Report {
            tracing::warn!(reason = %denial.message, "key used outside its context (report mode)");
            return Ok(());
        }
        Err(KeyError::OutOfContext {
            key: self.inner.describe(),
            reason: denial.message,
        })
    }
}

impl KeyBackend for ContextGuard {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn algorithm(&self) -> KeyAlgorithm {
        self.inner.algorithm()
    }
    fn public_key_spki(&self) -> &[u8] {
        self.inner.public_key_spki()
    }
    fn locality(&self) -> Locality {
        self.inner.locality()
    }
    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.check()?;
        self.inner.sign(scheme, message)
    }
    fn sign_async(&self, scheme: SignatureScheme, message: &[u8]) -> PendingSignature {
        match self.check() {
            Ok(()) => self.inner.sign_async(scheme, message),
            Err(refused) => Box::pin(std::future::ready(Err(refused))),
        }
    }
}

#[derive(Debug)]
struct MeteredKey {
    inner: Arc<dyn KeyBackend>,
    label: BackendLabel,
    metrics: Arc<KeyMetrics>,
}

impl KeyBackend for MeteredKey {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn algorithm(&self) -> KeyAlgorithm {
        self.inner.algorithm()
    }
    fn public_key_spki(&self) -> &[u8] {
        self.inner.public_key_spki()
    }
    fn locality(&self) -> Locality {
        self.inner.locality()
    }
    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let started = Instant::now();
        let signed = self.inner.sign(scheme, message);
        record(
            &self.metrics,
            &self.label,
            started,
            signed.as_ref().err().map(KeyError::kind),
        );
        signed
    }
    fn sign_async(&self, scheme: SignatureScheme, message: &[u8]) -> PendingSignature {
        let started = Instant::now();
        let pending = self.inner.sign_async(scheme, message);
        // Counted even if the wait is dropped (the agent hung up): the call
        // was made all the same.
        let mut unfinished = Unfinished(Some((self.metrics.clone(), self.label.clone(), started)));
        Box::pin(async move {
            let signed = pending.await;
            if let Some((metrics, label, started)) = unfinished.0.take() {
                record(
                    &metrics,
                    &label,
                    started,
                    signed.as_ref().err().map(KeyError::kind),
                );
            }
            signed
        })
    }
}

/// An async call not yet recorded; recorded as `cancelled` if dropped so.
struct Unfinished(Option<(Arc<KeyMetrics>, BackendLabel, Instant)>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some((metrics, label, started)) = self.0.take() {
            record(&metrics, &label, started, Some("cancelled"));
        }
    }
}

/// One call to the backend in the key metrics; `error` is the failure's
/// kind, if it failed.
fn record(metrics: &KeyMetrics, label: &BackendLabel, started: Instant, error: Option<&str>) {
    metrics.calls.get_or_create(label).inc();
    metrics
        .seconds
        .get_or_create(label)
        .observe(started.elapsed().as_secs_f64());
    if let Some(kind) = error {
        metrics
            .errors
            .get_or_create(&ErrorLabel {
                backend: label.backend.clone(),
                kind: kind.to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn file_key() -> Arc<dyn KeyBackend> {
        let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
        Arc::new(kakunin_signer::FileKey::from_pem("test", pem.as_bytes()).unwrap())
    }

    fn policy(extra: &str) -> Policy {
        Policy::from_json_str(
            "test",
            &format!(r#"{{"agent_id": "a", "execution_constraints": {{{extra}}}}}"#),
        )
        .unwrap()
    }

    const P256: SignatureScheme = SignatureScheme::ECDSA_NISTP256_SHA256;

    #[test]
    fn calls_are_counted_and_timed() {
        let metrics = Metrics::new();
        let key = guard(file_key(), &policy(""), None, metrics.key.clone());
        key.sign(P256, b"m").unwrap();
        assert!(key.sign(SignatureScheme::ED25519, b"m").is_err());
        let text = metrics.render();
        assert!(
            text.contains(r#"kakunin_key_sign_calls_total{backend="file"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"kakunin_key_sign_errors_total{backend="file",kind="scheme_unsupported"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("kakunin_key_sign_duration_seconds_count{backend=\"file\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn a_region_outside_the_policy_never_reaches_the_key() {
        let metrics = Metrics::new();
        let key = guard(
            file_key(),
            &policy(r#""allowed_regions": ["eu-west-1"]"#),
            Some("us-east-1".into()),
            metrics.key.clone(),
        );
        let err = key.sign(P256, b"m").unwrap_err();
        assert_eq!(err.kind(), "out_of_context");
        assert!(err.to_string().contains("us-east-1"), "{err}");
        let text = metrics.render();
        assert!(!text.contains("kakunin_key_sign_calls_total{"), "{text}");
        assert!(
            text.contains(r#"kakunin_key_context_refusals_total{reason="region_denied"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn hours_are_checked_at_each_signature() {
        // A one-minute window that is never now: the minute before this one.
        let now = unix_now().rem_euclid(86_400) / 60;
        let start = (now + 1438) % 1440;
        let end = (start + 1) % 1440;
        let window = format!(
            r#""allowed_hours": "{:02}:{:02}-{:02}:{:02} UTC""#,
            start / 60,
            start % 60,
            end / 60,
            end % 60
        );
        let metrics = Metrics::new();
        let key = guard(file_key(), &policy(&window), None, metrics.key.clone());
        assert_eq!(key.sign(P256, b"m").unwrap_err().kind(), "out_of_context");
    }

    /// A KMS-like key: signs only through `sign_async`, and counts calls.
    #[derive(Debug)]
    struct AsyncKey {
        inner: Arc<dyn KeyBackend>,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl KeyBackend for AsyncKey {
        fn describe(&self) -> String {
            "aws-kms:arn:aws:kms:eu-west-1:1:key/k".into()
        }
        fn algorithm(&self) -> KeyAlgorithm {
            self.inner.algorithm()
        }
        fn public_key_spki(&self) -> &[u8] {
            self.inner.public_key_spki()
        }
        fn locality(&self) -> Locality {
            Locality::RemoteAsync
        }
        fn sign(&self, _: SignatureScheme, _: &[u8]) -> Result<Vec<u8>, KeyError> {
            unreachable!("the guard must forward sign_async as sign_async")
        }
        fn sign_async(&self, scheme: SignatureScheme, message: &[u8]) -> PendingSignature {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let signed = self.inner.sign(scheme, message);
            Box::pin(async move {
                tokio::task::yield_now().await;
                signed
            })
        }
    }

    fn async_key() -> Arc<AsyncKey> {
        Arc::new(AsyncKey {
            inner: file_key(),
            calls: Default::default(),
        })
    }

    #[tokio::test(flavor = "current_thread")]
    async fn async_signatures_are_checked_counted_and_timed() {
        let inner = async_key();
        let metrics = Metrics::new();
        let key = guard(inner.clone(), &policy(""), None, metrics.key.clone());
        assert_eq!(key.locality(), Locality::RemoteAsync);
        let signature = key.sign_async(P256, b"m").await.unwrap();
        assert!(kakunin_signer::verifies(
            P256,
            key.public_key_spki(),
            b"m",
            &signature
        ));
        let text = metrics.render();
        assert!(
            text.contains(r#"kakunin_key_sign_calls_total{backend="aws-kms"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("kakunin_key_sign_duration_seconds_count{backend=\"aws-kms\"} 1"),
            "{text}"
        );

        let outside = guard(
            inner.clone(),
            &policy(r#""allowed_regions": ["eu-west-1"]"#),
            Some("us-east-1".into()),
            metrics.key.clone(),
        );
        let err = outside.sign_async(P256, b"m").await.unwrap_err();
        assert_eq!(err.kind(), "out_of_context");
        assert_eq!(inner.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_async_signature_whose_wait_is_dropped_is_counted_as_cancelled() {
        let inner = async_key();
        let metrics = Metrics::new();
        let key = guard(inner, &policy(""), None, metrics.key.clone());
        drop(key.sign_async(P256, b"m"));
        let text = metrics.render();
        assert!(
            text.contains(r#"kakunin_key_sign_calls_total{backend="aws-kms"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kakunin_key_sign_errors_total{backend="aws-kms",kind="cancelled"} 1"#),
            "{text}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_key_without_an_async_form_refuses_sign_async() {
        let key = guard(file_key(), &policy(""), None, Metrics::new().key.clone());
        let err = key.sign_async(P256, b"m").await.unwrap_err();
        assert_eq!(err.kind(), "unsupported");
    }

    #[test]
    fn report_mode_counts_but_signs() {
        let policy = Policy::from_json_str(
            "test",
            r#"{"agent_id": "a", "mode": "report", "execution_constraints": {"allowed_regions": ["eu-west-1"]}}"#,
        )
        .unwrap();
        let metrics = Metrics::new();
        let key = guard(
            file_key(),
            &policy,
            Some("us-east-1".into()),
            metrics.key.clone(),
        );
        assert!(key.sign(P256, b"m").is_ok());
        assert!(metrics
            .render()
            .contains("kakunin_key_context_refusals_total"));
    }
}
