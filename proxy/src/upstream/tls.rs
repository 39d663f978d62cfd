use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use kakunin_signer::AgentIdentity;
use rustls::ClientConfig;

/// TLS 1.3 and 1.2; the server must chain to the pinned bundle (no system
/// roots: the agent talks to the APIs its operator named); the client
/// certificate comes from the agent's identity, signed by its key backend.
pub fn client_config(
    pinned_ca: &Path,
    identity: Arc<AgentIdentity>,
) -> anyhow::Result<Arc<ClientConfig>> {
    let bundle = kakunin_signer::load_certificate_chain(pinned_ca)
        .with_context(|| format!("upstream CA bundle {}", pinned_ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in bundle {
        roots
            .add(cert)
            .with_context(|| format!("upstream CA bundle {}", pinned_ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_client_cert_resolver(identity);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
