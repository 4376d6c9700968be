//! Format v3's row rotation: a randomized Hadamard transform `H`, applied to each row of
//! weights before they are coded and to the activations of a dot product, undone after
//! dequantization (`docs/FORMAT.md`, version 3).
//!
//! `W x = (W Hᵀ)(H x)` for orthogonal `H`: a rotated row `H w` is coded, and the dot product
//! reads `H x` instead of `x`. Rotation spreads a hot input channel or a heavy tail over a
//! block, which a per-group grid codes far better (docs/FORMAT-v3-experiments.md).
//!
//! `H` is block-diagonal. A row is cut into segments of `B = 2^k` columns (the last one
//! shorter), each segment into blocks of decreasing powers of two (`88 = 64 + 16 + 8`).
//! Column `j` first gets a sign from the seed ([`Rotation::sign`]), then each block is
//! scaled by `1/√n` and transformed by the Walsh–Hadamard butterflies. The inverse scales,
//! transforms, then applies the signs. Every step is a plain f32 add, subtract or multiply
//! in a fixed order, so every backend computes the same bits, and no intermediate exceeds
//! `√B` times the input's largest magnitude.
//!
//! A segment depends only on its own columns, and a group never straddles two segments
//! (v3's group size divides `B`): encoders and dot products work one segment at a time in
//! a stack buffer of [`MAX_SEGMENT`] values, without allocating.

use core::f32::consts::FRAC_1_SQRT_2;

use crate::quant::pow2;

/// Largest rotation segment: `2^9 = 512` columns.
pub const MAX_SEGMENT: usize = 1 << MAX_LOG2_SEGMENT;
/// `log2` of [`MAX_SEGMENT`].
pub const MAX_LOG2_SEGMENT: u8 = 9;
/// The seed every v3 writer of this crate stores.
pub const DEFAULT_SEED: u32 = 0x4144_5033;

/// A row rotation: the seed of its signs and the segment length `2^log2_segment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    seed: u32,
    log2_segment: u8,
}

impl Rotation {
    /// The rotation with this seed and segments of `2^log2_segment` columns, or `None`
    /// when `log2_segment` is 0 or above [`MAX_LOG2_SEGMENT`].
    pub fn new(seed: u32, log2_segment: u8) -> Option<Rotation> {
        (1..=MAX_LOG2_SEGMENT)
            .contains(&log2_segment)
            .then_some(Rotation { seed, log2_segment })
    }

    /// The rotation v3 writers use: [`DEFAULT_SEED`], segments of 512.
    pub fn default_v3() -> Rotation {
        Rotation {
            seed: DEFAULT_SEED,
            log2_segment: MAX_LOG2_SEGMENT,
        }
    }

    /// The seed of the signs.
    pub fn seed(&self) -> u32 {
        self.seed
    }

    /// `log2` of the segment length.
    pub fn log2_segment(&self) -> u8 {
        self.log2_segment
    }

    /// Columns per segment.
    pub fn segment(&self) -> usize {
        1 << self.log2_segment
    }

    /// The sign of column `col`: bit `col % 64` of SplitMix64 of `seed · 2^32 + col / 64`.
    #[inline(always)]
    pub fn sign(&self, col: usize) -> bool {
        (self.sign_word(col) >> (col & 63)) & 1 == 1
    }

    /// The signs of columns `col & !63..` as the bits of one word (bit `j` for column
    /// `(col & !63) + j`).
    #[inline(always)]
    pub(crate) fn sign_word(&self, col: usize) -> u64 {
        splitmix64((u64::from(self.seed) << 32) ^ (col as u64 >> 6))
    }

    /// Rotates the columns `start..start + x.len()` of a row in place (`start` a multiple
    /// of [`MAX_SEGMENT`] or of the segment): segment by segment, signs, then each block
    /// scaled and transformed.
    pub fn forward_at(&self, start: usize, x: &mut [f32]) {
        let b = self.segment();
        for (s, seg) in x.chunks_mut(b).enumerate() {
            self.signs(start + s * b, seg);
            for_blocks(seg, transform_block);
        }
    }

    /// Undoes [`forward_at`](Self::forward_at): each block scaled and transformed, then
    /// the signs.
    pub fn inverse_at(&self, start: usize, x: &mut [f32]) {
        let b = self.segment();
        for (s, seg) in x.chunks_mut(b).enumerate() {
            for_blocks(seg, transform_block);
            self.signs(start + s * b, seg);
        }
    }

    /// Rotates a whole row (or activation vector) in place.
    pub fn forward(&self, x: &mut [f32]) {
        self.forward_at(0, x);
    }

    /// Undoes [`forward`](Self::forward) on a whole row in place.
    pub fn inverse(&self, x: &mut [f32]) {
        self.inverse_at(0, x);
    }

    /// Negates the values of columns `start..` whose sign is set.
    pub(crate) fn signs(&self, start: usize, x: &mut [f32]) {
        for (i, v) in x.iter_mut().enumerate() {
            if self.sign(start + i) {
                *v = -*v;
            }
        }
    }

    /// The largest factor by which rotation can grow a magnitude: `√B`, rounded up to a
    /// power of two (what bounds, in the parser and the writer, use).
    pub fn gain_bound(&self) -> f32 {
        pow2((i32::from(self.log2_segment) + 1) / 2)
    }
}

/// SplitMix64's output function.
#[inline(always)]
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Calls `f` on consecutive blocks of `x` of decreasing powers of two.
#[inline(always)]
pub(crate) fn for_blocks(x: &mut [f32], mut f: impl FnMut(&mut [f32])) {
    let mut rest = x;
    while !rest.is_empty() {
        let (block, tail) = rest.split_at_mut(first_block(rest.len()));
        f(block);
        rest = tail;
    }
}

/// The length of the first block of `len > 0` columns: the largest power of two at most
/// `len`.
#[inline(always)]
pub(crate) fn first_block(len: usize) -> usize {
    1usize << (usize::BITS - 1 - len.leading_zeros())
}

/// One block's share of the rotation (both directions): scaled, then transformed.
pub(crate) fn transform_block(block: &mut [f32]) {
    scale(block);
    walsh_hadamard(block);
}

/// The factor `2^(−m/2)` a block of `len = 2^m` values is scaled by.
#[inline(always)]
pub(crate) fn block_scale(len: usize) -> f32 {
    let m = len.trailing_zeros() as i32;
    if m % 2 == 0 {
        pow2(-m / 2)
    } else {
        pow2(-(m - 1) / 2) * FRAC_1_SQRT_2
    }
}

/// Multiplies a block of `2^m` values by `2^(−m/2)` (exact for even `m`).
fn scale(block: &mut [f32]) {
    let s = block_scale(block.len());
    if s != 1.0 {
        for v in block.iter_mut() {
            *v *= s;
        }
    }
}

/// The unnormalized Walsh–Hadamard transform of a power-of-two block, in place
/// (`(a, b) → (a + b, a − b)` at strides 1, 2, 4, …).
fn walsh_hadamard(block: &mut [f32]) {
    let n = block.len();
    let mut h = 1;
    while h < n {
        for pair in block.chunks_exact_mut(2 * h) {
            let (a, b) = pair.split_at_mut(h);
            for (x, y) in a.iter_mut().zip(b.iter_mut()) {
                let (u, v) = (*x, *y);
                *x = u + v;
                *y = u - v;
            }
        }
        h *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: usize) -> [f32; 600] {
        let mut x = [0f32; 600];
        for (i, v) in x.iter_mut().enumerate().take(n) {
            *v = ((i * 37 % 101) as f32 - 50.0) / 7.0;
        }
        x
    }

    #[test]
    fn inverse_undoes_forward_and_keeps_the_norm() {
        let r = Rotation::default_v3();
        for n in [1usize, 7, 64, 88, 512, 576, 600] {
            let x0 = row(n);
            let mut x = x0;
            r.forward(&mut x[..n]);
            let norm0: f32 = x0[..n].iter().map(|v| v * v).sum();
            let norm1: f32 = x[..n].iter().map(|v| v * v).sum();
            assert!(
                (norm0 - norm1).abs() <= 1e-4 * norm0,
                "{n}: {norm0} {norm1}"
            );
            r.inverse(&mut x[..n]);
            for (a, b) in x0[..n].iter().zip(&x[..n]) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{n}: {a} {b}");
            }
        }
    }

    #[test]
    fn dot_products_are_kept() {
        let r = Rotation::new(7, 6).unwrap();
        let (mut w, mut x) = (row(200), row(200));
        x.reverse();
        let n = 200;
        let x = {
            let mut y = [0f32; 600];
            y[..n].copy_from_slice(&x[400..]);
            y
        };
        let dot0: f32 = w[..n].iter().zip(&x[..n]).map(|(a, b)| a * b).sum();
        let mut xr = x;
        r.forward(&mut w[..n]);
        r.forward(&mut xr[..n]);
        let dot1: f32 = w[..n].iter().zip(&xr[..n]).map(|(a, b)| a * b).sum();
        assert!(
            (dot0 - dot1).abs() <= 1e-3 * (1.0 + dot0.abs()),
            "{dot0} {dot1}"
        );
    }

    #[test]
    fn a_hot_column_is_spread_over_its_block() {
        let mut x = [0f32; 512];
        x[17] = 40.0;
        Rotation::default_v3().forward(&mut x);
        let expect = 40.0 / 512f32.sqrt();
        assert!(x.iter().all(|v| (v.abs() - expect).abs() < 1e-4));
        assert!(x.iter().any(|v| *v < 0.0) && x.iter().any(|v| *v > 0.0));
    }

    #[test]
    fn bounds_and_fields() {
        assert!(Rotation::new(1, 0).is_none() && Rotation::new(1, 10).is_none());
        assert_eq!(Rotation::default_v3().gain_bound(), 32.0);
        assert_eq!(Rotation::new(1, 6).unwrap().gain_bound(), 8.0);
        let mut x = [1e30f32; 512];
        Rotation::default_v3().forward(&mut x);
        assert!(x.iter().all(|v| v.is_finite() && v.abs() <= 1e30 * 22.7));
    }
}
