//! `kakunin ca serve` as a real process, checked by independent peers:
//! `openssl ocsp` (POST) verifies signatures and statuses, curl fetches the
//! GET form, the CRL and the watch stream, and hostile input gets the right
//! OCSP status or HTTP error while the server stays up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;
use common::kakunin_bin;

const SEED_POLICY: &str = include_str!("../../policy/tests/fixtures/seed-policy.json");

struct Served {
    dir: tempfile::TempDir,
    url: String,
    child: Child,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(dir: &Path, program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("KAKUNIN_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = run(dir, program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout) + &text(&out.stderr)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A CA (in `ca/`) with one agent certificate (`agent.pem`, agent
/// `trading_bot_v2`).
fn new_ca() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("policy.json"), SEED_POLICY).unwrap();
    let kakunin = kakunin_bin();
    let kakunin = kakunin.to_str().unwrap();
    ok(root, kakunin, &["ca", "init", "--dir", "ca"]);
    issue(root, "trading_bot_v2", "agent");
    dir
}

/// Issues `NAME.pem` (key `NAME-key.pem`) for `agent_id`.
fn issue(root: &Path, agent_id: &str, name: &str) {
    let key = format!("{name}-key.pem");
    let cert = format!("{name}.pem");
    ok(
        root,
        kakunin_bin().to_str().unwrap(),
        &[
            "ca",
            "issue",
            "--dir",
            "ca",
            "--agent-id",
            agent_id,
            "--policy",
            "policy.json",
            "--key-out",
            &key,
            "--out",
            &cert,
        ],
    );
}

fn serial_of(root: &Path, cert: &str) -> String {
    let out = ok(root, "openssl", &["x509", "-in", cert, "-noout", "-serial"]);
    out.trim().trim_start_matches("serial=").to_lowercase()
}

/// A DER OCSP request (no nonce) written by openssl.
fn request_for(root: &Path, args: &[&str], name: &str) -> Vec<u8> {
    let out = root.join(name);
    let mut all = vec!["ocsp", "-no_nonce", "-reqout", out.to_str().unwrap()];
    all.extend_from_slice(args);
    ok(root, "openssl", &all);
    std::fs::read(out).unwrap()
}

/// RFC 6960 A.1: base64, then URL-encoded.
fn get_path(request: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(request);
    let escaped = encoded
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    format!("/ocsp/{escaped}")
}

impl Served {
    /// A CA (in `ca/`) with one agent certificate (`agent.pem`), served.
    fn start() -> Served {
        let dir = new_ca();
        let root = dir.path();
        let kakunin = kakunin_bin();
        let kakunin = kakunin.to_str().unwrap();
        let mut child = Command::new(kakunin)
            .args(["ca", "serve", "--dir", "ca", "--listen", "127.0.0.1:0"])
            .current_dir(root)
            .env("KAKUNIN_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("kakunin: ca serving on ") {
                    let _ = tx.send(addr.to_string());
                } else {
                    eprintln!("[ca serve] {line}");
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("ca serve did not start");
        Served {
            dir,
            url: format!("http://{addr}"),
            child,
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root().join(name)
    }

    fn kakunin(&self, args: &[&str]) -> String {
        ok(self.root(), kakunin_bin().to_str().unwrap(), args)
    }

    /// `kakunin ca revoke` of `serial`, as an operator would run it.
    fn revoke(&self, serial: &str, reason: &str) {
        self.kakunin(&[
            "ca", "revoke", "--dir", "ca", "--serial", serial, "--reason", reason,
        ]);
    }

    fn serial(&self) -> String {
        serial_of(self.root(), "agent.pem")
    }

    /// `openssl ocsp` against the server, verifying the response.
    fn openssl_ocsp(&self) -> String {
        let ocsp_url = format!("{}/ocsp", self.url);
        ok(
            self.root(),
            "openssl",
            &[
                "ocsp",
                "-issuer",
                "ca/ca.pem",
                "-cert",
                "agent.pem",
                "-url",
                &ocsp_url,
                "-CAfile",
                "ca/ca.pem",
            ],
        )
    }

    /// POSTs `body` to /ocsp; (HTTP status, body file).
    fn post(&self, body: &[u8], name: &str) -> (u16, PathBuf) {
        let input = self.path(&format!("{name}.in"));
        std::fs::write(&input, body).unwrap();
        let output = self.path(&format!("{name}.out"));
        let data = format!("@{}", input.display());
        let url = format!("{}/ocsp", self.url);
        let status = ok(
            self.root(),
            "curl",
            &[
                "-s",
                "-o",
                output.to_str().unwrap(),
                "-w",
                "%{http_code}",
                "-H",
                "content-type: application/ocsp-request",
                "--data-binary",
                &data,
                &url,
            ],
        );
        (status.trim().parse().unwrap(), output)
    }

    /// The OCSP response status (and certificate status) as openssl reads
    /// the DER in `file`, lower-cased (openssl prints error statuses as
    /// "Responder Error: malformedrequest" and exits non-zero).
    fn response_text(&self, file: &Path) -> String {
        let out = run(
            self.root(),
            "openssl",
            &[
                "ocsp",
                "-respin",
                file.to_str().unwrap(),
                "-resp_text",
                "-noverify",
            ],
        );
        (text(&out.stdout) + &text(&out.stderr)).to_lowercase()
    }

    fn request_for(&self, args: &[&str], name: &str) -> Vec<u8> {
        request_for(self.root(), args, name)
    }
}

#[test]
fn openssl_ocsp_verifies_good_then_revoked_with_its_reason() {
    let served = Served::start();
    let answer = served.openssl_ocsp();
    assert!(answer.contains("Response verify OK"), "{answer}");
    assert!(answer.contains("agent.pem: good"), "{answer}");
    served.revoke(&served.serial(), "keyCompromise");
    let answer = served.openssl_ocsp();
    assert!(answer.contains("Response verify OK"), "{answer}");
    assert!(answer.contains("agent.pem: revoked"), "{answer}");
    assert!(answer.contains("Reason: keyCompromise"), "{answer}");
}

#[test]
fn the_get_form_answers_like_post() {
    let served = Served::start();
    let request = served.request_for(&["-issuer", "ca/ca.pem", "-cert", "agent.pem"], "req.der");
    let url = format!("{}{}", served.url, get_path(&request));
    let resp = served.path("get.der");
    ok(
        served.root(),
        "curl",
        &["-sf", "-o", resp.to_str().unwrap(), &url],
    );
    let answer = ok(
        served.root(),
        "openssl",
        &[
            "ocsp",
            "-no_nonce",
            "-respin",
            "get.der",
            "-issuer",
            "ca/ca.pem",
            "-cert",
            "agent.pem",
            "-CAfile",
            "ca/ca.pem",
        ],
    );
    assert!(answer.contains("Response verify OK"), "{answer}");
    assert!(answer.contains("agent.pem: good"), "{answer}");
}

#[test]
fn the_crl_at_its_distribution_point_revokes_for_openssl_verify() {
    let served = Served::start();
    let fetch_crl = || {
        let crl_url = format!("{}/crl", served.url);
        ok(served.root(), "curl", &["-sf", "-o", "crl.der", &crl_url]);
        ok(
            served.root(),
            "openssl",
            &["crl", "-inform", "DER", "-in", "crl.der", "-out", "crl.pem"],
        );
        run(
            served.root(),
            "openssl",
            &[
                "verify",
                "-crl_check",
                "-CAfile",
                "ca/ca.pem",
                "-CRLfile",
                "crl.pem",
                "agent.pem",
            ],
        )
    };
    let before = fetch_crl();
    assert!(before.status.success(), "{}", text(&before.stderr));
    let crl_text = ok(
        served.root(),
        "openssl",
        &["crl", "-in", "crl.pem", "-noout", "-text"],
    );
    assert!(crl_text.contains("Next Update"), "{crl_text}");
    served.revoke(&served.serial(), "superseded");
    // The server notices the change within its poll interval.
    let mut after = fetch_crl();
    for _ in 0..50 {
        if !after.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        after = fetch_crl();
    }
    let out = text(&after.stdout) + &text(&after.stderr);
    assert!(!after.status.success());
    assert!(out.contains("certificate revoked"), "{out}");
}

/// curl on /watch; its output lines arrive on the receiver.
struct Watch {
    curl: Child,
    lines: mpsc::Receiver<String>,
}

impl Watch {
    fn open(served: &Served, last_event_id: Option<&str>) -> Watch {
        let mut args = vec!["-sN".to_string(), "--max-time".into(), "30".into()];
        if let Some(id) = last_event_id {
            args.extend(["-H".into(), format!("Last-Event-ID: {id}")]);
        }
        args.push(format!("{}/watch", served.url));
        let mut curl = Command::new("curl")
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = curl.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Watch { curl, lines }
    }

    /// The next event's name and its data, parsed.
    fn next_event(&self) -> (String, serde_json::Value) {
        let mut name = None;
        loop {
            let line = self.lines.recv_timeout(Duration::from_secs(20)).unwrap();
            if let Some(event) = line.strip_prefix("event: ") {
                name = Some(event.to_string());
            } else if let (Some(data), Some(event)) = (line.strip_prefix("data: "), &name) {
                return (event.clone(), serde_json::from_str(data).unwrap());
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.curl.kill();
        let _ = self.curl.wait();
    }
}

#[test]
fn the_watch_stream_announces_a_revocation() {
    let served = Served::start();
    let watch = Watch::open(&served, None);
    // The greeting first: the subscription is live.
    assert_eq!(watch.next_event().0, "hello");
    let serial = served.serial();
    served.revoke(&serial, "keyCompromise");
    let (event, data) = watch.next_event();
    assert_eq!(event, "revoked");
    assert_eq!(data["serial"], serial.as_str());
    assert_eq!(data["reason"], "keyCompromise");
    // Like a CRL, the public stream names no agent.
    assert!(data.get("agent_id").is_none(), "{data}");
}

#[test]
fn the_watch_stream_never_announces_issuance_live_or_in_replay() {
    let served = Served::start();
    // From the very first event: a replay would start with the issuance of
    // agent.pem.
    let watch = Watch::open(&served, Some("0"));
    assert_eq!(watch.next_event().0, "hello");
    issue(served.root(), "trading_bot_v2", "second");
    let serial = served.serial();
    served.revoke(&serial, "superseded");
    let (event, data) = watch.next_event();
    assert_eq!(event, "revoked", "{data}");
    assert_eq!(data["serial"], serial.as_str());
    // Replayed later to a newcomer: still only the revocation.
    let late = Watch::open(&served, Some("0"));
    assert_eq!(late.next_event().0, "hello");
    let (event, data) = late.next_event();
    assert_eq!(event, "revoked", "{data}");
    assert_eq!(data["serial"], serial.as_str());
    assert!(data.get("agent_id").is_none(), "{data}");
}

#[test]
fn hostile_requests_get_ocsp_errors_or_http_errors_and_the_server_stays_up() {
    let served = Served::start();
    let status_of = |body: &[u8], name: &str| {
        let (http, file) = served.post(body, name);
        assert_eq!(http, 200, "{name}: OCSP errors travel as OCSP responses");
        served.response_text(&file)
    };
    for (name, body) in [
        ("garbage", b"this is not DER".to_vec()),
        ("empty", Vec::new()),
        ("zeros", vec![0u8; 4096]),
        (
            "nested",
            [[0x30u8, 0x84, 0xff, 0xff, 0xff, 0xff]; 8].concat(),
        ),
    ] {
        let text = status_of(&body, name);
        assert!(text.contains("malformedrequest"), "{name}: {text}");
    }
    let good = served.request_for(&["-issuer", "ca/ca.pem", "-cert", "agent.pem"], "good.der");
    for cut in [1, good.len() / 2, good.len() - 1] {
        let text = status_of(&good[..cut], "truncated");
        assert!(text.contains("malformedrequest"), "cut at {cut}: {text}");
    }
    // A serial this CA never issued.
    let unknown = served.request_for(
        &["-issuer", "ca/ca.pem", "-serial", "0x1234"],
        "unknown.der",
    );
    let text = status_of(&unknown, "unknown");
    assert!(text.contains("successful"), "{text}");
    assert!(text.contains("cert status: unknown"), "{text}");
    // A certificate of another CA: not ours to answer.
    served.kakunin(&["ca", "init", "--dir", "other-ca"]);
    served.kakunin(&[
        "ca",
        "issue",
        "--dir",
        "other-ca",
        "--agent-id",
        "trading_bot_v2",
        "--policy",
        "policy.json",
        "--key-out",
        "other-key.pem",
        "--out",
        "other.pem",
    ]);
    let foreign = served.request_for(
        &["-issuer", "other-ca/ca.pem", "-cert", "other.pem"],
        "foreign.der",
    );
    let text = status_of(&foreign, "foreign");
    assert!(text.contains("unauthorized"), "{text}");
    // HTTP-level abuse.
    let (http, _) = served.post(&vec![0x30u8; 2 * 1024 * 1024], "huge");
    assert_eq!(http, 413);
    let get_garbage = format!("{}/ocsp/%%%not-base64%%%", served.url);
    let resp = served.path("get-garbage.der");
    ok(
        served.root(),
        "curl",
        &["-sf", "-o", resp.to_str().unwrap(), &get_garbage],
    );
    assert!(served.response_text(&resp).contains("malformedrequest"));
    let code = |method: &str, path: &str| {
        let url = format!("{}{path}", served.url);
        ok(
            served.root(),
            "curl",
            &[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                method,
                &url,
            ],
        )
    };
    assert_eq!(code("PUT", "/ocsp"), "405");
    assert_eq!(code("GET", "/nothing-here"), "404");
    // Still serving, and still right.
    assert_eq!(code("GET", "/healthz"), "200");
    assert!(served.openssl_ocsp().contains("agent.pem: good"));
}

#[test]
fn a_corrupt_database_stops_ca_serve_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let kakunin = kakunin_bin();
    ok(
        dir.path(),
        kakunin.to_str().unwrap(),
        &["ca", "init", "--dir", "ca"],
    );
    std::fs::write(dir.path().join("ca/ca.db"), vec![0x42u8; 8192]).unwrap();
    let mut child = Command::new(&kakunin)
        .args(["ca", "serve", "--dir", "ca", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(stderr.contains("ca.db"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

// In-process servers with small limits, spoken to over real sockets with
// hand-written HTTP/1.1, so that misbehaving clients can be played exactly.

/// Test guard against a hang; never a claim about how fast things are.
const GUARD: Duration = Duration::from_secs(30);

struct InProcess {
    dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
    _responder: kakunin::ca_serve::Responder,
}

async fn serve_in_process(options: kakunin::ca_serve::ServeOptions) -> InProcess {
    let dir = new_ca();
    let authority = kakunin_authority::Authority::open(&dir.path().join("ca")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let responder = kakunin::ca_serve::start(authority, listener, options)
        .await
        .unwrap();
    InProcess {
        addr: responder.addr(),
        dir,
        _responder: responder,
    }
}

impl InProcess {
    fn root(&self) -> &Path {
        self.dir.path()
    }
}

struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn parse(raw: &[u8]) -> Option<Reply> {
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = text(&raw[..end]).to_lowercase();
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some(Reply {
            status,
            head,
            body: raw[end + 4..].to_vec(),
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        let prefix = format!("{name}: ");
        self.head
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: ca\r\nConnection: close\r\n\r\n").into_bytes()
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: ca\r\nConnection: close\r\n\
         Content-Type: application/ocsp-request\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// Sends `request` and reads until the server closes; whatever arrived
/// (nothing if the connection was refused or reset).
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut received = Vec::new();
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return received;
    };
    if stream.write_all(request).await.is_err() {
        return received;
    }
    let read = tokio::time::timeout(GUARD, stream.read_to_end(&mut received)).await;
    assert!(read.is_ok(), "the server never closed the connection");
    received
}

async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> Reply {
    let raw = raw_exchange(addr, request).await;
    Reply::parse(&raw).unwrap_or_else(|| panic!("no HTTP answer: {:?}", text(&raw)))
}

/// Reads from a kept-open connection until `wanted` has arrived.
async fn read_until(stream: &mut tokio::net::TcpStream, wanted: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while !text(&seen).contains(wanted) {
        let n = tokio::time::timeout(GUARD, stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before {wanted:?}: {}", text(&seen));
        seen.extend_from_slice(&chunk[..n]);
    }
    text(&seen)
}

/// Retries `attempt` until it holds; the server frees slots when it
/// notices a closed connection, which takes a moment.
async fn eventually<F, Fut>(what: &str, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..600 {
        if attempt().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never: {what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_whose_body_never_completes_gets_408_and_the_connection_closes() {
    let served = serve_in_process(kakunin::ca_serve::ServeOptions {
        body_read_timeout: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    // Declares 100 bytes, sends 2, then waits (the write side stays open).
    let request = b"POST /ocsp HTTP/1.1\r\nHost: ca\r\n\
        Content-Type: application/ocsp-request\r\nContent-Length: 100\r\n\r\n\x30\x62";
    let reply = exchange(served.addr, request).await;
    assert_eq!(reply.status, 408, "{}", reply.head);
    assert_eq!(reply.header("connection"), Some("close"));
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_cap_are_closed_until_one_ends() {
    use tokio::io::AsyncWriteExt;
    let served = serve_in_process(kakunin::ca_serve::ServeOptions {
        max_connections: 2,
        // The held connections idle between requests; keep them.
        header_read_timeout: Duration::from_secs(600),
        ..Default::default()
    })
    .await;
    // Two keep-alive connections, each proven accepted by an answer.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(served.addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: ca\r\n\r\n")
            .await
            .unwrap();
        let answer = read_until(&mut stream, "}").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        held.push(stream);
    }
    let refused = raw_exchange(served.addr, &get("/healthz")).await;
    assert!(refused.is_empty(), "{}", text(&refused));
    drop(held.pop());
    eventually("a slot frees when a connection ends", || async {
        let raw = raw_exchange(served.addr, &get("/healthz")).await;
        Reply::parse(&raw).is_some_and(|r| r.status == 200)
    })
    .await;
}

/// Opens /watch on a kept-open connection: the status and the stream.
async fn open_watch(addr: std::net::SocketAddr) -> (u16, tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /watch HTTP/1.1\r\nHost: ca\r\n\r\n")
        .await
        .unwrap();
    let head = read_until(&mut stream, "\r\n\r\n").await;
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    if status == 200 && !head.contains("event: hello") {
        read_until(&mut stream, "event: hello").await;
    }
    (status, stream)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_address_cannot_take_every_watch_slot() {
    let served = serve_in_process(kakunin::ca_serve::ServeOptions {
        max_watchers_per_ip: 2,
        ..Default::default()
    })
    .await;
    let mut watchers = Vec::new();
    for _ in 0..2 {
        let (status, stream) = open_watch(served.addr).await;
        assert_eq!(status, 200);
        watchers.push(stream);
    }
    let refused = exchange(served.addr, &get("/watch")).await;
    assert_eq!(refused.status, 429, "{}", refused.head);
    assert!(refused.header("retry-after").is_some(), "{}", refused.head);
    // A watcher that leaves gives its slot back.
    drop(watchers.pop());
    eventually("a watch slot frees when its client leaves", || async {
        open_watch(served.addr).await.0 == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_saturated_responder_answers_try_later_and_503_instead_of_queueing() {
    // No permits at all: every piece of blocking work is refused.
    let served = serve_in_process(kakunin::ca_serve::ServeOptions {
        max_ocsp_in_flight: 0,
        ..Default::default()
    })
    .await;
    let request = request_for(
        served.root(),
        &["-issuer", "ca/ca.pem", "-cert", "agent.pem"],
        "req.der",
    );
    let try_later = [0x30, 0x03, 0x0a, 0x01, 0x03];
    for reply in [
        exchange(served.addr, &post("/ocsp", &request)).await,
        exchange(served.addr, &get(&get_path(&request))).await,
    ] {
        assert_eq!(reply.status, 200, "{}", reply.head);
        assert_eq!(reply.body, try_later);
        // A refusal must not be cached.
        assert_eq!(reply.header("cache-control"), Some("no-store"));
    }
    // openssl reads it as tryLater.
    std::fs::write(served.root().join("later.der"), try_later).unwrap();
    let out = run(
        served.root(),
        "openssl",
        &["ocsp", "-respin", "later.der", "-resp_text", "-noverify"],
    );
    let said = (text(&out.stdout) + &text(&out.stderr)).to_lowercase();
    assert!(said.contains("trylater"), "{said}");
    let crl = exchange(served.addr, &get("/crl")).await;
    assert_eq!(crl.status, 503, "{}", crl.head);
    assert!(crl.header("retry-after").is_some(), "{}", crl.head);
    let health = exchange(served.addr, &get("/healthz")).await;
    assert_eq!(health.status, 503, "{}", health.head);
}

#[tokio::test(flavor = "multi_thread")]
async fn ocsp_answers_tell_caches_what_they_may_keep() {
    let served = serve_in_process(kakunin::ca_serve::ServeOptions::default()).await;
    let request = request_for(
        served.root(),
        &["-issuer", "ca/ca.pem", "-cert", "agent.pem"],
        "req.der",
    );
    let posted = exchange(served.addr, &post("/ocsp", &request)).await;
    assert_eq!(posted.status, 200);
    assert_eq!(posted.header("cache-control"), Some("no-store"));
    let fetched = exchange(served.addr, &get(&get_path(&request))).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(
        fetched.header("cache-control"),
        Some("max-age=60, public, no-transform, must-revalidate")
    );
    // malformedRequest over GET: not cacheable.
    let garbage = exchange(served.addr, &get("/ocsp/AAAA")).await;
    assert_eq!(garbage.status, 200);
    assert_eq!(garbage.header("cache-control"), Some("no-store"));
}

fn crl_number(der: &[u8]) -> u64 {
    let (_, crl) = x509_parser::parse_x509_crl(der).unwrap();
    crl.crl_number().unwrap().to_string().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_crl_requests_after_a_revocation_signs_one_crl() {
    let served = serve_in_process(kakunin::ca_serve::ServeOptions::default()).await;
    let first = exchange(served.addr, &get("/crl")).await;
    assert_eq!(first.status, 200);
    let before = crl_number(&first.body);
    // The server announces a revocation only after it has taken note of
    // it, and from then on its cached CRL is stale.
    let (status, mut watch) = open_watch(served.addr).await;
    assert_eq!(status, 200);
    let serial = serial_of(served.root(), "agent.pem");
    ok(
        served.root(),
        kakunin_bin().to_str().unwrap(),
        &[
            "ca",
            "revoke",
            "--dir",
            "ca",
            "--serial",
            &serial,
            "--reason",
            "superseded",
        ],
    );
    read_until(&mut watch, "event: revoked").await;
    let burst: Vec<_> = (0..16)
        .map(|_| {
            let addr = served.addr;
            tokio::spawn(async move { exchange(addr, &get("/crl")).await })
        })
        .collect();
    for request in burst {
        let reply = request.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.head);
        assert_eq!(crl_number(&reply.body), before + 1);
    }
}

#[test]
fn a_certificate_scheduled_for_revocation_is_not_vouched_for_past_it() {
    let served = Served::start();
    served.kakunin(&[
        "ca",
        "rotate",
        "--dir",
        "ca",
        "--agent-id",
        "trading_bot_v2",
        "--grace",
        "120",
        "--out",
        "rotated.pem",
    ]);
    let request = served.request_for(&["-issuer", "ca/ca.pem", "-cert", "agent.pem"], "old.der");
    let (http, answer) = served.post(&request, "old");
    assert_eq!(http, 200);
    let der = std::fs::read(answer).unwrap();
    let cert = std::fs::read_to_string(served.path("agent.pem")).unwrap();
    let issuer = std::fs::read_to_string(served.path("ca/ca.pem")).unwrap();
    let der_of = |pem: &str| {
        kakunin_signer::parse_certificate_chain("pem", pem.as_bytes()).unwrap()[0]
            .as_ref()
            .to_vec()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let verified =
        kakunin_authority::ocsp::verify_response(&der, &der_of(&cert), &der_of(&issuer), now, None)
            .unwrap();
    assert_eq!(verified.status, kakunin_authority::CertStatus::Good);
    let next_update = verified.next_update.unwrap();
    assert!(
        next_update <= now + 121,
        "nextUpdate {next_update} is past the scheduled revocation (now {now} + 120 s)"
    );
}
