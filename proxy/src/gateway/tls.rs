//! The gateway's TLS: its own certificate, and a client certificate required
//! from one of the agents' CAs (rustls-webpki: chain, validity, clientAuth).
//! Revocation is the verifier's job, per request, so that a revocation made
//! after a connection was opened still stops its next request.

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::GatewayError;

pub(super) fn acceptor(
    chain_pem: &str,
    key_pem: &str,
    client_cas: &[CertificateDer<'static>],
) -> Result<TlsAcceptor, GatewayError> {
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| GatewayError::ServerCertificate(format!("not PEM certificates: {e}")))?;
    if chain.is_empty() {
        return Err(GatewayError::ServerCertificate(
            "no certificate found (expected PEM \"BEGIN CERTIFICATE\" blocks)".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| {
        GatewayError::ServerCertificate(format!(
            "the key is not a PEM private key (PKCS#8, SEC1 or PKCS#1): {e}"
        ))
    })?;
    if client_cas.is_empty() {
        return Err(GatewayError::ClientCa(
            "no CA certificate: give the CA(s) that issue agent certificates".into(),
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for (index, ca) in client_cas.iter().enumerate() {
        roots.add(ca.clone()).map_err(|e| {
            GatewayError::ClientCa(format!("certificate {index} is not a usable CA: {e}"))
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| GatewayError::ClientCa(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| GatewayError::ServerCertificate(e.to_string()))?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            GatewayError::ServerCertificate(format!("the certificate and key do not fit: {e}"))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
