//! The paths compared, and the one PKI they share: the agents' CA (the
//! project's own), the upstream's server certificate, one agent
//! certificate and PEM key that every proxy presents, and a second agent
//! certificate for the key in the KMS stand-in.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use kakunin_authority::{AgentRequest, ServerRequest, SubjectKey, Validity};
use kakunin_signer::KeyOptions;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;
use serde_json::json;
use tokio_rustls::TlsConnector;

use super::child::Proc;
use super::haproxy::Haproxy;
use super::kakunin::{Kakunin, Key};
use super::load::Target;
use super::nginx::Nginx;
use crate::agents::Lab;

pub const HOST: &str = "api.exchange.com";
pub const REGION: &str = "eu-west-1";
const AGENT_ID: &str = "bench_all_bot";
/// Signed by Kakunin (a POST matching an action without `"sign"`).
pub const SIGNED_PATH: &str = "/v1/trades";
/// The same POST under an action with `"sign": false`.
pub const UNSIGNED_PATH: &str = "/v1/quotes";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathKind {
    Direct,
    Nginx,
    Haproxy,
    Kakunin,
    KakuninSigned,
    KakuninKms,
    /// `[signing] batch = true`: one signature per batch of requests.
    KakuninBatched,
    KakuninKmsBatched,
}

impl PathKind {
    pub const ALL: [PathKind; 8] = [
        PathKind::Direct,
        PathKind::Nginx,
        PathKind::Haproxy,
        PathKind::Kakunin,
        PathKind::KakuninSigned,
        PathKind::KakuninBatched,
        PathKind::KakuninKms,
        PathKind::KakuninKmsBatched,
    ];

    /// By its key in the results JSON (`--paths`).
    pub fn from_key(key: &str) -> Option<PathKind> {
        PathKind::ALL.into_iter().find(|k| k.key() == key)
    }

    /// The key in the results JSON.
    pub fn key(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Nginx => "nginx",
            PathKind::Haproxy => "haproxy",
            PathKind::Kakunin => "kakunin_unsigned",
            PathKind::KakuninSigned => "kakunin_signed",
            PathKind::KakuninKms => "kakunin_kms",
            PathKind::KakuninBatched => "kakunin_batched",
            PathKind::KakuninKmsBatched => "kakunin_kms_batched",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            PathKind::Direct => "direct (mTLS floor)",
            PathKind::Nginx => "nginx",
            PathKind::Haproxy => "HAProxy",
            PathKind::Kakunin => "Kakunin, no signing",
            PathKind::KakuninSigned => "Kakunin, signing (file key)",
            PathKind::KakuninKms => "Kakunin, signing (KMS stand-in)",
            PathKind::KakuninBatched => "Kakunin, batch signing (file key)",
            PathKind::KakuninKmsBatched => "Kakunin, batch signing (KMS stand-in)",
        }
    }

    /// KMS's quota and delay, not the proxy, set this path's ceiling.
    pub fn is_kms(self) -> bool {
        matches!(self, PathKind::KakuninKms | PathKind::KakuninKmsBatched)
    }

    /// A path through the kakunin binary.
    pub fn is_kakunin(self) -> bool {
        matches!(
            self,
            PathKind::Kakunin
                | PathKind::KakuninSigned
                | PathKind::KakuninKms
                | PathKind::KakuninBatched
                | PathKind::KakuninKmsBatched
        )
    }

    /// Request signatures batched (`[signing] batch = true`).
    pub fn is_batched(self) -> bool {
        matches!(self, PathKind::KakuninBatched | PathKind::KakuninKmsBatched)
    }

    fn request_path(self) -> &'static str {
        match self {
            PathKind::Kakunin => UNSIGNED_PATH,
            _ => SIGNED_PATH,
        }
    }
}

/// The files the proxies read.
pub struct Files {
    pub ca: PathBuf,
    pub agent_cert: PathBuf,
    pub agent_key: PathBuf,
    /// Certificate and key in one PEM file, as HAProxy's `crt` takes them.
    pub agent_bundle: PathBuf,
    pub policy: PathBuf,
}

/// The scope: both POSTs are actions; one is signed (the default for a
/// POST), one not. Revocation checks are off: nginx and HAProxy check no
/// revocation either, and no OCSP traffic should mix into the comparison.
fn policy_json() -> String {
    json!({
        "agent_id": AGENT_ID,
        "network_rules": { "allowed_hosts": [HOST] },
        "actions": [
            { "name": "submit_trade", "match": { "method": "POST", "host": HOST, "path": SIGNED_PATH } },
            { "name": "submit_quote", "match": { "method": "POST", "host": HOST, "path": UNSIGNED_PATH }, "sign": false }
        ],
        "revocation_check": { "enabled": false }
    })
    .to_string()
}

pub struct Site {
    pub lab: Lab,
    pub files: Files,
    pub dir: tempfile::TempDir,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub agent_cert: CertificateDer<'static>,
    pub agent_key_pem: String,
    policy: kakunin_policy::Policy,
}

impl Site {
    pub fn new() -> anyhow::Result<Site> {
        let lab = Lab::new()?;
        let dir = tempfile::tempdir()?;
        let server = lab.ca.issue_server(&ServerRequest {
            names: vec![HOST.into()],
            validity: Validity::Days(1),
        })?;
        let text = policy_json();
        let policy_path = dir.path().join("policy.json");
        std::fs::write(&policy_path, &text)?;
        let policy = kakunin_policy::Policy::from_json_str("policy.json", &text)
            .map_err(|e| anyhow::anyhow!("bench policy: {e}"))?;
        let issued = lab.ca.issue_agent(&AgentRequest {
            agent_id: AGENT_ID,
            policy: &policy,
            key: SubjectKey::Generate,
            validity: Validity::Days(1),
        })?;
        let agent_key_pem = issued.key_pem.context("the agent key")?;
        let files = Files {
            ca: lab.ca.certificate_path(),
            agent_cert: dir.path().join("agent.pem"),
            agent_key: dir.path().join("agent-key.pem"),
            agent_bundle: dir.path().join("agent-bundle.pem"),
            policy: policy_path,
        };
        std::fs::write(&files.agent_cert, &issued.cert_pem)?;
        kakunin_authority::write_private_key(&files.agent_key, &agent_key_pem)?;
        kakunin_authority::write_private_key(
            &files.agent_bundle,
            &format!("{}{}", issued.cert_pem, agent_key_pem),
        )?;
        let agent_cert = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes())
            .context("the agent certificate is not PEM")?;
        Ok(Site {
            server_cert_pem: server.cert_pem,
            server_key_pem: server.key_pem.context("the server key")?,
            lab,
            files,
            dir,
            agent_cert,
            agent_key_pem,
            policy,
        })
    }

    /// Certifies the key `arn` in KMS at `endpoint`: the CA signs the
    /// public key that KMS reports (GetPublicKey through the proxy's own
    /// backend), as `kakunin ca issue --public-key-from aws-kms:ARN` does.
    /// Blocks on KMS: call it off the runtime's workers.
    pub fn certify_kms(&self, arn: &str, endpoint: &str) -> anyhow::Result<PathBuf> {
        let options = KeyOptions {
            kms_endpoint: Some(endpoint.to_string()),
            ..KeyOptions::default()
        };
        let reference = format!("aws-kms:{arn}");
        let key = kakunin_signer::open_key_with(&reference, &options)
            .with_context(|| format!("opening {reference} in the stand-in"))?;
        let issued = self.lab.ca.issue_agent(&AgentRequest {
            agent_id: AGENT_ID,
            policy: &self.policy,
            key: SubjectKey::SpkiDer(key.public_key_spki().to_vec()),
            validity: Validity::Days(1),
        })?;
        let path = self.dir.path().join("agent-kms.pem");
        std::fs::write(&path, &issued.cert_pem)?;
        Ok(path)
    }
}

/// What starting a path needs.
pub struct Env<'a> {
    pub site: &'a Site,
    pub upstream: SocketAddr,
    pub kakunin_bin: &'a Path,
    /// The KMS key's ARN, the stand-in's endpoint, the key's certificate.
    pub kms: Option<(String, String, PathBuf)>,
    /// The core the proxy under test is pinned to.
    pub core: Option<usize>,
    /// Upstream connections each proxy keeps (the client's concurrency).
    pub pool: usize,
    pub body: Bytes,
    pub direct: TlsConnector,
    /// Names this environment's run directories apart from another's (the
    /// baseline binary's in an A/B run); empty otherwise.
    pub tag: &'static str,
}

/// A path ready for load; its proxy (if any) stops when this is dropped.
pub struct Running {
    pub target: Arc<Target>,
    pub proc: Option<Proc>,
}

impl Running {
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }
}

/// Starts `kind` with its files under `dir`.
pub fn start(kind: PathKind, env: &Env<'_>, dir: &Path) -> anyhow::Result<Running> {
    let target = |addr: SocketAddr, tls: Option<TlsConnector>| {
        Arc::new(Target {
            addr,
            host: HOST,
            path: kind.request_path(),
            tls,
            body: env.body.clone(),
        })
    };
    let files = &env.site.files;
    let (addr, proc) = match kind {
        PathKind::Direct => {
            return Ok(Running {
                target: target(env.upstream, Some(env.direct.clone())),
                proc: None,
            })
        }
        PathKind::Nginx => {
            let Nginx { proc, addr } = Nginx::start(files, dir, env.upstream, env.pool, env.core)?;
            (addr, proc)
        }
        PathKind::Haproxy => {
            let Haproxy { proc, addr } = Haproxy::start(files, dir, env.upstream, env.core)?;
            (addr, proc)
        }
        PathKind::Kakunin
        | PathKind::KakuninSigned
        | PathKind::KakuninKms
        | PathKind::KakuninBatched
        | PathKind::KakuninKmsBatched => {
            let key = match (kind.is_kms(), &env.kms) {
                (true, Some((arn, endpoint, cert))) => Key::Kms {
                    arn,
                    endpoint,
                    cert,
                },
                (true, None) => anyhow::bail!("no KMS stand-in"),
                (false, _) => Key::File,
            };
            let Kakunin { proc, addr } = Kakunin::start(
                env.kakunin_bin,
                files,
                dir,
                &key,
                kind.is_batched(),
                env.upstream,
                env.pool,
                env.core,
            )?;
            (addr, proc)
        }
    };
    Ok(Running {
        target: target(addr, None),
        proc: Some(proc),
    })
}
