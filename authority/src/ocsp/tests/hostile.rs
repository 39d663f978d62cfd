//! Hostile bytes on either side: every truncation and single-byte change of
//! a genuine message must give an OCSP status or an error, never a panic.

use super::*;
use crate::ocsp::verify_response;

#[test]
fn every_truncation_and_bit_flip_of_a_request_is_answered() {
    let f = Fixture::new();
    let request = f.request(Some(&[3u8; 16]));
    let mut variants: Vec<Vec<u8>> = (0..request.len()).map(|n| request[..n].to_vec()).collect();
    for i in 0..request.len() {
        for bit in [0x01, 0x80] {
            let mut flipped = request.clone();
            flipped[i] ^= bit;
            variants.push(flipped);
        }
    }
    for variant in variants {
        let reply = f.respond(&variant, CertStatus::Good);
        // Whatever it says, it must be a response OCSP clients can read.
        let status = status_of(&reply.der);
        assert_eq!(status, reply.outcome.status);
    }
}

#[test]
fn every_truncation_and_bit_flip_of_a_response_is_refused_or_verified() {
    let f = Fixture::new();
    let response = f.respond(&f.request(None), CertStatus::Good).der;
    let at = now().unix_timestamp();
    for n in 0..response.len() {
        assert!(verify_response(&response[..n], &f.agent_der, &f.ca_der, at, None).is_err());
    }
    for i in 0..response.len() {
        let mut flipped = response.clone();
        flipped[i] ^= 0x01;
        // Some flips land in unsigned bytes that do not change the meaning
        // (e.g. the responseBytes' own header cannot, but none may panic).
        if let Ok(verified) = verify_response(&flipped, &f.agent_der, &f.ca_der, at, None) {
            assert_eq!(verified.status, CertStatus::Good, "byte {i}");
        }
    }
}
