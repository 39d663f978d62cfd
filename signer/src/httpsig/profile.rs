//! The kakunin profile of RFC 9421 (DESIGN.md "Request signature"): which
//! components and parameters a signature carries, and the seed's
//! `X-Agent-*` mirrors beside it. Documented for other languages in
//! docs/wire-format.md.

use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue};
use rustls::SignatureScheme;

use super::alg::{self, SigAlg};
use super::base::{kakunin_components, signature_base, signature_base_of};
use super::batch::{self, BatchProof, BATCH_PROOF, BATCH_TAG};
use super::component::{Message, TargetUri};
use super::digest::content_digest;
use super::error::{malformed, HttpSigError};
use super::header::ParsedSignature;
use super::params::{write_inner_list, ParamsRef};
use crate::backend::KeyBackend;

pub const LABEL: &str = "kakunin";
pub const TAG: &str = "kakunin";
pub const X_AGENT_SIGNATURE: &str = "x-agent-signature";
pub const X_AGENT_CERTIFICATE: &str = "x-agent-certificate";
pub const X_AGENT_TIMESTAMP: &str = "x-agent-timestamp";
pub const X_AGENT_OCSP: &str = "x-agent-ocsp";

/// What signing one request needs besides the request.
#[derive(Debug)]
pub struct RequestSigner<'a> {
    pub key: &'a dyn KeyBackend,
    /// The certificate serial, lower-case hex: the `keyid` parameter.
    pub keyid: &'a str,
    /// The leaf certificate, sent as `X-Agent-Certificate`.
    pub certificate: &'a CertificateHeader,
    /// Signing time in Unix milliseconds: `X-Agent-Timestamp`, and
    /// `created` in whole seconds.
    pub created_ms: u64,
    /// `expires` = `created` + this.
    pub lifetime_secs: u64,
    pub nonce: String,
}

/// `X-Agent-Certificate`'s value for one certificate: base64 of its DER,
/// encoded once per certificate rather than for every request it signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateHeader(HeaderValue);

impl CertificateHeader {
    pub fn new(der: &[u8]) -> Result<CertificateHeader, HttpSigError> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(der);
        HeaderValue::try_from(encoded)
            .map(CertificateHeader)
            .map_err(|_| malformed(X_AGENT_CERTIFICATE, "not a valid header value"))
    }

    pub fn value(&self) -> &HeaderValue {
        &self.0
    }
}

/// Signs a request: sets `Content-Digest`, `Signature-Input`, `Signature`,
/// `X-Agent-Signature`, `X-Agent-Certificate` and `X-Agent-Timestamp` in
/// `headers` (replacing any copies already there).
pub fn sign_request(
    headers: &mut HeaderMap,
    method: &str,
    target: &TargetUri,
    body: &[u8],
    signer: &RequestSigner<'_>,
) -> Result<(), HttpSigError> {
    let unsigned = prepare_request(headers, method, target, body, signer)?;
    let signature = signer.key.sign(unsigned.scheme(), unsigned.base())?;
    unsigned.finish(headers, signer.key, signature)
}

/// A request whose signature base is built but not yet signed: the key is
/// asked in between, by [`sign_request`] at once or by a caller that awaits
/// a remote key ([`crate::KeyBackend::sign_async`]).
#[derive(Debug)]
pub struct UnsignedRequest {
    alg: SigAlg,
    /// `Signature-Input`'s value: the label, `=`, then the inner list that
    /// the signature base ends with.
    input_value: String,
    base: String,
    certificate: HeaderValue,
    created_ms: u64,
}

/// Sets `Content-Digest` in `headers` and builds the signature base that
/// [`UnsignedRequest::finish`] completes.
pub fn prepare_request(
    headers: &mut HeaderMap,
    method: &str,
    target: &TargetUri,
    body: &[u8],
    signer: &RequestSigner<'_>,
) -> Result<UnsignedRequest, HttpSigError> {
    prepare(headers, method, target, body, signer, TAG)
}

/// As [`prepare_request`], for a request whose signature base will be a
/// leaf of a batch ([`super::batch`]): `tag` is [`BATCH_TAG`], and
/// [`UnsignedRequest::finish_batch`] completes it.
pub fn prepare_batch_request(
    headers: &mut HeaderMap,
    method: &str,
    target: &TargetUri,
    body: &[u8],
    signer: &RequestSigner<'_>,
) -> Result<UnsignedRequest, HttpSigError> {
    prepare(headers, method, target, body, signer, BATCH_TAG)
}

fn prepare(
    headers: &mut HeaderMap,
    method: &str,
    target: &TargetUri,
    body: &[u8],
    signer: &RequestSigner<'_>,
    tag: &str,
) -> Result<UnsignedRequest, HttpSigError> {
    let alg = SigAlg::for_key(signer.key.algorithm());
    set(headers, "content-digest", content_digest(body))?;
    let created = i64::try_from(signer.created_ms / 1000)
        .map_err(|_| malformed("signature-input", "created is out of range"))?;
    let lifetime = i64::try_from(signer.lifetime_secs)
        .map_err(|_| malformed("signature-input", "expires is out of range"))?;
    let covered = kakunin_components(headers.contains_key(http::header::CONTENT_TYPE));
    let mut input_value = String::with_capacity(LABEL.len() + 256);
    input_value.push_str(LABEL);
    input_value.push('=');
    let line_start = input_value.len();
    write_inner_list(
        &mut input_value,
        covered,
        &ParamsRef {
            created: Some(created),
            expires: Some(created.saturating_add(lifetime)),
            nonce: Some(&signer.nonce),
            keyid: Some(signer.keyid),
            alg: Some(alg.name()),
            tag: Some(tag),
        },
    )?;
    let message = Message::Request {
        method,
        target,
        headers,
    };
    // The label is ASCII, so the list starts on a character boundary.
    let line = input_value
        .get(line_start..)
        .ok_or_else(|| malformed("signature-input", "the label is not ASCII"))?;
    let base = signature_base_of(&message, covered, line)?;
    Ok(UnsignedRequest {
        alg,
        input_value,
        base,
        certificate: signer.certificate.value().clone(),
        created_ms: signer.created_ms,
    })
}

impl UnsignedRequest {
    /// The scheme to ask the key backend for.
    pub fn scheme(&self) -> SignatureScheme {
        self.alg.scheme()
    }

    /// The signature base: what the key signs.
    pub fn base(&self) -> &[u8] {
        self.base.as_bytes()
    }

    pub fn alg(&self) -> SigAlg {
        self.alg
    }

    /// This request's leaf in a batch's tree.
    pub fn leaf_hash(&self) -> Vec<u8> {
        batch::leaf_hash(self.alg, self.base.as_bytes())
    }

    /// Sets the signature headers from `signature`, `key`'s answer for
    /// [`Self::base`] (ECDSA as DER, as backends return it).
    pub fn finish(
        self,
        headers: &mut HeaderMap,
        key: &dyn KeyBackend,
        signature: Vec<u8>,
    ) -> Result<(), HttpSigError> {
        let signature = alg::wire_form(key, self.alg, signature)?;
        self.set_headers(headers, &SignatureHeaders::new(&signature)?)
    }

    /// Sets the signature headers of a batched request: `signature` is the
    /// batch's ([`BatchSignature`]), `proof` this request's place in it.
    pub fn finish_batch(
        self,
        headers: &mut HeaderMap,
        signature: &BatchSignature,
        proof: &BatchProof,
    ) -> Result<(), HttpSigError> {
        set(headers, BATCH_PROOF, proof.header_value(LABEL))?;
        self.set_headers(headers, &signature.headers)
    }

    fn set_headers(
        self,
        headers: &mut HeaderMap,
        signature: &SignatureHeaders,
    ) -> Result<(), HttpSigError> {
        set(headers, "signature-input", self.input_value)?;
        headers.insert(
            HeaderName::from_static("signature"),
            signature.signature.clone(),
        );
        headers.insert(
            HeaderName::from_static(X_AGENT_SIGNATURE),
            signature.x_agent.clone(),
        );
        headers.insert(
            HeaderName::from_static(X_AGENT_CERTIFICATE),
            self.certificate,
        );
        headers.insert(
            HeaderName::from_static(X_AGENT_TIMESTAMP),
            HeaderValue::from(self.created_ms),
        );
        Ok(())
    }
}

/// A signature's two header values, `Signature` and its `X-Agent-Signature`
/// mirror. Built once per signature: a batch's requests share (clone) them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SignatureHeaders {
    signature: HeaderValue,
    x_agent: HeaderValue,
}

impl SignatureHeaders {
    /// From the signature's RFC 9421 wire form.
    fn new(wire: &[u8]) -> Result<SignatureHeaders, HttpSigError> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(wire);
        let value = |name: &'static str, text: String| {
            HeaderValue::try_from(text).map_err(|_| malformed(name, "not a valid header value"))
        };
        Ok(SignatureHeaders {
            signature: value("signature", [LABEL, "=:", &encoded, ":"].concat())?,
            x_agent: value(X_AGENT_SIGNATURE, encoded)?,
        })
    }
}

/// One key signature over a batch's tree, as every request of the batch
/// carries it (the RFC 9421 wire form, in its header values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSignature {
    headers: SignatureHeaders,
}

impl BatchSignature {
    /// From `key`'s answer for the tree's [`batch::MerkleTree::signed_message`]
    /// (ECDSA as DER, as backends return it).
    pub fn new(
        key: &dyn KeyBackend,
        alg: SigAlg,
        signature: Vec<u8>,
    ) -> Result<BatchSignature, HttpSigError> {
        let signature = alg::wire_form(key, alg, signature)?;
        Ok(BatchSignature {
            headers: SignatureHeaders::new(&signature)?,
        })
    }
}

/// Sets one header from a value built for it (moved in, not copied).
fn set(headers: &mut HeaderMap, name: &'static str, value: String) -> Result<(), HttpSigError> {
    let value =
        HeaderValue::try_from(value).map_err(|_| malformed(name, "not a valid header value"))?;
    headers.insert(HeaderName::from_static(name), value);
    Ok(())
}

/// Checks `parsed` over `message` with the key in `spki_der`. The algorithm
/// comes from the key; an `alg` parameter that names another is refused.
pub fn verify_signature(
    message: &Message<'_>,
    parsed: &ParsedSignature,
    spki_der: &[u8],
) -> Result<SigAlg, HttpSigError> {
    let alg = SigAlg::for_spki(spki_der).ok_or_else(|| {
        HttpSigError::UnsupportedAlgorithm("the certificate's key type".to_string())
    })?;
    if let Some(named) = &parsed.input.params.alg {
        if SigAlg::from_name(named) != Some(alg) {
            return Err(HttpSigError::UnsupportedAlgorithm(named.clone()));
        }
    }
    let base = signature_base(message, &parsed.input)?;
    if parsed.input.params.tag.as_deref() == Some(BATCH_TAG) {
        // The key signed the batch's root; this request's base must be a
        // leaf under it.
        let proof = BatchProof::from_headers(message.headers(), &parsed.label)?;
        let root = proof.root(alg, &batch::leaf_hash(alg, base.as_bytes()))?;
        let signed = batch::signed_message(proof.size, &root);
        alg::verify(alg, spki_der, &signed, &parsed.signature)?;
    } else {
        alg::verify(alg, spki_der, base.as_bytes(), &parsed.signature)?;
    }
    Ok(alg)
}

/// The kakunin profile's demands on a received signature beyond its
/// mathematics: every component DESIGN.md lists is covered (so nothing the
/// receiver acts on can be swapped), and the parameters a receiver needs
/// for freshness and replay are there.
pub fn check_profile(parsed: &ParsedSignature, headers: &HeaderMap) -> Result<(), HttpSigError> {
    let required = kakunin_components(headers.contains_key(http::header::CONTENT_TYPE));
    for component in required {
        if !parsed.input.covered.contains(component) {
            return Err(HttpSigError::ComponentMissing(format!(
                "{} (not covered by the signature)",
                component.name()
            )));
        }
    }
    let params = &parsed.input.params;
    let absent = |name: &str| malformed("signature-input", format!("parameter {name} is missing"));
    params.created.ok_or_else(|| absent("created"))?;
    params.expires.ok_or_else(|| absent("expires"))?;
    params.nonce.as_ref().ok_or_else(|| absent("nonce"))?;
    params.keyid.as_ref().ok_or_else(|| absent("keyid"))?;
    if !matches!(params.tag.as_deref(), Some(TAG | BATCH_TAG)) {
        return Err(malformed(
            "signature-input",
            format!("tag is not \"{TAG}\" or \"{BATCH_TAG}\""),
        ));
    }
    Ok(())
}
