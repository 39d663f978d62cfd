//! One path, one round: start it, load it, read /proc and the upstream's
//! counters, stop it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;

use super::load::{self, Connection, Outcome, Target};
use super::paths::{self, Env, PathKind, Running};
use super::procstat;
use super::upstream::Upstream;
use super::Settings;

/// Phase 1: closed loop, CPU, handshakes, memory.
pub struct Closed {
    pub kind: PathKind,
    pub round: usize,
    /// Answers per second in the timed window.
    pub throughput: f64,
    pub statuses: BTreeMap<String, u64>,
    pub answered: u64,
    /// The proxy's CPU (all its processes and threads) per answer, µs.
    pub cpu_us_per_request: Option<f64>,
    /// The part of it spent in the kernel (stime), µs per answer.
    pub kernel_us_per_request: Option<f64>,
    /// The proxy's CPU time over the window's wall time (1.0 = its core).
    pub proxy_cpu_share: Option<f64>,
    /// This process's CPU share (load generator + upstream + stand-in).
    pub bench_cpu_share: f64,
    /// Upstream TLS handshakes from the proxy's start to the window's end.
    pub handshakes: u64,
    /// Requests the upstream got over the same span (warm-up included).
    pub forwarded: u64,
    pub closed_p50_us: f64,
    pub closed_p99_us: f64,
    pub rss_idle_mib: Option<f64>,
    pub rss_connections_mib: Option<f64>,
    /// Idle connections that got a 200 and were held open.
    pub idle_connections_ok: u64,
    pub idle_statuses: BTreeMap<String, u64>,
    pub threads: Option<u64>,
    pub processes: Option<usize>,
}

/// Phase 2: open loop at a fixed rate.
pub struct Open {
    pub kind: PathKind,
    pub round: usize,
    pub rate: f64,
    pub achieved: f64,
    pub histogram: Histogram<u64>,
    pub statuses: BTreeMap<String, u64>,
    pub cpu_us_per_request: Option<f64>,
    /// The kernel's part of it (stime), as in the closed loop.
    pub kernel_us_per_request: Option<f64>,
    pub handshakes: u64,
    /// Steal time of each CPU over the timed window, ms, by CPU number.
    pub steal_ms_by_cpu: Vec<f64>,
    /// Runs it took to get this one (see `open_quiet`).
    pub attempts: usize,
}

fn run_dir(env: &Env<'_>, kind: PathKind, round: usize, phase: &str) -> std::path::PathBuf {
    env.site
        .dir
        .path()
        .join(format!("{}{}-{phase}-{round}", env.tag, kind.key()))
}

async fn connect_all(target: &Arc<Target>, n: usize) -> anyhow::Result<Vec<Connection>> {
    let mut connections = Vec::with_capacity(n);
    for _ in 0..n {
        connections.push(Connection::open(target.clone()).await?);
    }
    Ok(connections)
}

/// The proxy's CPU seconds so far (none for the direct path).
fn proxy_cpu(running: &Running) -> Option<procstat::CpuTime> {
    running
        .pid()
        .map(|pid| procstat::cpu_times(&procstat::tree(pid)))
}

pub async fn closed(
    kind: PathKind,
    round: usize,
    env: &Env<'_>,
    upstream: &Upstream,
    settings: &Settings,
) -> anyhow::Result<Closed> {
    let counts_before = upstream.counts();
    let running = paths::start(kind, env, &run_dir(env, kind, round, "closed"))?;
    // Let it settle (a runtime's threads, a worker's fork) before "idle".
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_idle_mib = running.pid().map(procstat::rss_mib);
    let connections = connect_all(&running.target, settings.connections).await?;
    let (connections, _) = load::closed_loop(connections, settings.warmup_seconds).await?;

    let (proxy_before, own_before) = (proxy_cpu(&running), procstat::own_cpu_seconds());
    let (connections, outcome) = load::closed_loop(connections, settings.closed_seconds).await?;
    let (proxy_after, own_after) = (proxy_cpu(&running), procstat::own_cpu_seconds());
    let counts = upstream.counts() - counts_before;
    let wall = outcome.wall.as_secs_f64().max(1e-9);
    let proxy_cpu = proxy_before.zip(proxy_after).map(|(b, a)| a - b);
    drop(connections);

    // Memory with many idle agents: each connection has had one request
    // answered and is held open, idle, as an agent between requests.
    let (rss_connections_mib, idle) = if running.proc.is_some() {
        let (held, idle) = load::open_many(
            &running.target,
            settings.idle_connections,
            settings.connections,
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss = running.pid().map(procstat::rss_mib);
        drop(held);
        (rss, Some(idle))
    } else {
        (None, None)
    };
    let (threads, processes) = match running.pid() {
        Some(pid) => {
            let (t, p) = procstat::threads_and_processes(pid);
            (Some(t), Some(p))
        }
        None => (None, None),
    };
    drop(running);
    let answered = outcome.answered();
    let per_request_us = |seconds: f64| per_request_us(seconds, answered);
    Ok(Closed {
        kind,
        round,
        throughput: outcome.rate(),
        answered,
        statuses: outcome.statuses.clone(),
        cpu_us_per_request: proxy_cpu.map(|cpu| per_request_us(cpu.total())),
        kernel_us_per_request: proxy_cpu.map(|cpu| per_request_us(cpu.system)),
        proxy_cpu_share: proxy_cpu.map(|cpu| cpu.total() / wall),
        bench_cpu_share: (own_after - own_before) / wall,
        handshakes: counts.handshakes,
        forwarded: counts.requests,
        closed_p50_us: quantile_us(&outcome, 0.5),
        closed_p99_us: quantile_us(&outcome, 0.99),
        rss_idle_mib,
        rss_connections_mib,
        idle_connections_ok: idle.as_ref().map_or(0, Outcome::ok),
        idle_statuses: idle.map(|o| o.statuses).unwrap_or_default(),
        threads,
        processes,
    })
}

/// `open`, run again while the hypervisor took a vCPU away for more than
/// `settings.max_steal_ms_per_s` of the run, up to `settings.open_attempts`
/// runs; the one with the least steal. On a shared host one steal episode
/// of tens of ms holds every request that arrives meanwhile, so a round's
/// p99 is that episode's length whichever proxy ran: the tail figures
/// compare proxies only over runs the host left alone. `before_each` runs
/// before every attempt (the KMS stand-in's quota refilled).
pub async fn open_quiet(
    kind: PathKind,
    round: usize,
    env: &Env<'_>,
    upstream: &Upstream,
    rate: f64,
    settings: &Settings,
    before_each: impl Fn(),
) -> anyhow::Result<Open> {
    let allowed_ms = settings.max_steal_ms_per_s * settings.open_seconds;
    let mut quietest: Option<Open> = None;
    let mut attempts = 0;
    for attempt in 1..=settings.open_attempts.max(1) {
        attempts = attempt;
        before_each();
        let run = open(kind, round, attempt, env, upstream, rate, settings).await?;
        let steal = run.most_steal_ms();
        if quietest.as_ref().is_none_or(|q| steal < q.most_steal_ms()) {
            quietest = Some(run);
        }
        if steal <= allowed_ms {
            break;
        }
        println!(
            "[open r{round}] {}: {steal:.0} ms of steal on one vCPU (over {allowed_ms:.0}), run again",
            kind.label()
        );
    }
    let mut quietest = quietest.context("no open-loop attempt")?;
    quietest.attempts = attempts;
    Ok(quietest)
}

impl Open {
    /// The latency at quantile `q`, µs.
    pub fn quantile_us(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1000.0
    }

    /// The most the hypervisor took from one vCPU during the run, ms.
    fn most_steal_ms(&self) -> f64 {
        self.steal_ms_by_cpu.iter().copied().fold(0.0, f64::max)
    }
}

async fn open(
    kind: PathKind,
    round: usize,
    attempt: usize,
    env: &Env<'_>,
    upstream: &Upstream,
    rate: f64,
    settings: &Settings,
) -> anyhow::Result<Open> {
    let phase = format!("open-a{attempt}");
    let running = paths::start(kind, env, &run_dir(env, kind, round, &phase))?;
    let connections = connect_all(&running.target, settings.connections).await?;
    // Fills the proxy's upstream pool, so the timed run measures the
    // steady state.
    let (connections, _) = load::closed_loop(connections, settings.warmup_seconds).await?;
    let handshakes_before = upstream.counts().handshakes;
    let proxy_before = proxy_cpu(&running);
    let steal_before = procstat::steal_seconds_by_cpu();
    let (connections, outcome) = load::open_loop(connections, rate, settings.open_seconds).await?;
    let steal_after = procstat::steal_seconds_by_cpu();
    let proxy_after = proxy_cpu(&running);
    let handshakes = upstream.counts().handshakes - handshakes_before;
    drop(connections);
    drop(running);
    let proxy_cpu = proxy_before.zip(proxy_after).map(|(b, a)| a - b);
    let per_request_us = |seconds: f64| per_request_us(seconds, outcome.answered());
    Ok(Open {
        kind,
        round,
        rate,
        achieved: outcome.rate(),
        cpu_us_per_request: proxy_cpu.map(|cpu| per_request_us(cpu.total())),
        kernel_us_per_request: proxy_cpu.map(|cpu| per_request_us(cpu.system)),
        histogram: outcome.histogram,
        statuses: outcome.statuses,
        handshakes,
        steal_ms_by_cpu: steal_after
            .iter()
            .zip(&steal_before)
            .map(|(after, before)| ((after - before) * 1000.0).max(0.0))
            .collect(),
        attempts: 1,
    })
}

/// CPU seconds spread over the answers, in µs each.
fn per_request_us(seconds: f64, answered: u64) -> f64 {
    seconds * 1e6 / answered.max(1) as f64
}

fn quantile_us(outcome: &Outcome, q: f64) -> f64 {
    outcome.histogram.value_at_quantile(q) as f64 / 1000.0
}
