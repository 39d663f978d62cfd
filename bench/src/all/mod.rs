//! `kakunin-bench all`: Kakunin against the tools a user would otherwise
//! use for TLS origination (nginx, HAProxy) and against the client
//! speaking mTLS itself, in one run, on one machine, to one upstream.
//!
//! The proxies under test run as their own processes pinned to one core;
//! this process (load generator, upstream, KMS stand-in) is pinned to the
//! other, so /proc can charge each proxy its own CPU time and memory.
//! Phase 1 runs every path closed-loop (throughput, CPU per request,
//! upstream handshakes, memory); phase 2 runs every path open-loop at one
//! fixed rate, half the slowest path's throughput, for latency.

mod child;
mod compare;
mod halt_poll;
mod haproxy;
mod install;
mod kakunin;
pub mod load;
mod measure;
mod nginx;
mod pacer;
pub mod paths;
mod plot;
mod procstat;
mod quiet_core;
mod report;
mod upstream;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use kakunin_kms_standin::{KeySpec, Settings as StandinSettings, Standin};

use paths::{Env, PathKind, Site};

pub struct Settings {
    /// Keep-alive client connections (and each proxy's upstream pool).
    pub connections: usize,
    pub body_bytes: usize,
    pub closed_seconds: f64,
    pub open_seconds: f64,
    pub warmup_seconds: f64,
    /// An open-loop run during which the hypervisor took more than this
    /// from a vCPU (ms of steal per second of run) is run again…
    pub max_steal_ms_per_s: f64,
    /// …up to this many times in all; the quietest attempt counts.
    pub open_attempts: usize,
    pub runs: usize,
    /// Idle agent connections held open for the memory figure.
    pub idle_connections: usize,
    /// The open-loop rate; `None`: half the slowest path's throughput.
    pub rate: Option<f64>,
    pub kms_delay: Duration,
    pub kms_quota: Option<u32>,
    /// The core each proxy runs on (this process was pinned elsewhere).
    pub proxy_core: Option<usize>,
    pub bench_core: Option<usize>,
    pub kakunin_bin: PathBuf,
    pub out_dir: PathBuf,
    /// The README whose `all` section is replaced with the results.
    pub readme: Option<PathBuf>,
    /// Asserts that every path answered 200 to every request.
    pub smoke: bool,
    /// The paths measured (all by default; a subset for a targeted rerun).
    pub paths: Vec<PathKind>,
    /// Another kakunin binary to compare `kakunin_bin` with (an A/B run of
    /// the Kakunin paths), instead of the full report.
    pub baseline: Option<PathBuf>,
}

/// Pins this process (before its runtime starts, so every thread inherits
/// it) to `core` with taskset; whether it worked.
pub fn pin_self(core: usize) -> bool {
    std::process::Command::new("taskset")
        .args([
            "-p",
            "-c",
            &core.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A JSON object whose `pad` string makes the whole body `bytes` long.
fn body(bytes: usize) -> Bytes {
    let head = r#"{"market":"EUR_USD","size":45000,"pad":""#;
    let tail = r#""}"#;
    let pad = bytes.saturating_sub(head.len() + tail.len());
    Bytes::from(format!("{head}{}{tail}", "x".repeat(pad)))
}

/// What every path runs against: the certificates, the mTLS upstream, and
/// the KMS stand-in with a key certified by the agents' CA.
pub struct Lab {
    site: Site,
    upstream: upstream::Upstream,
    standin: Standin,
    /// The KMS key's ARN, the stand-in's endpoint, the key's certificate.
    kms: (String, String, PathBuf),
    /// Kernel threads kept off the proxies' core until the lab is dropped.
    quiet: Option<quiet_core::QuietCore>,
    /// The guest's halt-poll window, widened until the lab is dropped.
    halt_poll: Option<halt_poll::HaltPoll>,
}

impl Lab {
    pub async fn start(settings: &Settings) -> anyhow::Result<Lab> {
        install::ensure(&[("nginx", "nginx"), ("haproxy", "haproxy")])?;
        let site = Site::new()?;
        let upstream = upstream::Upstream::start(
            &site.server_cert_pem,
            &site.server_key_pem,
            &site.lab.ca_der,
        )
        .await?;
        let standin = Standin::start(StandinSettings {
            region: paths::REGION.into(),
            sign_delay: settings.kms_delay,
            sign_quota_per_sec: settings.kms_quota,
            ..StandinSettings::default()
        })
        .await?;
        let kms_key = standin.create_key(KeySpec::EccNistP256)?;
        let endpoint = standin.endpoint_url();
        // Certifying asks the stand-in (served by this runtime) and waits
        // on a channel: off the runtime's worker.
        let kms_cert = tokio::task::block_in_place(|| site.certify_kms(&kms_key.arn, &endpoint))?;
        // The smoke run asserts answers only: it leaves the machine alone.
        let (quiet, halt_poll) = if settings.smoke {
            (None, None)
        } else {
            let quiet = settings
                .proxy_core
                .zip(settings.bench_core)
                .map(|(proxy, bench)| quiet_core::QuietCore::keep(proxy, bench));
            (quiet, halt_poll::HaltPoll::raise())
        };
        Ok(Lab {
            site,
            upstream,
            standin,
            kms: (kms_key.arn, endpoint, kms_cert),
            quiet,
            halt_poll,
        })
    }

    /// The paths' environment, with Kakunin's paths running `kakunin_bin`;
    /// `tag` prefixes its run directories.
    pub fn env<'a>(
        &'a self,
        settings: &Settings,
        kakunin_bin: &'a std::path::Path,
        tag: &'static str,
    ) -> anyhow::Result<Env<'a>> {
        let site = &self.site;
        Ok(Env {
            site,
            upstream: self.upstream.addr(),
            kakunin_bin,
            kms: Some(self.kms.clone()),
            core: settings.proxy_core,
            pool: settings.connections,
            body: body(settings.body_bytes),
            direct: load::connector(&site.lab.ca_der, &site.agent_cert, &site.agent_key_pem)?,
            tag,
        })
    }

    /// Before each run of `kind`: a KMS path starts with a fresh quota
    /// bucket, as a KMS not called for a while.
    fn ready_for(&self, kind: PathKind, settings: &Settings) {
        if kind.is_kms() {
            self.standin.set_quota(settings.kms_quota);
        }
    }

    pub async fn shutdown(self) {
        self.standin.shutdown().await;
    }
}

pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let load_before = report::loadavg();
    let (machine_before, steal_before) = procstat::machine_cpu_seconds();
    let ours_before = procstat::own_and_children_cpu_seconds();
    let lab = Lab::start(settings).await?;
    if let Some(baseline) = &settings.baseline {
        let compared = compare::run(settings, &lab, baseline).await;
        lab.shutdown().await;
        return compared;
    }
    let upstream = &lab.upstream;
    let env = lab.env(settings, &settings.kakunin_bin, "")?;
    println!(
        "all: {} paths, {} connections, {}-byte POST bodies, {} run(s); proxies on core {}, load generator + upstream + KMS stand-in on core {}",
        settings.paths.len(),
        settings.connections,
        env.body.len(),
        settings.runs,
        settings.proxy_core.map_or("any".into(), |c| c.to_string()),
        settings.bench_core.map_or("any".into(), |c| c.to_string()),
    );

    let mut closed: Vec<measure::Closed> = Vec::new();
    for round in 0..settings.runs {
        for kind in rotated(&settings.paths, round) {
            lab.ready_for(kind, settings);
            let m = measure::closed(kind, round, &env, upstream, settings).await?;
            report::print_closed(&m);
            closed.push(m);
        }
    }
    let rate = settings
        .rate
        .unwrap_or_else(|| report::half_slowest(&closed));
    anyhow::ensure!(
        rate.is_finite() && rate > 0.0,
        "no open-loop rate: measure a path other than KMS, or give --rate"
    );
    let kms_rate = rate.min(report::half_of(&closed, PathKind::KakuninKms));
    println!("open loop at {rate:.0} requests/s (KMS path: {kms_rate:.0}/s)");
    let mut open: Vec<measure::Open> = Vec::new();
    for round in 0..settings.runs {
        for kind in rotated(&settings.paths, round) {
            let rate = if kind.is_kms() { kms_rate } else { rate };
            let m = measure::open_quiet(kind, round, &env, upstream, rate, settings, || {
                lab.ready_for(kind, settings)
            })
            .await?;
            report::print_open(&m);
            open.push(m);
        }
    }
    let kms_totals = lab.standin.stats();
    let moved = lab.quiet.as_ref().map(quiet_core::QuietCore::names);
    let halt_poll_ns = lab.halt_poll.as_ref().map(|poll| poll.window_ns);
    drop(env);
    lab.shutdown().await;

    if settings.smoke {
        report::assert_all_ok(&settings.paths, &closed, &open)?;
    }
    // What else ran: the machine's busy CPU time that was neither this
    // process's nor its children's (another build, another benchmark).
    let (machine_after, steal_after) = procstat::machine_cpu_seconds();
    let ours = procstat::own_and_children_cpu_seconds() - ours_before;
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let cores = |seconds: f64| (seconds / elapsed * 1000.0).round() / 1000.0;
    let others = serde_json::json!({
        "seconds": crate::agents::round1(elapsed),
        "machine_busy_cores": cores(machine_after - machine_before),
        "this_run_cores": cores(ours),
        "other_processes_cores": cores((machine_after - machine_before - ours).max(0.0)),
        "steal_cores": cores(steal_after - steal_before),
        "kernel_threads_kept_off_the_proxy_core": moved.unwrap_or_default(),
        "guest_halt_poll_ns_widened_to": halt_poll_ns,
    });
    println!("CPU over the run, in cores: {others}");
    let results = report::Results {
        settings,
        closed: &closed,
        open: &open,
        rate,
        kms_rate,
        load_before,
        load_after: report::loadavg(),
        elapsed: started.elapsed(),
        kms_totals: serde_json::to_value(&kms_totals)?,
        others,
    };
    let json = results.json()?;
    std::fs::create_dir_all(&settings.out_dir)?;
    let json_path = settings.out_dir.join("all.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)? + "\n")?;
    let svg_path = settings.out_dir.join("all-latency.svg");
    plot::latency(&open, rate, &svg_path)?;
    println!("{}", report::table(&json));
    if let Some(readme) = &settings.readme {
        report::update_readme(readme, &json)?;
        println!("README section updated: {}", readme.display());
    }
    println!(
        "written: {} and {} ({:.0} s)",
        json_path.display(),
        svg_path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The paths in a different order each round, so that a drift in the
/// machine's load does not always fall on the same path.
fn rotated(paths: &[PathKind], round: usize) -> Vec<PathKind> {
    let mut kinds = paths.to_vec();
    let n = kinds.len().max(1);
    kinds.rotate_left(round % n);
    kinds
}

/// The `kakunin` binary beside this one. Under `cargo run` (cargo sets
/// `CARGO`) it is built first in this binary's profile, because cargo
/// builds only the library for this crate's dependency: a stale binary
/// would be measured otherwise.
pub fn kakunin_binary() -> anyhow::Result<PathBuf> {
    use anyhow::Context as _;
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("this binary's directory")?;
    let binary = dir.join("kakunin");
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut command = std::process::Command::new(cargo);
        command.args(["build", "-q", "-p", "kakunin", "--bin", "kakunin"]);
        match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some("release") => {
                command.arg("--release");
            }
            Some(profile) => {
                command.args(["--profile", profile]);
            }
        }
        let status = command.status().context("cargo build -p kakunin")?;
        anyhow::ensure!(status.success(), "cargo build -p kakunin failed: {status}");
    }
    anyhow::ensure!(
        binary.is_file(),
        "{} not found: build it (cargo build --release -p kakunin) or pass --kakunin",
        binary.display()
    );
    Ok(binary)
}
