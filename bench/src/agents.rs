//! What the receiver-side benchmarks share: a throwaway agents' CA, agent
//! certificates for each key type, a stapled OCSP "good" from the CA's own
//! responder codec, and signed requests exactly as the proxy makes them
//! (`httpsig::sign_request`, then the staple as `X-Agent-OCSP`).

use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use base64::Engine as _;
use http::{HeaderMap, HeaderValue};
use kakunin_authority::{
    AgentRequest, Authority, AuthorityError, CertStatus, InitOptions, SubjectKey, Validity,
};
use kakunin_signer::httpsig::{self, RequestSigner, TargetUri};
use kakunin_signer::{FileKey, KeyBackend as _};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;
use serde_json::json;

pub const AGENT_ID: &str = "bench_bot";
pub const AUTHORITY: &str = "api.exchange.com";
pub const METHOD: &str = "POST";
pub const PATH: &str = "/v1/trades";
pub const BODY: &[u8] = br#"{"market":"EUR_USD","size":45000}"#;

/// A 2048-bit RSA key (rcgen cannot make RSA keys with ring): the signer's
/// own test fixture.
const RSA_2048_PEM: &str = include_str!("../../signer/tests/fixtures/rsa2048-pkcs1.pem");

/// The agent key types the proxy signs with, one benchmark row each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    P256,
    P384,
    Rsa2048,
    Ed25519,
}

impl KeyKind {
    pub const ALL: [KeyKind; 4] = [
        KeyKind::P256,
        KeyKind::P384,
        KeyKind::Rsa2048,
        KeyKind::Ed25519,
    ];

    pub fn label(self) -> &'static str {
        match self {
            KeyKind::P256 => "P-256",
            KeyKind::P384 => "P-384",
            KeyKind::Rsa2048 => "RSA-2048",
            KeyKind::Ed25519 => "Ed25519",
        }
    }
}

/// The scope the certificate carries: the demo's trade action, so the
/// receiver's scope check matches an action rule and checks the body.
fn policy() -> anyhow::Result<kakunin_policy::Policy> {
    let text = json!({
        "agent_id": AGENT_ID,
        "network_rules": { "allowed_hosts": [AUTHORITY] },
        "actions": [{
            "name": "submit_trade",
            "match": { "method": METHOD, "host": AUTHORITY, "path": PATH },
            "body": {
                "/market": { "in": ["EUR_USD", "GBP_USD"] },
                "/size": { "max": 50000 }
            }
        }]
    })
    .to_string();
    Ok(kakunin_policy::Policy::from_json_str(
        "bench policy",
        &text,
    )?)
}

/// An agents' CA in a temporary directory (P-256 key, as `ca init` makes).
pub struct Lab {
    _dir: tempfile::TempDir,
    pub ca: Authority,
    pub ca_der: CertificateDer<'static>,
}

/// An agent certificate with its private key.
pub struct Agent {
    pub key: FileKey,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub serial_hex: String,
}

impl Agent {
    /// The certificate's SubjectPublicKeyInfo (DER).
    pub fn cert_spki(&self) -> anyhow::Result<Vec<u8>> {
        let (_, cert) = x509_parser::parse_x509_certificate(self.cert_der.as_ref())
            .context("the agent certificate does not parse")?;
        Ok(cert.public_key().raw.to_vec())
    }
}

/// One request as the agent's proxy sends it: signed, with a staple.
#[derive(Clone)]
pub struct Signed {
    pub headers: HeaderMap,
}

impl Lab {
    pub fn new() -> anyhow::Result<Lab> {
        let dir = tempfile::tempdir()?;
        let ca = Authority::init(
            &dir.path().join("ca"),
            &InitOptions {
                common_name: "Kakunin Bench CA".into(),
                ..Default::default()
            },
        )?;
        let ca_der = CertificateDer::from_pem_slice(ca.certificate_pem().as_bytes())
            .context("the CA certificate is not PEM")?;
        Ok(Lab {
            _dir: dir,
            ca,
            ca_der,
        })
    }

    /// Issues an agent certificate for a key of `kind`.
    pub fn issue(&self, kind: KeyKind) -> anyhow::Result<Agent> {
        let key_pem = match kind {
            KeyKind::P256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
            KeyKind::P384 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?,
            KeyKind::Ed25519 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?,
            KeyKind::Rsa2048 => {
                return self.issue_with(kind, RSA_2048_PEM.to_string());
            }
        }
        .serialize_pem();
        self.issue_with(kind, key_pem)
    }

    fn issue_with(&self, kind: KeyKind, key_pem: String) -> anyhow::Result<Agent> {
        let key = FileKey::from_pem(kind.label(), key_pem.as_bytes())?;
        let policy = policy()?;
        let issued = self.ca.issue_agent(&AgentRequest {
            agent_id: AGENT_ID,
            policy: &policy,
            key: SubjectKey::SpkiDer(key.public_key_spki().to_vec()),
            validity: Validity::Days(1),
        })?;
        let cert_der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes())
            .context("the agent certificate is not PEM")?;
        Ok(Agent {
            key,
            key_pem,
            cert_der,
            serial_hex: issued.serial_hex,
        })
    }

    /// A DER OCSP "good" for `agent` produced at `at` (no nonce: a staple is
    /// pre-signed), as `ca serve` answers the proxy's query.
    pub fn staple(&self, agent: &Agent, at: SystemTime) -> anyhow::Result<Vec<u8>> {
        let query = kakunin_authority::ocsp::build_request(
            agent.cert_der.as_ref(),
            self.ca_der.as_ref(),
            None,
        )?;
        let now = time::OffsetDateTime::from(at);
        let reply = self.ca.respond_ocsp(
            &query,
            &mut |_: &str| Ok::<_, AuthorityError>(CertStatus::Good),
            &kakunin_authority::ocsp::ResponseOptions {
                now,
                validity: time::Duration::HOUR,
            },
        );
        if reply.outcome.status != kakunin_authority::ocsp::ResponseStatus::Successful {
            anyhow::bail!("the responder refused: {:?}", reply.outcome.detail);
        }
        Ok(reply.der)
    }
}

/// Signs `count` requests (each with its own nonce) created at `created`,
/// each carrying `staple` as `X-Agent-OCSP`, on `threads` threads.
pub fn sign_many(
    agent: &Agent,
    staple_der: &[u8],
    created: SystemTime,
    count: usize,
    threads: usize,
) -> anyhow::Result<Vec<Signed>> {
    let staple =
        HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(staple_der))?;
    let created_ms = u64::try_from(
        created
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis(),
    )?;
    let threads = threads.max(1);
    let per = count.div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let n = per.min(count.saturating_sub(t * per));
                let staple = staple.clone();
                scope.spawn(move || -> anyhow::Result<Vec<Signed>> {
                    (0..n)
                        .map(|_| sign_one(agent, &staple, created_ms))
                        .collect()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(count);
        for handle in handles {
            let part = handle
                .join()
                .map_err(|_| anyhow::anyhow!("a signing thread panicked"))??;
            all.extend(part);
        }
        Ok(all)
    })
}

fn sign_one(agent: &Agent, staple: &HeaderValue, created_ms: u64) -> anyhow::Result<Signed> {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::HOST, HeaderValue::from_static(AUTHORITY));
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    httpsig::sign_request(
        &mut headers,
        METHOD,
        &TargetUri::new("https", AUTHORITY, PATH),
        BODY,
        &RequestSigner {
            key: &agent.key,
            keyid: &agent.serial_hex,
            certificate: &httpsig::CertificateHeader::new(&agent.cert_der)?,
            created_ms,
            lifetime_secs: 60,
            nonce: httpsig::new_nonce()?,
        },
    )?;
    headers.insert(httpsig::X_AGENT_OCSP, staple.clone());
    Ok(Signed { headers })
}

/// min / median / max of `values`, and the values (one decimal).
pub fn spread(values: &[f64]) -> serde_json::Value {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    json!({
        "median": round1(median(&sorted)),
        "min": round1(sorted.first().copied().unwrap_or(f64::NAN)),
        "max": round1(sorted.last().copied().unwrap_or(f64::NAN)),
        "runs": values.iter().copied().map(round1).collect::<Vec<_>>(),
    })
}

/// `spread`'s median [min..max], whole numbers.
pub fn show(spread: &serde_json::Value) -> String {
    let get = |key: &str| spread[key].as_f64().unwrap_or(f64::NAN);
    format!(
        "{:.0} [{:.0}..{:.0}]",
        get("median"),
        get("min"),
        get("max")
    )
}

pub fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// How long this thread has been runnable but waiting for a core (Linux:
/// the second field of /proc/thread-self/schedstat); zero where unknown.
pub fn thread_run_delay() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// This thread's CPU time so far (`CLOCK_THREAD_CPUTIME_ID`). On a machine
/// shared with other work, CPU time leaves out the time the thread waited
/// for a core.
pub fn thread_cpu() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// The median of sorted values.
pub fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

pub fn unix_secs(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Writes `report` as pretty JSON to `out`.
pub fn write_report(out: &std::path::Path, report: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(report)? + "\n")?;
    println!("written to {}", out.display());
    Ok(())
}
