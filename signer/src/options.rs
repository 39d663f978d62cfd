use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::backend::KeyError;

/// How a remote key is asked to sign. File keys ignore all of it.
#[derive(Debug, Clone)]
pub struct KeyOptions {
    /// Longest one signature may take, waiting and retries included; past
    /// it the signature fails (the proxy answers 503, nothing is forwarded).
    pub deadline: Duration,
    /// Attempts per signature when the service throttles or times out, the
    /// first included.
    pub max_attempts: u32,
    /// Signatures allowed to wait at once; more fail at once as busy, so a
    /// slow service cannot pile up unbounded waiting connections.
    pub max_pending: usize,
    /// KMS endpoint override (a VPC endpoint, or a test server). Without it
    /// the AWS SDK's own chain decides (`AWS_ENDPOINT_URL_KMS`, ...).
    pub kms_endpoint: Option<String>,
    /// PKCS#11 sessions opened on the token, which is how many signatures
    /// run on it in parallel.
    pub pkcs11_sessions: usize,
}

pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(3);
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub const DEFAULT_MAX_PENDING: usize = 256;
pub const DEFAULT_PKCS11_SESSIONS: usize = 4;

impl Default for KeyOptions {
    fn default() -> Self {
        KeyOptions {
            deadline: DEFAULT_DEADLINE,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_pending: DEFAULT_MAX_PENDING,
            kms_endpoint: None,
            pkcs11_sessions: DEFAULT_PKCS11_SESSIONS,
        }
    }
}

/// Counts the signatures waiting on one remote key and turns away the one
/// past the limit.
#[derive(Debug)]
#[cfg_attr(not(any(feature = "aws-kms", feature = "pkcs11")), allow(dead_code))]
pub(crate) struct Admission {
    // Shared with every `Admitted`, which may outlive the borrow that made
    // it (it travels inside a pending KMS signature).
    waiting: Arc<AtomicUsize>,
    limit: usize,
}

#[cfg_attr(not(any(feature = "aws-kms", feature = "pkcs11")), allow(dead_code))]
impl Admission {
    pub(crate) fn new(limit: usize) -> Self {
        Admission {
            waiting: Arc::new(AtomicUsize::new(0)),
            limit: limit.max(1),
        }
    }

    pub(crate) fn enter(&self, key: &str) -> Result<Admitted, KeyError> {
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        if before >= self.limit {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(KeyError::Busy {
                key: key.to_string(),
                waiting: before,
                limit: self.limit,
            });
        }
        Ok(Admitted(self.waiting.clone()))
    }
}

/// One admitted signature; leaving (however it ends) frees its place.
pub(crate) struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_turns_away_past_the_limit_and_frees_on_drop() {
        let gate = Admission::new(2);
        let a = gate.enter("k").unwrap();
        let _b = gate.enter("k").unwrap();
        let err = gate.enter("k").err().unwrap();
        assert_eq!(err.kind(), "busy");
        drop(a);
        assert!(gate.enter("k").is_ok());
    }
}
