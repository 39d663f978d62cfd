//! The mTLS server end the benchmarks put in front of their upstreams.

use std::sync::Arc;

use anyhow::Context as _;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// TLS 1.3 or 1.2, a client certificate from the agents' CA required, as
/// an exchange's mTLS endpoint requires one.
pub fn mtls_acceptor(
    server_chain_pem: &str,
    server_key_pem: &str,
    client_ca: &CertificateDer<'static>,
) -> anyhow::Result<TlsAcceptor> {
    let chain = CertificateDer::pem_slice_iter(server_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("upstream certificate")?;
    let key = PrivateKeyDer::from_pem_slice(server_key_pem.as_bytes()).context("upstream key")?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(client_ca.clone())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
