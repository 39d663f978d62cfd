//! The relying party's half: is this response genuine, about this
//! certificate, fresh, and an answer to our own request?

use der::asn1::{AnyRef, ContextSpecific, OctetString};
use der::{Decode, Encode, Reader, SliceReader, TagNumber};
use x509_cert::ext::Extensions;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_ocsp::{OcspGeneralizedTime, OcspResponse, ResponderId, ResponseData};
use x509_parser::certificate::X509Certificate;

use super::certid::{cert_id_serial, check_issued_by, parse_cert, HashAlg, IssuerHashes};
use super::{sigalg, OcspError, ResponseStatus, CLOCK_SKEW_SECS, OID_BASIC, OID_NONCE};
use crate::{serial_hex, CertStatus, RevocationReason};

/// Only this many certificates of a response are looked at for a delegated
/// responder: a genuine response carries one, a hostile one could carry
/// thousands to parse.
const MAX_RESPONSE_CERTS: usize = 4;

/// What a verified response says about the certificate. Times are Unix
/// seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedResponse {
    /// A revocation reason outside Kakunin's set (certificateHold,
    /// removeFromCRL, or none given) is reported as `Unspecified`.
    pub status: CertStatus,
    pub produced_at: i64,
    pub this_update: i64,
    pub next_update: Option<i64>,
    /// The response echoed the expected nonce. A caller that must rule out
    /// a replayed older answer (the proxy's revocation gate) requires this.
    pub nonce_echoed: bool,
}

/// Checks that `issuer_der` issued `cert_der`: the names chain and the
/// issuer's key verifies the certificate's signature. Callers that pick the
/// issuer for revocation checks verify their choice with this.
pub fn check_issuer(cert_der: &[u8], issuer_der: &[u8]) -> Result<(), OcspError> {
    let cert = parse_cert(cert_der, "certificate")?;
    let issuer = parse_cert(issuer_der, "issuer certificate")?;
    check_issued_by(&cert, &issuer)?;
    sigalg::verify(
        &cert.signature_algorithm.algorithm.to_id_string(),
        issuer.public_key(),
        cert.tbs_certificate.as_ref(),
        &cert.signature_value.data,
    )
    .map_err(|e| OcspError::NotIssuedBy(e.to_string()))
}

/// Verifies a DER OCSPResponse about `cert_der` issued by `issuer_der` as of
/// `now_unix`. `expected_nonce` is the nonce sent in the request, if any; a
/// response without a nonce is still accepted (RFC 8954 lets responders
/// ignore it, and pre-signed responses cannot carry one).
pub fn verify_response(
    response_der: &[u8],
    cert_der: &[u8],
    issuer_der: &[u8],
    now_unix: i64,
    expected_nonce: Option<&[u8]>,
) -> Result<VerifiedResponse, OcspError> {
    // The name alone does not tell two CAs apart; without the signature
    // check the answer could be about another certificate with this serial.
    check_issuer(cert_der, issuer_der)?;
    let cert = parse_cert(cert_der, "certificate")?;
    let issuer = parse_cert(issuer_der, "issuer certificate")?;

    let response = OcspResponse::from_der(response_der).map_err(malformed)?;
    let status = ResponseStatus::from_x509(response.response_status);
    if status != ResponseStatus::Successful {
        return Err(OcspError::Unsuccessful { status });
    }
    let bytes = response
        .response_bytes
        .ok_or_else(|| OcspError::Malformed("successful but without responseBytes".into()))?;
    if bytes.response_type != OID_BASIC {
        return Err(OcspError::UnsupportedResponseType(
            bytes.response_type.to_string(),
        ));
    }
    let basic = RawBasic::parse(bytes.response.as_bytes()).map_err(malformed)?;
    let data = ResponseData::from_der(basic.tbs).map_err(malformed)?;
    check_signature(&basic, &data.responder_id, &issuer, now_unix)?;

    // Only signed content is looked at from here on.
    reject_critical(data.response_extensions.as_ref(), &[OID_NONCE])?;
    let serial = serial_hex(cert.raw_serial());
    let hashes = IssuerHashes::of(&issuer);
    let single = data
        .responses
        .iter()
        .find(|single| hashes.names(&single.cert_id) && cert_id_serial(&single.cert_id) == serial)
        .ok_or(OcspError::NoMatchingResponse { serial })?;
    reject_critical(single.single_extensions.as_ref(), &[])?;

    let this_update = unix(single.this_update);
    if this_update > now_unix.saturating_add(CLOCK_SKEW_SECS) {
        return Err(OcspError::NotYetValid {
            this_update,
            now: now_unix,
        });
    }
    let next_update = single.next_update.map(unix);
    if let Some(next_update) = next_update {
        if next_update < now_unix.saturating_sub(CLOCK_SKEW_SECS) {
            return Err(OcspError::Stale {
                next_update,
                now: now_unix,
            });
        }
    }
    let nonce_echoed = match expected_nonce {
        Some(expected) => check_nonce(&data, expected)?,
        None => false,
    };

    Ok(VerifiedResponse {
        status: cert_status(&single.cert_status),
        produced_at: unix(data.produced_at),
        this_update,
        next_update,
        nonce_echoed,
    })
}

fn malformed(e: der::Error) -> OcspError {
    OcspError::Malformed(e.to_string())
}

/// BasicOCSPResponse read by hand rather than decoded whole, so that the
/// signature is checked over the exact tbsResponseData bytes received and
/// included certificates are handed to x509-parser untouched.
struct RawBasic<'a> {
    tbs: &'a [u8],
    algorithm: AlgorithmIdentifierOwned,
    signature: &'a [u8],
    certs: Vec<&'a [u8]>,
}

impl<'a> RawBasic<'a> {
    fn parse(bytes: &'a [u8]) -> der::Result<RawBasic<'a>> {
        let mut reader = SliceReader::new(bytes)?;
        let basic = reader.sequence(|r| {
            let tbs = r.tlv_bytes()?;
            let algorithm = r.decode()?;
            let signature: der::asn1::BitStringRef<'a> = r.decode()?;
            let signature = signature.as_bytes().ok_or_else(|| {
                der::Error::from(der::ErrorKind::Length {
                    tag: der::Tag::BitString,
                })
            })?;
            let certs = match ContextSpecific::<AnyRef<'a>>::decode_explicit(r, TagNumber::N0)? {
                Some(field) => field.value.sequence(|list| {
                    let mut certs = Vec::new();
                    while !list.is_finished() {
                        let cert = list.tlv_bytes()?;
                        if certs.len() < MAX_RESPONSE_CERTS {
                            certs.push(cert);
                        }
                    }
                    Ok(certs)
                })?,
                None => Vec::new(),
            };
            Ok(RawBasic {
                tbs,
                algorithm,
                signature,
                certs,
            })
        })?;
        reader.finish(basic)
    }
}

/// The response must be signed by the issuer itself, or by a responder the
/// issuer certified for OCSP signing (RFC 6960 4.2.2.2).
fn check_signature(
    basic: &RawBasic<'_>,
    responder: &ResponderId,
    issuer: &X509Certificate<'_>,
    now: i64,
) -> Result<(), OcspError> {
    let algorithm = basic.algorithm.oid.to_string();
    if identifies(responder, issuer) {
        return sigalg::verify(&algorithm, issuer.public_key(), basic.tbs, basic.signature)
            .map_err(|e| e.on_response("issuer"));
    }
    let delegate = basic
        .certs
        .iter()
        .filter_map(|der| x509_parser::parse_x509_certificate(der).ok())
        .map(|(_, cert)| cert)
        .find(|cert| identifies(responder, cert))
        .ok_or(OcspError::UnknownResponder)?;
    authorise_delegate(&delegate, issuer, now)?;
    sigalg::verify(
        &algorithm,
        delegate.public_key(),
        basic.tbs,
        basic.signature,
    )
    .map_err(|e| e.on_response("delegated responder"))
}

fn identifies(responder: &ResponderId, cert: &X509Certificate<'_>) -> bool {
    match responder {
        ResponderId::ByKey(hash) => {
            hash.as_bytes()
                == HashAlg::Sha1
                    .digest(&cert.public_key().subject_public_key.data)
                    .as_slice()
        }
        ResponderId::ByName(name) => name
            .to_der()
            .is_ok_and(|der| der == cert.subject().as_raw()),
    }
}

fn authorise_delegate(
    delegate: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
    now: i64,
) -> Result<(), OcspError> {
    let refuse = |reason: String| OcspError::ResponderNotAuthorized(reason);
    let subject = delegate.subject().to_string();
    if delegate.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(refuse(format!(
            "\"{subject}\" was issued by \"{}\", not by the certificate's issuer",
            delegate.issuer()
        )));
    }
    sigalg::verify(
        &delegate.signature_algorithm.algorithm.to_id_string(),
        issuer.public_key(),
        delegate.tbs_certificate.as_ref(),
        &delegate.signature_value.data,
    )
    .map_err(|e| {
        refuse(format!(
            "\"{subject}\": its certificate's {e} with the issuer's key"
        ))
    })?;
    let ocsp_signing = matches!(
        delegate.extended_key_usage(),
        Ok(Some(eku)) if eku.value.ocsp_signing
    );
    if !ocsp_signing {
        return Err(refuse(format!(
            "\"{subject}\" lacks extended key usage id-kp-OCSPSigning, so the issuer did not \
             delegate OCSP to it"
        )));
    }
    let validity = delegate.validity();
    let (from, until) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    if now < from || now > until {
        return Err(refuse(format!(
            "\"{subject}\" is valid from {from} to {until} (Unix time), not at {now}"
        )));
    }
    Ok(())
}

/// RFC 6960 4.4: an unrecognised critical extension makes the response
/// unusable, a non-critical one is ignored.
fn reject_critical(
    extensions: Option<&Extensions>,
    understood: &[der::asn1::ObjectIdentifier],
) -> Result<(), OcspError> {
    match extensions
        .into_iter()
        .flatten()
        .find(|e| e.critical && !understood.contains(&e.extn_id))
    {
        Some(e) => Err(OcspError::UnsupportedCriticalExtension {
            oid: e.extn_id.to_string(),
        }),
        None => Ok(()),
    }
}

/// Ok(true) when the response carries our nonce, Ok(false) when it carries
/// none, an error when it carries another.
fn check_nonce(data: &ResponseData, expected: &[u8]) -> Result<bool, OcspError> {
    let Some(extension) = data
        .response_extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == OID_NONCE)
    else {
        return Ok(false);
    };
    let value = extension.extn_value.as_bytes();
    // RFC 8954 wraps the nonce in an OCTET STRING; responders that predate
    // it echo the bare bytes. Either way they must be ours.
    let wrapped = OctetString::new(expected).and_then(|o| o.to_der());
    if value == expected || wrapped.is_ok_and(|w| w == value) {
        Ok(true)
    } else {
        Err(OcspError::NonceMismatch)
    }
}

fn cert_status(status: &x509_ocsp::CertStatus) -> CertStatus {
    match status {
        x509_ocsp::CertStatus::Good(_) => CertStatus::Good,
        x509_ocsp::CertStatus::Unknown(_) => CertStatus::Unknown,
        x509_ocsp::CertStatus::Revoked(info) => CertStatus::Revoked {
            revoked_at: unix(info.revocation_time),
            reason: info
                .revocation_reason
                .and_then(|reason| RevocationReason::from_code(reason as u8))
                .unwrap_or(RevocationReason::Unspecified),
        },
    }
}

fn unix(time: OcspGeneralizedTime) -> i64 {
    // GeneralizedTime stops at 9999, far inside i64.
    i64::try_from(time.0.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
}
