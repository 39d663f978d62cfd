use der::asn1::OctetString;
use der::{Decode, Encode};
use time::Duration;
use x509_cert::ext::Extension;
use x509_ocsp::{OcspRequest, ResponderId};

use super::*;
use crate::ocsp::certid::HashAlg;
use crate::ocsp::respond::{sign_response, Signer};
use crate::ocsp::{ocsp_url, verify_response, OcspError};
use crate::RevocationReason;

fn verify_at(f: &Fixture, response: &[u8], at: i64) -> Result<CertStatus, OcspError> {
    verify_response(response, &f.agent_der, &f.ca_der, at, None).map(|v| v.status)
}

fn verify_now(f: &Fixture, response: &[u8]) -> Result<CertStatus, OcspError> {
    verify_at(f, response, now().unix_timestamp())
}

/// A good answer for the fixture's agent, signed as `signer` says.
fn signed_by<K: rcgen::SigningKey>(
    f: &Fixture,
    signer: &Signer<'_, K>,
    extra: Option<Extension>,
) -> Vec<u8> {
    let request = OcspRequest::from_der(&f.request(None)).unwrap();
    let cert_id = request.tbs_request.request_list[0].req_cert.clone();
    sign_response(
        signer,
        std::iter::once((cert_id, CertStatus::Good)),
        extra,
        &options(now()),
    )
    .unwrap()
}

fn by_key(key: &impl rcgen::PublicKeyData) -> ResponderId {
    ResponderId::ByKey(OctetString::new(HashAlg::Sha1.digest(key.der_bytes())).unwrap())
}

#[test]
fn tampered_signature_or_content_is_refused() {
    let f = Fixture::new();
    let der = f.respond(&f.request(None), CertStatus::Good).der;
    let mut flipped = der.clone();
    *flipped.last_mut().unwrap() ^= 0x01;
    let err = verify_now(&f, &flipped).unwrap_err();
    assert!(matches!(err, OcspError::BadSignature { .. }), "{err}");

    // Turning "revoked" into "good" keeps the signature but breaks it.
    let revoked = CertStatus::Revoked {
        revoked_at: 1_700_000_000,
        reason: RevocationReason::KeyCompromise,
    };
    let mut basic = basic_of(&f.respond(&f.request(None), revoked).der);
    basic.tbs_response_data.responses[0].cert_status = x509_ocsp::CertStatus::good();
    let err = verify_now(&f, &wrap(basic)).unwrap_err();
    assert!(
        matches!(err, OcspError::BadSignature { signer: "issuer" }),
        "{err}"
    );
}

#[test]
fn a_response_signed_by_another_ca_is_refused() {
    let f = Fixture::new();
    let other = Fixture::new();
    // The other CA answers with our CertID but signs with its own key.
    let mut basic = basic_of(&other.respond(&other.request(None), CertStatus::Good).der);
    let ours = basic_of(&f.respond(&f.request(None), CertStatus::Good).der);
    basic.tbs_response_data.responses = ours.tbs_response_data.responses.clone();
    let err = verify_now(&f, &wrap(basic)).unwrap_err();
    assert!(matches!(err, OcspError::UnknownResponder), "{err}");
}

#[test]
fn stale_and_future_responses_are_refused() {
    let f = Fixture::new();
    let request = f.request(None);
    let old = f.respond_at(&request, CertStatus::Good, now() - Duration::hours(2));
    let err = verify_now(&f, &old.der).unwrap_err();
    assert!(matches!(err, OcspError::Stale { .. }), "{err}");
    assert!(err.to_string().contains("stale"), "{err}");
    // Within the skew allowance it is still fresh.
    let edge = f.respond_at(&request, CertStatus::Good, now() - Duration::minutes(63));
    verify_now(&f, &edge.der).unwrap();

    let future = f.respond_at(&request, CertStatus::Good, now() + Duration::minutes(10));
    let err = verify_now(&f, &future.der).unwrap_err();
    assert!(matches!(err, OcspError::NotYetValid { .. }), "{err}");
}

#[test]
fn an_answer_about_another_serial_is_refused() {
    let f = Fixture::new();
    let (sibling, sibling_serial) = issue(&f.ca);
    let reply = f.respond(&f.request(None), CertStatus::Good);
    let err = verify_response(
        &reply.der,
        &sibling,
        &f.ca_der,
        now().unix_timestamp(),
        None,
    )
    .unwrap_err();
    match err {
        OcspError::NoMatchingResponse { serial } => assert_eq!(serial, sibling_serial),
        other => panic!("{other}"),
    }
}

#[test]
fn delegated_responder_with_ocsp_signing_is_accepted() {
    let f = Fixture::new();
    let (cert, key) = delegate(&f.ca, true, now() + Duration::days(1));
    let signer = Signer {
        key: &key,
        responder_id: by_key(&key),
        certs: Some(vec![x509_cert::Certificate::from_der(&cert).unwrap()]),
    };
    assert_eq!(
        verify_now(&f, &signed_by(&f, &signer, None)).unwrap(),
        CertStatus::Good
    );

    // Named by subject instead of key hash, as OpenSSL does by default.
    let name = x509_cert::Certificate::from_der(&cert)
        .unwrap()
        .tbs_certificate
        .subject;
    let signer = Signer {
        responder_id: ResponderId::ByName(name),
        ..signer
    };
    assert_eq!(
        verify_now(&f, &signed_by(&f, &signer, None)).unwrap(),
        CertStatus::Good
    );
}

#[test]
fn delegated_responders_the_issuer_did_not_authorise_are_refused() {
    let f = Fixture::new();
    let other = Fixture::named("Another CA");
    let namesake = Fixture::new();
    let tomorrow = now() + Duration::days(1);
    let cases = [
        ("id-kp-OCSPSigning", delegate(&f.ca, false, tomorrow)),
        (
            "was issued by \"CN=Another CA",
            delegate(&other.ca, true, tomorrow),
        ),
        (
            "signature does not verify",
            delegate(&namesake.ca, true, tomorrow),
        ),
        (
            "valid from",
            delegate(&f.ca, true, now() - Duration::minutes(30)),
        ),
    ];
    for (expected, (cert, key)) in cases {
        let signer = Signer {
            key: &key,
            responder_id: by_key(&key),
            certs: Some(vec![x509_cert::Certificate::from_der(&cert).unwrap()]),
        };
        let err = verify_now(&f, &signed_by(&f, &signer, None)).unwrap_err();
        assert!(matches!(err, OcspError::ResponderNotAuthorized(_)), "{err}");
        assert!(err.to_string().contains(expected), "{expected}: {err}");
    }
    // A delegate that does not include its certificate cannot be checked.
    let (_, key) = delegate(&f.ca, true, now() + Duration::days(1));
    let signer = Signer {
        key: &key,
        responder_id: by_key(&key),
        certs: None,
    };
    let err = verify_now(&f, &signed_by(&f, &signer, None)).unwrap_err();
    assert!(matches!(err, OcspError::UnknownResponder), "{err}");
}

#[test]
fn unknown_critical_extensions_are_refused() {
    let f = Fixture::new();
    let signer = Signer {
        key: f.ca.issuer.key(),
        responder_id: by_key(f.ca.issuer.key()),
        certs: None,
    };
    let extension = |critical| Extension {
        extn_id: der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.32473.9"),
        critical,
        extn_value: OctetString::new(vec![5, 0]).unwrap(),
    };
    verify_now(&f, &signed_by(&f, &signer, Some(extension(false)))).unwrap();
    let err = verify_now(&f, &signed_by(&f, &signer, Some(extension(true)))).unwrap_err();
    assert!(
        matches!(err, OcspError::UnsupportedCriticalExtension { .. }),
        "{err}"
    );
}

#[test]
fn build_request_checks_its_inputs() {
    let f = Fixture::new();
    let other = Fixture::named("Another CA");
    for len in [0, 15, 33] {
        let err = build_request(&f.agent_der, &f.ca_der, Some(&vec![1; len])).unwrap_err();
        assert!(matches!(err, OcspError::NonceLength { .. }), "{err}");
    }
    let err = build_request(&f.agent_der, &other.ca_der, None).unwrap_err();
    assert!(matches!(err, OcspError::IssuerMismatch { .. }), "{err}");
    let err = build_request(f.ca.certificate_pem().as_bytes(), &f.ca_der, None).unwrap_err();
    assert!(err.to_string().contains("not PEM"), "{err}");

    let request = OcspRequest::from_der(&f.request(Some(&[9u8; 32]))).unwrap();
    let cert_id = &request.tbs_request.request_list[0].req_cert;
    assert_eq!(cert_id.hash_algorithm.oid, HashAlg::Sha1.oid());
    assert_eq!(
        crate::serial_hex(cert_id.serial_number.as_bytes()),
        f.agent_serial
    );
    let nonce = request.nonce().unwrap();
    assert_eq!(nonce.0.as_bytes(), &[9u8; 32]);
}

#[test]
fn verify_response_checks_the_certificate_pair() {
    let f = Fixture::new();
    let der = f.respond(&f.request(None), CertStatus::Good).der;
    let at = now().unix_timestamp();
    let other = Fixture::named("Another CA");
    let err = verify_response(&der, &f.agent_der, &other.ca_der, at, None).unwrap_err();
    assert!(matches!(err, OcspError::IssuerMismatch { .. }), "{err}");
    // Same name, other key: the certificate's signature gives it away.
    let namesake = Fixture::new();
    let err = verify_response(&der, &f.agent_der, &namesake.ca_der, at, None).unwrap_err();
    assert!(matches!(err, OcspError::NotIssuedBy(_)), "{err}");
    let err = verify_response(&der, b"junk", &f.ca_der, at, None).unwrap_err();
    assert!(
        matches!(
            err,
            OcspError::Certificate {
                which: "certificate",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn ocsp_url_reads_the_aia_extension() {
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax};
    let aia = AuthorityInfoAccessSyntax(vec![
        AccessDescription {
            // id-ad-caIssuers comes first to show the method is checked.
            access_method: der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.2"),
            access_location: GeneralName::UniformResourceIdentifier(
                der::asn1::Ia5String::new("http://ca.example/ca.der").unwrap(),
            ),
        },
        AccessDescription {
            access_method: der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1"),
            access_location: GeneralName::UniformResourceIdentifier(
                der::asn1::Ia5String::new("http://ca.example:8080/ocsp").unwrap(),
            ),
        },
    ]);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(vec!["leaf.example".to_string()]).unwrap();
    params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 5, 5, 7, 1, 1],
        aia.to_der().unwrap(),
    )];
    let with = params.self_signed(&key).unwrap();
    assert_eq!(
        ocsp_url(with.der()).as_deref(),
        Some("http://ca.example:8080/ocsp")
    );
    let without = CertificateParams::new(vec!["leaf.example".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    assert_eq!(ocsp_url(without.der()), None);
    assert_eq!(ocsp_url(b"\x30\x03\x02\x01\x01"), None);
}
