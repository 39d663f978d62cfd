//! Nonces seen within the freshness window. Bounded: a nonce is kept only
//! until its request could no longer be accepted anyway (too old or
//! expired), and past the capacity new requests are refused, never let
//! through unchecked.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

pub(crate) struct ReplayCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

struct Inner {
    /// key → Unix second after which the key may be forgotten.
    seen: HashMap<String, i64>,
    /// Insertion order, for forgetting without scanning the map.
    order: VecDeque<(i64, String)>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReplayError {
    Replayed,
    Full,
}

impl ReplayCache {
    pub fn new(capacity: usize) -> ReplayCache {
        ReplayCache {
            inner: Mutex::new(Inner {
                seen: HashMap::new(),
                order: VecDeque::new(),
            }),
            capacity,
        }
    }

    fn key(serial: &str, nonce: &str) -> String {
        // Serials are hex, so the first ':' separates them unambiguously.
        format!("{serial}:{nonce}")
    }

    /// Records an accepted nonce, remembered until `keep_until`.
    pub fn insert(
        &self,
        serial: &str,
        nonce: &str,
        keep_until: i64,
        now: i64,
    ) -> Result<(), ReplayError> {
        let mut inner = self.inner.lock().map_err(|_| ReplayError::Full)?;
        while let Some((until, _)) = inner.order.front() {
            if *until >= now {
                break;
            }
            if let Some((until, key)) = inner.order.pop_front() {
                if inner.seen.get(&key) == Some(&until) {
                    inner.seen.remove(&key);
                }
            }
        }
        let key = Self::key(serial, nonce);
        if inner.seen.get(&key).is_some_and(|until| *until >= now) {
            return Err(ReplayError::Replayed);
        }
        if inner.seen.len() >= self.capacity {
            // Keys expire out of insertion order when lifetimes differ; one
            // full sweep before refusing.
            inner.seen.retain(|_, until| *until >= now);
            let seen = &inner.seen;
            let kept: VecDeque<(i64, String)> = inner
                .order
                .iter()
                .filter(|(until, key)| seen.get(key) == Some(until))
                .cloned()
                .collect();
            inner.order = kept;
            if inner.seen.len() >= self.capacity {
                return Err(ReplayError::Full);
            }
        }
        inner.seen.insert(key.clone(), keep_until);
        inner.order.push_back((keep_until, key));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_second_arrival_until_the_window_ends() {
        let cache = ReplayCache::new(10);
        cache.insert("0a", "n1", 100, 50).unwrap();
        assert_eq!(
            cache.insert("0a", "n1", 100, 60),
            Err(ReplayError::Replayed)
        );
        // Nonces are per certificate.
        cache.insert("0b", "n1", 100, 60).unwrap();
        // After its window the nonce could not be accepted anyway.
        cache.insert("0a", "n1", 200, 101).unwrap();
    }

    #[test]
    fn is_bounded_and_refuses_when_full() {
        let cache = ReplayCache::new(3);
        for n in ["a", "b", "c"] {
            cache.insert("01", n, 100, 0).unwrap();
        }
        assert_eq!(cache.insert("01", "d", 100, 0), Err(ReplayError::Full));
        // Once the window has passed, room comes back.
        cache.insert("01", "d", 300, 101).unwrap();
        let inner = cache.inner.lock().unwrap();
        assert_eq!(inner.seen.len(), 1);
        assert_eq!(inner.order.len(), 1);
    }
}
