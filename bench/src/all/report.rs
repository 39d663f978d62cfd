//! The results: printed as they come, gathered into all.json (medians with
//! min and max over the rounds, and every round's value), a Markdown table,
//! the targets met or missed, and bench/README.md's `all` section.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::measure::{Closed, Open};
use super::paths::PathKind;
use super::Settings;
use crate::agents::{median, round1, spread};

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn median_of(values: impl Iterator<Item = f64>) -> f64 {
    let mut sorted: Vec<f64> = values.collect();
    sorted.sort_by(f64::total_cmp);
    median(&sorted)
}

fn throughput_median(closed: &[Closed], kind: PathKind) -> f64 {
    median_of(
        closed
            .iter()
            .filter(|c| c.kind == kind)
            .map(|c| c.throughput),
    )
}

/// Half the median throughput of the slowest path whose ceiling is its
/// own: the KMS path's is the stand-in's quota and delay, which would set
/// every path's rate to a few hundred per second.
pub fn half_slowest(closed: &[Closed]) -> f64 {
    PathKind::ALL
        .iter()
        .filter(|k| !k.is_kms())
        .map(|&k| throughput_median(closed, k))
        .filter(|t| t.is_finite())
        .fold(f64::INFINITY, f64::min)
        .max(2.0)
        / 2.0
}

pub fn half_of(closed: &[Closed], kind: PathKind) -> f64 {
    let t = throughput_median(closed, kind);
    if t.is_finite() {
        (t / 2.0).max(1.0)
    } else {
        f64::INFINITY
    }
}

fn statuses_text(statuses: &BTreeMap<String, u64>) -> String {
    statuses
        .iter()
        .map(|(s, n)| format!("{s}×{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn print_closed(c: &Closed) {
    let opt = |v: Option<f64>, unit: &str| v.map_or("-".to_string(), |v| format!("{v:.1}{unit}"));
    println!(
        "[closed r{}] {:<32} {:>8.0} req/s  proxy {:>8} µs/req (kernel {:>6}, core {:>5})  bench core {:>3.0}%  handshakes {:>4}/{:<7}  RSS {} → {} ({} idle conns ok)  p50 {:.0} µs p99 {:.0} µs  {}",
        c.round,
        c.kind.label(),
        c.throughput,
        opt(c.cpu_us_per_request, ""),
        opt(c.kernel_us_per_request, ""),
        opt(c.proxy_cpu_share.map(|s| s * 100.0), "%"),
        c.bench_cpu_share * 100.0,
        c.handshakes,
        c.forwarded,
        opt(c.rss_idle_mib, " MiB"),
        opt(c.rss_connections_mib, " MiB"),
        c.idle_connections_ok,
        c.closed_p50_us,
        c.closed_p99_us,
        statuses_text(&c.statuses),
    );
}

pub fn print_open(o: &Open) {
    println!(
        "[open r{}] {:<32} {:>6.0}/s (achieved {:>6.0})  p50 {:>7.0}  p99 {:>7.0}  p99.9 {:>7.0}  max {:>7.0} µs  proxy {} µs/req (kernel {})  steal ms by cpu {} (attempts {})  {}",
        o.round,
        o.kind.label(),
        o.rate,
        o.achieved,
        o.quantile_us(0.5),
        o.quantile_us(0.99),
        o.quantile_us(0.999),
        o.histogram.max() as f64 / 1000.0,
        o.cpu_us_per_request
            .map_or("-".to_string(), |v| format!("{v:.1}")),
        o.kernel_us_per_request
            .map_or("-".to_string(), |v| format!("{v:.1}")),
        o.steal_ms_by_cpu
            .iter()
            .map(|ms| format!("{ms:.0}"))
            .collect::<Vec<_>>()
            .join("/"),
        o.attempts,
        statuses_text(&o.statuses),
    );
}

/// The smoke mode's only assertion: every path answered, and answered 200
/// to every request (the idle connections' requests included).
pub fn assert_all_ok(paths: &[PathKind], closed: &[Closed], open: &[Open]) -> anyhow::Result<()> {
    for &kind in paths {
        let mut all: BTreeMap<String, u64> = BTreeMap::new();
        let phases = closed
            .iter()
            .filter(|c| c.kind == kind)
            .flat_map(|c| [&c.statuses, &c.idle_statuses])
            .chain(open.iter().filter(|o| o.kind == kind).map(|o| &o.statuses));
        for statuses in phases {
            for (s, n) in statuses {
                *all.entry(s.clone()).or_default() += n;
            }
        }
        let ok = all.get("200").copied().unwrap_or(0);
        let total: u64 = all.values().sum();
        anyhow::ensure!(
            ok > 0 && ok == total,
            "{}: not every answer was 200: {}",
            kind.label(),
            statuses_text(&all)
        );
    }
    println!("smoke: every path answered 200 to every request");
    Ok(())
}

pub struct Results<'a> {
    pub settings: &'a Settings,
    pub closed: &'a [Closed],
    pub open: &'a [Open],
    pub rate: f64,
    pub kms_rate: f64,
    pub load_before: String,
    pub load_after: String,
    pub elapsed: Duration,
    pub kms_totals: Value,
    /// CPU used over the run by this process and its children, by other
    /// processes, and stolen by the hypervisor, in cores.
    pub others: Value,
}

const QUANTILES: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)];

fn merge_statuses<'a>(all: impl Iterator<Item = &'a BTreeMap<String, u64>>) -> Value {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for statuses in all {
        for (s, n) in statuses {
            *out.entry(s.clone()).or_default() += n;
        }
    }
    json!(out)
}

impl Results<'_> {
    fn path_json(&self, kind: PathKind) -> Value {
        let closed: Vec<&Closed> = self.closed.iter().filter(|c| c.kind == kind).collect();
        let open: Vec<&Open> = self.open.iter().filter(|o| o.kind == kind).collect();
        let of = |f: &dyn Fn(&Closed) -> Option<f64>| -> Value {
            let values: Vec<f64> = closed.iter().filter_map(|c| f(c)).collect();
            if values.is_empty() {
                Value::Null
            } else {
                spread(&values)
            }
        };
        let per_10k = |c: &Closed| Some(c.handshakes as f64 * 10_000.0 / c.forwarded.max(1) as f64);
        let mut latency = serde_json::Map::new();
        let mut added = serde_json::Map::new();
        for (name, q) in QUANTILES {
            let values: Vec<f64> = open.iter().map(|o| o.quantile_us(q)).collect();
            latency.insert(name.into(), spread(&values));
            // Paired by round: the direct run of the same round.
            let diffs: Vec<f64> = open
                .iter()
                .filter_map(|o| {
                    let direct = self
                        .open
                        .iter()
                        .find(|d| d.kind == PathKind::Direct && d.round == o.round)?;
                    Some(o.quantile_us(q) - direct.quantile_us(q))
                })
                .collect();
            added.insert(name.into(), spread(&diffs));
        }
        let maxes: Vec<f64> = open
            .iter()
            .map(|o| o.histogram.max() as f64 / 1000.0)
            .collect();
        latency.insert("max".into(), spread(&maxes));
        let open_cpu: Vec<f64> = open.iter().filter_map(|o| o.cpu_us_per_request).collect();
        let open_kernel: Vec<f64> = open
            .iter()
            .filter_map(|o| o.kernel_us_per_request)
            .collect();
        json!({
            "label": kind.label(),
            "throughput_per_s": of(&|c| Some(c.throughput)),
            "closed_loop_answers": closed.iter().map(|c| c.answered).collect::<Vec<_>>(),
            "cpu_us_per_request": of(&|c| c.cpu_us_per_request),
            "kernel_us_per_request": of(&|c| c.kernel_us_per_request),
            "proxy_core_busy": of(&|c| c.proxy_cpu_share),
            "bench_core_busy": of(&|c| Some(c.bench_cpu_share)),
            "closed_loop_latency_us": { "p50": of(&|c| Some(c.closed_p50_us)), "p99": of(&|c| Some(c.closed_p99_us)) },
            "upstream_handshakes": closed.iter().map(|c| c.handshakes).collect::<Vec<_>>(),
            "upstream_requests": closed.iter().map(|c| c.forwarded).collect::<Vec<_>>(),
            "handshakes_per_10k_requests": of(&per_10k),
            "rss_idle_mib": of(&|c| c.rss_idle_mib),
            "rss_idle_connections_mib": of(&|c| c.rss_connections_mib),
            "idle_connections_answered_200": closed.iter().map(|c| c.idle_connections_ok).collect::<Vec<_>>(),
            "threads": closed.iter().filter_map(|c| c.threads).max(),
            "processes": closed.iter().filter_map(|c| c.processes).max(),
            "statuses_closed": merge_statuses(closed.iter().map(|c| &c.statuses)),
            "statuses_idle_connections": merge_statuses(closed.iter().map(|c| &c.idle_statuses)),
            "open_loop": {
                "rate_per_s": open.first().map(|o| round1(o.rate)),
                "achieved_per_s": spread(&open.iter().map(|o| o.achieved).collect::<Vec<_>>()),
                "latency_us": latency,
                "added_over_direct_us": added,
                "cpu_us_per_request": if open_cpu.is_empty() { Value::Null } else { spread(&open_cpu) },
                "kernel_us_per_request": if open_kernel.is_empty() { Value::Null } else { spread(&open_kernel) },
                "upstream_handshakes": open.iter().map(|o| o.handshakes).collect::<Vec<_>>(),
                "statuses": merge_statuses(open.iter().map(|o| &o.statuses)),
                // Per run: ms the hypervisor took from each vCPU meanwhile.
                "steal_ms_by_cpu": open
                    .iter()
                    .map(|o| o.steal_ms_by_cpu.iter().map(|ms| ms.round()).collect::<Vec<_>>())
                    .collect::<Vec<_>>(),
                // Per round: runs it took to get one under the steal limit
                // (or the quietest of them).
                "attempts": open.iter().map(|o| o.attempts).collect::<Vec<_>>(),
            },
        })
    }

    pub fn json(&self) -> anyhow::Result<Value> {
        let s = self.settings;
        let mut paths = serde_json::Map::new();
        for kind in PathKind::ALL {
            paths.insert(kind.key().into(), self.path_json(kind));
        }
        let paths = Value::Object(paths);
        let targets = targets(&paths, s.connections);
        Ok(json!({
            "question": "Kakunin against nginx and HAProxy doing the same TLS origination (and the client speaking mTLS itself), same run, same machine, same upstream",
            "settings": {
                "connections": s.connections,
                "body_bytes": s.body_bytes,
                "closed_seconds": s.closed_seconds,
                "open_seconds": s.open_seconds,
                "warmup_seconds": s.warmup_seconds,
                "max_steal_ms_per_s": s.max_steal_ms_per_s,
                "open_attempts": s.open_attempts,
                "open_loop_pacing": "a thread of its own, high-resolution sleep, 1 ns timer slack",
                "runs": s.runs,
                "idle_connections": s.idle_connections,
                "open_loop_rate_per_s": round1(self.rate),
                "kms_open_loop_rate_per_s": round1(self.kms_rate),
                "rate_rule": if s.rate.is_some() { "given (--rate)" } else { "half the slowest non-KMS path's median closed-loop throughput" },
                "kms_sign_delay_ms": u64::try_from(s.kms_delay.as_millis()).unwrap_or(u64::MAX),
                "kms_sign_quota_per_s": s.kms_quota,
                "smoke": s.smoke,
            },
            "machine": machine(s, &self.load_before, &self.load_after),
            "cpu_over_the_run": self.others,
            "paths": paths,
            "targets": targets,
            "kms_standin_totals": self.kms_totals,
            "elapsed_s": round1(self.elapsed.as_secs_f64()),
            "measured_at_unix": crate::agents::unix_secs(std::time::SystemTime::now()),
        }))
    }
}

/// What the machine and the programs were.
fn machine(s: &Settings, load_before: &str, load_after: &str) -> Value {
    let first_line = |program: &str, arg: &str| -> String {
        let Ok(path) = super::install::find(program) else {
            return String::new();
        };
        std::process::Command::new(path)
            .arg(arg)
            .output()
            .map(|o| {
                let text = [o.stdout, o.stderr].concat();
                String::from_utf8_lossy(&text)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            })
            .unwrap_or_default()
    };
    let git_head = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .map(|head| {
            // The binary is built from the work tree, which may hold
            // changes to its crates not yet committed.
            let clean = std::process::Command::new("git")
                .args(["diff", "--quiet", "HEAD", "--"])
                .args(["proxy", "signer", "policy", "authority", "verifier"])
                .args(["Cargo.toml", "Cargo.lock"])
                .status()
                .is_ok_and(|s| s.success());
            if clean {
                head
            } else {
                format!("{head} + uncommitted changes")
            }
        });
    let binary_age = std::fs::metadata(&s.kakunin_bin)
        .and_then(|m| m.modified())
        .ok()
        .map(crate::agents::unix_secs);
    json!({
        // This process is pinned by now: available_parallelism would say 1.
        "online_cpus": std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default().trim(),
        "proxy_core": s.proxy_core,
        "bench_core": s.bench_core,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "nginx": first_line("nginx", "-v"),
        "haproxy": first_line("haproxy", "-v"),
        "kakunin_binary": s.kakunin_bin.display().to_string(),
        "kakunin_binary_modified_unix": binary_age,
        "git_head": git_head,
    })
}

fn median_at(paths: &Value, path: &str, pointer: &str) -> Option<f64> {
    paths[path].pointer(pointer)?.get("median")?.as_f64()
}

/// The targets for Kakunin with per-request signing, each with
/// what it came to (measured, never asserted): for one signature per
/// request, then for batch signatures.
fn targets(paths: &Value, pool: usize) -> Value {
    let mut out = Vec::new();
    for (k, how) in [
        ("kakunin_signed", "one signature per request"),
        ("kakunin_batched", "batch signatures"),
    ] {
        if paths.get(k).is_some() {
            out.extend(targets_of(paths, pool, k, how));
        }
    }
    Value::Array(out)
}

fn targets_of(paths: &Value, pool: usize, k: &str, how: &str) -> Vec<Value> {
    let m = |path: &str, pointer: &str| median_at(paths, path, pointer);
    let mut out = Vec::new();
    let mut add =
        |name: &str, target: String, measured: Option<f64>, limit: Option<f64>, at_least: bool| {
            let met = match (measured, limit) {
                (Some(v), Some(l)) => Some(if at_least { v >= l } else { v <= l }),
                _ => None,
            };
            out.push(json!({
                "target": name,
                "signing": how,
                "rule": target,
                "measured": measured.map(|v| (v * 100.0).round() / 100.0),
                "limit": limit.map(|v| (v * 100.0).round() / 100.0),
                "met": met,
            }));
        };
    let (kt, nt) = (m(k, "/throughput_per_s"), m("nginx", "/throughput_per_s"));
    add(
        "throughput",
        "≥ 1.0 × nginx (closed loop, requests/s)".into(),
        kt,
        nt,
        true,
    );
    let kc = m(k, "/cpu_us_per_request");
    add(
        "CPU per request vs nginx",
        "≤ nginx (µs of proxy CPU per request)".into(),
        kc,
        m("nginx", "/cpu_us_per_request"),
        false,
    );
    add(
        "CPU per request vs HAProxy",
        "≤ HAProxy (µs of proxy CPU per request)".into(),
        kc,
        m("haproxy", "/cpu_us_per_request"),
        false,
    );
    add(
        "added p99",
        "≤ 0.5 × nginx's added p99 over direct (µs, open loop)".into(),
        m(k, "/open_loop/added_over_direct_us/p99"),
        m("nginx", "/open_loop/added_over_direct_us/p99").map(|v| v * 0.5),
        false,
    );
    add(
        "upstream handshakes",
        format!("≤ {pool} (the pool) per 10,000 requests"),
        m(k, "/handshakes_per_10k_requests"),
        Some(pool as f64),
        false,
    );
    add(
        "RSS with idle agent connections",
        "≤ 30 MiB".into(),
        m(k, "/rss_idle_connections_mib"),
        Some(30.0),
        false,
    );
    out
}

fn cell(v: &Value, decimals: usize) -> String {
    let get = |key: &str| v.get(key).and_then(Value::as_f64);
    match (get("median"), get("min"), get("max")) {
        (Some(m), Some(lo), Some(hi)) => {
            if (hi - lo).abs() < f64::EPSILON {
                format!("{m:.decimals$}")
            } else {
                format!("{m:.decimals$} [{lo:.decimals$}..{hi:.decimals$}]")
            }
        }
        _ => "-".into(),
    }
}

/// The results as Markdown tables: one row per path, then the targets.
pub fn table(json: &Value) -> String {
    let paths = &json["paths"];
    let settings = &json["settings"];
    let mut out = String::new();
    out.push_str(&format!(
        "| path | requests/s (closed loop) | proxy CPU µs/request | of it in the kernel µs | proxy core busy | added p50 µs | added p99 µs | added p99.9 µs | p99 µs at {} /s | upstream handshakes /10,000 requests | RSS idle MiB | RSS {} idle agent connections MiB |\n",
        settings["open_loop_rate_per_s"], settings["idle_connections"]
    ));
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for kind in PathKind::ALL {
        let p = &paths[kind.key()];
        let added = &p["open_loop"]["added_over_direct_us"];
        let busy = p["proxy_core_busy"]
            .get("median")
            .and_then(Value::as_f64)
            .map_or("-".to_string(), |v| format!("{:.0}%", v * 100.0));
        let (added50, added99, added999) = if kind == PathKind::Direct {
            (
                "(floor)".to_string(),
                "(floor)".to_string(),
                "(floor)".to_string(),
            )
        } else {
            (
                cell(&added["p50"], 0),
                cell(&added["p99"], 0),
                cell(&added["p99.9"], 0),
            )
        };
        let label = if kind.is_kms() {
            format!(
                "{} (open loop at {} /s)",
                kind.label(),
                p["open_loop"]["rate_per_s"]
            )
        } else {
            kind.label().to_string()
        };
        out.push_str(&format!(
            "| {label} | {} | {} | {} | {busy} | {added50} | {added99} | {added999} | {} | {} | {} | {} |\n",
            cell(&p["throughput_per_s"], 0),
            cell(&p["cpu_us_per_request"], 1),
            cell(&p["kernel_us_per_request"], 1),
            cell(&p["open_loop"]["latency_us"]["p99"], 0),
            cell(&p["handshakes_per_10k_requests"], 1),
            cell(&p["rss_idle_mib"], 1),
            cell(&p["rss_idle_connections_mib"], 1),
        ));
    }
    out.push_str("\n| target (Kakunin, signing, file key) | signing | rule | measured | limit | met |\n|---|---|---|---|---|---|\n");
    if let Some(targets) = json["targets"].as_array() {
        for t in targets {
            let num = |v: &Value| v.as_f64().map_or("-".to_string(), |v| format!("{v:.1}"));
            let met = match t["met"].as_bool() {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "-",
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {met} |\n",
                t["target"].as_str().unwrap_or_default(),
                t["signing"].as_str().unwrap_or_default(),
                t["rule"].as_str().unwrap_or_default(),
                num(&t["measured"]),
                num(&t["limit"]),
            ));
        }
    }
    out
}

const BEGIN: &str = "<!-- all:results:begin (written by `kakunin-bench all`) -->";
const END: &str = "<!-- all:results:end -->";

/// Replaces the text between the markers in `readme` with the newest
/// results (the method around them is prose kept by hand); appends the
/// markers at the end if they are missing.
pub fn update_readme(readme: &std::path::Path, json: &Value) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(readme)?;
    let m = &json["machine"];
    let s = &json["settings"];
    let body = format!(
        "{BEGIN}\n\nResults of the newest run ({} round(s); median [min..max]; {} s in all; load average before {}, after {}; other processes used {} cores on average over the run; kakunin at {}; `bench/results/all.json`):\n\n{}\n![latency percentiles per path](results/all-latency.svg)\n\n{END}",
        s["runs"],
        json["elapsed_s"],
        m["loadavg_before"].as_str().unwrap_or_default(),
        m["loadavg_after"].as_str().unwrap_or_default(),
        json["cpu_over_the_run"]["other_processes_cores"],
        m["git_head"].as_str().unwrap_or("?"),
        table(json),
    );
    let updated = match (text.find(BEGIN), text.find(END)) {
        (Some(begin), Some(end)) if end > begin => {
            format!("{}{body}{}", &text[..begin], &text[end + END.len()..])
        }
        _ => format!("{}\n{body}\n", text.trim_end()),
    };
    std::fs::write(readme, updated)?;
    Ok(())
}
