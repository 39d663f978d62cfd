//! `kakunin ca …`: the certificate authority's commands. Each opens the CA
//! directory, does one thing in the CA database, and writes its files only
//! once the database has recorded it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use kakunin_authority::{
    rfc3339, AgentRequest, Authority, CertRecord, InitOptions, Lifecycle, RevocationReason,
    RotateRequest, ServerRequest, StoreOptions, SubjectKey, Validity, DEFAULT_PUBLIC_URL,
};
use kakunin_signer::KeyOptions;

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a root CA in DIR (ca.pem, ca.json, ca.db, and ca-key.pem
    /// unless --key names where the key lives).
    Init {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        keys: KeyFlags,
        /// Keep the CA key where it is and sign through it: aws-kms:ARN,
        /// pkcs11:URI (RFC 7512) or file:PATH. ca.json records it; no
        /// ca-key.pem is written. Without it a P-256 key is generated into
        /// DIR/ca-key.pem.
        #[arg(long, value_name = "REF")]
        key: Option<String>,
        /// SPIFFE trust domain of the agents this CA issues for.
        #[arg(long, default_value = "kakunin.local")]
        trust_domain: String,
        /// Base URL where `kakunin ca serve` is reached; certificates point
        /// relying parties at URL/ocsp and URL/crl.
        #[arg(long, default_value = DEFAULT_PUBLIC_URL)]
        public_url: String,
    },
    /// Issue an agent certificate carrying the policy as its scope.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        keys: KeyFlags,
        #[arg(long)]
        agent_id: String,
        #[arg(long)]
        policy: PathBuf,
        #[command(flatten)]
        key: NewKey,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        validity: ValidityArgs,
    },
    /// Issue a TLS server certificate (an upstream for tests or an internal API).
    IssueServer {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        keys: KeyFlags,
        /// DNS name or IP address; repeatable.
        #[arg(long = "name", required = true)]
        names: Vec<String>,
        #[arg(long)]
        key_out: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// List the certificates this CA issued and what became of them.
    List {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        keys: KeyFlags,
        /// Only this agent's certificates.
        #[arg(long)]
        agent_id: Option<String>,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a certificate (final: there is no un-revoke).
    Revoke {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        keys: KeyFlags,
        /// Serial number in hex, as `ca list` or `openssl x509 -serial` shows it.
        #[arg(long)]
        serial: String,
        /// RFC 5280 reason: unspecified, keyCompromise, cACompromise,
        /// affiliationChanged, superseded, cessationOfOperation,
        /// privilegeWithdrawn, aACompromise.
        #[arg(long, value_parser = parse_reason)]
        reason: RevocationReason,
    },
    /// Write a signed CRL (PEM) listing every revoked certificate.
    Crl {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        keys: KeyFlags,
        #[arg(long)]
        out: PathBuf,
        /// Hours until nextUpdate.
        #[arg(long, default_value_t = 24)]
        hours: u32,
    },
    /// Issue a new certificate for an agent's current one (same scope, same
    /// key unless another is given); the old one is revoked as superseded
    /// when the grace period ends.
    Rotate {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        keys: KeyFlags,
        #[arg(long)]
        agent_id: String,
        /// Seconds the old certificate stays good; 0 revokes it now.
        #[arg(long)]
        grace: u64,
        #[command(flatten)]
        key: RotateKey,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        validity: ValidityArgs,
    },
    /// Serve OCSP (GET and POST /ocsp), the CRL (/crl), /healthz and the
    /// revocation watch stream (/watch, server-sent events) over HTTP.
    Serve {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        keys: KeyFlags,
        /// Address to listen on; the CA's public_url should lead here.
        #[arg(long, default_value = "127.0.0.1:8180")]
        listen: std::net::SocketAddr,
        /// How often the database is read for revocations made by other
        /// processes, in milliseconds.
        #[arg(long, default_value_t = 20)]
        poll_ms: u64,
        /// Seconds an OCSP answer stays valid (its nextUpdate).
        #[arg(long, default_value_t = 3600)]
        ocsp_validity_secs: u64,
        /// Hours a published CRL stays valid (its nextUpdate).
        #[arg(long, default_value_t = 24)]
        crl_hours: u32,
        /// Connections served at once; more are closed at once.
        #[arg(long, default_value_t = 1024)]
        max_connections: usize,
        /// OCSP answers and CRLs being signed at once; beyond this OCSP
        /// answers tryLater and /crl 503.
        #[arg(long, default_value_t = 64)]
        max_ocsp_in_flight: usize,
        /// Watch subscriptions per client address (IPv4, or IPv6 /64); raise
        /// it when many proxies reach the CA through one NAT address.
        #[arg(long, default_value_t = 16)]
        max_watchers_per_ip: usize,
    },
}

/// Where the new certificate's key comes from (exactly one).
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct NewKey {
    /// Generate a P-256 key and write it here (mode 0600).
    #[arg(long)]
    key_out: Option<PathBuf>,
    /// Certify an existing public key (PEM SubjectPublicKeyInfo).
    #[arg(long)]
    public_key: Option<PathBuf>,
    /// Certify the key of a PEM PKCS#10 request once its signature checks
    /// out; nothing else in the request is used.
    #[arg(long)]
    csr: Option<PathBuf>,
    /// Certify the public key of this key reference (aws-kms:ARN,
    /// pkcs11:URI, file:PATH); only its public half is read.
    #[arg(long, value_name = "REF")]
    public_key_from: Option<String>,
}

/// A rotation keeps the key unless one of these is given.
#[derive(Debug, Args)]
#[group(required = false, multiple = false)]
pub struct RotateKey {
    /// Generate a new P-256 key and write it here (mode 0600).
    #[arg(long)]
    key_out: Option<PathBuf>,
    /// Certify this public key instead (PEM SubjectPublicKeyInfo).
    #[arg(long)]
    public_key: Option<PathBuf>,
    /// Certify the key of this PEM PKCS#10 request instead.
    #[arg(long)]
    csr: Option<PathBuf>,
    /// Certify the public key of this key reference instead.
    #[arg(long, value_name = "REF")]
    public_key_from: Option<String>,
}

/// How a remote key (the CA's, or one named by --public-key-from) is
/// reached.
#[derive(Debug, Args)]
pub struct KeyFlags {
    /// AWS KMS endpoint for aws-kms: keys (a VPC endpoint or a test
    /// server); without it the AWS SDK's own settings decide.
    #[arg(long, value_name = "URL", env = "KAKUNIN_KMS_ENDPOINT")]
    kms_endpoint: Option<String>,
}

impl KeyFlags {
    fn options(&self) -> KeyOptions {
        KeyOptions {
            kms_endpoint: self.kms_endpoint.clone(),
            ..KeyOptions::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct ValidityArgs {
    /// Validity in days [default: 30].
    #[arg(long, conflicts_with = "hours")]
    days: Option<u32>,
    /// Validity in hours.
    #[arg(long)]
    hours: Option<u32>,
}

impl ValidityArgs {
    fn validity(&self) -> Validity {
        match (self.days, self.hours) {
            (_, Some(h)) => Validity::Hours(h),
            (Some(d), None) => Validity::Days(d),
            (None, None) => Validity::Days(30),
        }
    }
}

fn parse_reason(text: &str) -> Result<RevocationReason, String> {
    RevocationReason::from_name(text).map_err(|e| e.to_string())
}

pub fn run(command: CaCommand, lock_timeout: Duration) -> anyhow::Result<()> {
    let options = StoreOptions { lock_timeout };
    let open =
        |dir: &Path, keys: &KeyFlags| Authority::open_with_key(dir, &options, &keys.options());
    match command {
        CaCommand::Serve {
            dir,
            keys,
            listen,
            poll_ms,
            ocsp_validity_secs,
            crl_hours,
            max_connections,
            max_ocsp_in_flight,
            max_watchers_per_ip,
        } => {
            for (name, value) in [
                ("--max-connections", max_connections),
                ("--max-ocsp-in-flight", max_ocsp_in_flight),
                ("--max-watchers-per-ip", max_watchers_per_ip),
            ] {
                if !(1..=1_000_000).contains(&value) {
                    anyhow::bail!("{name} {value}: must be between 1 and 1000000");
                }
            }
            if !(1..=60_000).contains(&poll_ms) {
                anyhow::bail!("--poll-ms {poll_ms}: must be between 1 and 60000");
            }
            if !(60..=7 * 86_400).contains(&ocsp_validity_secs) {
                anyhow::bail!(
                    "--ocsp-validity-secs {ocsp_validity_secs}: must be between 60 and 604800"
                );
            }
            if !(1..=24 * 366).contains(&crl_hours) {
                anyhow::bail!("--crl-hours {crl_hours}: must be between 1 and 8784");
            }
            let authority = open(&dir, &keys)?;
            let options = crate::ca_serve::ServeOptions {
                poll_interval: Duration::from_millis(poll_ms),
                ocsp_validity: Duration::from_secs(ocsp_validity_secs),
                crl_validity: Duration::from_secs(u64::from(crl_hours) * 3600),
                max_connections,
                max_ocsp_in_flight,
                max_watchers_per_ip,
                ..crate::ca_serve::ServeOptions::default()
            };
            super::runtime()?.block_on(crate::ca_serve::serve_until_signalled(
                authority, listen, options,
            ))?;
        }
        CaCommand::Init {
            dir,
            keys,
            key,
            trust_domain,
            public_url,
        } => {
            let ca = Authority::init(
                &dir,
                &InitOptions {
                    trust_domain,
                    public_url,
                    key,
                    key_options: keys.options(),
                    ..InitOptions::default()
                },
            )?;
            println!("CA certificate: {}", ca.certificate_path().display());
            match &ca.settings().key {
                Some(reference) => {
                    println!("CA key: {reference} (stays there; ca.json records it)");
                }
                None => println!("CA key: {}", dir.join("ca-key.pem").display()),
            }
            println!(
                "revocation: OCSP {} and CRL {} (serve them with `kakunin ca serve`)",
                ca.ocsp_url(),
                ca.crl_url()
            );
        }
        CaCommand::Issue {
            dir,
            keys,
            agent_id,
            policy,
            key,
            out,
            validity,
        } => {
            let ca = open(&dir, &keys)?;
            let policy = crate::run::load_policy(&policy)?;
            let subject_key = subject_key(&key.choice(), &keys)?;
            check_target(&out)?;
            if let Some(path) = &key.key_out {
                check_target(path)?;
            }
            let issued = ca.issue_agent(&AgentRequest {
                agent_id: &agent_id,
                policy: &policy,
                key: subject_key,
                validity: validity.validity(),
            })?;
            write_issued(&issued, key.key_out.as_deref(), &out)?;
            println!(
                "issued {} serial {} valid until {} -> {}",
                agent_id,
                issued.serial_hex,
                rfc3339(issued.not_after.unix_timestamp()),
                out.display()
            );
        }
        CaCommand::IssueServer {
            dir,
            keys,
            names,
            key_out,
            out,
            days,
        } => {
            let ca = open(&dir, &keys)?;
            check_target(&out)?;
            check_target(&key_out)?;
            let issued = ca.issue_server(&ServerRequest {
                names,
                validity: Validity::Days(days),
            })?;
            write_issued(&issued, Some(&key_out), &out)?;
            println!(
                "issued server certificate serial {} -> {}",
                issued.serial_hex,
                out.display()
            );
        }
        CaCommand::List {
            dir,
            keys,
            agent_id,
            json,
        } => {
            let ca = open(&dir, &keys)?;
            let records = ca.store().list(agent_id.as_deref())?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            if json {
                let rows: Vec<_> = records.iter().map(|r| list_json(r, now)).collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                print_table(&records, now);
            }
        }
        CaCommand::Revoke {
            dir,
            keys,
            serial,
            reason,
        } => {
            let ca = open(&dir, &keys)?;
            let record = ca.revoke(&serial, reason)?;
            println!(
                "revoked serial {} ({} {}) at {}, reason {}",
                record.serial,
                record.kind.as_str(),
                record.subject,
                record.revoked_at.map(rfc3339).unwrap_or_default(),
                reason
            );
            println!(
                "OCSP answers from `kakunin ca serve` say so now; publish a new CRL with `kakunin ca crl`"
            );
        }
        CaCommand::Crl {
            dir,
            keys,
            out,
            hours,
        } => {
            let ca = open(&dir, &keys)?;
            check_target(&out)?;
            let crl = ca.crl(Duration::from_secs(u64::from(hours) * 3600))?;
            std::fs::write(&out, &crl.pem)
                .with_context(|| format!("cannot write the CRL to {}", out.display()))?;
            println!(
                "CRL number {}: {} revoked certificate(s), next update {} -> {}",
                crl.number,
                crl.revoked.len(),
                rfc3339(crl.next_update),
                out.display()
            );
        }
        CaCommand::Rotate {
            dir,
            keys,
            agent_id,
            grace,
            key,
            out,
            validity,
        } => {
            let ca = open(&dir, &keys)?;
            let new_key = if key.given() {
                Some(subject_key(&key.choice(), &keys)?)
            } else {
                None
            };
            check_target(&out)?;
            if let Some(path) = &key.key_out {
                check_target(path)?;
            }
            let rotated = ca.rotate(&RotateRequest {
                agent_id: &agent_id,
                key: new_key,
                validity: validity.validity(),
                grace: Duration::from_secs(grace),
            })?;
            write_issued(&rotated.issued, key.key_out.as_deref(), &out)?;
            let kept = if key.given() { "new key" } else { "same key" };
            println!(
                "rotated {agent_id}: new serial {} ({kept}) valid until {} -> {}",
                rotated.issued.serial_hex,
                rfc3339(rotated.issued.not_after.unix_timestamp()),
                out.display()
            );
            let when = if grace == 0 {
                "now".to_string()
            } else {
                format!("at {} (in {grace} s)", rfc3339(rotated.old_revoked_at))
            };
            println!(
                "old serial {} is revoked as superseded {when}",
                rotated.old.serial
            );
        }
    }
    Ok(())
}

/// Where an existing public key comes from; none of them: generate one.
struct KeyChoice<'a> {
    public_key: Option<&'a Path>,
    csr: Option<&'a Path>,
    public_key_from: Option<&'a str>,
}

impl NewKey {
    fn choice(&self) -> KeyChoice<'_> {
        KeyChoice {
            public_key: self.public_key.as_deref(),
            csr: self.csr.as_deref(),
            public_key_from: self.public_key_from.as_deref(),
        }
    }
}

impl RotateKey {
    fn choice(&self) -> KeyChoice<'_> {
        KeyChoice {
            public_key: self.public_key.as_deref(),
            csr: self.csr.as_deref(),
            public_key_from: self.public_key_from.as_deref(),
        }
    }

    /// Whether another key than the current certificate's was asked for.
    fn given(&self) -> bool {
        self.key_out.is_some()
            || self.public_key.is_some()
            || self.csr.is_some()
            || self.public_key_from.is_some()
    }
}

/// The key a new certificate certifies, checked here so that an error names
/// the file or reference; `Generate` when none is given (`--key-out`).
fn subject_key(choice: &KeyChoice<'_>, keys: &KeyFlags) -> anyhow::Result<SubjectKey> {
    let read = |path: &Path, what: &str| {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the {what} {}", path.display()))
    };
    Ok(
        match (choice.public_key, choice.csr, choice.public_key_from) {
            (Some(path), _, _) => SubjectKey::SpkiDer(
                kakunin_authority::public_key_from_pem(&read(path, "public key")?)
                    .with_context(|| format!("{}", path.display()))?,
            ),
            (None, Some(path), _) => SubjectKey::SpkiDer(
                kakunin_authority::public_key_from_csr(&read(path, "certificate signing request")?)
                    .with_context(|| format!("{}", path.display()))?,
            ),
            (None, None, Some(reference)) => SubjectKey::SpkiDer(
                kakunin_authority::public_key_from_reference(reference, &keys.options())
                    .context("--public-key-from")?,
            ),
            (None, None, None) => SubjectKey::Generate,
        },
    )
}

/// Refuses an output path whose directory does not exist before anything
/// is issued, so that a typo does not leave a recorded certificate that no
/// file holds.
fn check_target(path: &Path) -> anyhow::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        anyhow::bail!(
            "{}: the directory {} does not exist; create it or choose another path",
            path.display(),
            parent.display()
        );
    }
    if path.is_dir() {
        anyhow::bail!("{} is a directory; give a file name", path.display());
    }
    Ok(())
}

fn write_issued(
    issued: &kakunin_authority::Issued,
    key_out: Option<&Path>,
    out: &Path,
) -> anyhow::Result<()> {
    let lost = || {
        format!(
            "serial {} is issued and recorded but was not saved; revoke it with \
             `kakunin ca revoke --serial {} --reason cessationOfOperation` and issue again",
            issued.serial_hex, issued.serial_hex
        )
    };
    if let (Some(path), Some(pem)) = (key_out, &issued.key_pem) {
        kakunin_authority::write_private_key(path, pem).with_context(lost)?;
    }
    std::fs::write(out, &issued.cert_pem)
        .with_context(|| format!("cannot write {}", out.display()))
        .with_context(lost)
}

fn status_text(record: &CertRecord, now: i64) -> String {
    match record.lifecycle_at(now) {
        Lifecycle::Good => "good".into(),
        Lifecycle::Expired => "expired".into(),
        Lifecycle::Revoked { at, reason } => format!("revoked ({reason}, {})", rfc3339(at)),
        Lifecycle::RevokeScheduled { at } => format!("scheduled-revoke-at {}", rfc3339(at)),
    }
}

fn print_table(records: &[CertRecord], now: i64) {
    if records.is_empty() {
        eprintln!("no certificates");
        return;
    }
    let width = records
        .iter()
        .map(|r| r.subject.len())
        .max()
        .unwrap_or(0)
        .max(5);
    println!(
        "{:<34} {:<6} {:<width$} {:<20} STATUS",
        "SERIAL", "KIND", "AGENT", "NOT AFTER"
    );
    for record in records {
        println!(
            "{:<34} {:<6} {:<width$} {:<20} {}",
            record.serial,
            record.kind.as_str(),
            record.subject,
            rfc3339(record.not_after),
            status_text(record, now)
        );
    }
}

fn list_json(record: &CertRecord, now: i64) -> serde_json::Value {
    let (state, at, reason) = match record.lifecycle_at(now) {
        Lifecycle::Good => ("good", None, None),
        Lifecycle::Expired => ("expired", None, None),
        Lifecycle::Revoked { at, reason } => ("revoked", Some(at), Some(reason.name())),
        Lifecycle::RevokeScheduled { at } => ("scheduled", Some(at), Some("superseded")),
    };
    serde_json::json!({
        "serial": record.serial,
        "kind": record.kind.as_str(),
        "agent_id": record.agent_id,
        "subject": record.subject,
        "not_before": rfc3339(record.not_before),
        "not_after": rfc3339(record.not_after),
        "issued_at": rfc3339(record.issued_at),
        "status": state,
        "status_at": at.map(rfc3339),
        "reason": reason,
        "superseded_by": record.superseded_by,
    })
}
