//! Where a CA directory's private key lives: `ca-key.pem` beside ca.pem
//! (directories made without `--key`, and every one made before key
//! references existed), or the reference ca.json records (`file:`,
//! `aws-kms:`, `pkcs11:`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kakunin_signer::{FileKey, KeyBackend, KeyOptions, KeyRef};

use crate::AuthorityError;

pub(crate) const KEY_FILE: &str = "ca-key.pem";

/// The reference as ca.json will record it. A relative file path is made
/// absolute now: later commands may run from another directory.
pub(crate) fn recorded_form(reference: &str) -> Result<String, AuthorityError> {
    let reference = reference.trim();
    match parse(reference, "--key")? {
        KeyRef::File(path) => {
            let absolute = std::path::absolute(&path).map_err(|e| AuthorityError::Invalid {
                what: "CA key reference",
                reason: format!(
                    "{reference:?}: cannot make {} absolute: {e}",
                    path.display()
                ),
            })?;
            let text = absolute.to_str().ok_or_else(|| AuthorityError::Invalid {
                what: "CA key reference",
                reason: format!(
                    "{reference:?}: the path is not UTF-8, so ca.json cannot record it"
                ),
            })?;
            Ok(format!("file:{text}"))
        }
        KeyRef::AwsKms(_) | KeyRef::Pkcs11(_) => Ok(reference.to_string()),
    }
}

/// Opens the CA key: the recorded reference, or `ca-key.pem` in `dir`.
/// A relative `file:` path written into ca.json by hand is taken relative
/// to the CA directory, the only base that does not depend on where the
/// command runs. `origin` says where the reference came from, for errors
/// (the backends' own errors already name the key).
pub(crate) fn open(
    dir: &Path,
    recorded: Option<&str>,
    origin: &str,
    options: &KeyOptions,
) -> Result<Arc<dyn KeyBackend>, AuthorityError> {
    let Some(reference) = recorded else {
        let path = dir.join(KEY_FILE);
        let key = FileKey::open(&path).map_err(|error| AuthorityError::CaKey {
            context: format!(
                "{}: ca.json names no CA key, so it is expected in {KEY_FILE}",
                dir.display()
            ),
            error,
        })?;
        return Ok(Arc::new(key));
    };
    let opened = match parse(reference, origin)? {
        KeyRef::File(path) => {
            let path = relative_to(dir, path);
            FileKey::open(&path).map(|key| Arc::new(key) as Arc<dyn KeyBackend>)
        }
        KeyRef::AwsKms(_) | KeyRef::Pkcs11(_) => kakunin_signer::open_key_with(reference, options),
    };
    opened.map_err(|error| AuthorityError::CaKey {
        context: format!("{origin}: the CA key cannot be opened"),
        error,
    })
}

fn parse(reference: &str, origin: &str) -> Result<KeyRef, AuthorityError> {
    KeyRef::parse(reference).map_err(|error| AuthorityError::CaKey {
        context: format!("{origin}: not a key reference"),
        error,
    })
}

fn relative_to(dir: &Path, path: PathBuf) -> PathBuf {
    if path.is_relative() {
        dir.join(path)
    } else {
        path
    }
}

/// A reference that carries a PKCS#11 PIN (RFC 7512 `pin-value`) makes
/// ca.json a secret: it is then written readable by its owner only.
pub(crate) fn holds_secret(reference: &str) -> bool {
    reference.to_ascii_lowercase().contains("pin-value=")
}
