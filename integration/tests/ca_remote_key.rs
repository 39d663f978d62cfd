//! A CA whose key stays where a key reference says (`ca init --key REF`),
//! and agent certificates for keys named the same way
//! (`ca issue --public-key-from REF`), as real `kakunin` processes checked
//! by openssl: `verify` against ca.pem and the CRL, `ocsp` against a
//! running `ca serve`, `crl` against ca.pem.
//!
//! Every case runs once per [`KeyStore`]. Adding a store (SoftHSM for
//! `pkcs11:`, moto for `aws-kms:`) is one more entry in [`stores`]: a name,
//! the environment kakunin needs for it, and a function that makes a key of
//! a given type there and returns its reference (or `None` when the store
//! cannot hold that type, or is not installed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::kakunin_bin;
use common::kms::aws_env;
use common::moto::Moto;
use kakunin_signer::KeyBackend as _;
use std::sync::Arc;

const SEED_POLICY: &str = include_str!("../../policy/tests/fixtures/seed-policy.json");
const AGENT: &str = "trading_bot_v2";

#[derive(Debug, Clone, Copy)]
enum KeyType {
    P256,
    P384,
    Rsa2048,
    Ed25519,
}

impl KeyType {
    const ALL: [KeyType; 4] = [
        KeyType::P256,
        KeyType::P384,
        KeyType::Rsa2048,
        KeyType::Ed25519,
    ];

    /// `openssl genpkey` arguments for this type.
    fn genpkey(self) -> &'static [&'static str] {
        match self {
            KeyType::P256 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            KeyType::P384 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            KeyType::Rsa2048 => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            KeyType::Ed25519 => &["-algorithm", "ED25519"],
        }
    }

    /// The agent key paired with a CA key of this type: a different type,
    /// so that no case passes only because both sides use one algorithm.
    fn agent_partner(self) -> KeyType {
        match self {
            KeyType::P256 => KeyType::Ed25519,
            KeyType::P384 => KeyType::Rsa2048,
            KeyType::Rsa2048 => KeyType::P256,
            KeyType::Ed25519 => KeyType::P384,
        }
    }
}

/// Makes a key of a type, labelled `label`, under the test's directory;
/// returns its reference, or `None` if this store cannot hold the type.
type MakeKey = Box<dyn Fn(&Path, KeyType, &str) -> Option<String>>;

/// Reads a key's DER SubjectPublicKeyInfo from its reference.
type ReadPublicKey = Box<dyn Fn(&str) -> Vec<u8>>;

/// Somewhere keys live, and how kakunin is told to reach it.
struct KeyStore {
    name: &'static str,
    /// Set for every kakunin command (e.g. KAKUNIN_KMS_ENDPOINT, a PIN).
    env: Vec<(String, String)>,
    make_key: MakeKey,
    /// The DER SubjectPublicKeyInfo of a key this store made, read the
    /// store's own way (not through kakunin).
    public_key: ReadPublicKey,
}

/// Every store the CA is tested with.
fn stores() -> Vec<KeyStore> {
    vec![file_store(), kms_store()]
}

/// moto's KMS-compatible server, for `aws-kms:` keys. The server lives as
/// long as the store (the closure holds it) and is stopped with it.
fn kms_store() -> KeyStore {
    let moto = Arc::new(Moto::start());
    let reader = moto.clone();
    let mut env: Vec<(String, String)> = aws_env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    env.push(("KAKUNIN_KMS_ENDPOINT".into(), moto.endpoint()));
    KeyStore {
        name: "aws-kms (moto)",
        env,
        make_key: Box::new(move |_root, kind, _label| {
            let spec = match kind {
                KeyType::P256 => "ECC_NIST_P256",
                KeyType::P384 => "ECC_NIST_P384",
                KeyType::Rsa2048 => "RSA_2048",
                // moto has no Ed25519 keys.
                KeyType::Ed25519 => return None,
            };
            Some(format!("aws-kms:{}", moto.create_key(spec).arn))
        }),
        public_key: Box::new(move |reference| {
            let arn = reference.strip_prefix("aws-kms:").unwrap();
            reader.public_key_der(arn)
        }),
    }
}

fn file_store() -> KeyStore {
    KeyStore {
        name: "file",
        env: Vec::new(),
        make_key: Box::new(|root, kind, label| {
            let path = root.join(format!("keys/{label}.pem"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let mut args = vec!["genpkey"];
            args.extend_from_slice(kind.genpkey());
            args.extend_from_slice(&["-out", path.to_str().unwrap()]);
            ok(root, "openssl", &args);
            Some(format!("file:{}", path.display()))
        }),
        public_key: Box::new(|reference| {
            let path = reference.strip_prefix("file:").unwrap();
            let pem = std::fs::read(path).unwrap();
            kakunin_signer::FileKey::from_pem(path, &pem)
                .unwrap()
                .public_key_spki()
                .to_vec()
        }),
    }
}

/// A directory with the policy, in which every command runs.
struct Lab<'a> {
    dir: tempfile::TempDir,
    store: &'a KeyStore,
}

impl<'a> Lab<'a> {
    fn new(store: &'a KeyStore) -> Lab<'a> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.json"), SEED_POLICY).unwrap();
        Lab { dir, store }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root().join(name)
    }

    fn key(&self, kind: KeyType, label: &str) -> Option<String> {
        (self.store.make_key)(self.root(), kind, label)
    }

    fn kakunin(&self, args: &[&str]) -> Output {
        let mut command = Command::new(kakunin_bin());
        command
            .arg("ca")
            .args(args)
            .current_dir(self.root())
            .env("KAKUNIN_LOG", "warn")
            .stdin(Stdio::null());
        for (name, value) in &self.store.env {
            command.env(name, value);
        }
        command.output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.kakunin(args);
        assert!(
            out.status.success(),
            "[{}] kakunin ca {args:?} failed:\n{}{}",
            self.store.name,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// A clean failure (no panic); returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.kakunin(args);
        let stderr = text(&out.stderr);
        assert!(
            !out.status.success(),
            "[{}] kakunin ca {args:?} should fail:\n{}",
            self.store.name,
            text(&out.stdout)
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        stderr
    }

    fn openssl(&self, args: &[&str]) -> String {
        ok(self.root(), "openssl", args)
    }

    /// `openssl verify` of `cert` against ca.pem, with the CRL if given.
    fn verify(&self, cert: &str, crl: Option<&str>) -> Result<(), String> {
        let mut args = vec!["verify", "-CAfile", "ca/ca.pem"];
        if let Some(crl) = crl {
            args.extend_from_slice(&["-crl_check", "-CRLfile", crl]);
        }
        args.push(cert);
        let out = run(self.root(), "openssl", &args);
        if out.status.success() {
            Ok(())
        } else {
            Err(text(&out.stdout) + &text(&out.stderr))
        }
    }

    /// The certificate's public key as openssl prints it.
    fn cert_pubkey(&self, cert: &str) -> String {
        self.openssl(&["x509", "-noout", "-pubkey", "-in", cert])
    }

    fn serial(&self, cert: &str) -> String {
        let out = self.openssl(&["x509", "-noout", "-serial", "-in", cert]);
        out.trim().trim_start_matches("serial=").to_lowercase()
    }

    /// `kakunin ca serve` on an ephemeral port.
    fn serve(&self) -> Served {
        let mut command = Command::new(kakunin_bin());
        command
            .args(["ca", "serve", "--dir", "ca", "--listen", "127.0.0.1:0"])
            .current_dir(self.root())
            .env("KAKUNIN_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in &self.store.env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                match line.strip_prefix("kakunin: ca serving on ") {
                    Some(addr) => {
                        let _ = tx.send(addr.to_string());
                    }
                    None => eprintln!("[ca serve] {line}"),
                }
            }
        });
        let mut served = Served { child, url: None };
        // On a timeout `served` is dropped, which stops the child.
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("ca serve did not start");
        served.url = Some(format!("http://{addr}/ocsp"));
        served
    }

    /// `openssl ocsp` for `cert` against the responder, signature checked
    /// against ca.pem; returns what openssl printed.
    fn ocsp(&self, served: &Served, cert: &str) -> String {
        let url = served.url.as_deref().unwrap();
        let out = run(
            self.root(),
            "openssl",
            &[
                "ocsp",
                "-issuer",
                "ca/ca.pem",
                "-cert",
                cert,
                "-url",
                url,
                "-CAfile",
                "ca/ca.pem",
            ],
        );
        let all = text(&out.stdout) + &text(&out.stderr);
        assert!(out.status.success(), "openssl ocsp: {all}");
        all
    }
}

struct Served {
    child: Child,
    url: Option<String>,
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
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (the test command installs it)"))
}

fn ok(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = run(dir, program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The agent's public key as kakunin-signer reads it from the reference,
/// in openssl's PEM, to compare with the certificate's.
fn public_key_pem(lab: &Lab<'_>, reference: &str) -> String {
    let spki = (lab.store.public_key)(reference);
    let der = lab.path("agent-spki.der");
    std::fs::write(&der, spki).unwrap();
    lab.openssl(&[
        "pkey",
        "-pubin",
        "-inform",
        "DER",
        "-in",
        der.to_str().unwrap(),
    ])
}

#[test]
fn a_ca_with_a_referenced_key_issues_revokes_and_answers_for_openssl() {
    for store in stores() {
        for ca_type in KeyType::ALL {
            let lab = Lab::new(&store);
            let Some(ca_key) = lab.key(ca_type, "ca") else {
                continue;
            };
            let agent_type = ca_type.agent_partner();
            let Some(agent_key) = lab.key(agent_type, "agent") else {
                continue;
            };
            let case = format!("{} CA {ca_type:?}, agent {agent_type:?}", store.name);
            eprintln!("case: {case}");
            one_lifecycle(&lab, &ca_key, &agent_key, &case);
        }
    }
}

fn one_lifecycle(lab: &Lab<'_>, ca_key: &str, agent_key: &str, case: &str) {
    let out = lab.ok(&["init", "--dir", "ca", "--key", ca_key]);
    assert!(out.contains(ca_key), "{case}: {out}");
    assert!(!lab.path("ca/ca-key.pem").exists(), "{case}");
    let settings = std::fs::read_to_string(lab.path("ca/ca.json")).unwrap();
    assert!(settings.contains(ca_key), "{case}: {settings}");

    let issue = [
        "issue",
        "--dir",
        "ca",
        "--agent-id",
        AGENT,
        "--policy",
        "policy.json",
    ];
    let mut args = issue.to_vec();
    args.extend_from_slice(&["--public-key-from", agent_key, "--out", "agent.pem"]);
    lab.ok(&args);
    assert_eq!(
        lab.cert_pubkey("agent.pem"),
        public_key_pem(lab, agent_key),
        "{case}"
    );
    lab.verify("agent.pem", None)
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    lab.ok(&[
        "issue-server",
        "--dir",
        "ca",
        "--name",
        "api.exchange.com",
        "--key-out",
        "server-key.pem",
        "--out",
        "server.pem",
    ]);
    lab.verify("server.pem", None)
        .unwrap_or_else(|e| panic!("{case}: {e}"));

    lab.ok(&["crl", "--dir", "ca", "--out", "crl.pem"]);
    let checked = run(
        lab.root(),
        "openssl",
        &["crl", "-in", "crl.pem", "-CAfile", "ca/ca.pem", "-noout"],
    );
    let said = text(&checked.stdout) + &text(&checked.stderr);
    assert!(
        checked.status.success() && said.contains("verify OK"),
        "{case}: {said}"
    );
    lab.verify("agent.pem", Some("crl.pem"))
        .unwrap_or_else(|e| panic!("{case}: {e}"));

    let served = lab.serve();
    let answer = lab.ocsp(&served, "agent.pem");
    assert!(
        answer.contains("Response verify OK") && answer.contains("agent.pem: good"),
        "{case}: {answer}"
    );

    let serial = lab.serial("agent.pem");
    lab.ok(&[
        "revoke",
        "--dir",
        "ca",
        "--serial",
        &serial,
        "--reason",
        "keyCompromise",
    ]);
    let answer = lab.ocsp(&served, "agent.pem");
    assert!(
        answer.contains("Response verify OK") && answer.contains("agent.pem: revoked"),
        "{case}: {answer}"
    );
    drop(served);
    lab.ok(&["crl", "--dir", "ca", "--out", "crl.pem"]);
    let refused = lab.verify("agent.pem", Some("crl.pem")).unwrap_err();
    assert!(refused.contains("certificate revoked"), "{case}: {refused}");

    // A new certificate for the same referenced key, then rotated.
    let mut args = issue.to_vec();
    args.extend_from_slice(&["--public-key-from", agent_key, "--out", "again.pem"]);
    lab.ok(&args);
    lab.ok(&[
        "rotate",
        "--dir",
        "ca",
        "--agent-id",
        AGENT,
        "--grace",
        "0",
        "--out",
        "rotated.pem",
    ]);
    assert_eq!(
        lab.cert_pubkey("rotated.pem"),
        lab.cert_pubkey("agent.pem"),
        "{case}"
    );
    lab.ok(&["crl", "--dir", "ca", "--out", "crl.pem"]);
    lab.verify("rotated.pem", Some("crl.pem"))
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    assert!(lab.verify("again.pem", Some("crl.pem")).is_err(), "{case}");
}

#[test]
fn a_key_that_is_not_the_ca_certificates_is_refused_by_every_command() {
    for store in stores() {
        let lab = Lab::new(&store);
        let (Some(ca_key), Some(other)) = (
            lab.key(KeyType::P256, "ca"),
            lab.key(KeyType::P256, "other"),
        ) else {
            continue;
        };
        lab.ok(&["init", "--dir", "ca", "--key", &ca_key]);
        let path = lab.path("ca/ca.json");
        let settings = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, settings.replace(&ca_key, &other)).unwrap();
        for args in [
            &["crl", "--dir", "ca", "--out", "crl.pem"][..],
            &["list", "--dir", "ca"],
            &[
                "issue-server",
                "--dir",
                "ca",
                "--name",
                "a.example",
                "--key-out",
                "k.pem",
                "--out",
                "c.pem",
            ],
            &["serve", "--dir", "ca", "--listen", "127.0.0.1:0"],
        ] {
            let err = lab.fails(args);
            assert!(
                err.contains("does not belong") && err.contains("ca.pem"),
                "[{}] {args:?}: {err}",
                store.name
            );
        }
        assert!(!lab.path("crl.pem").exists() && !lab.path("c.pem").exists());
    }
}

#[test]
fn bad_references_and_unusable_keys_get_clear_errors() {
    let store = &stores()[0];
    let lab = Lab::new(store);
    for (reference, expected) in [
        ("vault:secret/ca", "unknown scheme"),
        ("file:/nonexistent/ca.pem", "cannot read key file"),
        ("", "empty key reference"),
    ] {
        let err = lab.fails(&["init", "--dir", "ca", "--key", reference]);
        assert!(err.contains(expected), "{reference:?}: {err}");
        assert!(!lab.path("ca").exists(), "{reference:?} left a directory");
    }

    lab.ok(&["init", "--dir", "ca"]);
    assert!(lab.path("ca/ca-key.pem").exists());
    let issue = |flags: &[&str]| {
        let mut args = vec![
            "issue",
            "--dir",
            "ca",
            "--agent-id",
            AGENT,
            "--policy",
            "policy.json",
            "--out",
            "c.pem",
        ];
        args.extend_from_slice(flags);
        lab.fails(&args)
    };
    let err = issue(&["--public-key-from", "vault:x"]);
    assert!(
        err.contains("--public-key-from") && err.contains("vault:x"),
        "{err}"
    );
    let err = issue(&["--public-key-from", "file:/nonexistent/agent.pem"]);
    assert!(err.contains("/nonexistent/agent.pem"), "{err}");
    // Exactly one key source.
    issue(&["--public-key-from", "file:x.pem", "--key-out", "k.pem"]);

    // Keys an agent cannot sign with: refused before anything is issued.
    lab.openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:1024",
        "-out",
        "rsa1024.pem",
    ]);
    lab.openssl(&[
        "pkey",
        "-in",
        "rsa1024.pem",
        "-pubout",
        "-out",
        "rsa1024.pub",
    ]);
    let err = issue(&["--public-key", "rsa1024.pub"]);
    assert!(err.contains("1024-bit RSA"), "{err}");
    let err = issue(&["--public-key-from", "file:rsa1024.pem"]);
    assert!(err.contains("rsa1024.pem"), "{err}");
    lab.openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:secp256k1",
        "-out",
        "k1.pem",
    ]);
    lab.openssl(&["pkey", "-in", "k1.pem", "-pubout", "-out", "k1.pub"]);
    let err = issue(&["--public-key", "k1.pub"]);
    assert!(err.contains("k1.pub"), "{err}");
    assert!(!lab.path("c.pem").exists());
    let listed = lab.ok(&["list", "--dir", "ca", "--json"]);
    assert_eq!(listed.trim(), "[]", "nothing was issued");
}
