//! Format v3's row rotation over lanes, bit-identical to [`Rotation::forward_at`] and
//! [`Rotation::inverse_at`].
//!
//! Every output of the rotation is a fixed chain of f32 operations on the inputs (sign
//! flips, one scale multiply, then add/sub butterflies at strides 1, 2, 4, …), and each
//! butterfly reads only the previous stage. So doing a stage 8 elements at a time gives
//! the same bits as one at a time: strides 1, 2 and 4 pair lanes of one register
//! ([`Lanes::swap_lanes`]), wider strides pair two registers. A block's first pass takes
//! up to 8 registers (64 columns) through the strides up to 32, one late pass takes the
//! strides from 64 up (blocks are at most 512 columns), so a block is read and written
//! at most twice; the signs are flipped in the first pass (forward) or the last
//! (inverse). Blocks shorter than 8 (the tail of a row whose length is not a multiple of
//! 8) run the scalar code.
//!
//! The first pass reads its values through a [`Source`], a run of up to 8 registers at a
//! time: the block itself for a rotation in place, or a row's codes for a dequantization
//! that never stores the unrotated values (`decode_v3.rs`). A sign flip is one XOR with
//! a mask made in lanes from the column's sign word ([`Lanes::sign_bits_of_byte`]);
//! where the byte's place in its word is known at compile time (runs of 4 registers or
//! more, and the late pass, whose 8 column offsets are unrolled) the mask's shifts are
//! constants. Per weight, these cut the dequantization's instructions by a fifth.

use super::Lanes;
use crate::rotate::{block_scale, first_block, transform_block, Rotation, MAX_SEGMENT};

/// [`Rotation::forward_at`] over lanes (the same bits). `start` is a multiple of the
/// segment or of [`MAX_SEGMENT`], as for the oracle (the sign words of a segment are
/// read once, from its first column).
#[inline(always)]
pub(crate) fn forward_at<S: Lanes>(s: S, rot: &Rotation, start: usize, x: &mut [f32]) {
    rotate_in_place::<S, true>(s, rot, start, x);
}

/// [`Rotation::inverse_at`] over lanes (the same bits), `start` as for [`forward_at`].
#[inline(always)]
pub(crate) fn inverse_at<S: Lanes>(s: S, rot: &Rotation, start: usize, x: &mut [f32]) {
    rotate_in_place::<S, false>(s, rot, start, x);
}

/// Where a block's first pass takes its values, a run of `8V` columns at a time.
pub(super) trait Source<S: Lanes> {
    /// Called before each block's first pass with the block's [`block_scale`].
    fn begin_block(&mut self, s: S, scale: f32);
    /// The values of columns `col..col + 8V` (`col` counted from the row's start, a
    /// multiple of `8V`), scaled by the block's scale, where `at` holds what the block
    /// has there now (`signs` those of the segment, for a source that flips them on the
    /// way in). A source may check a run once rather than per register (a row's
    /// code-book codes: one bounds check; its group: once per run, or per group start
    /// when groups are shorter than a run).
    fn load_run<const V: usize>(
        &mut self,
        s: S,
        col: usize,
        at: &[[f32; 8]],
        signs: &SignWords,
    ) -> [S::F; V];
}

/// The block's own values, their signs flipped first when `FORWARD`.
struct InPlace<S: Lanes, const FORWARD: bool> {
    scale: Option<S::F>,
}

impl<S: Lanes, const FORWARD: bool> Source<S> for InPlace<S, FORWARD> {
    #[inline(always)]
    fn begin_block(&mut self, s: S, scale: f32) {
        // The oracle skips a scale of 1 (a multiply by 1 would keep the bits anyway).
        // Not `then(..)`: a closure may be left out of line, without the ISA's features.
        self.scale = if scale != 1.0 {
            Some(s.splat_f(scale))
        } else {
            None
        };
    }
    #[inline(always)]
    fn load_run<const V: usize>(
        &mut self,
        s: S,
        col: usize,
        at: &[[f32; 8]],
        signs: &SignWords,
    ) -> [S::F; V] {
        let first = signs.byte_index(col);
        let mut v = [s.splat_f(0.0); V];
        for (k, (vk, c)) in v.iter_mut().zip(at).enumerate() {
            *vk = s.load_f(c);
            if FORWARD {
                *vk = signs.flip_in_run::<S, V>(s, first, k, *vk);
            }
            if let Some(scale) = self.scale {
                *vk = s.mul_f(*vk, scale);
            }
        }
        v
    }
}

/// Rotates `x` (columns `start..`) in place: forward or inverse.
#[inline(always)]
fn rotate_in_place<S: Lanes, const FORWARD: bool>(
    s: S,
    rot: &Rotation,
    start: usize,
    x: &mut [f32],
) {
    let mut src = InPlace::<S, FORWARD> { scale: None };
    rotate_from(s, rot, start, x, &mut src, !FORWARD);
}

/// Columns `start..start + x.len()` of a row (`start` as for [`forward_at`]), segment
/// by segment, through the rotation with each block's first pass reading `src`; with
/// `sign_last` (the inverse), the signs flipped as each value is last stored.
#[inline(always)]
pub(super) fn rotate_from<S: Lanes>(
    s: S,
    rot: &Rotation,
    start: usize,
    x: &mut [f32],
    src: &mut impl Source<S>,
    sign_last: bool,
) {
    let b = rot.segment();
    for (k, seg) in x.chunks_mut(b).enumerate() {
        let at = start + k * b;
        let signs = SignWords::new(rot, at, seg.len());
        rotate_segment(s, rot, src, &signs, sign_last, at, seg);
    }
}

/// One segment (columns `at..at + seg.len()`) through its blocks, each block's first
/// pass reading `src`; with `sign_last`, the signs flipped as each value is last stored
/// (the inverse's order: blocks, then signs).
#[inline(always)]
fn rotate_segment<S: Lanes>(
    s: S,
    rot: &Rotation,
    src: &mut impl Source<S>,
    signs: &SignWords,
    sign_last: bool,
    at: usize,
    seg: &mut [f32],
) {
    let mut rest = seg;
    let mut col = at;
    while !rest.is_empty() {
        let (block, tail) = rest.split_at_mut(first_block(rest.len()));
        if block.len() >= 8 {
            src.begin_block(s, block_scale(block.len()));
            transform_block_lanes(s, src, (signs, sign_last), col, block);
        } else {
            // A tail shorter than 8 (in place only: a dequantization decodes such rows
            // before rotating them).
            if !sign_last {
                rot.signs(col, block);
            }
            transform_block(block);
            if sign_last {
                rot.signs(col, block);
            }
        }
        col += block.len();
        rest = tail;
    }
}

/// The signs of one segment's columns (at most [`MAX_SEGMENT`]), made once: a bit per
/// column (bit `j` of byte `b` for column `8b + j`), from the sign words of
/// [`Rotation::sign_word`], held as u32 words so that a flip reads its byte's word
/// straight into lanes ([`Lanes::sign_bits_of_byte`]).
pub(super) struct SignWords {
    /// `col / 8` of the first byte's first column (a multiple of 64 columns).
    first: usize,
    words: [u32; MAX_SEGMENT / 32],
}

impl SignWords {
    /// The signs of columns `at..at + len`: one segment, so `at` is a multiple of the
    /// segment length `B ≥ len` (`B ≤ MAX_SEGMENT`), and the columns lie in at most
    /// [`MAX_SEGMENT`] / 64 sign words from `at`'s.
    #[inline(always)]
    fn new(rot: &Rotation, at: usize, len: usize) -> SignWords {
        let first = at / 64;
        let mut words = [0u32; MAX_SEGMENT / 32];
        let n = ((at + len).div_ceil(64) - first).min(MAX_SEGMENT / 64);
        for (k, w) in words.chunks_exact_mut(2).take(n).enumerate() {
            let sign = rot.sign_word((first + k) * 64);
            (w[0], w[1]) = (sign as u32, (sign >> 32) as u32);
        }
        SignWords {
            first: first * 8,
            words,
        }
    }

    /// The index of the sign byte of columns `col..col + 8` (`col` a multiple of 8).
    #[inline(always)]
    fn byte_index(&self, col: usize) -> usize {
        col / 8 - self.first
    }

    /// `v` with the sign bits of its columns whose sign is set flipped (the scalar
    /// `-v`), `byte` the index of their sign byte ([`byte_index`](Self::byte_index)).
    #[inline(always)]
    fn flip<S: Lanes>(&self, s: S, byte: usize, v: S::F) -> S::F {
        debug_assert!(
            byte < MAX_SEGMENT / 8,
            "a column outside the segment's signs"
        );
        // A byte known only at run time is taken out of its word in a scalar register:
        // `sign_bits_of_byte` with a variable byte would pick its lanes' shifts at run
        // time, which the compiler then guards against shifts past 31.
        let word = self.words[(byte / 4) % (MAX_SEGMENT / 32)];
        let flip = s.sign_bits((word >> (8 * (byte % 4))) & 0xFF);
        s.float_of_bits(s.xor(s.bits(v), flip))
    }

    /// [`flip`](Self::flip) of sign byte `4·word + byte`: a caller that knows `byte`
    /// at compile time (a run of registers from a byte index that is a multiple of 4)
    /// gets the lanes' shifts as constants.
    #[inline(always)]
    fn flip_in_word<S: Lanes>(&self, s: S, word: usize, byte: usize, v: S::F) -> S::F {
        debug_assert!(
            word < MAX_SEGMENT / 32 && byte < 4,
            "a column outside the segment's signs"
        );
        // Masked to the table (every column of the segment is inside it): no bounds check.
        let bits = self.words[word % (MAX_SEGMENT / 32)];
        let flip = s.sign_bits_of_byte(bits, byte);
        s.float_of_bits(s.xor(s.bits(v), flip))
    }

    /// [`flip`](Self::flip) of register `k` of a run of `V` registers whose first sign
    /// byte is `first`: from 4 registers up, `first` is a multiple of 4 (a run starts
    /// at a multiple of `8V` columns), so an unrolled `k` gives constant shifts.
    #[inline(always)]
    fn flip_in_run<S: Lanes, const V: usize>(&self, s: S, first: usize, k: usize, v: S::F) -> S::F {
        if V >= 4 {
            debug_assert!(first.is_multiple_of(4));
            self.flip_in_word(s, first / 4 + k / 4, k % 4, v)
        } else {
            self.flip(s, first + k, v)
        }
    }
}

/// `−1` in the lanes that take `a − b` at strides 1, 2 and 4 (lane `j` with bit `h` of
/// `j` set), `+1` in the others.
#[inline(always)]
fn upper_signs<S: Lanes>(s: S) -> [S::F; 3] {
    let (sign, one) = (s.splat_u(0x8000_0000), s.bits(s.splat_f(1.0)));
    // Spelled out, not `map`: a closure may be left out of line.
    [
        s.float_of_bits(s.or(one, s.and(s.mask_from_bits(0xAA), sign))),
        s.float_of_bits(s.or(one, s.and(s.mask_from_bits(0xCC), sign))),
        s.float_of_bits(s.or(one, s.and(s.mask_from_bits(0xF0), sign))),
    ]
}

/// The butterflies of stride `h` (1, 2 or 4) within a register: lane `j` pairs with lane
/// `j ^ h`; the lower gets `a + b`, the upper `a − b`, as `v·(±1) + partner` in one
/// multiply-add (the same bits: the product is exact, so the one rounding is the add's,
/// IEEE `a − b` is `a + (−b)`, and addition commutes).
#[inline(always)]
fn butterflies<S: Lanes>(s: S, v: S::F, h: usize, signs: S::F) -> S::F {
    let partner = s.swap_lanes(v, h);
    s.mul_add(v, signs, partner)
}

/// Strides 1, 2 and 4 of one register. Each stride a constant (not a loop over an array
/// of them), so that `swap_lanes` compiles to its one shuffle, not a branch on the stride.
#[inline(always)]
fn register_stages<S: Lanes>(s: S, v: S::F, upper: &[S::F; 3]) -> S::F {
    let v = butterflies(s, v, 1, upper[0]);
    let v = butterflies(s, v, 2, upper[1]);
    butterflies(s, v, 4, upper[2])
}

/// The butterflies between `V` registers at strides `h, 2h, …, (V/2)h` (register `k`
/// holds columns `j + k·h`).
#[inline(always)]
fn cross_stages<S: Lanes, const V: usize>(s: S, v: &mut [S::F; V]) {
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
}

/// One block of `2^m ≥ 8` values (columns `col..`) scaled and transformed by the
/// butterflies (`(a, b) → (a + b, a − b)`), as [`transform_block`] does, its first pass
/// reading `src` (which is handed the segment's `signs`); with `sign_last`, the signs
/// flipped as the values are last stored.
#[inline(always)]
fn transform_block_lanes<S: Lanes>(
    s: S,
    src: &mut impl Source<S>,
    (signs, sign_last): (&SignWords, bool),
    col: usize,
    block: &mut [f32],
) {
    if sign_last {
        block_passes::<S, true>(s, src, signs, col, block);
    } else {
        block_passes::<S, false>(s, src, signs, col, block);
    }
}

/// [`transform_block_lanes`], the signs flipped in the last pass when `SIGNS`.
#[inline(always)]
fn block_passes<S: Lanes, const SIGNS: bool>(
    s: S,
    src: &mut impl Source<S>,
    signs: &SignWords,
    col: usize,
    block: &mut [f32],
) {
    let upper = upper_signs(s);
    let n = block.len();
    // The first pass: up to 8 registers through strides 1 to 32.
    let done = match n {
        8 => first_pass::<S, 1, SIGNS>(s, src, &upper, signs, col, block),
        16 => first_pass::<S, 2, SIGNS>(s, src, &upper, signs, col, block),
        32 => first_pass::<S, 4, SIGNS>(s, src, &upper, signs, col, block),
        64 => first_pass::<S, 8, SIGNS>(s, src, &upper, signs, col, block),
        _ => first_pass::<S, 8, false>(s, src, &upper, signs, col, block),
    };
    // Blocks are at most `MAX_SEGMENT` = 512 = 64·8 columns, so one more pass takes
    // the strides from 64 up, in registers. Every butterfly is the same operation on the
    // same values, in the same stage order: the same bits.
    const _: () = assert!(MAX_SEGMENT <= 64 * 8);
    match n / done {
        1 => {}
        2 => late_pass::<S, 2, SIGNS>(s, block, signs, col),
        4 => late_pass::<S, 4, SIGNS>(s, block, signs, col),
        _ => late_pass::<S, 8, SIGNS>(s, block, signs, col),
    }
}

/// A block's first pass: each run of `8V` columns read through `src`, through strides 1
/// to `4V`, its signs flipped when `SIGNS` (only where this is the block's last pass),
/// stored. Returns `8V`.
#[inline(always)]
fn first_pass<S: Lanes, const V: usize, const SIGNS: bool>(
    s: S,
    src: &mut impl Source<S>,
    upper: &[S::F; 3],
    signs: &SignWords,
    col: usize,
    block: &mut [f32],
) -> usize {
    for (r, run) in block.chunks_exact_mut(8 * V).enumerate() {
        let at = col + r * 8 * V;
        let first = signs.byte_index(at);
        let (chunks, _) = run.as_chunks_mut::<8>();
        let mut v = src.load_run::<V>(s, at, chunks, signs);
        for vk in v.iter_mut() {
            *vk = register_stages(s, *vk, upper);
        }
        cross_stages(s, &mut v);
        for (k, (vk, c)) in v.iter().zip(chunks.iter_mut()).enumerate() {
            let vk = if SIGNS {
                signs.flip_in_run::<S, V>(s, first, k, *vk)
            } else {
                *vk
            };
            s.store_f(vk, c);
        }
    }
    8 * V
}

/// The butterfly stages at strides `64, 128, …, 32V` of a block of `64V` columns
/// (columns `col..`): for each 8 columns `j` of the first 64, the `V` vectors at
/// `j + 64k` are loaded once and every stage applied to them before they are stored,
/// their signs flipped first when `SIGNS`. The 8 `j` are unrolled, so each register's
/// sign byte sits at a constant place in its sign word.
#[inline(always)]
fn late_pass<S: Lanes, const V: usize, const SIGNS: bool>(
    s: S,
    block: &mut [f32],
    signs: &SignWords,
    col: usize,
) {
    let (chunks, _) = block.as_chunks_mut::<8>();
    // `transform_block_lanes` calls this on blocks of exactly 64·V columns.
    let run = chunks.get_mut(..8 * V).expect("a block of 64·V columns");
    // The sign word of the block's first 8 columns (a block starts at a multiple of 64
    // columns: its first sign byte is a multiple of 8).
    let first = signs.byte_index(col);
    debug_assert!(
        first.is_multiple_of(8),
        "a late-pass block off a 64-column boundary"
    );
    let first = first / 4;
    late_columns::<S, V, SIGNS, 0>(s, run, signs, first);
    late_columns::<S, V, SIGNS, 1>(s, run, signs, first);
    late_columns::<S, V, SIGNS, 2>(s, run, signs, first);
    late_columns::<S, V, SIGNS, 3>(s, run, signs, first);
    late_columns::<S, V, SIGNS, 4>(s, run, signs, first);
    late_columns::<S, V, SIGNS, 5>(s, run, signs, first);
    late_columns::<S, V, SIGNS, 6>(s, run, signs, first);
    late_columns::<S, V, SIGNS, 7>(s, run, signs, first);
}

/// [`late_pass`] of the `V` vectors at columns `8J + 64k` of a block (`first` its first
/// sign word): sign byte `8k + J`, so byte `J % 4` of word `first + 2k + J / 4`.
#[inline(always)]
fn late_columns<S: Lanes, const V: usize, const SIGNS: bool, const J: usize>(
    s: S,
    run: &mut [[f32; 8]],
    signs: &SignWords,
    first: usize,
) {
    let mut v = [s.splat_f(0.0); V];
    for (k, vk) in v.iter_mut().enumerate() {
        *vk = s.load_f(&run[J + 8 * k]);
    }
    cross_stages(s, &mut v);
    for (k, vk) in v.iter().enumerate() {
        let vk = if SIGNS {
            signs.flip_in_word(s, first + 2 * k + J / 4, J % 4, *vk)
        } else {
            *vk
        };
        s.store_f(vk, &mut run[J + 8 * k]);
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
