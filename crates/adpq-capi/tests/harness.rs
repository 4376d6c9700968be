//! The fuzz harness (`adpq_capi::harness::entry_points`, target `capi` in fuzz/) on the
//! packed-format seeds and on pseudo-random argument bytes: every call answers with a
//! known status (the harness asserts it), and what adpq_quantize writes parses.

use adpq_capi::harness::{entry_points, Reached};

#[test]
fn seeds_and_random_arguments_get_statuses() {
    let seeds = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/seeds/decode_finite"
    );
    let mut n = 0;
    let mut reached = Reached::default();
    let mut quantized = 0;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for entry in std::fs::read_dir(seeds).expect("fuzz seeds") {
        let packed = std::fs::read(entry.unwrap().path()).unwrap();
        for _ in 0..24 {
            // 48 bytes of arguments, then the packed tensor (its length and CRC fixed when
            // the first flag bit says so).
            let mut data: Vec<u8> = (0..48).map(|_| next() as u8).collect();
            data.extend_from_slice(&packed);
            for flag in [0, 1] {
                data[0] = data[0] & !1 | flag;
                let r = entry_points(&data);
                reached.parsed |= r.parsed;
                quantized += usize::from(r.quantized);
                n += 1;
            }
        }
    }
    assert!(n >= 200, "{n} inputs");
    assert!(reached.parsed, "no seed parsed");
    assert!(
        quantized > 0,
        "no input reached adpq_quantize's success path"
    );
    eprintln!("harness: {n} inputs, {quantized} quantized");
    // Short and empty inputs too.
    for len in 0..64 {
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        entry_points(&data);
    }
}
