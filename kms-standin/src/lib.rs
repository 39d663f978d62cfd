//! A stand-in for AWS KMS's signing calls, for measurements and failure
//! tests. **It is not a KMS**: keys are generated or imported into this
//! process's memory (where KMS would hold them in its HSMs), there is no
//! authentication (SigV4 is not checked), no key policy, no persistence, and
//! only the operations Kakunin's `aws-kms:` key backend and its tests need.
//!
//! Keys: ECC_NIST_P256 and ECC_NIST_P384 are made by `CreateKey` or
//! [`Standin::create_key`]. RSA_2048, RSA_3072 and RSA_4096 keys can only be
//! imported ([`Standin::import_key`], or the binary's `--import-key`), as
//! PKCS#8: ring signs with RSA keys but cannot generate them. An RSA key
//! signs with all six of KMS's RSA algorithms; RSASSA-PSS uses a salt as
//! long as the digest, as KMS does (and as TLS 1.3 requires).
//!
//! It speaks KMS's wire protocol (AWS JSON 1.1: `POST /` with
//! `X-Amz-Target: TrentService.<Op>`) well enough that the unmodified
//! `aws-sdk-kms` client works against it through an endpoint override.
//! Operations: `CreateKey` (SIGN_VERIFY, ECC_NIST_P256 / ECC_NIST_P384),
//! `DescribeKey`, `GetPublicKey`, `Sign` (MessageType RAW), `EnableKey`,
//! `DisableKey`, `ScheduleKeyDeletion`, `CancelKeyDeletion`, `CreateAlias`.
//! Errors are KMS's exception names, so the SDK returns its typed errors.
//!
//! What a measurement needs beyond KMS:
//! - an added delay on every `Sign` (an async sleep: other calls go on while
//!   one waits), so a benchmark can model KMS's latency from far away; a
//!   change applies to calls already waiting, so a test can hold a `Sign`
//!   with a long delay and release it by lowering the delay;
//! - a `Sign` quota per second (a token bucket; over it, `ThrottlingException`
//!   "Rate exceeded", as KMS answers; AWS's default for ECC keys is 300/s);
//! - counters.
//!
//! Both knobs change at run time through [`Standin`] or over HTTP:
//! `POST /__standin/settings` with `{"sign_delay_ms": 20, "sign_quota_per_sec": 300}`
//! (an absent field is kept, `null` removes the quota), `GET /__standin/settings`,
//! and `GET /__standin/stats` ([`Stats`]).

mod control;
mod error;
mod keys;
mod ops;
mod server;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use control::{OpStats, SettingsUpdate, Stats};
pub use error::{Error, KmsError};
pub use keys::{KeyInfo, KeySpec, ACCOUNT};
pub use server::MAX_BODY;

use control::Control;
use keys::KeyTable;
use ops::Shared;

/// How to start a stand-in.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where to listen; port 0 picks a free one (see [`Standin::local_addr`]).
    pub listen: SocketAddr,
    /// The region ARNs name; an ARN for another region names no key.
    pub region: String,
    /// Added to every `Sign` call that gets past the quota.
    pub sign_delay: Duration,
    /// `Sign` calls per second; `None` for no quota, `Some(0)` to throttle
    /// every call.
    pub sign_quota_per_sec: Option<u32>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            region: "eu-west-1".to_string(),
            sign_delay: Duration::ZERO,
            sign_quota_per_sec: None,
        }
    }
}

/// A running stand-in. Dropping it stops the server too; [`Standin::shutdown`]
/// also waits for it.
pub struct Standin {
    addr: SocketAddr,
    region: String,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Standin {
    /// Binds and starts serving on the current tokio runtime.
    pub async fn start(settings: Settings) -> Result<Standin, Error> {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: settings.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: settings.listen,
            source,
        })?;
        let shared = Arc::new(Shared {
            table: RwLock::new(KeyTable::new(settings.region.clone())),
            control: Control::new(
                settings.sign_delay,
                settings.sign_quota_per_sec,
                ops::OPERATIONS,
            ),
            rng: ring::rand::SystemRandom::new(),
            requests: AtomicU64::new(0),
        });
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(server::serve(listener, shared.clone(), stop_rx));
        Ok(Standin {
            addr,
            region: settings.region,
            shared,
            stop,
            task: Some(task),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for the SDK's `endpoint_url`.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// Makes a SIGN_VERIFY key directly, without a `CreateKey` call.
    pub fn create_key(&self, spec: KeySpec) -> Result<KeyInfo, Error> {
        self.shared
            .table
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .create(spec, String::new())
    }

    /// Takes a PKCS#8 DER private key as a new SIGN_VERIFY key, as KMS
    /// would hold imported key material (`Origin` `EXTERNAL`): RSA with a
    /// 2048-, 3072- or 4096-bit modulus (spec RSA_2048 / RSA_3072 /
    /// RSA_4096), or ECDSA P-256 / P-384. The key stays in this process's
    /// memory, like every key of the stand-in.
    pub fn import_key(&self, pkcs8_der: &[u8]) -> Result<KeyInfo, Error> {
        self.shared
            .table
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .import(pkcs8_der, String::new())
    }

    /// Points `alias` (`alias/NAME`) at a key (id or ARN), as `CreateAlias`.
    pub fn create_alias(&self, alias: &str, key: &str) -> Result<(), KmsError> {
        self.shared
            .table
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .create_alias(alias, key)
    }

    /// Takes effect at once, also for `Sign` calls already waiting: each
    /// waits until its arrival plus the new delay, so lowering it releases
    /// them (a test can hold a `Sign` for as long as it needs, then let go).
    pub fn set_sign_delay(&self, delay: Duration) {
        self.shared.control.set_delay(delay);
    }

    pub fn sign_delay(&self) -> Duration {
        self.shared.control.delay()
    }

    /// `None` removes the quota, `Some(0)` throttles every `Sign`; a new
    /// quota starts with a full bucket.
    pub fn set_quota(&self, per_sec: Option<u32>) {
        self.shared.control.set_quota(per_sec);
    }

    pub fn quota(&self) -> Option<u32> {
        self.shared.control.quota()
    }

    pub fn stats(&self) -> Stats {
        self.shared.control.stats()
    }

    /// Stops accepting, lets calls in flight finish (up to a few seconds),
    /// and waits for the server task.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
