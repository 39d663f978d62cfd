//! The agent's identity as the proxy runs it: certificate + key backend.

use std::sync::Arc;

use anyhow::Context as _;
use kakunin_signer::{AgentIdentity, KeyBackend};
use rustls_pki_types::CertificateDer;

use crate::config::CertSource;

/// What the proxy logs about its own certificate.
#[derive(Debug, Clone)]
pub struct CertSummary {
    pub common_name: String,
    pub serial_hex: String,
    pub not_after: String,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    /// None when the certificate has no EKU extension (any use allowed).
    pub client_auth: Option<bool>,
    /// The scope extension's value (DER), when present.
    pub scope: Option<Vec<u8>>,
}

/// The identity as loaded at start.
pub struct LoadedIdentity {
    pub identity: Arc<AgentIdentity>,
    pub chain: Vec<CertificateDer<'static>>,
    pub summary: CertSummary,
}

/// Loads the certificate chain and pairs it with `backend` (already opened
/// and wrapped by `keyguard::guard`); a certificate for another key is
/// refused here.
pub fn load_identity(
    cert: &CertSource,
    backend: Arc<dyn KeyBackend>,
) -> anyhow::Result<LoadedIdentity> {
    let chain = match cert {
        CertSource::File(path) => kakunin_signer::load_certificate_chain(path)?,
        CertSource::Inline(pem) => {
            kakunin_signer::parse_certificate_chain("AGENT_CERTIFICATE", pem.as_bytes())?
        }
    };
    let summary = summarize(&chain[0]).context("agent certificate")?;
    let identity = AgentIdentity::new(backend, chain.clone())?;
    Ok(LoadedIdentity {
        identity: Arc::new(identity),
        chain,
        summary,
    })
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
    let client_auth = cert
        .extended_key_usage()
        .ok()
        .flatten()
        .map(|eku| eku.value.client_auth || eku.value.any);
    let scope_oid = kakunin_authority::DEFAULT_SCOPE_OID
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".");
    let scope = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == scope_oid)
        .map(|e| e.value.to_vec());
    Ok(CertSummary {
        common_name,
        serial_hex,
        not_after: cert.validity().not_after.to_string(),
        not_before_unix: cert.validity().not_before.timestamp(),
        not_after_unix: cert.validity().not_after.timestamp(),
        client_auth,
        scope,
    })
}

/// Start-up checks that make a misissued or misplaced certificate fail at
/// once with a reason, instead of at the first handshake with a vague one.
pub fn check_for_policy(
    cert: &CertSummary,
    policy: &kakunin_policy::Policy,
    now_unix: i64,
) -> anyhow::Result<()> {
    if cert.common_name != policy.agent_id() {
        anyhow::bail!(
            "the certificate is for agent {:?} but the policy is for {:?}: one proxy carries one \
             agent's identity and scope",
            cert.common_name,
            policy.agent_id()
        );
    }
    if now_unix < cert.not_before_unix {
        anyhow::bail!(
            "the agent certificate (serial {}) is not valid yet",
            cert.serial_hex
        );
    }
    if now_unix > cert.not_after_unix {
        anyhow::bail!(
            "the agent certificate (serial {}) expired at {}; issue a new one",
            cert.serial_hex,
            cert.not_after
        );
    }
    if cert.client_auth == Some(false) {
        anyhow::bail!(
            "the agent certificate (serial {}) does not allow TLS client authentication (EKU)",
            cert.serial_hex
        );
    }
    match &cert.scope {
        Some(scope) if *scope != kakunin_authority::scope_extension_value(policy) => {
            // Allowed (an operator may tighten a policy locally before the
            // next issuance), but worth saying: receivers enforce the
            // certificate's scope, not this file.
            tracing::warn!(
                serial = %cert.serial_hex,
                "the policy file differs from the scope in the agent certificate; \
                 receivers enforce the certificate's scope"
            );
        }
        Some(_) => {}
        None => tracing::warn!(
            serial = %cert.serial_hex,
            "the agent certificate carries no scope extension"
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> kakunin_policy::Policy {
        kakunin_policy::Policy::from_json_str("p.json", r#"{"agent_id": "bot"}"#).unwrap()
    }

    fn summary() -> CertSummary {
        CertSummary {
            common_name: "bot".into(),
            serial_hex: "01".into(),
            not_after: "later".into(),
            not_before_unix: 100,
            not_after_unix: 200,
            client_auth: Some(true),
            scope: Some(kakunin_authority::scope_extension_value(&policy())),
        }
    }

    #[test]
    fn start_up_checks() {
        let policy = policy();
        assert!(check_for_policy(&summary(), &policy, 150).is_ok());
        let err = check_for_policy(&summary(), &policy, 201).unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
        let err = check_for_policy(&summary(), &policy, 99).unwrap_err();
        assert!(err.to_string().contains("not valid yet"), "{err}");
        let server_only = CertSummary {
            client_auth: Some(false),
            ..summary()
        };
        assert!(check_for_policy(&server_only, &policy, 150).is_err());
        let other = CertSummary {
            common_name: "other".into(),
            ..summary()
        };
        assert!(check_for_policy(&other, &policy, 150).is_err());
        // A different scope is allowed (warned about).
        let tightened = CertSummary {
            scope: Some(vec![0x0c, 0]),
            ..summary()
        };
        assert!(check_for_policy(&tightened, &policy, 150).is_ok());
    }
}
