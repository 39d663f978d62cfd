//! Certificate rotation without a restart: the certificate file is re-read
//! when its content changes (checked every `reload_interval`) or on SIGHUP.
//!
//! A new certificate must pass the start-up checks (same agent, client
//! auth, within validity) and match the key backend's public key; otherwise
//! it is refused with the reason logged and the current one stays. Once
//! accepted: new handshakes present it, pooled connections made with the
//! old one are not reused (in-flight requests finish on them), and TLS
//! session tickets are forgotten (a resumed session would carry the old
//! certificate).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls_pki_types::CertificateDer;
use serde_json::{json, Map};

use crate::clock::unix_now;
use crate::identity::{check_for_policy, summarize};
use crate::pipeline::Proxy;
use crate::revocation::Subject;

pub struct Rotation {
    pub path: PathBuf,
    /// The CA certificate from the configuration; without it, the second
    /// certificate in the file.
    pub issuer: Option<CertificateDer<'static>>,
    pub proxy: Arc<Proxy>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    Unchanged,
    Rotated {
        old_serial: String,
        new_serial: String,
    },
}

impl Rotation {
    /// Reads the certificate file and switches to it if it is new and fit.
    pub fn reload(&self) -> anyhow::Result<Reloaded> {
        let chain = kakunin_signer::load_certificate_chain(&self.path)?;
        let current = self.proxy.gate.subject();
        if chain.first() == Some(&current.leaf) {
            return Ok(Reloaded::Unchanged);
        }
        let leaf = chain
            .first()
            .cloned()
            .context("the certificate file holds no certificate")?;
        let summary = summarize(&leaf).context("the new agent certificate")?;
        check_for_policy(&summary, &self.proxy.policy, unix_now())?;
        let subject = Subject::new(
            leaf,
            // The configured issuer wins: whoever writes the certificate
            // file must not also choose the trust anchor for its status.
            self.issuer.clone().or_else(|| chain.get(1).cloned()),
            summary,
        )?;
        let new_serial = subject.summary.serial_hex.clone();
        // Refused here, with the current certificate kept: another key, the
        // wrong issuer, no responder, or a certificate known to be revoked.
        self.proxy
            .gate
            .rotate_to(subject, chain)
            .map_err(anyhow::Error::msg)?;
        self.proxy.upstream.pool().retire_all();
        self.proxy.upstream.connector().forget_sessions();
        let old_serial = current.summary.serial_hex.clone();
        let mut fields = Map::new();
        fields.insert("agent_id".into(), json!(self.proxy.policy.agent_id()));
        fields.insert("old_cert_serial".into(), json!(old_serial));
        fields.insert("agent_cert_serial".into(), json!(new_serial));
        drop(self.proxy.audit.record("identity.rotated", &fields));
        tracing::info!(%old_serial, %new_serial, "agent certificate rotated");
        Ok(Reloaded::Rotated {
            old_serial,
            new_serial,
        })
    }

    /// Watches the file and SIGHUP until the process ends.
    pub fn spawn(self, interval: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut hangups = hangup_signals();
            let mut last_seen = tokio::fs::read(&self.path).await.ok();
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let forced = tokio::select! {
                    _ = ticker.tick() => false,
                    Some(()) = recv(&mut hangups) => true,
                };
                // Compare contents, not times: a Kubernetes secret update
                // swaps a symlink, and some copies keep the old mtime.
                let content = tokio::fs::read(&self.path).await.ok();
                if !forced && content == last_seen {
                    continue;
                }
                last_seen = content;
                match self.reload() {
                    Ok(Reloaded::Unchanged) => {
                        tracing::debug!("certificate file re-read; same certificate")
                    }
                    Ok(Reloaded::Rotated { .. }) => {}
                    Err(err) => {
                        tracing::error!(
                            path = %self.path.display(),
                            "new agent certificate refused; the current one stays in use: {err:#}"
                        );
                        let mut fields = Map::new();
                        fields.insert("agent_id".into(), json!(self.proxy.policy.agent_id()));
                        fields.insert(
                            "agent_cert_serial".into(),
                            json!(self.proxy.gate.subject().summary.serial_hex),
                        );
                        fields.insert("reason".into(), json!(format!("{err:#}")));
                        drop(
                            self.proxy
                                .audit
                                .record("identity.rotation_refused", &fields),
                        );
                    }
                }
            }
        })
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

#[cfg(unix)]
fn hangup_signals() -> Hangups {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangup_signals() -> Hangups {
    None
}

#[cfg(unix)]
async fn recv(signals: &mut Hangups) -> Option<()> {
    match signals {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn recv(_: &mut Hangups) -> Option<()> {
    std::future::pending().await
}
