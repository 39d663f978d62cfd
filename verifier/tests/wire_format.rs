//! docs/wire-format.md's worked example is checked here: the signature base
//! rebuilt from the example request is the one the page prints, and the
//! verifier accepts the request at the time it was signed. The ignored test
//! made the example (`cargo test -p kakunin-verifier --test wire_format --
//! --ignored --nocapture`), should the format ever change.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use kakunin_signer::KeyBackend;
use kakunin_verifier::httpsig::{self, parse_signature, signature_base, Message, TargetUri};
use kakunin_verifier::{Outcome, Request, RevocationMode, Verifier, VerifierConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

const AUTHORITY: &str = "api.exchange.com";
const PATH: &str = "/v1/trades";
const BODY: &str = r#"{"market":"EUR_USD","size":45000}"#;

fn page() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/wire-format.md");
    std::fs::read_to_string(path).unwrap()
}

/// The fenced block whose info string is `lang name`.
fn block(page: &str, name: &str) -> String {
    let marker = format!(" {name}\n");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/wire-format.md has no block {name}"));
    let body = &page[start + marker.len()..];
    body[..body.find("\n```").unwrap()].to_string()
}

struct Example {
    headers: HeaderMap,
    method: String,
    path: String,
    body: Vec<u8>,
}

fn parse_request(text: &str) -> Example {
    let (head, body) = text.split_once("\n\n").unwrap();
    let mut lines = head.lines();
    let mut start = lines.next().unwrap().split(' ');
    let method = start.next().unwrap().to_string();
    let path = start.next().unwrap().to_string();
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(": ").unwrap();
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    Example {
        headers,
        method,
        path,
        body: body.as_bytes().to_vec(),
    }
}

#[test]
fn wire_format_example_verifies() {
    let page = page();
    let example = parse_request(&block(&page, "kakunin-example-request"));
    let target = TargetUri::new("https", AUTHORITY, &example.path);
    let parsed = parse_signature(&example.headers, "kakunin").unwrap();
    let base = signature_base(
        &Message::Request {
            method: &example.method,
            target: &target,
            headers: &example.headers,
        },
        &parsed.input,
    )
    .unwrap();
    assert_eq!(base, block(&page, "kakunin-example-base"));

    // The printed private key is the certificate's key.
    let key_pem = block(&page, "kakunin-example-agent-key");
    let key = kakunin_signer::FileKey::from_pem("example", key_pem.as_bytes()).unwrap();
    let cert_b64 = example.headers["x-agent-certificate"].to_str().unwrap();
    let cert_der = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(cert_b64)
            .unwrap()
    };
    let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).unwrap();
    assert_eq!(cert.public_key().raw, key.public_key_spki());

    let ca = CertificateDer::from_pem_slice(block(&page, "kakunin-example-ca").as_bytes()).unwrap();
    let mut config = VerifierConfig::new(vec![ca]);
    config.revocation = RevocationMode::Off;
    let verifier = Verifier::new(config).unwrap();
    let created = parsed.input.params.created.unwrap();
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(created as u64 + 1);
    let request = Request {
        method: &example.method,
        scheme: "https",
        authority: example.headers["host"].to_str().unwrap(),
        path_and_query: &example.path,
        headers: &example.headers,
        body: &example.body,
        peer_chain: &[],
    };
    match verifier.verify(&request, at) {
        Outcome::Accepted(verdict) => {
            assert_eq!(verdict.agent.agent_id, "trading_bot_v2");
            assert_eq!(verdict.action.as_deref(), Some("submit_trade"));
            assert_eq!(verdict.alg, "ecdsa-p256-sha256");
        }
        other => panic!("the documented example must verify: {other:?}"),
    }
    // The same request with one byte of the body changed is refused.
    let tampered = String::from_utf8(example.body.clone())
        .unwrap()
        .replace("45000", "45001");
    let request = Request {
        body: tampered.as_bytes(),
        ..request
    };
    match Verifier::new(VerifierConfig {
        revocation: RevocationMode::Off,
        ..verifier.config().clone()
    })
    .unwrap()
    .verify(&request, at)
    {
        Outcome::Rejected(r) => assert_eq!(r.reason.code(), "content_digest_mismatch"),
        other => panic!("a changed body must be refused: {other:?}"),
    }
}

#[test]
#[ignore = "generates the example for docs/wire-format.md"]
fn generate_wire_example() {
    let dir = tempfile::tempdir().unwrap();
    let ca = kakunin_authority::Authority::init(
        &dir.path().join("ca"),
        &kakunin_authority::InitOptions {
            common_name: "Kakunin Example CA".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let policy_text = include_str!("../../proxy/src/demo/demo-policy.json");
    let policy = kakunin_policy::Policy::from_json_str("demo-policy.json", policy_text).unwrap();
    let issued = ca
        .issue_agent(&kakunin_authority::AgentRequest {
            agent_id: "trading_bot_v2",
            policy: &policy,
            key: kakunin_authority::SubjectKey::Generate,
            validity: kakunin_authority::Validity::Days(3650),
        })
        .unwrap();
    let key_pem = issued.key_pem.unwrap();
    let key = kakunin_signer::FileKey::from_pem("example", key_pem.as_bytes()).unwrap();
    let leaf = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static(AUTHORITY));
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let created_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let target = TargetUri::new("https", AUTHORITY, PATH);
    httpsig::sign_request(
        &mut headers,
        "POST",
        &target,
        BODY.as_bytes(),
        &httpsig::RequestSigner {
            key: &key,
            keyid: &issued.serial_hex,
            certificate: &httpsig::CertificateHeader::new(&leaf).unwrap(),
            created_ms,
            lifetime_secs: 60,
            nonce: httpsig::new_nonce().unwrap(),
        },
    )
    .unwrap();
    let parsed = parse_signature(&headers, "kakunin").unwrap();
    let base = signature_base(
        &Message::Request {
            method: "POST",
            target: &target,
            headers: &headers,
        },
        &parsed.input,
    )
    .unwrap();
    println!("```http kakunin-example-request\nPOST {PATH} HTTP/1.1");
    for (name, value) in &headers {
        println!(
            "{}: {}",
            header_case(name.as_str()),
            value.to_str().unwrap()
        );
    }
    println!("\n{BODY}\n```\n");
    println!("```text kakunin-example-base\n{base}\n```\n");
    println!("```pem kakunin-example-agent-key\n{}```\n", key_pem);
    println!("```pem kakunin-example-ca\n{}```", ca.certificate_pem());
}

fn header_case(name: &str) -> String {
    match name {
        "x-agent-ocsp" => "X-Agent-OCSP".into(),
        _ => name
            .split('-')
            .map(|part| {
                let mut chars = part.chars();
                chars
                    .next()
                    .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("-"),
    }
}
