//! The guest's idle loop polls before it halts, for the run.
//!
//! On a VM whose kernel idles through the `haltpoll` cpuidle driver with its
//! poll window at 0 (the Firecracker guest this bench was built on boots
//! with `haltpoll.guest_halt_poll_ns=0`), an idle vCPU halts at once, and
//! waking it again is an exit to the hypervisor and an interrupt back. An
//! open-loop request through a proxy on its own core crosses cores four
//! times, where the direct path crosses none, so at every proxy's median
//! 100-130 µs of the "added" latency was the VM waking halted vCPUs, about
//! the same for nginx, HAProxy and Kakunin
//! (bench/README.md, "Halted vCPUs in the open loop"). KVM hosts poll for
//! 200 µs before they let a halted vCPU's thread sleep (`halt_poll_ns`),
//! which hides most of this on a typical cloud VM; the guest's own poll
//! window does the same here. Idle polling is spent in the idle task, not
//! in any path's process, so the CPU per request measured from /proc is not
//! charged with it. Writing the window needs root; without it the run goes
//! on with a warning.

use std::path::{Path, PathBuf};

/// The guest's poll window, in ns.
const PARAMETER: &str = "/sys/module/haltpoll/parameters/guest_halt_poll_ns";

/// The window set for the run: KVM's default host-side `halt_poll_ns`.
const WINDOW_NS: u64 = 200_000;

/// A raised poll window, put back as it was when dropped.
pub struct HaltPoll {
    parameter: PathBuf,
    before: String,
    pub window_ns: u64,
}

impl HaltPoll {
    /// Raises the guest's poll window to [`WINDOW_NS`] if it is below it.
    /// None where the guest has no `haltpoll` driver (bare metal, or
    /// another idle driver), where the window is already as wide, or where
    /// it cannot be written.
    pub fn raise() -> Option<HaltPoll> {
        let raised = Self::raise_at(Path::new(PARAMETER), WINDOW_NS);
        match &raised {
            Ok(Some(poll)) => println!(
                "all: the guest's idle loop polls {} µs before halting, for the run (was {} ns)",
                poll.window_ns / 1000,
                poll.before.trim()
            ),
            Ok(None) => {}
            Err(err) => eprintln!(
                "all: warning: could not widen the guest's halt-poll window ({err}); halted vCPUs' wake-ups will show in the open-loop latencies"
            ),
        }
        raised.ok().flatten()
    }

    fn raise_at(parameter: &Path, window_ns: u64) -> std::io::Result<Option<HaltPoll>> {
        let before = match std::fs::read_to_string(parameter) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err),
        };
        let current: u64 = before.trim().parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} holds {:?}, not a number",
                    parameter.display(),
                    before.trim()
                ),
            )
        })?;
        if current >= window_ns {
            return Ok(None);
        }
        std::fs::write(parameter, window_ns.to_string())?;
        Ok(Some(HaltPoll {
            parameter: parameter.to_path_buf(),
            before,
            window_ns,
        }))
    }
}

impl Drop for HaltPoll {
    fn drop(&mut self) {
        if let Err(err) = std::fs::write(&self.parameter, self.before.trim()) {
            eprintln!(
                "all: warning: could not put the halt-poll window back to {} ns: {err}",
                self.before.trim()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HaltPoll;

    #[test]
    fn a_narrower_window_is_widened_for_the_run_and_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let parameter = dir.path().join("guest_halt_poll_ns");
        std::fs::write(&parameter, "0\n").unwrap();
        let poll = HaltPoll::raise_at(&parameter, 200_000).unwrap().unwrap();
        assert_eq!(std::fs::read_to_string(&parameter).unwrap(), "200000");
        drop(poll);
        assert_eq!(std::fs::read_to_string(&parameter).unwrap(), "0");
    }

    #[test]
    fn a_wide_enough_window_or_no_haltpoll_driver_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let parameter = dir.path().join("guest_halt_poll_ns");
        std::fs::write(&parameter, "400000\n").unwrap();
        assert!(HaltPoll::raise_at(&parameter, 200_000).unwrap().is_none());
        assert_eq!(std::fs::read_to_string(&parameter).unwrap(), "400000\n");
        let absent = dir.path().join("absent");
        assert!(HaltPoll::raise_at(&absent, 200_000).unwrap().is_none());
        assert!(!absent.exists());
    }

    #[test]
    fn a_window_that_is_not_a_number_is_an_error_and_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let parameter = dir.path().join("guest_halt_poll_ns");
        std::fs::write(&parameter, "lots").unwrap();
        assert!(HaltPoll::raise_at(&parameter, 200_000).is_err());
        assert_eq!(std::fs::read_to_string(&parameter).unwrap(), "lots");
    }
}
