use std::path::PathBuf;
use std::sync::Arc;

use crate::backend::{KeyBackend, KeyError};
use crate::file::FileKey;
use crate::options::KeyOptions;

/// A key reference as written in configuration: a URI naming where the key
/// lives. A bare path is taken as `file:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    File(PathBuf),
    AwsKms(String),
    Pkcs11(String),
}

impl KeyRef {
    pub fn parse(reference: &str) -> Result<KeyRef, KeyError> {
        let reference = reference.trim();
        if reference.is_empty() {
            return Err(KeyError::Unsupported {
                reference: reference.into(),
                reason: "empty key reference; expected file:/path.pem, aws-kms:ARN or pkcs11:URI"
                    .into(),
            });
        }
        if let Some(path) = reference.strip_prefix("file:") {
            // Accept both file:/abs and file:///abs (RFC 8089).
            let path = path.strip_prefix("//").unwrap_or(path);
            return Ok(KeyRef::File(PathBuf::from(path)));
        }
        if let Some(arn) = reference.strip_prefix("aws-kms:") {
            return Ok(KeyRef::AwsKms(arn.to_string()));
        }
        if reference.starts_with("pkcs11:") {
            return Ok(KeyRef::Pkcs11(reference.to_string()));
        }
        if reference.starts_with("arn:aws:kms:") {
            return Ok(KeyRef::AwsKms(reference.to_string()));
        }
        if let Some((scheme, _)) = reference.split_once(':') {
            if !scheme.contains('/') && scheme.len() > 1 {
                return Err(KeyError::Unsupported {
                    reference: reference.into(),
                    reason: format!(
                        "unknown scheme {scheme:?}; expected file:, aws-kms: or pkcs11:"
                    ),
                });
            }
        }
        Ok(KeyRef::File(PathBuf::from(reference)))
    }
}

/// Opens the backend a reference names, with default options.
pub fn open_key(reference: &str) -> Result<Arc<dyn KeyBackend>, KeyError> {
    open_key_with(reference, &KeyOptions::default())
}

/// Opens the backend a reference names. A remote key is checked before this
/// returns (it exists, it can sign, its public key is read), so a bad key
/// fails at start, not at the first handshake.
pub fn open_key_with(
    reference: &str,
    options: &KeyOptions,
) -> Result<Arc<dyn KeyBackend>, KeyError> {
    #[cfg(not(any(feature = "aws-kms", feature = "pkcs11")))]
    let _ = options;
    match KeyRef::parse(reference)? {
        KeyRef::File(path) => Ok(Arc::new(FileKey::open(&path)?)),
        #[cfg(feature = "aws-kms")]
        KeyRef::AwsKms(arn) => Ok(Arc::new(crate::kms::AwsKmsKey::open(&arn, options)?)),
        #[cfg(not(feature = "aws-kms"))]
        KeyRef::AwsKms(_) => Err(not_built(reference, "aws-kms")),
        #[cfg(feature = "pkcs11")]
        KeyRef::Pkcs11(uri) => Ok(Arc::new(crate::pkcs11::Pkcs11Key::open(&uri, options)?)),
        #[cfg(not(feature = "pkcs11"))]
        KeyRef::Pkcs11(_) => Err(not_built(reference, "pkcs11")),
    }
}

#[allow(dead_code)] // unused when every backend is built
fn not_built(reference: &str, feature: &str) -> KeyError {
    KeyError::Unsupported {
        reference: reference.into(),
        reason: format!(
            "this build has no {feature} backend (build with the \"{feature}\" feature)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        assert_eq!(
            KeyRef::parse("file:/etc/k.pem").unwrap(),
            KeyRef::File("/etc/k.pem".into())
        );
        assert_eq!(
            KeyRef::parse("file:///etc/k.pem").unwrap(),
            KeyRef::File("/etc/k.pem".into())
        );
        assert_eq!(
            KeyRef::parse("./k.pem").unwrap(),
            KeyRef::File("./k.pem".into())
        );
        assert_eq!(
            KeyRef::parse("aws-kms:arn:aws:kms:eu-west-1:1:key/x").unwrap(),
            KeyRef::AwsKms("arn:aws:kms:eu-west-1:1:key/x".into())
        );
        assert!(matches!(
            KeyRef::parse("pkcs11:token=a;object=b").unwrap(),
            KeyRef::Pkcs11(_)
        ));
        assert!(KeyRef::parse("vault:secret/x").is_err());
        assert!(KeyRef::parse("  ").is_err());
    }
}
