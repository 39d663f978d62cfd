//! The proxy's core kept for the proxy: movable kernel threads known to
//! take it for milliseconds at a time are moved to the bench's core for the
//! run, and put back after.
//!
//! On the VM this bench was built on, DAMON runs a `pageout` scheme
//! (`kdamond.0`, allowed on every CPU) that works about 2 ms each time it
//! wakes. Landing on the proxy's core, it holds the proxy's one thread off
//! for that long, and every request that arrives meanwhile waits: the open
//! loop's p99 then measured kdamond, for whichever proxy ran (bench/README.md,
//! "kdamond on the proxy's core"). Steal is the hypervisor's version of the
//! same and is handled by repeating the run (`measure::open_quiet`); this
//! one the bench can prevent. Moving a kernel thread needs root; without it
//! the run goes on with a warning.

use std::path::Path;

use rustix::process::Pid;
use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};

/// Kernel threads moved, by name prefix (why: the module's comment).
const MOVED: &[&str] = &["kdamond"];

/// Threads moved off the proxy's core, each with the CPU set it had.
pub struct QuietCore {
    moved: Vec<(Pid, String, CpuSet)>,
}

impl QuietCore {
    /// Moves every kernel thread named in `MOVED` that may run on
    /// `proxy_core` to `bench_core` alone.
    pub fn keep(proxy_core: usize, bench_core: usize) -> QuietCore {
        let mut moved = Vec::new();
        let mut only_bench = CpuSet::new();
        only_bench.set(bench_core);
        for (pid, name) in kernel_threads(Path::new("/proc")) {
            if !MOVED.iter().any(|prefix| name.starts_with(prefix)) {
                continue;
            }
            let Ok(before) = sched_getaffinity(Some(pid)) else {
                continue;
            };
            if !before.is_set(proxy_core) {
                continue;
            }
            match sched_setaffinity(Some(pid), &only_bench) {
                Ok(()) => {
                    println!(
                        "all: kernel thread {name} (pid {}) kept off the proxies' core {proxy_core} for the run",
                        pid.as_raw_nonzero()
                    );
                    moved.push((pid, name, before));
                }
                Err(err) => eprintln!(
                    "all: warning: kernel thread {name} may run on the proxies' core ({err}); its work will show in the tails"
                ),
            }
        }
        QuietCore { moved }
    }

    /// The names of the threads moved, for the results.
    pub fn names(&self) -> Vec<String> {
        self.moved.iter().map(|(_, name, _)| name.clone()).collect()
    }
}

impl Drop for QuietCore {
    fn drop(&mut self) {
        for (pid, name, before) in &self.moved {
            if let Err(err) = sched_setaffinity(Some(*pid), before) {
                eprintln!("all: warning: could not give {name} its CPUs back: {err}");
            }
        }
    }
}

/// Kernel threads (children of kthreadd, pid 2) with their names.
fn kernel_threads(proc: &Path) -> Vec<(Pid, String)> {
    let Ok(entries) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let raw: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // "pid (comm) state ppid ...": comm may hold spaces and
            // parentheses, so the fields after it are found from the last ')'.
            let (head, rest) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1.to_string();
            let ppid: i32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == 2).then_some((Pid::from_raw(raw)?, name))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::kernel_threads;

    #[test]
    fn kernel_threads_are_the_children_of_kthreadd_whatever_their_names() {
        let proc = tempfile::tempdir().unwrap();
        for (pid, stat) in [
            ("2", "2 (kthreadd) S 0 0 0 0 -1"),
            ("77", "77 (kdamond.0) S 2 0 0 0 -1"),
            ("90", "90 (odd (name) )) S 2 0 0 0 -1"),
            ("4000", "4000 (kdamond-ish) S 1 4000 4000 0 -1"),
            ("4001", "4001 (truncated"),
        ] {
            std::fs::create_dir(proc.path().join(pid)).unwrap();
            std::fs::write(proc.path().join(pid).join("stat"), stat).unwrap();
        }
        std::fs::create_dir(proc.path().join("self")).unwrap();
        let mut found: Vec<(i32, String)> = kernel_threads(proc.path())
            .into_iter()
            .map(|(pid, name)| (pid.as_raw_nonzero().get(), name))
            .collect();
        found.sort();
        assert_eq!(
            found,
            [
                (77, "kdamond.0".to_string()),
                (90, "odd (name) )".to_string())
            ]
        );
    }
}
