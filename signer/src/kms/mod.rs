//! `aws-kms:` keys: the private key stays in AWS KMS; this process holds
//! the key's ARN and public key, and asks KMS for every signature.

mod client;
mod errors;
mod reference;
mod spec;

use std::future::Future;
use std::time::Duration;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeyState, KeyUsageType};
use aws_sdk_kms::Client;
use rustls::SignatureScheme;

use crate::backend::{KeyAlgorithm, KeyBackend, KeyError, Locality, PendingSignature};
use crate::options::{Admission, Admitted, KeyOptions};
use client::{KmsRuntime, Stopped};

/// Opening a key is allowed at least this long: at start the credential
/// chain may have to ask the instance metadata service or STS first.
const MIN_OPEN_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(crate) struct AwsKmsKey {
    key_id: String,
    described: String,
    algorithm: KeyAlgorithm,
    spki: Vec<u8>,
    client: Client,
    deadline: Duration,
    admission: Admission,
    // Last, so the client's tasks are gone before their runtime is.
    runtime: KmsRuntime,
}

impl AwsKmsKey {
    /// Opens `reference` (what follows `aws-kms:`): reads the public key
    /// and checks the key can sign now, so a wrong, disabled or deleted key
    /// fails at start with KMS's own reason.
    pub(crate) fn open(reference: &str, options: &KeyOptions) -> Result<Self, KeyError> {
        let described = format!("aws-kms:{reference}");
        let open_error = |reason: String| KeyError::Open {
            key: described.clone(),
            reason,
        };
        let key = reference::parse(reference)
            .map_err(|r| open_error(format!("bad key reference: {r}")))?;
        let runtime = KmsRuntime::new().map_err(open_error)?;
        let open_deadline = options.deadline.max(MIN_OPEN_DEADLINE);
        let mut open_options = options.clone();
        open_options.deadline = open_deadline;

        let key_id = key.key_id.clone();
        let opened = runtime
            .run(open_deadline, async move {
                let client = client::client(key.clone(), open_options).await?;
                let public = client
                    .get_public_key()
                    .key_id(&key.key_id)
                    .send()
                    .await
                    .map_err(|e| reason_of(&e, open_deadline))?;
                // DescribeKey tells a disabled or deleted key apart before
                // the first handshake does. A key policy may rightly not
                // grant it (Sign and GetPublicKey are all the proxy needs):
                // then the state is learnt at the first signature.
                let state = match client.describe_key().key_id(&key.key_id).send().await {
                    Ok(described) => described.key_metadata.map(|m| m.key_state),
                    Err(e) if is_access_denied(&e) => None,
                    Err(e) => return Err(reason_of(&e, open_deadline)),
                };
                Ok::<_, String>((client, public, state.flatten()))
            })
            .ok_or_else(|| open_error(format!("KMS did not answer within {open_deadline:?}")))?
            .map_err(open_error)?;
        let (client, public, state) = opened;

        match state {
            None | Some(KeyState::Enabled) => {}
            Some(other) => {
                return Err(open_error(format!(
                    "the key is {}, not Enabled",
                    other.as_str()
                )))
            }
        }
        if public.key_usage != Some(KeyUsageType::SignVerify) {
            return Err(open_error(format!(
                "the key's usage is {}, not SIGN_VERIFY",
                public.key_usage.as_ref().map_or("unknown", |u| u.as_str())
            )));
        }
        let spki = public
            .public_key
            .map(Blob::into_inner)
            .filter(|der| !der.is_empty())
            .ok_or_else(|| open_error("KMS returned no public key".into()))?;
        let algorithm = KeyAlgorithm::of_spki(&spki).ok_or_else(|| {
            open_error("the key's public key is not EC P-256, EC P-384, RSA or Ed25519".into())
        })?;
        // Older KMS-compatible services leave KeySpec out; when it is there
        // it must say what the public key says.
        if let Some(spec) = public.key_spec.as_ref() {
            let named = spec::algorithm_for(spec).map_err(open_error)?;
            if named != algorithm {
                return Err(open_error(format!(
                    "KMS says the key is {} but its public key is {algorithm}",
                    spec.as_str()
                )));
            }
        }
        Ok(AwsKmsKey {
            key_id,
            described,
            algorithm,
            spki,
            client,
            deadline: options.deadline,
            admission: Admission::new(options.max_pending),
            runtime,
        })
    }
}

fn reason_of<E, R>(err: &aws_sdk_kms::error::SdkError<E, R>, deadline: Duration) -> String
where
    E: aws_sdk_kms::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    errors::classify("the key", deadline, err).to_string()
}

fn is_access_denied<E, R>(err: &aws_sdk_kms::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_kms::error::ProvideErrorMetadata,
{
    err.as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "AccessDeniedException")
}

impl KeyBackend for AwsKmsKey {
    fn describe(&self) -> String {
        self.described.clone()
    }

    fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn public_key_spki(&self) -> &[u8] {
        &self.spki
    }

    fn locality(&self) -> Locality {
        Locality::RemoteAsync
    }

    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let (_admitted, call) = self.sign_call(scheme, message)?;
        self.runtime
            .run(self.deadline, call)
            .unwrap_or_else(|| Err(timed_out(&self.described, self.deadline)))
    }

    fn sign_async(&self, scheme: SignatureScheme, message: &[u8]) -> PendingSignature {
        let (admitted, call) = match self.sign_call(scheme, message) {
            Ok(started) => started,
            Err(refused) => return Box::pin(std::future::ready(Err(refused))),
        };
        let answer = self.runtime.start(self.deadline, call);
        let (key, deadline) = (self.described.clone(), self.deadline);
        Box::pin(async move {
            // Holds the place in the queue until the answer is in.
            let _admitted = admitted;
            match answer.await {
                Ok(Some(signed)) => signed,
                Ok(None) => Err(timed_out(&key, deadline)),
                Err(Stopped) => Err(KeyError::Sign {
                    key,
                    reason: "the KMS client shut down during the call".into(),
                }),
            }
        })
    }
}

impl AwsKmsKey {
    /// One Sign call for `message`, admitted (or refused as busy) but not
    /// yet started: both `sign` and `sign_async` run it on the KMS runtime.
    fn sign_call(
        &self,
        scheme: SignatureScheme,
        message: &[u8],
    ) -> Result<
        (
            Admitted,
            impl Future<Output = Result<Vec<u8>, KeyError>> + Send + 'static,
        ),
        KeyError,
    > {
        let call =
            spec::plan(self.algorithm, scheme, message).map_err(|reason| KeyError::Sign {
                key: self.described.clone(),
                reason,
            })?;
        let admitted = self.admission.enter(&self.described)?;
        let request = self
            .client
            .sign()
            .key_id(&self.key_id)
            .message(Blob::new(call.message))
            .message_type(call.message_type)
            .signing_algorithm(call.algorithm);
        let deadline = self.deadline;
        let key = self.described.clone();
        let call = async move {
            match request.send().await {
                Ok(signed) => signed
                    .signature
                    .map(Blob::into_inner)
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| KeyError::Sign {
                        key,
                        reason: "KMS answered without a signature".into(),
                    }),
                Err(e) => Err(errors::classify(&key, deadline, &e)),
            }
        };
        Ok((admitted, call))
    }
}

fn timed_out(key: &str, after: Duration) -> KeyError {
    KeyError::Timeout {
        key: key.to_string(),
        after,
    }
}
