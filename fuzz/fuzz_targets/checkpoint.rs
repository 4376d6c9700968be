//! Arbitrary bytes through every checkpoint reader of `adpq-io` (safetensors header,
//! adpq metadata, packed tensors; `adpq_io::harness::checkpoint`), in memory: errors,
//! never panics, bounded memory.
//!
//! Two readings of each input: the whole file as it is, and, for an input that starts
//! with `{`, the header JSON up to the first NUL byte followed by the data section (the
//! 8-byte length prefix is computed). Mutations of the second kind keep the header length
//! consistent, so the fuzzer reaches the metadata and packed-tensor checks behind it.
//!
//! Seeds (`fuzz/seeds/checkpoint`): a tiny safetensors file (F32 2×128, F16 2×64, a 1-D
//! F32, a U8 tensor starting with the packed magic) and its quantization
//! (`adpq quantize --include 'weight$' --group-size 64`, so `adpq.not_packed` is there
//! too) and a format v2 one (`--format v2 --tensor-params 'layers\.1=bits:6'`, so
//! a per-tensor record), each as a whole file and in the JSON + NUL + data form; and a
//! finding kept as a seed (`original-format-adpq.bin`: `adpq.original_format` of `adpq`,
//! which dequantize restored as the output's `format`, so it read as packed).
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
