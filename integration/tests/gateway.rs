//! `kakunin gateway` end to end: the real binary terminates mTLS in front of
//! a recording plain-HTTP backend; requests are signed with the agent's key
//! (kakunin_signer::httpsig) and tampered with after signing. Every refusal
//! is checked for its status, its code, its audit line, and for the backend
//! having seen nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use common::{ListeningProcess, Pki, POLICY};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kakunin_authority::{RevocationReason, Validity};
use kakunin_signer::httpsig::{
    new_nonce, sign_request, CertificateHeader, RequestSigner, TargetUri,
};
use kakunin_signer::FileKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;

const HOST: &str = common::EXCHANGE_HOST;
const TRADE: &str = r#"{"market":"EUR_USD","size":45000}"#;
/// The seed's receiver audit fields.
const SEED_FIELDS: [&str; 8] = [
    "event_type",
    "agent_id",
    "agent_cert_serial",
    "action",
    "signature_valid",
    "scope_check_passed",
    "timestamp",
    "duration_ms",
];

// ---------------------------------------------------------------- backend

/// What the backend received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A plain-HTTP backend on loopback that records every request.
struct Backend {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Backend {
    async fn start() -> Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let record = record.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let record = record.clone();
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await?.to_bytes();
                            record.lock().unwrap().push(Seen {
                                method: parts.method.to_string(),
                                path: parts.uri.to_string(),
                                headers: parts.headers,
                                body,
                            });
                            let mut response =
                                Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")));
                            response.headers_mut().insert(
                                "content-type",
                                HeaderValue::from_static("application/json"),
                            );
                            Ok::<_, hyper::Error>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend { addr, seen }
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request")
    }
}

// ---------------------------------------------------------------- identities

/// An agent certificate with its key, as files and as what signing needs.
struct Agent {
    key_path: PathBuf,
    der: Vec<u8>,
    serial: String,
}

impl Agent {
    fn write(pki: &Pki, name: &str, issued: kakunin_authority::Issued) -> Agent {
        let cert_path = pki.path(&format!("{name}.pem"));
        let key_path = pki.path(&format!("{name}-key.pem"));
        std::fs::write(&cert_path, &issued.cert_pem).unwrap();
        std::fs::write(&key_path, issued.key_pem.unwrap()).unwrap();
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes())
            .unwrap()
            .to_vec();
        Agent {
            key_path,
            der,
            serial: issued.serial_hex,
        }
    }

    /// Issued by the agents' CA for `POLICY`.
    fn issue(pki: &Pki, name: &str, validity: Validity) -> Agent {
        Agent::write(pki, name, pki.issue(POLICY, validity))
    }

    /// Issued by another CA (the exchange's) for the same policy.
    fn foreign(pki: &Pki) -> Agent {
        let policy = kakunin_policy::Policy::from_json_str("p", POLICY).unwrap();
        let issued = pki
            .exchange_ca
            .issue_agent(&kakunin_authority::AgentRequest {
                agent_id: policy.agent_id(),
                policy: &policy,
                key: kakunin_authority::SubjectKey::Generate,
                validity: Validity::Hours(1),
            })
            .unwrap();
        Agent::write(pki, "foreign", issued)
    }

    fn key(&self) -> FileKey {
        FileKey::open(&self.key_path).unwrap()
    }

    /// A TLS client presenting this certificate and trusting the exchange CA.
    fn tls(&self, pki: &Pki) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(
                CertificateDer::from_pem_slice(pki.exchange_ca.certificate_pem().as_bytes())
                    .unwrap(),
            )
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&self.key_path).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![CertificateDer::from(self.der.clone())], key)
            .unwrap();
        Arc::new(config)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

// ---------------------------------------------------------------- requests

/// A request as the client will send it; fields may be changed after
/// signing.
#[derive(Clone)]
struct Outgoing {
    method: String,
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Outgoing {
    fn unsigned(method: &str, path: &str, body: &str) -> Outgoing {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static(HOST));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        Outgoing {
            method: method.into(),
            path: path.into(),
            headers,
            body: body.as_bytes().to_vec(),
        }
    }

    /// Signed now by `agent`, with a 60 s lifetime.
    fn signed(agent: &Agent, method: &str, path: &str, body: &str) -> Outgoing {
        Outgoing::signed_at(agent, &agent.key(), method, path, body, now_ms(), 60)
    }

    /// Signed by `key`, naming `agent`'s certificate, at `created_ms`.
    fn signed_at(
        agent: &Agent,
        key: &FileKey,
        method: &str,
        path: &str,
        body: &str,
        created_ms: u64,
        lifetime_secs: u64,
    ) -> Outgoing {
        let mut out = Outgoing::unsigned(method, path, body);
        sign_request(
            &mut out.headers,
            method,
            &TargetUri::new("https", HOST, path),
            &out.body,
            &RequestSigner {
                key,
                keyid: &agent.serial,
                certificate: &CertificateHeader::new(&agent.der).unwrap(),
                created_ms,
                lifetime_secs,
                nonce: new_nonce().unwrap(),
            },
        )
        .unwrap();
        out
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }
}

/// One request over a new mTLS connection; `Err` when TLS or HTTP failed.
async fn send(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    out: &Outgoing,
) -> Result<Reply, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(ServerName::try_from(HOST).unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("http: {e}"))?;
    tokio::spawn(connection);
    let mut request = Request::new(Full::new(Bytes::from(out.body.clone())));
    *request.method_mut() = out.method.parse().unwrap();
    *request.uri_mut() = out.path.parse().unwrap();
    *request.headers_mut() = out.headers.clone();
    let response = tokio::time::timeout(Duration::from_secs(20), sender.send_request(request))
        .await
        .map_err(|_| "no answer within 20 s".to_string())?
        .map_err(|e| format!("exchange: {e}"))?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

/// Completes the client's side of a handshake and reads: the server's
/// refusal of the client certificate arrives as a TLS alert (in TLS 1.3,
/// after the client already thinks the handshake is done). Returns the
/// error the client saw.
async fn refused_handshake(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> String {
    use tokio::io::AsyncReadExt as _;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut stream = match tokio_rustls::TlsConnector::from(tls)
        .connect(ServerName::try_from(HOST).unwrap(), tcp)
        .await
    {
        Ok(stream) => stream,
        Err(err) => return err.to_string(),
    };
    let mut buf = [0u8; 16];
    match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
        Ok(Err(err)) => err.to_string(),
        other => panic!("the server did not refuse the handshake: {other:?}"),
    }
}

// ---------------------------------------------------------------- gateway

struct Gateway {
    pki: Pki,
    agent: Agent,
    backend: Backend,
    process: ListeningProcess,
}

impl Gateway {
    async fn start() -> Gateway {
        Gateway::start_with(&[]).await
    }

    async fn start_with(extra: &[&str]) -> Gateway {
        let pki = Pki::new();
        let agent = Agent::issue(&pki, "agent", Validity::Hours(1));
        let backend = Backend::start().await;
        let process = gateway_process(&pki, backend.addr, extra).unwrap();
        Gateway {
            pki,
            agent,
            backend,
            process,
        }
    }

    async fn send(&self, out: &Outgoing) -> Reply {
        self.send_as(&self.agent, out).await.unwrap()
    }

    async fn send_as(&self, agent: &Agent, out: &Outgoing) -> Result<Reply, String> {
        send(self.process.addr, agent.tls(&self.pki), out).await
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.pki.path("gateway-audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// Asserts a refusal: status, code, the seed's error text family, the
    /// `X-Kakunin-Error` header, the audit line, and an untouched backend.
    fn assert_refused(&self, reply: &Reply, status: u16, code: &str) {
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (status, code),
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        let body = reply.json();
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
        assert!(body["detail"].is_string(), "{body}");
        assert_eq!(reply.headers["x-kakunin-error"], code);
        assert_eq!(self.backend.count(), 0, "the backend must see nothing");
        let audit = self.audit();
        let line = audit.last().expect("an audit line");
        assert_eq!(line["event_type"], "action.rejected", "{line}");
        assert_eq!(line["reason"], code, "{line}");
        assert_eq!(line["status"], status, "{line}");
    }
}

fn gateway_args(pki: &Pki, backend: SocketAddr, extra: &[&str]) -> Vec<String> {
    let cert = pki.path("gateway.pem");
    let key = pki.path("gateway-key.pem");
    std::fs::write(&cert, &pki.server_cert).unwrap();
    std::fs::write(&key, &pki.server_key).unwrap();
    let mut args: Vec<String> = [
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--trust-domain",
        "kakunin.local",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (flag, value) in [
        ("--cert", cert),
        ("--key", key),
        ("--client-ca", pki.agents_ca.certificate_path()),
        ("--audit-log", pki.path("gateway-audit.jsonl")),
    ] {
        args.push(flag.into());
        args.push(value.display().to_string());
    }
    args.push("--backend".into());
    args.push(backend.to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn gateway_process(
    pki: &Pki,
    backend: SocketAddr,
    extra: &[&str],
) -> Result<ListeningProcess, String> {
    ListeningProcess::start(
        &gateway_args(pki, backend, extra),
        "kakunin: gateway listening on ",
    )
}

// ---------------------------------------------------------------- accepted

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_trade_within_scope_reaches_the_backend_with_the_agents_identity() {
    // A TTL no slow machine can outlast between the two requests below.
    let gw = Gateway::start_with(&["--ocsp-cache-ttl-seconds", "600"]).await;
    let mut out = Outgoing::signed(&gw.agent, "POST", "/v1/trades", TRADE);
    // Not covered by the signature, so the agent could add them: they must
    // not reach the backend as if the gateway had said so.
    out.headers
        .insert("x-kakunin-agent-id", HeaderValue::from_static("mallory"));
    out.headers
        .insert("x-kakunin-cert-serial", HeaderValue::from_static("00"));
    let reply = gw.send(&out).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()["ok"], true);

    assert_eq!(gw.backend.count(), 1);
    let seen = gw.backend.last();
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", "/v1/trades")
    );
    assert_eq!(seen.body, TRADE.as_bytes());
    let values = |name: &str| -> Vec<String> {
        seen.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(values("x-kakunin-agent-id"), ["trading_bot_v2"]);
    assert_eq!(values("x-kakunin-cert-serial"), [gw.agent.serial.as_str()]);
    assert_eq!(values("x-kakunin-action"), ["submit_trade"]);
    assert_eq!(values("host"), [HOST]);

    let audit = gw.audit();
    let line = &audit[0];
    assert_eq!(line["event_type"], "action.verified");
    assert_eq!(line["agent_id"], "trading_bot_v2");
    assert_eq!(line["agent_cert_serial"], gw.agent.serial.as_str());
    assert_eq!(line["signature_valid"], true);
    assert_eq!(line["scope_check_passed"], true);
    assert_eq!(line["action"]["method"], "POST");
    assert_eq!(line["action"]["path"], "/v1/trades");
    assert_eq!(line["action"]["rule"], "submit_trade");
    assert_eq!(line["action"]["body"]["market"], "EUR_USD");
    assert_eq!(line["action"]["body"]["size"], 45000);
    assert_eq!(line["status"], 200);
    assert_eq!(line["revocation"], "fetched");

    // The next request uses the answer fetched for the first.
    let again = Outgoing::signed(&gw.agent, "POST", "/v1/trades", TRADE);
    assert_eq!(gw.send(&again).await.status, 200);
    assert_eq!(gw.audit()[1]["revocation"], "cached");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_audit_line_has_the_seed_receiver_fields() {
    let gw = Gateway::start().await;
    let ok = Outgoing::signed(&gw.agent, "POST", "/v1/trades", TRADE);
    assert_eq!(gw.send(&ok).await.status, 200);
    let big = Outgoing::signed(
        &gw.agent,
        "POST",
        "/v1/trades",
        r#"{"market":"EUR_USD","size":500000}"#,
    );
    assert_eq!(gw.send(&big).await.status, 403);
    let mut unsigned = Outgoing::unsigned("POST", "/v1/trades", TRADE);
    unsigned.headers.remove("content-type");
    assert_eq!(gw.send(&unsigned).await.status, 401);

    let audit = gw.audit();
    assert_eq!(audit.len(), 3, "{audit:?}");
    for line in &audit {
        for field in SEED_FIELDS {
            assert!(line.get(field).is_some(), "{field} missing in {line}");
        }
        assert!(line["signature_valid"].is_boolean());
        assert!(line["scope_check_passed"].is_boolean());
        assert!(line["duration_ms"].as_f64().is_some_and(|d| d >= 0.0));
        let ts = line["timestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z') && ts.contains('T'), "{ts}");
        assert!(line["action"]["method"].is_string());
        // Every line names the agent: mTLS established it for the refusals too.
        assert_eq!(line["agent_id"], "trading_bot_v2");
        assert_eq!(line["agent_cert_serial"], gw.agent.serial.as_str());
    }
    // Scope refusal: the signature held, the scope did not.
    assert_eq!(audit[1]["event_type"], "action.rejected");
    assert_eq!(audit[1]["signature_valid"], true);
    assert_eq!(audit[1]["scope_check_passed"], false);
    // No signature at all.
    assert_eq!(audit[2]["signature_valid"], false);
    assert_eq!(audit[2]["scope_check_passed"], false);
}

// ---------------------------------------------------------------- tampering

#[tokio::test(flavor = "multi_thread")]
async fn a_body_changed_after_signing_is_refused() {
    let gw = Gateway::start().await;
    let mut out = Outgoing::signed(&gw.agent, "POST", "/v1/trades", TRADE);
    out.body = br#"{"market":"EUR_USD","size":49000}"#.to_vec();
    let reply = gw.send(&out).await;
    gw.assert_refused(&reply, 401, "content_digest_mismatch");
    assert_eq!(reply.json()["error"], "Signature verification failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_path_changed_after_signing_is_refused() {
    let gw = Gateway::start().await;
    let mut out = Outgoing::signed(&gw.agent, "POST", "/v1/trades", TRADE);
    out.path = "/v1/withdrawals".into();
    gw.assert_refused(&gw.send(&out).await, 401, "signature_invalid");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_method_changed_after_signing_is_refused() {
    let gw = Gateway::start().await;
    let mut out = Outgoing::signed(&gw.agent, "POST", "/v1/trades", TRADE);
    out.method = "PUT".into();
    gw.assert_refused(&gw.send(&out).await, 401, "signature_invalid");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signature_by_another_key_is_refused() {
    let gw = Gateway::start().await;
    let other = Agent::issue(&gw.pki, "other", Validity::Hours(1));
    // The agent's certificate in TLS and in the headers, another key's
    // signature.
    let out = Outgoing::signed_at(
        &gw.agent,
        &other.key(),
        "POST",
        "/v1/trades",
        TRADE,
        now_ms(),
        60,
    );
    gw.assert_refused(&gw.send(&out).await, 401, "signature_invalid");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_signature_headers_are_refused() {
    let gw = Gateway::start().await;
    let mut out = Outgoing::signed(&gw.agent, "POST", "/v1/trades", TRADE);
    out.headers.remove("signature");
    out.headers.remove("signature-input");
    gw.assert_refused(&gw.send(&out).await, 401, "signature_missing");
}

// ---------------------------------------------------------------- certificates

#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_from_another_ca_fails_the_handshake() {
    let gw = Gateway::start().await;
    let foreign = Agent::foreign(&gw.pki);
    let out = Outgoing::signed(&foreign, "POST", "/v1/trades", TRADE);
    let alert = refused_handshake(gw.process.addr, foreign.tls(&gw.pki)).await;
    assert!(alert.contains("UnknownCA"), "{alert}");
    assert!(gw.send_as(&foreign, &out).await.is_err());
    assert_eq!(gw.backend.count(), 0);
    assert!(gw.audit().is_empty(), "no request, no audit line");
    // The agent's own certificate still works.
    let ok = Outgoing::signed(&gw.agent, "POST", "/v1/trades", TRADE);
    assert_eq!(gw.send(&ok).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_header_certificate_from_another_ca_is_not_the_sessions_certificate() {
    let gw = Gateway::start().await;
    let foreign = Agent::foreign(&gw.pki);
    // Signed by the foreign key and naming the foreign certificate, sent
    // over the agent's own mTLS session.
    let out = Outgoing::signed(&foreign, "POST", "/v1/trades", TRADE);
    let reply = gw.send(&out).await;
    gw.assert_refused(&reply, 401, "certificate_mismatch");
    assert_eq!(reply.json()["error"], "Invalid certificate chain");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_certificate_fails_the_handshake() {
    let gw = Gateway::start().await;
    let now = time::OffsetDateTime::now_utc();
    let expired = Agent::issue(
        &gw.pki,
        "expired",
        Validity::Window {
            not_before: now - time::Duration::hours(2),
            not_after: now - time::Duration::hours(1),
        },
    );
    let out = Outgoing::signed(&expired, "POST", "/v1/trades", TRADE);
    // rustls-webpki refuses it in the handshake, before the verifier runs;
    // the verifier's own expiry check is in verifier/tests/verify.rs.
    let alert = refused_handshake(gw.process.addr, expired.tls(&gw.pki)).await;
    assert!(alert.contains("CertificateExpired"), "{alert}");
    assert!(gw.send_as(&expired, &out).await.is_err());
    assert_eq!(gw.backend.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_certificate_is_refused_after_asking_the_responder() {
    let gw = Gateway::start().await;
    gw.pki
        .agents_ca
        .revoke(&gw.agent.serial, RevocationReason::KeyCompromise)
        .unwrap();
    let out = Outgoing::signed(&gw.agent, "POST", "/v1/trades", TRADE);
    let reply = gw.send(&out).await;
    gw.assert_refused(&reply, 401, "certificate_revoked");
    assert_eq!(reply.json()["error"], "Certificate revoked");
}

/// An OCSP answer for `agent` from the agents' CA responder, base64.
async fn staple(pki: &Pki, agent: &Agent) -> String {
    let issuer =
        CertificateDer::from_pem_slice(pki.agents_ca.certificate_pem().as_bytes()).unwrap();
    let request =
        kakunin_authority::ocsp::build_request(&agent.der, issuer.as_ref(), None).unwrap();
    let url = kakunin::revocation::HttpUrl::parse(&format!("http://{}/ocsp", pki.responder.addr))
        .unwrap();
    let der = url
        .post_ocsp(request, Duration::from_secs(10))
        .await
        .unwrap();
    base64::engine::general_purpose::STANDARD.encode(der)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stapled_revoked_answer_is_refused_without_asking_the_responder() {
    // The only responder the gateway may ask is a closed port: a refusal
    // as revoked can only come from the staple.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let ocsp_url = format!("http://{closed}/ocsp");
    let gw = Gateway::start_with(&["--ocsp-url", &ocsp_url, "--ocsp-timeout-ms", "2000"]).await;
    gw.pki
        .agents_ca
        .revoke(&gw.agent.serial, RevocationReason::KeyCompromise)
        .unwrap();
    let stapled = staple(&gw.pki, &gw.agent).await;
    let mut out = Outgoing::signed(&gw.agent, "POST", "/v1/trades", TRADE);
    out.headers
        .insert("x-agent-ocsp", HeaderValue::from_str(&stapled).unwrap());
    gw.assert_refused(&gw.send(&out).await, 401, "certificate_revoked");

    // Without the staple the gateway cannot learn the status: fail closed.
    let bare = Outgoing::signed(&gw.agent, "POST", "/v1/trades", TRADE);
    gw.assert_refused(&gw.send(&bare).await, 503, "revocation_unavailable");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stapled_good_answer_is_used() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let ocsp_url = format!("http://{closed}/ocsp");
    let gw = Gateway::start_with(&["--ocsp-url", &ocsp_url]).await;
    let stapled = staple(&gw.pki, &gw.agent).await;
    let mut out = Outgoing::signed(&gw.agent, "POST", "/v1/trades", TRADE);
    out.headers
        .insert("x-agent-ocsp", HeaderValue::from_str(&stapled).unwrap());
    assert_eq!(gw.send(&out).await.status, 200);
    assert_eq!(gw.audit()[0]["revocation"], "stapled");
}

// ---------------------------------------------------------------- freshness

#[tokio::test(flavor = "multi_thread")]
async fn a_signature_created_too_long_ago_is_refused() {
    let gw = Gateway::start().await;
    let key = gw.agent.key();
    // Created 120 s ago with a lifetime that has not run out: only the
    // receiver's 60 s window refuses it.
    let out = Outgoing::signed_at(
        &gw.agent,
        &key,
        "POST",
        "/v1/trades",
        TRADE,
        now_ms() - 120_000,
        300,
    );
    let reply = gw.send(&out).await;
    gw.assert_refused(&reply, 400, "timestamp_expired");
    assert_eq!(reply.json()["error"], "Request timestamp expired");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signature_past_its_expires_is_refused() {
    let gw = Gateway::start().await;
    let key = gw.agent.key();
    // Created 30 s ago (within 60 s), expired 20 s ago.
    let out = Outgoing::signed_at(
        &gw.agent,
        &key,
        "POST",
        "/v1/trades",
        TRADE,
        now_ms() - 30_000,
        10,
    );
    gw.assert_refused(&gw.send(&out).await, 400, "signature_expired");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_request_is_refused() {
    let gw = Gateway::start().await;
    let out = Outgoing::signed(&gw.agent, "POST", "/v1/trades", TRADE);
    assert_eq!(gw.send(&out).await.status, 200);
    let replay = gw.send(&out).await;
    assert_eq!(
        (replay.status, replay.code().as_str()),
        (401, "nonce_replayed")
    );
    assert_eq!(gw.backend.count(), 1, "only the first arrival is forwarded");
    let audit = gw.audit();
    assert_eq!(audit[1]["event_type"], "action.rejected");
    assert_eq!(audit[1]["reason"], "nonce_replayed");
    // The replay check follows the signature check: the copy was authentic.
    assert_eq!(audit[1]["signature_valid"], true);
}

// ---------------------------------------------------------------- scope

#[tokio::test(flavor = "multi_thread")]
async fn a_trade_beyond_the_scope_is_refused() {
    let gw = Gateway::start().await;
    let out = Outgoing::signed(
        &gw.agent,
        "POST",
        "/v1/trades",
        r#"{"market":"EUR_USD","size":500000}"#,
    );
    let reply = gw.send(&out).await;
    gw.assert_refused(&reply, 403, "scope_denied");
    assert_eq!(reply.json()["error"], "Action not in agent scope");
    let line = gw.audit().pop().unwrap();
    assert_eq!(line["signature_valid"], true);
    assert_eq!(line["scope_check_passed"], false);
    assert_eq!(line["action"]["body"]["size"], 500000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_for_another_authority_is_refused() {
    let gw = Gateway::start_with(&["--authority", "API.Exchange.com:443"]).await;
    // Signed correctly, for a host the scope allows, but not this gateway's.
    let mut out = Outgoing::unsigned("POST", "/v1/trades", TRADE);
    out.headers
        .insert("host", HeaderValue::from_static("market-data.provider.com"));
    let key = gw.agent.key();
    sign_request(
        &mut out.headers,
        "POST",
        &TargetUri::new("https", "market-data.provider.com", "/v1/trades"),
        &out.body,
        &RequestSigner {
            key: &key,
            keyid: &gw.agent.serial,
            certificate: &CertificateHeader::new(&gw.agent.der).unwrap(),
            created_ms: now_ms(),
            lifetime_secs: 60,
            nonce: new_nonce().unwrap(),
        },
    )
    .unwrap();
    gw.assert_refused(&gw.send(&out).await, 401, "authority_mismatch");
    // The configured authority, normalised like @authority, is accepted.
    let ok = Outgoing::signed(&gw.agent, "POST", "/v1/trades", TRADE);
    assert_eq!(gw.send(&ok).await.status, 200);
}

// ---------------------------------------------------------------- operations

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_that_is_down_is_a_502() {
    let pki = Pki::new();
    let agent = Agent::issue(&pki, "agent", Validity::Hours(1));
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let process = gateway_process(&pki, closed, &[]).unwrap();
    let out = Outgoing::signed(&agent, "POST", "/v1/trades", TRADE);
    let reply = send(process.addr, agent.tls(&pki), &out).await.unwrap();
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (502, "backend_unavailable")
    );
    assert_eq!(reply.headers["x-kakunin-error"], "backend_unavailable");
}

#[test]
fn a_remote_backend_is_refused_at_start() {
    let pki = Pki::new();
    let err = gateway_process(&pki, "192.0.2.10:8080".parse().unwrap(), &[])
        .err()
        .expect("the gateway must not start");
    assert!(err.contains("--allow-remote-backend"), "{err}");
    assert!(err.contains("192.0.2.10:8080"), "{err}");
}

#[test]
fn a_missing_server_certificate_is_named_at_start() {
    let pki = Pki::new();
    let backend: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut args = gateway_args(&pki, backend, &[]);
    let at = args.iter().position(|a| a == "--cert").unwrap();
    args[at + 1] = "/nonexistent/gateway.pem".into();
    let err = ListeningProcess::start(&args, "kakunin: gateway listening on ")
        .err()
        .expect("the gateway must not start");
    assert!(err.contains("--cert /nonexistent/gateway.pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_input_never_breaks_the_gateway() {
    let mut gw = Gateway::start_with(&["--max-body-bytes", "4096"]).await;
    let signed = || Outgoing::signed(&gw.agent, "POST", "/v1/trades", TRADE);
    let mut cases: Vec<(&str, Outgoing)> = Vec::new();

    let mut garbage = signed();
    garbage.headers.insert(
        "signature-input",
        HeaderValue::from_static("kakunin=(\"@method\";;;===\x7e"),
    );
    cases.push(("garbage Signature-Input", garbage));
    let mut unclosed = signed();
    unclosed.headers.insert(
        "signature-input",
        HeaderValue::from_static("kakunin=(\"@method\" \"@authority\""),
    );
    cases.push(("unclosed inner list", unclosed));
    let mut bad_b64 = signed();
    bad_b64.headers.insert(
        "x-agent-certificate",
        HeaderValue::from_static("!!!not base64!!!"),
    );
    cases.push(("garbage X-Agent-Certificate", bad_b64));
    let mut huge = signed();
    huge.headers.insert(
        "x-padding",
        HeaderValue::from_str(&"a".repeat(200 * 1024)).unwrap(),
    );
    cases.push(("huge header", huge));
    let mut wrong_host = signed();
    wrong_host
        .headers
        .insert("host", HeaderValue::from_static("evil.example"));
    cases.push(("wrong Host", wrong_host));
    let mut no_host = signed();
    no_host.headers.remove("host");
    cases.push(("no Host", no_host));
    let mut two_hosts = signed();
    two_hosts
        .headers
        .append("host", HeaderValue::from_static("evil.example"));
    cases.push(("two Hosts", two_hosts));
    let mut absolute = signed();
    absolute.path = format!("https://{HOST}/v1/trades");
    cases.push(("absolute-form target", absolute));
    let mut oversized = signed();
    oversized.body = vec![b'x'; 8192];
    cases.push(("body over the limit", oversized));
    let mut long_nonce = Outgoing::unsigned("POST", "/v1/trades", TRADE);
    long_nonce.headers.insert(
        "signature-input",
        HeaderValue::from_str(&format!(
            "kakunin=(\"@method\");created=1;nonce=\"{}\"",
            "n".repeat(10_000)
        ))
        .unwrap(),
    );
    long_nonce
        .headers
        .insert("signature", HeaderValue::from_static("kakunin=:AAAA:"));
    cases.push(("long nonce", long_nonce));

    for (name, out) in &cases {
        match gw.send_as(&gw.agent, out).await {
            Ok(reply) => {
                let status = reply.status;
                eprintln!("{name}: {status} {}", String::from_utf8_lossy(&reply.body));
                assert!(
                    (400..500).contains(&status) || status == 502 || status == 503,
                    "{name}: {status} {}",
                    String::from_utf8_lossy(&reply.body)
                );
            }
            // A head too large may be answered with a closed connection.
            Err(err) => assert_eq!(*name, "huge header", "{name}: {err}"),
        }
        assert!(gw.process.is_running(), "{name}: the gateway died");
    }
    assert_eq!(gw.backend.count(), 0, "nothing hostile is forwarded");

    // Plain HTTP to the TLS port, and a handshake abandoned halfway.
    let raw = common::raw(
        gw.process.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(2),
    );
    assert!(!raw.starts_with("HTTP/1.1 5"), "{raw}");
    let _ = common::raw(
        gw.process.addr,
        &[0x16, 0x03, 0x01, 0x00],
        Duration::from_millis(200),
    );
    assert!(gw.process.is_running());

    // Still serving. A staple that is not an OCSP response is ignored and
    // the responder asked instead (stripping a staple gains nothing).
    let mut bad_staple = signed();
    bad_staple
        .headers
        .insert("x-agent-ocsp", HeaderValue::from_static("AAAA"));
    assert_eq!(gw.send(&bad_staple).await.status, 200);
    let line = gw.audit().pop().unwrap();
    assert!(
        ["fetched", "cached"].contains(&line["revocation"].as_str().unwrap()),
        "{line}"
    );
}
