//! Format v3's row rotation over lanes, bit-identical to [`Rotation::forward_at`] and
//! [`Rotation::inverse_at`].
//!
//! Every output of the rotation is a fixed chain of f32 operations on the inputs (sign
//! flips, one scale multiply, then add/sub butterflies at strides 1, 2, 4, …), and each
//! butterfly reads only the previous stage. So doing a stage 8 elements at a time gives
//! the same bits as one at a time: strides 1, 2 and 4 pair lanes of one register
//! ([`Lanes::swap_lanes`]), wider strides pair two registers. Blocks shorter than 8 (the
//! tail of a row whose length is not a multiple of 8) run the scalar code.

use super::{arrays_mut, Lanes};
use crate::rotate::{block_scale, first_block, transform_block, Rotation};

/// [`Rotation::forward_at`] over lanes (the same bits).
#[inline(always)]
pub(crate) fn forward_at<S: Lanes>(s: S, rot: &Rotation, start: usize, x: &mut [f32]) {
    // The signs are per column, so all of them may go first: each segment still sees
    // its signs before its blocks.
    signs(s, rot, start, x);
    blocks(s, rot, x);
}

/// [`Rotation::inverse_at`] over lanes (the same bits).
#[inline(always)]
pub(crate) fn inverse_at<S: Lanes>(s: S, rot: &Rotation, start: usize, x: &mut [f32]) {
    blocks(s, rot, x);
    signs(s, rot, start, x);
}

/// Negates the values of columns `start..` whose sign is set (a sign-bit flip, as the
/// scalar `-v`).
#[inline(always)]
fn signs<S: Lanes>(s: S, rot: &Rotation, start: usize, x: &mut [f32]) {
    if !start.is_multiple_of(8) {
        rot.signs(start, x);
        return;
    }
    let sign_bit = s.splat_u(0x8000_0000);
    let whole = x.len() / 8 * 8;
    let (head, tail) = x.split_at_mut(whole);
    let mut word = 0u64;
    for (k, c) in arrays_mut::<f32, 8>(head).enumerate() {
        let col = start + k * 8;
        if k == 0 || col.is_multiple_of(64) {
            word = rot.sign_word(col);
        }
        let flip = s.and(
            s.mask_from_bits((word >> (col & 63)) as u32 & 0xFF),
            sign_bit,
        );
        let v = s.float_of_bits(s.xor(s.bits(s.load_f(c)), flip));
        s.store_f(v, c);
    }
    rot.signs(start + whole, tail);
}

/// Each segment's blocks scaled and transformed.
#[inline(always)]
fn blocks<S: Lanes>(s: S, rot: &Rotation, x: &mut [f32]) {
    // `for_blocks`' loop written out: a closure would be compiled outside the caller's
    // target features, and the lane operations in it would not inline (4× slower).
    for seg in x.chunks_mut(rot.segment()) {
        let mut rest = seg;
        while !rest.is_empty() {
            let (block, tail) = rest.split_at_mut(first_block(rest.len()));
            if block.len() >= 8 {
                transform_block_lanes(s, block);
            } else {
                transform_block(block);
            }
            rest = tail;
        }
    }
}

/// The butterflies of stride `h` (1, 2 or 4) within each register: lane `j` pairs with
/// lane `j ^ h`, the lower one gets `a + b`, the upper (mask `upper`) `a − b`.
#[inline(always)]
fn butterflies<S: Lanes>(s: S, v: S::F, h: usize, upper: S::U) -> S::F {
    let partner = s.swap_lanes(v, h);
    s.select_f(upper, s.sub_f(partner, v), s.add_f(v, partner))
}

/// The first three stages (strides 1, 2, 4) of each 8 values of `block`, each scaled
/// first when `SCALE`.
#[inline(always)]
fn first_stages<S: Lanes, const SCALE: bool>(s: S, block: &mut [f32], scale: f32) {
    let scale = s.splat_f(scale);
    // Each stride a constant (not a loop over an array of them), so that `swap_lanes`
    // compiles to its one shuffle, not a branch on the stride.
    let (m1, m2, m4) = (
        s.mask_from_bits(0xAA),
        s.mask_from_bits(0xCC),
        s.mask_from_bits(0xF0),
    );
    for c in arrays_mut::<f32, 8>(block) {
        let mut v = s.load_f(c);
        if SCALE {
            v = s.mul_f(v, scale);
        }
        v = butterflies(s, v, 1, m1);
        v = butterflies(s, v, 2, m2);
        v = butterflies(s, v, 4, m4);
        s.store_f(v, c);
    }
}

/// One block of `2^m ≥ 8` values scaled, then transformed by the butterflies
/// (`(a, b) → (a + b, a − b)`), as [`transform_block`] does.
#[inline(always)]
fn transform_block_lanes<S: Lanes>(s: S, block: &mut [f32]) {
    let scale = block_scale(block.len());
    // The scale's test once a block, not once a vector.
    if scale != 1.0 {
        first_stages::<S, true>(s, block, scale);
    } else {
        first_stages::<S, false>(s, block, scale);
    }
    // The stages from h = 8 up, three at a time in registers (one pass over the block
    // per three stages instead of one per stage). Every butterfly is the same operation
    // on the same values, in the same stage order: the same bits.
    let mut stages = block.len().trailing_zeros().saturating_sub(3);
    let mut h = 8;
    while stages >= 3 {
        stages_in_registers::<S, 8>(s, block, h);
        h *= 8;
        stages -= 3;
    }
    match stages {
        2 => stages_in_registers::<S, 4>(s, block, h),
        1 => stages_in_registers::<S, 2>(s, block, h),
        _ => {}
    }
}

/// The `log2(V)` butterfly stages `h, 2h, …, (V/2)h` of `block` (a power-of-two length,
/// a multiple of `V·h`; `h` a multiple of 8): for each run of `V·h` values and each 8
/// columns `j` of its first `h`, the `V` vectors at `j + k·h` are loaded once and every
/// stage applied to them before they are stored.
#[inline(always)]
fn stages_in_registers<S: Lanes, const V: usize>(s: S, block: &mut [f32], h: usize) {
    for run in block.chunks_exact_mut(V * h) {
        for j in (0..h).step_by(8) {
            let mut v = [s.splat_f(0.0); V];
            for (k, vk) in v.iter_mut().enumerate() {
                if let Some(c) = run[j + k * h..].first_chunk::<8>() {
                    *vk = s.load_f(c);
                }
            }
            let mut d = 1;
            while d < V {
                for k in 0..V {
                    if k & d == 0 {
                        let (a, b) = (v[k], v[k + d]);
                        v[k] = s.add_f(a, b);
                        v[k + d] = s.sub_f(a, b);
                    }
                }
                d *= 2;
            }
            for (k, vk) in v.iter().enumerate() {
                if let Some(c) = run[j + k * h..].first_chunk_mut::<8>() {
                    s.store_f(*vk, c);
                }
            }
        }
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::kernels::simd::entry::Kernel;
    use crate::kernels::simd::{xorshift, SimdToken};

    struct Rotate<'a> {
        rot: Rotation,
        start: usize,
        x: &'a mut [f32],
        inverse: bool,
    }

    impl<S: Lanes> Kernel<S> for Rotate<'_> {
        type Out = ();
        #[inline(always)]
        fn call(self, s: S) {
            if self.inverse {
                inverse_at(s, &self.rot, self.start, self.x);
            } else {
                forward_at(s, &self.rot, self.start, self.x);
            }
        }
    }

    fn rotations_match<T: SimdToken>(t: T) {
        let mut next = xorshift(0x2545_F491_4F6C_DD1Du64);
        for case in 0..400 {
            let log2 = 1 + (case % 9) as u8;
            let rot = Rotation::new(next() as u32, log2).unwrap();
            let n = 1 + (next() % 1500) as usize;
            let start = [0usize, 512, 1024, 4096][case % 4];
            let x: std::vec::Vec<f32> = (0..n)
                .map(|_| ((next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 8.0)
                .collect();
            for inverse in [false, true] {
                let (mut want, mut got) = (x.clone(), x.clone());
                if inverse {
                    rot.inverse_at(start, &mut want);
                } else {
                    rot.forward_at(start, &mut want);
                }
                t.run(Rotate {
                    rot,
                    start,
                    x: &mut got,
                    inverse,
                });
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<std::vec::Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "case {case}: n {n}, log2 {log2}");
            }
        }
    }

    #[test]
    fn lane_rotation_equals_the_scalar_bit_for_bit() {
        crate::kernels::simd::on_native_lanes!(rotations_match);
    }
}
