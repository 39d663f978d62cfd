//! `kakunin-bench`: measurements, written to files and printed; nothing
//! here is asserted (tests assert behaviour, this measures speed).

mod agents;
mod all;
mod gateway;
mod kms;
mod revocation;
mod tls;
mod verify;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Kakunin benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Time from a revocation (committed by the CA) to the agent's first
    /// refused request, with and without the revocation watch stream.
    Revocation {
        /// Trials per mode.
        #[arg(long, default_value_t = 10)]
        trials: usize,
        /// The policy's revocation_check.cache_ttl_seconds (seed default 5).
        #[arg(long, default_value_t = 5)]
        ttl_seconds: u32,
        /// Where the results (JSON) are written.
        #[arg(long, default_value = "bench/results/revocation.json")]
        out: PathBuf,
    },
    /// Verifications per second per core: `Verifier::verify` on distinct
    /// signed requests, revocation off and with a stapled OCSP response, on
    /// one thread and on several sharing one verifier; then the chain, the
    /// staple and the signature timed alone.
    Verify {
        /// Length of each timed run.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Threads sharing one verifier (default: the available cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Runs per measurement (median, min and max are reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Where the results (JSON) are written.
        #[arg(long, default_value = "bench/results/verify.json")]
        out: PathBuf,
    },
    /// The latency `kakunin gateway` adds: the same pre-signed requests sent
    /// straight to an mTLS server that verifies nothing, and through the
    /// gateway (mTLS, verifier with a stapled OCSP response, plain-HTTP
    /// backend), over kept-alive connections.
    Gateway {
        /// Timed requests per pass.
        #[arg(long, default_value_t = 10_000)]
        requests: usize,
        /// Connections sending at once; several values (`1,8`) measure each.
        #[arg(long, value_delimiter = ',', default_values_t = [1, 8])]
        concurrency: Vec<usize>,
        /// Passes per path and concurrency (median, min and max reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Where the results (JSON) are written.
        #[arg(long, default_value = "bench/results/gateway.json")]
        out: PathBuf,
    },
    /// The agent key in a PEM file vs in AWS KMS (the KMS stand-in, with a
    /// delay per Sign and a Sign quota): signatures per forwarded request
    /// (unsigned GETs, signed POSTs), throughput, latency and status mix.
    Kms {
        /// Agent keep-alive connections sending at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Requests per closed-loop run.
        #[arg(long, default_value_t = 10_000)]
        requests: usize,
        /// Requests per second of the open-loop signed-POST runs.
        #[arg(long, default_value_t = 250.0)]
        rate: f64,
        /// Length of each open-loop run.
        #[arg(long, default_value_t = 15.0)]
        rate_seconds: f64,
        /// Added to every Sign by the stand-in (KMS's latency from afar).
        #[arg(long, default_value_t = 20)]
        kms_delay_ms: u64,
        /// Sign calls per second the stand-in allows (AWS's default for ECC
        /// keys is 300); 0 for no quota.
        #[arg(long, default_value_t = 300)]
        kms_quota: u32,
        /// Where the results (JSON) are written.
        #[arg(long, default_value = "bench/results/kms.json")]
        out: PathBuf,
    },
    /// Kakunin against nginx and HAProxy doing the same TLS origination,
    /// and against the client speaking mTLS itself: throughput, proxy CPU
    /// per request, latency added over direct, upstream handshakes and
    /// memory, each proxy in its own process on its own core.
    All(Box<AllArgs>),
}

#[derive(clap::Args)]
struct AllArgs {
    /// A few seconds in all: tiny runs, 1 round, and a failure unless
    /// every path answered 200 to every request. Writes to a temporary
    /// directory (not bench/results) and leaves the README alone unless
    /// --out / --readme say otherwise.
    #[arg(long)]
    smoke: bool,
    /// Rounds; medians with min and max are reported [default: 3; smoke 1].
    #[arg(long)]
    runs: Option<usize>,
    /// Keep-alive client connections, and each proxy's upstream pool.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Request body size (a JSON object padded to this length).
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// Length of each closed-loop run [default: 5; smoke 0.3].
    #[arg(long)]
    closed_seconds: Option<f64>,
    /// Length of each open-loop run [default: 10; smoke 0.3].
    #[arg(long)]
    open_seconds: Option<f64>,
    /// Untimed load before each timed run [default: 1; smoke 0.2].
    #[arg(long)]
    warmup_seconds: Option<f64>,
    /// An open-loop run in which the hypervisor took more than this many ms
    /// per second of run from one vCPU (steal) is run again.
    #[arg(long, default_value_t = 5.0)]
    max_steal_ms_per_s: f64,
    /// Open-loop runs per path and round at most, while steal is over the
    /// limit; the quietest counts [default: 3; smoke 1].
    #[arg(long)]
    open_attempts: Option<usize>,
    /// Idle agent connections held open for the memory figure
    /// [default: 1000; smoke 50].
    #[arg(long)]
    idle_connections: Option<usize>,
    /// Open-loop requests per second [default: half the slowest path's
    /// closed-loop throughput, the KMS path left out].
    #[arg(long)]
    rate: Option<f64>,
    /// Added to every Sign by the KMS stand-in.
    #[arg(long, default_value_t = 20)]
    kms_delay_ms: u64,
    /// Sign calls per second the stand-in allows; 0 for no quota
    /// [default: 300; smoke: none, so that its 200-only check cannot trip
    /// on throttling].
    #[arg(long)]
    kms_quota: Option<u32>,
    /// The kakunin binary [default: beside this one; under `cargo run` it
    /// is built first, so it is the newest].
    #[arg(long)]
    kakunin: Option<PathBuf>,
    /// Where all.json and all-latency.svg go [default: bench/results;
    /// smoke: a temporary directory].
    #[arg(long)]
    out: Option<PathBuf>,
    /// The README whose results section is replaced [default:
    /// bench/README.md; smoke: none].
    #[arg(long)]
    readme: Option<PathBuf>,
    /// Leave the README alone.
    #[arg(long)]
    no_readme: bool,
    /// Do not pin the proxies and this process to separate cores.
    #[arg(long)]
    no_pin: bool,
    /// Only these paths (direct, nginx, haproxy, kakunin_unsigned,
    /// kakunin_signed, kakunin_batched, kakunin_kms, kakunin_kms_batched),
    /// e.g. for a targeted rerun with --rate.
    #[arg(long, value_delimiter = ',')]
    paths: Vec<String>,
    /// A/B instead of the report: run each Kakunin path with this kakunin
    /// binary and with --kakunin's, back to back in every round, and print
    /// the candidate/baseline ratios (compare.json; the README is left
    /// alone). The open loop runs at --rate, or at half the pair's lower
    /// closed-loop throughput. E.g. `--baseline old/kakunin --paths
    /// kakunin_signed`.
    #[arg(long)]
    baseline: Option<PathBuf>,
}

/// The environment the AWS SDK's standard chain reads inside the proxy's
/// `aws-kms:` backend: static test credentials (the stand-in checks none)
/// and nothing from ~/.aws or the instance metadata service. The proxy
/// runs in this process, so the variables must be this process's; they are
/// set before the runtime starts, while no other thread can read the
/// environment at the same time.
fn set_aws_env() {
    for (name, value) in [
        ("AWS_ACCESS_KEY_ID", "kakunin-bench"),
        ("AWS_SECRET_ACCESS_KEY", "kakunin-bench"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
    ] {
        std::env::set_var(name, value);
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Kms { .. } | Command::All(_)) {
        set_aws_env();
    }
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    match cli.command {
        // Pinned before the runtime starts: its threads inherit the core.
        Command::All(args) => {
            let settings = all_settings(*args)?;
            runtime()?.block_on(all::run(&settings))
        }
        Command::Revocation {
            trials,
            ttl_seconds,
            out,
        } => runtime()?.block_on(run_revocation(trials, ttl_seconds, out)),
        // Plain threads: no runtime competing for the cores.
        Command::Verify {
            seconds,
            threads,
            runs,
            out,
        } => verify::run(
            &verify::Settings {
                seconds: seconds.max(0.1),
                threads: threads.unwrap_or_else(|| {
                    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
                }),
                runs,
                keys: agents::KeyKind::ALL.to_vec(),
            },
            &out,
        ),
        Command::Gateway {
            requests,
            concurrency,
            runs,
            out,
        } => runtime()?.block_on(gateway::run(
            &gateway::Settings {
                requests: requests.max(1),
                concurrency,
                runs,
            },
            &out,
        )),
        Command::Kms {
            concurrency,
            requests,
            rate,
            rate_seconds,
            kms_delay_ms,
            kms_quota,
            out,
        } => runtime()?.block_on(kms::run(
            &kms::Settings {
                concurrency: concurrency.max(1),
                requests,
                rate,
                rate_seconds,
                kms_delay: std::time::Duration::from_millis(kms_delay_ms),
                kms_quota: (kms_quota > 0).then_some(kms_quota),
            },
            &out,
        )),
    }
}

/// The `all` settings: smoke or full defaults, the kakunin binary, and
/// this process pinned to core 0 (the proxies then get core 1).
fn all_settings(args: AllArgs) -> anyhow::Result<all::Settings> {
    let smoke = args.smoke;
    let pick = |given: Option<f64>, full: f64, quick: f64| {
        given.unwrap_or(if smoke { quick } else { full })
    };
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let pinned = !args.no_pin && cores >= 2 && all::pin_self(0);
    let comparing = args.baseline.is_some();
    let out = match args.out {
        Some(out) => out,
        None if smoke || comparing => {
            let what = if smoke { "smoke" } else { "compare" };
            std::env::temp_dir().join(format!("kakunin-bench-{what}-{}", std::process::id()))
        }
        None => PathBuf::from("bench/results"),
    };
    let readme = match (args.no_readme || comparing, args.readme) {
        (true, _) => None,
        (false, Some(readme)) => Some(readme),
        (false, None) if smoke => None,
        (false, None) => Some(PathBuf::from("bench/README.md")),
    };
    let paths = if args.paths.is_empty() {
        all::paths::PathKind::ALL.to_vec()
    } else {
        args.paths
            .iter()
            .map(|key| {
                all::paths::PathKind::from_key(key)
                    .ok_or_else(|| anyhow::anyhow!("--paths: unknown path {key:?}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    Ok(all::Settings {
        paths,
        connections: args.connections.max(1),
        body_bytes: args.body_bytes,
        closed_seconds: pick(args.closed_seconds, 5.0, 0.3).max(0.05),
        open_seconds: pick(args.open_seconds, 10.0, 0.3).max(0.05),
        warmup_seconds: pick(args.warmup_seconds, 1.0, 0.2).max(0.0),
        max_steal_ms_per_s: args.max_steal_ms_per_s.max(0.0),
        open_attempts: args
            .open_attempts
            .unwrap_or(if smoke { 1 } else { 3 })
            .max(1),
        runs: args.runs.unwrap_or(if smoke { 1 } else { 3 }).max(1),
        idle_connections: args
            .idle_connections
            .unwrap_or(if smoke { 50 } else { 1000 }),
        rate: args.rate,
        kms_delay: std::time::Duration::from_millis(args.kms_delay_ms),
        kms_quota: args
            .kms_quota
            .map_or(if smoke { None } else { Some(300) }, |q| {
                (q > 0).then_some(q)
            }),
        proxy_core: pinned.then_some(1),
        bench_core: pinned.then_some(0),
        kakunin_bin: match args.kakunin {
            Some(path) => path,
            None => all::kakunin_binary()?,
        },
        out_dir: out,
        readme,
        smoke,
        baseline: args.baseline,
    })
}

async fn run_revocation(trials: usize, ttl_seconds: u32, out: PathBuf) -> anyhow::Result<()> {
    let settings = revocation::Settings {
        trials: trials.max(1),
        ttl_seconds,
    };
    let mut report = serde_json::Map::new();
    println!(
        "revocation → refusal, {} trials per mode, cache TTL {ttl_seconds} s",
        settings.trials
    );
    println!(
        "{:<22} {:>9} {:>11} {:>9}  forwarded after revoke (max)",
        "mode", "min ms", "median ms", "max ms"
    );
    for (name, watch) in [("with watch stream", true), ("TTL only (no watch)", false)] {
        let mut refusals = Vec::new();
        let mut forwarded_max = 0;
        for _ in 0..settings.trials {
            let trial = revocation::trial(watch, &settings).await?;
            refusals.push(trial.refusal);
            forwarded_max = forwarded_max.max(trial.forwarded_after);
        }
        let summary = revocation::summary(&refusals);
        println!(
            "{name:<22} {:>9.1} {:>11.1} {:>9.1}  {forwarded_max}",
            summary["min_ms"].as_f64().unwrap_or(f64::NAN),
            summary["median_ms"].as_f64().unwrap_or(f64::NAN),
            summary["max_ms"].as_f64().unwrap_or(f64::NAN),
        );
        let mut entry = summary;
        entry["forwarded_after_revoke_max"] = forwarded_max.into();
        report.insert(
            if watch { "watch_stream" } else { "ttl_only" }.into(),
            entry,
        );
    }
    report.insert("cache_ttl_seconds".into(), ttl_seconds.into());
    report.insert(
        "measured_at_unix".into(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .into(),
    );
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&serde_json::Value::Object(report))? + "\n",
    )?;
    println!("written to {}", out.display());
    Ok(())
}
