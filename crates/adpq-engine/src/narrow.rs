//! Dequantization into the output dtype without silent infinities.
//!
//! A dequantized value is an f32; written as f16 or bf16 it may not fit. Rounding alone
//! would turn it into ±inf without a word. Instead:
//! - a value beyond the dtype's largest finite value by no more than the quantization
//!   error bound of its grid (docs/FORMAT.md: `Δ/2 + (2^b − 1) · ulp_f16(h) · 2^e / 2`)
//!   saturates to that largest value: the weight it stands for may well have been
//!   representable (an F16 weight at 65504 decodes to a little more, since the step is
//!   rounded to f16). In format v2 an inlier saturates whenever the tensor's threshold
//!   fits the dtype (its weight was no larger), an outlier within its step's bound;
//! - a value beyond it by more, or a value that is not finite, is an error
//!   ([`EngineError::OutOfRange`]), with its row and column.

use adpq_core::{bf16, f16, CpuKernels, FormatVersion, PackedTensor};
use rayon::prelude::*;

use crate::driver::{OutDtype, BLOCK_ELEMS};
use crate::{EngineError, EngineResult};

impl OutDtype {
    /// The safetensors name of the dtype (`F32`, `F16`, `BF16`).
    pub fn name(self) -> &'static str {
        match self {
            OutDtype::F32 => "F32",
            OutDtype::F16 => "F16",
            OutDtype::Bf16 => "BF16",
        }
    }

    /// The largest finite value of the dtype.
    pub fn max_finite(self) -> f32 {
        match self {
            OutDtype::F32 => f32::MAX,
            OutDtype::F16 => f16::MAX.to_f32(),
            OutDtype::Bf16 => bf16::MAX.to_f32(),
        }
    }
}

impl std::fmt::Display for OutDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// Dequantizes a whole packed tensor into little-endian `dtype` elements in `out`
/// (`rows · cols · dtype.size()` bytes) over row blocks in parallel, saturating or
/// refusing values the dtype cannot hold (see the module docs).
pub(crate) fn dequantize_checked<K: CpuKernels>(
    kernels: K,
    packed: &PackedTensor<'_>,
    dtype: OutDtype,
    out: &mut [u8],
) -> EngineResult<()> {
    let (rows, cols) = (packed.rows(), packed.cols());
    let es = dtype.size();
    let needed = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(es))
        .unwrap_or(usize::MAX);
    if out.len() != needed {
        return Err(adpq_core::Error::BufferSize {
            needed: needed as u64,
            actual: out.len() as u64,
        }
        .into());
    }
    let block_rows = (BLOCK_ELEMS / cols.max(1)).max(1);
    out.par_chunks_mut(block_rows * cols * es)
        .enumerate()
        .try_for_each(|(b, chunk)| {
            let first_row = b * block_rows;
            let mut deq = vec![0f32; chunk.len() / es];
            kernels.dequantize_rows(packed, first_row, &mut deq)?;
            encode_checked(&deq, dtype, chunk, |i, v| {
                let (row, col) = (first_row + i / cols, i % cols);
                saturate(packed, row, col, v, dtype)
            })
        })
}

/// Encodes `values` as little-endian `dtype` elements (round to nearest even); a value
/// that would not be finite goes through `fix(index, value)`, which returns the value to
/// write instead or the error.
fn encode_checked(
    values: &[f32],
    dtype: OutDtype,
    out: &mut [u8],
    fix: impl Fn(usize, f32) -> EngineResult<f32>,
) -> EngineResult<()> {
    match dtype {
        OutDtype::F32 => {
            for (i, (o, &v)) in out.chunks_exact_mut(4).zip(values).enumerate() {
                let v = if v.is_finite() { v } else { fix(i, v)? };
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        OutDtype::F16 => {
            for (i, (o, &v)) in out.chunks_exact_mut(2).zip(values).enumerate() {
                let mut h = f16::from_f32(v);
                if !h.is_finite() {
                    h = f16::from_f32(fix(i, v)?);
                }
                o.copy_from_slice(&h.to_bits().to_le_bytes());
            }
        }
        OutDtype::Bf16 => {
            for (i, (o, &v)) in out.chunks_exact_mut(2).zip(values).enumerate() {
                let mut h = bf16::from_f32(v);
                if !h.is_finite() {
                    h = bf16::from_f32(fix(i, v)?);
                }
                o.copy_from_slice(&h.to_bits().to_le_bytes());
            }
        }
    }
    Ok(())
}

/// The value to write for the element at (`row`, `col`), dequantized to `v`, which does
/// not fit `dtype`: the dtype's largest finite value (with `v`'s sign) when `v` exceeds
/// it by no more than the quantization error bound of the element's grid, else the error.
fn saturate(
    packed: &PackedTensor<'_>,
    row: usize,
    col: usize,
    v: f32,
    dtype: OutDtype,
) -> EngineResult<f32> {
    let max = dtype.max_finite();
    let out_of_range = || EngineError::OutOfRange {
        row,
        col,
        value: v,
        dtype,
    };
    if !v.is_finite() {
        return Err(out_of_range());
    }
    let bound = error_bound(packed, row, col, max).ok_or_else(out_of_range)?;
    if f64::from(v.abs()) - f64::from(max) <= bound {
        Ok(max.copysign(v))
    } else {
        Err(out_of_range())
    }
}

/// How far above the output dtype's largest value `max` the decoded element at (`row`,
/// `col`) may lie and still stand for a weight the dtype could hold.
fn error_bound(packed: &PackedTensor<'_>, row: usize, col: usize, max: f32) -> Option<f64> {
    match packed.version() {
        FormatVersion::V1 => error_bound_v1(packed, row, col),
        FormatVersion::V2 => error_bound_v2(packed, row, col, max),
    }
}

/// ulp of an f16 of bits `h`: 2^-24 for subnormals, 2^(E - 15 - 10) for a normal exponent
/// field E.
fn f16_ulp(h: u16) -> f64 {
    let exp_bits = i32::from((h >> 10) & 0x1f);
    2f64.powi(if exp_bits == 0 { -24 } else { exp_bits - 25 })
}

/// Version 1: the reconstruction error bound of the element on its own grid (inlier or
/// outlier), `Δ/2 + (2^b − 1) · ulp_f16(h) · 2^e / 2`.
fn error_bound_v1(packed: &PackedTensor<'_>, row: usize, col: usize) -> Option<f64> {
    let group = packed
        .groups(row)
        .ok()?
        .find(|g| (g.start..g.start + g.len).contains(&col))?;
    let is_outlier = group.outliers().any(|p| group.start + p == col);
    let grid = if is_outlier {
        group.record.outliers
    } else {
        group.record.inliers
    };
    let code_max = f64::from((1u32 << packed.params().bits) - 1);
    let scale = 2f64.powi(i32::from(packed.info().scale_exp));
    Some(f64::from(grid.step) / 2.0 + code_max * f16_ulp(grid.h) * scale / 2.0)
}

/// Version 2. An outlier `±(t + k·h)` is within `h/2 + (2^(b−1) − 1) · ulp_f16(h) · 2^e / 2`
/// of its weight (the row's outlier step `h` is the nearest f16). An inlier stands for a
/// weight no larger than the threshold `t` in magnitude, so when the tensor has outliers
/// and `t` fits the dtype (`max`), the weight did: any bound (infinite) lets it saturate.
/// Otherwise the bound of its grid: half a step plus the rounding of the stored step
/// (`q_d` units of the row, so at most half a unit per code) and of the minimum.
fn error_bound_v2(packed: &PackedTensor<'_>, row: usize, col: usize, max: f32) -> Option<f64> {
    let mut groups = packed.affine_groups(row).ok()?;
    let units = *groups.units();
    let group = groups.find(|g| (g.start..g.start + g.len).contains(&col))?;
    let fp = packed.params();
    if group.outliers().any(|p| group.start + p == col) {
        let scale = 2f64.powi(i32::from(packed.info().scale_exp));
        return Some(
            f64::from(units.outlier_step) / 2.0
                + f64::from(fp.magnitude_max()) * f16_ulp(units.outlier_step_bits) * scale / 2.0,
        );
    }
    if packed.n_outliers() > 0 && units.threshold <= max {
        return Some(f64::INFINITY);
    }
    Some(
        f64::from(group.record.grid.step) / 2.0
            + f64::from(fp.code_max()) * f64::from(units.step_unit) / 2.0
            + f64::from(units.min_unit) / 2.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use adpq_core::{packed_len, Params, Scalar, Weights};

    fn pack(w: &[f32], rows: usize, cols: usize) -> Vec<u8> {
        pack_with(&Params::DEFAULT, w, rows, cols)
    }

    fn pack_with(params: &Params, w: &[f32], rows: usize, cols: usize) -> Vec<u8> {
        let params = *params;
        let sel = Scalar.select(Weights::F32(w), rows, cols, &params).unwrap();
        let mut buf = vec![0u8; packed_len(rows, cols, params.format(), sel.n_outliers).unwrap()];
        Scalar
            .quantize(Weights::F32(w), rows, cols, &params, &sel, &mut buf)
            .unwrap();
        buf
    }

    fn f16s(bytes: &[u8]) -> Vec<f32> {
        bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()
    }

    /// Weights at ±65504 (the largest f16) decode a little above it; written as F16 they
    /// saturate to ±65504 instead of becoming ±inf.
    #[test]
    fn f16_range_edge_saturates() {
        let (rows, cols) = (2, 256);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| match i % 97 {
                0 => 65504.0,
                1 => -65504.0,
                _ => ((i as f32) * 0.37).sin() * 30000.0,
            })
            .collect();
        let buf = pack(&w, rows, cols);
        let p = PackedTensor::parse(&buf).unwrap();
        let mut f32s = vec![0f32; rows * cols];
        Scalar.dequantize_rows(&p, 0, &mut f32s).unwrap();
        assert!(
            f32s.iter().any(|v| f16::from_f32(*v).is_infinite()),
            "the test needs a value that rounds to inf in f16"
        );
        let mut out = vec![0u8; rows * cols * 2];
        dequantize_checked(Scalar, &p, OutDtype::F16, &mut out).unwrap();
        let back = f16s(&out);
        assert!(back.iter().all(|v| v.is_finite()));
        for (i, (&b, &orig)) in back.iter().zip(&w).enumerate() {
            if orig.abs() == 65504.0 {
                assert_eq!(b, orig, "element {i}");
            }
        }
    }

    /// Values far beyond the f16 range (an F32 tensor written as F16) are an error that
    /// names the row, the column and the dtype; BF16 and F32 hold them.
    #[test]
    fn values_beyond_f16_are_refused() {
        let (rows, cols) = (3, 128);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| if i == 200 { 1.0e6 } else { (i as f32).cos() })
            .collect();
        let buf = pack(&w, rows, cols);
        let p = PackedTensor::parse(&buf).unwrap();
        let mut out = vec![0u8; rows * cols * 2];
        let err = dequantize_checked(Scalar, &p, OutDtype::F16, &mut out).unwrap_err();
        assert!(
            matches!(
                err,
                EngineError::OutOfRange {
                    row: 1,
                    col: 72,
                    dtype: OutDtype::F16,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("row 1, column 72") && msg.contains("F16"),
            "{msg}"
        );
        dequantize_checked(Scalar, &p, OutDtype::Bf16, &mut out).unwrap();
        let mut out32 = vec![0u8; rows * cols * 4];
        dequantize_checked(Scalar, &p, OutDtype::F32, &mut out32).unwrap();
    }

    /// The bytes, and the first refused value, do not depend on the thread count.
    #[test]
    fn thread_count_does_not_matter() {
        let (rows, cols) = (300, 700);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| match i % 1013 {
                0 => 65504.0,
                5 => -65504.0,
                _ => ((i as f32) * 0.61).sin() * 20000.0,
            })
            .collect();
        let buf = pack(&w, rows, cols);
        let p = PackedTensor::parse(&buf).unwrap();
        let run = |threads: usize, dtype: OutDtype| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut out = vec![0u8; rows * cols * dtype.size()];
            pool.install(|| dequantize_checked(Scalar, &p, dtype, &mut out))
                .unwrap();
            out
        };
        for dtype in [OutDtype::F32, OutDtype::F16, OutDtype::Bf16] {
            let one = run(1, dtype);
            assert!(one == run(3, dtype), "{dtype}");
        }
    }

    #[test]
    fn non_finite_values_are_errors_in_every_dtype() {
        for dtype in [OutDtype::F32, OutDtype::F16, OutDtype::Bf16] {
            let mut out = vec![0u8; 2 * dtype.size()];
            let r = encode_checked(&[1.0, f32::INFINITY], dtype, &mut out, |i, v| {
                assert_eq!((i, v), (1, f32::INFINITY));
                Err(EngineError::Device("refused".into()))
            });
            assert!(r.is_err(), "{dtype}");
        }
        let mut out = vec![0u8; 4];
        encode_checked(&[f32::MAX, -f32::MAX], OutDtype::Bf16, &mut out, |_, v| {
            Ok(OutDtype::Bf16.max_finite().copysign(v))
        })
        .unwrap();
        let back: Vec<f32> = out
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect();
        assert_eq!(back, [bf16::MAX.to_f32(), bf16::MIN.to_f32()]);
    }

    /// Format v2 at the f16 range edge: ±65504 weights (outliers) come back within one
    /// f16 spacing as finite values, and the inliers of a tensor whose threshold fits
    /// F16 may always saturate, while an outlier's bound is its step's.
    #[test]
    fn v2_f16_range_edge() {
        let (rows, cols) = (2, 256);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| match i % 97 {
                0 => 65504.0,
                1 => -65504.0,
                _ => ((i as f32) * 0.37).sin() * 30000.0,
            })
            .collect();
        let buf = pack_with(&Params::V2, &w, rows, cols);
        let p = PackedTensor::parse(&buf).unwrap();
        let mut out = vec![0u8; rows * cols * 2];
        dequantize_checked(Scalar, &p, OutDtype::F16, &mut out).unwrap();
        let back = f16s(&out);
        for (i, (&b, &orig)) in back.iter().zip(&w).enumerate() {
            assert!(b.is_finite(), "element {i}");
            if orig.abs() == 65504.0 {
                assert!((b - orig).abs() <= 32.0, "element {i}: {b}");
            }
        }
        let max = OutDtype::F16.max_finite();
        assert!(p.info().threshold <= max);
        // Column 0 of row 0 is an outlier (65504), column 2 an inlier.
        // Half the row's outlier step (about (65504 − t)/7) plus its f16 rounding.
        let h = f64::from(p.affine_groups(0).unwrap().units().outlier_step);
        let outlier = error_bound(&p, 0, 0, max).unwrap();
        assert!(
            outlier >= h / 2.0 && outlier < h / 2.0 + 16.0,
            "{outlier} vs {h}"
        );
        assert_eq!(error_bound(&p, 0, 2, max), Some(f64::INFINITY));
    }

    /// Format v2 refuses a value far beyond F16 (an F32 outlier of 1e6) with its row and
    /// column, and BF16 and F32 hold it.
    #[test]
    fn v2_values_beyond_f16_are_refused() {
        let (rows, cols) = (3, 128);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| if i == 200 { 1.0e6 } else { (i as f32).cos() })
            .collect();
        let buf = pack_with(&Params::V2, &w, rows, cols);
        let p = PackedTensor::parse(&buf).unwrap();
        let mut out = vec![0u8; rows * cols * 2];
        let err = dequantize_checked(Scalar, &p, OutDtype::F16, &mut out).unwrap_err();
        assert!(
            matches!(
                err,
                EngineError::OutOfRange {
                    row: 1,
                    col: 72,
                    ..
                }
            ),
            "{err:?}"
        );
        dequantize_checked(Scalar, &p, OutDtype::Bf16, &mut out).unwrap();
        let mut out32 = vec![0u8; rows * cols * 4];
        dequantize_checked(Scalar, &p, OutDtype::F32, &mut out32).unwrap();
    }
}
