//! The knobs a measurement turns at run time (Sign delay, Sign quota) and
//! the counters it reads back.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

/// The quota as it stands: none, zero (every Sign throttled: a failure test's
/// setting, which governor cannot express), or a token bucket whose burst is
/// one second's worth, as KMS's per-second request quotas behave.
enum Limit {
    None,
    Zero,
    Bucket(Arc<DefaultDirectRateLimiter>),
}

pub struct Control {
    delay_nanos: AtomicU64,
    /// Wakes Sign calls waiting out the delay when it changes, so that
    /// lowering it releases them (a test can hold a Sign as long as it likes).
    delay_changed: Notify,
    limit: RwLock<(Option<u32>, Limit)>,
    sign_accepted: AtomicU64,
    sign_throttled: AtomicU64,
    sign_errors: AtomicU64,
    sign_in_flight: AtomicU64,
    sign_in_flight_max: AtomicU64,
    /// One pair of counters per name given to `new`, plus `Unknown`: a
    /// fixed table, so counting takes no lock and no allocation.
    per_op: Vec<OpCounters>,
}

struct OpCounters {
    name: &'static str,
    calls: AtomicU64,
    errors: AtomicU64,
}

/// Calls and error answers of one KMS operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpStats {
    pub calls: u64,
    pub errors: u64,
}

/// What `GET /__standin/stats` answers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Sign calls answered with a signature.
    pub sign_accepted: u64,
    /// Sign calls answered `ThrottlingException` (over quota).
    pub sign_throttled: u64,
    /// Sign calls answered with any other error.
    pub sign_errors: u64,
    /// Sign calls waiting out the delay or signing right now.
    pub sign_in_flight: u64,
    /// The most Sign calls that were in flight at once.
    pub sign_in_flight_max: u64,
    /// Every operation called so far, by name (`Sign`, `GetPublicKey`, ...;
    /// unknown targets under `Unknown`). Admin routes are not counted.
    pub per_op: BTreeMap<String, OpStats>,
}

/// What `GET`/`POST /__standin/settings` answer; in a POST, an absent field
/// keeps its value and `"sign_quota_per_sec": null` removes the quota.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_delay_ms: Option<u64>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub sign_quota_per_sec: Option<Option<u32>>,
}

/// Tells a field given as `null` (Some(None)) from one left out (None).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u32>>, D::Error> {
    Option::<u32>::deserialize(d).map(Some)
}

/// Holds the in-flight gauge up for one Sign call, whatever way it ends.
pub struct InFlight<'a>(&'a Control);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.sign_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Control {
    /// `ops` are the operation names counted by name; others count as
    /// `Unknown`.
    pub fn new(delay: Duration, quota: Option<u32>, ops: &[&'static str]) -> Self {
        let per_op = ops
            .iter()
            .chain(std::iter::once(&"Unknown"))
            .map(|&name| OpCounters {
                name,
                calls: AtomicU64::new(0),
                errors: AtomicU64::new(0),
            })
            .collect();
        let c = Control {
            delay_nanos: AtomicU64::new(0),
            delay_changed: Notify::new(),
            limit: RwLock::new((None, Limit::None)),
            sign_accepted: AtomicU64::new(0),
            sign_throttled: AtomicU64::new(0),
            sign_errors: AtomicU64::new(0),
            sign_in_flight: AtomicU64::new(0),
            sign_in_flight_max: AtomicU64::new(0),
            per_op,
        };
        c.set_delay(delay);
        c.set_quota(quota);
        c
    }

    pub fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_nanos.load(Ordering::Relaxed))
    }

    pub fn set_delay(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.delay_nanos.store(nanos, Ordering::Relaxed);
        self.delay_changed.notify_waiters();
    }

    /// Waits until `start` plus the delay as it stands: an async sleep, so
    /// the server goes on with other calls meanwhile.
    pub async fn wait_delay(&self, start: Instant) {
        loop {
            let changed = self.delay_changed.notified();
            tokio::pin!(changed);
            // Registered before the delay is read, so no change is missed.
            changed.as_mut().enable();
            let until = start + self.delay();
            if Instant::now() >= until {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until.into()) => return,
                _ = changed => {}
            }
        }
    }

    pub fn quota(&self) -> Option<u32> {
        self.limit.read().unwrap_or_else(|p| p.into_inner()).0
    }

    /// A new quota starts with a full bucket, as a changed KMS quota would.
    pub fn set_quota(&self, quota: Option<u32>) {
        let limit = match quota.map(NonZeroU32::new) {
            None => Limit::None,
            Some(None) => Limit::Zero,
            Some(Some(n)) => Limit::Bucket(Arc::new(RateLimiter::direct(Quota::per_second(n)))),
        };
        *self.limit.write().unwrap_or_else(|p| p.into_inner()) = (quota, limit);
    }

    pub fn settings(&self) -> SettingsUpdate {
        SettingsUpdate {
            sign_delay_ms: Some(u64::try_from(self.delay().as_millis()).unwrap_or(u64::MAX)),
            sign_quota_per_sec: Some(self.quota()),
        }
    }

    pub fn apply(&self, update: &SettingsUpdate) {
        if let Some(ms) = update.sign_delay_ms {
            self.set_delay(Duration::from_millis(ms));
        }
        if let Some(q) = update.sign_quota_per_sec {
            self.set_quota(q);
        }
    }

    /// Takes one Sign call's token; false means throttle it.
    pub fn admit_sign(&self) -> bool {
        let guard = self.limit.read().unwrap_or_else(|p| p.into_inner());
        match &guard.1 {
            Limit::None => true,
            Limit::Zero => false,
            Limit::Bucket(b) => b.check().is_ok(),
        }
    }

    pub fn enter_sign(&self) -> InFlight<'_> {
        let now = self.sign_in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.sign_in_flight_max.fetch_max(now, Ordering::Relaxed);
        InFlight(self)
    }

    pub fn count(&self, op: &str, ok: bool) {
        let Some(c) = self
            .per_op
            .iter()
            .find(|c| c.name == op)
            .or_else(|| self.per_op.last())
        else {
            return;
        };
        c.calls.fetch_add(1, Ordering::Relaxed);
        if !ok {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn count_sign(&self, outcome: SignOutcome) {
        let c = match outcome {
            SignOutcome::Accepted => &self.sign_accepted,
            SignOutcome::Throttled => &self.sign_throttled,
            SignOutcome::Error => &self.sign_errors,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> Stats {
        Stats {
            sign_accepted: self.sign_accepted.load(Ordering::Relaxed),
            sign_throttled: self.sign_throttled.load(Ordering::Relaxed),
            sign_errors: self.sign_errors.load(Ordering::Relaxed),
            sign_in_flight: self.sign_in_flight.load(Ordering::Relaxed),
            sign_in_flight_max: self.sign_in_flight_max.load(Ordering::Relaxed),
            per_op: self
                .per_op
                .iter()
                .filter(|c| c.calls.load(Ordering::Relaxed) > 0)
                .map(|c| {
                    let stats = OpStats {
                        calls: c.calls.load(Ordering::Relaxed),
                        errors: c.errors.load(Ordering::Relaxed),
                    };
                    (c.name.to_string(), stats)
                })
                .collect(),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum SignOutcome {
    Accepted,
    Throttled,
    Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_quota_throttles_everything_and_none_nothing() {
        let c = Control::new(Duration::ZERO, Some(0), &[]);
        assert!(!c.admit_sign());
        c.set_quota(None);
        assert!((0..1000).all(|_| c.admit_sign()));
    }

    #[test]
    fn quota_admits_one_seconds_burst_then_throttles() {
        let c = Control::new(Duration::ZERO, Some(5), &[]);
        let admitted = (0..20).filter(|_| c.admit_sign()).count();
        // The burst is 5; a token may refill during the loop on a slow machine.
        assert!((5..=6).contains(&admitted), "admitted {admitted}");
    }

    #[test]
    fn settings_update_tells_null_from_absent() {
        let u: SettingsUpdate = serde_json::from_str(r#"{"sign_quota_per_sec": null}"#).unwrap();
        assert_eq!(u.sign_quota_per_sec, Some(None));
        let u: SettingsUpdate = serde_json::from_str(r#"{"sign_delay_ms": 20}"#).unwrap();
        assert_eq!(u.sign_quota_per_sec, None);
        assert!(serde_json::from_str::<SettingsUpdate>(r#"{"delay": 1}"#).is_err());
    }
}
