//! The agent's identity as the proxy runs it: certificate + key backend.

use std::sync::Arc;

use anyhow::Context as _;
use kakunin_signer::AgentIdentity;
use rustls_pki_types::CertificateDer;

use crate::config::CertSource;

/// What the proxy logs about its own certificate.
#[derive(Debug, Clone)]
pub struct CertSummary {
    pub common_name: String,
    pub serial_hex: String,
    pub not_after: String,
}

pub fn load_identity(
    cert: &CertSource,
    key_ref: &str,
) -> anyhow::Result<(Arc<AgentIdentity>, CertSummary)> {
    let chain = match cert {
        CertSource::File(path) => kakunin_signer::load_certificate_chain(path)?,
        CertSource::Inline(pem) => {
            kakunin_signer::parse_certificate_chain("AGENT_CERTIFICATE", pem.as_bytes())?
        }
    };
    let summary = summarize(&chain[0]).context("agent certificate")?;
    let backend = kakunin_signer::open_key(key_ref)?;
    let identity = AgentIdentity::new(backend, chain)?;
    Ok((Arc::new(identity), summary))
}

pub fn summarize(leaf: &CertificateDer<'_>) -> anyhow::Result<CertSummary> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| anyhow::anyhow!("not a valid X.509 certificate: {e}"))?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let serial_hex = cert
        .raw_serial()
        .iter()
        .skip_while(|b| **b == 0)
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(CertSummary {
        common_name,
        serial_hex,
        not_after: cert.validity().not_after.to_string(),
    })
}
