use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use kakunin_signer::{FileKey, KeyOptions};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::aia::{normalise_public_url, DEFAULT_PUBLIC_URL};
use crate::ca_key::{signing_error, CaKey};
use crate::key_location::{self, KEY_FILE};
use crate::store::{unix_now, Store, StoreOptions};
use crate::AuthorityError;

const CERT_FILE: &str = "ca.pem";
const SETTINGS_FILE: &str = "ca.json";
const DB_FILE: &str = "ca.db";

/// What a CA directory remembers besides its key and certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaSettings {
    /// SPIFFE trust domain: agents are `spiffe://<trust_domain>/agent/<id>`.
    pub trust_domain: String,
    /// OID of the scope extension, as dotted text.
    pub scope_oid: String,
    /// Base URL where `kakunin ca serve` is reached: certificates point
    /// relying parties at `{public_url}/ocsp` and `{public_url}/crl`.
    /// Directories made before the key existed read as the default.
    #[serde(default = "default_public_url")]
    pub public_url: String,
    /// Where the CA's private key lives, as a key reference (`file:/path`,
    /// `aws-kms:ARN`, `pkcs11:URI`). Absent: `ca-key.pem` in the directory
    /// (`ca init` without `--key`, and every directory made before this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

fn default_public_url() -> String {
    DEFAULT_PUBLIC_URL.to_string()
}

#[derive(Debug, Clone)]
pub struct InitOptions {
    pub trust_domain: String,
    pub common_name: String,
    pub validity_days: u32,
    /// See [`CaSettings::public_url`].
    pub public_url: String,
    /// The CA key, left where it is (see [`CaSettings::key`]). `None`
    /// generates a P-256 key into `ca-key.pem`.
    pub key: Option<String>,
    /// How a remote CA key is reached (KMS endpoint, deadlines).
    pub key_options: KeyOptions,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            trust_domain: "kakunin.local".into(),
            common_name: "Kakunin Root CA".into(),
            validity_days: 3650,
            public_url: DEFAULT_PUBLIC_URL.into(),
            key: None,
            key_options: KeyOptions::default(),
        }
    }
}

/// An opened CA directory: `ca.pem`, `ca.json`, `ca.db` (what it issued and
/// revoked), and the CA key: `ca-key.pem` (mode 0600) or wherever ca.json's
/// key reference says (a KMS, an HSM), in which case it never enters memory.
pub struct Authority {
    dir: PathBuf,
    settings: CaSettings,
    cert_pem: String,
    pub(crate) issuer: Issuer<'static, CaKey>,
    store: Store,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("dir", &self.dir)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// Creates a new root CA in `dir` (created if absent). Refuses to touch a
    /// directory that already holds one: overwriting a CA key orphans every
    /// certificate it issued.
    pub fn init(dir: &Path, options: &InitOptions) -> Result<Authority, AuthorityError> {
        validate_trust_domain(&options.trust_domain)?;
        let public_url = normalise_public_url(&options.public_url)?;
        let cert_path = dir.join(CERT_FILE);
        // ca-key.pem counts only when this init would write one: with --key
        // it may be the very file named.
        let key_file_taken = options.key.is_none() && dir.join(KEY_FILE).exists();
        if cert_path.exists() || key_file_taken || dir.join(DB_FILE).exists() {
            return Err(AuthorityError::AlreadyInitialised {
                path: dir.display().to_string(),
            });
        }
        // The key first: a bad reference must leave nothing behind.
        let (key, recorded, generated_pem) = match &options.key {
            Some(reference) => {
                let recorded = key_location::recorded_form(reference)?;
                let backend =
                    key_location::open(dir, Some(&recorded), "--key", &options.key_options)?;
                (CaKey::new(backend)?, Some(recorded), None)
            }
            None => {
                let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
                let pem = pair.serialize_pem();
                let origin = dir.join(KEY_FILE).display().to_string();
                let file = FileKey::from_pem(&origin, pem.as_bytes()).map_err(|error| {
                    AuthorityError::CaKey {
                        context: "the generated CA key".into(),
                        error,
                    }
                })?;
                (CaKey::new(std::sync::Arc::new(file))?, None, Some(pem))
            }
        };
        let cert = ca_params(options)?
            .self_signed(&key)
            .map_err(signing_error)?;

        let settings = CaSettings {
            trust_domain: options.trust_domain.clone(),
            scope_oid: dotted(crate::DEFAULT_SCOPE_OID),
            public_url,
            key: recorded,
        };
        fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        // The database first: if it cannot be made here, nothing else is
        // left behind to look like a working CA.
        drop(Store::create(&dir.join(DB_FILE), &StoreOptions::default())?);
        if let Some(pem) = &generated_pem {
            write_private(&dir.join(KEY_FILE), pem.as_bytes())?;
        }
        write_file(&cert_path, cert.pem().as_bytes())?;
        let settings_json =
            serde_json::to_vec_pretty(&settings).map_err(|e| AuthorityError::Invalid {
                what: "CA settings",
                reason: e.to_string(),
            })?;
        let settings_path = dir.join(SETTINGS_FILE);
        if settings
            .key
            .as_deref()
            .is_some_and(key_location::holds_secret)
        {
            write_private(&settings_path, &settings_json)?;
        } else {
            write_file(&settings_path, &settings_json)?;
        }
        // The key just used is kept: opening a remote key again would ask
        // the KMS or token a second time for nothing.
        Self::assemble(dir, settings, cert.pem(), key, &StoreOptions::default())
    }

    pub fn open(dir: &Path) -> Result<Authority, AuthorityError> {
        Self::open_with(dir, &StoreOptions::default())
    }

    /// [`Authority::open_with_key`] with default key options.
    pub fn open_with(dir: &Path, options: &StoreOptions) -> Result<Authority, AuthorityError> {
        Self::open_with_key(dir, options, &KeyOptions::default())
    }

    /// Opens the directory and brings its database up to date: scheduled
    /// revocations whose time has come are written down as revocations.
    /// The CA key is opened where ca.json says (`key_options` say how a
    /// remote one is reached) and must be the key of ca.pem.
    pub fn open_with_key(
        dir: &Path,
        options: &StoreOptions,
        key_options: &KeyOptions,
    ) -> Result<Authority, AuthorityError> {
        let cert_path = dir.join(CERT_FILE);
        if !cert_path.exists() {
            return Err(AuthorityError::NotInitialised {
                path: dir.display().to_string(),
            });
        }
        let cert_pem = read_text(&cert_path)?;
        let settings_path = dir.join(SETTINGS_FILE);
        let settings: CaSettings = serde_json::from_str(&read_text(&settings_path)?)
            .map_err(|e| corrupt(&settings_path, e))?;
        parse_oid(&settings.scope_oid).map_err(|e| corrupt(&settings_path, e))?;
        normalise_public_url(&settings.public_url).map_err(|e| corrupt(&settings_path, e))?;
        let origin = format!("{} \"key\"", settings_path.display());
        let backend = key_location::open(dir, settings.key.as_deref(), &origin, key_options)?;
        let key = CaKey::new(backend)?;
        Self::assemble(dir, settings, cert_pem, key, options)
    }

    fn assemble(
        dir: &Path,
        settings: CaSettings,
        cert_pem: String,
        key: CaKey,
        options: &StoreOptions,
    ) -> Result<Authority, AuthorityError> {
        let cert_path = dir.join(CERT_FILE);
        check_key_matches(&cert_pem, &key, &cert_path, settings.key.is_some())?;
        let issuer =
            Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| corrupt(&cert_path, e))?;
        let store = Store::open(&dir.join(DB_FILE), options)?;
        store.materialize_due(unix_now())?;
        Ok(Authority {
            dir: dir.to_path_buf(),
            settings,
            cert_pem,
            issuer,
            store,
        })
    }

    /// The CA database: status, listing and the event feed for a server.
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn ocsp_url(&self) -> String {
        crate::aia::ocsp_url(&self.settings.public_url)
    }

    pub fn crl_url(&self) -> String {
        crate::aia::crl_url(&self.settings.public_url)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn settings(&self) -> &CaSettings {
        &self.settings
    }

    /// The CA certificate (PEM): what upstreams and receivers pin.
    pub fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn certificate_path(&self) -> PathBuf {
        self.dir.join(CERT_FILE)
    }

    /// What OCSP says about `serial` now (`Unknown` if never issued here).
    pub fn status(&self, serial: &str) -> Result<crate::CertStatus, AuthorityError> {
        self.store.status(serial)
    }

    /// Revokes `serial` (operator text: hex, colons allowed) now.
    pub fn revoke(
        &self,
        serial: &str,
        reason: crate::RevocationReason,
    ) -> Result<crate::CertRecord, AuthorityError> {
        self.store.revoke(serial, reason, unix_now())
    }

    pub(crate) fn scope_oid(&self) -> Vec<u64> {
        // Validated in open(); the default is a safe fallback, not a guess.
        parse_oid(&self.settings.scope_oid).unwrap_or_else(|_| crate::DEFAULT_SCOPE_OID.to_vec())
    }
}

/// A CA key that does not belong to the CA certificate would sign
/// certificates nobody can verify: refuse it when the directory is opened.
fn check_key_matches(
    cert_pem: &str,
    key: &CaKey,
    cert_path: &Path,
    recorded: bool,
) -> Result<(), AuthorityError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| corrupt(cert_path, format!("CA certificate is not PEM: {e}")))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| corrupt(cert_path, format!("CA certificate does not parse: {e}")))?;
    if key
        .matches(cert.public_key())
        .map_err(|e| corrupt(cert_path, e))?
    {
        return Ok(());
    }
    let hint = if recorded {
        "ca.json's \"key\" must name the key this CA was created with"
    } else {
        "ca-key.pem must be the key this CA was created with; restore it from a backup"
    };
    Err(AuthorityError::KeyMismatch {
        key: key.describe(),
        cert: cert_path.display().to_string(),
        hint: hint.into(),
    })
}

/// The root's certificate: path length 0, as it signs agent and server
/// certificates only.
fn ca_params(options: &InitOptions) -> Result<CertificateParams, AuthorityError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, options.common_name.as_str());
    dn.push(DnType::OrganizationName, "Kakunin");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = now
        .checked_add(Duration::days(i64::from(options.validity_days.max(1))))
        .ok_or(AuthorityError::Invalid {
            what: "validity",
            reason: format!("{} days is past the year 9999", options.validity_days),
        })?;
    params.serial_number = Some(crate::issue::random_serial()?);
    Ok(params)
}

fn validate_trust_domain(domain: &str) -> Result<(), AuthorityError> {
    // SPIFFE: lower-case letters, digits, '.', '-', '_'; at most 255 bytes.
    let ok = !domain.is_empty()
        && domain.len() <= 255
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AuthorityError::Invalid {
            what: "trust domain",
            reason: format!(
                "{domain:?}: use lower-case letters, digits, '.', '-' and '_' (SPIFFE trust domain)"
            ),
        })
    }
}

fn dotted(oid: &[u64]) -> String {
    oid.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

fn parse_oid(text: &str) -> Result<Vec<u64>, String> {
    let arcs = text
        .split('.')
        .map(|part| part.parse::<u64>().map_err(|_| format!("bad OID {text:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    if arcs.len() < 2 {
        return Err(format!("OID {text:?} needs at least two arcs"));
    }
    Ok(arcs)
}

fn io(path: &Path, source: std::io::Error) -> AuthorityError {
    AuthorityError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn corrupt(path: &Path, e: impl std::fmt::Display) -> AuthorityError {
    AuthorityError::Corrupt {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn read_text(path: &Path) -> Result<String, AuthorityError> {
    fs::read_to_string(path).map_err(|e| io(path, e))
}

pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), AuthorityError> {
    fs::write(path, bytes).map_err(|e| io(path, e))
}

/// Writes a private key readable by its owner only, created that way so the
/// key is never briefly world-readable.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AuthorityError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| io(path, e))?;
    // `mode` applies only when the file is created: an existing file keeps
    // its permissions unless they are narrowed before the key goes in.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| io(path, e))?;
    }
    file.write_all(bytes).map_err(|e| io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_open_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::init(dir.path(), &InitOptions::default()).unwrap();
        assert!(ca.certificate_pem().contains("BEGIN CERTIFICATE"));
        let reopened = Authority::open(dir.path()).unwrap();
        assert_eq!(reopened.settings().trust_domain, "kakunin.local");
        let err = Authority::init(dir.path(), &InitOptions::default()).unwrap_err();
        assert!(matches!(err, AuthorityError::AlreadyInitialised { .. }));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "CA key must not be group/world readable");
        }
    }

    #[test]
    fn open_reports_missing_and_corrupt_directories() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Authority::open(dir.path()).unwrap_err(),
            AuthorityError::NotInitialised { .. }
        ));
        Authority::init(dir.path(), &InitOptions::default()).unwrap();
        fs::write(dir.path().join(KEY_FILE), "garbage").unwrap();
        let err = Authority::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains(KEY_FILE), "{err}");
        // A well-formed key that belongs to another CA.
        let stranger = KeyPair::generate().unwrap();
        fs::write(dir.path().join(KEY_FILE), stranger.serialize_pem()).unwrap();
        let err = Authority::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
    }

    #[test]
    fn settings_without_public_url_read_as_the_default() {
        let dir = tempfile::tempdir().unwrap();
        Authority::init(dir.path(), &InitOptions::default()).unwrap();
        let path = dir.path().join(SETTINGS_FILE);
        let old = r#"{"trust_domain": "kakunin.local", "scope_oid": "1.3.6.1.4.1.32473.1.1"}"#;
        fs::write(&path, old).unwrap();
        let ca = Authority::open(dir.path()).unwrap();
        assert_eq!(ca.settings().public_url, DEFAULT_PUBLIC_URL);
        assert_eq!(ca.crl_url(), "http://127.0.0.1:8180/crl");

        let bad = r#"{"trust_domain": "a", "scope_oid": "1.2", "public_url": "ftp://x"}"#;
        fs::write(&path, bad).unwrap();
        let err = Authority::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(SETTINGS_FILE) && err.contains("http://"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_database_is_not_silently_recreated() {
        let dir = tempfile::tempdir().unwrap();
        Authority::init(dir.path(), &InitOptions::default()).unwrap();
        fs::remove_file(dir.path().join(DB_FILE)).unwrap();
        let err = Authority::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("backup"), "{err}");
        assert!(!dir.path().join(DB_FILE).exists());
    }

    #[cfg(unix)]
    #[test]
    fn private_key_files_are_narrowed_even_when_they_exist() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"secret").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0);
        assert_eq!(fs::read(&path).unwrap(), b"secret");
    }

    #[test]
    fn trust_domain_is_validated() {
        let dir = tempfile::tempdir().unwrap();
        let options = InitOptions {
            trust_domain: "Bad Domain/".into(),
            ..InitOptions::default()
        };
        assert!(Authority::init(dir.path(), &options).is_err());
    }
}
