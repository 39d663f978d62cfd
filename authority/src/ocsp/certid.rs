//! CertID: which certificate a request or answer is about, named by hashes
//! of its issuer's name and key plus its serial number.

use der::asn1::{Any, AnyRef, ObjectIdentifier, OctetString};
use der::{Decode, Encode, Tag};
use ring::digest;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_ocsp::CertId;
use x509_parser::certificate::X509Certificate;

use super::OcspError;
use crate::serial_hex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HashAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    pub(crate) const ALL: [HashAlg; 4] = [
        HashAlg::Sha1,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
    ];

    pub(crate) fn oid(self) -> ObjectIdentifier {
        match self {
            HashAlg::Sha1 => ObjectIdentifier::new_unwrap("1.3.14.3.2.26"),
            HashAlg::Sha256 => ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1"),
            HashAlg::Sha384 => ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2"),
            HashAlg::Sha512 => ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3"),
        }
    }

    pub(crate) fn from_oid(oid: &ObjectIdentifier) -> Option<HashAlg> {
        Self::ALL.into_iter().find(|alg| alg.oid() == *oid)
    }

    pub(crate) fn digest(self, data: &[u8]) -> Vec<u8> {
        let algorithm = match self {
            // A CertID hash only names a public issuer; SHA-1's collision
            // weakness does not let anyone forge an answer for it.
            HashAlg::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            HashAlg::Sha256 => &digest::SHA256,
            HashAlg::Sha384 => &digest::SHA384,
            HashAlg::Sha512 => &digest::SHA512,
        };
        digest::digest(algorithm, data).as_ref().to_vec()
    }
}

/// An issuer's name and key hashed with every supported algorithm, computed
/// once so that matching a CertID costs a comparison, whatever its count.
pub(crate) struct IssuerHashes {
    by_alg: Vec<(HashAlg, Vec<u8>, Vec<u8>)>,
}

impl IssuerHashes {
    /// `name_der`: the issuer's subject Name as DER; `key_bits`: the
    /// contents of its subjectPublicKey BIT STRING (RFC 6960 4.1.1).
    pub(crate) fn new(name_der: &[u8], key_bits: &[u8]) -> IssuerHashes {
        IssuerHashes {
            by_alg: HashAlg::ALL
                .into_iter()
                .map(|alg| (alg, alg.digest(name_der), alg.digest(key_bits)))
                .collect(),
        }
    }

    pub(crate) fn of(cert: &X509Certificate<'_>) -> IssuerHashes {
        IssuerHashes::new(
            cert.subject().as_raw(),
            &cert.public_key().subject_public_key.data,
        )
    }

    /// Whether `id` names this issuer (any serial). Unknown hash algorithms
    /// name nobody.
    pub(crate) fn names(&self, id: &CertId) -> bool {
        let Some(alg) = HashAlg::from_oid(&id.hash_algorithm.oid) else {
            return false;
        };
        self.by_alg.iter().any(|(a, name, key)| {
            *a == alg
                && id.issuer_name_hash.as_bytes() == name.as_slice()
                && id.issuer_key_hash.as_bytes() == key.as_slice()
        })
    }

    pub(crate) fn cert_id(&self, alg: HashAlg, serial: SerialNumber) -> Result<CertId, der::Error> {
        let (_, name, key) = self
            .by_alg
            .iter()
            .find(|(a, _, _)| *a == alg)
            .ok_or_else(|| der::Error::from(der::ErrorKind::Failed))?;
        Ok(CertId {
            // NULL parameters: what OpenSSL and most responders write.
            hash_algorithm: AlgorithmIdentifierOwned {
                oid: alg.oid(),
                parameters: Some(Any::null()),
            },
            issuer_name_hash: OctetString::new(name.clone())?,
            issuer_key_hash: OctetString::new(key.clone())?,
            serial_number: serial,
        })
    }
}

/// The canonical serial text of a CertID.
pub(crate) fn cert_id_serial(id: &CertId) -> String {
    serial_hex(id.serial_number.as_bytes())
}

/// A certificate given by the caller, parsed with a message that says which
/// argument was wrong.
pub(crate) fn parse_cert<'a>(
    der: &'a [u8],
    which: &'static str,
) -> Result<X509Certificate<'a>, OcspError> {
    let invalid = |reason: String| OcspError::Certificate { which, reason };
    let (rest, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| invalid(e.to_string()))?;
    if !rest.is_empty() {
        return Err(invalid(format!(
            "{} bytes follow the certificate",
            rest.len()
        )));
    }
    Ok(cert)
}

/// `cert` must name `issuer` as its issuer: a CertID built from an unrelated
/// issuer would ask about (or accept an answer for) someone else's serial.
pub(crate) fn check_issued_by(
    cert: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
) -> Result<(), OcspError> {
    if cert.issuer().as_raw() == issuer.subject().as_raw() {
        Ok(())
    } else {
        Err(OcspError::IssuerMismatch {
            cert_issuer: cert.issuer().to_string(),
            issuer_subject: issuer.subject().to_string(),
        })
    }
}

/// The certificate's serial as a CertID field.
pub(crate) fn serial_of(cert: &X509Certificate<'_>) -> Result<SerialNumber, OcspError> {
    let invalid = |e: der::Error| OcspError::Certificate {
        which: "certificate",
        reason: format!("serial number: {e}"),
    };
    let integer = AnyRef::new(Tag::Integer, cert.raw_serial())
        .and_then(|any| any.to_der())
        .map_err(invalid)?;
    SerialNumber::from_der(&integer).map_err(invalid)
}
