//! Dot products with int8 activations (see [`kernels::q8`](crate::kernels::q8)): exact
//! integer `Σ c·q` per group 32 codes at a time, vectorized outlier corrections.

use super::decode::{outlier_corrections, PositionReader};
use super::{arrays, Lanes};
use crate::error::Result;
use crate::format::code_at;
use crate::format::PackedTensor;
use crate::kernels::q8::{
    dot_row_q8_ref, group_inverse, ActivationSteps, Q8Activations, Reference,
};
use crate::rotate::Rotation;

/// Dot product of packed row `r` with int8 activations. Formats other than 4-bit codes in
/// groups of 128 use the portable reference.
#[inline(always)]
pub(crate) fn dot_row_q8<S: Lanes>(
    s: S,
    t: &PackedTensor<'_>,
    r: usize,
    a: &Q8Activations<'_>,
) -> Result<f32> {
    a.check(t)?;
    let fp = t.params();
    if !(fp.bits == 4 && fp.group_size == 128) {
        return dot_row_q8_ref(t, r, a);
    }
    let row = t.row(r)?;
    let mut pos = PositionReader::new(t, &row);
    let mut accv = s.splat_f(0.0);
    let mut acc = 0f32;
    for (gi, qs) in a.q().chunks(128).enumerate() {
        let rec = t.record(&row, gi);
        let base = gi * 128;
        let sx = a.scales()[gi];
        if let Ok(qs) = <&[i8; 128]>::try_from(qs) {
            let codes: &[u8; 64] = row.codes[base / 2..base / 2 + 64]
                .try_into()
                .expect("64 bytes");
            let mut isum = s.splat_u(0);
            for (cb, qc) in arrays::<u8, 16>(codes).0.zip(arrays::<i8, 32>(qs).0) {
                isum = s.dot_nibbles_i8(cb, qc, isum);
            }
            // The exact integer dense sum, as the reference computes it.
            let dense = s.hsum_i(isum) - rec.inliers.offset * a.sums()[gi];
            // Scale first, as the reference does (`q · Δ` alone may overflow).
            acc += (sx * rec.inliers.step) * dense as f32;
            if rec.count > 0 {
                let sxv = s.splat_f(sx);
                let gather = |ix: [u32; 8]| {
                    let q = ix.map(|i| i32::from(qs[i as usize & 127]) as u32);
                    s.mul_f(sxv, s.int_to_float(s.load_u(&q)))
                };
                accv = outlier_corrections(s, codes, &mut pos, &rec, accv, gather);
            }
        } else {
            // A short last group: the reference's arithmetic.
            let mut isum = 0i32;
            for (i, &qi) in qs.iter().enumerate() {
                isum += i32::from(code_at(row.codes, base + i, 4)) * i32::from(qi);
            }
            let dense = isum - rec.inliers.offset * a.sums()[gi];
            let mut corr = 0f32;
            for _ in 0..rec.count {
                let p = pos.next();
                if let Some(&qp) = qs.get(p) {
                    let c = code_at(row.codes, base + p, 4);
                    corr += (sx * f32::from(qp)) * (rec.outliers.decode(c) - rec.inliers.decode(c));
                }
            }
            acc += (sx * rec.inliers.step) * dense as f32 + corr;
        }
    }
    Ok(acc + s.hsum_f(accv))
}

/// The steps of making int8 activations in lanes: the rotation of
/// [`rotate`](super::rotate), and per group a lane maximum and lane rounding, the
/// reference's operations element by element.
#[derive(Clone, Copy)]
pub(crate) struct LaneSteps<S>(pub(crate) S);

impl<S: Lanes> ActivationSteps for LaneSteps<S> {
    #[inline(always)]
    fn rotate(self, rot: &Rotation, start: usize, x: &mut [f32]) {
        super::rotate::forward_at(self.0, rot, start, x);
    }

    #[inline(always)]
    fn quantize_group(self, x: &[f32], q: &mut [i8]) -> (f32, i32) {
        let s = self.0;
        let (whole, rest) = arrays::<f32, 8>(x);
        let magnitude = s.splat_u(0x7FFF_FFFF);
        let mut maxv = s.splat_f(0.0);
        for v in whole.clone() {
            maxv = s.max_f(maxv, s.float_of_bits(s.and(s.bits(s.load_f(v)), magnitude)));
        }
        let max = rest.iter().fold(s.hmax_f(maxv), |m, &v| m.max(v.abs()));
        let scale = max / 127.0;
        let inv = group_inverse(scale);
        if !inv.is_finite() {
            // A scale so small that its inverse overflows: the reference's NaN products.
            return Reference.quantize_group(x, q);
        }
        let (invv, lo, hi) = (s.splat_f(inv), s.splat_f(-127.0), s.splat_f(127.0));
        let (q_whole, q_rest) = q.split_at_mut(whole.len() * 8);
        let mut sumv = s.splat_u(0);
        for (v, out) in whole.zip(q_whole.chunks_exact_mut(8)) {
            let r = s.round_even(s.min_f(s.max_f(s.mul_f(s.load_f(v), invv), lo), hi));
            let r = s.float_to_int(r);
            sumv = s.add_i(sumv, r);
            for (d, b) in out.iter_mut().zip(s.narrow_bytes(r)) {
                *d = b as i8;
            }
        }
        let rest_sum = Reference.quantize_group_with(rest, q_rest, inv);
        (scale, s.hsum_i(sumv) + rest_sum)
    }
}

/// [`Q8Activations::quantize_for`] with the [`LaneSteps`].
#[inline(always)]
pub(crate) fn quantize_activations<'a, S: Lanes>(
    s: S,
    t: &PackedTensor<'_>,
    x: &[f32],
    q: &'a mut [i8],
    scales: &'a mut [f32],
    sums: &'a mut [i32],
) -> Result<Q8Activations<'a>> {
    Q8Activations::quantize_for_with(LaneSteps(s), t, x, q, scales, sums)
}
