//! What a key in KMS costs the proxy: signatures asked of the key per
//! forwarded request, and throughput and latency, for a key in a PEM file
//! and a key in AWS KMS (the stand-in, with an added delay per Sign and
//! AWS's default Sign quota), side by side.
//!
//! Everything runs in this process on loopback: the agents' CA, an mTLS
//! exchange that requires the agent's certificate, the KMS stand-in, the
//! proxy (built from a `Config` by `kakunin::run::build`, as `kakunin
//! proxy` builds it, with its `/metrics` listener), and the agents. Each
//! run starts a fresh proxy, so its upstream pool, TLS session cache and
//! metrics start empty: the signatures counted include filling the pool.

mod load;
mod report;
mod setup;

use std::time::Duration;

use kakunin_kms_standin::{KeySpec, Settings as StandinSettings, Standin, Stats};
use serde_json::json;

use load::{Pace, Workload};
use setup::{Backend, Proxy, Site};

pub struct Settings {
    /// Agent connections sending at once.
    pub concurrency: usize,
    /// Requests per closed-loop run.
    pub requests: usize,
    /// Requests per second of the open-loop runs.
    pub rate: f64,
    /// Length of each open-loop run.
    pub rate_seconds: f64,
    /// Added to every Sign in the stand-in.
    pub kms_delay: Duration,
    /// Sign calls per second the stand-in allows; `None`: no quota.
    pub kms_quota: Option<u32>,
}

/// One measured run.
pub struct Run {
    pub backend: &'static str,
    pub workload: Workload,
    pub pace: Pace,
    pub outcome: load::Outcome,
    /// Requests the exchange received (forwarded by the proxy).
    pub forwarded: u64,
    /// TLS handshakes the exchange completed (new upstream connections).
    pub handshakes: u64,
    pub key: setup::KeyCounts,
    /// Sign calls the stand-in saw during the run (KMS runs only).
    pub kms: Option<Stats>,
}

pub async fn run(settings: &Settings, out: &std::path::Path) -> anyhow::Result<()> {
    let load_before = report::loadavg();
    let site = Site::new().await?;
    let standin = Standin::start(StandinSettings {
        region: setup::REGION.into(),
        sign_delay: settings.kms_delay,
        sign_quota_per_sec: settings.kms_quota,
        ..StandinSettings::default()
    })
    .await?;
    let key = standin.create_key(KeySpec::EccNistP256)?;
    let kms = Backend::AwsKms {
        arn: key.arn.clone(),
        endpoint: standin.endpoint_url(),
    };
    // Issuing for the KMS key asks KMS for the public key and waits for it
    // on a channel: off this runtime's workers, which serve the stand-in.
    let file_config = tokio::task::block_in_place(|| site.config(&Backend::File))?;
    let kms_config = tokio::task::block_in_place(|| site.config(&kms))?;

    let closed = Pace::Closed {
        requests: settings.requests.max(1),
    };
    let open = Pace::Open {
        rate: settings.rate.max(1.0),
        seconds: settings.rate_seconds.max(0.1),
    };
    let cases = [
        (&Backend::File, Workload::UnsignedGet, closed),
        (&Backend::File, Workload::SignedPost, closed),
        (&Backend::File, Workload::SignedPost, open),
        (&kms, Workload::UnsignedGet, closed),
        (&kms, Workload::SignedPost, closed),
        (&kms, Workload::SignedPost, open),
    ];
    println!(
        "key in a file vs in KMS (stand-in: +{} ms per Sign, quota {}), {} agent connections",
        settings.kms_delay.as_millis(),
        settings
            .kms_quota
            .map_or("none".to_string(), |q| format!("{q} Sign/s")),
        settings.concurrency
    );
    let mut runs = Vec::new();
    for (backend, workload, pace) in cases {
        let config = match backend {
            Backend::File => &file_config,
            Backend::AwsKms { .. } => &kms_config,
        };
        if let Backend::AwsKms { .. } = backend {
            // Re-setting the quota refills the bucket: each run starts as
            // a KMS that has not been called for a while.
            standin.set_sign_delay(settings.kms_delay);
            standin.set_quota(settings.kms_quota);
        }
        let kms_before = standin.stats();
        let (handshakes, forwarded) = (site.exchange.handshakes(), site.exchange.requests());
        let proxy = Proxy::start(config).await?;
        let outcome = load::drive(proxy.addr, workload, pace, settings.concurrency).await?;
        let metrics = proxy.scrape().await?;
        proxy.stop().await;
        let kms_after = standin.stats();
        let run = Run {
            backend: backend.label(),
            workload,
            pace,
            outcome,
            forwarded: site.exchange.requests() - forwarded,
            handshakes: site.exchange.handshakes() - handshakes,
            key: setup::key_counts(&metrics),
            kms: matches!(backend, Backend::AwsKms { .. })
                .then(|| report::stats_delta(&kms_before, &kms_after)),
        };
        report::print_row(&run, runs.is_empty());
        runs.push(run);
    }
    let standin_stats = standin.stats();
    standin.shutdown().await;

    let report = json!({
        "question": "signatures the agent key makes per forwarded request, and throughput and latency, with the key in a PEM file and in AWS KMS (the stand-in)",
        "machine": {
            "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "loadavg_before": load_before,
            "loadavg_after": report::loadavg(),
            "note": "agents, proxy, exchange and KMS stand-in share one process and the cores",
        },
        "settings": {
            "concurrency": settings.concurrency,
            "closed_loop_requests": settings.requests,
            "open_loop_rate_per_s": settings.rate,
            "open_loop_seconds": settings.rate_seconds,
            "kms_sign_delay_ms": u64::try_from(settings.kms_delay.as_millis()).unwrap_or(u64::MAX),
            "kms_sign_quota_per_s": settings.kms_quota,
            "key_options": report::key_options(&kms_config.key_options),
            "max_idle_per_host": kms_config.max_idle_per_host,
            "agent_key": "P-256 (ECC_NIST_P256 in KMS)",
        },
        "latency_unit": "ms",
        "runs": runs.iter().map(report::run_json).collect::<Vec<_>>(),
        "standin_totals": serde_json::to_value(&standin_stats)?,
        "measured_at_unix": crate::agents::unix_secs(std::time::SystemTime::now()),
    });
    crate::agents::write_report(out, &report)
}
