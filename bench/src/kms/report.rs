//! The KMS benchmark's table and JSON.

use hdrhistogram::Histogram;
use kakunin_kms_standin::Stats;
use kakunin_signer::KeyOptions;
use serde_json::json;

use super::load::{Outcome, Pace};
use super::Run;
use crate::agents::round1;

/// Stand-in counters of one run: `after - before` (the in-flight maximum
/// is the stand-in's since it started, not per run).
pub fn stats_delta(before: &Stats, after: &Stats) -> Stats {
    let mut per_op = after.per_op.clone();
    for (op, stats) in &mut per_op {
        if let Some(earlier) = before.per_op.get(op) {
            stats.calls -= earlier.calls.min(stats.calls);
            stats.errors -= earlier.errors.min(stats.errors);
        }
    }
    Stats {
        sign_accepted: after.sign_accepted.saturating_sub(before.sign_accepted),
        sign_throttled: after.sign_throttled.saturating_sub(before.sign_throttled),
        sign_errors: after.sign_errors.saturating_sub(before.sign_errors),
        sign_in_flight: after.sign_in_flight,
        sign_in_flight_max: after.sign_in_flight_max,
        per_op,
    }
}

/// The 1, 5 and 15 minute load averages (Linux), to show what else ran.
pub fn loadavg() -> serde_json::Value {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .filter_map(|v| v.parse::<f64>().ok())
                .collect::<Vec<_>>()
        })
        .map_or(serde_json::Value::Null, Into::into)
}

pub fn key_options(options: &KeyOptions) -> serde_json::Value {
    json!({
        "sign_deadline_ms": u64::try_from(options.deadline.as_millis()).unwrap_or(u64::MAX),
        "sign_attempts": options.max_attempts,
        "sign_max_pending": options.max_pending,
    })
}

fn pace_label(pace: Pace) -> String {
    match pace {
        Pace::Closed { .. } => "closed loop".to_string(),
        Pace::Open { rate, .. } => format!("open {rate:.0}/s"),
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Signatures per 10,000 forwarded requests.
fn per_10k(signs: u64, forwarded: u64) -> f64 {
    if forwarded == 0 {
        return f64::NAN;
    }
    signs as f64 * 10_000.0 / forwarded as f64
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    part as f64 * 100.0 / whole as f64
}

/// Answers that were not 200, as a share of all.
fn refused(outcome: &Outcome) -> u64 {
    outcome.answered() - outcome.count("200")
}

pub fn print_row(run: &Run, header: bool) {
    if header {
        println!(
            "\n{:<8} {:<13} {:<12} {:>8} {:>7} {:>7} {:>6} {:>6} {:>8} {:>13} {:>8} {:>8} {:>8} {:>8}",
            "backend",
            "workload",
            "pace",
            "answered",
            "req/s",
            "non-200",
            "hshake",
            "signs",
            "per 10k",
            "KMS ok/thrtl",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms"
        );
    }
    let o = &run.outcome;
    let kms = run.kms.as_ref().map_or("-".to_string(), |s| {
        format!("{}/{}", s.sign_accepted, s.sign_throttled)
    });
    println!(
        "{:<8} {:<13} {:<12} {:>8} {:>7.0} {:>6.1}% {:>6} {:>6} {:>8.1} {:>13} {:>8.2} {:>8.2} {:>8.2} {:>8.1}",
        run.backend,
        run.workload.label(),
        pace_label(run.pace),
        o.answered(),
        o.answered() as f64 / o.wall.as_secs_f64(),
        share(refused(o), o.answered()),
        run.handshakes,
        run.key.sign_calls,
        per_10k(run.key.sign_calls, run.forwarded),
        kms,
        ms(o.all.value_at_quantile(0.50)),
        ms(o.all.value_at_quantile(0.90)),
        ms(o.all.value_at_quantile(0.99)),
        ms(o.all.max()),
    );
    if o.statuses.len() > 1 || !o.statuses.contains_key("200") {
        println!("    statuses: {:?}", o.statuses);
    }
}

fn latencies(histogram: &Histogram<u64>) -> serde_json::Value {
    let round2 = |v: f64| (v * 100.0).round() / 100.0;
    if histogram.is_empty() {
        return serde_json::Value::Null;
    }
    json!({
        "n": histogram.len(),
        "p50": round2(ms(histogram.value_at_quantile(0.50))),
        "p90": round2(ms(histogram.value_at_quantile(0.90))),
        "p99": round2(ms(histogram.value_at_quantile(0.99))),
        "max": round2(ms(histogram.max())),
        "mean": round2(histogram.mean() / 1e6),
    })
}

pub fn run_json(run: &Run) -> serde_json::Value {
    let o = &run.outcome;
    let wall = o.wall.as_secs_f64();
    let pace = match run.pace {
        Pace::Closed { requests } => json!({ "closed_loop_requests": requests }),
        Pace::Open { rate, seconds } => json!({ "open_loop_rate_per_s": rate, "seconds": seconds }),
    };
    let sign_mean_ms = if run.key.sign_seconds_count == 0 {
        serde_json::Value::Null
    } else {
        let mean_ms = run.key.sign_seconds_sum * 1000.0 / run.key.sign_seconds_count as f64;
        ((mean_ms * 100.0).round() / 100.0).into()
    };
    json!({
        "backend": run.backend,
        "workload": run.workload.label(),
        "pace": pace,
        "answered": o.answered(),
        "statuses": o.statuses,
        "non_200_percent": round1(share(refused(o), o.answered())),
        "wall_seconds": round1(wall),
        "answers_per_s": round1(o.answered() as f64 / wall),
        "ok_per_s": round1(o.count("200") as f64 / wall),
        "forwarded_upstream": run.forwarded,
        "upstream_handshakes": run.handshakes,
        "proxy_metrics": {
            "kakunin_key_sign_calls_total": run.key.sign_calls,
            "kakunin_key_sign_errors_total": run.key.sign_errors,
            "sign_duration_mean_ms": sign_mean_ms,
        },
        "sign_calls_per_10k_forwarded": round1(per_10k(run.key.sign_calls, run.forwarded)),
        "standin": run.kms.as_ref().map(|s| json!({
            "sign_accepted": s.sign_accepted,
            "sign_throttled": s.sign_throttled,
            "sign_errors": s.sign_errors,
            "sign_accepted_per_10k_forwarded": round1(per_10k(s.sign_accepted, run.forwarded)),
        })),
        "latency_all_answers": latencies(&o.all),
        "latency_200_only": latencies(&o.ok),
    })
}
