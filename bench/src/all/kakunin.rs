//! Kakunin as the built `kakunin` binary in its own process (so /proc
//! measures it alone), configured by a kakunin.toml written here, audit
//! log to a file.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context as _;

use super::child::{self, Proc};
use super::paths::{Files, HOST};

/// Which key the proxy signs with.
pub enum Key<'a> {
    /// `file:` the agent's PEM key, the one nginx and HAProxy present.
    File,
    /// `aws-kms:ARN` in the KMS stand-in at `endpoint`, with its own
    /// certificate (the CA certified the public key KMS reports).
    Kms {
        arn: &'a str,
        endpoint: &'a str,
        cert: &'a Path,
    },
}

pub struct Kakunin {
    pub proc: Proc,
    pub addr: SocketAddr,
}

fn config(
    files: &Files,
    dir: &Path,
    key: &Key<'_>,
    batch: bool,
    upstream: SocketAddr,
    pool: usize,
) -> String {
    let (cert, key_line) = match key {
        Key::File => (
            files.agent_cert.clone(),
            format!("key = \"file:{}\"", files.agent_key.display()),
        ),
        Key::Kms {
            arn,
            endpoint,
            cert,
        } => (
            cert.to_path_buf(),
            format!("key = \"aws-kms:{arn}\"\nkms_endpoint = \"{endpoint}\""),
        ),
    };
    format!(
        r#"listen = "127.0.0.1:0"
policy = "{policy}"
region = "{region}"
audit_log = "{audit}"
[identity]
cert = "{cert}"
{key_line}
[revocation]
watch_url = "off"
[signing]
batch = {batch}
[upstream]
ca = "{ca}"
max_idle_per_host = {pool}
[upstream.resolve]
"{HOST}" = "{upstream}"
"#,
        policy = files.policy.display(),
        region = super::paths::REGION,
        audit = dir.join("audit.jsonl").display(),
        cert = cert.display(),
        ca = files.ca.display(),
    )
}

impl Kakunin {
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        binary: &Path,
        files: &Files,
        dir: &Path,
        key: &Key<'_>,
        batch: bool,
        upstream: SocketAddr,
        pool: usize,
        core: Option<usize>,
    ) -> anyhow::Result<Kakunin> {
        std::fs::create_dir_all(dir)?;
        let conf = dir.join("kakunin.toml");
        std::fs::write(&conf, config(files, dir, key, batch, upstream, pool))?;
        let mut command = child::command(binary, core);
        // Warnings and errors only: the operational log is not what is
        // measured (the audit log, one line per request, is).
        let mut spawned = command
            .arg("proxy")
            .arg("--config")
            .arg(&conf)
            .env("KAKUNIN_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stderr = spawned.stderr.take().context("kakunin's stderr")?;
        let proc = Proc::from_child("kakunin", spawned);
        let addr = listening(stderr, dir.join("stderr.log"))?;
        Ok(Kakunin { proc, addr })
    }
}

/// Reads kakunin's stderr until its `listening on` line, on a thread that
/// then keeps copying it to `log` (so the pipe never fills).
fn listening(stderr: std::process::ChildStderr, log: PathBuf) -> anyhow::Result<SocketAddr> {
    let (tx, rx) = mpsc::channel::<Result<SocketAddr, String>>();
    std::thread::spawn(move || {
        let mut seen = String::new();
        let mut file = std::fs::File::create(&log).ok();
        let mut told = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(file) = file.as_mut() {
                use std::io::Write as _;
                let _ = writeln!(file, "{line}");
            }
            if told {
                continue;
            }
            match line.strip_prefix("kakunin: listening on ") {
                Some(addr) => {
                    told = true;
                    let _ = tx.send(addr.parse().map_err(|e| format!("{addr}: {e}")));
                }
                None => {
                    seen.push_str(&line);
                    seen.push('\n');
                }
            }
        }
        if !told {
            let _ = tx.send(Err(seen));
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(addr)) => Ok(addr),
        Ok(Err(text)) => anyhow::bail!("kakunin did not start:\n{text}"),
        Err(_) => anyhow::bail!("kakunin did not say where it listens within 30 s"),
    }
}
