//! Shared harness: PKI made by the project's own CA code, the in-process mTLS
//! exchange, and `kakunin proxy` as a real child process.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod kms;
pub mod moto;
pub mod softhsm;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use kakunin::demo::exchange::{Exchange, ExchangeTls};
use kakunin_authority::{
    AgentRequest, Authority, InitOptions, ServerRequest, SubjectKey, Validity,
};

pub const EXCHANGE_HOST: &str = "api.exchange.com";

/// The seed's policy plus an action rule, as most tests use it.
pub const POLICY: &str = r#"{
  "agent_id": "trading_bot_v2",
  "execution_constraints": { "allowed_regions": ["eu-west-1"], "max_concurrent_trades": 5 },
  "network_rules": {
    "allowed_hosts": ["api.exchange.com", "market-data.provider.com", "localhost"],
    "denied_hosts": ["*.internal-network.local", "169.254.169.254"]
  },
  "actions": [{
    "name": "submit_trade",
    "match": { "method": "POST", "path": "/v1/trades" },
    "body": { "/market": { "in": ["EUR_USD", "GBP_USD"] }, "/size": { "max": 50000 } }
  }]
}"#;

/// The kakunin binary built beside this test executable.
pub fn kakunin_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/kakunin
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .join("kakunin");
    assert!(
        bin.exists(),
        "{} not found: build it first (cargo build -p kakunin)",
        bin.display()
    );
    bin
}

/// `kakunin ca serve` for the agents' CA, in-process on its own thread and
/// runtime (tests may be synchronous), stoppable to test a responder outage.
pub struct ResponderThread {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ResponderThread {
    pub fn start(ca_dir: &Path, listener: std::net::TcpListener) -> ResponderThread {
        let addr = listener.local_addr().unwrap();
        let authority = Authority::open(ca_dir).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, started) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                listener.set_nonblocking(true).unwrap();
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let responder = kakunin::ca_serve::start(
                    authority,
                    listener,
                    kakunin::ca_serve::ServeOptions::default(),
                )
                .await
                .unwrap();
                ready.send(()).unwrap();
                let _ = stopped.await;
                responder.shutdown();
            });
        });
        started.recv_timeout(Duration::from_secs(10)).unwrap();
        ResponderThread {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stops answering: the port is closed (connection refused).
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ResponderThread {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct Pki {
    pub dir: tempfile::TempDir,
    pub agents_ca: Authority,
    /// OCSP, CRL and watch stream of the agents' CA (its AIA points here).
    pub responder: ResponderThread,
    pub exchange_ca: Authority,
    pub server_cert: String,
    pub server_key: String,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        // The port is needed before the CA exists: certificates name it.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let agents_ca = Authority::init(
            &dir.path().join("agents-ca"),
            &InitOptions {
                public_url: format!("http://{}", listener.local_addr().unwrap()),
                ..InitOptions::default()
            },
        )
        .unwrap();
        let responder = ResponderThread::start(&dir.path().join("agents-ca"), listener);
        let exchange_ca = Authority::init(
            &dir.path().join("exchange-ca"),
            &InitOptions {
                common_name: "Exchange Root CA".into(),
                ..InitOptions::default()
            },
        )
        .unwrap();
        let server = exchange_ca
            .issue_server(&ServerRequest {
                names: vec![EXCHANGE_HOST.into(), "market-data.provider.com".into()],
                validity: Validity::Days(1),
            })
            .unwrap();
        Pki {
            dir,
            agents_ca,
            responder,
            exchange_ca,
            server_cert: server.cert_pem,
            server_key: server.key_pem.unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Issues an agent certificate (new key) for `policy_text`.
    pub fn issue(&self, policy_text: &str, validity: Validity) -> kakunin_authority::Issued {
        let policy = kakunin_policy::Policy::from_json_str("policy.json", policy_text).unwrap();
        self.agents_ca
            .issue_agent(&AgentRequest {
                agent_id: policy.agent_id(),
                policy: &policy,
                key: SubjectKey::Generate,
                validity,
            })
            .unwrap()
    }

    /// Writes policy.json, agent.pem and agent-key.pem for `policy`.
    pub fn agent(&self, policy_text: &str) -> (PathBuf, PathBuf, PathBuf) {
        self.agent_with(policy_text, Validity::Hours(1))
    }

    /// `agent`, with a chosen validity.
    pub fn agent_with(&self, policy_text: &str, validity: Validity) -> (PathBuf, PathBuf, PathBuf) {
        let issued = self.issue(policy_text, validity);
        let (policy_path, cert, key) = (
            self.path("policy.json"),
            self.path("agent.pem"),
            self.path("agent-key.pem"),
        );
        std::fs::write(&policy_path, policy_text).unwrap();
        std::fs::write(&cert, issued.cert_pem).unwrap();
        std::fs::write(&key, issued.key_pem.unwrap()).unwrap();
        (policy_path, cert, key)
    }

    pub async fn exchange(&self) -> Exchange {
        Exchange::start(
            "127.0.0.1:0".parse().unwrap(),
            &ExchangeTls {
                server_chain_pem: &self.server_cert,
                server_key_pem: &self.server_key,
                client_ca_pem: self.agents_ca.certificate_pem(),
                tls12_only: false,
            },
        )
        .await
        .unwrap()
    }

    /// A kakunin.toml for `policy_text`, pinning the exchange hosts to `upstream`.
    pub fn config(&self, policy_text: &str, upstream: SocketAddr, extra: &str) -> PathBuf {
        let (policy, cert, key) = self.agent(policy_text);
        self.write_config(&policy, &cert, &key, upstream, extra)
    }

    /// A kakunin.toml for an identity made elsewhere.
    pub fn write_config(
        &self,
        policy: &Path,
        cert: &Path,
        key: &Path,
        upstream: SocketAddr,
        extra: &str,
    ) -> PathBuf {
        let key = format!("file:{}", key.display());
        self.write_config_for_key(policy, cert, &key, upstream, extra, "")
    }

    /// A kakunin.toml whose key is any reference (`aws-kms:`, `pkcs11:`,
    /// `file:`); `identity_extra` goes into its [identity] section.
    pub fn write_config_for_key(
        &self,
        policy: &Path,
        cert: &Path,
        key: &str,
        upstream: SocketAddr,
        extra: &str,
        identity_extra: &str,
    ) -> PathBuf {
        let text = format!(
            r#"listen = "127.0.0.1:0"
policy = "{policy}"
region = "eu-west-1"
audit_log = "{audit}"
{extra}
[identity]
cert = "{cert}"
key = "{key}"
issuer = "{issuer}"
{identity_extra}
[upstream]
ca = "{ca}"
[upstream.resolve]
"api.exchange.com" = "{upstream}"
"market-data.provider.com" = "{upstream}"
"#,
            policy = policy.display(),
            audit = self.path("audit.jsonl").display(),
            cert = cert.display(),
            ca = self.exchange_ca.certificate_path().display(),
            issuer = self.agents_ca.certificate_path().display(),
        );
        let path = self.path("kakunin.toml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Pki {
    /// The audit log's records of one event type.
    pub fn audit_events(&self, event_type: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|record| record["event_type"] == event_type)
            .collect()
    }

    /// Writes policy.json and agent.pem: an agent certificate for a public
    /// key held elsewhere (KMS, a token), issued by `kakunin ca issue
    /// --public-key`. Returns the certificate's DER.
    pub fn certify_public_key(&self, policy_text: &str, spki_der: &[u8]) -> Vec<u8> {
        use rustls_pki_types::pem::PemObject;
        std::fs::write(self.path("policy.json"), policy_text).unwrap();
        let public = self.path("agent-public.pem");
        std::fs::write(&public, pem("PUBLIC KEY", spki_der)).unwrap();
        let cert = self.path("agent.pem");
        self.ca(&[
            "issue",
            "--agent-id",
            "trading_bot_v2",
            "--policy",
            self.path("policy.json").to_str().unwrap(),
            "--public-key",
            public.to_str().unwrap(),
            "--out",
            cert.to_str().unwrap(),
        ]);
        rustls_pki_types::CertificateDer::from_pem_file(&cert)
            .unwrap()
            .to_vec()
    }

    /// `kakunin ca ARGS --dir <agents' CA>`, which must succeed; its stdout.
    pub fn ca(&self, args: &[&str]) -> String {
        let output = Command::new(kakunin_bin())
            .arg("ca")
            .args(args)
            .arg("--dir")
            .arg(self.path("agents-ca"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "kakunin ca {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// The serial of the first certificate in a PEM file, as the proxy logs it.
pub fn serial_of(cert_pem_path: &Path) -> String {
    let pem = std::fs::read(cert_pem_path).unwrap();
    let chain = kakunin_signer::parse_certificate_chain("cert", &pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(chain[0].as_ref()).unwrap();
    kakunin_authority::serial_hex(cert.raw_serial())
}

/// `kakunin proxy` as a child process; killed on drop.
pub struct ProxyProcess {
    pub addr: SocketAddr,
    pub metrics: Option<SocketAddr>,
    child: Child,
}

/// What the proxy's stderr said while it started.
enum Started {
    Listening(SocketAddr),
    Metrics(SocketAddr),
    Other(String),
}

impl ProxyProcess {
    pub fn start(config: &Path) -> ProxyProcess {
        Self::start_with(config, &[])
    }

    pub fn start_with(config: &Path, args: &[&str]) -> ProxyProcess {
        Self::try_start(config, args, &[])
            .unwrap_or_else(|stderr| panic!("proxy did not start; its stderr:\n{stderr}"))
    }

    /// Starts the proxy with extra environment; `Err` holds its stderr when
    /// it exits (or stays silent for 30 s) instead of listening.
    pub fn try_start(
        config: &Path,
        args: &[&str],
        env: &[(&str, String)],
    ) -> Result<ProxyProcess, String> {
        let mut child = Command::new(kakunin_bin())
            .arg("proxy")
            .arg("--config")
            .arg(config)
            .args(args)
            .env("KAKUNIN_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kakunin proxy");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("kakunin: listening on ") {
                    let _ = tx.send(Started::Listening(addr.parse::<SocketAddr>().unwrap()));
                } else if let Some(addr) = line.strip_prefix("kakunin: metrics on ") {
                    let _ = tx.send(Started::Metrics(addr.parse::<SocketAddr>().unwrap()));
                } else {
                    let _ = tx.send(Started::Other(line.clone()));
                    eprintln!("[proxy] {line}");
                }
            }
        });
        let mut seen = Vec::new();
        let mut metrics = None;
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(Started::Listening(addr)) => {
                    return Ok(ProxyProcess {
                        addr,
                        metrics,
                        child,
                    })
                }
                Ok(Started::Metrics(addr)) => metrics = Some(addr),
                Ok(Started::Other(line)) => seen.push(line),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(seen.join("\n"));
                }
            }
        }
    }

    /// How many threads the proxy process has now (Linux /proc).
    pub fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.child.id()))
            .expect("the proxy is running")
            .count()
    }

    /// The proxy's /metrics text (it must have been started with
    /// `metrics_listen`).
    pub fn metrics(&self) -> String {
        let addr = self.metrics.expect("proxy started without metrics_listen");
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .arg(format!("http://{addr}/metrics"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// One sample's value from /metrics, e.g.
    /// `kakunin_key_sign_calls_total{backend="aws-kms"}`; 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends SIGHUP (reload the certificate).
    pub fn hangup(&self) {
        // The shell's builtin: a minimal machine may have no kill binary.
        let status = Command::new("sh")
            .args(["-c", &format!("kill -HUP {}", self.child.id())])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What curl got back.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }
}

/// Runs curl with the proxy in `http_proxy` (curl reads only the lower-case
/// variable for http URLs).
pub fn curl(proxy: &ProxyProcess, args: &[&str]) -> Answer {
    run_curl(proxy.url(), args.iter().map(|a| a.to_string()).collect())
}

/// A JSON POST to `url` through the proxy (an action, so it is signed).
pub fn post_json(proxy: &ProxyProcess, url: &str, body: &str) -> Answer {
    curl(
        proxy,
        &[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "--data",
            body,
            url,
        ],
    )
}

/// `curl` for async tests: runs on the blocking pool.
pub async fn curl_async(proxy_url: String, args: Vec<String>) -> Answer {
    tokio::task::spawn_blocking(move || run_curl(proxy_url, args))
        .await
        .unwrap()
}

fn run_curl(proxy_url: String, args: Vec<String>) -> Answer {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(&args)
        .env("http_proxy", proxy_url)
        .env_remove("HTTP_PROXY")
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .output()
        .expect("curl must be installed (the test command installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", stdout.as_str()));
    Answer {
        status: status.trim().parse().unwrap_or_else(|_| {
            panic!(
                "curl failed: {}{}",
                stdout,
                String::from_utf8_lossy(&output.stderr)
            )
        }),
        body: body.to_string(),
    }
}

/// Runs another HTTP client (python, node) to completion off the async
/// runtime; asserts it succeeded and returns its trimmed standard output.
pub async fn run_client(mut command: Command) -> String {
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("client program must be installed (the test command installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Writes raw bytes to the proxy and returns everything it answers until it
/// closes the connection or `wait` passes. Returns "" when nothing came.
pub fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    let _ = stream.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                // One response is all these tests want.
                if response_complete(&out) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn response_complete(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    body.len() >= length
}

/// The status code of a raw HTTP response ("" → 0).
pub fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A `kakunin` subcommand as a child process that announces its address on
/// stderr as `<ready_prefix><addr>`; killed on drop.
pub struct ListeningProcess {
    pub addr: SocketAddr,
    child: Child,
}

impl ListeningProcess {
    /// Starts `kakunin ARGS` and waits (30 s at most) for the ready line;
    /// `Err` holds the stderr lines if it exited or never said it.
    pub fn start(args: &[String], ready_prefix: &str) -> Result<ListeningProcess, String> {
        let mut child = Command::new(kakunin_bin())
            .args(args)
            .env("KAKUNIN_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kakunin");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let prefix = ready_prefix.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix(prefix.as_str()) {
                    let _ = tx.send(Ok(addr.parse::<SocketAddr>().unwrap()));
                } else {
                    eprintln!("[kakunin] {line}");
                    let _ = tx.send(Err(line));
                }
            }
        });
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(Ok(addr)) => return Ok(ListeningProcess { addr, child }),
                Ok(Err(line)) => seen.push(line),
                // The sender is gone: the process closed stderr (exited).
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(seen.join("\n"));
                }
            }
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ListeningProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The workspace root (scripts/ and integration/tests/py/ live there).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The venv python: `KAKUNIN_PYTHON` when scripts/test.sh has made it
/// already, else what scripts/python-env.sh prints last. A failure to make
/// it fails the test: interop is not optional.
pub fn venv_python() -> PathBuf {
    if let Some(python) = std::env::var_os("KAKUNIN_PYTHON").filter(|p| !p.is_empty()) {
        let python = PathBuf::from(python);
        assert!(
            python.exists(),
            "KAKUNIN_PYTHON={} does not exist",
            python.display()
        );
        return python;
    }
    let out = Command::new("bash")
        .arg("scripts/python-env.sh")
        .current_dir(workspace_root())
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "scripts/python-env.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let python = stdout.lines().last().unwrap_or_default().trim();
    assert!(!python.is_empty(), "scripts/python-env.sh printed nothing");
    PathBuf::from(python)
}

/// DER as a PEM block (64-column base64).
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        text.push_str(&String::from_utf8_lossy(line));
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

/// Checks the exchange's echo of a signed request with kakunin-verifier,
/// against the agents' CA, as a receiver would: the agent certificate
/// `cert_der` came over mutual TLS, and the signature must be accepted.
pub fn verify_signed_echo(pki: &Pki, cert_der: &[u8], answer: &Answer) {
    use kakunin_verifier::{Outcome, RevocationMode, Verifier, VerifierConfig};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    assert_eq!(answer.status, 200, "{}", answer.body);
    let echo = answer.json();
    assert_eq!(echo["client_cert_cn"], "trading_bot_v2", "{echo}");
    let mut headers = http::HeaderMap::new();
    for (name, value) in echo["headers"].as_object().unwrap() {
        headers.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.as_str().unwrap().parse().unwrap(),
        );
    }
    assert!(headers.contains_key("signature"), "not signed: {echo}");
    let anchor = CertificateDer::from_pem_slice(pki.agents_ca.certificate_pem().as_bytes())
        .unwrap()
        .into_owned();
    let mut config = VerifierConfig::new(vec![anchor]);
    config.revocation = RevocationMode::Off;
    let verifier = Verifier::new(config).unwrap();
    let chain = [CertificateDer::from(cert_der.to_vec())];
    let request = kakunin_verifier::Request {
        method: echo["method"].as_str().unwrap(),
        scheme: "https",
        authority: headers["host"].to_str().unwrap(),
        path_and_query: echo["path"].as_str().unwrap(),
        headers: &headers,
        body: echo["body"].as_str().unwrap().as_bytes(),
        peer_chain: &chain,
    };
    match verifier.verify(&request, std::time::SystemTime::now()) {
        Outcome::Accepted(verdict) => assert_eq!(verdict.agent.agent_id, "trading_bot_v2"),
        other => panic!("the verifier refused the request: {other:?}"),
    }
}
