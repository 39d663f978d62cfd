//! `kakunin ca serve` as a real process, checked by independent peers:
//! `openssl ocsp` (POST) verifies signatures and statuses, curl fetches the
//! GET form, the CRL and the watch stream, and hostile input gets the right
//! OCSP status or HTTP error while the server stays up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;
use common::kakunin_bin;

const SEED_POLICY: &str = include_str!("../../policy/tests/fixtures/seed-policy.json");

struct Served {
    dir: tempfile::TempDir,
    url: String,
    child: Child,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(dir: &Path, program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("KAKUNIN_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = run(dir, program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout) + &text(&out.stderr)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Served {
    /// A CA (in `ca/`) with one agent certificate (`agent.pem`), served.
    fn start() -> Served {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("policy.json"), SEED_POLICY).unwrap();
        let kakunin = kakunin_bin();
        let kakunin = kakunin.to_str().unwrap();
        ok(root, kakunin, &["ca", "init", "--dir", "ca"]);
        ok(
            root,
            kakunin,
            &[
                "ca",
                "issue",
                "--dir",
                "ca",
                "--agent-id",
                "trading_bot_v2",
                "--policy",
                "policy.json",
                "--key-out",
                "agent-key.pem",
                "--out",
                "agent.pem",
            ],
        );
        let mut child = Command::new(kakunin)
            .args(["ca", "serve", "--dir", "ca", "--listen", "127.0.0.1:0"])
            .current_dir(root)
            .env("KAKUNIN_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("kakunin: ca serving on ") {
                    let _ = tx.send(addr.to_string());
                } else {
                    eprintln!("[ca serve] {line}");
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("ca serve did not start");
        Served {
            dir,
            url: format!("http://{addr}"),
            child,
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root().join(name)
    }

    fn kakunin(&self, args: &[&str]) -> String {
        ok(self.root(), kakunin_bin().to_str().unwrap(), args)
    }

    fn serial(&self) -> String {
        let out = ok(
            self.root(),
            "openssl",
            &["x509", "-in", "agent.pem", "-noout", "-serial"],
        );
        out.trim().trim_start_matches("serial=").to_lowercase()
    }

    /// `openssl ocsp` against the server, verifying the response.
    fn openssl_ocsp(&self) -> String {
        let ocsp_url = format!("{}/ocsp", self.url);
        ok(
            self.root(),
            "openssl",
            &[
                "ocsp",
                "-issuer",
                "ca/ca.pem",
                "-cert",
                "agent.pem",
                "-url",
                &ocsp_url,
                "-CAfile",
                "ca/ca.pem",
            ],
        )
    }

    /// POSTs `body` to /ocsp; (HTTP status, body file).
    fn post(&self, body: &[u8], name: &str) -> (u16, PathBuf) {
        let input = self.path(&format!("{name}.in"));
        std::fs::write(&input, body).unwrap();
        let output = self.path(&format!("{name}.out"));
        let data = format!("@{}", input.display());
        let url = format!("{}/ocsp", self.url);
        let status = ok(
            self.root(),
            "curl",
            &[
                "-s",
                "-o",
                output.to_str().unwrap(),
                "-w",
                "%{http_code}",
                "-H",
                "content-type: application/ocsp-request",
                "--data-binary",
                &data,
                &url,
            ],
        );
        (status.trim().parse().unwrap(), output)
    }

    /// The OCSP response status (and certificate status) as openssl reads
    /// the DER in `file`, lower-cased (openssl prints error statuses as
    /// "Responder Error: malformedrequest" and exits non-zero).
    fn response_text(&self, file: &Path) -> String {
        let out = run(
            self.root(),
            "openssl",
            &[
                "ocsp",
                "-respin",
                file.to_str().unwrap(),
                "-resp_text",
                "-noverify",
            ],
        );
        (text(&out.stdout) + &text(&out.stderr)).to_lowercase()
    }

    fn request_for(&self, args: &[&str], name: &str) -> Vec<u8> {
        let out = self.path(name);
        let mut all = vec!["ocsp", "-no_nonce", "-reqout", out.to_str().unwrap()];
        all.extend_from_slice(args);
        ok(self.root(), "openssl", &all);
        std::fs::read(out).unwrap()
    }
}

#[test]
fn openssl_ocsp_verifies_good_then_revoked_with_its_reason() {
    let served = Served::start();
    let answer = served.openssl_ocsp();
    assert!(answer.contains("Response verify OK"), "{answer}");
    assert!(answer.contains("agent.pem: good"), "{answer}");
    served.kakunin(&[
        "ca",
        "revoke",
        "--dir",
        "ca",
        "--serial",
        &served.serial(),
        "--reason",
        "keyCompromise",
    ]);
    let answer = served.openssl_ocsp();
    assert!(answer.contains("Response verify OK"), "{answer}");
    assert!(answer.contains("agent.pem: revoked"), "{answer}");
    assert!(answer.contains("Reason: keyCompromise"), "{answer}");
}

#[test]
fn the_get_form_answers_like_post() {
    let served = Served::start();
    let request = served.request_for(&["-issuer", "ca/ca.pem", "-cert", "agent.pem"], "req.der");
    let encoded = base64::engine::general_purpose::STANDARD.encode(&request);
    // RFC 6960 A.1: base64, then URL-encoded.
    let escaped = encoded
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let url = format!("{}/ocsp/{escaped}", served.url);
    let resp = served.path("get.der");
    ok(
        served.root(),
        "curl",
        &["-sf", "-o", resp.to_str().unwrap(), &url],
    );
    let answer = ok(
        served.root(),
        "openssl",
        &[
            "ocsp",
            "-no_nonce",
            "-respin",
            "get.der",
            "-issuer",
            "ca/ca.pem",
            "-cert",
            "agent.pem",
            "-CAfile",
            "ca/ca.pem",
        ],
    );
    assert!(answer.contains("Response verify OK"), "{answer}");
    assert!(answer.contains("agent.pem: good"), "{answer}");
}

#[test]
fn the_crl_at_its_distribution_point_revokes_for_openssl_verify() {
    let served = Served::start();
    let fetch_crl = || {
        let crl_url = format!("{}/crl", served.url);
        ok(served.root(), "curl", &["-sf", "-o", "crl.der", &crl_url]);
        ok(
            served.root(),
            "openssl",
            &["crl", "-inform", "DER", "-in", "crl.der", "-out", "crl.pem"],
        );
        run(
            served.root(),
            "openssl",
            &[
                "verify",
                "-crl_check",
                "-CAfile",
                "ca/ca.pem",
                "-CRLfile",
                "crl.pem",
                "agent.pem",
            ],
        )
    };
    let before = fetch_crl();
    assert!(before.status.success(), "{}", text(&before.stderr));
    let crl_text = ok(
        served.root(),
        "openssl",
        &["crl", "-in", "crl.pem", "-noout", "-text"],
    );
    assert!(crl_text.contains("Next Update"), "{crl_text}");
    served.kakunin(&[
        "ca",
        "revoke",
        "--dir",
        "ca",
        "--serial",
        &served.serial(),
        "--reason",
        "superseded",
    ]);
    // The server notices the change within its poll interval.
    let mut after = fetch_crl();
    for _ in 0..50 {
        if !after.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        after = fetch_crl();
    }
    let out = text(&after.stdout) + &text(&after.stderr);
    assert!(!after.status.success());
    assert!(out.contains("certificate revoked"), "{out}");
}

#[test]
fn the_watch_stream_announces_a_revocation() {
    let served = Served::start();
    let mut curl = Command::new("curl")
        .args(["-sN", "--max-time", "20", &format!("{}/watch", served.url)])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = curl.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    // The greeting first: the subscription is live.
    while !seen.iter().any(|l: &String| l == "event: hello") {
        seen.push(rx.recv_timeout(Duration::from_secs(10)).unwrap());
    }
    let serial = served.serial();
    served.kakunin(&[
        "ca",
        "revoke",
        "--dir",
        "ca",
        "--serial",
        &serial,
        "--reason",
        "keyCompromise",
    ]);
    let mut announced = None;
    while announced.is_none() {
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        if line.starts_with("data:")
            && line.contains(&serial)
            && seen.last().is_some_and(|l| l == "event: revoked")
        {
            announced = Some(line.clone());
        }
        seen.push(line);
    }
    let _ = curl.kill();
    let _ = curl.wait();
    let data: serde_json::Value =
        serde_json::from_str(announced.unwrap().trim_start_matches("data:").trim()).unwrap();
    assert_eq!(data["reason"], "keyCompromise");
    assert_eq!(data["agent_id"], "trading_bot_v2");
}

#[test]
fn hostile_requests_get_ocsp_errors_or_http_errors_and_the_server_stays_up() {
    let served = Served::start();
    let status_of = |body: &[u8], name: &str| {
        let (http, file) = served.post(body, name);
        assert_eq!(http, 200, "{name}: OCSP errors travel as OCSP responses");
        served.response_text(&file)
    };
    for (name, body) in [
        ("garbage", b"this is not DER".to_vec()),
        ("empty", Vec::new()),
        ("zeros", vec![0u8; 4096]),
        (
            "nested",
            [[0x30u8, 0x84, 0xff, 0xff, 0xff, 0xff]; 8].concat(),
        ),
    ] {
        let text = status_of(&body, name);
        assert!(text.contains("malformedrequest"), "{name}: {text}");
    }
    let good = served.request_for(&["-issuer", "ca/ca.pem", "-cert", "agent.pem"], "good.der");
    for cut in [1, good.len() / 2, good.len() - 1] {
        let text = status_of(&good[..cut], "truncated");
        assert!(text.contains("malformedrequest"), "cut at {cut}: {text}");
    }
    // A serial this CA never issued.
    let unknown = served.request_for(
        &["-issuer", "ca/ca.pem", "-serial", "0x1234"],
        "unknown.der",
    );
    let text = status_of(&unknown, "unknown");
    assert!(text.contains("successful"), "{text}");
    assert!(text.contains("cert status: unknown"), "{text}");
    // A certificate of another CA: not ours to answer.
    served.kakunin(&["ca", "init", "--dir", "other-ca"]);
    served.kakunin(&[
        "ca",
        "issue",
        "--dir",
        "other-ca",
        "--agent-id",
        "trading_bot_v2",
        "--policy",
        "policy.json",
        "--key-out",
        "other-key.pem",
        "--out",
        "other.pem",
    ]);
    let foreign = served.request_for(
        &["-issuer", "other-ca/ca.pem", "-cert", "other.pem"],
        "foreign.der",
    );
    let text = status_of(&foreign, "foreign");
    assert!(text.contains("unauthorized"), "{text}");
    // HTTP-level abuse.
    let (http, _) = served.post(&vec![0x30u8; 2 * 1024 * 1024], "huge");
    assert_eq!(http, 413);
    let get_garbage = format!("{}/ocsp/%%%not-base64%%%", served.url);
    let resp = served.path("get-garbage.der");
    ok(
        served.root(),
        "curl",
        &["-sf", "-o", resp.to_str().unwrap(), &get_garbage],
    );
    assert!(served.response_text(&resp).contains("malformedrequest"));
    let code = |method: &str, path: &str| {
        let url = format!("{}{path}", served.url);
        ok(
            served.root(),
            "curl",
            &[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                method,
                &url,
            ],
        )
    };
    assert_eq!(code("PUT", "/ocsp"), "405");
    assert_eq!(code("GET", "/nothing-here"), "404");
    // Still serving, and still right.
    assert_eq!(code("GET", "/healthz"), "200");
    assert!(served.openssl_ocsp().contains("agent.pem: good"));
}

#[test]
fn a_corrupt_database_stops_ca_serve_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let kakunin = kakunin_bin();
    ok(
        dir.path(),
        kakunin.to_str().unwrap(),
        &["ca", "init", "--dir", "ca"],
    );
    std::fs::write(dir.path().join("ca/ca.db"), vec![0x42u8; 8192]).unwrap();
    let mut child = Command::new(&kakunin)
        .args(["ca", "serve", "--dir", "ca", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(stderr.contains("ca.db"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
