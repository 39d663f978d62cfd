//! Where relying parties ask about revocation: the AIA extension (OCSP) and
//! the CRL distribution point, both under the CA's `public_url`, where
//! `kakunin ca serve` answers.

use der::asn1::Ia5String;
use der::oid::db::rfc5280::{ID_AD_OCSP, ID_PE_AUTHORITY_INFO_ACCESS};
use der::Encode;
use rcgen::{CertificateParams, CrlDistributionPoint, CustomExtension};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax};

use crate::AuthorityError;

pub const DEFAULT_PUBLIC_URL: &str = "http://127.0.0.1:8180";

pub fn ocsp_url(public_url: &str) -> String {
    format!("{public_url}/ocsp")
}

pub fn crl_url(public_url: &str) -> String {
    format!("{public_url}/crl")
}

/// Adds AIA (OCSP) and a CRL distribution point to an agent certificate.
pub fn add_revocation_pointers(
    params: &mut CertificateParams,
    public_url: &str,
) -> Result<(), AuthorityError> {
    params
        .custom_extensions
        .push(aia_extension(&ocsp_url(public_url))?);
    params.crl_distribution_points = vec![CrlDistributionPoint {
        uris: vec![crl_url(public_url)],
    }];
    Ok(())
}

/// AuthorityInfoAccessSyntax with one id-ad-ocsp URI (RFC 5280 4.2.2.1);
/// rcgen has no builder for it, so the value is encoded here.
fn aia_extension(ocsp_url: &str) -> Result<CustomExtension, AuthorityError> {
    let invalid = |e: der::Error| AuthorityError::Invalid {
        what: "OCSP URL",
        reason: format!("{ocsp_url:?}: {e}"),
    };
    let location = Ia5String::new(ocsp_url).map_err(invalid)?;
    let aia = AuthorityInfoAccessSyntax(vec![AccessDescription {
        access_method: ID_AD_OCSP,
        access_location: GeneralName::UniformResourceIdentifier(location),
    }]);
    let value = aia.to_der().map_err(invalid)?;
    let oid: Vec<u64> = ID_PE_AUTHORITY_INFO_ACCESS.arcs().map(u64::from).collect();
    Ok(CustomExtension::from_oid_content(&oid, value))
}

/// Checks and normalises `ca init --public-url`: an http(s) base URL with a
/// host and nothing after the path, without a trailing slash (the `/ocsp`
/// and `/crl` paths are appended to it).
pub fn normalise_public_url(url: &str) -> Result<String, AuthorityError> {
    let invalid = |why: &str| {
        AuthorityError::Invalid {
        what: "public URL",
        reason: format!(
            "{url:?}: {why}; give the base URL where `kakunin ca serve` is reached, e.g. {DEFAULT_PUBLIC_URL}"
        ),
    }
    };
    let trimmed = url.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
        .ok_or_else(|| invalid("it must start with http:// or https://"))?;
    if !trimmed.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "only printable ASCII without spaces is allowed (punycode an IDN)",
        ));
    }
    if trimmed.contains(['?', '#']) {
        return Err(invalid("a query or fragment cannot be extended with /ocsp"));
    }
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.contains('@') {
        return Err(invalid("it needs a host (and no user name)"));
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls_are_checked_and_normalised() {
        assert_eq!(
            normalise_public_url("https://ca.example.com/kakunin/").unwrap(),
            "https://ca.example.com/kakunin"
        );
        assert_eq!(
            normalise_public_url(DEFAULT_PUBLIC_URL).unwrap(),
            DEFAULT_PUBLIC_URL
        );
        for bad in [
            "ca.example.com",
            "ftp://x",
            "http://",
            "http://a b",
            "http://x/?q",
            "http://u@x",
            "http://é.example",
        ] {
            assert!(normalise_public_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn aia_value_is_the_rfc_5280_structure() {
        let ext = aia_extension("http://ca.example/ocsp").unwrap();
        // SEQUENCE { SEQUENCE { OID id-ad-ocsp, [6] "http://ca.example/ocsp" } }
        let mut expected = vec![0x30, 0x24, 0x30, 0x22, 0x06, 0x08];
        expected.extend_from_slice(&[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01]);
        expected.extend_from_slice(&[0x86, 0x16]);
        expected.extend_from_slice(b"http://ca.example/ocsp");
        assert_eq!(ext.content(), expected.as_slice());
        assert!(!ext.criticality());
    }
}
