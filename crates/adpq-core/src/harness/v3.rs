//! Format v3's invariants: every rotated weight is coded to the nearest level its group's
//! grid holds, and the bounds the dot product and the narrowing checks use.

use std::vec;

use crate::format::record_v3::decode_record;
use crate::format::{code_at, PackedTensor};

/// Checks that each rotated weight of `w` is coded to the level of its group's grid
/// nearest to it (the encoder rounds `(w' − m)/d` in f32: the slack is `1e-4` of the
/// step), and that `back` is the inverse rotation of those levels.
pub(super) fn check_nearest(t: &PackedTensor<'_>, w: &[f32], back: &[f32]) {
    let (rows, cols) = (t.rows(), t.cols());
    let fp = t.params();
    let g = usize::from(fp.group_size);
    let code_max = fp.code_max() as u8;
    for r in 0..rows {
        let mut wr = w[r * cols..(r + 1) * cols].to_vec();
        let mut decoded = vec![0f32; cols];
        if let Some(rot) = t.info().rotation {
            rot.forward(&mut wr);
        }
        let row = t.row(r).unwrap();
        let units = t.units_of(&row);
        for (i, (&v, d)) in wr.iter().zip(decoded.iter_mut()).enumerate() {
            let grid = decode_record(row.records, i / g, &units);
            let got = grid.decode_level(fp.level(code_at(row.codes, i, fp.bits)));
            *d = got;
            let best = (0..=code_max)
                .map(|c| f64::from((grid.decode_level(fp.level(c)) - v).abs()))
                .fold(f64::INFINITY, f64::min);
            let err = f64::from((got - v).abs());
            let slack = 1e-4 * f64::from(grid.step) + f64::from(f32::MIN_POSITIVE);
            assert!(
                err <= best + slack,
                "row {r} col {i}: rotated {v} decodes to {got} (error {err}), nearest is {best} away"
            );
        }
        if let Some(rot) = t.info().rotation {
            rot.inverse(&mut decoded);
        }
        assert_eq!(&back[r * cols..(r + 1) * cols], &decoded[..], "row {r}");
    }
}

/// Σ of the magnitudes of every term of version 3's fused dot product of row `r` with
/// `x`, plus what the two rotations (of `x` in the dot, of the levels in the dequantized
/// row) may round: `2^-24 · 20 · gain² · max|back| · Σ|x|` (ten rounding steps each, a
/// value grown at most by the gain bound).
pub(super) fn fused_magnitude(t: &PackedTensor<'_>, r: usize, x: &[f32], back: &[f32]) -> f64 {
    let dense = crate::kernels::scalar_v3::dot_magnitude(t, r, x).unwrap();
    // `check_dot` multiplies by `ops · 2^-24`; the slack is absolute, so scale it down by
    // the smallest `ops` (4 per column).
    dense + rotation_slack(t, back, x) / (4.0 * f64::from(f32::EPSILON) * x.len() as f64)
}

/// What rotating `x` (in a dot product) and the levels (in dequantization) may round, at
/// most: `2^-23 · 20 · gain² · max|back| · Σ|x|` (ten rounding steps each, of values the
/// rotation grows at most by its gain bound); 0 without rotation.
pub(super) fn rotation_slack(t: &PackedTensor<'_>, back: &[f32], x: &[f32]) -> f64 {
    let Some(rot) = t.info().rotation else {
        return 0.0;
    };
    let gain = f64::from(rot.gain_bound());
    let max_back = back.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
    let sum_x: f64 = x.iter().map(|v| f64::from(v.abs())).sum();
    f64::from(f32::EPSILON) * 20.0 * gain * gain * max_back * sum_x
}

/// The quantization error bound of the element at (`r`, `c`), computed here from the
/// decoded records: the largest bound of its segment's groups (half the widest level gap
/// times the step, plus the rounding of the stored step and minimum) times the rotation's
/// gain bound; without rotation, its own group's.
pub(super) fn grid_error(t: &PackedTensor<'_>, r: usize, c: usize) -> f64 {
    let fp = t.params();
    let g = usize::from(fp.group_size);
    let row = t.row(r).unwrap();
    let units = t.units_of(&row);
    let gap = (0..fp.code_max() as u8)
        .map(|k| f64::from(fp.level(k + 1) - fp.level(k)))
        .fold(0.0, f64::max);
    let bound = |gi: usize| {
        let grid = decode_record(row.records, gi, &units);
        f64::from(grid.step) * gap / 2.0
            + f64::from(fp.code_max()) * f64::from(units.step_unit) / 2.0
            + f64::from(units.min_unit) / 2.0
    };
    match t.info().rotation {
        None => bound(c / g),
        Some(rot) => {
            let seg = rot.segment().max(g);
            let first = c / seg * seg;
            let last = (first + seg).min(t.cols());
            (first / g..last.div_ceil(g)).map(bound).fold(0.0, f64::max)
                * f64::from(rot.gain_bound())
        }
    }
}
