//! The open loop's schedule, kept by a thread of its own.
//!
//! tokio's timer has a resolution of one millisecond, so request `i` due at
//! `start + i / rate` and slept for with `sleep_until` went out with every
//! other request due in the same millisecond: at 9,000 requests a second,
//! bursts of nine. A proxy then queues each burst behind its own work, and
//! the figure measured is burst queueing, which grows with CPU per request,
//! rather than the latency of a request arriving on its own. (It showed in
//! the batch signer: batches of five at 9,000/s, where requests 111 µs
//! apart make batches of one or two.) A plain thread sleeping with the
//! kernel's high-resolution timer, its timer slack set to the minimum,
//! releases each request at its time instead, within the scheduler's
//! wake-up latency.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Mutex};

/// Requests released by the pacer, each as the moment it was released.
/// Any free connection takes the next one; the stream ends after the last.
#[derive(Clone)]
pub struct Released(Arc<Mutex<mpsc::UnboundedReceiver<Instant>>>);

impl Released {
    /// The next request's release time, or `None` when the schedule is
    /// over; `waiting_since` is when the caller became free to send it.
    ///
    /// Latency runs from the release when the request waited for a
    /// connection (all were busy when it was released: that wait is the
    /// system's queueing, so it is counted, and a slow path is not hidden
    /// by fewer requests being sent), and from now when a connection was
    /// already free and waiting for it (the hand-over from the pacer thread
    /// is the load generator's own delay, not the path's).
    pub async fn next(&self) -> Option<Instant> {
        let waiting_since = Instant::now();
        let released = self.0.lock().await.recv().await?;
        Some(if released >= waiting_since {
            Instant::now()
        } else {
            released
        })
    }
}

/// Starts releasing `total` requests, one every `1 / rate` seconds from
/// now, on a thread of its own.
pub fn start(total: usize, rate: f64) -> std::io::Result<Released> {
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let (release, released) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("open-loop-pacer".into())
        .spawn(move || {
            // The default slack (50 µs) would let the kernel bunch wake-ups
            // again; a failure leaves it and is only less precise.
            let _ = rustix::thread::set_current_timer_slack(NonZeroU64::new(1));
            let start = Instant::now();
            for i in 0..total {
                let due = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
                let now = Instant::now();
                if now < due {
                    std::thread::sleep(due - now);
                }
                if release.send(Instant::now()).is_err() {
                    return; // the connections are gone
                }
            }
        })?;
    Ok(Released(Arc::new(Mutex::new(released))))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::start;

    #[tokio::test]
    async fn every_request_is_released_once_and_none_before_its_time() {
        let begun = Instant::now();
        let released = start(20, 2_000.0).unwrap();
        let mut times = Vec::new();
        while let Some(from) = released.next().await {
            times.push(from);
        }
        assert_eq!(times.len(), 20);
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        // Request 19 is due 19 / 2,000 s after the start; sleeps end late,
        // never early.
        assert!(times[19] - begun >= Duration::from_micros(9_500));
    }

    #[tokio::test]
    async fn a_request_that_waited_for_a_connection_counts_from_its_release() {
        let released = start(1, 1_000_000.0).unwrap();
        // Every connection busy while the request is released.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let from = released.next().await.unwrap();
        assert!(
            from.elapsed() >= Duration::from_millis(20),
            "the wait for a connection was left out of the latency"
        );
        assert!(released.next().await.is_none());
    }
}
