//! Arbitrary bytes through every checkpoint reader of `adpq-io` (safetensors header,
//! adpq metadata, packed tensors; `adpq_io::harness::checkpoint`), in memory: errors,
//! never panics, bounded memory.
//!
//! Two readings of each input: the whole file as it is, and, for an input that starts
//! with `{`, the header JSON up to the first NUL byte followed by the data section (the
//! 8-byte length prefix is computed). Mutations of the second kind keep the header length
//! consistent, so the fuzzer reaches the metadata and packed-tensor checks behind it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    adpq_io::harness::checkpoint(data);
    if data.first() == Some(&b'{') {
        let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
        let rest = data.get(split + 1..).unwrap_or_default();
        adpq_io::harness::checkpoint_parts(&data[..split], rest);
    }
});
