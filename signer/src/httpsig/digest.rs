//! RFC 9530 `Content-Digest`: what the signature covers instead of the body.

use base64::Engine;
use ring::digest;
use sfv::ListEntry;

use super::error::{malformed, HttpSigError};
use super::header::dictionary;

/// `sha-256=:<base64>:` for `body`: a one-member RFC 8941 dictionary whose
/// value is a byte sequence, written straight into one string (that form is
/// already canonical; the test below checks it against the RFC's example).
pub fn content_digest(body: &[u8]) -> String {
    let hash = digest::digest(&digest::SHA256, body);
    let mut value = String::with_capacity(SHA256_PREFIX.len() + 45);
    value.push_str(SHA256_PREFIX);
    base64::engine::general_purpose::STANDARD.encode_string(hash, &mut value);
    value.push(':');
    value
}

const SHA256_PREFIX: &str = "sha-256=:";

/// Checks a received `Content-Digest` against the body. Every member in an
/// algorithm we know must match and at least one must be present; members
/// in other algorithms are ignored (RFC 9530 §2 lets a sender add more).
pub fn check_content_digest(value: &str, body: &[u8]) -> Result<(), HttpSigError> {
    let members = dictionary("content-digest", value)?;
    let mut checked = 0;
    for (key, entry) in &members {
        let algorithm = match key.as_str() {
            "sha-256" => &digest::SHA256,
            "sha-512" => &digest::SHA512,
            _ => continue,
        };
        let expected = match entry {
            ListEntry::Item(item) => item.bare_item.as_byte_sequence(),
            ListEntry::InnerList(_) => None,
        }
        .ok_or_else(|| {
            malformed(
                "content-digest",
                format!("{} is not a byte sequence", key.as_str()),
            )
        })?;
        let actual = digest::digest(algorithm, body);
        // Both sides are public (the body is in the request), so a plain
        // comparison leaks nothing.
        if actual.as_ref() != expected {
            return Err(HttpSigError::DigestMismatch);
        }
        checked += 1;
    }
    if checked == 0 {
        return Err(HttpSigError::DigestUnsupported);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_rfc_9530_example() {
        // RFC 9530 §2, the body {"hello": "world"} followed by a newline.
        let body = b"{\"hello\": \"world\"}\n";
        assert_eq!(
            content_digest(body),
            "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:"
        );
        check_content_digest(&content_digest(body), body).unwrap();
    }

    #[test]
    fn refuses_mismatch_unknown_and_junk() {
        let body = b"{}";
        let good = content_digest(body);
        assert_eq!(
            check_content_digest(&good, b"{ }").unwrap_err().code(),
            "content_digest_mismatch"
        );
        assert_eq!(
            check_content_digest("md5=:AAAA:", body).unwrap_err().code(),
            "content_digest_unsupported"
        );
        let mixed = format!("{good}, sha-512=:AAAA:");
        assert_eq!(
            check_content_digest(&mixed, body).unwrap_err().code(),
            "content_digest_mismatch"
        );
        for junk in ["", "sha-256", "sha-256=\"x\"", "sha-256=(:AAAA:)", ":::"] {
            assert!(check_content_digest(junk, body).is_err(), "{junk}");
        }
    }
}
