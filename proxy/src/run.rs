//! `kakunin proxy`: build everything from the configuration, then serve.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::audit::AuditLog;
use crate::batch_signer::BatchSigner;
use crate::clock::unix_now;
use crate::config::{CertSource, Config};
use crate::identity::load_identity;
use crate::keyguard;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::pipeline::{Proxy, Settings};
use crate::revocation::{spawn_watch, GateSettings, HttpUrl, RevocationGate, Subject};
use crate::rotation::Rotation;
use crate::server::ListenerSettings;
use crate::upstream::{client_config, Connector, Pool, Upstream};

pub fn load_policy(path: &std::path::Path) -> anyhow::Result<kakunin_policy::Policy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read policy file {}", path.display()))?;
    kakunin_policy::Policy::from_json_str(&path.display().to_string(), &text)
        .map_err(|errors| anyhow::anyhow!("policy refused:\n{errors}"))
}

/// Everything the proxy needs, checked before the listener opens. The
/// background tasks (certificate reload, revocation watch) start with
/// `start`, inside the runtime.
pub struct Built {
    pub proxy: Arc<Proxy>,
    pub metrics: Arc<Metrics>,
    pub listener: ListenerSettings,
    rotation: Option<Rotation>,
    reload_interval: Duration,
    watch: Option<HttpUrl>,
}

/// The background tasks; they stop when this is dropped.
pub struct Background(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Built {
    pub fn start(self) -> (Arc<Proxy>, ListenerSettings, Background) {
        let mut tasks = Vec::new();
        if let Some(rotation) = self.rotation {
            tasks.push(rotation.spawn(self.reload_interval));
        }
        if let Some(url) = self.watch {
            tasks.push(spawn_watch(self.proxy.gate.clone(), url));
        }
        (self.proxy, self.listener, Background(tasks))
    }
}

pub fn build(config: &Config) -> anyhow::Result<Built> {
    let policy = load_policy(&config.policy)?;
    let metrics = Arc::new(Metrics::new());
    // Opening a remote key asks the KMS or token for its public key now, so
    // a wrong, disabled or unreachable key stops the start with its reason.
    let backend = kakunin_signer::open_key_with(&config.identity_key, &config.key_options)?;
    tracing::info!(key = %backend.describe(), algorithm = %backend.algorithm(), "agent key opened");
    let backend = keyguard::guard(backend, &policy, config.region.clone(), metrics.key.clone());
    let loaded = load_identity(&config.identity_cert, backend)?;
    crate::identity::check_for_policy(&loaded.summary, &policy, unix_now())?;
    let issuer = match &config.identity_issuer {
        Some(path) => Some(
            kakunin_signer::load_certificate_chain(path)?
                .into_iter()
                .next()
                .with_context(|| format!("{}: no certificate", path.display()))?,
        ),
        None => None,
    };
    let tls = client_config(&config.upstream_ca, loaded.identity.clone())?;
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
    let audit = Arc::new(audit);
    for (host, addr) in &config.resolve {
        tracing::info!(%host, %addr, "upstream address pinned by configuration");
    }
    let upstream = Upstream::new(pool, connector, config.response_timeout);
    let check = policy.revocation();
    let gate_settings = GateSettings {
        enabled: check.enabled,
        ttl: Duration::from_secs(u64::from(check.cache_ttl_seconds)),
        fail_open: check.fail_open,
        ocsp_url: config
            .ocsp_url
            .as_deref()
            .map(HttpUrl::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("revocation.ocsp_url: {e}"))?,
        timeout: config.revocation_timeout,
        require_nonce: config.require_nonce,
    };
    let subject = Subject::new(
        loaded
            .chain
            .first()
            .cloned()
            .context("the agent certificate file holds no certificate")?,
        // The configured issuer wins over a second certificate in the file.
        issuer.clone().or_else(|| loaded.chain.get(1).cloned()),
        loaded.summary,
    )?;
    let gate = RevocationGate::new(
        gate_settings,
        subject,
        loaded.identity.clone(),
        upstream.clone(),
        audit.clone(),
    )
    .map_err(anyhow::Error::msg)?;
    let watch = watch_url(config, &gate)?;
    let batcher = match config.signing_batch {
        false => None,
        true => Some(BatchSigner::start(
            &tokio::runtime::Handle::try_current()
                .context("batch signing needs the proxy's runtime to be running")?,
            metrics.batch.clone(),
        )),
    };
    let proxy = Arc::new(Proxy {
        limits: Limits::new(&policy),
        policy,
        upstream,
        audit,
        settings: Settings {
            region: config.region.clone(),
            body_limit: config.body_limit,
            body_read_timeout: config.body_read_timeout,
            pinned: config.resolve.clone(),
            dns_timeout: Duration::from_secs(5),
            signature_lifetime_secs: config.signing_lifetime_secs,
        },
        gate: Arc::new(gate),
        batcher,
    });
    let rotation = match &config.identity_cert {
        CertSource::File(path) => Some(Rotation {
            path: path.clone(),
            issuer,
            proxy: proxy.clone(),
        }),
        // PEM text in a variable cannot change under a running process.
        CertSource::Inline(_) => None,
    };
    Ok(Built {
        proxy,
        metrics,
        listener: ListenerSettings {
            max_header_bytes: config.max_header_bytes,
            header_read_timeout: config.header_read_timeout,
        },
        rotation,
        reload_interval: config.reload_interval,
        watch,
    })
}

/// The watch stream sits beside the responder unless configured otherwise.
fn watch_url(config: &Config, gate: &RevocationGate) -> anyhow::Result<Option<HttpUrl>> {
    match config.watch_url.as_deref() {
        Some("off") => Ok(None),
        Some(text) => {
            Ok(Some(HttpUrl::parse(text).map_err(|e| {
                anyhow::anyhow!("revocation.watch_url: {e}")
            })?))
        }
        None => match gate.responder_for(&gate.subject()) {
            Ok(Some(responder)) => Ok(responder.watch_beside().ok()),
            _ => Ok(None),
        },
    }
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    let built = build(&config)?;
    let metrics = built.metrics.clone();
    let (proxy, listener_settings, _background) = built.start();
    let listener = crate::server::bind(config.listen).await?;
    let local = listener.local_addr()?;
    let _metrics_task = match config.metrics_listen {
        Some(addr) => {
            let metrics_listener = crate::metrics::bind(addr).await?;
            // Tests and scrapers configured with port 0 read the real one here.
            eprintln!("kakunin: metrics on {}", metrics_listener.local_addr()?);
            Some(AbortOnDrop(tokio::spawn(crate::metrics::serve(
                metrics_listener,
                metrics,
            ))))
        }
        None => None,
    };
    tracing::info!(
        agent_id = proxy.policy.agent_id(),
        serial = %proxy.gate.subject().summary.serial_hex,
        mode = proxy.policy.mode().as_str(),
        "identity loaded"
    );
    // Tests and supervisors wait for this exact line.
    eprintln!("kakunin: listening on {local}");
    crate::server::serve(listener, proxy, listener_settings, shutdown_signal()).await;
    Ok(())
}

/// A task that ends with the scope holding it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) async fn shutdown_signal() {
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
