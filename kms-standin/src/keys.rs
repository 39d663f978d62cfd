//! The stand-in's key table: what KMS keeps in its HSMs and key metadata
//! store, here in process memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{
    EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair as _, RsaEncoding, RsaKeyPair,
    RsaPublicKeyComponents,
};

use crate::error::{Error, KmsError};

/// The account every ARN names: AWS's documentation account, so that an ARN
/// from the stand-in can never be mistaken for a real one.
pub const ACCOUNT: &str = "111122223333";

/// The key specs the stand-in holds. The RSA ones only by import
/// ([`crate::Standin::import_key`]): ring can sign with RSA keys but not
/// generate them. No P-521, because ring cannot sign with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySpec {
    EccNistP256,
    EccNistP384,
    Rsa2048,
    Rsa3072,
    Rsa4096,
}

/// The RSA signing algorithms, in the order KMS lists them for an RSA key.
const RSA_SIGNING_ALGORITHMS: &[&str] = &[
    "RSASSA_PKCS1_V1_5_SHA_256",
    "RSASSA_PKCS1_V1_5_SHA_384",
    "RSASSA_PKCS1_V1_5_SHA_512",
    "RSASSA_PSS_SHA_256",
    "RSASSA_PSS_SHA_384",
    "RSASSA_PSS_SHA_512",
];

impl KeySpec {
    /// KMS's name for the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            KeySpec::EccNistP256 => "ECC_NIST_P256",
            KeySpec::EccNistP384 => "ECC_NIST_P384",
            KeySpec::Rsa2048 => "RSA_2048",
            KeySpec::Rsa3072 => "RSA_3072",
            KeySpec::Rsa4096 => "RSA_4096",
        }
    }

    /// The signing algorithms KMS allows for the spec, as `GetPublicKey` and
    /// `DescribeKey` list them: one for each ECC spec, six for RSA.
    pub fn signing_algorithms(self) -> &'static [&'static str] {
        match self {
            KeySpec::EccNistP256 => &["ECDSA_SHA_256"],
            KeySpec::EccNistP384 => &["ECDSA_SHA_384"],
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => RSA_SIGNING_ALGORITHMS,
        }
    }

    /// Whether `CreateKey` can make a key of this spec here (ring generates
    /// ECDSA keys only; RSA keys come in through an import).
    pub fn can_generate(self) -> bool {
        self.ecdsa().is_some()
    }

    /// ring's algorithm and the DER SubjectPublicKeyInfo header for an
    /// uncompressed point on the curve (id-ecPublicKey + the named curve;
    /// ring gives only the point), for the ECC specs.
    fn ecdsa(self) -> Option<(&'static EcdsaSigningAlgorithm, &'static [u8])> {
        match self {
            KeySpec::EccNistP256 => Some((
                &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                &[
                    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
                ],
            )),
            KeySpec::EccNistP384 => Some((
                &ring::signature::ECDSA_P384_SHA384_ASN1_SIGNING,
                &[
                    0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
                    0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
                ],
            )),
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => None,
        }
    }

    /// The RSA spec for a modulus of exactly `bits` bits: KMS has no other
    /// sizes, so a key of any other size could not be a KMS key.
    fn rsa_for_bits(bits: usize) -> Option<KeySpec> {
        match bits {
            2048 => Some(KeySpec::Rsa2048),
            3072 => Some(KeySpec::Rsa3072),
            4096 => Some(KeySpec::Rsa4096),
            _ => None,
        }
    }
}

impl std::str::FromStr for KeySpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "ECC_NIST_P256" => Ok(KeySpec::EccNistP256),
            "ECC_NIST_P384" => Ok(KeySpec::EccNistP384),
            "RSA_2048" => Ok(KeySpec::Rsa2048),
            "RSA_3072" => Ok(KeySpec::Rsa3072),
            "RSA_4096" => Ok(KeySpec::Rsa4096),
            other => Err(Error::UnsupportedKeySpec(other.to_string())),
        }
    }
}

/// A key's private half, as ring holds it.
pub enum PrivateKey {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

impl PrivateKey {
    /// Signs `message` (RAW: ring hashes it) with KMS's signing algorithm
    /// `algorithm`, which the caller has checked the key allows.
    pub fn sign(
        &self,
        algorithm: &str,
        rng: &SystemRandom,
        message: &[u8],
    ) -> Result<Vec<u8>, ring::error::Unspecified> {
        match self {
            // An ECDSA key pair carries its one algorithm.
            PrivateKey::Ecdsa(pair) => Ok(pair.sign(rng, message)?.as_ref().to_vec()),
            PrivateKey::Rsa(pair) => {
                // ring's PSS encodings use a salt as long as the digest,
                // which is what KMS does and what TLS 1.3 requires
                // (RFC 8446 4.2.3); a peer refuses any other salt length.
                let padding: &'static dyn RsaEncoding = match algorithm {
                    "RSASSA_PSS_SHA_256" => &ring::signature::RSA_PSS_SHA256,
                    "RSASSA_PSS_SHA_384" => &ring::signature::RSA_PSS_SHA384,
                    "RSASSA_PSS_SHA_512" => &ring::signature::RSA_PSS_SHA512,
                    "RSASSA_PKCS1_V1_5_SHA_256" => &ring::signature::RSA_PKCS1_SHA256,
                    "RSASSA_PKCS1_V1_5_SHA_384" => &ring::signature::RSA_PKCS1_SHA384,
                    "RSASSA_PKCS1_V1_5_SHA_512" => &ring::signature::RSA_PKCS1_SHA512,
                    _ => return Err(ring::error::Unspecified),
                };
                let mut sig = vec![0u8; pair.public().modulus_len()];
                pair.sign(padding, rng, message, &mut sig)?;
                Ok(sig)
            }
        }
    }
}

/// The DER SubjectPublicKeyInfo of an RSA key: rsaEncryption with NULL
/// parameters (as KMS returns it) around ring's PKCS#1 RSAPublicKey.
fn rsa_spki(rsa_public_key: &[u8]) -> Vec<u8> {
    const ALGORITHM: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bits = vec![0x00]; // no unused bits
    bits.extend_from_slice(rsa_public_key);
    let mut body = ALGORITHM.to_vec();
    body.extend(der_tlv(0x03, &bits));
    der_tlv(0x30, &body)
}

/// One DER tag-length-value; lengths up to 65535, far beyond a 4096-bit
/// key's SPKI (about 550 bytes).
fn der_tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let len = value.len();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xff {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(value);
    out
}

/// An imported PKCS#8 key: its spec, private half and DER SPKI.
fn parse_pkcs8(der: &[u8], rng: &SystemRandom) -> Result<(KeySpec, PrivateKey, Vec<u8>), Error> {
    for spec in [KeySpec::EccNistP256, KeySpec::EccNistP384] {
        if let Some((alg, prefix)) = spec.ecdsa() {
            if let Ok(pair) = EcdsaKeyPair::from_pkcs8(alg, der, rng) {
                let mut spki = prefix.to_vec();
                spki.extend_from_slice(pair.public_key().as_ref());
                return Ok((spec, PrivateKey::Ecdsa(pair), spki));
            }
        }
    }
    let pair = RsaKeyPair::from_pkcs8(der).map_err(|e| {
        // A bare RSAPrivateKey is an easy mistake: OpenSSL 3.0's
        // `genpkey -outform DER` writes one.
        if RsaKeyPair::from_der(der).is_ok() {
            Error::Import(
                "a PKCS#1 RSAPrivateKey, not PKCS#8; convert it with \
                 `openssl pkcs8 -topk8 -nocrypt -outform DER`"
                    .to_string(),
            )
        } else {
            Error::Import(format!(
                "not an ECDSA P-256 or P-384 key, and ring refuses it as an RSA key: {e}"
            ))
        }
    })?;
    let components = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
    let bits = modulus_bits(&components.n);
    let spec = KeySpec::rsa_for_bits(bits).ok_or_else(|| {
        Error::Import(format!(
            "an RSA key of {bits} bits; KMS has RSA_2048, RSA_3072 and RSA_4096 only"
        ))
    })?;
    let spki = rsa_spki(pair.public().as_ref());
    Ok((spec, PrivateKey::Rsa(pair), spki))
}

/// The bit length of a big-endian unsigned integer.
fn modulus_bits(n: &[u8]) -> usize {
    let n = match n.iter().position(|&b| b != 0) {
        Some(first) => &n[first..],
        None => return 0,
    };
    n.len() * 8 - n[0].leading_zeros() as usize
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

/// Where a key's material came from, as KMS's `Origin` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Made by `CreateKey` (`AWS_KMS`).
    Generated,
    /// Imported (`EXTERNAL`, as KMS says of imported key material).
    Imported,
}

/// One key: its metadata and its private half.
pub struct Key {
    pub info: KeyInfo,
    pub state: KeyState,
    pub description: String,
    pub created: SystemTime,
    pub deletion: Option<(SystemTime, u32)>,
    pub origin: Origin,
    /// Shared so that a signature is made outside the table's lock.
    pub private: Arc<PrivateKey>,
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
            "Origin": match self.origin {
                Origin::Generated => "AWS_KMS",
                Origin::Imported => "EXTERNAL",
            },
            "KeyManager": "CUSTOMER",
            "CustomerMasterKeySpec": spec.as_str(),
            "KeySpec": spec.as_str(),
            "SigningAlgorithms": spec.signing_algorithms(),
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
        let (alg, prefix) = spec.ecdsa().ok_or(Error::CannotGenerate(spec))?;
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(alg, &self.rng).map_err(|_| Error::KeyGeneration)?;
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &self.rng)
            .map_err(|_| Error::KeyGeneration)?;
        let mut spki = prefix.to_vec();
        spki.extend_from_slice(pair.public_key().as_ref());
        self.insert(
            spec,
            PrivateKey::Ecdsa(pair),
            spki,
            Origin::Generated,
            description,
        )
    }

    /// Takes a PKCS#8 DER private key (RSA 2048/3072/4096, ECDSA P-256 or
    /// P-384) as a new SIGN_VERIFY key, its spec read from the key.
    pub fn import(&mut self, pkcs8_der: &[u8], description: String) -> Result<KeyInfo, Error> {
        let (spec, private, spki) = parse_pkcs8(pkcs8_der, &self.rng)?;
        self.insert(spec, private, spki, Origin::Imported, description)
    }

    fn insert(
        &mut self,
        spec: KeySpec,
        private: PrivateKey,
        spki: Vec<u8>,
        origin: Origin,
        description: String,
    ) -> Result<KeyInfo, Error> {
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
            origin,
            private: Arc::new(private),
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
