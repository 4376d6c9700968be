//! Arbitrary bytes into the packed-format parser; whatever it accepts must dequantize and
//! dot without error (`adpq_core::harness::parse_packed`, which parses both with and
//! without the CRC check).
//!
//! Mutations that insert or erase bytes almost never keep the header's declared length
//! (bytes 48..56) and the CRC-32 (bytes 56..60, see docs/FORMAT.md) consistent, so each
//! input is also tried with both fields patched to match: the fuzzer then explores the
//! structural validation behind them, through the checksum-verifying path too.
#![no_main]

use adpq_core::format::{checksum, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    adpq_core::harness::parse_packed(data);
    if data.len() >= HEADER_LEN {
        let mut fixed = data.to_vec();
        fixed[48..56].copy_from_slice(&(data.len() as u64).to_le_bytes());
        let crc = checksum(&fixed);
        fixed[56..60].copy_from_slice(&crc.to_le_bytes());
        if fixed != data {
            adpq_core::harness::parse_packed(&fixed);
        }
    }
});
