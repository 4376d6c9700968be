//! Structured round trip: quantize, pack, parse, dequantize, check the invariants (see
//! `adpq_core::harness::roundtrip`). Shapes stay small (at most 4 × 1100 weights) so the
//! fuzzer keeps a high exec rate; values mix plain magnitudes, exact ties, zeros, raw bit
//! patterns (denormals, huge values, NaN, Inf) so every path of selection and both grids
//! is reached, in all three format versions.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

#[derive(Debug)]
struct Input {
    rows: usize,
    cols: usize,
    values: Vec<f32>,
    bits: u8,
    group_size: u16,
    alpha: f64,
    asymmetric: bool,
    /// Format version: 1, 2 (`asymmetric` implied) or 3 (rotated, α 0).
    version: u8,
}

/// One weight, drawn so that ties, zeros and extreme magnitudes are common.
#[derive(Debug, Arbitrary)]
enum Value {
    /// A small integer over a power of two: many exact ties.
    Small(i8, u8),
    /// A mantissa and a moderate exponent.
    Scaled(i16, i8),
    /// Any f32 bit pattern (denormals, huge values, NaN, Inf).
    Raw(u32),
    Zero,
}

impl Value {
    fn to_f32(&self) -> f32 {
        match *self {
            Value::Small(m, e) => f32::from(m) * 2f32.powi(-i32::from(e % 24)),
            Value::Scaled(m, e) => f32::from(m) * 2f32.powi(i32::from(e) / 2),
            Value::Raw(b) => f32::from_bits(b),
            Value::Zero => 0.0,
        }
    }
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let rows = u.int_in_range(1..=4)?;
        let cols = u.int_in_range(1..=1100)?;
        // Mostly the sizes people use, sometimes any valid size, rarely an invalid one
        // (the harness then checks that the parameters are rejected, not mishandled).
        let group_size = match u.int_in_range(0..=7u8)? {
            0..=3 => *u.choose(&[16u16, 32, 64, 128, 256, 1024])?,
            4..=6 => u.int_in_range(16..=1024)?,
            _ => u.arbitrary()?,
        };
        let bits = match u.int_in_range(0..=15u8)? {
            0..=14 => u.int_in_range(2..=8)?,
            _ => u.arbitrary()?,
        };
        let alpha = match u.int_in_range(0..=7u8)? {
            0 => 0.0,
            1 => 0.5,
            2 => 0.06,
            _ => f64::from(u.int_in_range(0..=5000u16)?) / 10_000.0,
        };
        let asymmetric = u.arbitrary()?;
        let version = u.int_in_range(1..=3)?;
        let n_values = u.int_in_range(1..=256usize)?;
        let mut values = Vec::with_capacity(n_values);
        for _ in 0..n_values {
            if u.is_empty() {
                break;
            }
            values.push(Value::arbitrary(u)?.to_f32());
        }
        if values.is_empty() {
            values.push(1.0);
        }
        Ok(Input {
            rows,
            cols,
            values,
            bits,
            group_size,
            alpha,
            asymmetric,
            version,
        })
    }
}

fuzz_target!(|input: Input| {
    if input.version == 3 {
        adpq_core::harness::roundtrip_v3(
            input.rows,
            input.cols,
            &input.values,
            input.bits,
            input.group_size,
        );
        return;
    }
    if input.version == 2 {
        adpq_core::harness::roundtrip_v2(
            input.rows,
            input.cols,
            &input.values,
            input.bits,
            input.group_size,
            input.alpha,
        );
        return;
    }
    adpq_core::harness::roundtrip(
        input.rows,
        input.cols,
        &input.values,
        input.bits,
        input.group_size,
        input.alpha,
        input.asymmetric,
    );
});
