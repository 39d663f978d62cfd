//! Request nonces: 128 random bits each, base64url, unique per request so
//! that a receiver can refuse a second arrival.
//!
//! The bits come from the operating system's CSPRNG, fetched 256 nonces at a
//! time into a per-thread buffer: one `getrandom` call per request was a
//! measurable share of signing one (bench/README.md, "all"). Holding the
//! next nonces in memory gives nothing away: a nonce is public the moment
//! its request leaves, and each buffered one is used once and then erased.
//! The buffer is per thread, so no two requests can draw the same bytes, and
//! a process that forked would start from a copy; Kakunin does not fork.

use std::cell::RefCell;

use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};

use super::error::{malformed, HttpSigError};

const NONCE_BYTES: usize = 16;
/// Nonces fetched per `getrandom` call.
const BATCH: usize = 256;

struct Pool {
    bytes: [u8; NONCE_BYTES * BATCH],
    /// Where the next unused nonce starts; `bytes.len()` when empty.
    next: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool {
            bytes: [0; NONCE_BYTES * BATCH],
            next: NONCE_BYTES * BATCH,
        })
    };
}

/// A fresh nonce for one request signature.
pub fn new_nonce() -> Result<String, HttpSigError> {
    let bytes = POOL.with(|pool| pool.borrow_mut().take())?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

impl Pool {
    fn take(&mut self) -> Result<[u8; NONCE_BYTES], HttpSigError> {
        if self.next == self.bytes.len() {
            SystemRandom::new()
                .fill(&mut self.bytes)
                .map_err(|_| malformed("nonce", "the system random source failed"))?;
            self.next = 0;
        }
        let slot = &mut self.bytes[self.next..self.next + NONCE_BYTES];
        let mut nonce = [0u8; NONCE_BYTES];
        nonce.copy_from_slice(slot);
        // Used once: erased so that nothing in memory says what was sent.
        slot.fill(0);
        self.next += NONCE_BYTES;
        Ok(nonce)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn nonces_are_128_bits_and_never_repeat_across_refills() {
        // Several buffers' worth, so the refill path is crossed.
        let nonces: Vec<String> = (0..BATCH * 4 + 3).map(|_| new_nonce().unwrap()).collect();
        let decoded = |n: &String| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(n)
                .unwrap()
        };
        assert!(nonces.iter().all(|n| decoded(n).len() == NONCE_BYTES));
        let distinct: HashSet<&String> = nonces.iter().collect();
        assert_eq!(distinct.len(), nonces.len());
    }

    #[test]
    fn threads_draw_different_nonces() {
        let draw =
            || std::thread::spawn(|| (0..BATCH).map(|_| new_nonce().unwrap()).collect::<Vec<_>>());
        let (a, b) = (draw(), draw());
        let mut all: HashSet<String> = a.join().unwrap().into_iter().collect();
        for nonce in b.join().unwrap() {
            assert!(all.insert(nonce), "two threads drew the same nonce");
        }
    }
}
