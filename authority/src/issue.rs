use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use ring::rand::SecureRandom;
use time::{Duration, OffsetDateTime};

use crate::ca::Authority;
use crate::ca_key::signing_error;
use crate::store::{CertKind, NewCertificate};
use crate::{der, AuthorityError};

/// Whose public key goes into the certificate.
#[derive(Debug, Clone)]
pub enum SubjectKey {
    /// Make a new P-256 key here and hand it back (development, tests).
    Generate,
    /// A public key (PEM SubjectPublicKeyInfo) whose private half lives
    /// elsewhere: a KMS, an HSM, another machine.
    PublicKeyPem(String),
    /// A PEM PKCS#10 request: only its public key is used, and only once its
    /// self-signature verifies.
    CsrPem(String),
    /// A DER SubjectPublicKeyInfo (rotation re-certifying a stored key).
    SpkiDer(Vec<u8>),
}

#[derive(Debug, Clone, Copy)]
pub enum Validity {
    Days(u32),
    Hours(u32),
    /// An exact window (tests of expired or not-yet-valid certificates).
    Window {
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    },
}

impl Validity {
    /// (not_before, not_after) as of `now`. A little back-dating tolerates
    /// clock skew between the CA and its relying parties.
    fn window(
        self,
        now: OffsetDateTime,
    ) -> Result<(OffsetDateTime, OffsetDateTime), AuthorityError> {
        let from = now - Duration::minutes(5);
        let until = |length: Duration| {
            now.checked_add(length).ok_or(AuthorityError::Invalid {
                what: "validity",
                reason: format!("{self:?} ends past the year 9999"),
            })
        };
        match self {
            Validity::Days(d) => Ok((from, until(Duration::days(i64::from(d)))?)),
            Validity::Hours(h) => Ok((from, until(Duration::hours(i64::from(h)))?)),
            Validity::Window {
                not_before,
                not_after,
            } => Ok((not_before, not_after)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AgentRequest<'a> {
    pub agent_id: &'a str,
    pub policy: &'a kakunin_policy::Policy,
    pub key: SubjectKey,
    pub validity: Validity,
}

#[derive(Debug, Clone)]
pub struct ServerRequest {
    /// DNS names or IP addresses; the first is also the subject CN.
    pub names: Vec<String>,
    pub validity: Validity,
}

/// A freshly issued certificate, already recorded in the CA database.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    /// Present only when the key was generated here.
    pub key_pem: Option<String>,
    /// Lower-case hex, as the signature `keyid` and the audit log show it.
    pub serial_hex: String,
    pub not_after: OffsetDateTime,
}

impl Authority {
    /// Issues an agent certificate per DESIGN.md's contract: CN = agent id,
    /// one SPIFFE URI SAN, KU digitalSignature (critical), EKU clientAuth,
    /// AIA (OCSP) and a CRL distribution point under the CA's public URL,
    /// and the scope extension holding the policy's canonical JSON.
    pub fn issue_agent(&self, request: &AgentRequest<'_>) -> Result<Issued, AuthorityError> {
        let signed = self.sign_agent(request)?;
        self.store().insert(&signed.record)?;
        Ok(signed.issued)
    }

    /// Signs without recording: rotation records inside its own transaction.
    pub(crate) fn sign_agent(&self, request: &AgentRequest<'_>) -> Result<Signed, AuthorityError> {
        validate_agent_id(request.agent_id)?;
        if request.policy.agent_id() != request.agent_id {
            return Err(AuthorityError::Invalid {
                what: "policy",
                reason: format!(
                    "policy is for agent {:?}, not {:?}; a certificate must carry its own agent's scope",
                    request.policy.agent_id(),
                    request.agent_id
                ),
            });
        }
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, request.agent_id);
        params.distinguished_name = dn;
        let spiffe = format!(
            "spiffe://{}/agent/{}",
            self.settings().trust_domain,
            request.agent_id
        );
        params.subject_alt_names = vec![SanType::URI(spiffe.try_into()?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.custom_extensions = vec![CustomExtension::from_oid_content(
            &self.scope_oid(),
            der::utf8_string(request.policy.canonical_json()),
        )];
        crate::aia::add_revocation_pointers(&mut params, &self.settings().public_url)?;
        check_subject_key(&request.key)?;
        let mut signed = self.sign(params, &request.key, request.validity)?;
        signed.record.kind = CertKind::Agent;
        signed.record.subject = request.agent_id.to_string();
        signed.record.agent_id = Some(request.agent_id.to_string());
        signed.record.policy_json = Some(request.policy.canonical_json().to_string());
        Ok(signed)
    }

    /// Issues a TLS server certificate (for an upstream in tests and demos,
    /// or an internal API that pins this CA).
    pub fn issue_server(&self, request: &ServerRequest) -> Result<Issued, AuthorityError> {
        let first = request.names.first().ok_or(AuthorityError::Invalid {
            what: "server names",
            reason: "at least one DNS name or IP address is needed".into(),
        })?;
        let mut params = CertificateParams::new(request.names.clone())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, first.as_str());
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let mut signed = self.sign(params, &SubjectKey::Generate, request.validity)?;
        signed.record.kind = CertKind::Server;
        signed.record.subject = first.clone();
        self.store().insert(&signed.record)?;
        Ok(signed.issued)
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        key: &SubjectKey,
        validity: Validity,
    ) -> Result<Signed, AuthorityError> {
        let now = OffsetDateTime::now_utc();
        let (not_before, not_after) = validity.window(now)?;
        if not_after <= not_before {
            return Err(AuthorityError::Invalid {
                what: "validity",
                reason: "the certificate would expire before it becomes valid".into(),
            });
        }
        params.not_before = not_before;
        params.not_after = not_after;
        let serial = random_serial()?;
        let serial_hex = crate::serial_hex(serial.as_ref());
        params.serial_number = Some(serial);
        params.use_authority_key_identifier_extension = true;

        let (cert, key_pem) = match key {
            SubjectKey::Generate => {
                let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
                let cert = params
                    .signed_by(&key, &self.issuer)
                    .map_err(signing_error)?;
                (cert, Some(key.serialize_pem()))
            }
            SubjectKey::PublicKeyPem(pem) => {
                let public =
                    SubjectPublicKeyInfo::from_pem(pem).map_err(|e| AuthorityError::Invalid {
                        what: "public key",
                        reason: format!(
                            "{e}; expected a PEM \"PUBLIC KEY\" (SubjectPublicKeyInfo)"
                        ),
                    })?;
                let cert = params
                    .signed_by(&public, &self.issuer)
                    .map_err(signing_error)?;
                (cert, None)
            }
            SubjectKey::CsrPem(pem) => {
                let spki = crate::csr::public_key_from_csr(pem)?;
                let cert = params
                    .signed_by(&spki_from_der(&spki)?, &self.issuer)
                    .map_err(signing_error)?;
                (cert, None)
            }
            SubjectKey::SpkiDer(spki) => {
                let cert = params
                    .signed_by(&spki_from_der(spki)?, &self.issuer)
                    .map_err(signing_error)?;
                (cert, None)
            }
        };
        let der = cert.der().to_vec();
        let spki_der = subject_spki(&der)?;
        Ok(Signed {
            record: NewCertificate {
                serial: serial_hex.clone(),
                kind: CertKind::Server,
                subject: String::new(),
                agent_id: None,
                not_before: params.not_before.unix_timestamp(),
                not_after: params.not_after.unix_timestamp(),
                issued_at: now.unix_timestamp(),
                spki_der,
                der,
                policy_json: None,
            },
            issued: Issued {
                cert_pem: cert.pem(),
                key_pem,
                serial_hex,
                not_after: params.not_after,
            },
        })
    }
}

/// An agent certificate for a key the agent cannot sign with is refused
/// before anything is signed or recorded.
fn check_subject_key(key: &SubjectKey) -> Result<(), AuthorityError> {
    match key {
        SubjectKey::Generate => Ok(()),
        SubjectKey::SpkiDer(spki) => crate::agent_key::check_agent_key(spki),
        SubjectKey::CsrPem(pem) => {
            crate::agent_key::check_agent_key(&crate::csr::public_key_from_csr(pem)?)
        }
        SubjectKey::PublicKeyPem(pem) => {
            crate::agent_key::check_agent_key(&crate::csr::public_key_from_pem(pem)?)
        }
    }
}

/// A signed certificate and the row that records it.
pub(crate) struct Signed {
    pub issued: Issued,
    pub record: NewCertificate,
}

fn spki_from_der(spki: &[u8]) -> Result<SubjectPublicKeyInfo, AuthorityError> {
    SubjectPublicKeyInfo::from_der(spki).map_err(|e| AuthorityError::Invalid {
        what: "public key",
        reason: format!("{e}; supported keys are ECDSA P-256/P-384, Ed25519 and RSA"),
    })
}

/// The certificate's own SubjectPublicKeyInfo, byte for byte, so a rotation
/// that keeps the key certifies exactly the same bytes again.
fn subject_spki(der: &[u8]) -> Result<Vec<u8>, AuthorityError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| AuthorityError::Invalid {
            what: "issued certificate",
            reason: format!("does not parse back: {e}"),
        })?;
    Ok(cert.tbs_certificate.subject_pki.raw.to_vec())
}

/// 16 random bytes, top bit clear so the DER INTEGER stays positive without
/// padding, never zero-led so every serial has the same length.
pub(crate) fn random_serial() -> Result<SerialNumber, AuthorityError> {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| AuthorityError::Invalid {
            what: "serial number",
            reason: "the system random number generator failed".into(),
        })?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Agent ids become a SPIFFE path segment and a CN: keep them to characters
/// that need no escaping anywhere.
fn validate_agent_id(id: &str) -> Result<(), AuthorityError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && id != "."
        && id != "..";
    if ok {
        Ok(())
    } else {
        Err(AuthorityError::Invalid {
            what: "agent id",
            reason: format!("{id:?}: use 1-128 of A-Z a-z 0-9 . _ -"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Validity;
    use super::*;
    use crate::InitOptions;
    use x509_parser::prelude::{GeneralName, ParsedExtension};

    const POLICY: &str = r#"{
        "agent_id": "trading_bot_v2",
        "network_rules": { "allowed_hosts": ["api.exchange.com"] } // comment
    }"#;

    fn ca() -> (tempfile::TempDir, Authority) {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::init(dir.path(), &InitOptions::default()).unwrap();
        (dir, ca)
    }

    #[test]
    fn agent_certificate_follows_the_contract() {
        let (_dir, ca) = ca();
        let policy = kakunin_policy::Policy::from_json_str("p.json", POLICY).unwrap();
        let issued = ca
            .issue_agent(&AgentRequest {
                agent_id: "trading_bot_v2",
                policy: &policy,
                key: SubjectKey::Generate,
                validity: Validity::Days(30),
            })
            .unwrap();
        assert!(issued.key_pem.is_some());
        assert_eq!(issued.serial_hex.len(), 32);

        let pem = ::x509_parser::pem::parse_x509_pem(issued.cert_pem.as_bytes())
            .unwrap()
            .1;
        let cert = pem.parse_x509().unwrap();
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "trading_bot_v2");
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            san.value.general_names,
            vec![GeneralName::URI(
                "spiffe://kakunin.local/agent/trading_bot_v2"
            )]
        );
        let ku = cert.key_usage().unwrap().unwrap();
        assert!(ku.critical && ku.value.digital_signature() && !ku.value.key_cert_sign());
        assert!(
            cert.extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .client_auth
        );
        let scope = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.4.1.32473.1.1")
            .unwrap();
        assert!(!scope.critical);
        let expected = der::utf8_string(policy.canonical_json());
        assert_eq!(scope.value, expected.as_slice());
        assert_eq!(
            cert.issuer().to_string(),
            "CN=Kakunin Root CA, O=Kakunin".to_string()
        );
    }

    #[test]
    fn agent_certificates_point_at_revocation_services_and_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let options = InitOptions {
            public_url: "https://ca.example.com/k/".into(),
            ..InitOptions::default()
        };
        let ca = Authority::init(dir.path(), &options).unwrap();
        assert_eq!(ca.ocsp_url(), "https://ca.example.com/k/ocsp");
        let policy = kakunin_policy::Policy::from_json_str("p.json", POLICY).unwrap();
        let issued = ca
            .issue_agent(&AgentRequest {
                agent_id: "trading_bot_v2",
                policy: &policy,
                key: SubjectKey::Generate,
                validity: Validity::Days(1),
            })
            .unwrap();
        let pem = ::x509_parser::pem::parse_x509_pem(issued.cert_pem.as_bytes())
            .unwrap()
            .1;
        let cert = pem.parse_x509().unwrap();
        let mut ocsp = None;
        let mut crl = None;
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::AuthorityInfoAccess(aia) => {
                    let desc = &aia.accessdescs[0];
                    assert_eq!(desc.access_method.to_id_string(), "1.3.6.1.5.5.7.48.1");
                    ocsp = Some(format!("{:?}", desc.access_location));
                }
                ParsedExtension::CRLDistributionPoints(points) => {
                    crl = Some(format!("{:?}", points.points[0].distribution_point));
                }
                _ => {}
            }
        }
        assert!(ocsp.unwrap().contains("https://ca.example.com/k/ocsp"));
        assert!(crl.unwrap().contains("https://ca.example.com/k/crl"));

        let record = ca.store().get(&issued.serial_hex).unwrap().unwrap();
        assert_eq!(record.kind, crate::CertKind::Agent);
        assert_eq!(record.agent_id.as_deref(), Some("trading_bot_v2"));
        assert_eq!(record.policy_json.as_deref(), Some(policy.canonical_json()));
        assert_eq!(record.der, pem.contents);
        assert_eq!(record.spki_der, cert.public_key().raw);
        assert_eq!(record.not_after, issued.not_after.unix_timestamp());
        assert_eq!(
            ca.status(&issued.serial_hex).unwrap(),
            crate::CertStatus::Good
        );
    }

    #[test]
    fn a_csr_contributes_its_key_and_nothing_else() {
        let (_dir, ca) = ca();
        let policy = kakunin_policy::Policy::from_json_str("p.json", POLICY).unwrap();
        let holder = KeyPair::generate().unwrap();
        let mut asked = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        asked.distinguished_name.push(DnType::CommonName, "root");
        let csr = asked.serialize_request(&holder).unwrap().pem().unwrap();
        let issued = ca
            .issue_agent(&AgentRequest {
                agent_id: "trading_bot_v2",
                policy: &policy,
                key: SubjectKey::CsrPem(csr),
                validity: Validity::Hours(1),
            })
            .unwrap();
        let pem = ::x509_parser::pem::parse_x509_pem(issued.cert_pem.as_bytes())
            .unwrap()
            .1;
        let cert = pem.parse_x509().unwrap();
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            holder.public_key_raw()
        );
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "trading_bot_v2");
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(san.value.general_names.len(), 1);
    }

    #[test]
    fn issues_for_a_public_key_without_seeing_the_private_key() {
        let (_dir, ca) = ca();
        let policy = kakunin_policy::Policy::from_json_str("p.json", POLICY).unwrap();
        let elsewhere = KeyPair::generate().unwrap();
        let issued = ca
            .issue_agent(&AgentRequest {
                agent_id: "trading_bot_v2",
                policy: &policy,
                key: SubjectKey::PublicKeyPem(elsewhere.public_key_pem()),
                validity: Validity::Hours(1),
            })
            .unwrap();
        assert!(issued.key_pem.is_none());
        let pem = ::x509_parser::pem::parse_x509_pem(issued.cert_pem.as_bytes())
            .unwrap()
            .1;
        let cert = pem.parse_x509().unwrap();
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            elsewhere.public_key_raw()
        );
    }

    #[test]
    fn refuses_bad_agent_ids_and_foreign_policies() {
        let (_dir, ca) = ca();
        let policy = kakunin_policy::Policy::from_json_str("p.json", POLICY).unwrap();
        for bad in ["", "a/b", "with space", "..", "é"] {
            let request = AgentRequest {
                agent_id: bad,
                policy: &policy,
                key: SubjectKey::Generate,
                validity: Validity::Days(1),
            };
            assert!(ca.issue_agent(&request).is_err(), "{bad:?}");
        }
        let request = AgentRequest {
            agent_id: "other_bot",
            policy: &policy,
            key: SubjectKey::Generate,
            validity: Validity::Days(1),
        };
        let err = ca.issue_agent(&request).unwrap_err();
        assert!(err.to_string().contains("trading_bot_v2"), "{err}");
    }

    #[test]
    fn absurd_validity_is_an_error_not_a_panic() {
        let (_dir, ca) = ca();
        for validity in [Validity::Days(u32::MAX), Validity::Hours(u32::MAX)] {
            let err = ca
                .issue_server(&ServerRequest {
                    names: vec!["a.example".into()],
                    validity,
                })
                .unwrap_err();
            assert!(err.to_string().contains("9999"), "{err}");
        }
    }

    #[test]
    fn server_certificate_names() {
        let (_dir, ca) = ca();
        let issued = ca
            .issue_server(&ServerRequest {
                names: vec!["api.exchange.com".into(), "127.0.0.1".into()],
                validity: Validity::Days(1),
            })
            .unwrap();
        let pem = ::x509_parser::pem::parse_x509_pem(issued.cert_pem.as_bytes())
            .unwrap()
            .1;
        let cert = pem.parse_x509().unwrap();
        assert!(
            cert.extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .server_auth
        );
        assert!(ca
            .issue_server(&ServerRequest {
                names: vec![],
                validity: Validity::Days(1)
            })
            .is_err());
    }
}
