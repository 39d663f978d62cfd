//! Shared fixtures: a real CA directory and certificates it issued.

mod hostile;
mod respond;
mod verify;

use der::{Decode, Encode};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    SignatureAlgorithm,
};
use time::{Duration, OffsetDateTime};
use x509_ocsp::{BasicOcspResponse, OcspResponse};

use super::{build_request, OcspReply, ResponseOptions, ResponseStatus};
use crate::{AgentRequest, Authority, AuthorityError, CertStatus, InitOptions, SubjectKey};

const POLICY: &str = r#"{
    "agent_id": "trading_bot_v2",
    "network_rules": { "allowed_hosts": ["api.exchange.com"] }
}"#;

pub(super) struct Fixture {
    _dir: tempfile::TempDir,
    pub ca: Authority,
    pub ca_der: Vec<u8>,
    pub agent_der: Vec<u8>,
    pub agent_serial: String,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture::named(&InitOptions::default().common_name)
    }

    pub fn named(common_name: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let options = InitOptions {
            common_name: common_name.into(),
            ..InitOptions::default()
        };
        let ca = Authority::init(dir.path(), &options).unwrap();
        Fixture::around(dir, ca)
    }

    /// A CA whose key is of another algorithm: `ca init` makes P-256 only,
    /// so its files are replaced and the directory reopened.
    pub fn with_key(alg: &'static SignatureAlgorithm) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        Authority::init(dir.path(), &InitOptions::default()).unwrap();
        let key = KeyPair::generate_for(alg).unwrap();
        let cert = ca_params("Other Key CA").self_signed(&key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("ca-key.pem"), key.serialize_pem()).unwrap();
        let ca = Authority::open(dir.path()).unwrap();
        Fixture::around(dir, ca)
    }

    fn around(dir: tempfile::TempDir, ca: Authority) -> Fixture {
        let ca_der = pem_to_der(ca.certificate_pem());
        let (agent_der, agent_serial) = issue(&ca);
        Fixture {
            _dir: dir,
            ca,
            ca_der,
            agent_der,
            agent_serial,
        }
    }

    pub fn request(&self, nonce: Option<&[u8]>) -> Vec<u8> {
        build_request(&self.agent_der, &self.ca_der, nonce).unwrap()
    }

    /// Answers `request` as of `now`, every serial of this CA having `status`.
    pub fn respond_at(&self, request: &[u8], status: CertStatus, now: OffsetDateTime) -> OcspReply {
        self.ca.respond_ocsp(
            request,
            &mut |_: &str| Ok::<_, AuthorityError>(status),
            &options(now),
        )
    }

    pub fn respond(&self, request: &[u8], status: CertStatus) -> OcspReply {
        self.respond_at(request, status, now())
    }
}

pub(super) fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
}

/// An OCSP signing certificate issued by `ca`, with or without the EKU
/// that makes it a delegated responder.
pub(super) fn delegate(
    ca: &Authority,
    ocsp_signing: bool,
    not_after: OffsetDateTime,
) -> (Vec<u8>, KeyPair) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Kakunin OCSP Responder");
    params.distinguished_name = dn;
    if ocsp_signing {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
    }
    params.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
    params.not_after = not_after;
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.der().to_vec(), key)
}

pub(super) fn issue(ca: &Authority) -> (Vec<u8>, String) {
    let policy = kakunin_policy::Policy::from_json_str("p.json", POLICY).unwrap();
    let issued = ca
        .issue_agent(&AgentRequest {
            agent_id: "trading_bot_v2",
            policy: &policy,
            key: SubjectKey::Generate,
            validity: crate::Validity::Days(1),
        })
        .unwrap();
    (pem_to_der(&issued.cert_pem), issued.serial_hex)
}

pub(super) fn pem_to_der(pem: &str) -> Vec<u8> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    pem.contents
}

pub(super) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

pub(super) fn options(now: OffsetDateTime) -> ResponseOptions {
    ResponseOptions {
        now,
        validity: Duration::hours(1),
    }
}

pub(super) fn status_of(der: &[u8]) -> ResponseStatus {
    ResponseStatus::from_x509(OcspResponse::from_der(der).unwrap().response_status)
}

pub(super) fn basic_of(der: &[u8]) -> BasicOcspResponse {
    let response = OcspResponse::from_der(der).unwrap();
    BasicOcspResponse::from_der(response.response_bytes.unwrap().response.as_bytes()).unwrap()
}

/// Re-wraps a (possibly altered) BasicOCSPResponse as a successful response.
pub(super) fn wrap(basic: BasicOcspResponse) -> Vec<u8> {
    OcspResponse::successful(basic).unwrap().to_der().unwrap()
}
