//! `kakunin-kms-standin`: the KMS stand-in as a process, for tests and
//! benchmarks that start it from outside. Prints one line,
//! `listening on ADDR[ key ARN]...`, then serves until SIGINT or SIGTERM.
//! The keys are those of `--create-key`, then those of `--import-key`, each
//! in the order given.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use kakunin_kms_standin::{KeySpec, Settings, Standin};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::PrivatePkcs8KeyDer;

/// A stand-in for AWS KMS's signing calls (keys in memory; not a KMS).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on; port 0 picks a free one (printed at start).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Region in the ARNs.
    #[arg(long, default_value = "eu-west-1")]
    region: String,
    /// Added to every Sign call (an async sleep; other calls go on).
    #[arg(long, default_value_t = 0)]
    sign_delay_ms: u64,
    /// Sign calls per second before ThrottlingException (0 throttles all).
    #[arg(long)]
    quota: Option<u32>,
    /// Make a SIGN_VERIFY key at start (ECC_NIST_P256 or ECC_NIST_P384);
    /// repeat for more. Their ARNs are printed in order.
    #[arg(long)]
    create_key: Vec<String>,
    /// Import a SIGN_VERIFY key at start from a PKCS#8 PEM file ("PRIVATE
    /// KEY": RSA 2048/3072/4096, ECDSA P-256/P-384); the only way to an RSA
    /// key. Repeat for more; their ARNs follow those of --create-key.
    #[arg(long, value_name = "FILE.pem")]
    import_key: Vec<PathBuf>,
    /// Point an alias (alias/NAME) at the first key (--create-key, else
    /// --import-key).
    #[arg(long)]
    alias: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.alias.is_some() && args.create_key.is_empty() && args.import_key.is_empty() {
        anyhow::bail!("--alias needs a key: add --create-key or --import-key");
    }
    let standin = Standin::start(Settings {
        listen: args.listen,
        region: args.region,
        sign_delay: Duration::from_millis(args.sign_delay_ms),
        sign_quota_per_sec: args.quota,
    })
    .await?;
    let mut line = format!("listening on {}", standin.local_addr());
    let mut first = None;
    for spec in &args.create_key {
        let spec: KeySpec = spec.parse()?;
        let key = standin.create_key(spec)?;
        line.push_str(&format!(" key {}", key.arn));
        first.get_or_insert(key);
    }
    for path in &args.import_key {
        let pkcs8 = PrivatePkcs8KeyDer::from_pem_file(path).with_context(|| {
            format!(
                "--import-key {}: not a PKCS#8 PEM file (-----BEGIN PRIVATE KEY-----)",
                path.display()
            )
        })?;
        let key = standin
            .import_key(pkcs8.secret_pkcs8_der())
            .with_context(|| format!("--import-key {}", path.display()))?;
        line.push_str(&format!(" key {}", key.arn));
        first.get_or_insert(key);
    }
    if let (Some(alias), Some(key)) = (&args.alias, &first) {
        standin
            .create_alias(alias, &key.key_id)
            .map_err(|e| anyhow::anyhow!("--alias {alias}: {}", e.message))?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").context("writing the listening line")?;
    out.flush().context("writing the listening line")?;
    drop(out);
    wait_for_signal().await?;
    standin.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}
