//! Any buffer the parser accepts decodes to finite values, and its dot products with
//! bounded activations (f32 and int8) are finite, on every kernel set
//! (`adpq_core::harness::decode_finite`, which parses without the CRC check).
//!
//! As in `parse_packed`, each input is also tried with the header's declared length
//! (bytes 48..56) patched to match, so inserted or erased bytes still reach the body.
#![no_main]

use adpq_core::format::HEADER_LEN;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    adpq_core::harness::decode_finite(data);
    if data.len() >= HEADER_LEN {
        let mut fixed = data.to_vec();
        fixed[48..56].copy_from_slice(&(data.len() as u64).to_le_bytes());
        if fixed != data {
            adpq_core::harness::decode_finite(&fixed);
        }
    }
});
