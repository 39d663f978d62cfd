//! The in-process API the demo and embedders use: start, address, stop,
//! and the refusals at start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kakunin_authority::{Authority, InitOptions, ServerRequest, Validity};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::*;

struct Material {
    _dir: tempfile::TempDir,
    settings: GatewaySettings,
}

fn material(backend: &str) -> Material {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::init(&dir.path().join("ca"), &InitOptions::default()).unwrap();
    let server = ca
        .issue_server(&ServerRequest {
            names: vec!["localhost".into()],
            validity: Validity::Hours(1),
        })
        .unwrap();
    let anchor = CertificateDer::from_pem_slice(ca.certificate_pem().as_bytes()).unwrap();
    let mut settings = GatewaySettings::new(
        VerifierConfig::new(vec![anchor]),
        server.cert_pem,
        server.key_pem.unwrap(),
        backend.parse().unwrap(),
    );
    settings.audit_log = Some(dir.path().join("audit.jsonl"));
    Material {
        _dir: dir,
        settings,
    }
}

#[tokio::test]
async fn starts_on_an_ephemeral_port_and_stops() {
    let material = material("127.0.0.1:9");
    let gateway = start(material.settings.clone()).await.unwrap();
    let addr = gateway.local_addr();
    assert_ne!(addr.port(), 0);
    tokio::net::TcpStream::connect(addr).await.unwrap();
    gateway.stopped().await;
    // The listener is gone.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn refuses_what_cannot_work() {
    let remote = material("192.0.2.1:80");
    let err = start(remote.settings.clone()).await.err().unwrap();
    assert!(matches!(err, GatewayError::RemoteBackend(_)), "{err}");
    let mut allowed = remote.settings.clone();
    allowed.allow_remote_backend = true;
    start(allowed).await.unwrap().stopped().await;

    let mut no_key = material("127.0.0.1:9").settings;
    no_key.server_key_pem = "not a key".into();
    let err = start(no_key).await.err().unwrap();
    assert!(matches!(err, GatewayError::ServerCertificate(_)), "{err}");

    let mut no_ca = material("127.0.0.1:9").settings;
    no_ca.verifier.trust_anchors.clear();
    let err = start(no_ca).await.err().unwrap();
    assert!(matches!(err, GatewayError::ClientCa(_)), "{err}");

    let mut small = material("127.0.0.1:9").settings;
    small.limits.max_header_bytes = 1024;
    let err = start(small).await.err().unwrap();
    assert!(matches!(err, GatewayError::Limits(_)), "{err}");
}
