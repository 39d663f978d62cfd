//! Request signatures (DESIGN.md pipeline step 8, "Request signature") as the
//! upstream receives them, checked without Kakunin's own code: the signature
//! base is rebuilt here from the received request per RFC 9421 §2.5, and the
//! signature is verified by OpenSSL's CLI and by a Python implementation
//! (the PyPI package http-message-signatures).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::*;
use serde_json::{json, Value};

/// POLICY's agent, with a signed read and an unsigned write beside the
/// trade rule (which says nothing about `sign`, so POST's default applies).
const SIGNING_POLICY: &str = r#"{
  "agent_id": "trading_bot_v2",
  "execution_constraints": { "allowed_regions": ["eu-west-1"], "max_concurrent_trades": 5 },
  "network_rules": { "allowed_hosts": ["api.exchange.com", "market-data.provider.com"] },
  "actions": [
    { "name": "signed_read", "match": { "method": "GET", "path": "/v1/positions" }, "sign": true },
    { "name": "unsigned_note", "match": { "method": "POST", "path": "/v1/notes" }, "sign": false },
    { "name": "submit_trade", "match": { "method": "POST", "path": "/v1/trades" },
      "body": { "/market": { "in": ["EUR_USD", "GBP_USD"] }, "/size": { "max": 50000 } } }
  ]
}"#;

const TRADE: &str = r#"{"market":"EUR_USD","size":45000}"#;

/// The proof headers the proxy writes; an agent's copies never get through.
const PROOF_HEADERS: [&str; 6] = [
    "content-digest",
    "signature-input",
    "signature",
    "x-agent-signature",
    "x-agent-certificate",
    "x-agent-timestamp",
];

/// The request as the exchange's echo reports it.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    headers: serde_json::Map<String, Value>,
    body: Vec<u8>,
}

impl Received {
    fn from(answer: &Answer) -> Received {
        assert_eq!(answer.status, 200, "{}", answer.body);
        let echo = answer.json();
        Received {
            method: echo["method"].as_str().unwrap().to_string(),
            path: echo["path"].as_str().unwrap().to_string(),
            headers: echo["headers"].as_object().unwrap().clone(),
            body: echo["body"].as_str().unwrap().as_bytes().to_vec(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.as_str().unwrap())
    }

    fn signed(&self) -> bool {
        let present: Vec<_> = PROOF_HEADERS
            .iter()
            .filter(|h| self.header(h).is_some())
            .collect();
        assert!(
            present.is_empty() || present.len() == PROOF_HEADERS.len(),
            "some proof headers without the others: {present:?}"
        );
        !present.is_empty()
    }
}

/// One `Signature-Input` member, read by hand.
#[derive(Debug)]
struct Input {
    covered: Vec<String>,
    /// The inner list with its parameters: the `@signature-params` value.
    line: String,
    params: BTreeMap<String, String>,
}

impl Input {
    fn param(&self, name: &str) -> &str {
        self.params
            .get(name)
            .unwrap_or_else(|| panic!("no {name} parameter in {}", self.line))
    }

    fn int(&self, name: &str) -> u64 {
        self.param(name).parse().unwrap()
    }
}

/// The proxy writes exactly one member, `kakunin=(...);params`. Parameter
/// values here are integers or strings without escapes (hex, base64url,
/// registry names), which is all this reader needs.
fn parse_input(value: &str) -> Input {
    let line = value
        .strip_prefix("kakunin=")
        .unwrap_or_else(|| panic!("not one member labelled kakunin: {value}"));
    let close = line.find(')').unwrap();
    assert!(line.starts_with('('), "{line}");
    let covered = line[1..close]
        .split(' ')
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.strip_prefix('"')
                .unwrap()
                .strip_suffix('"')
                .unwrap()
                .to_string()
        })
        .collect();
    let params = line[close + 1..]
        .split(';')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (key, value) = p.split_once('=').unwrap();
            (key.to_string(), value.trim_matches('"').to_string())
        })
        .collect();
    Input {
        covered,
        line: line.to_string(),
        params,
    }
}

/// RFC 9421 §2.5, for a request the proxy sent to `https://{Host}{path}`.
fn signature_base(received: &Received, input: &Input) -> String {
    let host = received.header("host").expect("Host reaches the upstream");
    let mut base = String::new();
    for component in &input.covered {
        let value = match component.as_str() {
            "@method" => received.method.clone(),
            "@target-uri" => format!("https://{host}{}", received.path),
            "@authority" => host.to_string(),
            field => received
                .header(field)
                .unwrap_or_else(|| panic!("covered field {field} was not received"))
                .trim()
                .to_string(),
        };
        base.push_str(&format!("\"{component}\": {value}\n"));
    }
    base.push_str(&format!("\"@signature-params\": {}", input.line));
    base
}

fn run(program: &str, args: &[&str]) -> std::process::Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} must be installed: {e}"))
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = run("openssl", args);
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The SubjectPublicKeyInfo PEM of a DER certificate, as OpenSSL reads it.
fn public_key_pem(dir: &Path, cert_der: &[u8]) -> PathBuf {
    let cert = dir.join("received-cert.der");
    std::fs::write(&cert, cert_der).unwrap();
    let pem = openssl(&[
        "x509",
        "-inform",
        "DER",
        "-in",
        cert.to_str().unwrap(),
        "-pubkey",
        "-noout",
    ]);
    let path = dir.join("received-pub.pem");
    std::fs::write(&path, pem).unwrap();
    path
}

/// RFC 9421 §3.3.4-5 ECDSA signatures are r||s; OpenSSL wants
/// `SEQUENCE { INTEGER r, INTEGER s }`.
fn ecdsa_fixed_to_der(fixed: &[u8]) -> Vec<u8> {
    let (r, s) = fixed.split_at(fixed.len() / 2);
    let integer = |scalar: &[u8]| {
        let first = scalar
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(scalar.len() - 1);
        let mut bytes = scalar[first..].to_vec();
        if bytes[0] & 0x80 != 0 {
            bytes.insert(0, 0);
        }
        let mut out = vec![0x02, bytes.len() as u8];
        out.extend(bytes);
        out
    };
    let content = [integer(r), integer(s)].concat();
    assert!(content.len() < 128, "short-form DER lengths only");
    [vec![0x30, content.len() as u8], content].concat()
}

/// Whether OpenSSL accepts `signature` over `base` by the key in `public_pem`
/// for the RFC 9421 algorithm `alg`.
fn openssl_verifies(
    dir: &Path,
    alg: &str,
    public_pem: &Path,
    base: impl AsRef<[u8]>,
    signature: &[u8],
) -> bool {
    let base_path = dir.join("base.txt");
    let sig_path = dir.join("sig.bin");
    std::fs::write(&base_path, base.as_ref()).unwrap();
    let (base_path, sig, public) = (
        base_path.to_str().unwrap(),
        sig_path.to_str().unwrap(),
        public_pem.to_str().unwrap(),
    );
    let out = match alg {
        "ecdsa-p256-sha256" | "ecdsa-p384-sha384" => {
            assert_eq!(
                signature.len(),
                if alg == "ecdsa-p256-sha256" { 64 } else { 96 },
                "RFC 9421 fixed-width r||s"
            );
            std::fs::write(&sig_path, ecdsa_fixed_to_der(signature)).unwrap();
            let digest = if alg == "ecdsa-p256-sha256" {
                "-sha256"
            } else {
                "-sha384"
            };
            run(
                "openssl",
                &[
                    "dgst",
                    digest,
                    "-verify",
                    public,
                    "-signature",
                    sig,
                    base_path,
                ],
            )
        }
        "rsa-pss-sha512" => {
            std::fs::write(&sig_path, signature).unwrap();
            run(
                "openssl",
                &[
                    "dgst",
                    "-sha512",
                    "-sigopt",
                    "rsa_padding_mode:pss",
                    "-sigopt",
                    "rsa_pss_saltlen:64",
                    "-verify",
                    public,
                    "-signature",
                    sig,
                    base_path,
                ],
            )
        }
        "ed25519" => {
            std::fs::write(&sig_path, signature).unwrap();
            run(
                "openssl",
                &[
                    "pkeyutl", "-verify", "-pubin", "-inkey", public, "-rawin", "-in", base_path,
                    "-sigfile", sig,
                ],
            )
        }
        other => panic!("unexpected alg {other}"),
    };
    out.status.success()
}

/// `sha-256=:...:` of `body`, hashed by OpenSSL.
fn content_digest(dir: &Path, body: &[u8]) -> String {
    let path = dir.join("body.bin");
    std::fs::write(&path, body).unwrap();
    let hash = openssl(&["dgst", "-sha256", "-binary", path.to_str().unwrap()]);
    format!("sha-256=:{}:", B64.encode(hash))
}

/// What a signed request carried, once every check of the profile passed.
#[derive(Debug)]
struct Checked {
    input: Input,
    alg: String,
    public_pem: PathBuf,
}

/// Checks everything DESIGN.md's "Request signature" promises about a
/// received request, independently: covered components, parameters,
/// mirrors, digest, and the signature itself with OpenSSL.
fn check_signed(pki: &Pki, received: &Received, agent_cert: &Path, lifetime: u64) -> Checked {
    let dir = pki.dir.path();
    let input = parse_input(received.header("signature-input").unwrap());
    let mut expected = vec!["@method", "@target-uri", "@authority", "content-digest"];
    if received.header("content-type").is_some() {
        expected.push("content-type");
    }
    assert_eq!(input.covered, expected);
    let names: Vec<_> = input.params.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["alg", "created", "expires", "keyid", "nonce", "tag"],
        "{}",
        input.line
    );
    assert_eq!(input.param("tag"), "kakunin");
    assert_eq!(input.param("keyid"), serial_of(agent_cert));
    let created = input.int("created");
    assert_eq!(input.int("expires") - created, lifetime);
    let timestamp: u64 = received
        .header("x-agent-timestamp")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(timestamp / 1000, created);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        created <= now && now - created < 300,
        "created {created}, now {now}"
    );

    // The certificate is the agent's leaf, as DER.
    let cert_der = B64
        .decode(received.header("x-agent-certificate").unwrap())
        .unwrap();
    let pem = std::fs::read(agent_cert).unwrap();
    let leaf = kakunin_signer::parse_certificate_chain("agent", &pem).unwrap()[0].clone();
    assert_eq!(cert_der, leaf.as_ref());

    assert_eq!(
        received.header("content-digest").unwrap(),
        content_digest(dir, &received.body)
    );

    let signature_field = received.header("signature").unwrap();
    let encoded = signature_field
        .strip_prefix("kakunin=:")
        .and_then(|s| s.strip_suffix(':'))
        .unwrap_or_else(|| panic!("Signature is not kakunin=:...: {signature_field}"));
    assert_eq!(received.header("x-agent-signature").unwrap(), encoded);
    let signature = B64.decode(encoded).unwrap();

    let alg = input.param("alg").to_string();
    let public_pem = public_key_pem(dir, &cert_der);
    let base = signature_base(received, &input);
    assert!(
        openssl_verifies(dir, &alg, &public_pem, &base, &signature),
        "OpenSSL did not verify {alg} over:\n{base}"
    );
    // The check can fail: the same request sent over plain http does.
    let tampered = base.replacen("https://", "http://", 1);
    assert_ne!(tampered, base);
    assert!(!openssl_verifies(
        dir,
        &alg,
        &public_pem,
        &tampered,
        &signature
    ));
    Checked {
        input,
        alg,
        public_pem,
    }
}

fn post_trade(proxy: &ProxyProcess, extra: &[&str]) -> Received {
    let mut args = vec![
        "http://api.exchange.com/v1/trades",
        "-H",
        "content-type: application/json",
        "-d",
        TRADE,
    ];
    args.extend_from_slice(extra);
    Received::from(&curl(proxy, &args))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_arrives_signed_and_openssl_verifies_it() {
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    let config = pki.config(POLICY, exchange.addr(), "[signing]\nlifetime_seconds = 90");
    let proxy = ProxyProcess::start(&config);
    let received = post_trade(&proxy, &[]);
    assert_eq!(received.method, "POST");
    assert_eq!(received.path, "/v1/trades");
    assert_eq!(received.body, TRADE.as_bytes());
    assert!(received.signed());
    let checked = check_signed(&pki, &received, &pki.path("agent.pem"), 90);
    assert_eq!(checked.alg, "ecdsa-p256-sha256");
    // The staple is still there, beside the signature.
    assert!(received.header("x-agent-ocsp").is_some());

    // The intent record says what was signed, before the request left.
    let decided = pki.audit_events("action.decided");
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(decided[0]["signed"], true);
    assert_eq!(
        decided[0]["signature"],
        json!({
            "keyid": checked.input.param("keyid"),
            "nonce": checked.input.param("nonce"),
            "created": checked.input.int("created"),
        })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_without_content_type_is_signed_without_it() {
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    let proxy = ProxyProcess::start(&pki.config(POLICY, exchange.addr(), ""));
    let answer = curl(
        &proxy,
        &[
            "http://api.exchange.com/v1/orders/7?reason=user%20cancel",
            "-X",
            "DELETE",
        ],
    );
    let received = Received::from(&answer);
    assert!(received.header("content-type").is_none());
    assert_eq!(received.path, "/v1/orders/7?reason=user%20cancel");
    let checked = check_signed(&pki, &received, &pki.path("agent.pem"), 60);
    assert_eq!(checked.input.covered.len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn what_is_signed_follows_the_method_and_the_rules() {
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    let proxy = ProxyProcess::start(&pki.config(SIGNING_POLICY, exchange.addr(), ""));
    let agent = pki.path("agent.pem");

    // GET without a rule: not an action, not signed.
    let plain_get = Received::from(&curl(&proxy, &["http://api.exchange.com/v1/markets"]));
    assert!(!plain_get.signed(), "{:?}", plain_get.headers);
    // GET under a rule with sign: true.
    let signed_get = Received::from(&curl(&proxy, &["http://api.exchange.com/v1/positions"]));
    assert!(signed_get.signed());
    check_signed(&pki, &signed_get, &agent, 60);
    // POST under a rule with sign: false.
    let quiet = Received::from(&curl(
        &proxy,
        &["http://api.exchange.com/v1/notes", "-d", "note"],
    ));
    assert!(!quiet.signed(), "{:?}", quiet.headers);
    // POST under a rule that says nothing: signed, as any POST.
    let trade = post_trade(&proxy, &[]);
    check_signed(&pki, &trade, &agent, 60);
    // PUT with no rule at all: signed.
    let put = Received::from(&curl(
        &proxy,
        &[
            "http://api.exchange.com/v1/settings",
            "-X",
            "PUT",
            "-d",
            "x=1",
        ],
    ));
    check_signed(&pki, &put, &agent, 60);

    let decided = pki.audit_events("action.decided");
    let by_path = |path: &str| {
        decided
            .iter()
            .find(|r| r["path"] == path)
            .unwrap_or_else(|| panic!("no intent for {path}: {decided:?}"))
    };
    for (path, signed) in [
        ("/v1/markets", false),
        ("/v1/positions", true),
        ("/v1/notes", false),
        ("/v1/trades", true),
        ("/v1/settings", true),
    ] {
        let record = by_path(path);
        assert_eq!(record["signed"], signed, "{record}");
        assert_eq!(record.get("signature").is_some(), signed, "{record}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn report_mode_signs_as_enforce_mode_does() {
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    let report = SIGNING_POLICY.replacen("{", r#"{ "mode": "report","#, 1);
    let proxy = ProxyProcess::start(&pki.config(&report, exchange.addr(), ""));
    // Over the body limit of the rule: would be denied, is forwarded, signed.
    let received = Received::from(&curl(
        &proxy,
        &[
            "http://api.exchange.com/v1/trades",
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"market":"EUR_USD","size":90000}"#,
        ],
    ));
    check_signed(&pki, &received, &pki.path("agent.pem"), 60);
    let quiet = Received::from(&curl(
        &proxy,
        &["http://api.exchange.com/v1/notes", "-d", "note"],
    ));
    assert!(!quiet.signed());
    let decided = pki.audit_events("action.decided");
    assert_eq!(decided[0]["decision"], "would_deny", "{decided:?}");
    assert_eq!(decided[0]["signed"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_supplied_proof_headers_never_reach_the_upstream() {
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    let proxy = ProxyProcess::start(&pki.config(SIGNING_POLICY, exchange.addr(), ""));
    let forged = [
        "-H",
        "Content-Digest: sha-256=:Zm9yZ2Vk:",
        "-H",
        "Signature-Input: kakunin=(\"@method\");created=1;keyid=\"00\";tag=\"kakunin\"",
        "-H",
        "Signature: kakunin=:Zm9yZ2Vk:",
        "-H",
        "X-Agent-Signature: Zm9yZ2Vk",
        "-H",
        "X-Agent-Certificate: Zm9yZ2Vk",
        "-H",
        "X-Agent-Timestamp: 1",
        "-H",
        "X-Agent-OCSP: Zm9yZ2Vk",
    ];
    // Signed: the proxy's own values replace them, and they verify.
    let signed = post_trade(&proxy, &forged);
    for name in PROOF_HEADERS.iter().chain(&["x-agent-ocsp"]) {
        let value = signed.header(name).unwrap();
        assert!(
            !value.contains("Zm9yZ2Vk") && value != "1",
            "{name}: {value}"
        );
    }
    check_signed(&pki, &signed, &pki.path("agent.pem"), 60);
    // Unsigned: gone, and not replaced (the staple is the gate's, not the agent's).
    let mut args = vec!["http://api.exchange.com/v1/notes", "-d", "note"];
    args.extend_from_slice(&forged);
    let unsigned = Received::from(&curl(&proxy, &args));
    assert!(!unsigned.signed(), "{:?}", unsigned.headers);
    assert_ne!(unsigned.header("x-agent-ocsp"), Some("Zm9yZ2Vk"));
}

/// SHA-256 by OpenSSL's CLI, so that the batch proof below is walked
/// without Kakunin's hashing.
fn openssl_sha256(dir: &Path, data: &[u8]) -> Vec<u8> {
    let path = dir.join("hash-input.bin");
    std::fs::write(&path, data).unwrap();
    openssl(&["dgst", "-sha256", "-binary", path.to_str().unwrap()])
}

/// `kakunin=(:h: …);index=I;size=N`, read by hand.
fn parse_batch_proof(value: &str) -> (u64, u64, Vec<Vec<u8>>) {
    let rest = value.strip_prefix("kakunin=(").unwrap();
    let (path, params) = rest.split_once(')').unwrap();
    let siblings = path
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(|s| B64.decode(s.trim_matches(':')).unwrap())
        .collect();
    let mut index = None;
    let mut size = None;
    for param in params.split(';').filter(|p| !p.is_empty()) {
        match param.split_once('=').unwrap() {
            ("index", v) => index = Some(v.parse().unwrap()),
            ("size", v) => size = Some(v.parse().unwrap()),
            other => panic!("unexpected parameter {other:?}"),
        }
    }
    (index.unwrap(), size.unwrap(), siblings)
}

/// A batched request checked as docs/wire-format.md tells another
/// implementation to: the RFC 9421 base is the leaf, RFC 9162 §2.1.3.2
/// walks the proof to the root, and OpenSSL verifies the signature over
/// `"kakunin-batch-v1" 0x00 || size (8 bytes, big-endian) || root`.
/// Returns (index, size).
fn check_batch_signed(pki: &Pki, received: &Received) -> (u64, u64) {
    let dir = pki.dir.path();
    let input = parse_input(received.header("signature-input").unwrap());
    assert_eq!(input.param("tag"), "kakunin-batch");
    assert_eq!(input.param("keyid"), serial_of(&pki.path("agent.pem")));
    let alg = input.param("alg");
    assert_eq!(alg, "ecdsa-p256-sha256");
    let base = signature_base(received, &input);
    assert_eq!(
        received.header("content-digest").unwrap(),
        content_digest(dir, &received.body)
    );
    let (index, size, siblings) =
        parse_batch_proof(received.header("kakunin-batch-proof").unwrap());
    let node = |left: &[u8], right: &[u8]| openssl_sha256(dir, &[&[1u8][..], left, right].concat());
    let mut root = openssl_sha256(dir, &[&[0u8][..], base.as_bytes()].concat());
    let (mut fnode, mut snode) = (index, size - 1);
    for sibling in &siblings {
        assert_ne!(snode, 0, "proof longer than the tree");
        if fnode % 2 == 1 || fnode == snode {
            root = node(sibling, &root);
            while fnode % 2 == 0 && fnode != 0 {
                fnode /= 2;
                snode /= 2;
            }
        } else {
            root = node(&root, sibling);
        }
        fnode /= 2;
        snode /= 2;
    }
    assert_eq!(snode, 0, "proof shorter than the tree");
    let message = [b"kakunin-batch-v1\0".as_slice(), &size.to_be_bytes(), &root].concat();

    let encoded = received
        .header("signature")
        .unwrap()
        .strip_prefix("kakunin=:")
        .and_then(|s| s.strip_suffix(':'))
        .unwrap();
    assert_eq!(received.header("x-agent-signature").unwrap(), encoded);
    let signature = B64.decode(encoded).unwrap();
    let cert_der = B64
        .decode(received.header("x-agent-certificate").unwrap())
        .unwrap();
    let public_pem = public_key_pem(dir, &cert_der);
    assert!(
        openssl_verifies(dir, alg, &public_pem, &message, &signature),
        "OpenSSL did not verify the batch root for:\n{base}"
    );
    // The check can fail: the signature is not one over the base itself.
    assert!(!openssl_verifies(dir, alg, &public_pem, &base, &signature));
    (index, size)
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_signatures_verify_with_openssl_and_an_rfc_9162_proof() {
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    let config = pki.config(POLICY, exchange.addr(), "[signing]\nbatch = true");
    let proxy = ProxyProcess::start(&config);
    // Five trades at once (POLICY's max_concurrent_trades), so that some
    // may share a signature; each must verify on its own whatever the
    // batches came to.
    let sends: Vec<_> = (0..5)
        .map(|_| {
            let args = [
                "http://api.exchange.com/v1/trades",
                "-H",
                "content-type: application/json",
                "-d",
                TRADE,
            ];
            tokio::spawn(curl_async(
                proxy.url(),
                args.iter().map(|a| a.to_string()).collect(),
            ))
        })
        .collect();
    let mut places = Vec::new();
    for send in sends {
        let received = Received::from(&send.await.unwrap());
        assert!(received.signed());
        places.push(check_batch_signed(&pki, &received));
    }
    // Every signature-sharing request is accounted for in the audit log.
    let decided = pki.audit_events("action.decided");
    assert_eq!(decided.len(), 5, "{decided:?}");
    let mut audited: Vec<(u64, u64)> = decided
        .iter()
        .map(|d| {
            let batch = &d["signature"]["batch"];
            (
                batch["index"].as_u64().unwrap(),
                batch["size"].as_u64().unwrap(),
            )
        })
        .collect();
    audited.sort();
    places.sort();
    assert_eq!(audited, places);
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_requests_get_different_nonces() {
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    let proxy = ProxyProcess::start(&pki.config(POLICY, exchange.addr(), ""));
    let agent = pki.path("agent.pem");
    let first = check_signed(&pki, &post_trade(&proxy, &[]), &agent, 60);
    let second = check_signed(&pki, &post_trade(&proxy, &[]), &agent, 60);
    let (a, b) = (first.input.param("nonce"), second.input.param("nonce"));
    assert_ne!(a, b);
    // 128 random bits, base64url without padding.
    let bits = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(a)
        .unwrap();
    assert_eq!(bits.len(), 16, "{a}");
}

/// The agent's key made by OpenSSL (not by us) and certified through
/// `ca issue --public-key`, as key_types.rs does.
fn agent_with_openssl_key(pki: &Pki, kind: &str) -> (PathBuf, PathBuf) {
    let key = pki.path(&format!("{kind}.key"));
    let keygen: &[&str] = match kind {
        "p256" => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "p384" => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        "rsa" => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        "ed25519" => &["-algorithm", "ed25519"],
        other => panic!("unknown key kind {other}"),
    };
    let mut args = vec!["genpkey"];
    args.extend_from_slice(keygen);
    args.extend_from_slice(&["-out", key.to_str().unwrap()]);
    openssl(&args);
    let public = pki.path(&format!("{kind}.pub.pem"));
    openssl(&[
        "pkey",
        "-in",
        key.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    let cert = pki.path(&format!("{kind}.pem"));
    let out = Command::new(kakunin_bin())
        .args(["ca", "issue", "--dir"])
        .arg(pki.path("agents-ca"))
        .args(["--agent-id", "trading_bot_v2", "--policy"])
        .arg(pki.path("policy.json"))
        .arg("--public-key")
        .arg(&public)
        .arg("--out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

const KEY_KINDS: [(&str, &str); 4] = [
    ("p256", "ecdsa-p256-sha256"),
    ("p384", "ecdsa-p384-sha384"),
    ("rsa", "rsa-pss-sha512"),
    ("ed25519", "ed25519"),
];

/// A signed trade from a proxy whose key is of `kind`.
async fn signed_trade_with(
    pki: &Pki,
    exchange_addr: std::net::SocketAddr,
    kind: &str,
) -> (Received, PathBuf) {
    let (cert, key) = agent_with_openssl_key(pki, kind);
    let config = pki.write_config(&pki.path("policy.json"), &cert, &key, exchange_addr, "");
    let proxy = ProxyProcess::start(&config);
    let received = post_trade(&proxy, &[]);
    assert_eq!(
        received
            .header("x-agent-certificate")
            .map(|c| B64.decode(c).unwrap()),
        Some(
            kakunin_signer::parse_certificate_chain("c", &std::fs::read(&cert).unwrap()).unwrap()
                [0]
            .to_vec()
        ),
        "{kind}"
    );
    (received, cert)
}

#[tokio::test(flavor = "multi_thread")]
async fn each_key_type_signs_with_its_algorithm_and_openssl_verifies() {
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    std::fs::write(pki.path("policy.json"), POLICY).unwrap();
    for (kind, alg) in KEY_KINDS {
        let (received, cert) = signed_trade_with(&pki, exchange.addr(), kind).await;
        let checked = check_signed(&pki, &received, &cert, 60);
        assert_eq!(checked.alg, alg, "{kind}");
    }
}

/// Runs verify_httpsig.py on a capture: (exit code, its JSON report).
fn python_verify(python: &Path, capture: &Value, path: &Path) -> (i32, Value) {
    std::fs::write(path, capture.to_string()).unwrap();
    let out = Command::new(python)
        .arg(workspace_root().join("integration/tests/py/verify_httpsig.py"))
        .arg(path)
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify_httpsig.py printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

#[tokio::test(flavor = "multi_thread")]
async fn python_http_message_signatures_verifies_each_key_type() {
    let python = venv_python();
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    std::fs::write(pki.path("policy.json"), POLICY).unwrap();
    for (kind, alg) in KEY_KINDS {
        let (received, cert) = signed_trade_with(&pki, exchange.addr(), kind).await;
        let checked = check_signed(&pki, &received, &cert, 60);
        let headers: Vec<Value> = received
            .headers
            .iter()
            .map(|(name, value)| json!([name, value]))
            .collect();
        let capture = json!({
            "method": received.method,
            "url": format!("https://{}{}", received.header("host").unwrap(), received.path),
            "headers": headers,
            "body_b64": B64.encode(&received.body),
            "public_key_pem": std::fs::read_to_string(&checked.public_pem).unwrap(),
            "label": "kakunin",
        });
        let file = pki.path(&format!("capture-{kind}.json"));
        let (code, report) = python_verify(&python, &capture, &file);
        assert_eq!(code, 0, "{kind}: {report}");
        assert_eq!(report["verified"], true, "{kind}: {report}");
        assert_eq!(report["alg"], alg, "{kind}: {report}");
        assert_eq!(report["content_digest_verified"], true, "{kind}: {report}");
        // And it does refuse: another body no longer matches the digest.
        let mut tampered = capture.clone();
        tampered["body_b64"] = json!(B64.encode(br#"{"market":"EUR_USD","size":49999}"#));
        let (code, report) = python_verify(&python, &tampered, &file);
        assert_eq!(code, 1, "{kind}, tampered body: {report}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn after_rotation_signatures_name_the_new_certificate() {
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    let proxy = ProxyProcess::start(&pki.config(POLICY, exchange.addr(), ""));
    let agent = pki.path("agent.pem");
    let old_serial = serial_of(&agent);
    let before = check_signed(&pki, &post_trade(&proxy, &[]), &agent, 60);
    assert_eq!(before.input.param("keyid"), old_serial);

    // Same key, new certificate (as with a KMS key), swapped in by rename.
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
    std::fs::rename(&rotated, &agent).unwrap();
    let new_serial = serial_of(&agent);
    assert_ne!(new_serial, old_serial);
    proxy.hangup();
    let started = std::time::Instant::now();
    let after = loop {
        let received = post_trade(&proxy, &[]);
        let input = parse_input(received.header("signature-input").unwrap());
        if input.param("keyid") != old_serial {
            break received;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the proxy kept signing as {old_serial} after the rotation"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // keyid, X-Agent-Certificate and the signature all belong to the new
    // certificate (check_signed compares them with agent.pem, now rotated).
    let checked = check_signed(&pki, &after, &agent, 60);
    assert_eq!(checked.input.param("keyid"), new_serial);
}
