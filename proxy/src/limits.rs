//! Rate limits (GCRA, via governor) and the in-flight cap on actions.

use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use kakunin_policy::{Policy, RateLimit};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::errors::ProxyError;

struct Limiter {
    text: String,
    scope: String,
    limiter: DefaultDirectRateLimiter,
}

impl Limiter {
    fn new(limit: &RateLimit, scope: String) -> Option<Limiter> {
        // "N per period" as GCRA: one cell every period/N, bursts up to N.
        let per_cell = limit.period / limit.count.get();
        let quota =
            Quota::with_period(per_cell.max(Duration::from_nanos(1)))?.allow_burst(limit.count);
        Some(Limiter {
            text: limit.text.clone(),
            scope,
            limiter: DefaultDirectRateLimiter::direct(quota),
        })
    }

    fn check(&self) -> Result<(), ProxyError> {
        self.limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ProxyError::too_many(
                "rate_limited",
                format!(
                    "{} rate limit {:?} reached; retry later",
                    self.scope, self.text
                ),
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            )
        })
    }
}

/// The policy's limits, built once per policy.
pub struct Limits {
    global: Option<Limiter>,
    per_action: Vec<Option<Limiter>>,
    in_flight: Option<(Arc<Semaphore>, u32)>,
}

impl Limits {
    pub fn new(policy: &Policy) -> Limits {
        Limits {
            global: policy
                .rate_limit()
                .and_then(|l| Limiter::new(&l, "execution_constraints".into())),
            per_action: policy
                .actions()
                .iter()
                .map(|a| {
                    a.rate_limit
                        .as_ref()
                        .and_then(|l| Limiter::new(l, a.name.clone()))
                })
                .collect(),
            in_flight: policy
                .max_concurrent_actions()
                .map(|n| (Arc::new(Semaphore::new(n as usize)), n)),
        }
    }

    /// Counts one action against its rule's limit and the global one. The
    /// narrower limit is checked first so that a refused action does not use
    /// up the global budget.
    pub fn check_rate(&self, action: Option<usize>) -> Result<(), ProxyError> {
        if let Some(limiter) = action
            .and_then(|i| self.per_action.get(i))
            .and_then(Option::as_ref)
        {
            limiter.check()?;
        }
        if let Some(limiter) = &self.global {
            limiter.check()?;
        }
        Ok(())
    }

    /// Takes an in-flight slot, held until the upstream's response has been
    /// passed on in full.
    pub fn acquire_slot(&self) -> Result<Option<OwnedSemaphorePermit>, ProxyError> {
        let Some((semaphore, max)) = &self.in_flight else {
            return Ok(None);
        };
        semaphore
            .clone()
            .try_acquire_owned()
            .map(Some)
            .map_err(|_| {
                ProxyError::too_many(
                    "concurrency_limited",
                    format!("max_concurrent_trades = {max} actions already in flight"),
                    1,
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(extra: &str) -> Policy {
        let text = format!(
            r#"{{"agent_id": "a", "execution_constraints": {{ {extra} }},
               "network_rules": {{"allowed_hosts": ["x.example"]}}}}"#
        );
        Policy::from_json_str("t.json", &text).unwrap()
    }

    #[test]
    fn rate_limit_refuses_past_the_burst_with_retry_after() {
        let limits = Limits::new(&policy(r#""rate_limit": "3 trades/hour""#));
        for _ in 0..3 {
            limits.check_rate(None).unwrap();
        }
        let err = limits.check_rate(None).unwrap_err();
        assert_eq!(err.code, "rate_limited");
        // One cell comes back every 20 minutes.
        let retry = err.retry_after.unwrap();
        assert!((1..=1200).contains(&retry), "{retry}");
    }

    #[test]
    fn in_flight_cap_releases_on_drop() {
        let limits = Limits::new(&policy(r#""max_concurrent_trades": 1"#));
        let slot = limits.acquire_slot().unwrap();
        assert!(slot.is_some());
        assert_eq!(
            limits.acquire_slot().unwrap_err().code,
            "concurrency_limited"
        );
        drop(slot);
        assert!(limits.acquire_slot().unwrap().is_some());
    }
}
