//! Which PKCS#11 mechanism makes a TLS signature scheme, and over what.
//!
//! The message is hashed here (ring) and only the digest goes to the
//! token: less data through a slow device, and the same mechanisms
//! (CKM_ECDSA, CKM_RSA_PKCS_PSS, CKM_RSA_PKCS) on every token. A token that
//! lacks a raw mechanism but has its hashing variant gets the message.

use cryptoki::context::Pkcs11;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::slot::Slot;
use ring::digest;
use rustls::SignatureScheme;

/// Every mechanism [`request`] may choose.
const CANDIDATES: [MechanismType; 12] = [
    MechanismType::ECDSA,
    MechanismType::ECDSA_SHA256,
    MechanismType::ECDSA_SHA384,
    MechanismType::RSA_PKCS_PSS,
    MechanismType::SHA256_RSA_PKCS_PSS,
    MechanismType::SHA384_RSA_PKCS_PSS,
    MechanismType::SHA512_RSA_PKCS_PSS,
    MechanismType::RSA_PKCS,
    MechanismType::SHA256_RSA_PKCS,
    MechanismType::SHA384_RSA_PKCS,
    MechanismType::SHA512_RSA_PKCS,
    MechanismType::EDDSA,
];

/// The candidates the token can sign with. Asked one by one rather than
/// through C_GetMechanismList, whose vendor mechanisms cryptoki logs as
/// errors, and so that the CKF_SIGN flag is checked too.
pub(crate) fn offered(context: &Pkcs11, slot: Slot) -> Vec<MechanismType> {
    CANDIDATES
        .into_iter()
        .filter(|m| {
            context
                .get_mechanism_info(slot, *m)
                .is_ok_and(|info| info.sign())
        })
        .collect()
}

/// What to ask the token for, and what to do with its answer.
pub(crate) struct Request {
    pub mechanism: Mechanism<'static>,
    pub data: Vec<u8>,
    /// The token answers r||s; TLS wants DER.
    pub ecdsa_to_der: bool,
}

#[derive(Clone, Copy)]
struct Hash {
    ring: &'static digest::Algorithm,
    mechanism: MechanismType,
    mgf: PkcsMgfType,
    /// DER `DigestInfo` up to the digest itself (RFC 8017, 9.2 note 1).
    digest_info_prefix: &'static [u8],
}

const SHA256: Hash = Hash {
    ring: &digest::SHA256,
    mechanism: MechanismType::SHA256,
    mgf: PkcsMgfType::MGF1_SHA256,
    digest_info_prefix: &[
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ],
};
const SHA384: Hash = Hash {
    ring: &digest::SHA384,
    mechanism: MechanismType::SHA384,
    mgf: PkcsMgfType::MGF1_SHA384,
    digest_info_prefix: &[
        0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
        0x05, 0x00, 0x04, 0x30,
    ],
};
const SHA512: Hash = Hash {
    ring: &digest::SHA512,
    mechanism: MechanismType::SHA512,
    mgf: PkcsMgfType::MGF1_SHA512,
    digest_info_prefix: &[
        0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03,
        0x05, 0x00, 0x04, 0x40,
    ],
};

enum Family {
    Ecdsa,
    Pss,
    Pkcs1,
    Ed25519,
}

fn family(scheme: SignatureScheme) -> Option<(Family, Hash)> {
    use SignatureScheme as S;
    Some(match scheme {
        S::ECDSA_NISTP256_SHA256 => (Family::Ecdsa, SHA256),
        S::ECDSA_NISTP384_SHA384 => (Family::Ecdsa, SHA384),
        S::RSA_PSS_SHA256 => (Family::Pss, SHA256),
        S::RSA_PSS_SHA384 => (Family::Pss, SHA384),
        S::RSA_PSS_SHA512 => (Family::Pss, SHA512),
        S::RSA_PKCS1_SHA256 => (Family::Pkcs1, SHA256),
        S::RSA_PKCS1_SHA384 => (Family::Pkcs1, SHA384),
        S::RSA_PKCS1_SHA512 => (Family::Pkcs1, SHA512),
        // Ed25519 hashes inside the algorithm; the hash here is unused.
        S::ED25519 => (Family::Ed25519, SHA512),
        _ => return None,
    })
}

/// The hashing variant of a raw mechanism, for tokens without the raw one.
fn hashing_variant(family: &Family, hash: &Hash) -> Option<MechanismType> {
    let sha = hash.mechanism;
    Some(match family {
        Family::Ecdsa if sha == MechanismType::SHA256 => MechanismType::ECDSA_SHA256,
        Family::Ecdsa if sha == MechanismType::SHA384 => MechanismType::ECDSA_SHA384,
        Family::Pss if sha == MechanismType::SHA256 => MechanismType::SHA256_RSA_PKCS_PSS,
        Family::Pss if sha == MechanismType::SHA384 => MechanismType::SHA384_RSA_PKCS_PSS,
        Family::Pss if sha == MechanismType::SHA512 => MechanismType::SHA512_RSA_PKCS_PSS,
        Family::Pkcs1 if sha == MechanismType::SHA256 => MechanismType::SHA256_RSA_PKCS,
        Family::Pkcs1 if sha == MechanismType::SHA384 => MechanismType::SHA384_RSA_PKCS,
        Family::Pkcs1 if sha == MechanismType::SHA512 => MechanismType::SHA512_RSA_PKCS,
        _ => return None,
    })
}

/// The request for `scheme` over `message`, given the mechanisms the token
/// lists. `Err` names what the token lacks.
pub(crate) fn request(
    scheme: SignatureScheme,
    message: &[u8],
    offered: &[MechanismType],
) -> Result<Request, String> {
    let (family, hash) = family(scheme).ok_or_else(|| format!("no mechanism for {scheme:?}"))?;
    let raw = match family {
        Family::Ecdsa => MechanismType::ECDSA,
        Family::Pss => MechanismType::RSA_PKCS_PSS,
        Family::Pkcs1 => MechanismType::RSA_PKCS,
        Family::Ed25519 => MechanismType::EDDSA,
    };
    let pss = PkcsPssParams {
        hash_alg: hash.mechanism,
        mgf: hash.mgf,
        // TLS 1.3 (RFC 8446 4.2.3): the salt is as long as the digest.
        s_len: (hash.ring.output_len() as u64).into(),
    };
    if offered.contains(&raw) {
        let digest = || digest::digest(hash.ring, message).as_ref().to_vec();
        let (mechanism, data) = match family {
            Family::Ecdsa => (Mechanism::Ecdsa, digest()),
            Family::Pss => (Mechanism::RsaPkcsPss(pss), digest()),
            Family::Pkcs1 => {
                let mut data = hash.digest_info_prefix.to_vec();
                data.extend_from_slice(&digest());
                (Mechanism::RsaPkcs, data)
            }
            Family::Ed25519 => (
                Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                message.to_vec(),
            ),
        };
        return Ok(Request {
            ecdsa_to_der: matches!(family, Family::Ecdsa),
            mechanism,
            data,
        });
    }
    let hashing = hashing_variant(&family, &hash).filter(|m| offered.contains(m));
    let mechanism = match hashing {
        Some(m) if m == MechanismType::ECDSA_SHA256 => Mechanism::EcdsaSha256,
        Some(m) if m == MechanismType::ECDSA_SHA384 => Mechanism::EcdsaSha384,
        Some(m) if m == MechanismType::SHA256_RSA_PKCS_PSS => Mechanism::Sha256RsaPkcsPss(pss),
        Some(m) if m == MechanismType::SHA384_RSA_PKCS_PSS => Mechanism::Sha384RsaPkcsPss(pss),
        Some(m) if m == MechanismType::SHA512_RSA_PKCS_PSS => Mechanism::Sha512RsaPkcsPss(pss),
        Some(m) if m == MechanismType::SHA256_RSA_PKCS => Mechanism::Sha256RsaPkcs,
        Some(m) if m == MechanismType::SHA384_RSA_PKCS => Mechanism::Sha384RsaPkcs,
        Some(m) if m == MechanismType::SHA512_RSA_PKCS => Mechanism::Sha512RsaPkcs,
        _ => {
            return Err(match hashing_variant(&family, &hash) {
                Some(h) => format!("the token offers neither {raw} nor {h}"),
                None => format!("the token does not offer {raw}"),
            })
        }
    };
    Ok(Request {
        ecdsa_to_der: matches!(family, Family::Ecdsa),
        mechanism,
        data: message.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use der::asn1::{AnyRef, ObjectIdentifier, OctetStringRef};
    use der::{Decode, Reader, SliceReader};

    use super::*;

    #[test]
    fn digest_info_prefixes_are_the_der_of_each_hash() {
        for (hash, oid) in [
            (SHA256, "2.16.840.1.101.3.4.2.1"),
            (SHA384, "2.16.840.1.101.3.4.2.2"),
            (SHA512, "2.16.840.1.101.3.4.2.3"),
        ] {
            let mut info = hash.digest_info_prefix.to_vec();
            info.extend_from_slice(digest::digest(hash.ring, b"m").as_ref());
            let mut reader = SliceReader::new(&info).unwrap();
            let (read_oid, len) = reader
                .sequence(|seq| {
                    let oid = seq.sequence(|alg| {
                        let oid = ObjectIdentifier::decode(alg)?;
                        AnyRef::decode(alg)?; // NULL
                        Ok(oid)
                    })?;
                    Ok((oid, OctetStringRef::decode(seq)?.as_bytes().len()))
                })
                .unwrap();
            assert_eq!(read_oid, ObjectIdentifier::new_unwrap(oid));
            assert_eq!(len, hash.ring.output_len());
        }
    }

    #[test]
    fn raw_mechanisms_get_a_digest_and_hashing_ones_the_message() {
        let raw = [MechanismType::ECDSA, MechanismType::RSA_PKCS_PSS];
        let r = request(SignatureScheme::ECDSA_NISTP384_SHA384, b"m", &raw).unwrap();
        assert_eq!(r.data.len(), 48);
        assert!(r.ecdsa_to_der);
        let r = request(SignatureScheme::RSA_PSS_SHA256, b"m", &raw).unwrap();
        assert_eq!(r.data.len(), 32);
        let hashing = [MechanismType::ECDSA_SHA256, MechanismType::SHA512_RSA_PKCS];
        let r = request(SignatureScheme::ECDSA_NISTP256_SHA256, b"m", &hashing).unwrap();
        assert_eq!((r.data.as_slice(), r.ecdsa_to_der), (&b"m"[..], true));
        let r = request(SignatureScheme::RSA_PKCS1_SHA512, b"m", &hashing).unwrap();
        assert_eq!(r.mechanism.mechanism_type(), MechanismType::SHA512_RSA_PKCS);
    }

    #[test]
    fn a_token_without_the_mechanism_is_named() {
        let err = request(SignatureScheme::RSA_PKCS1_SHA256, b"m", &[])
            .err()
            .unwrap();
        assert!(err.contains("neither"), "{err}");
        assert!(request(SignatureScheme::ED448, b"m", &[]).is_err());
    }
}
