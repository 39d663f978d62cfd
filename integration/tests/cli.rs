//! The command line against independent tools: openssl reads what `ca issue`
//! wrote; `policy check` lints; `demo` runs to the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::kakunin_bin;

const SEED_POLICY: &str = include_str!("../../policy/tests/fixtures/seed-policy.json");

fn kakunin(args: &[&str]) -> std::process::Output {
    Command::new(kakunin_bin())
        .args(args)
        .env("KAKUNIN_LOG", "warn")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn ca_issue_writes_a_certificate_openssl_understands() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, SEED_POLICY).unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();

    let init = kakunin(&[
        "ca",
        "init",
        "--dir",
        &ca.display().to_string(),
        "--trust-domain",
        "example.org",
    ]);
    assert!(init.status.success(), "{}", text(&init.stderr));
    let issue = kakunin(&[
        "ca",
        "issue",
        "--dir",
        &ca.display().to_string(),
        "--agent-id",
        "trading_bot_v2",
        "--policy",
        &policy.display().to_string(),
        "--key-out",
        &path("agent-key.pem"),
        "--out",
        &path("agent.pem"),
    ]);
    assert!(issue.status.success(), "{}", text(&issue.stderr));

    let shown = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in", &path("agent.pem")])
        .output()
        .unwrap();
    assert!(shown.status.success());
    let shown = text(&shown.stdout);
    for expected in [
        "Subject: CN = trading_bot_v2",
        "URI:spiffe://example.org/agent/trading_bot_v2",
        "X509v3 Key Usage: critical",
        "Digital Signature",
        "TLS Web Client Authentication",
        "1.3.6.1.4.1.32473.1.1:",
        "\"agent_id\":\"trading_bot_v2\"",
        "ecdsa-with-SHA256",
    ] {
        assert!(
            shown.contains(expected),
            "missing {expected:?} in:\n{shown}"
        );
    }
    // The scope extension is not critical: other receivers may ignore it.
    assert!(
        !shown.contains("1.3.6.1.4.1.32473.1.1: critical"),
        "{shown}"
    );

    let verify = Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(ca.join("ca.pem"))
        .arg(path("agent.pem"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );

    // The key matches the certificate.
    let pubkey = |args: &[&str]| text(&Command::new("openssl").args(args).output().unwrap().stdout);
    assert_eq!(
        pubkey(&["x509", "-noout", "-pubkey", "-in", &path("agent.pem")]),
        pubkey(&["pkey", "-pubout", "-in", &path("agent-key.pem")])
    );

    // A policy for another agent is refused.
    let other = kakunin(&[
        "ca",
        "issue",
        "--dir",
        &ca.display().to_string(),
        "--agent-id",
        "other_bot",
        "--policy",
        &policy.display().to_string(),
        "--key-out",
        &path("k2.pem"),
        "--out",
        &path("c2.pem"),
    ]);
    assert!(!other.status.success());
}

#[test]
fn policy_check_prints_the_effective_policy_or_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("seed.json");
    std::fs::write(&good, SEED_POLICY).unwrap();
    let out = kakunin(&["policy", "check", &good.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let effective: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(effective["agent_id"], "trading_bot_v2");

    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        "{\n  \"agent_id\": \"a\",\n  \"network_rules\": {\n    \"allowd_hosts\": [\"x\"],\n    \"denied_cidrs\": [\"10.0.0.0/99\"]\n  },\n  \"mode\": \"loud\"\n}\n",
    )
    .unwrap();
    let out = kakunin(&["policy", "check", &bad.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let errors = text(&out.stderr);
    assert!(
        errors.contains("bad.json:4:5") && errors.contains("allowd_hosts"),
        "{errors}"
    );
    assert!(errors.contains("denied_cidrs"), "{errors}");
    assert!(errors.contains("mode"), "{errors}");
}

#[test]
fn demo_runs_to_the_end_with_every_expected_answer() {
    let out = kakunin(&["demo"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("every request got the expected answer"),
        "{stdout}"
    );
    for expected in [
        "200 POST",
        "action_denied",
        "host_denied",
        "2852039166",
        "rate_limited",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?}:\n{stdout}");
    }
    assert!(!stdout.contains("!! "), "{stdout}");
}
