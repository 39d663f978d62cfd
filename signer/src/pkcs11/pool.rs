//! A fixed number of PKCS#11 sessions shared by the signing threads.
//!
//! A PKCS#11 session runs one operation at a time, so each signature borrows
//! one. Generic over the item so the waiting and replacement rules are
//! tested without a token.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

pub(crate) struct Pool<T> {
    state: Mutex<State<T>>,
    changed: Condvar,
}

struct State<T> {
    idle: Vec<T>,
    /// Places whose item was discarded (or never opened): the next borrower
    /// that finds nothing idle opens a new one there.
    missing: usize,
}

/// Why no item could be borrowed.
#[derive(Debug)]
pub(crate) enum Unavailable<E> {
    /// Every item stayed busy until the deadline.
    TimedOut,
    /// A replacement was needed and could not be opened.
    Open(E),
}

impl<T> Pool<T> {
    /// A pool of `size` places, `items` of them already filled.
    pub(crate) fn new(items: Vec<T>, size: usize) -> Self {
        let missing = size.saturating_sub(items.len());
        Pool {
            state: Mutex::new(State {
                idle: items,
                missing,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding the lock leaves the counts consistent (no
        // code between a change and its unlock can panic), so go on.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Borrows an idle item, or opens one in an empty place (outside the
    /// lock: opening talks to the device), or waits until `deadline`.
    pub(crate) fn borrow<E>(
        &self,
        deadline: Instant,
        open: impl FnOnce() -> Result<T, E>,
    ) -> Result<Borrowed<'_, T>, Unavailable<E>> {
        let mut state = self.lock();
        loop {
            if let Some(item) = state.idle.pop() {
                return Ok(Borrowed {
                    pool: self,
                    item: Some(item),
                });
            }
            if state.missing > 0 {
                state.missing -= 1;
                drop(state);
                return match open() {
                    Ok(item) => Ok(Borrowed {
                        pool: self,
                        item: Some(item),
                    }),
                    Err(err) => {
                        self.lock().missing += 1;
                        self.changed.notify_one();
                        Err(Unavailable::Open(err))
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Unavailable::TimedOut);
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let state = self.lock();
        (state.idle.len(), state.missing)
    }
}

/// One borrowed item; it goes back to the pool when dropped, unless
/// discarded.
pub(crate) struct Borrowed<'a, T> {
    pool: &'a Pool<T>,
    item: Option<T>,
}

impl<T> Borrowed<'_, T> {
    pub(crate) fn get(&self) -> Option<&T> {
        self.item.as_ref()
    }

    /// The item is broken: put a new one in its place and keep the borrow,
    /// so a retry runs on a fresh item rather than on another idle one
    /// that may be broken the same way. If none can be opened, the place
    /// is left empty for a later borrower.
    pub(crate) fn refill<E>(&mut self, open: impl FnOnce() -> Result<T, E>) -> Result<(), E> {
        // The broken one goes first (a session closed before its
        // replacement opens cannot disturb it).
        drop(self.item.take());
        match open() {
            Ok(item) => {
                self.item = Some(item);
                Ok(())
            }
            Err(err) => {
                self.pool.lock().missing += 1;
                self.pool.changed.notify_one();
                Err(err)
            }
        }
    }

    /// The item is broken: drop it (closing a session) and leave its place
    /// empty for the next borrower to refill.
    pub(crate) fn discard(mut self) {
        let item = self.item.take();
        drop(item);
        self.pool.lock().missing += 1;
        self.pool.changed.notify_one();
    }
}

impl<T> Drop for Borrowed<'_, T> {
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            self.pool.lock().idle.push(item);
            self.pool.changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    fn never() -> Result<u32, &'static str> {
        Err("must not open")
    }

    #[test]
    fn borrows_idle_items_and_returns_them() {
        let pool = Pool::new(vec![1u32, 2], 2);
        let a = pool.borrow(soon(0), never).unwrap();
        let b = pool.borrow(soon(0), never).unwrap();
        assert_eq!(pool.counts(), (0, 0));
        assert!(matches!(
            pool.borrow(soon(20), never),
            Err(Unavailable::TimedOut)
        ));
        drop(a);
        assert!(pool.borrow(soon(0), never).is_ok());
        drop(b);
        assert_eq!(pool.counts(), (2, 0));
    }

    #[test]
    fn a_discarded_item_is_replaced_by_the_next_borrower() {
        let pool = Pool::new(vec![1u32], 1);
        pool.borrow(soon(0), never).unwrap().discard();
        assert_eq!(pool.counts(), (0, 1));
        let fresh = pool.borrow(soon(0), || Ok::<_, &str>(7)).unwrap();
        assert_eq!(fresh.get(), Some(&7));
        drop(fresh);
        assert_eq!(pool.counts(), (1, 0));
    }

    #[test]
    fn refill_swaps_in_a_fresh_item_under_the_same_borrow() {
        let pool = Pool::new(vec![1u32, 2], 2);
        let mut held = pool.borrow(soon(0), never).unwrap();
        held.refill(|| Ok::<_, &str>(5)).unwrap();
        assert_eq!(held.get(), Some(&5));
        drop(held);
        assert_eq!(pool.counts(), (2, 0));
        let mut held = pool.borrow(soon(0), never).unwrap();
        assert_eq!(held.refill(|| Err("gone")), Err("gone"));
        drop(held);
        assert_eq!(pool.counts(), (1, 1));
    }

    #[test]
    fn a_failed_replacement_leaves_the_place_empty_for_a_later_try() {
        let pool: Pool<u32> = Pool::new(vec![], 1);
        assert!(matches!(
            pool.borrow(soon(0), || Err("device gone")),
            Err(Unavailable::Open("device gone"))
        ));
        assert_eq!(pool.counts(), (0, 1));
        assert!(pool.borrow(soon(0), || Ok::<_, &str>(3)).is_ok());
    }

    #[test]
    fn a_waiter_wakes_when_an_item_comes_back() {
        let pool = Arc::new(Pool::new(vec![1u32], 1));
        let held = pool.borrow(soon(0), never).unwrap();
        let waiter = {
            let pool = pool.clone();
            std::thread::spawn(move || pool.borrow(soon(10_000), never).map(|b| b.get().copied()))
        };
        std::thread::sleep(Duration::from_millis(30));
        drop(held);
        assert_eq!(waiter.join().unwrap().unwrap(), Some(1));
    }

    #[test]
    fn a_waiter_wakes_to_refill_a_discarded_place() {
        let pool = Arc::new(Pool::new(vec![1u32], 1));
        let held = pool.borrow(soon(0), never).unwrap();
        let waiter = {
            let pool = pool.clone();
            std::thread::spawn(move || {
                pool.borrow(soon(10_000), || Ok::<_, &str>(9))
                    .map(|b| b.get().copied())
            })
        };
        std::thread::sleep(Duration::from_millis(30));
        held.discard();
        assert_eq!(waiter.join().unwrap().unwrap(), Some(9));
    }

    #[test]
    fn many_threads_never_hold_more_than_the_pool_size() {
        let pool = Arc::new(Pool::new(vec![], 3));
        let opened = Arc::new(AtomicUsize::new(0));
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (pool, opened, inside, most) =
                    (pool.clone(), opened.clone(), inside.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let item = pool
                            .borrow(soon(10_000), || {
                                Ok::<_, &str>(opened.fetch_add(1, Ordering::SeqCst))
                            })
                            .unwrap();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                        drop(item);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(opened.load(Ordering::SeqCst), 3);
        assert!(most.load(Ordering::SeqCst) <= 3);
        assert_eq!(pool.counts(), (3, 0));
    }
}
