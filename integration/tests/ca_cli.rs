//! `kakunin ca` as real processes, checked by independent tools: openssl
//! reads the certificates and CRLs, verifies chains against the CRL and makes
//! the CSRs; python's sqlite3 holds the database lock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::kakunin_bin;

const SEED_POLICY: &str = include_str!("../../policy/tests/fixtures/seed-policy.json");
const ISSUE: &str = "issue --dir ca --agent-id trading_bot_v2 --policy policy.json";

/// A CA in a temporary directory. Commands run there, so paths are short
/// and written the way an operator types them: `--dir ca --out agent.pem`.
struct Ca {
    dir: tempfile::TempDir,
}

impl Ca {
    fn new(init_flags: &str) -> Ca {
        let ca = Ca {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(ca.path("policy.json"), SEED_POLICY).unwrap();
        ca.ok(&format!("init --dir ca {init_flags}"));
        ca
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run_args(&self, args: &[&str]) -> Output {
        Command::new(kakunin_bin())
            .arg("ca")
            .args(args)
            .current_dir(self.dir.path())
            .env("KAKUNIN_LOG", "warn")
            .output()
            .unwrap()
    }

    /// `kakunin ca <words>`; asserts success and returns stdout.
    fn ok(&self, words: &str) -> String {
        let out = self.run_args(&words.split_whitespace().collect::<Vec<_>>());
        assert!(
            out.status.success(),
            "kakunin ca {words} failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// `kakunin ca <words>`; asserts a clean failure and returns stderr.
    fn fails(&self, words: &str) -> String {
        self.fails_args(&words.split_whitespace().collect::<Vec<_>>())
    }

    fn fails_args(&self, args: &[&str]) -> String {
        let out = self.run_args(args);
        let stderr = text(&out.stderr);
        assert!(
            !out.status.success(),
            "kakunin ca {args:?} should fail:\n{}",
            text(&out.stdout)
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        stderr
    }

    /// Issues for the seed policy's agent; returns the serial openssl reads.
    fn issue(&self, flags: &str) -> String {
        self.ok(&format!("{ISSUE} {flags}"));
        let out = flags
            .split_whitespace()
            .skip_while(|w| *w != "--out")
            .nth(1)
            .unwrap();
        self.serial(out)
    }

    fn serial(&self, cert: &str) -> String {
        let out = self.openssl(&format!("x509 -noout -serial -in {cert}"));
        out.trim()
            .trim_start_matches("serial=")
            .to_ascii_lowercase()
    }

    fn pubkey(&self, cert: &str) -> String {
        self.openssl(&format!("x509 -noout -pubkey -in {cert}"))
    }

    fn list(&self) -> Vec<serde_json::Value> {
        let out = self.ok("list --dir ca --json");
        match serde_json::from_str(&out).unwrap() {
            serde_json::Value::Array(rows) => rows,
            other => panic!("not an array: {other}"),
        }
    }

    fn openssl_output(&self, words: &str) -> Output {
        Command::new("openssl")
            .args(words.split_whitespace())
            .current_dir(self.dir.path())
            .output()
            .expect("openssl must be installed (the test command installs it)")
    }

    fn openssl(&self, words: &str) -> String {
        let out = self.openssl_output(words);
        assert!(
            out.status.success(),
            "openssl {words}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// `openssl verify -crl_check` against ca.pem and crl.pem: Ok or what
    /// openssl said.
    fn verify(&self, cert: &str) -> Result<(), String> {
        let out = self.openssl_output(&format!(
            "verify -crl_check -CAfile ca/ca.pem -CRLfile crl.pem {cert}"
        ));
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{}{}", text(&out.stdout), text(&out.stderr)))
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn row<'a>(rows: &'a [serde_json::Value], serial: &str) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| r["serial"] == serial)
        .unwrap_or_else(|| panic!("serial {serial} not in {rows:?}"))
}

#[test]
fn certificates_point_at_ocsp_and_crl_and_a_revocation_reaches_openssl() {
    let ca = Ca::new("--public-url http://ca.kakunin.test:8180/");
    let serial = ca.issue("--key-out agent-key.pem --out agent.pem");

    let shown = ca.openssl("x509 -noout -text -in agent.pem");
    for expected in [
        "Authority Information Access",
        "OCSP - URI:http://ca.kakunin.test:8180/ocsp",
        "X509v3 CRL Distribution Points",
        "URI:http://ca.kakunin.test:8180/crl",
    ] {
        assert!(shown.contains(expected), "missing {expected:?}:\n{shown}");
    }

    ca.ok("crl --dir ca --out crl.pem");
    ca.verify("agent.pem").unwrap();

    let upper = serial.to_ascii_uppercase();
    let out = ca.ok(&format!(
        "revoke --dir ca --serial {upper} --reason keyCompromise"
    ));
    assert!(
        out.contains(&serial) && out.contains("keyCompromise"),
        "{out}"
    );
    let again = ca.fails(&format!(
        "revoke --dir ca --serial {serial} --reason superseded"
    ));
    assert!(again.contains("already revoked"), "{again}");

    let made = ca.ok("crl --dir ca --out crl.pem --hours 2");
    assert!(made.contains("CRL number 2"), "{made}");
    let refused = ca.verify("agent.pem").unwrap_err();
    assert!(refused.contains("certificate revoked"), "{refused}");

    let crl = ca.openssl("crl -noout -text -in crl.pem");
    for expected in [
        "Next Update:",
        "X509v3 CRL Number",
        "Key Compromise",
        &upper,
    ] {
        assert!(crl.contains(expected), "missing {expected:?}:\n{crl}");
    }
    let number = crl
        .lines()
        .skip_while(|l| !l.contains("X509v3 CRL Number"))
        .nth(1)
        .unwrap()
        .trim();
    assert_eq!(number, "2", "{crl}");

    let rows = ca.list();
    assert_eq!(row(&rows, &serial)["status"], "revoked");
    assert_eq!(row(&rows, &serial)["reason"], "keyCompromise");
    let table = ca.ok("list --dir ca --agent-id trading_bot_v2");
    assert!(table.contains("revoked (keyCompromise"), "{table}");
}

#[test]
fn a_csr_gives_only_its_key_and_a_tampered_one_is_refused() {
    let ca = Ca::new("");
    ca.openssl(
        "req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout held-key.pem \
         -subj /CN=root-of-all -out req.pem",
    );
    ca.issue("--csr req.pem --out from-csr.pem");
    assert_eq!(
        ca.pubkey("from-csr.pem"),
        ca.openssl("pkey -pubout -in held-key.pem")
    );
    let subject = ca.openssl("x509 -noout -subject -in from-csr.pem");
    assert!(
        subject.contains("trading_bot_v2") && !subject.contains("root-of-all"),
        "{subject}"
    );

    // Change one letter of the requested subject: still a well-formed
    // request, but its signature no longer covers what it says.
    ca.openssl("req -in req.pem -outform DER -out req.der");
    let mut der = std::fs::read(ca.path("req.der")).unwrap();
    let at = der.windows(11).position(|w| w == b"root-of-all").unwrap();
    der[at] = b'R';
    std::fs::write(ca.path("tampered.der"), der).unwrap();
    ca.openssl("req -inform DER -in tampered.der -out tampered.pem");
    let err = ca.fails(&format!("{ISSUE} --csr tampered.pem --out nope.pem"));
    assert!(
        err.contains("tampered.pem") && err.contains("signature"),
        "{err}"
    );
    assert!(!ca.path("nope.pem").exists());

    // The wrong kind of file where a request belongs.
    let err = ca.fails(&format!("{ISSUE} --csr from-csr.pem --out nope.pem"));
    assert!(err.contains("CERTIFICATE REQUEST"), "{err}");
    assert_eq!(ca.list().len(), 1);
}

#[test]
fn rotation_keeps_the_key_and_supersedes_the_old_certificate() {
    let ca = Ca::new("");
    let old = ca.issue("--key-out key.pem --out old.pem");
    let rotate = "rotate --dir ca --agent-id trading_bot_v2";
    let out = ca.ok(&format!("{rotate} --grace 0 --out new.pem --hours 12"));
    let new = ca.serial("new.pem");
    assert_ne!(old, new);
    assert!(out.contains(&old) && out.contains(&new), "{out}");
    assert_eq!(ca.pubkey("old.pem"), ca.pubkey("new.pem"));

    let rows = ca.list();
    assert_eq!(row(&rows, &old)["status"], "revoked");
    assert_eq!(row(&rows, &old)["reason"], "superseded");
    assert_eq!(row(&rows, &old)["superseded_by"], new.as_str());
    assert_eq!(row(&rows, &new)["status"], "good");

    ca.ok("crl --dir ca --out crl.pem");
    assert!(ca.verify("old.pem").is_err());
    ca.verify("new.pem").unwrap();
    let crl = ca.openssl("crl -noout -text -in crl.pem");
    assert!(crl.contains("Superseded"), "{crl}");

    // With a grace period and a new key: the current one stays good until then.
    let out = ca.ok(&format!(
        "{rotate} --grace 3600 --key-out key2.pem --out newer.pem"
    ));
    assert!(out.contains("in 3600 s"), "{out}");
    assert_ne!(ca.pubkey("new.pem"), ca.pubkey("newer.pem"));
    assert_eq!(row(&ca.list(), &new)["status"], "scheduled");
    let table = ca.ok("list --dir ca");
    assert!(table.contains("scheduled-revoke-at"), "{table}");

    let err = ca.fails("rotate --dir ca --agent-id nobody --grace 0 --out x.pem");
    assert!(err.contains("no current certificate"), "{err}");
}

#[test]
fn parallel_issuers_all_succeed_with_distinct_serials() {
    let ca = Ca::new("");
    let children: Vec<_> = (0..8)
        .map(|i| {
            Command::new(kakunin_bin())
                .arg("ca")
                .args(ISSUE.split_whitespace())
                .args(["--key-out", &format!("k{i}.pem")])
                .args(["--out", &format!("c{i}.pem")])
                .current_dir(ca.dir.path())
                .env("KAKUNIN_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let rows = ca.list();
    let mut serials: Vec<String> = rows
        .iter()
        .map(|r| r["serial"].as_str().unwrap().to_string())
        .collect();
    serials.sort();
    serials.dedup();
    assert_eq!(serials.len(), 8, "{rows:?}");
    for i in 0..8 {
        assert!(serials.contains(&ca.serial(&format!("c{i}.pem"))));
    }
}

#[test]
fn a_damaged_database_is_named_with_what_to_do() {
    let ca = Ca::new("");
    std::fs::write(ca.path("ca/ca.db"), vec![0x42u8; 16384]).unwrap();
    let err = ca.fails("list --dir ca");
    assert!(err.contains("ca.db") && err.contains("backup"), "{err}");
    let err = ca.fails(&format!("{ISSUE} --key-out k.pem --out c.pem"));
    assert!(err.contains("damaged"), "{err}");
    assert!(!ca.path("c.pem").exists());
}

#[test]
fn a_locked_database_is_reported_after_the_lock_timeout() {
    let ca = Ca::new("");
    let serial = ca.issue("--key-out k.pem --out first.pem");
    let script = "import sqlite3, sys\n\
                  db = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
                  db.execute('BEGIN EXCLUSIVE')\n\
                  print('locked', flush=True)\n\
                  sys.stdin.read()\n";
    let mut holder = Command::new("python3")
        .args(["-c", script])
        .arg(ca.path("ca/ca.db"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 must be installed (the test command installs it)");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");

    // The flag is accepted after the subcommand and before it.
    let err = ca.fails(&format!(
        "{ISSUE} --key-out k2.pem --out c2.pem --lock-timeout-ms 300"
    ));
    assert!(
        err.contains("ca.db") && err.contains("locked by another process"),
        "{err}"
    );
    let err = ca.fails(&format!(
        "--lock-timeout-ms 300 revoke --dir ca --serial {serial} --reason keyCompromise"
    ));
    assert!(err.contains("locked by another process"), "{err}");
    // Readers are not held up by a writer.
    assert_eq!(ca.list().len(), 1);

    // Closing its stdin lets the holder finish and release the lock.
    holder.stdin.take().unwrap().write_all(b"").unwrap();
    holder.wait().unwrap();
    ca.issue("--key-out k3.pem --out c3.pem");
    assert_eq!(ca.list().len(), 2);
}

#[test]
fn hostile_input_gets_a_clear_error_not_a_panic() {
    let ca = Ca::new("");
    std::fs::write(
        ca.path("garbage.pem"),
        "-----BEGIN PUBLIC KEY-----\nnot base64!\n",
    )
    .unwrap();
    let err = ca.fails(&format!("{ISSUE} --public-key garbage.pem --out c.pem"));
    assert!(
        err.contains("garbage.pem") && err.contains("public key"),
        "{err}"
    );
    let err = ca.fails(&format!("{ISSUE} --public-key missing.pem --out c.pem"));
    assert!(err.contains("missing.pem"), "{err}");
    let err = ca.fails(&format!("{ISSUE} --key-out k.pem --out no/such/dir/c.pem"));
    assert!(err.contains("does not exist"), "{err}");
    ca.fails(&format!("{ISSUE} --key-out k.pem --csr x.pem --out c.pem"));

    let long = "1".repeat(50);
    for serial in ["xyz", "", long.as_str()] {
        let err = ca.fails_args(&[
            "revoke",
            "--dir",
            "ca",
            "--serial",
            serial,
            "--reason",
            "keyCompromise",
        ]);
        assert!(err.contains("serial"), "{err}");
    }
    let err = ca.fails("revoke --dir ca --serial 4abc --reason keyCompromise");
    assert!(err.contains("not issued by this CA"), "{err}");
    let err = ca.fails("revoke --dir ca --serial 4abc --reason certificateHold");
    assert!(err.contains("keyCompromise"), "{err}");
    let err = ca.fails("list --dir not-a-ca");
    assert!(err.contains("ca init"), "{err}");
    let err = ca.fails("init --dir other --public-url ca.example.com");
    assert!(err.contains("http://"), "{err}");
    assert!(ca.list().is_empty());
}
