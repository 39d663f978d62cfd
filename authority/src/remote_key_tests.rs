//! A CA whose key is named by a reference (here `file:`, as `aws-kms:` and
//! `pkcs11:` keys are opened the same way): every signature checks out
//! against ca.pem, a foreign key is refused, old directories still open.

use std::fs;
use std::path::Path;
use std::time::Duration;

use rcgen::{KeyPair, PublicKeyData, SignatureAlgorithm};
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::ocsp::{build_request, verify_response, ResponseOptions};
use crate::{
    AgentRequest, Authority, AuthorityError, CertStatus, InitOptions, RevocationReason,
    RotateRequest, SubjectKey, Validity,
};

const POLICY: &str = r#"{"agent_id": "bot", "network_rules": {"allowed_hosts": ["a.example"]}}"#;

const KEY_TYPES: [&SignatureAlgorithm; 3] = [
    &rcgen::PKCS_ECDSA_P256_SHA256,
    &rcgen::PKCS_ECDSA_P384_SHA384,
    &rcgen::PKCS_ED25519,
];

/// A key file outside the CA directory, as an operator would keep one.
fn key_file(dir: &Path, alg: &'static SignatureAlgorithm) -> (KeyPair, String) {
    let key = KeyPair::generate_for(alg).unwrap();
    let path = dir.join("ca-private.pem");
    fs::write(&path, key.serialize_pem()).unwrap();
    (key, format!("file:{}", path.display()))
}

fn init_with(dir: &Path, reference: &str) -> Result<Authority, AuthorityError> {
    Authority::init(
        dir,
        &InitOptions {
            key: Some(reference.into()),
            ..InitOptions::default()
        },
    )
}

fn der(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .unwrap()
        .1
        .contents
}

/// The ring verifier for what the CA signs with, per its key type.
fn verifier(alg: &'static SignatureAlgorithm) -> &'static dyn VerificationAlgorithm {
    if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        &signature::ECDSA_P256_SHA256_ASN1
    } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        &signature::ECDSA_P384_SHA384_ASN1
    } else {
        &signature::ED25519
    }
}

fn issue(ca: &Authority) -> crate::Issued {
    let policy = kakunin_policy::Policy::from_json_str("p.json", POLICY).unwrap();
    ca.issue_agent(&AgentRequest {
        agent_id: "bot",
        policy: &policy,
        key: SubjectKey::Generate,
        validity: Validity::Days(1),
    })
    .unwrap()
}

#[test]
fn a_referenced_key_signs_certificates_crls_and_ocsp_that_verify_against_ca_pem() {
    for alg in KEY_TYPES {
        let outside = tempfile::tempdir().unwrap();
        let (key, reference) = key_file(outside.path(), alg);
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        init_with(&ca_dir, &reference).unwrap();
        assert!(!ca_dir.join("ca-key.pem").exists(), "the key stays outside");
        let settings = fs::read_to_string(ca_dir.join("ca.json")).unwrap();
        assert!(settings.contains(&reference), "{settings}");

        // Every later command opens the CA anew, through the reference.
        let ca = Authority::open(&ca_dir).unwrap();
        let ca_der = der(ca.certificate_pem());
        let (_, ca_cert) = X509Certificate::from_der(&ca_der).unwrap();
        assert_eq!(ca_cert.public_key().raw, key.subject_public_key_info());
        let ca_key = UnparsedPublicKey::new(
            verifier(alg),
            ca_cert.public_key().subject_public_key.data.to_vec(),
        );
        ca_key
            .verify(
                ca_cert.tbs_certificate.as_ref(),
                &ca_cert.signature_value.data,
            )
            .unwrap();

        let issued = issue(&ca);
        let agent_der = der(&issued.cert_pem);
        let (_, agent) = X509Certificate::from_der(&agent_der).unwrap();
        ca_key
            .verify(agent.tbs_certificate.as_ref(), &agent.signature_value.data)
            .unwrap();

        // Rotation signs through the same key; grace 0 revokes the old one.
        let rotated = ca
            .rotate(&RotateRequest {
                agent_id: "bot",
                key: None,
                validity: Validity::Hours(1),
                grace: Duration::ZERO,
            })
            .unwrap();
        let new_der = der(&rotated.issued.cert_pem);
        let (_, new) = X509Certificate::from_der(&new_der).unwrap();
        ca_key
            .verify(new.tbs_certificate.as_ref(), &new.signature_value.data)
            .unwrap();

        let crl = ca.crl(Duration::from_secs(3600)).unwrap();
        let (_, parsed) = CertificateRevocationList::from_der(&crl.der).unwrap();
        ca_key
            .verify(parsed.tbs_cert_list.as_ref(), &parsed.signature_value.data)
            .unwrap();

        let request = build_request(&agent_der, &ca_der, Some(&[7u8; 16])).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let reply = ca.respond_ocsp(
            &request,
            &mut |serial| ca.status(serial),
            &ResponseOptions {
                now,
                validity: time::Duration::hours(1),
            },
        );
        let verified = verify_response(
            &reply.der,
            &agent_der,
            &ca_der,
            now.unix_timestamp(),
            Some(&[7u8; 16]),
        )
        .unwrap();

        assert_eq!(
            verified.status,
            CertStatus::Revoked {
                revoked_at: rotated.old_revoked_at,
                reason: RevocationReason::Superseded
            }
        );
    }
}

#[test]
fn a_key_that_is_not_ca_pems_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    let (_, reference) = key_file(outside.path(), &rcgen::PKCS_ECDSA_P256_SHA256);
    let dir = tempfile::tempdir().unwrap();
    init_with(dir.path(), &reference).unwrap();
    // The file now holds another key of the same type.
    let stranger = KeyPair::generate().unwrap();
    fs::write(
        outside.path().join("ca-private.pem"),
        stranger.serialize_pem(),
    )
    .unwrap();
    let err = Authority::open(dir.path()).unwrap_err();
    assert!(matches!(err, AuthorityError::KeyMismatch { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("does not belong") && text.contains("ca.json") && text.contains("file:"),
        "{text}"
    );
    // A key of another type is refused the same way.
    let other = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    fs::write(outside.path().join("ca-private.pem"), other.serialize_pem()).unwrap();
    let err = Authority::open(dir.path()).unwrap_err();
    assert!(matches!(err, AuthorityError::KeyMismatch { .. }), "{err}");
}

#[test]
fn a_directory_made_before_key_references_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    Authority::init(dir.path(), &InitOptions::default()).unwrap();
    assert!(dir.path().join("ca-key.pem").exists());
    // ca.json exactly as older versions wrote it: no "key".
    let old = r#"{
  "trust_domain": "kakunin.local",
  "scope_oid": "1.3.6.1.4.1.32473.1.1",
  "public_url": "http://127.0.0.1:8180"
}"#;
    fs::write(dir.path().join("ca.json"), old).unwrap();
    let ca = Authority::open(dir.path()).unwrap();
    assert_eq!(ca.settings().key, None);
    let issued = issue(&ca);
    let ca_der = der(ca.certificate_pem());
    let agent_der = der(&issued.cert_pem);
    let request = build_request(&agent_der, &ca_der, None).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let reply = ca.respond_ocsp(
        &request,
        &mut |serial| ca.status(serial),
        &ResponseOptions {
            now,
            validity: time::Duration::hours(1),
        },
    );
    let verified =
        verify_response(&reply.der, &agent_der, &ca_der, now.unix_timestamp(), None).unwrap();
    assert_eq!(verified.status, CertStatus::Good);
    // Without its ca-key.pem, the error says where the key was expected.
    fs::remove_file(dir.path().join("ca-key.pem")).unwrap();
    let err = Authority::open(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("ca-key.pem") && err.contains("names no CA key"),
        "{err}"
    );
}

#[test]
fn hostile_key_fields_and_references_get_clear_errors() {
    let outside = tempfile::tempdir().unwrap();
    let (_, reference) = key_file(outside.path(), &rcgen::PKCS_ECDSA_P256_SHA256);
    let dir = tempfile::tempdir().unwrap();
    init_with(dir.path(), &reference).unwrap();
    let path = dir.path().join("ca.json");
    let with_key = |key: &str| {
        format!(r#"{{"trust_domain": "kakunin.local", "scope_oid": "1.2.3", "key": {key}}}"#)
    };
    for (key, expected) in [
        ("42", "invalid type"),
        (r#""vault:secret/x""#, "unknown scheme"),
        (r#""""#, "empty key reference"),
        (r#""file:/nonexistent/k.pem""#, "cannot read key file"),
        (r#""file:not-here.pem""#, "not-here.pem"),
    ] {
        fs::write(&path, with_key(key)).unwrap();
        let err = Authority::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("ca.json") && err.contains(expected),
            "{key}: {err}"
        );
    }
    // A relative file path in ca.json is taken relative to the CA directory.
    fs::copy(
        outside.path().join("ca-private.pem"),
        dir.path().join("moved.pem"),
    )
    .unwrap();
    fs::write(&path, with_key(r#""file:moved.pem""#)).unwrap();
    Authority::open(dir.path()).unwrap();

    // A bad reference at init leaves nothing behind.
    let fresh = tempfile::tempdir().unwrap();
    let target = fresh.path().join("ca");
    for bad in ["vault:x", "file:/nonexistent/k.pem", "pkcs11:token=none"] {
        let err = init_with(&target, bad).unwrap_err().to_string();
        assert!(err.contains("key"), "{bad}: {err}");
        assert!(!target.exists(), "{bad}: {target:?} was created");
    }
}

#[test]
fn a_relative_key_path_is_recorded_absolute() {
    let recorded = crate::key_location::recorded_form("keys/ca.pem").unwrap();
    let expected = std::env::current_dir().unwrap().join("keys/ca.pem");
    assert_eq!(recorded, format!("file:{}", expected.display()));
    assert_eq!(
        crate::key_location::recorded_form(" aws-kms:arn:aws:kms:eu-west-1:1:key/k ").unwrap(),
        "aws-kms:arn:aws:kms:eu-west-1:1:key/k"
    );
    assert!(crate::key_location::holds_secret(
        "pkcs11:token=ca;object=root?module-path=/x.so&pin-value=1234"
    ));
    assert!(!crate::key_location::holds_secret(
        "pkcs11:token=ca;object=root?pin-source=file:/run/pin"
    ));
}
