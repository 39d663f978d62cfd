//! `kakunin gateway`: flags (each also a `KAKUNIN_GATEWAY_*` variable) read
//! into `GatewaySettings`, then served until SIGINT or SIGTERM.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use kakunin_verifier::{ConfigError, RevocationMode, VerifierConfig};

use crate::gateway::{GatewayError, GatewayLimits, GatewaySettings};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RevocationArg {
    /// A stapled or fetched OCSP status is required (the seed's fail_open: false).
    Required,
    /// Without a status the request passes, marked "unchecked" in the audit;
    /// revoked still refuses.
    FailOpen,
    /// No revocation check.
    Off,
}

#[derive(Debug, Clone, Args)]
pub struct GatewayFlags {
    /// Address for agents' mTLS connections.
    #[arg(long, env = "KAKUNIN_GATEWAY_LISTEN", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// The gateway's server certificate chain (PEM, leaf first);
    /// `kakunin ca issue-server` makes one.
    #[arg(long, env = "KAKUNIN_GATEWAY_CERT")]
    pub cert: PathBuf,
    /// The server certificate's private key (PEM).
    #[arg(long, env = "KAKUNIN_GATEWAY_KEY")]
    pub key: PathBuf,
    /// CA certificate(s) (PEM) that agent certificates must chain to; the
    /// TLS handshake requires a client certificate from one of them.
    #[arg(long, env = "KAKUNIN_GATEWAY_CLIENT_CA")]
    pub client_ca: PathBuf,
    /// Where accepted requests go over plain HTTP: HOST:PORT on loopback.
    #[arg(long, env = "KAKUNIN_GATEWAY_BACKEND")]
    pub backend: String,
    /// Permit a backend off loopback (the hop to it is not encrypted).
    #[arg(long, env = "KAKUNIN_GATEWAY_ALLOW_REMOTE_BACKEND")]
    pub allow_remote_backend: bool,
    /// Audit log (JSON lines): a file, or "-" for standard output [default: -].
    #[arg(long, env = "KAKUNIN_GATEWAY_AUDIT_LOG")]
    pub audit_log: Option<String>,
    /// Required SPIFFE trust domain of agent certificates [default: any; the
    /// CA is pinned by --client-ca].
    #[arg(long, env = "KAKUNIN_GATEWAY_TRUST_DOMAIN")]
    pub trust_domain: Option<String>,
    /// OCSP responder to ask instead of the certificate's AIA URL (http://).
    #[arg(long, env = "KAKUNIN_GATEWAY_OCSP_URL")]
    pub ocsp_url: Option<String>,
    /// How the agent certificate's revocation status is established.
    #[arg(
        long,
        env = "KAKUNIN_GATEWAY_REVOCATION",
        value_enum,
        default_value = "required"
    )]
    pub revocation: RevocationArg,
    /// How old a signature's `created` may be (the seed's 60 s).
    #[arg(long, env = "KAKUNIN_GATEWAY_MAX_AGE_SECONDS", default_value_t = 60)]
    pub max_age_seconds: u64,
    /// How far ahead of this clock `created` may be.
    #[arg(long, env = "KAKUNIN_GATEWAY_CLOCK_SKEW_SECONDS", default_value_t = 5)]
    pub clock_skew_seconds: u64,
    /// How long a fetched OCSP answer is reused (the seed's 5 s).
    #[arg(
        long,
        env = "KAKUNIN_GATEWAY_OCSP_CACHE_TTL_SECONDS",
        default_value_t = 5
    )]
    pub ocsp_cache_ttl_seconds: u64,
    /// Deadline for one OCSP exchange, in milliseconds.
    #[arg(long, env = "KAKUNIN_GATEWAY_OCSP_TIMEOUT_MS", default_value_t = 2000)]
    pub ocsp_timeout_ms: u64,
    /// A Host (`@authority`) this gateway answers for, e.g.
    /// api.exchange.com; repeatable (variable: comma-separated) [default: any].
    #[arg(
        long = "authority",
        env = "KAKUNIN_GATEWAY_AUTHORITY",
        value_delimiter = ','
    )]
    pub authorities: Vec<String>,
    /// OID of the scope extension in agent certificates.
    #[arg(
        long,
        env = "KAKUNIN_GATEWAY_SCOPE_OID",
        default_value = "1.3.6.1.4.1.32473.1.1"
    )]
    pub scope_oid: String,
    /// Largest request body, bytes (413 above).
    #[arg(long, env = "KAKUNIN_GATEWAY_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Largest request head, bytes (at least 8192).
    #[arg(long, env = "KAKUNIN_GATEWAY_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,
    /// Open connections at most; more are closed at once.
    #[arg(long, env = "KAKUNIN_GATEWAY_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Deadline for the TLS handshake and for each request head, ms.
    #[arg(
        long,
        env = "KAKUNIN_GATEWAY_HEADER_READ_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub header_read_timeout_ms: u64,
    /// Deadline for a request body, ms (408 after).
    #[arg(
        long,
        env = "KAKUNIN_GATEWAY_BODY_READ_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub body_read_timeout_ms: u64,
    /// Deadline for the backend's response head and each piece of its body, ms.
    #[arg(
        long,
        env = "KAKUNIN_GATEWAY_BACKEND_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub backend_timeout_ms: u64,
}

fn read_text(path: &Path, flag: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("{flag} {}: cannot read the file", path.display()))
}

/// `host:port` (an `http://` prefix and a trailing `/` are tolerated). A
/// name is resolved once, here; IPv4 is preferred when it has both.
fn backend_addr(text: &str) -> anyhow::Result<SocketAddr> {
    let trimmed = text.trim();
    let trimmed = trimmed.strip_prefix("http://").unwrap_or(trimmed);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if let Ok(addr) = trimmed.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let addrs: Vec<SocketAddr> = trimmed
        .to_socket_addrs()
        .with_context(|| format!("--backend {text:?}: expected HOST:PORT, e.g. 127.0.0.1:8080"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .with_context(|| format!("--backend {text:?}: the name has no address"))
}

fn ms(value: u64, flag: &str) -> anyhow::Result<Duration> {
    if value == 0 || value > 86_400_000 {
        bail!("{flag} {value}: must be between 1 and 86400000");
    }
    Ok(Duration::from_millis(value))
}

pub fn settings(flags: &GatewayFlags) -> anyhow::Result<GatewaySettings> {
    // The error names the file and the cause already (a context would
    // repeat the cause).
    let client_cas = kakunin_signer::load_certificate_chain(&flags.client_ca)
        .map_err(|e| anyhow::anyhow!("--client-ca: {e}"))?;
    let mut verifier = VerifierConfig::new(client_cas);
    verifier.trust_domain = flags.trust_domain.clone();
    verifier.scope_oid = flags.scope_oid.clone();
    verifier.max_age = Duration::from_secs(flags.max_age_seconds);
    verifier.clock_skew = Duration::from_secs(flags.clock_skew_seconds);
    verifier.ocsp_cache_ttl = Duration::from_secs(flags.ocsp_cache_ttl_seconds);
    verifier.revocation = match flags.revocation {
        RevocationArg::Required => RevocationMode::Required,
        RevocationArg::FailOpen => RevocationMode::FailOpen,
        RevocationArg::Off => RevocationMode::Off,
    };
    if let Some(url) = &flags.ocsp_url {
        crate::revocation::HttpUrl::parse(url).map_err(|e| anyhow::anyhow!("--ocsp-url: {e}"))?;
        verifier.ocsp_url = Some(url.clone());
    }
    // The verifier compares lower case, without the scheme's default port,
    // as the signature's @authority is built.
    verifier.authorities = flags
        .authorities
        .iter()
        .map(|a| kakunin_signer::httpsig::TargetUri::new("https", a.trim(), "/"))
        .map(|t| t.authority().to_string())
        .filter(|a| !a.is_empty())
        .collect();
    if flags.max_body_bytes == 0 {
        bail!("--max-body-bytes must be at least 1");
    }
    let audit_log = match flags.audit_log.as_deref() {
        None | Some("-") => None,
        Some(path) => Some(PathBuf::from(path)),
    };
    Ok(GatewaySettings {
        listen: flags.listen,
        server_chain_pem: read_text(&flags.cert, "--cert")?,
        server_key_pem: read_text(&flags.key, "--key")?,
        verifier,
        backend: backend_addr(&flags.backend)?,
        allow_remote_backend: flags.allow_remote_backend,
        audit_log,
        limits: GatewayLimits {
            max_connections: flags.max_connections,
            max_header_bytes: flags.max_header_bytes,
            max_body_bytes: flags.max_body_bytes,
            header_read_timeout: ms(flags.header_read_timeout_ms, "--header-read-timeout-ms")?,
            body_read_timeout: ms(flags.body_read_timeout_ms, "--body-read-timeout-ms")?,
            backend_timeout: ms(flags.backend_timeout_ms, "--backend-timeout-ms")?,
            ocsp_timeout: ms(flags.ocsp_timeout_ms, "--ocsp-timeout-ms")?,
        },
    })
}

/// Serves until SIGINT or SIGTERM, then lets requests in flight finish.
pub async fn run(flags: GatewayFlags) -> anyhow::Result<()> {
    let settings = settings(&flags)?;
    let backend = settings.backend;
    let gateway = crate::gateway::start(settings)
        .await
        .map_err(|err| match err {
            GatewayError::ServerCertificate(_) => anyhow::Error::new(err).context(format!(
                "--cert {} / --key {}",
                flags.cert.display(),
                flags.key.display()
            )),
            GatewayError::ClientCa(_)
            | GatewayError::Verifier(
                ConfigError::NoTrustAnchors | ConfigError::BadTrustAnchor { .. },
            ) => anyhow::Error::new(err)
                .context(format!("--client-ca {}", flags.client_ca.display())),
            other => anyhow::Error::new(other),
        })?;
    tracing::info!(%backend, revocation = ?flags.revocation, "gateway ready");
    // Tests and supervisors wait for this exact line.
    eprintln!("kakunin: gateway listening on {}", gateway.local_addr());
    crate::run::shutdown_signal().await;
    gateway.stopped().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_addresses() {
        let want: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        for text in [
            "127.0.0.1:8080",
            "http://127.0.0.1:8080/",
            " 127.0.0.1:8080 ",
        ] {
            assert_eq!(backend_addr(text).unwrap(), want, "{text}");
        }
        assert!(backend_addr("localhost:8080").unwrap().ip().is_loopback());
        assert!(backend_addr("8080").is_err());
    }
}
