//! The `kakunin` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::{Config, ProxyFlags};

pub mod ca;
pub mod gateway;
pub use ca::CaCommand;

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

// Parsed once at start-up and matched once: the size of the largest variant
// costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the egress proxy (agents set HTTP_PROXY to it).
    Proxy(ProxyFlags),
    /// Work with scope policy files.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The certificate authority: a root CA, agent certificates, revocation.
    Ca {
        /// How long to wait, in milliseconds, when another process is writing
        /// to the CA database before giving up.
        #[arg(
            long,
            global = true,
            default_value_t = 5000,
            env = "KAKUNIN_CA_LOCK_TIMEOUT_MS"
        )]
        lock_timeout_ms: u64,
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Run the receiver's side as a reverse proxy: mTLS in, the verifier's
    /// checks, plain HTTP to a backend on loopback.
    Gateway(gateway::GatewayFlags),
    /// Run a self-contained demonstration on loopback and exit.
    Demo,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file: print the effective policy, or every error (exit 1).
    Check { file: PathBuf },
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
        Command::Ca {
            lock_timeout_ms,
            command,
        } => {
            ca::run(command, std::time::Duration::from_millis(lock_timeout_ms))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Gateway(flags) => {
            runtime()?.block_on(gateway::run(flags))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => runtime()?.block_on(crate::demo::run()),
    }
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
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
