//! `kakunin.toml`, its flags and its `KAKUNIN_*` variables.
//!
//! Precedence: flag > environment > file > default. The file is parsed
//! (unknown keys refused, with line and column), then merged, then
//! validated, and only then used.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::Deserialize;

use kakunin_signer::KeyOptions;

use crate::signing::{DEFAULT_LIFETIME_SECS, MAX_LIFETIME_SECS};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:15001";
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
const MAX_TIMEOUT_MS: u64 = 86_400_000;

/// The file as written. Every field is optional here; defaults are applied
/// after flags and variables are merged in.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub policy: Option<PathBuf>,
    pub region: Option<String>,
    pub body_limit: Option<usize>,
    pub max_header_bytes: Option<usize>,
    pub header_read_timeout_ms: Option<u64>,
    pub body_read_timeout_ms: Option<u64>,
    pub audit_log: Option<String>,
    pub allow_remote_clients: Option<bool>,
    pub metrics_listen: Option<String>,
    #[serde(default)]
    pub identity: IdentitySection,
    #[serde(default)]
    pub upstream: UpstreamSection,
    #[serde(default)]
    pub revocation: RevocationSection,
    #[serde(default)]
    pub signing: SigningSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub issuer: Option<PathBuf>,
    pub reload_interval_ms: Option<u64>,
    pub kms_endpoint: Option<String>,
    pub sign_deadline_ms: Option<u64>,
    pub sign_attempts: Option<u32>,
    pub sign_max_pending: Option<usize>,
    pub pkcs11_sessions: Option<usize>,
}

/// Where the agent certificate's status is asked. Whether it is asked, how
/// long an answer is trusted and what happens without one are the policy's
/// (`revocation_check`), because receivers hold the agent to them too.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationSection {
    pub ocsp_url: Option<String>,
    pub watch_url: Option<String>,
    pub timeout_ms: Option<u64>,
    pub require_nonce: Option<bool>,
}

/// Request signatures (DESIGN.md "Request signature"). Which requests are
/// signed is the policy's (`actions[].sign`), like the rest of the scope.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningSection {
    pub lifetime_seconds: Option<u64>,
    pub batch: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    pub ca: Option<PathBuf>,
    pub connect_timeout_ms: Option<u64>,
    pub response_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub max_idle_per_host: Option<usize>,
    #[serde(default)]
    pub resolve: BTreeMap<String, String>,
}

/// Command-line flags; each also reads its `KAKUNIN_*` variable.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ProxyFlags {
    /// Configuration file (TOML).
    #[arg(long, env = "KAKUNIN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address for agents' plain HTTP [default: 127.0.0.1:15001].
    #[arg(long, env = "KAKUNIN_LISTEN")]
    pub listen: Option<String>,
    /// Scope policy file (JSON, `//` comments allowed).
    #[arg(long, env = "KAKUNIN_POLICY")]
    pub policy: Option<PathBuf>,
    /// Region this proxy runs in, checked against the policy's allowed_regions.
    #[arg(long, env = "KAKUNIN_REGION")]
    pub region: Option<String>,
    /// Largest request body accepted, in bytes [default: 1048576].
    #[arg(long, env = "KAKUNIN_BODY_LIMIT")]
    pub body_limit: Option<usize>,
    /// Largest request head (request line + headers), in bytes [default: 65536].
    #[arg(long, env = "KAKUNIN_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Time allowed for a client to send its request head [default: 10000].
    #[arg(long, env = "KAKUNIN_HEADER_READ_TIMEOUT_MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// Time allowed for a client to send its request body [default: 30000].
    #[arg(long, env = "KAKUNIN_BODY_READ_TIMEOUT_MS")]
    pub body_read_timeout_ms: Option<u64>,
    /// Audit log: a file path, or "-" for standard output [default: -].
    #[arg(long, env = "KAKUNIN_AUDIT_LOG")]
    pub audit_log: Option<String>,
    /// Allow a listen address other than loopback. Anyone who can reach the
    /// listener acts with the agent's identity.
    #[arg(long, env = "KAKUNIN_ALLOW_REMOTE_CLIENTS")]
    pub allow_remote_clients: Option<bool>,
    /// Agent certificate chain: a PEM file (the seed's AGENT_CERTIFICATE, a
    /// path or PEM text, is honoured too).
    #[arg(long, env = "KAKUNIN_IDENTITY_CERT")]
    pub identity_cert: Option<String>,
    /// Agent key reference: aws-kms:ARN (the seed's KMS_KEY_ARN is
    /// honoured too), pkcs11:URI (RFC 7512) or file:/path.pem.
    #[arg(long, env = "KAKUNIN_IDENTITY_KEY")]
    pub identity_key: Option<String>,
    /// KMS endpoint, e.g. a VPC endpoint [default: the AWS SDK's, which
    /// honours AWS_ENDPOINT_URL_KMS]. https://, or http:// on loopback.
    #[arg(long, env = "KAKUNIN_KMS_ENDPOINT")]
    pub kms_endpoint: Option<String>,
    /// Longest one signature by a KMS or HSM key may take, retries
    /// included, before the request fails with 503 [default: 3000].
    #[arg(long, env = "KAKUNIN_IDENTITY_SIGN_DEADLINE_MS")]
    pub identity_sign_deadline_ms: Option<u64>,
    /// Attempts per KMS signature when throttled or timed out, the first
    /// included, 1 to 10 [default: 3].
    #[arg(long, env = "KAKUNIN_IDENTITY_SIGN_ATTEMPTS")]
    pub identity_sign_attempts: Option<u32>,
    /// Signatures that may wait on a KMS or HSM key at once; more fail at
    /// once with 503 [default: 256].
    #[arg(long, env = "KAKUNIN_IDENTITY_SIGN_MAX_PENDING")]
    pub identity_sign_max_pending: Option<usize>,
    /// PKCS#11 sessions opened, i.e. signatures run on the token in
    /// parallel [default: 4].
    #[arg(long, env = "KAKUNIN_IDENTITY_PKCS11_SESSIONS")]
    pub identity_pkcs11_sessions: Option<usize>,
    /// Address for GET /metrics (Prometheus text) [default: none, off].
    #[arg(long, env = "KAKUNIN_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Certificate of the CA that issued the agent certificate, needed to
    /// check its revocation status when the certificate file holds the leaf
    /// alone.
    #[arg(long, env = "KAKUNIN_IDENTITY_ISSUER")]
    pub identity_issuer: Option<PathBuf>,
    /// How often the certificate file is checked for a new certificate
    /// (SIGHUP checks at once) [default: 1000].
    #[arg(long, env = "KAKUNIN_IDENTITY_RELOAD_INTERVAL_MS")]
    pub identity_reload_interval_ms: Option<u64>,
    /// OCSP responder for the agent certificate [default: the certificate's
    /// AIA OCSP URL].
    #[arg(long, env = "KAKUNIN_REVOCATION_OCSP_URL")]
    pub revocation_ocsp_url: Option<String>,
    /// Revocation watch stream (server-sent events), or "off" [default: the
    /// responder's origin + /watch].
    #[arg(long, env = "KAKUNIN_REVOCATION_WATCH_URL")]
    pub revocation_watch_url: Option<String>,
    /// Time allowed for one OCSP exchange [default: 2000].
    #[arg(long, env = "KAKUNIN_REVOCATION_TIMEOUT_MS")]
    pub revocation_timeout_ms: Option<u64>,
    /// Refuse OCSP answers that do not echo the request's nonce (they could
    /// be replays) [default: true]. Off only for responders that pre-sign.
    #[arg(long, env = "KAKUNIN_REVOCATION_REQUIRE_NONCE")]
    pub revocation_require_nonce: Option<bool>,
    /// How long a request signature is valid: its `expires` minus its
    /// `created`, 1 to 3600 [default: 60].
    #[arg(long, env = "KAKUNIN_SIGNING_LIFETIME_SECONDS")]
    pub signing_lifetime_seconds: Option<u64>,
    /// Requests ready to be signed at the same moment share one key
    /// signature over a Merkle tree of them, each carrying its proof in
    /// `Kakunin-Batch-Proof` (docs/wire-format.md). Receivers must verify
    /// with kakunin-verifier or implement the batch profile [default: false].
    #[arg(long, env = "KAKUNIN_SIGNING_BATCH")]
    pub signing_batch: Option<bool>,
    /// CA bundle (PEM) that upstream servers must chain to (pinned).
    #[arg(long, env = "KAKUNIN_UPSTREAM_CA")]
    pub upstream_ca: Option<PathBuf>,
    /// [default: 5000]
    #[arg(long, env = "KAKUNIN_UPSTREAM_CONNECT_TIMEOUT_MS")]
    pub upstream_connect_timeout_ms: Option<u64>,
    /// Time allowed for the upstream's response head [default: 30000].
    #[arg(long, env = "KAKUNIN_UPSTREAM_RESPONSE_TIMEOUT_MS")]
    pub upstream_response_timeout_ms: Option<u64>,
    /// How long an idle pooled upstream connection is kept [default: 90000].
    #[arg(long, env = "KAKUNIN_UPSTREAM_IDLE_TIMEOUT_MS")]
    pub upstream_idle_timeout_ms: Option<u64>,
    /// [default: 64]
    #[arg(long, env = "KAKUNIN_UPSTREAM_MAX_IDLE_PER_HOST")]
    pub upstream_max_idle_per_host: Option<usize>,
    /// Pin a host's upstream address, like curl --resolve: HOST=IP:PORT.
    /// Repeatable; the variable takes a comma-separated list.
    #[arg(
        long = "resolve",
        env = "KAKUNIN_UPSTREAM_RESOLVE",
        value_delimiter = ','
    )]
    pub resolve: Vec<String>,
}

/// Where the agent certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    File(PathBuf),
    /// PEM text given directly (the seed's AGENT_CERTIFICATE may hold it).
    Inline(String),
}

/// The validated configuration the proxy runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub policy: PathBuf,
    pub region: Option<String>,
    pub body_limit: usize,
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub audit_log: Option<PathBuf>,
    pub identity_cert: CertSource,
    pub identity_key: String,
    /// How a KMS or HSM key is asked to sign.
    pub key_options: KeyOptions,
    pub identity_issuer: Option<PathBuf>,
    pub reload_interval: Duration,
    pub ocsp_url: Option<String>,
    /// None: derived from the responder; Some("off"): no subscription.
    pub watch_url: Option<String>,
    pub revocation_timeout: Duration,
    pub require_nonce: bool,
    /// `expires` - `created` of request signatures.
    pub signing_lifetime_secs: u64,
    /// Batch signatures (`[signing] batch`).
    pub signing_batch: bool,
    pub upstream_ca: PathBuf,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle_per_host: usize,
    /// Canonical host name → pinned address.
    pub resolve: BTreeMap<String, SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
}

impl Config {
    /// Reads the file named by the flags (if any), merges flags and the seed's
    /// variables, and validates.
    pub fn load(flags: &ProxyFlags) -> anyhow::Result<Config> {
        let file = match &flags.config {
            Some(path) => parse_file(path)?,
            None => FileConfig::default(),
        };
        let seed_cert = std::env::var("AGENT_CERTIFICATE").ok();
        let seed_kms = std::env::var("KMS_KEY_ARN").ok();
        Self::merge(flags, file, seed_cert, seed_kms)
    }

    pub fn merge(
        flags: &ProxyFlags,
        file: FileConfig,
        seed_cert: Option<String>,
        seed_kms_arn: Option<String>,
    ) -> anyhow::Result<Config> {
        let listen_text =
            pick(flags.listen.clone(), file.listen).unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen: SocketAddr = listen_text
            .parse()
            .with_context(|| format!("listen = {listen_text:?} is not an IP:PORT address"))?;
        let allow_remote =
            pick(flags.allow_remote_clients, file.allow_remote_clients).unwrap_or(false);
        if !listen.ip().is_loopback() && !allow_remote {
            bail!(
                "listen = {listen} is not a loopback address: anyone who reaches it would act \
                 with this agent's identity; use 127.0.0.1, or set allow_remote_clients = true \
                 if the network around it is closed"
            );
        }
        let policy = pick(flags.policy.clone(), file.policy)
            .context("no policy file: set `policy` in the config, --policy or KAKUNIN_POLICY")?;
        let identity_cert = match pick(flags.identity_cert.clone(), file.identity.cert) {
            Some(path) => CertSource::File(PathBuf::from(path)),
            None => match seed_cert {
                Some(text) if text.contains("-----BEGIN") => CertSource::Inline(text),
                Some(path) if !path.trim().is_empty() => CertSource::File(PathBuf::from(path)),
                _ => bail!(
                    "no agent certificate: set [identity] cert, --identity-cert, \
                     KAKUNIN_IDENTITY_CERT or AGENT_CERTIFICATE"
                ),
            },
        };
        let identity_key = match pick(flags.identity_key.clone(), file.identity.key) {
            Some(key) => key,
            None => match seed_kms_arn {
                Some(arn) if !arn.trim().is_empty() => format!("aws-kms:{}", arn.trim()),
                _ => bail!(
                    "no agent key: set [identity] key, --identity-key, KAKUNIN_IDENTITY_KEY \
                     or KMS_KEY_ARN"
                ),
            },
        };
        let upstream_ca = pick(flags.upstream_ca.clone(), file.upstream.ca).context(
            "no upstream CA: set [upstream] ca (the pinned CA bundle upstream servers must \
             chain to), --upstream-ca or KAKUNIN_UPSTREAM_CA",
        )?;

        // File entries first, then flags, so that a flag wins even when the
        // two spell the host differently.
        let mut entries: Vec<(String, String)> = file.upstream.resolve.into_iter().collect();
        for entry in &flags.resolve {
            let (host, addr) = entry
                .split_once('=')
                .with_context(|| format!("--resolve {entry:?}: expected HOST=IP:PORT"))?;
            entries.push((host.trim().to_string(), addr.trim().to_string()));
        }
        let mut resolve = BTreeMap::new();
        for (host, addr) in entries {
            let parsed: SocketAddr = addr
                .parse()
                .with_context(|| format!("resolve {host:?} = {addr:?}: expected IP:PORT"))?;
            // Keys are matched against canonical host names (lower case,
            // punycode, canonical IP text), as the policy produces them.
            let key = kakunin_policy::normalize_host(host.trim())
                .map_err(|d| anyhow::anyhow!("resolve {host:?}: {}", d.message))?
                .host;
            resolve.insert(key, parsed);
        }

        let body_limit = pick(flags.body_limit, file.body_limit).unwrap_or(DEFAULT_BODY_LIMIT);
        let max_header_bytes =
            pick(flags.max_header_bytes, file.max_header_bytes).unwrap_or(64 * 1024);
        // hyper needs room for at least one read buffer.
        if max_header_bytes < 8192 {
            bail!("max_header_bytes = {max_header_bytes}: must be at least 8192");
        }
        let audit_log = match pick(flags.audit_log.clone(), file.audit_log) {
            None => None,
            Some(path) if path == "-" => None,
            Some(path) => Some(PathBuf::from(path)),
        };
        let region = pick(flags.region.clone(), file.region).filter(|r| !r.trim().is_empty());
        let metrics_listen = match pick(flags.metrics_listen.clone(), file.metrics_listen) {
            None => None,
            Some(text) => {
                let addr: SocketAddr = text.parse().with_context(|| {
                    format!("metrics_listen = {text:?} is not an IP:PORT address")
                })?;
                if !addr.ip().is_loopback() && !allow_remote {
                    bail!(
                        "metrics_listen = {addr} is not a loopback address; use 127.0.0.1, or \
                         set allow_remote_clients = true if the network around it is closed"
                    );
                }
                Some(addr)
            }
        };
        let key_file = KeyFileOptions {
            kms_endpoint: file.identity.kms_endpoint,
            sign_deadline_ms: file.identity.sign_deadline_ms,
            sign_attempts: file.identity.sign_attempts,
            sign_max_pending: file.identity.sign_max_pending,
            pkcs11_sessions: file.identity.pkcs11_sessions,
        };
        let key_options = key_options(flags, key_file)?;
        let signing_lifetime_secs = pick(
            flags.signing_lifetime_seconds,
            file.signing.lifetime_seconds,
        )
        .unwrap_or(DEFAULT_LIFETIME_SECS);
        if !(1..=MAX_LIFETIME_SECS).contains(&signing_lifetime_secs) {
            bail!(
                "signing.lifetime_seconds = {signing_lifetime_secs}: must be between 1 and \
                 {MAX_LIFETIME_SECS} (the seconds a receiver accepts a request signature; \
                 the default is {DEFAULT_LIFETIME_SECS})"
            );
        }
        Ok(Config {
            listen,
            policy,
            region,
            body_limit,
            max_header_bytes,
            header_read_timeout: ms(
                flags.header_read_timeout_ms,
                file.header_read_timeout_ms,
                10_000,
                "header_read_timeout_ms",
            )?,
            body_read_timeout: ms(
                flags.body_read_timeout_ms,
                file.body_read_timeout_ms,
                30_000,
                "body_read_timeout_ms",
            )?,
            audit_log,
            identity_cert,
            identity_key,
            key_options,
            identity_issuer: pick(flags.identity_issuer.clone(), file.identity.issuer),
            reload_interval: ms(
                flags.identity_reload_interval_ms,
                file.identity.reload_interval_ms,
                1_000,
                "identity.reload_interval_ms",
            )?,
            ocsp_url: pick(flags.revocation_ocsp_url.clone(), file.revocation.ocsp_url),
            watch_url: pick(
                flags.revocation_watch_url.clone(),
                file.revocation.watch_url,
            ),
            revocation_timeout: ms(
                flags.revocation_timeout_ms,
                file.revocation.timeout_ms,
                2_000,
                "revocation.timeout_ms",
            )?,
            require_nonce: pick(
                flags.revocation_require_nonce,
                file.revocation.require_nonce,
            )
            .unwrap_or(true),
            signing_lifetime_secs,
            signing_batch: pick(flags.signing_batch, file.signing.batch).unwrap_or(false),
            upstream_ca,
            connect_timeout: ms(
                flags.upstream_connect_timeout_ms,
                file.upstream.connect_timeout_ms,
                5_000,
                "upstream.connect_timeout_ms",
            )?,
            response_timeout: ms(
                flags.upstream_response_timeout_ms,
                file.upstream.response_timeout_ms,
                30_000,
                "upstream.response_timeout_ms",
            )?,
            idle_timeout: ms(
                flags.upstream_idle_timeout_ms,
                file.upstream.idle_timeout_ms,
                90_000,
                "upstream.idle_timeout_ms",
            )?,
            max_idle_per_host: pick(
                flags.upstream_max_idle_per_host,
                file.upstream.max_idle_per_host,
            )
            .unwrap_or(64),
            resolve,
            metrics_listen,
        })
    }
}

/// The remote key's deadline, retries and limits, each bounded so that a
/// typo cannot make a signature wait forever or retry without end.
/// The [identity] keys about how the key is asked to sign.
struct KeyFileOptions {
    kms_endpoint: Option<String>,
    sign_deadline_ms: Option<u64>,
    sign_attempts: Option<u32>,
    sign_max_pending: Option<usize>,
    pkcs11_sessions: Option<usize>,
}

fn key_options(flags: &ProxyFlags, file: KeyFileOptions) -> anyhow::Result<KeyOptions> {
    let defaults = KeyOptions::default();
    let deadline = ms(
        flags.identity_sign_deadline_ms,
        file.sign_deadline_ms,
        defaults.deadline.as_millis() as u64,
        "identity.sign_deadline_ms",
    )?;
    let max_attempts =
        pick(flags.identity_sign_attempts, file.sign_attempts).unwrap_or(defaults.max_attempts);
    if !(1..=10).contains(&max_attempts) {
        bail!("identity.sign_attempts = {max_attempts}: must be between 1 and 10");
    }
    let max_pending = pick(flags.identity_sign_max_pending, file.sign_max_pending)
        .unwrap_or(defaults.max_pending);
    if !(1..=65_536).contains(&max_pending) {
        bail!("identity.sign_max_pending = {max_pending}: must be between 1 and 65536");
    }
    let pkcs11_sessions = pick(flags.identity_pkcs11_sessions, file.pkcs11_sessions)
        .unwrap_or(defaults.pkcs11_sessions);
    if !(1..=256).contains(&pkcs11_sessions) {
        bail!("identity.pkcs11_sessions = {pkcs11_sessions}: must be between 1 and 256");
    }
    Ok(KeyOptions {
        deadline,
        max_attempts,
        max_pending,
        kms_endpoint: pick(flags.kms_endpoint.clone(), file.kms_endpoint)
            .filter(|e| !e.trim().is_empty()),
        pkcs11_sessions,
    })
}

/// A duration in milliseconds from flag, file or default, bounded: a day is
/// far beyond any sane deadline, and keeps deadline arithmetic (now +
/// timeout) far from overflow.
fn ms(flag: Option<u64>, file: Option<u64>, default: u64, name: &str) -> anyhow::Result<Duration> {
    let value = pick(flag, file).unwrap_or(default);
    if value == 0 || value > MAX_TIMEOUT_MS {
        bail!("{name} = {value}: must be between 1 and {MAX_TIMEOUT_MS} ms");
    }
    Ok(Duration::from_millis(value))
}

fn pick<T>(flag: Option<T>, file: Option<T>) -> Option<T> {
    flag.or(file)
}

/// toml's errors carry line, column and the offending key already.
pub fn parse_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> FileConfig {
        toml::from_str(
            r#"
            policy = "/etc/kakunin/policy.json"
            region = "eu-west-1"
            [identity]
            cert = "/etc/kakunin/agent.pem"
            key = "file:/etc/kakunin/agent-key.pem"
            [upstream]
            ca = "/etc/ssl/certs/exchange-ca.pem"
            [upstream.resolve]
            "API.exchange.com." = "10.0.1.20:443"
            "#,
        )
        .unwrap()
    }

    #[test]
    fn design_md_minimal_file_parses_with_defaults() {
        let config = Config::merge(&ProxyFlags::default(), minimal(), None, None).unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.body_limit, DEFAULT_BODY_LIMIT);
        assert_eq!(config.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            config.resolve.get("api.exchange.com").unwrap().to_string(),
            "10.0.1.20:443"
        );
        assert_eq!(config.signing_lifetime_secs, DEFAULT_LIFETIME_SECS);
        assert!(!config.signing_batch, "batch signatures are opt-in");
    }

    #[test]
    fn signing_batch_from_file_and_flag() {
        let parsed: FileConfig = toml::from_str("[signing]\nbatch = true\n").unwrap();
        assert_eq!(parsed.signing.batch, Some(true));
        let mut file = minimal();
        file.signing.batch = Some(true);
        let config = Config::merge(&ProxyFlags::default(), file, None, None).unwrap();
        assert!(config.signing_batch);
        let flags = ProxyFlags {
            signing_batch: Some(false),
            ..ProxyFlags::default()
        };
        let mut file = minimal();
        file.signing.batch = Some(true);
        assert!(
            !Config::merge(&flags, file, None, None)
                .unwrap()
                .signing_batch
        );
        let err = toml::from_str::<FileConfig>("[signing]\nbatch = \"yes\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("batch") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn signing_lifetime_from_file_and_flag_within_bounds() {
        let mut file = minimal();
        file.signing.lifetime_seconds = Some(300);
        let config = Config::merge(&ProxyFlags::default(), file, None, None).unwrap();
        assert_eq!(config.signing_lifetime_secs, 300);
        let parsed: FileConfig = toml::from_str("[signing]\nlifetime_seconds = 3600\n").unwrap();
        assert_eq!(parsed.signing.lifetime_seconds, Some(3600));
        for bad in [0, 3601, u64::MAX] {
            let flags = ProxyFlags {
                signing_lifetime_seconds: Some(bad),
                ..ProxyFlags::default()
            };
            let err = Config::merge(&flags, minimal(), None, None)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("signing.lifetime_seconds") && err.contains("between 1 and 3600"),
                "{err}"
            );
        }
        let err = toml::from_str::<FileConfig>("[signing]\nlifetime = 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lifetime") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn flags_override_file_and_resolve_entries_merge() {
        let flags = ProxyFlags {
            listen: Some("127.0.0.1:9999".into()),
            region: Some("us-east-1".into()),
            resolve: vec![
                "market-data.provider.com=127.0.0.1:8443".into(),
                "api.EXCHANGE.com=127.0.0.1:9443".into(),
                "[::FFFF:7f00:1]=127.0.0.1:1".into(),
            ],
            ..ProxyFlags::default()
        };
        let config = Config::merge(&flags, minimal(), None, None).unwrap();
        assert_eq!(config.listen.port(), 9999);
        assert_eq!(config.region.as_deref(), Some("us-east-1"));
        assert_eq!(config.resolve.len(), 3);
        // The flag wins over the file although the spellings differ.
        assert_eq!(config.resolve["api.exchange.com"].port(), 9443);
        assert!(
            config.resolve.contains_key("::ffff:127.0.0.1"),
            "{:?}",
            config.resolve
        );
    }

    #[test]
    fn unknown_key_is_refused_with_position() {
        let err = toml::from_str::<FileConfig>("listen = \"127.0.0.1:1\"\nlisten_addr = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("listen_addr") && err.contains("line 2"),
            "{err}"
        );
    }

    #[test]
    fn non_loopback_listen_needs_explicit_consent() {
        let flags = ProxyFlags {
            listen: Some("0.0.0.0:15001".into()),
            ..ProxyFlags::default()
        };
        let err = Config::merge(&flags, minimal(), None, None).unwrap_err();
        assert!(err.to_string().contains("allow_remote_clients"), "{err}");
        let flags = ProxyFlags {
            allow_remote_clients: Some(true),
            ..flags
        };
        assert!(Config::merge(&flags, minimal(), None, None).is_ok());
    }

    #[test]
    fn seed_variables_are_honoured() {
        let mut file = minimal();
        file.identity = IdentitySection::default();
        let pem = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";
        let config = Config::merge(
            &ProxyFlags::default(),
            file,
            Some(pem.into()),
            Some("arn:aws:kms:eu-west-1:1:key/k".into()),
        )
        .unwrap();
        assert_eq!(config.identity_cert, CertSource::Inline(pem.into()));
        assert_eq!(config.identity_key, "aws-kms:arn:aws:kms:eu-west-1:1:key/k");
    }

    #[test]
    fn bad_values_are_refused() {
        for flags in [
            ProxyFlags {
                listen: Some("nonsense".into()),
                ..ProxyFlags::default()
            },
            ProxyFlags {
                resolve: vec!["no-equals".into()],
                ..ProxyFlags::default()
            },
            ProxyFlags {
                resolve: vec!["h=not-an-addr".into()],
                ..ProxyFlags::default()
            },
            ProxyFlags {
                header_read_timeout_ms: Some(0),
                ..ProxyFlags::default()
            },
            ProxyFlags {
                header_read_timeout_ms: Some(u64::MAX),
                ..ProxyFlags::default()
            },
            ProxyFlags {
                resolve: vec!["bad host!=127.0.0.1:1".into()],
                ..ProxyFlags::default()
            },
        ] {
            assert!(Config::merge(&flags, minimal(), None, None).is_err());
        }
    }
}
