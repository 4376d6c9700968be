//! Exact selection against a sort-based oracle through every path and kernel set, f32,
//! f16 and bf16 input (`adpq_core::harness::selection`).
//!
//! Input bytes: element type, shape, α, then a pattern of values repeated over the tensor.
//! An input whose second byte is 0xFF and whose FNV-1a hash is a multiple of 8 is
//! replicated to 1024 × (1024 + c) weights, which takes the sampled one-pass path. Such
//! an input costs a thousand small ones; the hash keeps most of its mutations small. Values mix exact ties (repeats, small integers over powers of
//! two), ±0, subnormals, f16 and f32 extremes, the 2^124 and 2^-100 edges, NaN and ±Inf.
#![no_main]

use adpq_core::harness::{selection, InputType};
use libfuzzer_sys::fuzz_target;

/// Values that sit on an edge of some type or rule.
const SPECIALS: [f32; 16] = [
    65504.0, // f16::MAX
    -65504.0,
    65520.0,        // rounds to inf in f16
    6.103_515_6e-5, // f16 smallest normal
    5.960_464_5e-8, // f16 smallest subnormal
    f32::MIN_POSITIVE,
    1e-40,                           // f32 subnormal
    f32::from_bits(251 << 23),       // 2^124: rejected
    f32::from_bits((251 << 23) - 1), // largest accepted
    f32::from_bits(27 << 23),        // 2^-100: smallest accepted maximum
    f32::from_bits((27 << 23) - 1),  // just below
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    1.0,
    -1.0,
];

/// FNV-1a, 32 bits (`gen_seeds` salts the large seeds to pass the gate).
fn fnv1a(data: &[u8]) -> u32 {
    data.iter().fold(0x811C_9DC5, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.iter().copied();
    let mut next = || bytes.next().unwrap_or(0);
    let ty = [InputType::F32, InputType::F16, InputType::Bf16][usize::from(next() % 3)];
    let big = next() == 0xFF && fnv1a(data) % 8 == 0;
    let (r, c) = (usize::from(next()), usize::from(next()));
    let (rows, cols) = if big {
        (1024, 1024 + c % 64)
    } else {
        (1 + r % 8, 1 + c % 64)
    };
    let alpha = match next() {
        0 => 0.0,
        1 => 0.5,
        2 => 0.06,
        a => f64::from(a) / 512.0,
    };
    let mut pattern: Vec<f32> = Vec::new();
    while pattern.len() < 512 {
        let Some(tag) = bytes.next() else { break };
        let mut next = || bytes.next().unwrap_or(0);
        let v = match tag % 8 {
            0 | 1 => f32::from(next() as i8) * 2f32.powi(-i32::from(next() % 24)),
            2 => {
                f32::from(i16::from_le_bytes([next(), next()])) * 2f32.powi(i32::from(next() as i8))
            }
            3 => f32::from_bits(u32::from_le_bytes([next(), next(), next(), next()])),
            4 => {
                if next() % 2 == 0 {
                    0.0
                } else {
                    -0.0
                }
            }
            5 => SPECIALS[usize::from(next()) % SPECIALS.len()],
            // Exact ties: the previous value again, either sign.
            _ => pattern
                .last()
                .map_or(1.0, |&p| if next() % 2 == 0 { p } else { -p }),
        };
        pattern.push(v);
    }
    if pattern.is_empty() {
        pattern.push(1.0);
    }
    selection(&pattern, ty, rows, cols, alpha);
});
