//! Format v2's invariants: every weight decodes to the nearest value its grid holds, and
//! the magnitude of the fused dot product's terms.

use crate::format::{code_at, PackedTensor};

/// Checks that each weight of `w` decodes (`back`) to the value nearest to it that its
/// grid can represent: any code of the group's inlier grid, or, for an outlier, any
/// offset above the threshold with the weight's sign. The encoder rounds `(w − m)/d` in
/// f32, so a weight within a rounding of a midpoint may take the other neighbour: the
/// slack is `1e-4` of the step.
pub(super) fn check_nearest(t: &PackedTensor<'_>, w: &[f32], back: &[f32], is_out: &[bool]) {
    let (rows, cols) = (t.rows(), t.cols());
    let fp = t.params();
    let code_max = fp.code_max() as u8;
    let sign = 1u8 << (fp.bits - 1);
    for r in 0..rows {
        let groups = t.affine_groups(r).unwrap();
        let units = *groups.units();
        for group in groups {
            let grid = group.record.grid;
            for i in group.start..group.start + group.len {
                let idx = r * cols + i;
                let (v, got) = (w[idx], back[idx]);
                let err = f64::from((got - v).abs());
                let (best, step) = if is_out[idx] {
                    assert!(
                        // Sign bits, not `v < 0`: a −0 outlier (threshold 0) keeps its sign.
                        got.abs() >= units.threshold
                            && got.is_sign_negative() == v.is_sign_negative(),
                        "row {r} col {i}: outlier {v} decodes to {got} (t = {})",
                        units.threshold
                    );
                    let neg = if v.is_sign_negative() { sign } else { 0 };
                    let best = (0..sign)
                        .map(|k| f64::from((units.outlier(k | neg, fp.bits) - v).abs()))
                        .fold(f64::INFINITY, f64::min);
                    (best, units.outlier_step)
                } else {
                    assert_eq!(got, grid.decode(code_at(group.codes, i, fp.bits)));
                    let best = (0..=code_max)
                        .map(|c| f64::from((grid.decode(c) - v).abs()))
                        .fold(f64::INFINITY, f64::min);
                    (best, grid.step)
                };
                let slack = 1e-4 * f64::from(step) + f64::from(f32::MIN_POSITIVE);
                assert!(
                    err <= best + slack,
                    "row {r} col {i}: {v} decodes to {got} (error {err}), nearest is {best} away"
                );
            }
        }
    }
}

/// Σ of the magnitudes of every term of version 2's fused dot product of row `r` with
/// `x`: per group `Σ|c·x|·d + Σ|x|·|m|`, and `|x_p|·(|outlier| + |inlier|)` per outlier.
pub(super) fn fused_magnitude(t: &PackedTensor<'_>, r: usize, x: &[f32]) -> f64 {
    let fp = t.params();
    let groups = t.affine_groups(r).unwrap();
    let units = *groups.units();
    let mut magnitude = 0f64;
    for (group, xs) in groups.zip(x.chunks(usize::from(fp.group_size))) {
        let grid = group.record.grid;
        let (mut cx, mut sx) = (0f64, 0f64);
        for (i, &xi) in xs.iter().enumerate() {
            let c = f64::from(code_at(group.codes, group.start + i, fp.bits));
            cx += (c * f64::from(xi)).abs();
            sx += f64::from(xi).abs();
        }
        magnitude += cx * f64::from(grid.step) + sx * f64::from(grid.min.abs());
        for p in group.outliers() {
            let c = code_at(group.codes, group.start + p, fp.bits);
            let out = f64::from(units.outlier(c, fp.bits).abs());
            let inl = f64::from(grid.decode(c).abs());
            magnitude += f64::from(xs[p].abs()) * (out + inl);
        }
    }
    magnitude
}
