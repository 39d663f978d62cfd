//! The `kakunin` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kakunin_authority::{
    AgentRequest, Authority, InitOptions, ServerRequest, SubjectKey, Validity,
};

use crate::config::{Config, ProxyFlags};

#[derive(Debug, Parser)]
#[command(
    name = "kakunin",
    version,
    about = "Egress mTLS proxy that binds an AI agent's identity to where it runs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the egress proxy (agents set HTTP_PROXY to it).
    Proxy(ProxyFlags),
    /// Work with scope policy files.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The certificate authority: a root CA and agent certificates.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Run a self-contained demonstration on loopback and exit.
    Demo,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file: print the effective policy, or every error (exit 1).
    Check { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a root CA in DIR (ca.pem, ca-key.pem, ca.json).
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// SPIFFE trust domain of the agents this CA issues for.
        #[arg(long, default_value = "kakunin.local")]
        trust_domain: String,
    },
    /// Issue an agent certificate carrying the policy as its scope.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        agent_id: String,
        #[arg(long)]
        policy: PathBuf,
        /// Generate a P-256 key and write it here (mode 0600).
        #[arg(
            long,
            conflicts_with = "public_key",
            required_unless_present = "public_key"
        )]
        key_out: Option<PathBuf>,
        /// Certify an existing public key (PEM SubjectPublicKeyInfo).
        #[arg(long)]
        public_key: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        /// Validity in days [default: 30].
        #[arg(long, conflicts_with = "hours")]
        days: Option<u32>,
        #[arg(long)]
        hours: Option<u32>,
    },
    /// Issue a TLS server certificate (an upstream for tests or an internal API).
    IssueServer {
        #[arg(long)]
        dir: PathBuf,
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
}

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Proxy(flags) => {
            let config = Config::load(&flags)?;
            runtime()?.block_on(crate::run::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy {
            command: PolicyCommand::Check { file },
        } => Ok(policy_check(&file)),
        Command::Ca { command } => {
            ca(command)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => runtime()?.block_on(crate::demo::run()),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn policy_check(file: &Path) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(err) => {
            eprintln!("{}: cannot read: {err}", file.display());
            return ExitCode::FAILURE;
        }
    };
    match kakunin_policy::Policy::from_json_str(&file.display().to_string(), &text) {
        Ok(policy) => {
            println!("{}", policy.effective_json());
            eprintln!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", file.display(), errors.0.len());
            ExitCode::FAILURE
        }
    }
}

fn ca(command: CaCommand) -> anyhow::Result<()> {
    match command {
        CaCommand::Init { dir, trust_domain } => {
            let ca = Authority::init(
                &dir,
                &InitOptions {
                    trust_domain,
                    ..InitOptions::default()
                },
            )?;
            println!("CA certificate: {}", ca.certificate_path().display());
        }
        CaCommand::Issue {
            dir,
            agent_id,
            policy,
            key_out,
            public_key,
            out,
            days,
            hours,
        } => {
            let ca = Authority::open(&dir)?;
            let policy = crate::run::load_policy(&policy)?;
            let key = match &public_key {
                Some(path) => SubjectKey::PublicKeyPem(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read {}", path.display()))?,
                ),
                None => SubjectKey::Generate,
            };
            let validity = match (days, hours) {
                (_, Some(h)) => Validity::Hours(h),
                (Some(d), None) => Validity::Days(d),
                (None, None) => Validity::Days(30),
            };
            let issued = ca.issue_agent(&AgentRequest {
                agent_id: &agent_id,
                policy: &policy,
                key,
                validity,
            })?;
            if let (Some(path), Some(pem)) = (&key_out, &issued.key_pem) {
                kakunin_authority::write_private_key(path, pem)?;
            }
            std::fs::write(&out, &issued.cert_pem)
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!(
                "issued {} serial {} valid until {} -> {}",
                agent_id,
                issued.serial_hex,
                issued.not_after,
                out.display()
            );
        }
        CaCommand::IssueServer {
            dir,
            names,
            key_out,
            out,
            days,
        } => {
            let ca = Authority::open(&dir)?;
            let issued = ca.issue_server(&ServerRequest {
                names,
                validity: Validity::Days(days),
            })?;
            if let Some(pem) = &issued.key_pem {
                kakunin_authority::write_private_key(&key_out, pem)?;
            }
            std::fs::write(&out, &issued.cert_pem)
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!(
                "issued server certificate serial {} -> {}",
                issued.serial_hex,
                out.display()
            );
        }
    }
    Ok(())
}
