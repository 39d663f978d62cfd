//! `kakunin proxy`: build everything from the configuration, then serve.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::audit::AuditLog;
use crate::config::Config;
use crate::identity::load_identity;
use crate::limits::Limits;
use crate::pipeline::{Proxy, Settings};
use crate::server::ListenerSettings;
use crate::upstream::{client_config, Connector, Pool, Upstream};

pub fn load_policy(path: &std::path::Path) -> anyhow::Result<kakunin_policy::Policy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read policy file {}", path.display()))?;
    kakunin_policy::Policy::from_json_str(&path.display().to_string(), &text)
        .map_err(|errors| anyhow::anyhow!("policy refused:\n{errors}"))
}

/// Everything the proxy needs, checked before the listener opens.
pub fn build(config: &Config) -> anyhow::Result<(Arc<Proxy>, ListenerSettings)> {
    let policy = load_policy(&config.policy)?;
    let (identity, cert) = load_identity(&config.identity_cert, &config.identity_key)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    crate::identity::check_for_policy(&cert, &policy, now)?;
    let tls = client_config(&config.upstream_ca, identity.clone())?;
    let connector = Connector::new(tls, config.connect_timeout);
    let pool = Pool::new(config.max_idle_per_host, config.idle_timeout);
    let audit = AuditLog::open(config.audit_log.as_deref()).with_context(|| {
        format!(
            "cannot open audit log {}",
            config
                .audit_log
                .as_deref()
                .map_or("-".into(), |p| p.display().to_string())
        )
    })?;
    for (host, addr) in &config.resolve {
        tracing::info!(%host, %addr, "upstream address pinned by configuration");
    }
    let proxy = Proxy {
        limits: Limits::new(&policy),
        policy,
        upstream: Upstream::new(pool, connector, config.response_timeout),
        audit,
        settings: Settings {
            region: config.region.clone(),
            body_limit: config.body_limit,
            body_read_timeout: config.body_read_timeout,
            pinned: config.resolve.clone(),
            dns_timeout: Duration::from_secs(5),
        },
        cert,
    };
    let listener = ListenerSettings {
        max_header_bytes: config.max_header_bytes,
        header_read_timeout: config.header_read_timeout,
    };
    Ok((Arc::new(proxy), listener))
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    let (proxy, listener_settings) = build(&config)?;
    let listener = crate::server::bind(config.listen).await?;
    let local = listener.local_addr()?;
    tracing::info!(
        agent_id = proxy.policy.agent_id(),
        serial = %proxy.cert.serial_hex,
        mode = proxy.policy.mode().as_str(),
        "identity loaded"
    );
    // Tests and supervisors wait for this exact line.
    eprintln!("kakunin: listening on {local}");
    crate::server::serve(listener, proxy, listener_settings, shutdown_signal()).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
