//! `kakunin-bench all --smoke`: every path of the comparison (direct mTLS,
//! nginx, HAProxy, Kakunin without and with signing, Kakunin with the KMS
//! stand-in) starts, answers 200 to every request, and the results and the
//! plot are written where `--out` says, not into bench/results.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

#[test]
fn bench_all_smoke_answers_on_every_path() {
    let kakunin = common::kakunin_bin();
    let bench = kakunin.with_file_name("kakunin-bench");
    assert!(
        bench.exists(),
        "{} not found: build it first (cargo build --workspace --bins)",
        bench.display()
    );
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(&bench)
        .args(["all", "--smoke", "--out"])
        .arg(out.path())
        .arg("--kakunin")
        .arg(&kakunin)
        .output()
        .expect("run kakunin-bench");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "kakunin-bench all --smoke failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        run.status
    );
    assert!(stdout.contains("every path answered 200"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("all.json")).unwrap())
            .unwrap();
    for path in [
        "direct",
        "nginx",
        "haproxy",
        "kakunin_unsigned",
        "kakunin_signed",
        "kakunin_batched",
        "kakunin_kms",
        "kakunin_kms_batched",
    ] {
        assert!(
            report["paths"][path]["statuses_closed"]["200"].as_u64() > Some(0),
            "{path}: {}",
            report["paths"][path]
        );
    }
    let svg = std::fs::read_to_string(out.path().join("all-latency.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "not an SVG: {svg:.80}");
}
