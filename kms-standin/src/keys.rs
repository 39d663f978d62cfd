//! The stand-in's key table: what KMS keeps in its HSMs and key metadata
//! store, here in process memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair};

use crate::error::{Error, KmsError};

/// The account every ARN names: AWS's documentation account, so that an ARN
/// from the stand-in can never be mistaken for a real one.
pub const ACCOUNT: &str = "111122223333";

/// The key specs the stand-in can make. RSA is left out because ring can
/// sign with RSA keys but not generate them; P-521 because ring cannot sign
/// with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySpec {
    EccNistP256,
    EccNistP384,
}

impl KeySpec {
    /// KMS's name for the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            KeySpec::EccNistP256 => "ECC_NIST_P256",
            KeySpec::EccNistP384 => "ECC_NIST_P384",
        }
    }

    /// The one signing algorithm KMS allows for each ECC spec.
    pub fn signing_algorithm(self) -> &'static str {
        match self {
            KeySpec::EccNistP256 => "ECDSA_SHA_256",
            KeySpec::EccNistP384 => "ECDSA_SHA_384",
        }
    }

    fn ring_alg(self) -> &'static EcdsaSigningAlgorithm {
        match self {
            KeySpec::EccNistP256 => &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            KeySpec::EccNistP384 => &ring::signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        }
    }

    /// The DER SubjectPublicKeyInfo header for an uncompressed point on the
    /// curve (id-ecPublicKey + the named curve); ring gives only the point.
    fn spki_prefix(self) -> &'static [u8] {
        match self {
            KeySpec::EccNistP256 => &[
                0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
                0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
            ],
            KeySpec::EccNistP384 => &[
                0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
                0x05, 0x2b, 0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
            ],
        }
    }
}

impl std::str::FromStr for KeySpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "ECC_NIST_P256" => Ok(KeySpec::EccNistP256),
            "ECC_NIST_P384" => Ok(KeySpec::EccNistP384),
            other => Err(Error::UnsupportedKeySpec(other.to_string())),
        }
    }
}

/// KMS's key states that the stand-in models.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    Enabled,
    Disabled,
    PendingDeletion,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Enabled => "Enabled",
            KeyState::Disabled => "Disabled",
            KeyState::PendingDeletion => "PendingDeletion",
        }
    }
}

/// A key that was made, as a caller names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// The bare key id (a UUID).
    pub key_id: String,
    /// `arn:aws:kms:REGION:111122223333:key/ID`.
    pub arn: String,
    pub spec: KeySpec,
}

/// One key: its metadata and its private half.
pub struct Key {
    pub info: KeyInfo,
    pub state: KeyState,
    pub description: String,
    pub created: SystemTime,
    pub deletion: Option<(SystemTime, u32)>,
    /// Shared so that a signature is made outside the table's lock.
    pub pair: Arc<EcdsaKeyPair>,
    pub spki: Vec<u8>,
}

impl Key {
    /// KMS's `KeyMetadata` structure.
    pub fn metadata(&self) -> serde_json::Value {
        let spec = self.info.spec;
        let mut m = serde_json::json!({
            "AWSAccountId": ACCOUNT,
            "KeyId": self.info.key_id,
            "Arn": self.info.arn,
            "CreationDate": epoch_seconds(self.created),
            "Enabled": self.state == KeyState::Enabled,
            "Description": self.description,
            "KeyUsage": "SIGN_VERIFY",
            "KeyState": self.state.as_str(),
            "Origin": "AWS_KMS",
            "KeyManager": "CUSTOMER",
            "CustomerMasterKeySpec": spec.as_str(),
            "KeySpec": spec.as_str(),
            "SigningAlgorithms": [spec.signing_algorithm()],
            "MultiRegion": false,
        });
        if let (Some((date, days)), Some(obj)) = (self.deletion, m.as_object_mut()) {
            obj.insert("DeletionDate".into(), epoch_seconds(date).into());
            obj.insert("PendingDeletionWindowInDays".into(), days.into());
        }
        m
    }

    /// What KMS answers for a key that cannot be used for a cryptographic
    /// operation in its current state.
    pub fn check_usable(&self) -> Result<(), KmsError> {
        match self.state {
            KeyState::Enabled => Ok(()),
            KeyState::Disabled => Err(KmsError::disabled(&self.info.arn)),
            KeyState::PendingDeletion => Err(KmsError::invalid_state(&self.info.arn, self.state)),
        }
    }
}

pub fn epoch_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// Keys by id, and aliases (full `alias/NAME`) to key ids.
pub struct KeyTable {
    region: String,
    rng: SystemRandom,
    keys: HashMap<String, Key>,
    aliases: HashMap<String, String>,
}

impl KeyTable {
    pub fn new(region: String) -> Self {
        KeyTable {
            region,
            rng: SystemRandom::new(),
            keys: HashMap::new(),
            aliases: HashMap::new(),
        }
    }

    pub fn create(&mut self, spec: KeySpec, description: String) -> Result<KeyInfo, Error> {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(spec.ring_alg(), &self.rng)
            .map_err(|_| Error::KeyGeneration)?;
        let pair = EcdsaKeyPair::from_pkcs8(spec.ring_alg(), pkcs8.as_ref(), &self.rng)
            .map_err(|_| Error::KeyGeneration)?;
        let mut spki = spec.spki_prefix().to_vec();
        spki.extend_from_slice(pair.public_key().as_ref());
        let key_id = self.uuid()?;
        let info = KeyInfo {
            arn: format!("arn:aws:kms:{}:{ACCOUNT}:key/{key_id}", self.region),
            key_id: key_id.clone(),
            spec,
        };
        let key = Key {
            info: info.clone(),
            state: KeyState::Enabled,
            description,
            created: SystemTime::now(),
            deletion: None,
            pair: Arc::new(pair),
            spki,
        };
        self.keys.insert(key_id, key);
        Ok(info)
    }

    fn uuid(&self) -> Result<String, Error> {
        let mut b = [0u8; 16];
        self.rng.fill(&mut b).map_err(|_| Error::KeyGeneration)?;
        // Version 4, variant 1, as KMS's key ids are.
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        Ok(format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        ))
    }

    /// Finds a key by any name KMS accepts: id, key ARN, `alias/NAME` or
    /// alias ARN. An ARN for another region or account names no key here.
    pub fn resolve(&self, name: &str) -> Result<&Key, KmsError> {
        let id = self.resolve_id(name)?;
        self.keys
            .get(&id)
            .ok_or_else(|| KmsError::not_found_key(&self.arn_for(&id)))
    }

    pub fn resolve_mut(&mut self, name: &str) -> Result<&mut Key, KmsError> {
        let id = self.resolve_id(name)?;
        let arn = self.arn_for(&id);
        self.keys
            .get_mut(&id)
            .ok_or_else(|| KmsError::not_found_key(&arn))
    }

    fn arn_for(&self, id: &str) -> String {
        format!("arn:aws:kms:{}:{ACCOUNT}:key/{id}", self.region)
    }

    fn resolve_id(&self, name: &str) -> Result<String, KmsError> {
        if name.is_empty() {
            return Err(KmsError::validation("KeyId must not be empty"));
        }
        let local = match name.strip_prefix("arn:") {
            None => name,
            Some(_) => self.strip_arn(name)?,
        };
        if local.starts_with("alias/") {
            return self
                .aliases
                .get(local)
                .cloned()
                .ok_or_else(|| KmsError::not_found_alias(name));
        }
        let id = local.strip_prefix("key/").unwrap_or(local);
        if self.keys.contains_key(id) {
            Ok(id.to_string())
        } else {
            Err(KmsError::not_found_key(name))
        }
    }

    /// `arn:aws:kms:REGION:ACCOUNT:RESOURCE` → RESOURCE, if it is ours.
    fn strip_arn<'a>(&self, arn: &'a str) -> Result<&'a str, KmsError> {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        match parts.as_slice() {
            ["arn", _, "kms", region, account, resource]
                if (resource.starts_with("key/") || resource.starts_with("alias/")) =>
            {
                if *region == self.region && *account == ACCOUNT {
                    Ok(resource)
                } else if resource.starts_with("alias/") {
                    Err(KmsError::not_found_alias(arn))
                } else {
                    Err(KmsError::not_found_key(arn))
                }
            }
            _ => Err(KmsError::invalid_arn(arn)),
        }
    }

    /// Points `alias` (the full `alias/NAME`) at a key named by id or ARN.
    pub fn create_alias(&mut self, alias: &str, target: &str) -> Result<(), KmsError> {
        let name = alias.strip_prefix("alias/").unwrap_or("");
        let valid_char = |c: char| c.is_ascii_alphanumeric() || "/_-".contains(c);
        if name.is_empty() || name.len() > 250 || !name.chars().all(valid_char) {
            return Err(KmsError::invalid_alias(
                "AliasName must be alias/ followed by 1 to 250 of a-zA-Z0-9/_-",
            ));
        }
        if name.starts_with("aws/") {
            return Err(KmsError::invalid_alias(
                "alias/aws/ is reserved for AWS managed keys",
            ));
        }
        if target.contains("alias/") {
            return Err(KmsError::validation(
                "TargetKeyId must be a key id or key ARN, not an alias",
            ));
        }
        if self.aliases.contains_key(alias) {
            return Err(KmsError::already_exists(&format!(
                "An alias with the name arn:aws:kms:{}:{ACCOUNT}:{alias} already exists",
                self.region
            )));
        }
        let key = self.resolve(target)?;
        if key.state == KeyState::PendingDeletion {
            return Err(KmsError::invalid_state(&key.info.arn, key.state));
        }
        let id = key.info.key_id.clone();
        self.aliases.insert(alias.to_string(), id);
        Ok(())
    }
}
