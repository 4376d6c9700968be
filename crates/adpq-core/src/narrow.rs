//! Dequantized values into an output dtype without silent infinities: a rule of the
//! format, so every engine (CPU, CUDA) and the C ABI apply the same one.
//!
//! A dequantized value is an f32; written as f16 or bf16 it may not fit. Rounding alone
//! would turn it into ±inf without a word. Instead:
//! - a value beyond the dtype's largest finite value by no more than the quantization
//!   error bound of its grid (docs/FORMAT.md: `Δ/2 + (2^b − 1) · ulp_f16(h) · 2^e / 2`)
//!   saturates to that largest value: the weight it stands for may well have been
//!   representable (an F16 weight at 65504 decodes to a little more, since the step is
//!   rounded to f16). The bound is always the element's own grid's (inlier or outlier,
//!   v1 or v2), computed from what the buffer decodes, never from what an honest writer
//!   would have stored;
//! - a value beyond it by more, or a value that is not finite, is an error
//!   ([`Error::NotRepresentable`]), with its row and column.
//!
//! [`write_rows`] applies the rule to a block of dequantized rows; an engine runs it on
//! whatever blocks it likes (the result does not depend on the split).

use half::{bf16, f16};

use crate::dtype::OutDtype;
use crate::error::{Error, Result};
use crate::format::PackedTensor;
use crate::params::FormatVersion;

/// Writes the dequantized rows `values` of `packed` (rows `first_row..`, whole rows) as
/// little-endian `dtype` elements into `out` (`values.len() · dtype.size()` bytes), round
/// to nearest even. A value the dtype cannot hold saturates when it lies within its
/// grid's quantization error of the dtype's range, else it is
/// [`Error::NotRepresentable`] (see the module docs).
pub fn write_rows(
    packed: &PackedTensor<'_>,
    first_row: usize,
    values: &[f32],
    dtype: OutDtype,
    out: &mut [u8],
) -> Result<()> {
    let cols = packed.cols();
    let needed = values.len() as u64 * dtype.size() as u64;
    if !values.len().is_multiple_of(cols) || out.len() as u64 != needed {
        return Err(Error::BufferSize {
            needed,
            actual: out.len() as u64,
        });
    }
    encode_checked(values, dtype, out, |i, v| {
        saturate(packed, first_row + i / cols, i % cols, v, dtype)
    })
}

/// [`write_rows`] for part of one row: `values` are row `row`'s columns from
/// `first_col` on (a piece from [`crate::kernels::dequantize_row_pieces`], say).
pub fn write_part(
    packed: &PackedTensor<'_>,
    (row, first_col): (usize, usize),
    values: &[f32],
    dtype: OutDtype,
    out: &mut [u8],
) -> Result<()> {
    let needed = values.len() as u64 * dtype.size() as u64;
    let fits = first_col
        .checked_add(values.len())
        .is_some_and(|end| end <= packed.cols());
    if !fits || row >= packed.rows() || out.len() as u64 != needed {
        return Err(Error::BufferSize {
            needed,
            actual: out.len() as u64,
        });
    }
    encode_checked(values, dtype, out, |i, v| {
        saturate(packed, row, first_col + i, v, dtype)
    })
}

/// Encodes `values` as little-endian `dtype` elements (round to nearest even); a value
/// that would not be finite goes through `fix(index, value)`, which returns the value to
/// write instead or the error.
fn encode_checked(
    values: &[f32],
    dtype: OutDtype,
    out: &mut [u8],
    fix: impl Fn(usize, f32) -> Result<f32>,
) -> Result<()> {
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
) -> Result<f32> {
    let max = dtype.max_finite();
    let refused = Error::NotRepresentable {
        row: row as u64,
        col: col as u64,
        value: v,
        dtype,
    };
    if !v.is_finite() {
        return Err(refused);
    }
    let bound = saturation_bound(packed, row, col).ok_or(refused)?;
    if f64::from(libm::fabsf(v)) - f64::from(max) <= bound {
        Ok(libm::copysignf(max, v))
    } else {
        Err(refused)
    }
}

/// How far above an output dtype's largest value the decoded element at (`row`, `col`)
/// may lie and still stand for a weight the dtype could hold: the quantization error
/// bound of the element's own grid, whatever the dtype (`None` for an element outside
/// the tensor).
pub fn saturation_bound(packed: &PackedTensor<'_>, row: usize, col: usize) -> Option<f64> {
    match packed.version() {
        FormatVersion::V1 => bound_v1(packed, row, col),
        FormatVersion::V2 => bound_v2(packed, row, col),
        FormatVersion::V3 => bound_v3(packed, row, col),
    }
}

/// `2^k` as an f64.
fn pow2(k: i32) -> f64 {
    libm::ldexp(1.0, k)
}

/// ulp of an f16 of bits `h`: 2^-24 for subnormals, 2^(E - 15 - 10) for a normal exponent
/// field E.
fn f16_ulp(h: u16) -> f64 {
    let exp_bits = i32::from((h >> 10) & 0x1f);
    pow2(if exp_bits == 0 { -24 } else { exp_bits - 25 })
}

/// Version 1: the reconstruction error bound of the element on its own grid (inlier or
/// outlier), `Δ/2 + (2^b − 1) · ulp_f16(h) · 2^e / 2`.
fn bound_v1(packed: &PackedTensor<'_>, row: usize, col: usize) -> Option<f64> {
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
    let scale = pow2(i32::from(packed.info().scale_exp));
    Some(f64::from(grid.step) / 2.0 + code_max * f16_ulp(grid.h) * scale / 2.0)
}

/// Version 2. An outlier `±(t + k·h)` is within `h/2 + (2^(b−1) − 1) · ulp_f16(h) · 2^e / 2`
/// of its weight (the row's outlier step `h` is the nearest f16). An inlier is within the
/// bound of its own grid: half a step plus the rounding of the stored step (`q_d` units
/// of the row, so at most half a unit per code) and of the minimum.
///
/// The bound is what the element's grid can decode, never what an honest writer would
/// have stored: an inlier stands for a weight of at most the threshold `t`, but nothing in
/// a buffer makes its grid respect `t` (raise the header's exponent and an inlier decodes
/// to 10¹⁷ under a small `t`), so `t` fitting the dtype proves nothing about a value.
/// An honest inlier (weight `|w| ≤ t ≤ max`) decodes within its grid's bound of `w`, so
/// it still saturates whenever it exceeds `max` at all.
fn bound_v2(packed: &PackedTensor<'_>, row: usize, col: usize) -> Option<f64> {
    let mut groups = packed.affine_groups(row).ok()?;
    let units = *groups.units();
    let group = groups.find(|g| (g.start..g.start + g.len).contains(&col))?;
    let fp = packed.params();
    if group.outliers().any(|p| group.start + p == col) {
        let scale = pow2(i32::from(packed.info().scale_exp));
        return Some(
            f64::from(units.outlier_step) / 2.0
                + f64::from(fp.magnitude_max()) * f16_ulp(units.outlier_step_bits) * scale / 2.0,
        );
    }
    Some(
        f64::from(group.record.grid.step) / 2.0
            + f64::from(fp.code_max()) * f64::from(units.step_unit) / 2.0
            + f64::from(units.min_unit) / 2.0,
    )
}

/// Version 3. In the rotated basis each value is within its group's bound (half its
/// widest level gap, plus the rounding of the stored step and minimum, as in v2). The
/// inverse rotation mixes the values of one block: an element's error is at most the
/// largest bound of its segment's groups times the rotation's gain bound (`√B`, rounded
/// up). Without rotation, its own group's bound.
fn bound_v3(packed: &PackedTensor<'_>, row: usize, col: usize) -> Option<f64> {
    let fp = packed.params();
    if row >= packed.rows() || col >= packed.cols() {
        return None;
    }
    let r = packed.row(row).ok()?;
    let units = packed.units_of(&r);
    let g = usize::from(fp.group_size);
    let gap = if fp.uses_codebook() {
        // The widest step between code book levels, in eighths.
        let t = crate::params::CODEBOOK_4BIT;
        t.windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .map_or(1.0, |d| f64::from(d) / 8.0)
    } else {
        1.0
    };
    let bound = |gi: usize| {
        let grid = crate::format::record_v3::decode_record(r.records, gi, &units);
        f64::from(grid.step) * gap / 2.0
            + f64::from(fp.code_max()) * f64::from(units.step_unit) / 2.0
            + f64::from(units.min_unit) / 2.0
    };
    match packed.info().rotation {
        None => Some(bound(col / g)),
        Some(rot) => {
            let seg = rot.segment().max(g);
            let first = col / seg * seg;
            let last = (first + seg).min(packed.cols());
            let worst = (first / g..last.div_ceil(g)).map(bound).fold(0.0, f64::max);
            Some(worst * f64::from(rot.gain_bound()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{packed_len, CpuKernels, Params, Scalar, Weights};
    use std::vec;
    use std::vec::Vec;

    fn pack_with(params: &Params, w: &[f32], rows: usize, cols: usize) -> Vec<u8> {
        let params = *params;
        let sel = crate::select_tensor(&Scalar, Weights::F32(w), rows, cols, &params).unwrap();
        let mut buf = vec![0u8; packed_len(rows, cols, params.format(), sel.n_outliers).unwrap()];
        crate::quantize_tensor(
            &Scalar,
            Weights::F32(w),
            rows,
            cols,
            &params,
            &sel,
            &mut buf,
        )
        .unwrap();
        buf
    }

    /// Dequantizes all of `p` and writes it as `dtype`, by whole rows and, with the same
    /// result, by pieces of one group ([`write_part`]).
    fn restore(p: &PackedTensor<'_>, dtype: OutDtype) -> Result<Vec<u8>> {
        let mut f32s = vec![0f32; p.rows() * p.cols()];
        Scalar.dequantize_rows(p, 0, &mut f32s).unwrap();
        let mut out = vec![0u8; f32s.len() * dtype.size()];
        let whole = write_rows(p, 0, &f32s, dtype, &mut out).map(|()| out);
        let mut out = vec![0u8; f32s.len() * dtype.size()];
        let mut buf = vec![0f32; p.piece_unit()];
        let (cols, es) = (p.cols(), dtype.size());
        let pieces = (0..p.rows())
            .try_for_each(|r| {
                crate::kernels::dequantize_row_pieces(&Scalar, p, r, &mut buf, |c, v| {
                    let at = (r * cols + c) * es;
                    write_part(p, (r, c), v, dtype, &mut out[at..at + v.len() * es])
                })
            })
            .map(|()| out);
        assert_eq!(whole, pieces);
        whole
    }

    fn f16s(bytes: &[u8]) -> Vec<f32> {
        bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()
    }

    fn edge_weights(rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| match i % 97 {
                0 => 65504.0,
                1 => -65504.0,
                _ => ((i as f32) * 0.37).sin() * 30000.0,
            })
            .collect()
    }

    /// Weights at ±65504 (the largest f16) decode a little above it; written as F16 they
    /// saturate to ±65504 instead of becoming ±inf.
    #[test]
    fn f16_range_edge_saturates() {
        let (rows, cols) = (2, 256);
        let w = edge_weights(rows, cols);
        let buf = pack_with(&Params::V1, &w, rows, cols);
        let p = PackedTensor::parse(&buf).unwrap();
        let mut f32s = vec![0f32; rows * cols];
        Scalar.dequantize_rows(&p, 0, &mut f32s).unwrap();
        assert!(
            f32s.iter().any(|v| f16::from_f32(*v).is_infinite()),
            "the test needs a value that rounds to inf in f16"
        );
        let back = f16s(&restore(&p, OutDtype::F16).unwrap());
        assert!(back.iter().all(|v| v.is_finite()));
        for (i, (&b, &orig)) in back.iter().zip(&w).enumerate() {
            if orig.abs() == 65504.0 {
                assert_eq!(b, orig, "element {i}");
            }
        }
    }

    /// Values far beyond the f16 range (an F32 tensor written as F16) are an error that
    /// names the row, the column and the dtype; BF16 and F32 hold them. Both versions.
    #[test]
    fn values_beyond_f16_are_refused() {
        let (rows, cols) = (3, 128);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| if i == 200 { 1.0e6 } else { (i as f32).cos() })
            .collect();
        for params in [Params::V1, Params::V2] {
            let buf = pack_with(&params, &w, rows, cols);
            let p = PackedTensor::parse(&buf).unwrap();
            let err = restore(&p, OutDtype::F16).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::NotRepresentable {
                        row: 1,
                        col: 72,
                        dtype: OutDtype::F16,
                        ..
                    }
                ),
                "{err:?}"
            );
            let msg = std::format!("{err}");
            assert!(
                msg.contains("row 1, column 72") && msg.contains("F16"),
                "{msg}"
            );
            restore(&p, OutDtype::Bf16).unwrap();
            restore(&p, OutDtype::F32).unwrap();
        }
    }

    #[test]
    fn non_finite_values_are_errors_in_every_dtype() {
        for dtype in [OutDtype::F32, OutDtype::F16, OutDtype::Bf16] {
            let mut out = vec![0u8; 2 * dtype.size()];
            let r = encode_checked(&[1.0, f32::INFINITY], dtype, &mut out, |i, v| {
                assert_eq!((i, v), (1, f32::INFINITY));
                Err(Error::EmptyTensor)
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
    /// f16 spacing as finite values; an outlier's bound is its step's, an inlier's its
    /// grid's (finite: a threshold that fits F16 no longer lets any inlier saturate).
    #[test]
    fn v2_f16_range_edge() {
        let (rows, cols) = (2, 256);
        let w = edge_weights(rows, cols);
        let buf = pack_with(&Params::V2, &w, rows, cols);
        let p = PackedTensor::parse(&buf).unwrap();
        let back = f16s(&restore(&p, OutDtype::F16).unwrap());
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
        let outlier = saturation_bound(&p, 0, 0).unwrap();
        assert!(
            outlier >= h / 2.0 && outlier < h / 2.0 + 16.0,
            "{outlier} vs {h}"
        );
        let inlier = saturation_bound(&p, 0, 2).unwrap();
        let g = p.affine_groups(0).unwrap().next().unwrap();
        let step = f64::from(g.record.grid.step);
        assert!(inlier >= step / 2.0 && inlier < step, "{inlier} vs {step}");
    }

    #[test]
    fn wrong_buffer_sizes_are_errors() {
        let w: Vec<f32> = (0..2 * 64).map(|i| (i as f32).sin()).collect();
        let buf = pack_with(&Params::V2, &w, 2, 64);
        let p = PackedTensor::parse(&buf).unwrap();
        let mut out = vec![0u8; 10];
        assert!(matches!(
            write_rows(&p, 0, &w[..64], OutDtype::F16, &mut out),
            Err(Error::BufferSize { .. })
        ));
        assert!(matches!(
            write_rows(&p, 0, &w[..63], OutDtype::F16, &mut [0u8; 126]),
            Err(Error::BufferSize { .. })
        ));
        for (at, n) in [((0, 1), 64), ((2, 0), 1), ((1, 60), 5)] {
            assert!(matches!(
                write_part(&p, at, &w[..n], OutDtype::F16, &mut vec![0u8; 2 * n]),
                Err(Error::BufferSize { .. })
            ));
        }
        write_part(&p, (1, 60), &w[..4], OutDtype::F16, &mut [0u8; 8]).unwrap();
    }
}
