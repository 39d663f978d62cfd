use der::asn1::{Any, ObjectIdentifier};
use der::{Decode, Encode};
use time::Duration;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_ocsp::{OcspRequest, Request, ResponderId, TbsRequest};

use super::*;
use crate::ocsp::certid::{HashAlg, IssuerHashes};
use crate::ocsp::{verify_response, OcspError, MAX_REQUESTS};
use crate::RevocationReason;

fn verify(f: &Fixture, response: &[u8]) -> Result<crate::ocsp::VerifiedResponse, OcspError> {
    verify_response(
        response,
        &f.agent_der,
        &f.ca_der,
        now().unix_timestamp(),
        None,
    )
}

/// A request for the fixture's agent with the given CertID hash algorithm.
fn request_with(f: &Fixture, alg: HashAlg, copies: usize) -> Vec<u8> {
    let decoded = OcspRequest::from_der(&f.request(None)).unwrap();
    let serial = decoded.tbs_request.request_list[0]
        .req_cert
        .serial_number
        .clone();
    let issuer = x509_parser::parse_x509_certificate(&f.ca_der).unwrap().1;
    let cert_id = IssuerHashes::of(&issuer).cert_id(alg, serial).unwrap();
    requests(vec![cert_id; copies])
}

fn requests(cert_ids: Vec<x509_ocsp::CertId>) -> Vec<u8> {
    OcspRequest {
        tbs_request: TbsRequest {
            request_list: cert_ids
                .into_iter()
                .map(|req_cert| Request {
                    req_cert,
                    single_request_extensions: None,
                })
                .collect(),
            ..TbsRequest::default()
        },
        optional_signature: None,
    }
    .to_der()
    .unwrap()
}

#[test]
fn good_revoked_and_unknown_round_trip() {
    let f = Fixture::new();
    let revoked_at = now().unix_timestamp() - 3600;
    let at = now().replace_nanosecond(123_456_789).unwrap();
    for status in [
        CertStatus::Good,
        CertStatus::Revoked {
            revoked_at,
            reason: RevocationReason::KeyCompromise,
        },
        CertStatus::Revoked {
            revoked_at,
            reason: RevocationReason::PrivilegeWithdrawn,
        },
        CertStatus::Unknown,
    ] {
        let mut asked = Vec::new();
        let reply = f.ca.respond_ocsp(
            &f.request(None),
            &mut |serial: &str| {
                asked.push(serial.to_string());
                Ok(status)
            },
            &options(at),
        );
        assert_eq!(asked, vec![f.agent_serial.clone()]);
        assert_eq!(reply.outcome.status, ResponseStatus::Successful);
        assert_eq!(reply.outcome.answers.len(), 1);
        assert_eq!(reply.outcome.answers[0].serial, f.agent_serial);
        assert_eq!(reply.outcome.answers[0].status, status);
        assert!(reply.outcome.answers[0].this_ca);

        let verified = verify(&f, &reply.der).unwrap();
        assert_eq!(verified.status, status);
        // Whole seconds: the fraction is dropped, not rounded.
        assert_eq!(verified.produced_at, at.unix_timestamp());
        assert_eq!(verified.this_update, at.unix_timestamp());
        assert_eq!(verified.next_update, Some(at.unix_timestamp() + 3600));
    }
}

#[test]
fn response_follows_the_ca_key_and_names_it_by_key_hash() {
    let f = Fixture::new();
    let basic = basic_of(&f.respond(&f.request(None), CertStatus::Good).der);
    assert_eq!(
        basic.signature_algorithm.oid.to_string(),
        "1.2.840.10045.4.3.2"
    );
    assert_eq!(basic.signature_algorithm.parameters, None);
    assert!(basic.certs.is_none());
    let issuer = x509_parser::parse_x509_certificate(&f.ca_der).unwrap().1;
    let key_hash = HashAlg::Sha1.digest(&issuer.public_key().subject_public_key.data);
    match basic.tbs_response_data.responder_id {
        ResponderId::ByKey(hash) => assert_eq!(hash.as_bytes(), key_hash.as_slice()),
        other => panic!("responder named by {other:?}"),
    }
}

#[test]
fn other_ca_key_algorithms_sign_verifiable_responses() {
    for (alg, oid) in [
        (&rcgen::PKCS_ECDSA_P384_SHA384, "1.2.840.10045.4.3.3"),
        (&rcgen::PKCS_ED25519, "1.3.101.112"),
    ] {
        let f = Fixture::with_key(alg);
        let reply = f.respond(&f.request(None), CertStatus::Good);
        assert_eq!(
            basic_of(&reply.der).signature_algorithm.oid.to_string(),
            oid
        );
        assert_eq!(verify(&f, &reply.der).unwrap().status, CertStatus::Good);
    }
}

#[test]
fn nonce_is_echoed_and_a_foreign_one_refused() {
    let f = Fixture::new();
    let nonce = [7u8; 16];
    let reply = f.respond(&f.request(Some(&nonce)), CertStatus::Good);
    let at = now().unix_timestamp();
    let ok = verify_response(&reply.der, &f.agent_der, &f.ca_der, at, Some(&nonce)).unwrap();
    assert_eq!(ok.status, CertStatus::Good);
    assert!(ok.nonce_echoed);
    let err = verify_response(&reply.der, &f.agent_der, &f.ca_der, at, Some(&[8u8; 16]));
    assert!(matches!(err, Err(OcspError::NonceMismatch)), "{err:?}");
    // A responder may ignore the nonce; the missing echo is accepted, and
    // reported, so that a caller that needs it can refuse.
    let plain = f.respond(&f.request(None), CertStatus::Good);
    let unechoed = verify_response(&plain.der, &f.agent_der, &f.ca_der, at, Some(&nonce)).unwrap();
    assert!(!unechoed.nonce_echoed);
}

#[test]
fn refusals_are_malformed_request() {
    let f = Fixture::new();
    let good = f.request(None);
    let mut trailing = good.clone();
    trailing.push(0);
    let empty = requests(Vec::new());
    let too_many = request_with(&f, HashAlg::Sha1, MAX_REQUESTS + 1);
    // [0] EXPLICIT version v2 (1), which RFC 6960 does not define.
    let v2 = {
        let list = OcspRequest::from_der(&good)
            .unwrap()
            .tbs_request
            .request_list;
        let mut tbs = vec![0xa0, 0x03, 0x02, 0x01, 0x01];
        tbs.extend(list.to_der().unwrap());
        let tbs = der::asn1::AnyRef::new(der::Tag::Sequence, &tbs)
            .unwrap()
            .to_der()
            .unwrap();
        der::asn1::AnyRef::new(der::Tag::Sequence, &tbs)
            .unwrap()
            .to_der()
            .unwrap()
    };
    for (what, request) in [
        ("garbage", b"GET / HTTP/1.1\r\n".to_vec()),
        ("nothing", Vec::new()),
        ("truncated", good[..good.len() - 3].to_vec()),
        ("trailing byte", trailing),
        ("empty list", empty),
        ("33 requests", too_many),
        ("version 2", v2),
    ] {
        let reply = f.respond(&request, CertStatus::Good);
        assert_eq!(
            reply.outcome.status,
            ResponseStatus::MalformedRequest,
            "{what}"
        );
        assert!(reply.outcome.detail.is_some(), "{what}");
        assert_eq!(reply.der, [0x30, 0x03, 0x0a, 0x01, 0x01], "{what}");
        let err = verify(&f, &reply.der).unwrap_err();
        assert!(err.to_string().contains("malformedRequest"), "{err}");
    }
    let most = request_with(&f, HashAlg::Sha1, MAX_REQUESTS);
    let reply = f.respond(&most, CertStatus::Good);
    assert_eq!(reply.outcome.status, ResponseStatus::Successful);
    assert_eq!(reply.outcome.answers.len(), MAX_REQUESTS);
}

#[test]
fn another_issuers_cert_id_is_unauthorized() {
    let f = Fixture::new();
    let other = Fixture::new();
    let mut lookups = 0;
    let reply = f.ca.respond_ocsp(
        &other.request(None),
        &mut |_: &str| {
            lookups += 1;
            Ok(CertStatus::Good)
        },
        &options(now()),
    );
    assert_eq!(reply.outcome.status, ResponseStatus::Unauthorized);
    assert_eq!(lookups, 0);
    assert_eq!(status_of(&reply.der), ResponseStatus::Unauthorized);
    let err = verify(&other, &reply.der).unwrap_err();
    assert!(matches!(
        err,
        OcspError::Unsuccessful {
            status: ResponseStatus::Unauthorized
        }
    ));
}

#[test]
fn foreign_and_unknown_hash_entries_are_answered_unknown() {
    let f = Fixture::new();
    let other = Fixture::new();
    let ours = OcspRequest::from_der(&f.request(None))
        .unwrap()
        .tbs_request
        .request_list[0]
        .req_cert
        .clone();
    let theirs = OcspRequest::from_der(&other.request(None))
        .unwrap()
        .tbs_request
        .request_list[0]
        .req_cert
        .clone();
    let mut md5 = ours.clone();
    md5.hash_algorithm = AlgorithmIdentifierOwned {
        oid: ObjectIdentifier::new_unwrap("1.2.840.113549.2.5"),
        parameters: Some(Any::null()),
    };
    let reply = f.respond(&requests(vec![theirs, ours, md5.clone()]), CertStatus::Good);
    assert_eq!(reply.outcome.status, ResponseStatus::Successful);
    let answers: Vec<_> = reply
        .outcome
        .answers
        .iter()
        .map(|a| (a.status, a.this_ca))
        .collect();
    assert_eq!(
        answers,
        vec![
            (CertStatus::Unknown, false),
            (CertStatus::Good, true),
            (CertStatus::Unknown, false)
        ]
    );
    assert_eq!(verify(&f, &reply.der).unwrap().status, CertStatus::Good);
    // An unknown hash algorithm alone names nobody.
    let reply = f.respond(&requests(vec![md5]), CertStatus::Good);
    assert_eq!(reply.outcome.status, ResponseStatus::Unauthorized);
}

#[test]
fn sha2_cert_ids_are_answered() {
    let f = Fixture::new();
    for alg in [HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512] {
        let reply = f.respond(&request_with(&f, alg, 1), CertStatus::Good);
        assert_eq!(reply.outcome.status, ResponseStatus::Successful, "{alg:?}");
        let basic = basic_of(&reply.der);
        let cert_id = &basic.tbs_response_data.responses[0].cert_id;
        assert_eq!(
            cert_id.hash_algorithm.oid,
            alg.oid(),
            "answer echoes the CertID"
        );
        assert_eq!(verify(&f, &reply.der).unwrap().status, CertStatus::Good);
    }
}

#[test]
fn lookup_failure_is_internal_error() {
    let f = Fixture::new();
    let reply = f.ca.respond_ocsp(
        &f.request(None),
        &mut |_: &str| {
            Err(AuthorityError::Invalid {
                what: "database",
                reason: "disk I/O error".into(),
            })
        },
        &options(now()),
    );
    assert_eq!(reply.outcome.status, ResponseStatus::InternalError);
    assert!(reply.outcome.detail.unwrap().contains("disk I/O error"));
    assert_eq!(status_of(&reply.der), ResponseStatus::InternalError);
}

#[test]
fn non_positive_validity_is_internal_error() {
    let f = Fixture::new();
    let reply = f.ca.respond_ocsp(
        &f.request(None),
        &mut |_: &str| Ok(CertStatus::Good),
        &ResponseOptions {
            now: now(),
            validity: Duration::ZERO,
        },
    );
    assert_eq!(reply.outcome.status, ResponseStatus::InternalError);
}

#[test]
fn oversized_nonces_are_not_echoed() {
    let f = Fixture::new();
    let mut request = OcspRequest::from_der(&f.request(Some(&[1u8; 16]))).unwrap();
    let extension = &mut request.tbs_request.request_extensions.as_mut().unwrap()[0];
    extension.extn_value = der::asn1::OctetString::new(vec![4u8; 4096]).unwrap();
    let reply = f.respond(&request.to_der().unwrap(), CertStatus::Good);
    assert_eq!(reply.outcome.status, ResponseStatus::Successful);
    assert!(basic_of(&reply.der)
        .tbs_response_data
        .response_extensions
        .is_none());
}
