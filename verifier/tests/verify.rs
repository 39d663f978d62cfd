//! Verifier-level cases that `kakunin gateway` cannot reach end to end,
//! because its TLS layer (rustls-webpki, mTLS required) refuses them during
//! the handshake: an expired or not yet valid certificate, and a
//! certificate from another CA. Receivers that embed the verifier behind
//! TLS without client authentication rely on these checks, with the
//! certificate in `X-Agent-Certificate` or in `peer_chain`. Also batch
//! signatures (one key signature over a Merkle tree of requests), whose
//! proofs the tests here take apart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use kakunin_authority::{AgentRequest, Authority, InitOptions, Issued, SubjectKey, Validity};
use kakunin_signer::httpsig::batch::{MerkleTree, BATCH_PROOF};
use kakunin_signer::httpsig::{
    new_nonce, prepare_batch_request, sign_request, BatchSignature, CertificateHeader,
    RequestSigner, TargetUri,
};
use kakunin_signer::{FileKey, KeyBackend};
use kakunin_verifier::{Outcome, Reason, RevocationMode, Verifier, VerifierConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

const POLICY: &str = r#"{
  "agent_id": "trading_bot_v2",
  "network_rules": { "allowed_hosts": ["api.exchange.com"] },
  "actions": [{
    "name": "submit_trade",
    "match": { "method": "POST", "path": "/v1/trades" },
    "body": { "/market": { "in": ["EUR_USD", "GBP_USD"] }, "/size": { "max": 50000 } }
  }]
}"#;
const BODY: &[u8] = br#"{"market":"EUR_USD","size":45000}"#;

struct Ca {
    _dir: tempfile::TempDir,
    authority: Authority,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let dir = tempfile::tempdir().unwrap();
        let authority = Authority::init(
            &dir.path().join("ca"),
            &InitOptions {
                common_name: name.into(),
                ..InitOptions::default()
            },
        )
        .unwrap();
        Ca {
            _dir: dir,
            authority,
        }
    }

    fn der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.authority.certificate_pem().as_bytes()).unwrap()
    }

    /// An agent certificate valid from 5 minutes ago for one hour.
    fn issue(&self) -> Issued {
        let policy = kakunin_policy::Policy::from_json_str("p", POLICY).unwrap();
        self.authority
            .issue_agent(&AgentRequest {
                agent_id: policy.agent_id(),
                policy: &policy,
                key: SubjectKey::Generate,
                validity: Validity::Hours(1),
            })
            .unwrap()
    }
}

/// Revocation off: these cases are about the certificate itself.
fn verifier(anchor: &Ca) -> Verifier {
    let mut config = VerifierConfig::new(vec![anchor.der()]);
    config.revocation = RevocationMode::Off;
    Verifier::new(config).unwrap()
}

/// The agent's key and leaf certificate from `issued`, the certificate also
/// as signed requests carry it.
fn agent(issued: &Issued) -> (FileKey, CertificateDer<'static>, CertificateHeader) {
    let leaf = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
    let key = FileKey::from_pem("agent", issued.key_pem.as_deref().unwrap().as_bytes()).unwrap();
    let header = CertificateHeader::new(&leaf).unwrap();
    (key, leaf, header)
}

/// What signing one trade at `at` needs, with a fresh nonce.
fn signer<'a>(
    key: &'a FileKey,
    issued: &'a Issued,
    certificate: &'a CertificateHeader,
    at: SystemTime,
) -> RequestSigner<'a> {
    RequestSigner {
        key,
        keyid: &issued.serial_hex,
        certificate,
        created_ms: at.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64,
        lifetime_secs: 60,
        nonce: new_nonce().unwrap(),
    }
}

/// A trade signed by `issued`'s key at `at`; the certificate travels in
/// `X-Agent-Certificate`.
fn signed_at(issued: &Issued, at: SystemTime) -> (HeaderMap, CertificateDer<'static>) {
    let (key, leaf, certificate) = agent(issued);
    let mut headers = HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    sign_request(
        &mut headers,
        "POST",
        &TargetUri::new("https", "api.exchange.com", "/v1/trades"),
        BODY,
        &signer(&key, issued, &certificate, at),
    )
    .unwrap();
    (headers, leaf)
}

/// `n` trades signed as one batch at `at`, as the proxy does with
/// `[signing] batch = true`: one key signature over their tree.
fn batch_signed_at(issued: &Issued, n: usize, at: SystemTime) -> Vec<HeaderMap> {
    let (key, _, certificate) = agent(issued);
    let mut prepared = Vec::new();
    for _ in 0..n {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        let unsigned = prepare_batch_request(
            &mut headers,
            "POST",
            &TargetUri::new("https", "api.exchange.com", "/v1/trades"),
            BODY,
            &signer(&key, issued, &certificate, at),
        )
        .unwrap();
        prepared.push((headers, unsigned));
    }
    let alg = prepared[0].1.alg();
    let leaves = prepared.iter().map(|(_, u)| u.leaf_hash()).collect();
    let tree = MerkleTree::new(alg, leaves).unwrap();
    let der = key
        .sign(prepared[0].1.scheme(), &tree.signed_message())
        .unwrap();
    let signature = BatchSignature::new(&key, alg, der).unwrap();
    prepared
        .into_iter()
        .enumerate()
        .map(|(i, (mut headers, unsigned))| {
            let proof = tree.proof(i).unwrap();
            unsigned
                .finish_batch(&mut headers, &signature, &proof)
                .unwrap();
            headers
        })
        .collect()
}

fn verify(
    verifier: &Verifier,
    headers: &HeaderMap,
    peer_chain: &[CertificateDer<'_>],
    now: SystemTime,
) -> Outcome {
    verifier.verify(
        &kakunin_verifier::Request {
            method: "POST",
            scheme: "https",
            authority: "api.exchange.com",
            path_and_query: "/v1/trades",
            headers,
            body: BODY,
            peer_chain,
        },
        now,
    )
}

fn reason(outcome: Outcome) -> Reason {
    match outcome {
        Outcome::Rejected(rejection) => rejection.reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn a_fresh_certificate_in_the_header_is_accepted() {
    let ca = Ca::new("Agents CA");
    let issued = ca.issue();
    let now = SystemTime::now();
    let (headers, _) = signed_at(&issued, now);
    match verify(&verifier(&ca), &headers, &[], now) {
        Outcome::Accepted(verdict) => {
            assert_eq!(verdict.agent.agent_id, "trading_bot_v2");
            assert_eq!(verdict.action.as_deref(), Some("submit_trade"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_expired_certificate_is_refused() {
    let ca = Ca::new("Agents CA");
    let issued = ca.issue();
    // Two hours on, the one-hour certificate has expired; the signature
    // itself is fresh at that time.
    let later = SystemTime::now() + Duration::from_secs(2 * 3600);
    let (headers, leaf) = signed_at(&issued, later);
    let verifier = verifier(&ca);
    for chain in [vec![], vec![leaf]] {
        let reason = reason(verify(&verifier, &headers, &chain, later));
        assert_eq!(
            reason,
            Reason::CertificateExpired,
            "peer chain {}",
            chain.len()
        );
        assert_eq!(
            (reason.code(), reason.http_status()),
            ("certificate_expired", 401)
        );
        assert_eq!(reason.summary(), "Invalid certificate chain");
    }
}

#[test]
fn a_certificate_not_yet_valid_is_refused() {
    let ca = Ca::new("Agents CA");
    let issued = ca.issue();
    // The certificate starts 5 minutes before issuance; an hour earlier it
    // was not valid yet.
    let earlier = SystemTime::now() - Duration::from_secs(3600);
    let (headers, _) = signed_at(&issued, earlier);
    let reason = reason(verify(&verifier(&ca), &headers, &[], earlier));
    assert_eq!(reason, Reason::CertificateNotYetValid);
    assert_eq!(reason.code(), "certificate_not_yet_valid");
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let trusted = Ca::new("Agents CA");
    let other = Ca::new("Other CA");
    let issued = other.issue();
    let now = SystemTime::now();
    let (headers, leaf) = signed_at(&issued, now);
    let verifier = verifier(&trusted);
    for chain in [vec![], vec![leaf]] {
        let reason = reason(verify(&verifier, &headers, &chain, now));
        assert_eq!(reason, Reason::ChainInvalid, "peer chain {}", chain.len());
        assert_eq!(
            (reason.code(), reason.http_status()),
            ("certificate_chain_invalid", 401)
        );
    }
}

#[test]
fn every_request_of_a_batch_is_accepted_once() {
    let ca = Ca::new("Agents CA");
    let issued = ca.issue();
    let now = SystemTime::now();
    let batch = batch_signed_at(&issued, 5, now);
    let verifier = verifier(&ca);
    for headers in &batch {
        let signature = headers.get("signature").unwrap();
        assert_eq!(
            signature,
            batch[0].get("signature").unwrap(),
            "one signature"
        );
        match verify(&verifier, headers, &[], now) {
            Outcome::Accepted(verdict) => {
                assert_eq!(verdict.alg, "ecdsa-p256-sha256");
                assert_eq!(verdict.action.as_deref(), Some("submit_trade"));
            }
            other => panic!("{other:?}"),
        }
    }
    // Sharing the signature does not share the nonce: each is fresh once.
    let reason = reason(verify(&verifier, &batch[2], &[], now));
    assert_eq!(reason, Reason::Replayed);
}

#[test]
fn a_batched_request_with_another_requests_proof_is_refused() {
    let ca = Ca::new("Agents CA");
    let issued = ca.issue();
    let now = SystemTime::now();
    let batch = batch_signed_at(&issued, 3, now);
    let verifier = verifier(&ca);

    let mut swapped = batch[0].clone();
    swapped.insert(BATCH_PROOF, batch[1].get(BATCH_PROOF).unwrap().clone());
    assert_eq!(
        reason(verify(&verifier, &swapped, &[], now)),
        Reason::SignatureInvalid
    );

    let mut no_proof = batch[0].clone();
    no_proof.remove(BATCH_PROOF);
    let refused = reason(verify(&verifier, &no_proof, &[], now));
    assert_eq!(refused, Reason::SignatureMissing);

    let mut bad_proof = batch[0].clone();
    bad_proof.insert(BATCH_PROOF, "kakunin=(:AAAA:);index=0".parse().unwrap());
    let refused = reason(verify(&verifier, &bad_proof, &[], now));
    assert_eq!(refused, Reason::SignatureMalformed);

    // Another request's signature base under this proof: the nonce of
    // batch[1] in batch[0]'s headers changes the leaf.
    let mut other_input = batch[0].clone();
    other_input.insert(
        "signature-input",
        batch[1].get("signature-input").unwrap().clone(),
    );
    assert_eq!(
        reason(verify(&verifier, &other_input, &[], now)),
        Reason::SignatureInvalid
    );

    // The untouched requests still pass: nothing above was recorded.
    for headers in &batch {
        assert!(matches!(
            verify(&verifier, headers, &[], now),
            Outcome::Accepted(_)
        ));
    }
}

#[test]
fn a_single_signature_cannot_be_passed_off_as_a_batch_of_one() {
    // A plain signature signs the base itself; claiming tag "kakunin-batch"
    // changes the base, and no proof turns the plain signature into one
    // over a tree's root.
    let ca = Ca::new("Agents CA");
    let issued = ca.issue();
    let now = SystemTime::now();
    let (mut headers, _) = signed_at(&issued, now);
    let input = headers.get("signature-input").unwrap().to_str().unwrap();
    let relabelled = input.replace("tag=\"kakunin\"", "tag=\"kakunin-batch\"");
    headers.insert("signature-input", relabelled.parse().unwrap());
    headers.insert(BATCH_PROOF, "kakunin=();index=0;size=1".parse().unwrap());
    assert_eq!(
        reason(verify(&verifier(&ca), &headers, &[], now)),
        Reason::SignatureInvalid
    );
}
