use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read certificate file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {reason}")]
    Parse { origin: String, reason: String },
}

/// Reads a PEM certificate chain (leaf first) from a file.
pub fn load_certificate_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let shown = path.display().to_string();
    let pem = std::fs::read(path).map_err(|source| CertError::Read {
        path: shown.clone(),
        source,
    })?;
    parse_certificate_chain(&shown, &pem)
}

/// Parses PEM text holding one or more certificates; `origin` names it in errors.
pub fn parse_certificate_chain(
    origin: &str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Parse {
            origin: origin.to_string(),
            reason: format!("bad PEM certificate: {e}"),
        })?;
    if chain.is_empty() {
        return Err(CertError::Parse {
            origin: origin.to_string(),
            reason: "no \"CERTIFICATE\" PEM block found".into(),
        });
    }
    Ok(chain)
}
