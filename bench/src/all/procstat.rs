//! What /proc says about a proxy: CPU time and resident memory of its
//! process and every descendant (nginx does its work in a worker process
//! that its master forked), so each proxy is measured whole and alone.

use std::collections::BTreeMap;

/// A process and its descendants, found by walking /proc's parent links.
pub fn tree(root: u32) -> Vec<u32> {
    let mut parents: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = stat_fields(pid).and_then(|f| f.get(1)?.parse::<u32>().ok()) {
                parents.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while let Some(&pid) = out.get(i) {
        if let Some(children) = parents.get(&pid) {
            out.extend(children);
        }
        i += 1;
    }
    out
}

/// The fields of /proc/PID/stat after the command name (which may hold
/// spaces and parentheses, so it is cut at the last `)`): index 0 is the
/// state (field 3 in proc(5)), 1 the parent, 11 utime, 12 stime, 19
/// starttime.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// When `pid` started (clock ticks after boot): with the pid, it names one
/// process even if the pid is reused later.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// CPU seconds a set of processes has used, split as /proc/PID/stat does.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTime {
    /// utime: in the process's own code and its libraries.
    pub user: f64,
    /// stime: in the kernel on its behalf (syscalls: here mostly loopback TCP).
    pub system: f64,
}

impl CpuTime {
    pub fn total(self) -> f64 {
        self.user + self.system
    }
}

impl std::ops::Add for CpuTime {
    type Output = CpuTime;
    fn add(self, other: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user + other.user,
            system: self.system + other.system,
        }
    }
}

impl std::ops::Sub for CpuTime {
    type Output = CpuTime;
    fn sub(self, before: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user - before.user,
            system: self.system - before.system,
        }
    }
}

/// User and system CPU seconds of `pids` so far (all their threads: the
/// process-wide figures of /proc/PID/stat).
pub fn cpu_times(pids: &[u32]) -> CpuTime {
    let ticks = rustix::param::clock_ticks_per_second().max(1) as f64;
    pids.iter()
        .filter_map(|&pid| {
            let fields = stat_fields(pid)?;
            let utime = fields.get(11)?.parse::<u64>().ok()?;
            let stime = fields.get(12)?.parse::<u64>().ok()?;
            Some(CpuTime {
                user: utime as f64 / ticks,
                system: stime as f64 / ticks,
            })
        })
        .fold(CpuTime::default(), |sum, t| sum + t)
}

/// User + system CPU seconds of `pids` so far.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    cpu_times(pids).total()
}

/// This process's CPU seconds (the load generator and the upstream).
pub fn own_cpu_seconds() -> f64 {
    cpu_seconds(&[std::process::id()])
}

/// A `/proc/PID/status` value in kB (`VmRSS`, `Threads`), summed over
/// `pids`.
pub fn status_sum(pids: &[u32], key: &str) -> u64 {
    pids.iter()
        .filter_map(|&pid| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            text.lines().find_map(|line| {
                let value = line.strip_prefix(key)?.strip_prefix(':')?;
                value.split_whitespace().next()?.parse::<u64>().ok()
            })
        })
        .sum()
}

/// Resident memory of the tree under `root`, in MiB.
pub fn rss_mib(root: u32) -> f64 {
    status_sum(&tree(root), "VmRSS") as f64 / 1024.0
}

/// Threads in the tree under `root`, and how many processes it has.
pub fn threads_and_processes(root: u32) -> (u64, usize) {
    let pids = tree(root);
    (status_sum(&pids, "Threads"), pids.len())
}

/// CPU seconds the whole machine has been busy (user, nice, system, irq,
/// softirq) and stolen by the hypervisor, from /proc/stat.
pub fn machine_cpu_seconds() -> (f64, f64) {
    let ticks = rustix::param::clock_ticks_per_second().max(1) as f64;
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let busy = at(0) + at(1) + at(2) + at(5) + at(6);
    (busy as f64 / ticks, at(7) as f64 / ticks)
}

/// Steal time of each CPU so far, in seconds, by CPU number: time the
/// hypervisor ran something else while this VM's vCPU had work. A proxy
/// whose vCPU is descheduled for 20 ms answers 20 ms late, whatever its
/// code does, so latency tails are read beside it.
pub fn steal_seconds_by_cpu() -> Vec<f64> {
    let ticks = rustix::param::clock_ticks_per_second().max(1) as f64;
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut by_cpu = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(cpu) = fields
            .next()
            .and_then(|name| name.strip_prefix("cpu"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        // user nice system idle iowait irq softirq steal
        let steal = fields
            .nth(7)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if by_cpu.len() <= cpu {
            by_cpu.resize(cpu + 1, 0.0);
        }
        by_cpu[cpu] = steal as f64 / ticks;
    }
    by_cpu
}

/// This process's CPU seconds with those of its reaped children (the
/// proxies, once stopped, and through nginx's master its worker).
pub fn own_and_children_cpu_seconds() -> f64 {
    let ticks = rustix::param::clock_ticks_per_second().max(1) as f64;
    stat_fields(std::process::id()).map_or(0.0, |f| {
        (11..=14)
            .filter_map(|i| f.get(i)?.parse::<i64>().ok())
            .sum::<i64>()
            .max(0) as f64
            / ticks
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// The split is what /proc says: arithmetic counts as user time,
    /// syscalls as system time. Each phase runs until it has been charged
    /// 0.2 s of CPU (20 ticks at 100 Hz), however busy the machine, with a
    /// 30 s cap. (Process-wide figures: this is the only test in its
    /// binary, so nothing else runs meanwhile.)
    #[test]
    fn cpu_time_splits_user_from_kernel() {
        let me = [std::process::id()];
        let enough = 0.2;
        let cap = Duration::from_secs(30);
        let before = cpu_times(&me);
        let start = Instant::now();
        let mut x = 0u64;
        while cpu_times(&me).total() - before.total() < enough && start.elapsed() < cap {
            for i in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
        }
        let middle = cpu_times(&me);
        let start = Instant::now();
        while cpu_times(&me).total() - middle.total() < enough && start.elapsed() < cap {
            for _ in 0..100 {
                let _ = std::hint::black_box(std::fs::metadata("/proc/self/stat"));
            }
        }
        let after = cpu_times(&me);
        let (arithmetic, syscalls) = (middle - before, after - middle);
        assert!(arithmetic.user > arithmetic.system, "{arithmetic:?}");
        assert!(syscalls.system > syscalls.user, "{syscalls:?}");
    }
}
