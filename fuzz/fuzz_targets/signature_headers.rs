//! Signature-Input, Signature and label, separated by 0x00: see
//! kakunin_signer::httpsig::fuzz_checks::signature_headers.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kakunin_signer::httpsig::fuzz_checks::signature_headers(data);
});
