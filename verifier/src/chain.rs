//! Who sent the request: the certificate chains to a trust anchor
//! (rustls-webpki, client-auth usage, validity at `now`), names one agent as
//! a SPIFFE X509-SVID, and carries the scope it acts under.

use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::config::ConfigError;
use crate::reason::{Reason, Rejection};

/// The agent a verified certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// Subject CN.
    pub agent_id: String,
    /// `spiffe://<trust domain>/agent/<agent id>`.
    pub spiffe_id: String,
    /// Lower-case hex, as in `keyid` and the CA's records.
    pub serial_hex: String,
    /// Unix seconds.
    pub not_after: i64,
}

/// What the rest of the checks need from the leaf.
#[derive(Debug)]
pub(crate) struct CheckedLeaf {
    pub agent: Agent,
    /// The CA certificate that signed the leaf (for OCSP).
    pub issuer: CertificateDer<'static>,
    /// The scope extension's value: DER UTF8String of canonical JSON.
    pub scope: Option<Vec<u8>>,
    pub ocsp_url: Option<String>,
    /// DER SubjectPublicKeyInfo: the key the request signature is checked with.
    pub spki: Vec<u8>,
}

#[derive(Debug)]
pub(crate) struct Anchors {
    anchors: Vec<TrustAnchor<'static>>,
    certs: Vec<CertificateDer<'static>>,
}

impl Anchors {
    pub fn new(certs: &[CertificateDer<'static>]) -> Result<Anchors, ConfigError> {
        if certs.is_empty() {
            return Err(ConfigError::NoTrustAnchors);
        }
        let anchors = certs
            .iter()
            .enumerate()
            .map(|(index, cert)| {
                webpki::anchor_from_trusted_cert(cert)
                    .map(|a| a.to_owned())
                    .map_err(|e| ConfigError::BadTrustAnchor {
                        index,
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Anchors {
            anchors,
            certs: certs.to_vec(),
        })
    }

    /// Verifies `leaf` (with `intermediates` from the TLS session) and reads
    /// the identity out of it.
    pub fn check(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now_unix: i64,
        trust_domain: Option<&str>,
        scope_oid: &str,
    ) -> Result<CheckedLeaf, Rejection> {
        let end_entity = webpki::EndEntityCert::try_from(leaf).map_err(|e| {
            Rejection::new(
                Reason::ChainInvalid,
                format!("not an X.509 certificate: {e}"),
            )
        })?;
        let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(now_unix).unwrap_or(0),
        ));
        let path = end_entity
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &self.anchors,
                intermediates,
                now,
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .map_err(chain_rejection)?;
        // The CA that signed the leaf: the first intermediate of the
        // verified path, or the anchor when there is none.
        let issuer = match path.intermediate_certificates().next() {
            Some(cert) => cert.der().into_owned(),
            None => {
                let anchor = path.anchor();
                self.anchors
                    .iter()
                    .position(|a| {
                        a.subject == anchor.subject
                            && a.subject_public_key_info == anchor.subject_public_key_info
                    })
                    .and_then(|i| self.certs.get(i))
                    .cloned()
                    .ok_or_else(|| {
                        Rejection::new(Reason::ChainInvalid, "verified anchor not found")
                    })?
            }
        };
        read_leaf(leaf, issuer, trust_domain, scope_oid)
    }
}

fn chain_rejection(err: webpki::Error) -> Rejection {
    match err {
        webpki::Error::CertExpired { .. } => {
            Rejection::new(Reason::CertificateExpired, "the certificate has expired")
        }
        webpki::Error::CertNotValidYet { .. } => Rejection::new(
            Reason::CertificateNotYetValid,
            "the certificate is not valid yet",
        ),
        webpki::Error::UnknownIssuer => Rejection::new(
            Reason::ChainInvalid,
            "the certificate does not chain to a trusted agent CA",
        ),
        other => Rejection::new(
            Reason::ChainInvalid,
            format!("certificate refused: {other}"),
        ),
    }
}

fn read_leaf(
    leaf: &CertificateDer<'_>,
    issuer: CertificateDer<'static>,
    trust_domain: Option<&str>,
    scope_oid: &str,
) -> Result<CheckedLeaf, Rejection> {
    let bad = |detail: String| Rejection::new(Reason::ChainInvalid, detail);
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| bad(format!("certificate does not parse: {e}")))?;
    let agent_id = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .ok_or_else(|| {
            Rejection::new(Reason::SpiffeIdInvalid, "the certificate has no subject CN")
        })?
        .to_string();
    let mut uris = Vec::new();
    let mut scope = None;
    let mut ocsp_url = None;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    if let GeneralName::URI(uri) = name {
                        uris.push(uri.to_string());
                    }
                }
            }
            ParsedExtension::AuthorityInfoAccess(aia) => {
                for desc in &aia.accessdescs {
                    if desc.access_method.to_id_string() == "1.3.6.1.5.5.7.48.1" {
                        if let GeneralName::URI(uri) = &desc.access_location {
                            ocsp_url.get_or_insert_with(|| uri.to_string());
                        }
                    }
                }
            }
            _ if ext.oid.to_id_string() == scope_oid => scope = Some(ext.value.to_vec()),
            _ => {}
        }
    }
    let spiffe_id = check_spiffe(&uris, &agent_id, trust_domain)?;
    Ok(CheckedLeaf {
        agent: Agent {
            agent_id,
            spiffe_id,
            serial_hex: kakunin_authority::serial_hex(cert.raw_serial()),
            not_after: cert.validity().not_after.timestamp(),
        },
        issuer,
        scope,
        ocsp_url,
        spki: cert.public_key().raw.to_vec(),
    })
}

/// DESIGN.md: one URI SAN, `spiffe://<trust domain>/agent/<agent id>`, and
/// the agent id is the CN. Anything else is a certificate this receiver
/// cannot attribute.
fn check_spiffe(
    uris: &[String],
    agent_id: &str,
    trust_domain: Option<&str>,
) -> Result<String, Rejection> {
    let bad = |detail: String| Rejection::new(Reason::SpiffeIdInvalid, detail);
    let [uri] = uris else {
        return Err(bad(format!(
            "expected exactly one URI SAN (a SPIFFE ID), found {}",
            uris.len()
        )));
    };
    let rest = uri
        .strip_prefix("spiffe://")
        .ok_or_else(|| bad(format!("URI SAN {uri:?} is not a SPIFFE ID")))?;
    let (domain, path) = rest
        .split_once('/')
        .ok_or_else(|| bad(format!("SPIFFE ID {uri:?} has no path")))?;
    let domain_ok = !domain.is_empty()
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
    if !domain_ok {
        return Err(bad(format!(
            "SPIFFE ID {uri:?} has an invalid trust domain"
        )));
    }
    if let Some(expected) = trust_domain {
        if domain != expected {
            return Err(bad(format!(
                "SPIFFE trust domain {domain:?} is not the expected {expected:?}"
            )));
        }
    }
    if path != format!("agent/{agent_id}") {
        return Err(bad(format!(
            "SPIFFE ID {uri:?} does not name agent {agent_id:?} (expected path /agent/{agent_id})"
        )));
    }
    Ok(uri.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_shapes() {
        let ok = vec!["spiffe://kakunin.local/agent/bot".to_string()];
        assert_eq!(check_spiffe(&ok, "bot", None).unwrap(), ok[0]);
        assert!(check_spiffe(&ok, "bot", Some("kakunin.local")).is_ok());
        for (uris, cn, td) in [
            (vec![], "bot", None),
            (
                vec![
                    "spiffe://kakunin.local/agent/bot".into(),
                    "spiffe://x/agent/bot".into(),
                ],
                "bot",
                None,
            ),
            (vec!["https://kakunin.local/agent/bot".into()], "bot", None),
            (
                vec!["spiffe://kakunin.local/agent/other".into()],
                "bot",
                None,
            ),
            (
                vec!["spiffe://kakunin.local/agent/bot/x".into()],
                "bot",
                None,
            ),
            (vec!["spiffe://Kakunin.local/agent/bot".into()], "bot", None),
            (
                vec!["spiffe://kakunin.local/agent/bot".into()],
                "bot",
                Some("other.domain"),
            ),
        ] {
            let uris: Vec<String> = uris;
            let err = check_spiffe(&uris, cn, td).unwrap_err();
            assert_eq!(err.reason, Reason::SpiffeIdInvalid, "{uris:?}");
        }
    }
}
