//! Certificate rotation in a running proxy: `kakunin ca rotate` + the file
//! replaced under load (no failed request, the upstream sees the new
//! serial), and a certificate for another key refused on SIGHUP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use kakunin_authority::Validity;

const MARKETS: &str = "http://api.exchange.com/v1/markets";

/// Replaces a file the way deployment tools do: write aside, then rename,
/// so the proxy never reads half a certificate.
fn replace_file(path: &std::path::Path, contents: &[u8]) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, contents).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_under_load_fails_no_request_and_the_upstream_sees_the_new_serial() {
    let pki = Arc::new(Pki::new());
    let exchange = pki.exchange().await;
    let config = pki.config(POLICY, exchange.addr(), "");
    let old_serial = serial_of(&pki.path("agent.pem"));
    let (answers, new_serial) = tokio::task::spawn_blocking({
        let pki = pki.clone();
        move || {
            let proxy = Arc::new(ProxyProcess::start(&config));
            let stop = Arc::new(AtomicBool::new(false));
            let answers = Arc::new(Mutex::new(Vec::<(u16, String)>::new()));
            let clients: Vec<_> = (0..4)
                .map(|_| {
                    let (proxy, stop, answers) = (proxy.clone(), stop.clone(), answers.clone());
                    std::thread::spawn(move || {
                        while !stop.load(Ordering::SeqCst) {
                            let answer = curl(&proxy, &[MARKETS]);
                            let serial = serde_json::from_str::<serde_json::Value>(&answer.body)
                                .ok()
                                .and_then(|v| v["client_cert_serial"].as_str().map(String::from))
                                .unwrap_or_else(|| answer.body.clone());
                            answers.lock().unwrap().push((answer.status, serial));
                        }
                    })
                })
                .collect();
            assert!(wait_for(Duration::from_secs(10), || answers
                .lock()
                .unwrap()
                .len()
                >= 8));

            // Same key (it would live in a KMS), new certificate; the old one
            // stays good for the grace period.
            let rotated = pki.path("rotated.pem");
            pki.ca(&[
                "rotate",
                "--agent-id",
                "trading_bot_v2",
                "--grace",
                "600",
                "--out",
                rotated.to_str().unwrap(),
            ]);
            let new_serial = serial_of(&rotated);
            replace_file(&pki.path("agent.pem"), &std::fs::read(&rotated).unwrap());
            let seen_new = wait_for(Duration::from_secs(15), || {
                answers
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|(_, s)| *s == new_serial)
            });
            // Some more traffic on the new identity, then stop.
            let count = answers.lock().unwrap().len();
            wait_for(Duration::from_secs(5), || {
                answers.lock().unwrap().len() >= count + 8
            });
            stop.store(true, Ordering::SeqCst);
            for client in clients {
                client.join().unwrap();
            }
            assert!(seen_new, "the upstream never saw serial {new_serial}");
            let last = curl(&proxy, &[MARKETS]);
            assert_eq!(last.json()["client_cert_serial"], new_serial.as_str());
            let answers = answers.lock().unwrap().clone();
            (answers, new_serial)
        }
    })
    .await
    .unwrap();
    let failed: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status != 200)
        .collect();
    assert!(failed.is_empty(), "failed during rotation: {failed:?}");
    assert!(answers.iter().any(|(_, s)| *s == old_serial));
    let rotated = pki.audit_events("identity.rotated");
    assert_eq!(rotated.len(), 1, "{rotated:?}");
    assert_eq!(rotated[0]["old_cert_serial"], old_serial.as_str());
    assert_eq!(rotated[0]["agent_cert_serial"], new_serial.as_str());
    // New connections were made for the new identity.
    assert!(exchange.handshakes() >= 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_for_another_key_is_refused_and_the_old_one_stays_in_use() {
    let pki = Arc::new(Pki::new());
    let exchange = pki.exchange().await;
    let config = pki.config(POLICY, exchange.addr(), "");
    let old_serial = serial_of(&pki.path("agent.pem"));
    let other_key = pki.issue(POLICY, Validity::Hours(1));
    let answer = tokio::task::spawn_blocking({
        let pki = pki.clone();
        move || {
            // A long reload interval: only SIGHUP can trigger the reload.
            let proxy =
                ProxyProcess::start_with(&config, &["--identity-reload-interval-ms", "3600000"]);
            assert_eq!(curl(&proxy, &[MARKETS]).status, 200);
            replace_file(&pki.path("agent.pem"), other_key.cert_pem.as_bytes());
            proxy.hangup();
            assert!(
                wait_for(Duration::from_secs(10), || {
                    !pki.audit_events("identity.rotation_refused").is_empty()
                }),
                "the mismatched certificate was not refused"
            );
            curl(&proxy, &[MARKETS])
        }
    })
    .await
    .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["client_cert_serial"], old_serial.as_str());
    let refused = pki.audit_events("identity.rotation_refused");
    let reason = refused[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("match") || reason.contains("key"),
        "the reason names the key mismatch: {reason}"
    );
    assert!(pki.audit_events("identity.rotated").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_certificate_lifts_a_halt_and_the_revoked_one_never_returns() {
    let pki = Arc::new(Pki::new());
    let exchange = pki.exchange().await;
    let config = pki.config(POLICY, exchange.addr(), "");
    let revoked = std::fs::read(pki.path("agent.pem")).unwrap();
    let old_serial = serial_of(&pki.path("agent.pem"));
    let (halted, after_rotation, after_rollback, new_serial) = tokio::task::spawn_blocking({
        let pki = pki.clone();
        move || {
            let proxy = ProxyProcess::start(&config);
            assert_eq!(curl(&proxy, &[MARKETS]).status, 200);
            pki.ca(&[
                "revoke",
                "--serial",
                &old_serial,
                "--reason",
                "keyCompromise",
            ]);
            assert!(wait_for(Duration::from_secs(15), || {
                curl(&proxy, &[MARKETS]).status == 403
            }));
            let halted = curl(&proxy, &[MARKETS]);
            // The operator issues a new certificate for the same key (a
            // revoked certificate cannot be rotated: it is over).
            let public = pki.path("agent-pub.pem");
            let status = std::process::Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(pki.path("agent-key.pem"))
                .arg("-out")
                .arg(&public)
                .status()
                .unwrap();
            assert!(status.success());
            let rotated = pki.path("rotated.pem");
            pki.ca(&[
                "issue",
                "--agent-id",
                "trading_bot_v2",
                "--policy",
                pki.path("policy.json").to_str().unwrap(),
                "--public-key",
                public.to_str().unwrap(),
                "--out",
                rotated.to_str().unwrap(),
            ]);
            replace_file(&pki.path("agent.pem"), &std::fs::read(&rotated).unwrap());
            proxy.hangup();
            assert!(wait_for(Duration::from_secs(15), || {
                curl(&proxy, &[MARKETS]).status == 200
            }));
            let after_rotation = curl(&proxy, &[MARKETS]);
            // Putting the revoked certificate back is refused.
            replace_file(&pki.path("agent.pem"), &revoked);
            proxy.hangup();
            assert!(wait_for(Duration::from_secs(10), || {
                !pki.audit_events("identity.rotation_refused").is_empty()
            }));
            let after_rollback = curl(&proxy, &[MARKETS]);
            (halted, after_rotation, after_rollback, serial_of(&rotated))
        }
    })
    .await
    .unwrap();
    assert_eq!(halted.code(), "identity_revoked");
    assert_eq!(
        after_rotation.json()["client_cert_serial"],
        new_serial.as_str()
    );
    assert_eq!(after_rollback.status, 200, "{}", after_rollback.body);
    assert_eq!(
        after_rollback.json()["client_cert_serial"],
        new_serial.as_str()
    );
    let refused = pki.audit_events("identity.rotation_refused");
    assert!(
        refused[0]["reason"].as_str().unwrap().contains("revoked"),
        "{refused:?}"
    );
}
