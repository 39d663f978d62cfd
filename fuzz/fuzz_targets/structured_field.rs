//! A structured field, then 0x00 and a body: see
//! kakunin_signer::httpsig::fuzz_checks::structured_field.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kakunin_signer::httpsig::fuzz_checks::structured_field(data);
});
