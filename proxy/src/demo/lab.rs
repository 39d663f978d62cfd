//! Everything the demo (and the revocation benchmark) runs in one process:
//! the agents' CA with its responder (`ca serve`), the exchange's CA, the
//! exchange as a plain-HTTP service behind `kakunin gateway` (mTLS and the
//! receiver's checks), an agent certificate, and the proxy in front.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kakunin_authority::{
    AgentRequest, Authority, InitOptions, ServerRequest, SubjectKey, Validity,
};

use kakunin_verifier::VerifierConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::exchange::Exchange;
use crate::ca_serve::{Responder, ServeOptions};
use crate::config::{CertSource, Config};
use crate::gateway::{Gateway, GatewaySettings};
use crate::pipeline::Proxy;

pub const EXCHANGE_HOST: &str = "api.exchange.com";

pub struct LabOptions<'a> {
    pub policy_json: &'a str,
    /// Subscribe the proxy to the CA's revocation watch stream.
    pub watch: bool,
}

pub struct Lab {
    pub agents_ca: Authority,
    pub responder: Responder,
    /// The exchange's service itself, reachable only through the gateway.
    pub exchange: Exchange,
    pub gateway: Gateway,
    /// The gateway's (the receiver's) audit log.
    pub gateway_audit_log: PathBuf,
    /// The agent's certificate and key files (the demo replays as an
    /// attacker holding them would).
    pub agent_cert: PathBuf,
    pub agent_key: PathBuf,
    /// The CA of the exchange's server certificate.
    pub exchange_ca: PathBuf,
    pub proxy: Arc<Proxy>,
    pub proxy_addr: SocketAddr,
    pub agent_serial: String,
    pub audit_log: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    background: Option<crate::run::Background>,
}

impl Lab {
    pub async fn start(root: &Path, options: &LabOptions<'_>) -> anyhow::Result<Lab> {
        // Kakunin's CA for agents; its certificates point at its responder,
        // so the responder's port is chosen first.
        let responder_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let agents_dir = root.join("kakunin-ca");
        let agents_ca = Authority::init(
            &agents_dir,
            &InitOptions {
                trust_domain: "demo.kakunin.local".into(),
                public_url: format!("http://{}", responder_listener.local_addr()?),
                ..InitOptions::default()
            },
        )?;
        let responder = crate::ca_serve::start(
            Authority::open(&agents_dir)?,
            responder_listener,
            ServeOptions::default(),
        )
        .await?;

        // The exchange's own CA, as in real life.
        let exchange_ca = Authority::init(
            &root.join("exchange-ca"),
            &InitOptions {
                trust_domain: "exchange.example".into(),
                common_name: "Exchange Root CA".into(),
                ..InitOptions::default()
            },
        )?;
        let server = exchange_ca.issue_server(&ServerRequest {
            names: vec![EXCHANGE_HOST.into()],
            validity: Validity::Days(1),
        })?;
        let policy_path = root.join("policy.json");
        std::fs::write(&policy_path, options.policy_json)?;
        let policy = kakunin_policy::Policy::from_json_str("policy.json", options.policy_json)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let agent = agents_ca.issue_agent(&AgentRequest {
            agent_id: policy.agent_id(),
            policy: &policy,
            key: SubjectKey::Generate,
            validity: Validity::Hours(1),
        })?;
        let cert_path = root.join("agent.pem");
        let key_path = root.join("agent-key.pem");
        std::fs::write(&cert_path, &agent.cert_pem)?;
        kakunin_authority::write_private_key(
            &key_path,
            agent.key_pem.as_deref().unwrap_or_default(),
        )?;

        // The exchange runs behind the receiver side of Kakunin: the gateway
        // requires an agent certificate, verifies every signed request, and
        // forwards to the service on loopback.
        let exchange = Exchange::start_plain("127.0.0.1:0".parse()?).await?;
        let agents_ca_der = CertificateDer::from_pem_slice(agents_ca.certificate_pem().as_bytes())?;
        let mut verifier = VerifierConfig::new(vec![agents_ca_der]);
        verifier.trust_domain = Some("demo.kakunin.local".into());
        verifier.authorities = vec![EXCHANGE_HOST.into()];
        let gateway_audit_log = root.join("exchange-audit.jsonl");
        let mut settings = GatewaySettings::new(
            verifier,
            server.cert_pem.clone(),
            server.key_pem.clone().unwrap_or_default(),
            exchange.addr(),
        );
        settings.audit_log = Some(gateway_audit_log.clone());
        let gateway = crate::gateway::start(settings).await?;

        let mut pinned = BTreeMap::new();
        pinned.insert(EXCHANGE_HOST.to_string(), gateway.local_addr());
        let audit_log = root.join("audit.jsonl");
        let config = Config {
            listen: "127.0.0.1:0".parse()?,
            policy: policy_path,
            region: Some("eu-west-1".into()),
            body_limit: crate::config::DEFAULT_BODY_LIMIT,
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            audit_log: Some(audit_log.clone()),
            identity_cert: CertSource::File(cert_path.clone()),
            identity_key: format!("file:{}", key_path.display()),
            key_options: kakunin_signer::KeyOptions::default(),
            identity_issuer: Some(agents_ca.certificate_path()),
            reload_interval: Duration::from_secs(1),
            ocsp_url: None,
            watch_url: (!options.watch).then(|| "off".to_string()),
            revocation_timeout: Duration::from_secs(2),
            require_nonce: true,
            signing_lifetime_secs: crate::signing::DEFAULT_LIFETIME_SECS,
            signing_batch: false,
            upstream_ca: exchange_ca.certificate_path(),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_idle_per_host: 16,
            resolve: pinned,
            metrics_listen: None,
        };
        let (proxy, settings, background) = crate::run::build(&config)?.start();
        let listener = crate::server::bind(config.listen).await?;
        let proxy_addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::server::serve(
            listener,
            proxy.clone(),
            settings,
            async {
                let _ = stopped.await;
            },
        ));
        Ok(Lab {
            agents_ca,
            responder,
            exchange,
            gateway,
            gateway_audit_log,
            agent_cert: cert_path,
            agent_key: key_path,
            exchange_ca: exchange_ca.certificate_path(),
            proxy,
            proxy_addr,
            agent_serial: agent.serial_hex,
            audit_log,
            stop: Some(stop),
            server: Some(server),
            background: Some(background),
        })
    }

    /// Stops the proxy (letting in-flight requests finish) and the responder.
    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(11), server).await;
        }
        self.background = None;
        self.gateway.shutdown();
        self.responder.shutdown();
    }
}
