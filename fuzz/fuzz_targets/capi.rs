//! Arbitrary bytes and arguments through the C entry points (`adpq_capi::harness`):
//! lengths, NULLs, misaligned buffers, wrong sizes, unknown enumeration values, corrupt
//! packed buffers. A known status every time, never a panic or a bad access.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    adpq_capi::harness::entry_points(data);
});
