//! X.509 v2 CRLs: every certificate the CA has revoked, signed by the CA,
//! numbered from the database so each CRL supersedes the one before.

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use std::time::Duration;

use time::OffsetDateTime;
use x509_parser::extensions::ParsedExtension;

use crate::ca::Authority;
use crate::store::{queries, unix_now, RevokedEntry};
use crate::{AuthorityError, RevocationReason};

/// A signed CRL.
#[derive(Debug, Clone)]
pub struct Crl {
    pub der: Vec<u8>,
    pub pem: String,
    pub number: u64,
    /// Unix seconds.
    pub this_update: i64,
    pub next_update: i64,
    pub revoked: Vec<RevokedEntry>,
}

impl Authority {
    /// Signs a CRL valid for `validity` from now. Each call takes a new CRL
    /// number, so a server should reuse one until it is stale or an event
    /// says something was revoked, not sign one per request.
    pub fn crl(&self, validity: Duration) -> Result<Crl, AuthorityError> {
        self.crl_at(unix_now(), validity)
    }

    pub fn crl_at(&self, now: i64, validity: Duration) -> Result<Crl, AuthorityError> {
        let this_update = timestamp(now)?;
        let next_update = time::Duration::try_from(validity)
            .ok()
            .and_then(|v| this_update.checked_add(v))
            .filter(|next| *next > this_update)
            .ok_or_else(|| AuthorityError::Invalid {
                what: "CRL validity",
                reason: format!(
                    "{validity:?}: nextUpdate must be after thisUpdate and before the year 9999"
                ),
            })?;
        // One transaction: the number and the list describe the same moment.
        let (number, revoked) = self.store().write(|tx| {
            queries::materialize_due(tx, now)?;
            let revoked = queries::revoked(tx, now)?;
            Ok((queries::next_crl_number(tx)?, revoked))
        })?;
        let revoked_certs = revoked
            .iter()
            .map(|entry| {
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&serial_bytes(&entry.serial)?),
                    revocation_time: timestamp(entry.revoked_at)?,
                    reason_code: Some(rcgen_reason(entry.reason)),
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, AuthorityError>>()?;
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: self.key_identifier_method(),
        };
        let crl = params
            .signed_by(&self.issuer)
            .map_err(crate::ca_key::signing_error)?;
        Ok(Crl {
            der: crl.der().to_vec(),
            pem: crl.pem()?,
            number,
            this_update: now,
            next_update: next_update.unix_timestamp(),
            revoked,
        })
    }

    /// The CRL's authority key identifier must equal the CA certificate's
    /// subject key identifier, or verifiers cannot match the two.
    fn key_identifier_method(&self) -> KeyIdMethod {
        let ski = x509_parser::pem::parse_x509_pem(self.certificate_pem().as_bytes())
            .ok()
            .and_then(|(_, pem)| {
                let cert = pem.parse_x509().ok()?;
                cert.extensions()
                    .iter()
                    .find_map(|ext| match ext.parsed_extension() {
                        ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                        _ => None,
                    })
            });
        ski.map_or(KeyIdMethod::Sha256, KeyIdMethod::PreSpecified)
    }
}

fn timestamp(unix: i64) -> Result<OffsetDateTime, AuthorityError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|e| AuthorityError::Invalid {
        what: "time",
        reason: format!("{unix}: {e}"),
    })
}

fn serial_bytes(hex: &str) -> Result<Vec<u8>, AuthorityError> {
    let invalid = || AuthorityError::Invalid {
        what: "serial number in the CA database",
        reason: format!("{hex:?} is not hexadecimal"),
    };
    if !hex.len().is_multiple_of(2) {
        return Err(invalid());
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(invalid)
        })
        .collect()
}

fn rcgen_reason(reason: RevocationReason) -> rcgen::RevocationReason {
    use rcgen::RevocationReason as R;
    match reason {
        RevocationReason::Unspecified => R::Unspecified,
        RevocationReason::KeyCompromise => R::KeyCompromise,
        RevocationReason::CaCompromise => R::CaCompromise,
        RevocationReason::AffiliationChanged => R::AffiliationChanged,
        RevocationReason::Superseded => R::Superseded,
        RevocationReason::CessationOfOperation => R::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn => R::PrivilegeWithdrawn,
        RevocationReason::AaCompromise => R::AaCompromise,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InitOptions, ServerRequest, Validity};
    use x509_parser::prelude::FromDer;
    use x509_parser::revocation_list::CertificateRevocationList;

    #[test]
    fn crl_lists_revocations_with_reasons_and_increasing_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::init(dir.path(), &InitOptions::default()).unwrap();
        let issue = || {
            ca.issue_server(&ServerRequest {
                names: vec!["a.example".into()],
                validity: Validity::Days(1),
            })
            .unwrap()
            .serial_hex
        };
        let (first, second) = (issue(), issue());
        let empty = ca.crl(Duration::from_secs(24 * 3600)).unwrap();
        assert_eq!(empty.number, 1);
        assert!(empty.revoked.is_empty());
        ca.revoke(&first, RevocationReason::KeyCompromise).unwrap();

        let crl = ca.crl(Duration::from_secs(3600)).unwrap();
        assert_eq!(crl.number, 2);
        assert_eq!(crl.next_update - crl.this_update, 3600);
        let (_, parsed) = CertificateRevocationList::from_der(&crl.der).unwrap();
        let serials: Vec<String> = parsed
            .iter_revoked_certificates()
            .map(|r| crate::serial_hex(r.raw_serial()))
            .collect();
        assert_eq!(serials, vec![first.clone()]);
        assert!(!serials.contains(&second));
        let reason = parsed
            .iter_revoked_certificates()
            .next()
            .and_then(|r| r.reason_code())
            .unwrap();
        assert_eq!(reason.1 .0, RevocationReason::KeyCompromise.code());
        assert_eq!(parsed.crl_number().map(|n| n.to_string()), Some("2".into()));
        assert!(crl.pem.contains("BEGIN X509 CRL"));

        assert!(ca.crl(Duration::ZERO).is_err());
    }

    #[test]
    fn serial_text_round_trips_to_bytes() {
        assert_eq!(serial_bytes("0abc").unwrap(), vec![0x0a, 0xbc]);
        assert!(serial_bytes("abc").is_err());
        assert!(serial_bytes("zz").is_err());
    }
}
