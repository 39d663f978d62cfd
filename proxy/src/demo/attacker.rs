//! The demo's attacker: someone who captured a signed trade on its way to
//! the exchange and holds the agent's TLS identity files, so the gateway's
//! mTLS lets them in. They send the captured request again, once with the
//! body changed and once exactly as captured; the gateway's verifier
//! refuses both, each for its reason.

use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;

use super::lab::{Lab, EXCHANGE_HOST};

/// Headers of a request as the exchange received it (its echo), minus what
/// the gateway added: everything an eavesdropper on that hop would see.
pub struct Captured {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Captured {
    pub fn from_echo(echo: &Value) -> Option<Captured> {
        let headers = echo["headers"]
            .as_object()?
            .iter()
            .filter(|(name, _)| {
                !name.starts_with("x-kakunin-") && name.as_str() != "content-length"
            })
            .filter_map(|(name, value)| Some((name.clone(), value.as_str()?.to_string())))
            .collect();
        Some(Captured {
            path: echo["path"].as_str()?.to_string(),
            headers,
            body: echo["body"].as_str()?.to_string(),
        })
    }
}

/// Sends `captured` with `body` to the gateway over mTLS as the agent's
/// certificate; returns the status and the JSON answer.
pub async fn send(
    lab: &Lab,
    captured: &Captured,
    body: &str,
) -> anyhow::Result<(StatusCode, Value)> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(&lab.exchange_ca).context("exchange CA")?)?;
    let chain = CertificateDer::pem_file_iter(&lab.agent_cert)
        .context("agent certificate")?
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&lab.agent_key).context("agent key")?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)?;
    let tcp = TcpStream::connect(lab.gateway.local_addr()).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(EXCHANGE_HOST)?, tcp)
        .await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    let mut request = Request::post(captured.path.as_str());
    for (name, value) in &captured.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request.body(Full::new(Bytes::from(body.to_string())))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let answer = response.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&answer).unwrap_or_default()))
}
