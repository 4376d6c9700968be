//! Dot products with int8-quantized activations, what an inference engine does per token.
//!
//! [`Q8Activations`] holds `x` quantized per group of the weight tensor's `g`:
//! `x_i ≈ s_G · q_i` with `s_G = max|x_G| / 127` and `q_i = round_half_even(x_i / s_G)`
//! in `-127..=127`, plus `Σ q_i` per group. The dot product of a packed row with it is
//!
//! `Σ_G s_G · (Δ_in · (Σ c_i q_i − z_in · Σ q_i) + Σ_{p outlier} q_p ((c_p − z_out)Δ_out − (c_p − z_in)Δ_in))`
//!
//! where `Σ c_i q_i` is exact integer arithmetic (what SIMD backends do with
//! `maddubs`-style instructions). [`dot_row_q8_ref`] is the portable reference; SIMD
//! versions differ from it only in float summation order, within
//! [`dot_tolerance`](super::dot_tolerance) of the dequantized activations
//! ([`Q8Activations::dequantize`]). The intermediate `Δ_in · (Σ c q − z Σ q)` can reach
//! `|w|max · 127 · g`: with weights beyond ~1e33 it may overflow where an f32 dot would not.

use super::format::{with_format, Format};
use crate::error::{Error, Result};
use crate::format::code_at;
use crate::format::PackedTensor;
use crate::quant::round_ties_even;
use crate::rotate::{Rotation, MAX_SEGMENT};

/// The two steps of making [`Q8Activations`], which a kernel set may run in its lanes:
/// each must give the [`Reference`]'s bits.
pub(crate) trait ActivationSteps: Copy {
    /// [`Rotation::forward_at`].
    fn rotate(self, rot: &Rotation, start: usize, x: &mut [f32]);
    /// Quantizes one group `x` into `q` (as long): returns its scale `max|x| / 127` and
    /// `Σ q`.
    fn quantize_group(self, x: &[f32], q: &mut [i8]) -> (f32, i32);
}

/// The portable steps, the oracle of every kernel set's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reference;

impl ActivationSteps for Reference {
    fn rotate(self, rot: &Rotation, start: usize, x: &mut [f32]) {
        rot.forward_at(start, x);
    }

    fn quantize_group(self, x: &[f32], q: &mut [i8]) -> (f32, i32) {
        let mut max = 0f32;
        for &v in x {
            max = max.max(v.abs());
        }
        let s = max / 127.0;
        (s, self.quantize_group_with(x, q, group_inverse(s)))
    }
}

impl Reference {
    /// Quantizes `x` into `q` with the multiplier `inv`: returns `Σ q`.
    pub(crate) fn quantize_group_with(self, x: &[f32], q: &mut [i8], inv: f32) -> i32 {
        let mut sum = 0i32;
        for (d, &v) in q.iter_mut().zip(x) {
            let r = round_ties_even((v * inv).clamp(-127.0, 127.0)) as i32;
            *d = r as i8;
            sum += r;
        }
        sum
    }
}

/// The multiplier of a group of scale `s`: `1 / s`, 0 for an all-zero group.
#[inline(always)]
pub(crate) fn group_inverse(s: f32) -> f32 {
    if s > 0.0 {
        1.0 / s
    } else {
        0.0
    }
}

/// Activations quantized to int8 per group (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Q8Activations<'a> {
    group_size: u16,
    /// The rotation `x` was turned by before it was quantized (format v3).
    rotation: Option<Rotation>,
    q: &'a [i8],
    scales: &'a [f32],
    sums: &'a [i32],
}

impl<'a> Q8Activations<'a> {
    /// Quantizes `x` per group of `group_size` into caller buffers: `q` of `x.len()`,
    /// `scales` and `sums` of `x.len().div_ceil(group_size)` each. Non-finite `x` give
    /// an error.
    pub fn quantize(
        x: &[f32],
        group_size: u16,
        q: &'a mut [i8],
        scales: &'a mut [f32],
        sums: &'a mut [i32],
    ) -> Result<Q8Activations<'a>> {
        Self::quantize_with(Reference, x, group_size, None, q, scales, sums)
    }

    /// Quantizes `x` for the dot products of tensor `t`: in `t`'s rotated basis when it is
    /// a rotated (v3) tensor, per group of its group size. The buffers are those of
    /// [`quantize`](Self::quantize).
    pub fn quantize_for(
        t: &PackedTensor<'_>,
        x: &[f32],
        q: &'a mut [i8],
        scales: &'a mut [f32],
        sums: &'a mut [i32],
    ) -> Result<Q8Activations<'a>> {
        Self::quantize_for_with(Reference, t, x, q, scales, sums)
    }

    /// [`quantize_for`](Self::quantize_for) with the rotation and the group quantization
    /// of `steps` (a kernel set's lanes; the same bits as the [`Reference`]).
    #[inline(always)]
    pub(crate) fn quantize_for_with<A: ActivationSteps>(
        steps: A,
        t: &PackedTensor<'_>,
        x: &[f32],
        q: &'a mut [i8],
        scales: &'a mut [f32],
        sums: &'a mut [i32],
    ) -> Result<Q8Activations<'a>> {
        let g = t.params().group_size;
        Self::quantize_with(steps, x, g, t.info().rotation, q, scales, sums)
    }

    #[inline(always)]
    fn quantize_with<A: ActivationSteps>(
        steps: A,
        x: &[f32],
        group_size: u16,
        rotation: Option<Rotation>,
        q: &'a mut [i8],
        scales: &'a mut [f32],
        sums: &'a mut [i32],
    ) -> Result<Q8Activations<'a>> {
        let g = usize::from(group_size);
        if g == 0 {
            return Err(Error::InvalidGroupSize(0));
        }
        let groups = x.len().div_ceil(g);
        for (needed, actual) in [
            (x.len(), q.len()),
            (groups, scales.len()),
            (groups, sums.len()),
        ] {
            if needed != actual {
                return Err(Error::BufferSize {
                    needed: needed as u64,
                    actual: actual as u64,
                });
            }
        }
        if let Some((i, &v)) = x.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::NonFinite {
                row: 0,
                col: i as u64,
                value: v,
            });
        }
        if rotation.is_some() && !g.is_power_of_two() {
            return Err(Error::InvalidGroupSize(u32::from(group_size)));
        }
        // Rotated activations are made one segment at a time (groups never straddle one).
        let mut buf = [0f32; MAX_SEGMENT];
        let chunk = if rotation.is_some() {
            MAX_SEGMENT.max(g)
        } else {
            x.len().max(1)
        };
        for (ci, xc) in x.chunks(chunk).enumerate() {
            let start = ci * chunk;
            let xc: &[f32] = match &rotation {
                Some(rot) => {
                    let b = &mut buf[..xc.len()];
                    b.copy_from_slice(xc);
                    steps.rotate(rot, start, b);
                    b
                }
                None => xc,
            };
            for (k, xs) in xc.chunks(g).enumerate() {
                let gi = start / g + k;
                let qs = &mut q[gi * g..gi * g + xs.len()];
                (scales[gi], sums[gi]) = steps.quantize_group(xs, qs);
            }
        }
        Ok(Q8Activations {
            group_size,
            rotation,
            q,
            scales,
            sums,
        })
    }

    /// The rotation the activations were turned by before quantization (v3 tensors).
    pub fn rotation(&self) -> Option<Rotation> {
        self.rotation
    }
    /// Group size the activations were quantized with.
    pub fn group_size(&self) -> u16 {
        self.group_size
    }
    /// The int8 values.
    pub fn q(&self) -> &'a [i8] {
        self.q
    }
    /// Per-group scales `s_G`.
    pub fn scales(&self) -> &'a [f32] {
        self.scales
    }
    /// Per-group sums `Σ q_i`.
    pub fn sums(&self) -> &'a [i32] {
        self.sums
    }
    /// Number of activations.
    pub fn len(&self) -> usize {
        self.q.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// Writes `s_G · q_i` (the values the int8 dot products multiply by) into `out`.
    ///
    /// # Panics
    /// When `out.len() != self.len()`.
    pub fn dequantize(&self, out: &mut [f32]) {
        assert_eq!(out.len(), self.q.len(), "output length");
        let g = usize::from(self.group_size);
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.scales[i / g] * f32::from(self.q[i]);
        }
    }

    /// Checks that these activations fit the columns and groups of `t`.
    ///
    /// Both disagreements are [`Error::ShapeMismatch`]: a column count, or a group size
    /// (`expected` the tensor's group size in elements, `actual` the activations'), since
    /// the activations' group size is valid in itself and only disagrees with the tensor.
    pub(crate) fn check(&self, t: &PackedTensor<'_>) -> Result<()> {
        if self.q.len() != t.cols() {
            return Err(Error::ShapeMismatch {
                expected: t.cols() as u64,
                actual: self.q.len() as u64,
            });
        }
        if self.group_size != t.params().group_size {
            return Err(Error::ShapeMismatch {
                expected: u64::from(t.params().group_size),
                actual: u64::from(self.group_size),
            });
        }
        super::scalar_v3::check_basis(t, self.rotation)
    }
}

/// The portable reference of the int8-activation dot product of packed row `r`.
pub fn dot_row_q8_ref(t: &PackedTensor<'_>, r: usize, a: &Q8Activations<'_>) -> Result<f32> {
    a.check(t)?;
    with_format!(t.version(), F => F::dot_row_q8(t, r, a))
}

/// [`dot_row_q8_ref`] of a version 1 row (`a` checked).
pub(crate) fn dot_row_q8_v1(t: &PackedTensor<'_>, r: usize, a: &Q8Activations<'_>) -> Result<f32> {
    let bits = t.params().bits;
    let mut acc = 0f32;
    let groups = t.groups(r)?;
    for ((gi, group), qs) in groups
        .enumerate()
        .zip(a.q.chunks(usize::from(t.params().group_size)))
    {
        let rec = group.record;
        let sx = a.scales[gi];
        let mut isum = 0i32;
        for (i, &qi) in qs.iter().enumerate() {
            isum += i32::from(code_at(group.codes, group.start + i, bits)) * i32::from(qi);
        }
        let dense = isum - rec.inliers.offset * a.sums[gi];
        // The activation scale multiplies first: `q · Δ` alone can overflow f32 for steps
        // near the format's bound, while `(s·q) · Δ` stays as large as the true product.
        let mut corr = 0f32;
        for p in group.outliers() {
            if let Some(&qp) = qs.get(p) {
                let c = code_at(group.codes, group.start + p, bits);
                corr += (sx * f32::from(qp)) * (rec.outliers.decode(c) - rec.inliers.decode(c));
            }
        }
        acc += (sx * rec.inliers.step) * dense as f32 + corr;
    }
    Ok(acc)
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use std::vec;

    use super::*;
    use crate::kernels::AnyKernels;
    use crate::{packed_len, CpuKernels, Params, Scalar, Weights};

    /// Activations grouped differently from the tensor are a shape mismatch that names
    /// both group sizes, not an invalid group size.
    #[test]
    fn group_size_mismatch_names_both_sizes() {
        let (rows, cols) = (2, 256);
        let w: vec::Vec<f32> = (0..rows * cols).map(|i| (i % 17) as f32 - 8.0).collect();
        let p = Params::V1;
        let sel = crate::select_tensor(&Scalar, Weights::F32(&w), rows, cols, &p).unwrap();
        let mut buf = vec![0u8; packed_len(rows, cols, p.format(), sel.n_outliers).unwrap()];
        crate::quantize_tensor(&Scalar, Weights::F32(&w), rows, cols, &p, &sel, &mut buf).unwrap();
        let t = PackedTensor::parse(&buf).unwrap();
        let x = vec![0.5f32; cols];
        let (mut q, mut sc, mut su) = (vec![0i8; cols], vec![0f32; 4], vec![0i32; 4]);
        let a = Q8Activations::quantize(&x, 64, &mut q, &mut sc, &mut su).unwrap();
        let want = Error::ShapeMismatch {
            expected: 128,
            actual: 64,
        };
        assert_eq!(dot_row_q8_ref(&t, 0, &a), Err(want));
        assert_eq!(AnyKernels::detect().dot_row_q8(&t, 0, &a), Err(want));
        let mut y = [0f32; 2];
        assert_eq!(AnyKernels::detect().gemv_q8(&t, &a, &mut y), Err(want));
    }
}
