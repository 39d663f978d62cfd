//! `kakunin-bench all --baseline OLD`: an A/B run of two kakunin binaries on
//! the Kakunin paths, for judging one change to the proxy.
//!
//! On this kind of machine the same binary's CPU per request moves by ±20%
//! between runs minutes apart, more than most single changes are worth. So
//! both binaries run in every round, one after the other against the same
//! upstream, the first of each pair alternating between rounds; and the
//! verdict is the median of each round's candidate/baseline ratio, which
//! cancels the drift that both of a round's runs share.

use std::path::Path;

use serde_json::{json, Value};

use super::measure::{self, Closed, Open};
use super::paths::PathKind;
use super::{Lab, Settings};
use crate::agents::{median, show, spread};

/// The two sides, in the order the results name them.
const SIDES: [&str; 2] = ["baseline", "candidate"];

/// One binary's runs on one path in one round.
struct Run {
    kind: PathKind,
    side: usize,
    round: usize,
    closed: Closed,
    open: Option<Open>,
}

pub async fn run(settings: &Settings, lab: &Lab, baseline: &Path) -> anyhow::Result<()> {
    let kinds: Vec<PathKind> = settings
        .paths
        .iter()
        .copied()
        .filter(|k| k.is_kakunin())
        .collect();
    anyhow::ensure!(
        !kinds.is_empty(),
        "--baseline compares kakunin binaries: --paths must name a Kakunin path"
    );
    let envs = [
        lab.env(settings, baseline, "baseline-")?,
        lab.env(settings, &settings.kakunin_bin, "")?,
    ];
    println!(
        "A/B: baseline {} against candidate {}, {} round(s), {} path(s), open loop at {}",
        baseline.display(),
        settings.kakunin_bin.display(),
        settings.runs,
        kinds.len(),
        settings.rate.map_or(
            "half the pair's lower closed-loop throughput".into(),
            |r| format!("{r:.0}/s (KMS: at most half its closed-loop throughput)")
        ),
    );
    if settings.runs % 2 == 1 {
        println!("(an odd number of rounds: the baseline goes first once more than the candidate)");
    }
    let mut runs = Vec::new();
    for round in 0..settings.runs {
        for &kind in &kinds {
            // Each round's first side alternates, so that a drift through
            // the round falls on both sides in turn.
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            let mut closed = Vec::new();
            for side in order {
                lab.ready_for(kind, settings);
                closed.push((
                    side,
                    measure::closed(kind, round, &envs[side], &lab.upstream, settings).await?,
                ));
            }
            // One open-loop rate for both sides of the pair.
            let slower = closed
                .iter()
                .map(|(_, c)| c.throughput)
                .fold(f64::INFINITY, f64::min);
            let rate = match settings.rate {
                Some(rate) if kind.is_kms() => rate.min(slower / 2.0),
                Some(rate) => rate,
                None => slower / 2.0,
            };
            for (side, closed) in closed {
                let open = if rate.is_finite() && rate > 0.0 {
                    Some(
                        measure::open_quiet(
                            kind,
                            round,
                            &envs[side],
                            &lab.upstream,
                            rate,
                            settings,
                            || lab.ready_for(kind, settings),
                        )
                        .await?,
                    )
                } else {
                    None
                };
                print_run(kind, side, round, &closed, open.as_ref());
                runs.push(Run {
                    kind,
                    side,
                    round,
                    closed,
                    open,
                });
            }
        }
    }

    let results = json!({
        "question": "kakunin binary A/B: the candidate's figures against the baseline's, each round's pair measured back to back",
        "baseline": baseline.display().to_string(),
        "candidate": settings.kakunin_bin.display().to_string(),
        "rounds": settings.runs,
        "closed_seconds": settings.closed_seconds,
        "open_rate_rule": if settings.rate.is_some() { "given (--rate); the KMS path at most half its closed-loop throughput" } else { "half the lower closed-loop throughput of each round's pair" },
        "open_seconds": settings.open_seconds,
        "max_steal_ms_per_s": settings.max_steal_ms_per_s,
        "open_attempts": settings.open_attempts,
        "connections": settings.connections,
        "measured_at_unix": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        "paths": kinds.iter().map(|&k| (k.key().to_string(), path_json(&runs, k))).collect::<serde_json::Map<_, _>>(),
    });
    println!("{}", table(&results, &kinds));
    std::fs::create_dir_all(&settings.out_dir)?;
    let path = settings.out_dir.join("compare.json");
    std::fs::write(&path, serde_json::to_string_pretty(&results)? + "\n")?;
    println!("written: {}", path.display());
    Ok(())
}

fn print_run(kind: PathKind, side: usize, round: usize, closed: &Closed, open: Option<&Open>) {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let open = open.map_or(String::new(), |o| {
        format!(
            "  open: {} µs/req, p50 {:.0} µs, p99 {:.0} µs",
            opt(o.cpu_us_per_request),
            o.quantile_us(0.5),
            o.quantile_us(0.99)
        )
    });
    println!(
        "[r{round}] {:<32} {:<9} {:>8.0} req/s  {:>7} µs/req  RSS {} MiB{open}",
        kind.label(),
        SIDES[side],
        closed.throughput,
        opt(closed.cpu_us_per_request),
        opt(closed.rss_connections_mib),
    );
}

/// A figure of one run, if it was measured.
type Figure = fn(&Run) -> Option<f64>;

const FIGURES: [(&str, Figure); 7] = [
    ("open_rate_per_s", |r| r.open.as_ref().map(|o| o.rate)),
    ("throughput_per_s", |r| Some(r.closed.throughput)),
    ("cpu_us_per_request", |r| r.closed.cpu_us_per_request),
    ("rss_idle_connections_mib", |r| r.closed.rss_connections_mib),
    ("open_cpu_us_per_request", |r| {
        r.open.as_ref().and_then(|o| o.cpu_us_per_request)
    }),
    ("open_p50_us", |r| open_quantile_us(r, 0.5)),
    ("open_p99_us", |r| open_quantile_us(r, 0.99)),
];

fn open_quantile_us(run: &Run, quantile: f64) -> Option<f64> {
    run.open.as_ref().map(|o| o.quantile_us(quantile))
}

/// Each side's spread of every figure, and the median over rounds of the
/// candidate/baseline ratio of each figure.
fn path_json(runs: &[Run], kind: PathKind) -> Value {
    let of = |side: usize| {
        runs.iter()
            .filter(move |r| r.kind == kind && r.side == side)
    };
    let mut sides = serde_json::Map::new();
    for (side, name) in SIDES.iter().enumerate() {
        let figures: serde_json::Map<_, _> = FIGURES
            .iter()
            .filter_map(|(key, figure)| {
                let values: Vec<f64> = of(side).filter_map(figure).collect();
                (!values.is_empty()).then(|| (key.to_string(), spread(&values)))
            })
            .collect();
        sides.insert(name.to_string(), Value::Object(figures));
    }
    let ratios: serde_json::Map<_, _> = FIGURES
        .iter()
        .filter_map(|(key, figure)| {
            let mut per_round: Vec<f64> = of(1)
                .filter_map(|candidate| {
                    let base = of(0).find(|b| b.round == candidate.round)?;
                    Some(figure(candidate)? / figure(base)?)
                })
                .filter(|r| r.is_finite())
                .collect();
            per_round.sort_by(f64::total_cmp);
            (!per_round.is_empty()).then(|| {
                (
                    key.to_string(),
                    json!((median(&per_round) * 1000.0).round() / 1000.0),
                )
            })
        })
        .collect();
    sides.insert("candidate_over_baseline".into(), Value::Object(ratios));
    sides.insert("label".into(), json!(kind.label()));
    Value::Object(sides)
}

/// Markdown: per path and side, median [min..max] of each figure, and the
/// paired ratio.
fn table(results: &Value, kinds: &[PathKind]) -> String {
    let mut out = String::from(
        "| path | binary | requests/s | CPU µs/request | RSS with idle agents MiB | open CPU µs/request | open p50 µs | open p99 µs |\n|---|---|---|---|---|---|---|---|\n",
    );
    for kind in kinds {
        let path = &results["paths"][kind.key()];
        let cell = |side: &Value, key: &str| match side.get(key) {
            Some(spread) => show(spread),
            None => "-".into(),
        };
        let ratio = |key: &str| {
            path["candidate_over_baseline"][key]
                .as_f64()
                .map_or("-".into(), |r| format!("×{r:.3}"))
        };
        for side in SIDES {
            let figures = &path[side];
            out.push_str(&format!(
                "| {} | {side} | {} | {} | {} | {} | {} | {} |\n",
                kind.label(),
                cell(figures, "throughput_per_s"),
                cell(figures, "cpu_us_per_request"),
                cell(figures, "rss_idle_connections_mib"),
                cell(figures, "open_cpu_us_per_request"),
                cell(figures, "open_p50_us"),
                cell(figures, "open_p99_us"),
            ));
        }
        out.push_str(&format!(
            "| {} | candidate ÷ baseline (median of rounds) | {} | {} | {} | {} | {} | {} |\n",
            kind.label(),
            ratio("throughput_per_s"),
            ratio("cpu_us_per_request"),
            ratio("rss_idle_connections_mib"),
            ratio("open_cpu_us_per_request"),
            ratio("open_p50_us"),
            ratio("open_p99_us"),
        ));
    }
    out
}
