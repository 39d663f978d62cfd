//! Public keys handed to the CA, and PKCS#10 requests as a way to hand the CA a public key with proof that
//! the sender holds its private half. Nothing else in a request is used: the
//! subject, names and extensions are the CA's decision (agent id + policy),
//! so a request cannot ask for more scope than the policy grants.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use crate::AuthorityError;

/// The DER SubjectPublicKeyInfo of a PEM certificate request whose
/// self-signature verifies.
pub fn public_key_from_csr(pem: &str) -> Result<Vec<u8>, AuthorityError> {
    let invalid = |reason: String| AuthorityError::Invalid {
        what: "certificate signing request",
        reason,
    };
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| {
        invalid(format!(
            "not PEM ({e}); expected -----BEGIN CERTIFICATE REQUEST----- (e.g. from `openssl req -new`)"
        ))
    })?;
    if !matches!(
        block.label.as_str(),
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST"
    ) {
        return Err(invalid(format!(
            "the PEM block is a {:?}, not a CERTIFICATE REQUEST",
            block.label
        )));
    }
    let (rest, request) = X509CertificationRequest::from_der(&block.contents)
        .map_err(|e| invalid(format!("not a PKCS#10 request: {e}")))?;
    if !rest.is_empty() {
        return Err(invalid("trailing bytes after the request".into()));
    }
    request.verify_signature().map_err(|e| {
        invalid(format!(
            "its signature does not verify with its own public key ({e}): the request was altered or not signed by the key holder; make a new one"
        ))
    })?;
    Ok(request.certification_request_info.subject_pki.raw.to_vec())
}

/// The DER SubjectPublicKeyInfo in a PEM "PUBLIC KEY" block, checked to be
/// a key type the CA can certify.
pub fn public_key_from_pem(pem: &str) -> Result<Vec<u8>, AuthorityError> {
    let invalid = |reason: String| AuthorityError::Invalid {
        what: "public key",
        reason,
    };
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| {
        invalid(format!(
            "not PEM ({e}); expected -----BEGIN PUBLIC KEY----- (e.g. `openssl pkey -pubout`)"
        ))
    })?;
    if block.label != "PUBLIC KEY" {
        return Err(invalid(format!(
            "the PEM block is a {:?}, not a PUBLIC KEY (SubjectPublicKeyInfo)",
            block.label
        )));
    }
    rcgen::SubjectPublicKeyInfo::from_der(&block.contents).map_err(|e| {
        invalid(format!(
            "{e}; supported keys are ECDSA P-256/P-384, Ed25519 and RSA"
        ))
    })?;
    Ok(block.contents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, PublicKeyData};

    fn csr_pem() -> (KeyPair, String) {
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(vec!["ignored.example".to_string()])
            .unwrap()
            .serialize_request(&key)
            .unwrap();
        (key, csr.pem().unwrap())
    }

    #[test]
    fn takes_the_key_of_a_well_signed_request() {
        let (key, pem) = csr_pem();
        assert_eq!(
            public_key_from_csr(&pem).unwrap(),
            key.subject_public_key_info()
        );
    }

    #[test]
    fn refuses_tampered_and_foreign_input() {
        let (_key, pem) = csr_pem();
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let mut der = block.contents.clone();
        // Flip a byte inside a requested name: the structure still parses,
        // the signature no longer matches.
        let at = der
            .windows(7)
            .position(|w| w == b"ignored")
            .unwrap_or(der.len() / 2);
        der[at] ^= 0x01;
        let tampered = pem_encode("CERTIFICATE REQUEST", &der);
        let err = public_key_from_csr(&tampered).unwrap_err().to_string();
        assert!(err.contains("signature"), "{err}");

        let cert = pem.replace("CERTIFICATE REQUEST", "CERTIFICATE");
        assert!(public_key_from_csr(&cert).is_err());
        assert!(public_key_from_csr("hello").is_err());
    }

    #[test]
    fn public_key_pem_is_checked() {
        let key = KeyPair::generate().unwrap();
        assert_eq!(
            public_key_from_pem(&key.public_key_pem()).unwrap(),
            key.subject_public_key_info()
        );
        assert!(public_key_from_pem(&key.serialize_pem()).is_err());
        assert!(public_key_from_pem(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
        )
        .is_err());
    }

    fn pem_encode(label: &str, der: &[u8]) -> String {
        use base64::Engine as _;
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }
}
