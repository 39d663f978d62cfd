//! What the KMS tests share, whatever speaks KMS's API (moto's server or
//! the KMS stand-in): an admin client on the real AWS SDK, the environment
//! the proxy needs, and an agent whose key is in "KMS".

use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use aws_sdk_kms::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use kakunin::demo::exchange::Exchange;

use super::{post_json, verify_signed_echo, Answer, Pki, ProxyProcess, POLICY};

/// The region the test services answer for; key ARNs name it.
pub const REGION: &str = "eu-west-1";

pub const TRADE: &str = r#"{"market":"EUR_USD","size":45000}"#;

/// The environment a process needs to reach a test KMS with the SDK's
/// standard chain: static test credentials, and nothing read from ~/.aws or
/// the instance metadata service.
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

/// A key made in the test KMS: its id and its ARN (what `aws-kms:` takes).
#[derive(Debug, Clone)]
pub struct KmsKey {
    pub id: String,
    pub arn: String,
}

/// An operator's KMS client (the real SDK) on its own runtime, callable
/// from sync and async tests alike.
pub struct KmsAdmin {
    /// Some until drop, which shuts it down without blocking (tests drop
    /// this inside their own runtime).
    runtime: Option<tokio::runtime::Runtime>,
    client: Client,
}

impl KmsAdmin {
    pub fn new(endpoint: &str) -> KmsAdmin {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
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
        KmsAdmin {
            runtime: Some(runtime),
            client: Client::from_conf(config),
        }
    }

    /// Runs one SDK call on the admin's runtime and waits for it.
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
            .expect("KMS answered within 60 s")
    }

    /// Whether the service answers a ListKeys.
    pub fn answers(&self) -> bool {
        self.call(self.client.list_keys().limit(1).send()).is_ok()
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

    /// Names `key` `alias/NAME`; returns the alias ARN.
    pub fn alias(&self, key: &KmsKey, name: &str) -> String {
        self.call(
            self.client
                .create_alias()
                .alias_name(format!("alias/{name}"))
                .target_key_id(&key.id)
                .send(),
        )
        .expect("CreateAlias");
        let account = key.arn.split(':').nth(4).expect("account in ARN");
        format!("arn:aws:kms:{REGION}:{account}:alias/{name}")
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

    /// The DER SubjectPublicKeyInfo of a key (by id or ARN).
    pub fn public_key_der(&self, key_id: &str) -> Vec<u8> {
        let out = self
            .call(self.client.get_public_key().key_id(key_id).send())
            .expect("GetPublicKey");
        out.public_key.expect("public key").into_inner()
    }
}

impl Drop for KmsAdmin {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// An agent whose key is in the test KMS, and the exchange it trades with
/// (which requires a client certificate from the agent's CA). The
/// certificate is issued for the public key KMS reports.
pub struct KmsAgent {
    pub pki: Pki,
    pub exchange: Exchange,
    pub cert_der: Vec<u8>,
    pub endpoint: String,
}

impl KmsAgent {
    pub async fn new(admin: &KmsAdmin, key: &KmsKey, endpoint: String) -> KmsAgent {
        Self::with_policy(admin, key, endpoint, POLICY).await
    }

    /// An agent certified for (and running) `policy` instead of the seed's.
    pub async fn with_policy(
        admin: &KmsAdmin,
        key: &KmsKey,
        endpoint: String,
        policy: &str,
    ) -> KmsAgent {
        let pki = Pki::new();
        let exchange = pki.exchange().await;
        let cert_der = pki.certify_public_key(policy, &admin.public_key_der(&key.id));
        KmsAgent {
            pki,
            exchange,
            cert_der,
            endpoint,
        }
    }

    /// A config naming the key `aws-kms:{key_ref}`, with `identity` lines
    /// added to its [identity] section, and /metrics on.
    pub fn config(&self, key_ref: &str, identity: &str) -> PathBuf {
        self.pki.write_config_for_key(
            &self.pki.path("policy.json"),
            &self.pki.path("agent.pem"),
            &format!("aws-kms:{key_ref}"),
            self.exchange.addr(),
            "metrics_listen = \"127.0.0.1:0\"",
            &format!("kms_endpoint = \"{}\"\n{identity}", self.endpoint),
        )
    }

    pub fn start(&self, key_ref: &str, identity: &str) -> ProxyProcess {
        ProxyProcess::try_start(&self.config(key_ref, identity), &[], &aws_env())
            .unwrap_or_else(|stderr| panic!("proxy did not start:\n{stderr}"))
    }

    /// The start's failure: the proxy's stderr.
    pub fn refused_start(&self, key_ref: &str, identity: &str) -> String {
        match ProxyProcess::try_start(&self.config(key_ref, identity), &[], &aws_env()) {
            Ok(_) => panic!("the proxy started with aws-kms:{key_ref}"),
            Err(stderr) => stderr,
        }
    }

    /// Checks the exchange's echo of a signed request as a receiver would.
    pub fn verify_echo(&self, answer: &Answer) {
        verify_signed_echo(&self.pki, &self.cert_der, answer);
    }
}

/// The seed's trade, through the proxy: a POST, so it is signed.
pub fn trade(proxy: &ProxyProcess) -> Answer {
    post_json(proxy, "http://api.exchange.com/v1/trades", TRADE)
}
