//! The KMS client and the runtime it runs on.
//!
//! rustls asks for a signature synchronously, from inside the proxy's own
//! async runtime. The SDK is async. So the key owns a small runtime of its
//! own: a signature is a task spawned there, and the caller (already moved
//! off the proxy's workers, see `tls.rs`) waits for its answer on a channel,
//! never longer than the deadline. A slow KMS therefore holds only the
//! callers that need it, and never a thread of the proxy's runtime. The
//! proxy's request signatures do not even hold a thread: they await the
//! same task's answer (`KmsRuntime::start`).

use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_kms::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::oneshot;

use super::reference::KmsKeyRef;
use crate::options::KeyOptions;

/// Worker threads of the KMS runtime: enough to drive many calls in flight
/// at once (they are network waits, not CPU).
const KMS_WORKERS: usize = 2;

/// The task's own timeout is the deadline; a waiter gives it this much
/// more, so that the task's answer, not the waiter's clock, decides a call
/// that ends just in time.
const SLACK: Duration = Duration::from_millis(50);

/// Owns the runtime; dropping it never blocks (a runtime dropped on an async
/// thread would panic, and an identity may be dropped anywhere).
#[derive(Debug)]
pub(crate) struct KmsRuntime {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl KmsRuntime {
    pub(crate) fn new() -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(KMS_WORKERS)
            .thread_name("kakunin-kms")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the KMS client's threads: {e}"))?;
        let handle = runtime.handle().clone();
        Ok(KmsRuntime {
            runtime: Some(runtime),
            handle,
        })
    }

    /// Runs `work` on the KMS runtime and waits for it, at most `wait`.
    /// `None` when the wait ran out (the task is then cancelled there too).
    /// Callable from any thread, inside another runtime or not.
    pub(crate) fn run<T, F>(&self, wait: Duration, work: F) -> Option<T>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        self.handle.spawn(async move {
            if let Ok(done) = tokio::time::timeout(wait, work).await {
                let _ = tx.send(done);
            }
        });
        rx.recv_timeout(wait + SLACK).ok()
    }
}

impl KmsRuntime {
    /// Starts `work` on the KMS runtime and returns its answer as a future
    /// that holds no thread: `Ok(None)` when `wait` (counted from this
    /// call) ran out, `Err(Stopped)` when the runtime went away first.
    /// Dropping the future cancels the call, so an agent that hangs up does
    /// not leave KMS work behind. Await it inside a tokio runtime with
    /// timers (the proxy's).
    pub(crate) fn start<T, F>(
        &self,
        wait: Duration,
        work: F,
    ) -> impl Future<Output = Result<Option<T>, Stopped>> + Send + 'static
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let (mut tx, rx) = oneshot::channel();
        // The caller keeps its own clock too, started now: were the KMS
        // runtime's workers all busy, the task's timer could not fire in
        // time, and nothing may wait past the deadline.
        let until = tokio::time::Instant::from_std(std::time::Instant::now() + wait + SLACK);
        self.handle.spawn(async move {
            tokio::select! {
                answer = tokio::time::timeout(wait, work) => {
                    let _ = tx.send(answer.ok());
                }
                () = tx.closed() => {}
            }
        });
        async move {
            match tokio::time::timeout_at(until, rx).await {
                Ok(answer) => answer.map_err(|_| Stopped),
                Err(_) => Ok(None),
            }
        }
    }
}

/// The KMS runtime shut down while a call was on it.
#[derive(Debug)]
pub(crate) struct Stopped;

impl Drop for KmsRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Builds the client for `key`: the SDK's standard credential chain, the
/// ARN's region (else the SDK's region chain), the endpoint override if
/// any, bounded retries and a deadline per call, and rustls on ring.
pub(crate) async fn client(key: KmsKeyRef, options: KeyOptions) -> Result<Client, String> {
    let attempts = options.max_attempts.max(1);
    // Every attempt gets its share of the deadline, so that retries fit
    // inside it instead of being cut off by it.
    let attempt = (options.deadline / attempts).max(Duration::from_millis(50));
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::v2026_01_12())
        .http_client(http)
        .retry_config(RetryConfig::standard().with_max_attempts(attempts))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(attempt)
                .operation_attempt_timeout(attempt)
                .operation_timeout(options.deadline)
                .build(),
        );
    if let Some(region) = key.region {
        loader = loader.region(Region::new(region));
    }
    if let Some(endpoint) = &options.kms_endpoint {
        check_endpoint(endpoint)?;
        loader = loader.endpoint_url(endpoint.as_str());
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err(
            "no AWS region: name the key by its ARN, or set AWS_REGION (or a profile's region)"
                .into(),
        );
    }
    Ok(Client::new(&config))
}

/// An endpoint override must be HTTPS, except on loopback (a local test
/// server): KMS requests carry signed credentials and the signatures we
/// depend on.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| format!("KMS endpoint {endpoint:?} is not a URL: {e}"))?;
    let host = uri.host().unwrap_or("");
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(()),
        Some("http") if is_loopback(host) => Ok(()),
        Some("http") => Err(format!(
            "KMS endpoint {endpoint:?} is plain HTTP off loopback; use https://"
        )),
        _ => Err(format!(
            "KMS endpoint {endpoint:?} must be an https:// URL (http:// on loopback only)"
        )),
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare == "localhost"
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_https_off_loopback() {
        assert!(check_endpoint("https://vpce-1.kms.eu-west-1.vpce.amazonaws.com").is_ok());
        assert!(check_endpoint("http://127.0.0.1:4566").is_ok());
        assert!(check_endpoint("http://[::1]:4566").is_ok());
        assert!(check_endpoint("http://localhost:4566").is_ok());
        assert!(check_endpoint("http://10.0.0.5:4566").is_err());
        assert!(check_endpoint("ftp://127.0.0.1").is_err());
        assert!(check_endpoint("not a url").is_err());
    }

    #[test]
    fn run_gives_up_at_the_wait_and_never_blocks_past_it() {
        let rt = KmsRuntime::new().unwrap();
        assert_eq!(rt.run(Duration::from_secs(5), async { 7 }), Some(7));
        let slow = rt.run(Duration::from_millis(20), async {
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        assert_eq!(slow, None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn start_answers_and_gives_up_at_the_wait() {
        let rt = KmsRuntime::new().unwrap();
        assert_eq!(
            rt.start(Duration::from_secs(5), async { 7 }).await.unwrap(),
            Some(7)
        );
        let slow = rt.start(Duration::from_millis(20), std::future::pending::<()>());
        assert_eq!(slow.await.unwrap(), None);
    }

    /// The deadline holds even when the KMS runtime is too busy to run the
    /// task's own timer: the caller's clock ends the wait.
    #[tokio::test(flavor = "current_thread")]
    async fn start_keeps_the_deadline_when_the_kms_workers_are_stuck() {
        let rt = KmsRuntime::new().unwrap();
        for _ in 0..KMS_WORKERS * 2 {
            rt.handle
                .spawn(async { std::thread::sleep(Duration::from_millis(1500)) });
        }
        let began = std::time::Instant::now();
        let answer = rt
            .start(Duration::from_millis(100), std::future::pending::<()>())
            .await;
        assert_eq!(answer.unwrap(), None);
        assert!(
            began.elapsed() < Duration::from_millis(1000),
            "waited {:?} for a 100 ms deadline",
            began.elapsed()
        );
    }

    /// An agent that hangs up drops the wait; the call on the KMS runtime
    /// is dropped with it.
    #[tokio::test(flavor = "current_thread")]
    async fn dropping_the_wait_cancels_the_call() {
        struct Flag(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let rt = KmsRuntime::new().unwrap();
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Flag(dropped.clone());
        let wait = rt.start(Duration::from_secs(60), async move {
            let _flag = flag;
            std::future::pending::<()>().await;
        });
        drop(wait);
        let began = std::time::Instant::now();
        while !dropped.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(
                began.elapsed() < Duration::from_secs(5),
                "the call outlived its waiter"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_runtime_shut_down_mid_call_is_stopped() {
        let rt = KmsRuntime::new().unwrap();
        let wait = rt.start(Duration::from_secs(60), std::future::pending::<()>());
        drop(rt);
        assert!(wait.await.is_err());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_runtime_can_be_dropped_inside_another_runtime() {
        let rt = KmsRuntime::new().unwrap();
        drop(rt);
    }
}
