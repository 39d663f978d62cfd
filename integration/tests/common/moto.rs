//! moto's server: a KMS-compatible service (the KMS JSON API, with real
//! key generation and signatures) on a loopback port, from the venv that
//! scripts/python-env.sh makes. Keys are created and changed through the
//! real AWS SDK, as an operator's tooling would.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use aws_sdk_kms::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

use super::venv_python;

/// moto answers for this region; key ARNs name it.
pub const REGION: &str = "eu-west-1";

/// The environment a process needs to reach moto with the SDK's standard
/// chain: static test credentials, and nothing read from ~/.aws or the
/// instance metadata service.
pub fn aws_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", REGION.into()),
        ("AWS_CONFIG_FILE", "/dev/null".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

pub struct Moto {
    child: Child,
    pub addr: SocketAddr,
    /// Some until drop, which shuts it down without blocking (tests drop
    /// this inside their own runtime).
    runtime: Option<tokio::runtime::Runtime>,
    client: Client,
}

/// A key moto made: its id and its ARN (what `aws-kms:` takes).
#[derive(Debug, Clone)]
pub struct KmsKey {
    pub id: String,
    pub arn: String,
}

impl Moto {
    pub fn start() -> Moto {
        // moto cannot report a port it picked; take a free one and hand it
        // over (the gap between the two is the only race, and tests retry
        // nothing on it: a clash fails loudly).
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let child = Command::new(venv_python())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto's server (moto[server] in the test venv)");
        // Its own runtime, driven by its own thread: tests call this from
        // inside theirs, where block_on is not allowed.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let client = sdk_client(&format!("http://{addr}"));
        let mut moto = Moto {
            child,
            addr,
            runtime: Some(runtime),
            client,
        };
        moto.wait_ready();
        moto
    }

    /// Runs one SDK call on the harness's runtime and waits for it.
    fn call<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        let runtime = self.runtime.as_ref().expect("runtime until drop");
        runtime.spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("moto answered within 60 s")
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("moto's server exited at start: {status}");
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
                && self.call(self.client.list_keys().limit(1).send()).is_ok()
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "moto's server did not answer on {} within 60 s",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn create_key(&self, spec: &str) -> KmsKey {
        let out = self
            .call(
                self.client
                    .create_key()
                    .key_usage(KeyUsageType::SignVerify)
                    .key_spec(KeySpec::from(spec))
                    .description("kakunin test agent key")
                    .send(),
            )
            .expect("CreateKey");
        let meta = out.key_metadata.expect("key metadata");
        KmsKey {
            id: meta.key_id,
            arn: meta.arn.expect("key ARN"),
        }
    }

    pub fn alias(&self, key: &KmsKey, name: &str) -> String {
        self.call(
            self.client
                .create_alias()
                .alias_name(format!("alias/{name}"))
                .target_key_id(&key.id)
                .send(),
        )
        .expect("CreateAlias");
        format!("arn:aws:kms:{REGION}:123456789012:alias/{name}")
    }

    pub fn disable(&self, key: &KmsKey) {
        self.call(self.client.disable_key().key_id(&key.id).send())
            .expect("DisableKey");
    }

    pub fn schedule_deletion(&self, key: &KmsKey) {
        self.call(
            self.client
                .schedule_key_deletion()
                .key_id(&key.id)
                .pending_window_in_days(7)
                .send(),
        )
        .expect("ScheduleKeyDeletion");
    }

    /// The key's public key as PEM SubjectPublicKeyInfo, for
    /// `kakunin ca issue --public-key`.
    pub fn public_key_pem(&self, key: &KmsKey) -> String {
        pem_block("PUBLIC KEY", &self.public_key_der(&key.id))
    }

    /// The DER SubjectPublicKeyInfo of a key (by id or ARN).
    pub fn public_key_der(&self, key_id: &str) -> Vec<u8> {
        let out = self
            .call(self.client.get_public_key().key_id(key_id).send())
            .expect("GetPublicKey");
        out.public_key.expect("public key").into_inner()
    }
}

impl Moto {
    /// Stops the server: from now on its port refuses connections.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sdk_client(endpoint: &str) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(aws_config::BehaviorVersion::v2026_01_12())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "kakunin-tests",
        ))
        .http_client(http)
        .build();
    Client::from_conf(config)
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}
