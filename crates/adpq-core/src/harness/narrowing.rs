//! The narrowing invariant: for every accepted buffer and every output dtype, a value
//! that saturates lies within its grid's quantization error of the dtype's range.

use std::vec;

use half::{bf16, f16};

use crate::dtype::OutDtype;
use crate::error::Error;
use crate::format::PackedTensor;
use crate::narrow::write_rows;
use crate::params::FormatVersion;

/// The quantization error bound of the element at (`r`, `c`), computed here from its
/// group's decoded record (independently of `narrow`): half its grid's step plus the
/// rounding of the stored step (and, in v2, of the minimum). Never infinite for a
/// finite step, and independent of the threshold and of the dtype.
fn grid_error(t: &PackedTensor<'_>, r: usize, c: usize, is_outlier: bool) -> f64 {
    if t.version() == FormatVersion::V3 {
        return super::v3::grid_error(t, r, c);
    }
    let fp = t.params();
    let scale = libm::ldexp(1.0, i32::from(t.info().scale_exp));
    let f16_ulp = |h: u16| {
        let e = i32::from((h >> 10) & 0x1f);
        libm::ldexp(1.0, if e == 0 { -24 } else { e - 25 })
    };
    match t.version() {
        FormatVersion::V1 => {
            let g = t
                .groups(r)
                .unwrap()
                .find(|g| (g.start..g.start + g.len).contains(&c))
                .unwrap();
            let grid = if is_outlier {
                g.record.outliers
            } else {
                g.record.inliers
            };
            let code_max = f64::from((1u32 << fp.bits) - 1);
            f64::from(grid.step) / 2.0 + code_max * f16_ulp(grid.h) * scale / 2.0
        }
        FormatVersion::V2 => {
            let mut groups = t.affine_groups(r).unwrap();
            let u = *groups.units();
            let g = groups
                .find(|g| (g.start..g.start + g.len).contains(&c))
                .unwrap();
            if is_outlier {
                f64::from(u.outlier_step) / 2.0
                    + f64::from(fp.magnitude_max()) * f16_ulp(u.outlier_step_bits) * scale / 2.0
            } else {
                f64::from(g.record.grid.step) / 2.0
                    + f64::from(fp.code_max()) * f64::from(u.step_unit) / 2.0
                    + f64::from(u.min_unit) / 2.0
            }
        }
        FormatVersion::V3 => unreachable!("handled above"),
    }
}

/// Whether `v` is finite once rounded to `dtype`.
fn fits(v: f32, dtype: OutDtype) -> bool {
    match dtype {
        OutDtype::F32 => v.is_finite(),
        OutDtype::F16 => f16::from_f32(v).is_finite(),
        OutDtype::Bf16 => bf16::from_f32(v).is_finite(),
    }
}

/// Checks [`write_rows`] on the dequantized values `back` of `t` (row-major, every row)
/// for each output dtype: it refuses exactly the first value (in row order) that does
/// not fit and is not within its grid's error of the range, and saturates only values
/// that are.
pub fn check_narrowing(t: &PackedTensor<'_>, back: &[f32], is_outlier: &[bool]) {
    let cols = t.cols();
    for dtype in [OutDtype::F16, OutDtype::Bf16, OutDtype::F32] {
        let max = f64::from(dtype.max_finite());
        let mut out = vec![0u8; back.len() * dtype.size()];
        let result = write_rows(t, 0, back, dtype, &mut out);
        let refused = back.iter().enumerate().find(|&(i, &v)| {
            !fits(v, dtype) && {
                let err = grid_error(t, i / cols, i % cols, is_outlier[i]);
                !(v.is_finite() && f64::from(libm::fabsf(v)) - max <= err)
            }
        });
        match (refused, result) {
            (None, Ok(())) => {}
            (Some((i, _)), Err(Error::NotRepresentable { row, col, .. })) => {
                assert_eq!(
                    (row as usize, col as usize),
                    (i / cols, i % cols),
                    "{dtype}"
                );
            }
            (refused, result) => panic!(
                "{dtype}: value beyond its quantization error {refused:?}, write_rows {result:?}"
            ),
        }
    }
}
