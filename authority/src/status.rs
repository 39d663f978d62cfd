//! Certificate status as the CA records it and as OCSP and CRLs report it.

use crate::AuthorityError;

/// RFC 5280 CRLReason. `certificateHold` and `removeFromCRL` are left out on
/// purpose: a Kakunin revocation is final, so a halted agent cannot be
/// quietly un-halted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RevocationReason {
    Unspecified,
    KeyCompromise,
    CaCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    PrivilegeWithdrawn,
    AaCompromise,
}

impl RevocationReason {
    pub const ALL: [RevocationReason; 8] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn,
        RevocationReason::AaCompromise,
    ];

    /// The CRLReason enumeration value (RFC 5280 section 5.3.1).
    pub fn code(self) -> u8 {
        match self {
            RevocationReason::Unspecified => 0,
            RevocationReason::KeyCompromise => 1,
            RevocationReason::CaCompromise => 2,
            RevocationReason::AffiliationChanged => 3,
            RevocationReason::Superseded => 4,
            RevocationReason::CessationOfOperation => 5,
            RevocationReason::PrivilegeWithdrawn => 9,
            RevocationReason::AaCompromise => 10,
        }
    }

    pub fn from_code(code: u8) -> Option<RevocationReason> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The RFC's camelCase name, as `ca revoke --reason` takes it and
    /// `openssl ocsp` prints it.
    pub fn name(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "keyCompromise",
            RevocationReason::CaCompromise => "cACompromise",
            RevocationReason::AffiliationChanged => "affiliationChanged",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessationOfOperation",
            RevocationReason::PrivilegeWithdrawn => "privilegeWithdrawn",
            RevocationReason::AaCompromise => "aACompromise",
        }
    }

    /// Accepts the RFC name in any letter case.
    pub fn from_name(name: &str) -> Result<RevocationReason, AuthorityError> {
        Self::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| AuthorityError::Invalid {
                what: "revocation reason",
                reason: format!(
                    "{name:?} is not one of: {}",
                    Self::ALL.map(|r| r.name()).join(", ")
                ),
            })
    }
}

impl std::fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the CA says about one serial number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertStatus {
    Good,
    Revoked {
        /// Unix seconds.
        revoked_at: i64,
        reason: RevocationReason,
    },
    /// Not a serial this CA issued.
    Unknown,
}

/// Canonical text form of a serial number: lower-case hex of the DER INTEGER
/// content with sign-padding zero bytes removed, so that a serial read from
/// a certificate, an OCSP request and the database compare equal.
pub fn serial_hex(der_integer_content: &[u8]) -> String {
    let start = der_integer_content
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(der_integer_content.len().saturating_sub(1));
    der_integer_content[start..]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Parses operator input (`ca revoke --serial`): hex, optional colons or a
/// `0x` prefix, any case. Returns the canonical form.
pub fn parse_serial(text: &str) -> Result<String, AuthorityError> {
    let cleaned: String = text
        .trim()
        .trim_start_matches("0x")
        .chars()
        .filter(|c| *c != ':')
        .collect();
    let invalid = || AuthorityError::Invalid {
        what: "serial number",
        reason: format!("{text:?} is not a hexadecimal serial number"),
    };
    if cleaned.is_empty() || cleaned.len() > 42 || !cleaned.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(invalid());
    }
    let padded = if cleaned.len() % 2 == 1 {
        format!("0{cleaned}")
    } else {
        cleaned
    };
    let bytes: Vec<u8> = (0..padded.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&padded[i..i + 2], 16))
        .collect::<Result<_, _>>()
        .map_err(|_| invalid())?;
    Ok(serial_hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_by_name_and_code() {
        for reason in RevocationReason::ALL {
            assert_eq!(RevocationReason::from_code(reason.code()), Some(reason));
            assert_eq!(RevocationReason::from_name(reason.name()).unwrap(), reason);
        }
        assert_eq!(
            RevocationReason::from_name("KEYCOMPROMISE").unwrap(),
            RevocationReason::KeyCompromise
        );
        assert!(RevocationReason::from_name("certificateHold").is_err());
        assert_eq!(RevocationReason::from_code(6), None);
    }

    #[test]
    fn serials_compare_in_one_form() {
        assert_eq!(serial_hex(&[0x00, 0x8a, 0x01]), "8a01");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(parse_serial("0x8A:01").unwrap(), "8a01");
        assert_eq!(parse_serial("00ab").unwrap(), "ab");
        assert_eq!(parse_serial("abc").unwrap(), "0abc");
        assert!(parse_serial("xyz").is_err());
        assert!(parse_serial("").is_err());
    }
}
