//! The client's half of the exchange: where to ask, and what to send.

use der::asn1::OctetString;
use der::Encode;
use x509_cert::ext::Extension;
use x509_ocsp::{OcspRequest, Request, TbsRequest, Version};
use x509_parser::extensions::{GeneralName, ParsedExtension};

use super::certid::{check_issued_by, parse_cert, serial_of, HashAlg, IssuerHashes};
use super::{OcspError, NONCE_LEN, OID_NONCE};

/// A DER OCSPRequest for `cert` (DER), issued by `issuer` (DER), with one
/// SHA-1 CertID (RFC 5019: the hash every responder answers) and, when
/// given, an RFC 8954 nonce of 16-32 bytes. Unsigned: responders do not
/// ask for signed requests.
pub fn build_request(
    cert_der: &[u8],
    issuer_der: &[u8],
    nonce: Option<&[u8]>,
) -> Result<Vec<u8>, OcspError> {
    if let Some(nonce) = nonce {
        if !NONCE_LEN.contains(&nonce.len()) {
            return Err(OcspError::NonceLength { len: nonce.len() });
        }
    }
    let cert = parse_cert(cert_der, "certificate")?;
    let issuer = parse_cert(issuer_der, "issuer certificate")?;
    check_issued_by(&cert, &issuer)?;
    let encode = |e: der::Error| OcspError::Encode(e.to_string());
    let cert_id = IssuerHashes::of(&issuer)
        .cert_id(HashAlg::Sha1, serial_of(&cert)?)
        .map_err(encode)?;
    let request_extensions = nonce
        .map(|nonce| nonce_extension(nonce).map(|e| vec![e]))
        .transpose()
        .map_err(encode)?;
    OcspRequest {
        tbs_request: TbsRequest {
            version: Version::V1,
            requestor_name: None,
            request_list: vec![Request {
                req_cert: cert_id,
                single_request_extensions: None,
            }],
            request_extensions,
        },
        optional_signature: None,
    }
    .to_der()
    .map_err(encode)
}

/// RFC 8954: the extension's value is an OCTET STRING holding the nonce,
/// so the extnValue is the DER of that OCTET STRING.
fn nonce_extension(nonce: &[u8]) -> Result<Extension, der::Error> {
    Ok(Extension {
        extn_id: OID_NONCE,
        critical: false,
        extn_value: OctetString::new(OctetString::new(nonce)?.to_der()?)?,
    })
}

/// The first id-ad-ocsp URI in the certificate's Authority Information
/// Access extension: where its issuer answers OCSP for it. `None` when the
/// certificate does not parse or names no OCSP responder.
pub fn ocsp_url(cert_der: &[u8]) -> Option<String> {
    const ID_AD_OCSP: &str = "1.3.6.1.5.5.7.48.1";
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let url = cert
        .extensions()
        .iter()
        .filter_map(|extension| match extension.parsed_extension() {
            ParsedExtension::AuthorityInfoAccess(aia) => Some(aia),
            _ => None,
        })
        .flat_map(|aia| aia.iter())
        .filter(|access| access.access_method.to_id_string() == ID_AD_OCSP)
        .find_map(|access| match access.access_location {
            GeneralName::URI(uri) => Some(uri.to_string()),
            _ => None,
        });
    url
}
