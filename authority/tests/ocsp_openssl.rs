//! OCSP interoperability with OpenSSL's CLI as an independent peer: it asks
//! and checks our responder, answers our client, and reads our requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use kakunin_authority::ocsp::{
    build_request, verify_response, OcspError, ResponseOptions, ResponseStatus,
};
use kakunin_authority::{
    AgentRequest, Authority, AuthorityError, CertStatus, InitOptions, RevocationReason, SubjectKey,
    Validity,
};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use time::{Duration, OffsetDateTime};

const POLICY: &str = r#"{
    "agent_id": "trading_bot_v2",
    "network_rules": { "allowed_hosts": ["api.exchange.com"] }
}"#;

/// A CA directory (also openssl's working directory, holding ca.pem and
/// ca-key.pem) with one agent certificate written to agent.pem.
struct Setup {
    dir: tempfile::TempDir,
    ca: Authority,
    ca_der: Vec<u8>,
    agent_der: Vec<u8>,
    agent_serial: String,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::init(dir.path(), &InitOptions::default()).unwrap();
        Setup::around(dir, ca)
    }

    /// A CA whose key openssl made (RSA, P-384, Ed25519): `ca init` only
    /// makes P-256, so its key and certificate are replaced.
    fn with_openssl_key(genpkey: &[&str]) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        Authority::init(dir.path(), &InitOptions::default()).unwrap();
        let mut args = vec!["genpkey"];
        args.extend_from_slice(genpkey);
        args.extend_from_slice(&["-out", "ca-key.pem"]);
        openssl(dir.path(), &args);
        let key_pem = std::fs::read_to_string(dir.path().join("ca-key.pem")).unwrap();
        let key = KeyPair::from_pem(&key_pem).unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Kakunin Test CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        let ca = Authority::open(dir.path()).unwrap();
        Setup::around(dir, ca)
    }

    fn around(dir: tempfile::TempDir, ca: Authority) -> Setup {
        let policy = kakunin_policy::Policy::from_json_str("p.json", POLICY).unwrap();
        let issued = ca
            .issue_agent(&AgentRequest {
                agent_id: "trading_bot_v2",
                policy: &policy,
                key: SubjectKey::Generate,
                validity: Validity::Days(1),
            })
            .unwrap();
        std::fs::write(dir.path().join("agent.pem"), &issued.cert_pem).unwrap();
        Setup {
            ca_der: der_of(ca.certificate_pem()),
            agent_der: der_of(&issued.cert_pem),
            agent_serial: issued.serial_hex,
            ca,
            dir,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn openssl(&self, args: &[&str]) -> String {
        openssl(self.path(), args)
    }

    /// Answers req.der with our responder into resp.der.
    fn respond(&self, status: CertStatus) -> ResponseStatus {
        let request = std::fs::read(self.path().join("req.der")).unwrap();
        let reply = self.ca.respond_ocsp(
            &request,
            &mut |serial: &str| {
                assert_eq!(serial, self.agent_serial);
                Ok::<_, AuthorityError>(status)
            },
            &ResponseOptions {
                now: OffsetDateTime::now_utc(),
                validity: Duration::hours(1),
            },
        );
        std::fs::write(self.path().join("resp.der"), &reply.der).unwrap();
        reply.outcome.status
    }

    fn verify(&self, response: &[u8], nonce: Option<&[u8]>) -> Result<CertStatus, OcspError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        verify_response(response, &self.agent_der, &self.ca_der, now, nonce).map(|v| v.status)
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) {
        std::fs::write(self.path().join(name), bytes).unwrap();
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path().join(name)).unwrap()
    }
}

/// Runs openssl in `dir`; its stdout and stderr together, or a failure
/// that shows them.
fn openssl(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed and on PATH");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "openssl {} failed ({}):\n{text}",
        args.join(" "),
        output.status
    );
    text
}

fn der_of(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .unwrap()
        .1
        .contents
}

/// `openssl ocsp -respin` with -issuer and -CAfile: prints the status and
/// "Response verify OK" when our signature checks out. `digest` must be the
/// request's CertID hash: openssl looks the answer up by CertID.
fn openssl_status(setup: &Setup, digest: &str) -> String {
    setup.openssl(&[
        "ocsp",
        digest,
        "-respin",
        "resp.der",
        "-issuer",
        "ca.pem",
        "-cert",
        "agent.pem",
        "-CAfile",
        "ca.pem",
    ])
}

#[test]
fn openssl_accepts_our_good_and_revoked_answers() {
    let setup = Setup::new();
    for digest in ["-sha1", "-sha256"] {
        setup.openssl(&[
            "ocsp",
            digest,
            "-issuer",
            "ca.pem",
            "-cert",
            "agent.pem",
            "-reqout",
            "req.der",
            "-no_nonce",
        ]);
        assert_eq!(setup.respond(CertStatus::Good), ResponseStatus::Successful);
        let out = openssl_status(&setup, digest);
        assert!(out.contains("agent.pem: good"), "{digest}:\n{out}");
        assert!(out.contains("Response verify OK"), "{digest}:\n{out}");
    }

    let revoked_at = OffsetDateTime::now_utc().unix_timestamp() - 600;
    setup.respond(CertStatus::Revoked {
        revoked_at,
        reason: RevocationReason::KeyCompromise,
    });
    let out = openssl_status(&setup, "-sha256");
    assert!(out.contains("agent.pem: revoked"), "{out}");
    assert!(out.contains("Reason: keyCompromise"), "{out}");
    assert!(out.contains("Response verify OK"), "{out}");
}

#[test]
fn openssl_finds_its_nonce_in_our_answer() {
    let setup = Setup::new();
    setup.openssl(&[
        "ocsp",
        "-issuer",
        "ca.pem",
        "-cert",
        "agent.pem",
        "-reqout",
        "req.der",
    ]);
    setup.respond(CertStatus::Good);
    // With -reqin (and no -cert, which would make a fresh request with a
    // fresh nonce) openssl compares the response's nonce with the request's.
    let out = setup.openssl(&[
        "ocsp", "-reqin", "req.der", "-respin", "resp.der", "-issuer", "ca.pem", "-CAfile",
        "ca.pem",
    ]);
    assert!(out.contains("Response verify OK"), "{out}");
    assert!(!out.contains("nonce"), "{out}");
    // And it notices when the nonce is someone else's.
    setup.openssl(&[
        "ocsp",
        "-issuer",
        "ca.pem",
        "-cert",
        "agent.pem",
        "-reqout",
        "other.der",
    ]);
    let output = Command::new("openssl")
        .args([
            "ocsp",
            "-reqin",
            "other.der",
            "-respin",
            "resp.der",
            "-issuer",
            "ca.pem",
        ])
        .args(["-CAfile", "ca.pem"])
        .current_dir(setup.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("Nonce Verify error"));
}

#[test]
fn openssl_accepts_answers_signed_with_other_ca_key_types() {
    for genpkey in [
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"][..],
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"][..],
        &["-algorithm", "ED25519"][..],
    ] {
        let setup = Setup::with_openssl_key(genpkey);
        setup.openssl(&[
            "ocsp",
            "-issuer",
            "ca.pem",
            "-cert",
            "agent.pem",
            "-reqout",
            "req.der",
            "-no_nonce",
        ]);
        setup.respond(CertStatus::Good);
        let out = openssl_status(&setup, "-sha1");
        assert!(out.contains("agent.pem: good"), "{genpkey:?}:\n{out}");
        assert!(out.contains("Response verify OK"), "{genpkey:?}:\n{out}");
        let ours = setup.verify(&setup.read("resp.der"), None);
        assert_eq!(ours.unwrap(), CertStatus::Good, "{genpkey:?}");
    }
}

/// A line of OpenSSL's CA database (`index.txt`) for the agent.
fn index_line(setup: &Setup, revoked: Option<&str>) -> String {
    let (flag, revocation) = match revoked {
        Some(when_and_why) => ("R", when_and_why),
        None => ("V", ""),
    };
    format!(
        "{flag}\t491231235959Z\t{revocation}\t{}\tunknown\t/CN=trading_bot_v2\n",
        setup.agent_serial.to_uppercase()
    )
}

fn openssl_responder(setup: &Setup, signer: &str, key: &str) {
    setup.openssl(&[
        "ocsp",
        "-index",
        "index.txt",
        "-CA",
        "ca.pem",
        "-rsigner",
        signer,
        "-rkey",
        key,
        "-reqin",
        "req.der",
        "-respout",
        "resp.der",
        "-ndays",
        "1",
    ]);
}

#[test]
fn we_accept_openssl_responder_answers() {
    let setup = Setup::new();
    let nonce = [0x5au8; 16];
    setup.write(
        "req.der",
        build_request(&setup.agent_der, &setup.ca_der, Some(&nonce)).unwrap(),
    );

    setup.write("index.txt", index_line(&setup, None));
    openssl_responder(&setup, "ca.pem", "ca-key.pem");
    let response = setup.read("resp.der");
    assert_eq!(
        setup.verify(&response, Some(&nonce)).unwrap(),
        CertStatus::Good
    );
    let err = setup.verify(&response, Some(&[0xa5u8; 16])).unwrap_err();
    assert!(matches!(err, OcspError::NonceMismatch), "{err}");

    // 2024-05-01 12:00:00 UTC
    setup.write(
        "index.txt",
        index_line(&setup, Some("240501120000Z,keyCompromise")),
    );
    openssl_responder(&setup, "ca.pem", "ca-key.pem");
    assert_eq!(
        setup.verify(&setup.read("resp.der"), Some(&nonce)).unwrap(),
        CertStatus::Revoked {
            revoked_at: 1_714_564_800,
            reason: RevocationReason::KeyCompromise,
        }
    );
}

/// A certificate issued by the CA for OCSP signing (or, without the EKU,
/// for nothing in particular), written with its key for openssl.
fn write_delegate(setup: &Setup, ocsp_signing: bool) {
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(setup.path().join("ca-key.pem")).unwrap())
            .unwrap();
    let issuer = Issuer::from_ca_cert_pem(setup.ca.certificate_pem(), ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Kakunin OCSP Responder");
    params.distinguished_name = dn;
    if ocsp_signing {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
    }
    params.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
    params.not_after = OffsetDateTime::now_utc() + Duration::days(1);
    let cert = params.signed_by(&key, &issuer).unwrap();
    setup.write("delegate.pem", cert.pem());
    setup.write("delegate-key.pem", key.serialize_pem());
}

#[test]
fn we_accept_openssl_delegated_responders_only_with_ocsp_signing() {
    let setup = Setup::new();
    setup.write(
        "req.der",
        build_request(&setup.agent_der, &setup.ca_der, None).unwrap(),
    );
    setup.write("index.txt", index_line(&setup, None));

    write_delegate(&setup, true);
    openssl_responder(&setup, "delegate.pem", "delegate-key.pem");
    assert_eq!(
        setup.verify(&setup.read("resp.der"), None).unwrap(),
        CertStatus::Good
    );

    write_delegate(&setup, false);
    openssl_responder(&setup, "delegate.pem", "delegate-key.pem");
    let err = setup.verify(&setup.read("resp.der"), None).unwrap_err();
    assert!(matches!(err, OcspError::ResponderNotAuthorized(_)), "{err}");
}

#[test]
fn openssl_reads_our_request() {
    let setup = Setup::new();
    let nonce: Vec<u8> = (1..=16).collect();
    setup.write(
        "req.der",
        build_request(&setup.agent_der, &setup.ca_der, Some(&nonce)).unwrap(),
    );
    let out = setup.openssl(&["ocsp", "-reqin", "req.der", "-req_text"]);
    assert!(out.contains("Hash Algorithm: sha1"), "{out}");
    let serial = format!("Serial Number: {}", setup.agent_serial.to_uppercase());
    assert!(out.contains(&serial), "{out}");
    // RFC 8954: the extension value is an OCTET STRING (04 10) holding it.
    assert!(
        out.contains("OCSP Nonce") && out.contains("04100102030405060708090A0B0C0D0E0F10"),
        "{out}"
    );
}
