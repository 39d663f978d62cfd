//! The KMS operations the stand-in answers: JSON request body in, JSON
//! response body (or a KMS exception) out, with KMS's field names.

use std::sync::atomic::AtomicU64;
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::rand::SystemRandom;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::control::{Control, SignOutcome};
use crate::error::KmsError;
use crate::keys::{epoch_seconds, KeySpec, KeyState, KeyTable};

/// KMS's limit on a RAW message to Sign.
const MAX_RAW_MESSAGE: usize = 4096;

/// Every signing algorithm name KMS knows: a known name that does not fit
/// the key is InvalidKeyUsageException, any other name ValidationException.
const KNOWN_SIGNING_ALGORITHMS: &[&str] = &[
    "RSASSA_PSS_SHA_256",
    "RSASSA_PSS_SHA_384",
    "RSASSA_PSS_SHA_512",
    "RSASSA_PKCS1_V1_5_SHA_256",
    "RSASSA_PKCS1_V1_5_SHA_384",
    "RSASSA_PKCS1_V1_5_SHA_512",
    "ECDSA_SHA_256",
    "ECDSA_SHA_384",
    "ECDSA_SHA_512",
    "ED25519_SHA_512",
    "ED25519_PH_SHA_512",
    "SM2DSA",
    "ML_DSA_SHAKE_256",
];

/// What every connection's handler shares.
pub struct Shared {
    pub table: RwLock<KeyTable>,
    pub control: Control,
    pub rng: SystemRandom,
    /// Numbers the `x-amzn-RequestId` of each answer.
    pub requests: AtomicU64,
}

impl Shared {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, KeyTable> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, KeyTable> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The operations answered; stats count any other name as `Unknown`, so a
/// hostile caller cannot grow the table.
pub const OPERATIONS: &[&str] = &[
    "Sign",
    "CreateKey",
    "DescribeKey",
    "GetPublicKey",
    "EnableKey",
    "DisableKey",
    "ScheduleKeyDeletion",
    "CancelKeyDeletion",
    "CreateAlias",
];

/// Runs operation `op` (the part of `X-Amz-Target` after `TrentService.`).
pub async fn dispatch(shared: &Shared, op: &str, body: &[u8]) -> Result<Value, KmsError> {
    match op {
        "Sign" => sign(shared, body).await,
        "CreateKey" => create_key(shared, body),
        "DescribeKey" => describe_key(shared, body),
        "GetPublicKey" => get_public_key(shared, body),
        "EnableKey" => set_enabled(shared, body, true),
        "DisableKey" => set_enabled(shared, body, false),
        "ScheduleKeyDeletion" => schedule_key_deletion(shared, body),
        "CancelKeyDeletion" => cancel_key_deletion(shared, body),
        "CreateAlias" => create_alias(shared, body),
        other => Err(KmsError::unknown_operation(other)),
    }
}

/// Decodes a request body; the SDK sends `{}` for an input without fields,
/// and an empty body is taken the same way.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, KmsError> {
    let body = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        // A missing or mistyped field is what KMS reports as a validation error.
        serde_json::error::Category::Data => KmsError::validation(e.to_string()),
        _ => KmsError::serialization(format!("request body is not valid JSON: {e}")),
    })
}

fn b64_blob(field: &str, text: &str) -> Result<Vec<u8>, KmsError> {
    B64.decode(text)
        .map_err(|e| KmsError::serialization(format!("{field} is not valid base64: {e}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyIdOnly {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SignRequest {
    key_id: String,
    message: String,
    message_type: Option<String>,
    signing_algorithm: String,
    #[serde(default)]
    dry_run: bool,
}

/// Quota first (KMS throttles before it looks at a request), then the added
/// delay as an async sleep so that other calls go on meanwhile, then the work.
async fn sign(shared: &Shared, body: &[u8]) -> Result<Value, KmsError> {
    let control = &shared.control;
    if !control.admit_sign() {
        control.count_sign(SignOutcome::Throttled);
        return Err(KmsError::throttled());
    }
    let _in_flight = control.enter_sign();
    control.wait_delay(Instant::now()).await;
    let result = sign_now(shared, body);
    control.count_sign(match result {
        Ok(_) => SignOutcome::Accepted,
        Err(_) => SignOutcome::Error,
    });
    result
}

fn sign_now(shared: &Shared, body: &[u8]) -> Result<Value, KmsError> {
    let req: SignRequest = parse(body)?;
    let message = b64_blob("Message", &req.message)?;
    match req.message_type.as_deref() {
        None | Some("RAW") => {}
        Some("DIGEST") => {
            return Err(KmsError::validation(
                "MessageType DIGEST is not supported by the KMS stand-in (ring cannot sign a \
                 prehashed message); send the message with MessageType RAW",
            ))
        }
        Some(other) => {
            return Err(KmsError::validation(format!(
                "MessageType {other:?} is not one of RAW, DIGEST, EXTERNAL_MU"
            )))
        }
    }
    if message.is_empty() || message.len() > MAX_RAW_MESSAGE {
        return Err(KmsError::validation(format!(
            "Message must be 1 to {MAX_RAW_MESSAGE} bytes for MessageType RAW, got {}",
            message.len()
        )));
    }
    if !KNOWN_SIGNING_ALGORITHMS.contains(&req.signing_algorithm.as_str()) {
        return Err(KmsError::validation(format!(
            "SigningAlgorithm {:?} is not a KMS signing algorithm",
            req.signing_algorithm
        )));
    }
    let (private, arn, spec) = {
        let table = shared.read();
        let key = table.resolve(&req.key_id)?;
        key.check_usable()?;
        (key.private.clone(), key.info.arn.clone(), key.info.spec)
    };
    let allowed = spec.signing_algorithms();
    // KMS's answer to an algorithm of another key type (ECDSA on an RSA
    // key, RSA on an ECC key, or the other curve's hash).
    let Some(&algorithm) = allowed
        .iter()
        .find(|a| **a == req.signing_algorithm.as_str())
    else {
        return Err(KmsError::new(
            "InvalidKeyUsageException",
            format!(
                "Signing algorithm {} is not compatible with key {arn} (KeySpec {}); use {}",
                req.signing_algorithm,
                spec.as_str(),
                allowed.join(", ")
            ),
        ));
    };
    if req.dry_run {
        return Err(KmsError::new(
            "DryRunOperationException",
            "The request would have succeeded, but the DryRun option is set.",
        ));
    }
    let sig = private
        .sign(algorithm, &shared.rng, &message)
        .map_err(|_| KmsError::new("KMSInternalException", "signing failed"))?;
    Ok(json!({
        "KeyId": arn,
        "Signature": B64.encode(sig),
        "SigningAlgorithm": algorithm,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateKeyRequest {
    key_usage: Option<String>,
    key_spec: Option<String>,
    customer_master_key_spec: Option<String>,
    #[serde(default)]
    description: String,
}

fn create_key(shared: &Shared, body: &[u8]) -> Result<Value, KmsError> {
    let req: CreateKeyRequest = parse(body)?;
    let spec_name = req
        .key_spec
        .or(req.customer_master_key_spec)
        .unwrap_or_else(|| "SYMMETRIC_DEFAULT".to_string());
    let spec: KeySpec = spec_name
        .parse()
        .map_err(|e: crate::Error| KmsError::validation(e.to_string()))?;
    if !spec.can_generate() {
        return Err(KmsError::validation(
            crate::Error::CannotGenerate(spec).to_string(),
        ));
    }
    // KMS's default usage is ENCRYPT_DECRYPT, which an ECC key refuses.
    let usage = req.key_usage.as_deref().unwrap_or("ENCRYPT_DECRYPT");
    if usage != "SIGN_VERIFY" {
        return Err(KmsError::validation(format!(
            "KeyUsage {usage} is not compatible with KeySpec {spec_name}; use SIGN_VERIFY"
        )));
    }
    let mut table = shared.write();
    let info = table
        .create(spec, req.description)
        .map_err(|e| KmsError::new("KMSInternalException", e.to_string()))?;
    let key = table.resolve(&info.key_id)?;
    Ok(json!({ "KeyMetadata": key.metadata() }))
}

fn describe_key(shared: &Shared, body: &[u8]) -> Result<Value, KmsError> {
    let req: KeyIdOnly = parse(body)?;
    let table = shared.read();
    let key = table.resolve(&req.key_id)?;
    Ok(json!({ "KeyMetadata": key.metadata() }))
}

fn get_public_key(shared: &Shared, body: &[u8]) -> Result<Value, KmsError> {
    let req: KeyIdOnly = parse(body)?;
    let table = shared.read();
    let key = table.resolve(&req.key_id)?;
    key.check_usable()?;
    let spec = key.info.spec;
    Ok(json!({
        "KeyId": key.info.arn,
        "PublicKey": B64.encode(&key.spki),
        "CustomerMasterKeySpec": spec.as_str(),
        "KeySpec": spec.as_str(),
        "KeyUsage": "SIGN_VERIFY",
        "SigningAlgorithms": spec.signing_algorithms(),
    }))
}

fn set_enabled(shared: &Shared, body: &[u8], enabled: bool) -> Result<Value, KmsError> {
    let req: KeyIdOnly = parse(body)?;
    let mut table = shared.write();
    let key = table.resolve_mut(&req.key_id)?;
    if key.state == KeyState::PendingDeletion {
        return Err(KmsError::invalid_state(&key.info.arn, key.state));
    }
    key.state = if enabled {
        KeyState::Enabled
    } else {
        KeyState::Disabled
    };
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ScheduleRequest {
    key_id: String,
    pending_window_in_days: Option<u32>,
}

fn schedule_key_deletion(shared: &Shared, body: &[u8]) -> Result<Value, KmsError> {
    let req: ScheduleRequest = parse(body)?;
    let days = req.pending_window_in_days.unwrap_or(30);
    if !(7..=30).contains(&days) {
        return Err(KmsError::validation(format!(
            "PendingWindowInDays must be 7 to 30, got {days}"
        )));
    }
    let mut table = shared.write();
    let key = table.resolve_mut(&req.key_id)?;
    if key.state == KeyState::PendingDeletion {
        return Err(KmsError::invalid_state(&key.info.arn, key.state));
    }
    let date = SystemTime::now() + Duration::from_secs(u64::from(days) * 86_400);
    key.state = KeyState::PendingDeletion;
    key.deletion = Some((date, days));
    Ok(json!({
        "KeyId": key.info.arn,
        "DeletionDate": epoch_seconds(date),
        "KeyState": "PendingDeletion",
        "PendingWindowInDays": days,
    }))
}

/// KMS leaves a key whose deletion was cancelled disabled.
fn cancel_key_deletion(shared: &Shared, body: &[u8]) -> Result<Value, KmsError> {
    let req: KeyIdOnly = parse(body)?;
    let mut table = shared.write();
    let key = table.resolve_mut(&req.key_id)?;
    if key.state != KeyState::PendingDeletion {
        return Err(KmsError::invalid_state(&key.info.arn, key.state));
    }
    key.state = KeyState::Disabled;
    key.deletion = None;
    Ok(json!({ "KeyId": key.info.arn }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateAliasRequest {
    alias_name: String,
    target_key_id: String,
}

fn create_alias(shared: &Shared, body: &[u8]) -> Result<Value, KmsError> {
    let req: CreateAliasRequest = parse(body)?;
    shared
        .write()
        .create_alias(&req.alias_name, &req.target_key_id)?;
    Ok(json!({}))
}
