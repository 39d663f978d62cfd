use der::{Reader, SliceReader};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};

use super::*;
use crate::{FileKey, KeyBackend};

fn der_octet_string(bytes: &[u8]) -> Vec<u8> {
    OctetStringRef::new(bytes).unwrap().to_der().unwrap()
}

#[test]
fn ec_spki_matches_what_rustls_derives_for_each_curve() {
    for (alg, algorithm) in [
        (&rcgen::PKCS_ECDSA_P256_SHA256, KeyAlgorithm::EcdsaP256),
        (&rcgen::PKCS_ECDSA_P384_SHA384, KeyAlgorithm::EcdsaP384),
        (&rcgen::PKCS_ED25519, KeyAlgorithm::Ed25519),
    ] {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let raw = key.public_key_raw();
        let expected = FileKey::from_pem("k", key.serialize_pem().as_bytes()).unwrap();
        // Both forms a token may hand back read as the same point.
        for value in [raw.to_vec(), der_octet_string(raw)] {
            let point = ec_point(algorithm, &value).unwrap();
            assert_eq!(
                ec_spki(algorithm, &point).unwrap(),
                expected.public_key_spki()
            );
        }
    }
}

#[test]
fn ec_point_refuses_wrong_sizes_and_compressed_points() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = key.public_key_raw();
    assert!(ec_point(KeyAlgorithm::EcdsaP384, raw).is_err());
    assert!(ec_point(KeyAlgorithm::EcdsaP256, &raw[..64]).is_err());
    let mut compressed = raw[..33].to_vec();
    compressed[0] = 0x02;
    assert!(ec_point(KeyAlgorithm::EcdsaP256, &der_octet_string(&compressed)).is_err());
    let mut not_uncompressed = raw.to_vec();
    not_uncompressed[0] = 0x05;
    assert!(ec_point(KeyAlgorithm::EcdsaP256, &not_uncompressed).is_err());
    assert!(ec_point(KeyAlgorithm::EcdsaP256, &[]).is_err());
    assert!(ec_point(KeyAlgorithm::EcdsaP256, &[0x04, 0x80]).is_err());
}

#[test]
fn curves_are_read_from_ec_params() {
    let oid = |s: &str| ObjectIdentifier::new_unwrap(s).to_der().unwrap();
    assert_eq!(
        curve_from_ec_params(&oid("1.2.840.10045.3.1.7")),
        Ok(KeyAlgorithm::EcdsaP256)
    );
    assert_eq!(
        curve_from_ec_params(&oid("1.3.132.0.34")),
        Ok(KeyAlgorithm::EcdsaP384)
    );
    assert_eq!(
        curve_from_ec_params(&oid("1.3.101.112")),
        Ok(KeyAlgorithm::Ed25519)
    );
    let name = der::asn1::PrintableStringRef::new("edwards25519")
        .unwrap()
        .to_der()
        .unwrap();
    assert_eq!(curve_from_ec_params(&name), Ok(KeyAlgorithm::Ed25519));
    // P-521, secp256k1, Ed448, garbage.
    for bad in [
        oid("1.3.132.0.35"),
        oid("1.3.132.0.10"),
        oid("1.3.101.113"),
        vec![],
        vec![0x06],
        vec![0x30, 0x00],
    ] {
        assert!(curve_from_ec_params(&bad).is_err(), "{bad:?}");
    }
}

/// The modulus and exponent inside an RSA SubjectPublicKeyInfo.
fn rsa_parts(spki_der: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let spki = SubjectPublicKeyInfoRef::from_der(spki_der).unwrap();
    let key = spki.subject_public_key.as_bytes().unwrap();
    let mut reader = SliceReader::new(key).unwrap();
    reader
        .sequence(|seq| {
            let n = UintRef::decode(seq)?.as_bytes().to_vec();
            let e = UintRef::decode(seq)?.as_bytes().to_vec();
            Ok((n, e))
        })
        .unwrap()
}

#[test]
fn rsa_spki_matches_ring_and_ignores_leading_zeros() {
    let key = FileKey::from_pem(
        "rsa",
        include_bytes!("../../tests/fixtures/rsa2048-pkcs1.pem"),
    )
    .unwrap();
    let expected = key.public_key_spki();
    let (n, e) = rsa_parts(expected);
    assert_eq!(rsa_spki(&n, &e).unwrap(), expected);
    // Tokens may pad the modulus with a zero byte: the DER is the same.
    let mut padded = vec![0u8];
    padded.extend_from_slice(&n);
    assert_eq!(rsa_spki(&padded, &[0, 1, 0, 1]).unwrap(), expected);
}

#[test]
fn raw_ecdsa_signatures_become_der_that_ring_verifies() {
    let rng = SystemRandom::new();
    for (fixed, asn1, size) in [
        (
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &signature::ECDSA_P256_SHA256_ASN1,
            32,
        ),
        (
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            &signature::ECDSA_P384_SHA384_ASN1,
            48,
        ),
    ] {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(fixed, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(fixed, pkcs8.as_ref(), &rng).unwrap();
        // Enough signatures that some r or s start with a zero or high bit.
        for i in 0..64u8 {
            let message = [i; 20];
            let raw = key.sign(&rng, &message).unwrap();
            assert_eq!(raw.as_ref().len(), 2 * size);
            let der = ecdsa_raw_to_der(raw.as_ref()).unwrap();
            signature::UnparsedPublicKey::new(asn1, key.public_key().as_ref())
                .verify(&message, &der)
                .unwrap();
        }
    }
}

#[test]
fn raw_ecdsa_edge_cases() {
    assert!(ecdsa_raw_to_der(&[]).is_err());
    assert!(ecdsa_raw_to_der(&[1, 2, 3]).is_err());
    // High bit set: a zero byte keeps the INTEGER positive.
    assert_eq!(
        ecdsa_raw_to_der(&[0x80, 0x01]).unwrap(),
        [0x30, 0x07, 0x02, 0x02, 0x00, 0x80, 0x02, 0x01, 0x01]
    );
    // Leading zeros are dropped (DER's minimal INTEGER).
    assert_eq!(
        ecdsa_raw_to_der(&[0x00, 0x05, 0x00, 0x00]).unwrap(),
        [0x30, 0x06, 0x02, 0x01, 0x05, 0x02, 0x01, 0x00]
    );
}
