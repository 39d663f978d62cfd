//! The CA's OCSP responder: request bytes in, signed response bytes out.

use der::asn1::{BitString, GeneralizedTime, OctetString};
use der::{Decode, Encode};
use rcgen::SigningKey;
use time::OffsetDateTime;
use x509_cert::ext::pkix::CrlReason;
use x509_cert::ext::Extension;
use x509_ocsp::{
    BasicOcspResponse, OcspGeneralizedTime, OcspRequest, OcspResponse, ResponderId, ResponseData,
    RevokedInfo, SingleResponse, Version,
};

use super::certid::{cert_id_serial, HashAlg, IssuerHashes};
use super::{sigalg, ResponseStatus, MAX_REQUESTS, OID_NONCE};
use crate::ca_key::signing_error;
use crate::{Authority, AuthorityError, CertStatus, RevocationReason};

/// Times stamped on a response. `now` is taken by the caller so that the
/// codec stays pure and tests can answer as of any moment.
#[derive(Debug, Clone, Copy)]
pub struct ResponseOptions {
    /// producedAt and thisUpdate (sub-second part dropped).
    pub now: OffsetDateTime,
    /// nextUpdate - thisUpdate: how long relying parties may cache it.
    pub validity: time::Duration,
}

/// A response ready to send, and what it said, for the log.
#[derive(Debug, Clone)]
pub struct OcspReply {
    /// A DER OCSPResponse, whatever happened: refusals are OCSP statuses,
    /// never transport errors.
    pub der: Vec<u8>,
    pub outcome: OcspOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspOutcome {
    pub status: ResponseStatus,
    /// One per request entry, in request order; empty unless successful.
    pub answers: Vec<SerialAnswer>,
    /// Why the request was refused (not sent to the client: a refusal
    /// carries no text in OCSP).
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialAnswer {
    /// Canonical serial ([`crate::serial_hex`]).
    pub serial: String,
    pub status: CertStatus,
    /// False when the CertID named another issuer or an unknown hash
    /// algorithm; such entries are answered `unknown` without a lookup.
    pub this_ca: bool,
}

impl Authority {
    /// Answers a DER OCSPRequest. `lookup` is asked about each serial
    /// (canonical hex) that this CA issued; an error from it makes the whole
    /// answer `internalError`, because guessing a status is worse than none.
    pub fn respond_ocsp(
        &self,
        request_der: &[u8],
        lookup: &mut dyn FnMut(&str) -> Result<CertStatus, AuthorityError>,
        options: &ResponseOptions,
    ) -> OcspReply {
        match self.answer_ocsp(request_der, lookup, options) {
            Ok(reply) => reply,
            Err(refusal) => OcspReply {
                der: refusal_der(refusal.status),
                outcome: OcspOutcome {
                    status: refusal.status,
                    answers: Vec::new(),
                    detail: Some(refusal.detail),
                },
            },
        }
    }

    fn answer_ocsp(
        &self,
        request_der: &[u8],
        lookup: &mut dyn FnMut(&str) -> Result<CertStatus, AuthorityError>,
        options: &ResponseOptions,
    ) -> Result<OcspReply, Refusal> {
        let request = OcspRequest::from_der(request_der).map_err(|e| {
            Refusal::malformed(format!(
                "not a DER OCSPRequest (version 1): {e}; {} bytes",
                request_der.len()
            ))
        })?;
        let entries = &request.tbs_request.request_list;
        if entries.is_empty() {
            return Err(Refusal::malformed("the request list is empty".into()));
        }
        if entries.len() > MAX_REQUESTS {
            return Err(Refusal::malformed(format!(
                "{} certificates asked about; at most {MAX_REQUESTS} are answered per request",
                entries.len()
            )));
        }

        let ca = CaIdentity::of(self).map_err(Refusal::internal)?;
        let ours: Vec<bool> = entries
            .iter()
            .map(|entry| ca.hashes.names(&entry.req_cert))
            .collect();
        if !ours.contains(&true) {
            return Err(Refusal {
                status: ResponseStatus::Unauthorized,
                detail: "no CertID names this CA (issuer name or key hash differ, or the hash \
                         algorithm is not SHA-1/SHA-256/SHA-384/SHA-512)"
                    .into(),
            });
        }

        let mut answers = Vec::with_capacity(entries.len());
        for (entry, this_ca) in entries.iter().zip(ours) {
            let serial = cert_id_serial(&entry.req_cert);
            let status = if this_ca {
                lookup(&serial).map_err(|e| {
                    Refusal::internal(format!("status lookup for serial {serial} failed: {e}"))
                })?
            } else {
                CertStatus::Unknown
            };
            answers.push(SerialAnswer {
                serial,
                status,
                this_ca,
            });
        }

        let signer = Signer {
            key: self.issuer.key(),
            responder_id: ResponderId::ByKey(
                OctetString::new(ca.key_sha1).map_err(|e| Refusal::internal(e.to_string()))?,
            ),
            certs: None,
        };
        let singles = entries
            .iter()
            .zip(&answers)
            .map(|(entry, answer)| (entry.req_cert.clone(), answer.status));
        let der = sign_response(&signer, singles, echo_nonce(&request), options)
            .map_err(Refusal::internal)?;
        Ok(OcspReply {
            der,
            outcome: OcspOutcome {
                status: ResponseStatus::Successful,
                answers,
                detail: None,
            },
        })
    }
}

struct Refusal {
    status: ResponseStatus,
    detail: String,
}

impl Refusal {
    fn malformed(detail: String) -> Refusal {
        Refusal {
            status: ResponseStatus::MalformedRequest,
            detail,
        }
    }

    fn internal(detail: String) -> Refusal {
        Refusal {
            status: ResponseStatus::InternalError,
            detail,
        }
    }
}

/// An unsuccessful OCSPResponse is a SEQUENCE holding one ENUMERATED: a
/// fixed five bytes, written directly so that it cannot fail.
fn refusal_der(status: ResponseStatus) -> Vec<u8> {
    vec![0x30, 0x03, 0x0a, 0x01, status.code()]
}

/// What a CertID must hash to for this CA, and the responder's key id.
struct CaIdentity {
    hashes: IssuerHashes,
    key_sha1: Vec<u8>,
}

impl CaIdentity {
    fn of(ca: &Authority) -> Result<CaIdentity, String> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(ca.certificate_pem().as_bytes())
            .map_err(|e| format!("CA certificate is not PEM: {e}"))?;
        let cert = pem
            .parse_x509()
            .map_err(|e| format!("CA certificate does not parse: {e}"))?;
        Ok(CaIdentity {
            hashes: IssuerHashes::of(&cert),
            key_sha1: HashAlg::Sha1.digest(&cert.public_key().subject_public_key.data),
        })
    }
}

/// Who signs a response. The CA signs its own; tests also sign as a
/// delegated responder, which must include its certificate.
pub(crate) struct Signer<'a, K> {
    pub(crate) key: &'a K,
    pub(crate) responder_id: ResponderId,
    pub(crate) certs: Option<Vec<x509_cert::Certificate>>,
}

/// Builds and signs a successful BasicOCSPResponse with one SingleResponse
/// per (CertID, status).
pub(crate) fn sign_response<K: SigningKey>(
    signer: &Signer<'_, K>,
    singles: impl Iterator<Item = (x509_ocsp::CertId, CertStatus)>,
    nonce: Option<Extension>,
    options: &ResponseOptions,
) -> Result<Vec<u8>, String> {
    if options.validity <= time::Duration::ZERO {
        return Err(format!(
            "response validity {} is not positive; nextUpdate must follow thisUpdate",
            options.validity
        ));
    }
    let now = options.now.unix_timestamp();
    let this_update = generalized(now)?;
    let next_update = now
        .checked_add(options.validity.whole_seconds())
        .ok_or_else(|| "nextUpdate is past the year 9999".to_string())
        .and_then(generalized)?;
    let responses = singles
        .map(|(cert_id, status)| {
            Ok(SingleResponse {
                cert_id,
                cert_status: single_status(status)?,
                this_update,
                next_update: Some(next_update),
                single_extensions: None,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let tbs = ResponseData {
        version: Version::V1,
        responder_id: signer.responder_id.clone(),
        produced_at: this_update,
        responses,
        response_extensions: nonce.map(|n| vec![n]),
    };
    let algorithm = signer.key.algorithm();
    let signature_algorithm = sigalg::for_signing_key(algorithm).ok_or_else(|| {
        format!("the CA key's algorithm {algorithm:?} cannot sign OCSP responses")
    })?;
    let tbs_der = tbs.to_der().map_err(|e| e.to_string())?;
    let signature = signer
        .key
        .sign(&tbs_der)
        .map_err(|e| format!("signing the response failed: {}", signing_error(e)))?;
    let basic = BasicOcspResponse {
        tbs_response_data: tbs,
        signature_algorithm,
        signature: BitString::from_bytes(&signature).map_err(|e| e.to_string())?,
        certs: signer.certs.clone(),
    };
    OcspResponse::successful(basic)
        .and_then(|response| response.to_der())
        .map_err(|e| e.to_string())
}

fn single_status(status: CertStatus) -> Result<x509_ocsp::CertStatus, String> {
    Ok(match status {
        CertStatus::Good => x509_ocsp::CertStatus::good(),
        CertStatus::Unknown => x509_ocsp::CertStatus::unknown(),
        CertStatus::Revoked { revoked_at, reason } => x509_ocsp::CertStatus::revoked(RevokedInfo {
            revocation_time: generalized(revoked_at)?,
            revocation_reason: Some(crl_reason(reason)),
        }),
    })
}

fn crl_reason(reason: RevocationReason) -> CrlReason {
    match reason {
        RevocationReason::Unspecified => CrlReason::Unspecified,
        RevocationReason::KeyCompromise => CrlReason::KeyCompromise,
        RevocationReason::CaCompromise => CrlReason::CaCompromise,
        RevocationReason::AffiliationChanged => CrlReason::AffiliationChanged,
        RevocationReason::Superseded => CrlReason::Superseded,
        RevocationReason::CessationOfOperation => CrlReason::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn => CrlReason::PrivilegeWithdrawn,
        RevocationReason::AaCompromise => CrlReason::AaCompromise,
    }
}

/// Whole seconds: DER GeneralizedTime allows no fraction here (RFC 5280
/// 4.1.2.5.2), and some clients reject one.
fn generalized(unix: i64) -> Result<OcspGeneralizedTime, String> {
    let secs = u64::try_from(unix).map_err(|_| format!("time {unix} is before 1970"))?;
    GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(secs))
        .map(OcspGeneralizedTime)
        .map_err(|e| format!("time {unix}: {e}"))
}

/// The request's nonce extension, copied as sent so that the client finds
/// exactly its own bytes. Longer values are dropped (RFC 8954 2.1 allows
/// it) so that a request cannot make the signed response arbitrarily big.
fn echo_nonce(request: &OcspRequest) -> Option<Extension> {
    // 32 nonce bytes plus the OCTET STRING header RFC 8954 wraps them in.
    const MAX_NONCE_VALUE: usize = 34;
    let extension = request
        .tbs_request
        .request_extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id == OID_NONCE)?;
    let len = extension.extn_value.as_bytes().len();
    (1..=MAX_NONCE_VALUE).contains(&len).then(|| Extension {
        extn_id: OID_NONCE,
        critical: false,
        extn_value: extension.extn_value.clone(),
    })
}
