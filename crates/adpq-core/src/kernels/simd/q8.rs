//! Dot products with int8 activations (see [`kernels::q8`](crate::kernels::q8)): exact
//! integer `Σ c·q` per group 32 codes at a time, vectorized outlier corrections.

use super::decode::{outlier_corrections, PositionReader};
use super::{arrays, Lanes};
use crate::error::Result;
use crate::format::code_at;
use crate::format::PackedTensor;
use crate::kernels::q8::{dot_row_q8_ref, Q8Activations};

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
