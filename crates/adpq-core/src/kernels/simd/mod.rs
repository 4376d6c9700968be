//! The SIMD kernels, written once over an 8-lane abstraction ([`Lanes`]) that each ISA
//! implements (AVX2: one 256-bit register; NEON: a pair of 128-bit registers).
//!
//! Nothing here is `unsafe`: a [`Lanes`] value can only be made from its ISA's token, so
//! holding one proves the CPU features its methods need, and those methods are safe.
//! Every kernel is a generic `#[inline(always)]` function. An ISA provides three things:
//! its lanes, a [`SimdToken`] impl whose `run` calls a kernel inside the ISA's one
//! `#[target_feature]` trampoline (the only `unsafe` call, in the arch module), and
//! `simd_kernels!(Token, "name")`, which implements
//! [`CpuKernels`](crate::kernels::CpuKernels) by running each kernel through `run`. Kernels
//! reach the trampoline as [`entry::Kernel`] values whose `call` is `#[inline(always)]`
//! (not as closures, which the compiler may leave out of line and so compile without the
//! ISA's features), so each kernel, lane methods included, compiles as one function for
//! that ISA.
//!
//! | piece | where |
//! | --- | --- |
//! | selection: histogram pass, counts, range scan | `scan.rs` |
//! | quantizing rows | `quantize.rs` (group walk shared with scalar: `kernels/rows.rs`) |
//! | quantizing rows, format v2 | `quantize_v2.rs` (classification from `quantize.rs`, grid search shared with scalar: `affine.rs`) |
//! | dequantizing rows, f32 dot products | `decode.rs`; format v2: `decode_v2.rs` |
//! | int8-activation dot products | `q8.rs`; format v2: `decode_v2.rs`; the walk over blocks of rows: `row_blocks.rs` |
//! | format v3: the row rotation | `rotate.rs` (bit-identical to `crate::rotate`) |
//! | format v3: quantizing rows | `quantize_v3.rs` (grid search shared with scalar: `affine.rs`) |
//! | format v3: dequantizing rows, int8 dot products | `decode_v3.rs` |
//! | format v3: f32 dot products (`dot_row`, `gemv`) | `dot_v3.rs` |
//! | the `CpuKernels` impl and kernel values | `entry.rs` |
//!
//! **Exactness.** Histograms and counts are integer work and equal the scalar results.
//! Quantization performs the scalar oracle's f32 operations lane by lane (`x · (1/Δ)`,
//! clamp to ±512, round half to even, add the offset, clamp), so the packed bytes are
//! identical. Dequantization is `(code − offset) as f32 · Δ`, also identical. Format v2
//! likewise: the search's error and refit sums keep element `i` of a group in lane `i % 8`
//! with no FMA (`affine::LaneSums`), so the grids and codes are the oracle's, and
//! dequantization is `c·d + m`, a multiply then an add. Format v3 the same way, its
//! rotation included (`rotate.rs`: the same butterflies per element). Only the f32 dot
//! products sum in another order (lanes, FMA): see
//! [`dot_tolerance`](crate::kernels::dot_tolerance); v3's int8 dot product equals the
//! reference.

mod code_chunks;
mod decode;
mod decode_v2;
mod decode_v3;
mod dot_v3;
pub(crate) mod entry;
mod format;
mod q8;
mod quantize;
mod quantize_v2;
mod quantize_v3;
mod repacked;
mod rotate;
mod row_blocks;
mod scan;

pub(crate) use decode::{dequantize_row, dequantize_rows, dot_row, PositionReader};
pub(crate) use decode_v2::{
    dequantize_row_v2, dot_row_q8_v2, dot_row_v2, gemv_q8_rows_v2, gemv_v2,
};
pub(crate) use decode_v3::{dequantize_row_v3, dot_row_q8_v3, gemv_q8_rows_v3};
pub(crate) use dot_v3::{dot_row_v3, gemv_v3};
pub(crate) use entry::simd_kernels;

/// Calls `check(token)` with this machine's baseline SIMD token, for the lane kernels'
/// tests against the scalar oracle: AVX2 where the CPU has it (nothing otherwise), NEON
/// on aarch64 (baseline there).
#[cfg(test)]
macro_rules! on_native_lanes {
    ($check:expr) => {{
        #[cfg(target_arch = "x86_64")]
        if let Some(t) = crate::kernels::Avx2::try_new() {
            $check(t);
        }
        #[cfg(target_arch = "aarch64")]
        $check(crate::kernels::Neon::try_new().expect("NEON is baseline on aarch64"));
    }};
}
#[cfg(test)]
pub(crate) use on_native_lanes;

/// The SIMD tests' deterministic random source: xorshift64 from `seed` (not zero).
#[cfg(test)]
pub(crate) fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// A group's refit sums as bits, for exact comparisons in the SIMD tests.
#[cfg(test)]
pub(crate) fn refit_bits(s: &crate::affine::RefitSums) -> (u32, [[u32; 8]; 4]) {
    let b = |l: &crate::affine::LaneSums| l.0.map(f32::to_bits);
    (s.n, [b(&s.c), b(&s.cc), b(&s.w), b(&s.cw)])
}
pub(crate) use q8::{dot_row_q8, quantize_activations};
pub(crate) use quantize::quantize_rows;
pub(crate) use quantize_v2::quantize_rows_v2;
pub(crate) use quantize_v3::quantize_rows_v3;
pub(crate) use repacked::gemv_q8_repacked;
pub(crate) use scan::{count_f32, histogram_f32, histogram_in_contract, scan_range_f32};

/// An ISA token whose lanes the shared kernels run on.
pub(crate) trait SimdToken: Copy {
    /// The ISA's lanes.
    type Lanes: Lanes;

    /// Runs kernel `k` with this ISA's lanes inside a `#[target_feature]` function of the
    /// ISA, into which `k` inlines with every lane method it uses.
    fn run<K: entry::Kernel<Self::Lanes>>(self, k: K) -> K::Out;
}

/// Eight 32-bit lanes: the vector operations the kernels are written with.
///
/// `F` holds 8 f32, `U` 8 u32 (also read as i32, and as lane masks: all ones or all
/// zeros). Methods take the lane token `self` by value (it is a zero-sized proof of the
/// CPU features). Lane `j` of every load, store and mask bit is element `j` in memory.
pub(crate) trait Lanes: Copy {
    /// 8 × f32.
    type F: Copy;
    /// 8 × u32 / i32 / lane mask.
    type U: Copy;
    /// 32 bytes, also read as 16 u16: the byte lanes of the int8 dot products.
    type B: Copy;

    /// Every lane `v`.
    fn splat_f(self, v: f32) -> Self::F;
    /// Every lane `v`.
    fn splat_u(self, v: u32) -> Self::U;
    /// Every lane `v`.
    fn splat_i(self, v: i32) -> Self::U {
        self.splat_u(v as u32)
    }
    /// Loads 8 f32.
    fn load_f(self, v: &[f32; 8]) -> Self::F;
    /// Whether [`load_f16`](Self::load_f16) is the ISA's own conversion (F16C on x86):
    /// without one, whole slices convert faster in the portable loop.
    const NATIVE_F16: bool = false;
    /// 8 f16 values as f32, with the bits of [`Element::to_f32`](crate::Element::to_f32)
    /// (by default the core's portable conversion; one F16C instruction on x86).
    #[inline(always)]
    fn load_f16(self, h: &[half::f16; 8]) -> Self::F {
        let mut v = [0f32; 8];
        crate::weights::f16_to_f32_slice(h, &mut v);
        self.load_f(&v)
    }
    /// Loads 8 u32.
    fn load_u(self, v: &[u32; 8]) -> Self::U;
    /// Stores 8 f32.
    fn store_f(self, v: Self::F, out: &mut [f32; 8]);
    /// The lanes as u32.
    fn to_u32s(self, v: Self::U) -> [u32; 8];
    /// The lanes as f32.
    fn to_f32s(self, v: Self::F) -> [f32; 8];
    /// The bits of `v`.
    fn bits(self, v: Self::F) -> Self::U;
    /// The f32 with bits `v`.
    fn float_of_bits(self, v: Self::U) -> Self::F;

    /// `a & b`.
    fn and(self, a: Self::U, b: Self::U) -> Self::U;
    /// `a | b`.
    fn or(self, a: Self::U, b: Self::U) -> Self::U;
    /// `!a & b`.
    fn andnot(self, a: Self::U, b: Self::U) -> Self::U;
    /// `a ^ b`.
    fn xor(self, a: Self::U, b: Self::U) -> Self::U;
    /// `a == b` as a mask.
    fn eq(self, a: Self::U, b: Self::U) -> Self::U;
    /// `a > b` as i32, as a mask.
    fn gt_i(self, a: Self::U, b: Self::U) -> Self::U;
    /// Unsigned `max(a, b)`.
    fn max_u(self, a: Self::U, b: Self::U) -> Self::U;
    /// Signed `max(a, b)`.
    fn max_i(self, a: Self::U, b: Self::U) -> Self::U;
    /// Signed `min(a, b)`.
    fn min_i(self, a: Self::U, b: Self::U) -> Self::U;
    /// `a + b` (wrapping).
    fn add_i(self, a: Self::U, b: Self::U) -> Self::U;
    /// `a - b` (wrapping).
    fn sub_i(self, a: Self::U, b: Self::U) -> Self::U;
    /// Every lane shifted right (logical) by `n`, `n <= 32` (32 gives 0).
    fn shr(self, a: Self::U, n: u32) -> Self::U;
    /// Lane `j` shifted right (logical) by lane `j` of `n` (each `< 32`).
    fn shr_lanes(self, a: Self::U, n: Self::U) -> Self::U;
    /// Bit `j` set when lane `j` of mask `m` is set.
    fn movemask(self, m: Self::U) -> u32;
    /// The mask with lane `j` set when bit `j` of `bits` is.
    fn mask_from_bits(self, bits: u32) -> Self::U;
    /// The f32 sign bit (`0x8000_0000`) in lane `j` when bit `j` of `bits` is set (of
    /// `bits < 256`), else 0.
    #[inline(always)]
    fn sign_bits(self, bits: u32) -> Self::U {
        self.and(self.mask_from_bits(bits), self.splat_u(0x8000_0000))
    }
    /// [`sign_bits`](Self::sign_bits) of byte `byte & 3` of `word` (byte 0 its low 8
    /// bits): an ISA may take the byte from the whole word in lanes, so that a word read
    /// from memory needs no scalar extraction. Meant for a `byte` known at compile time.
    #[inline(always)]
    fn sign_bits_of_byte(self, word: u32, byte: usize) -> Self::U {
        self.sign_bits((word >> (8 * (byte & 3))) & 0xFF)
    }
    /// Lane `j` of `a` where mask lane `j` is set, else of `b`.
    fn select_u(self, m: Self::U, a: Self::U, b: Self::U) -> Self::U;
    /// Lane `j` of `a` where mask lane `j` is set, else of `b`.
    fn select_f(self, m: Self::U, a: Self::F, b: Self::F) -> Self::F;
    /// The largest lane (unsigned).
    fn hmax_u(self, v: Self::U) -> u32;
    /// The sum of the lanes as i32 (wrapping).
    fn hsum_i(self, v: Self::U) -> i32;

    /// `a + b`.
    fn add_f(self, a: Self::F, b: Self::F) -> Self::F;
    /// `a − b`.
    fn sub_f(self, a: Self::F, b: Self::F) -> Self::F;
    /// `a · b`.
    fn mul_f(self, a: Self::F, b: Self::F) -> Self::F;
    /// `a / b`, correctly rounded (IEEE division, as f32 `/`).
    fn div_f(self, a: Self::F, b: Self::F) -> Self::F;
    /// `a · b + c`, fused.
    fn mul_add(self, a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    /// `a · b − c`, fused.
    fn mul_sub(self, a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    /// `min(a, b)` as the ISA's min instruction does it (no NaN reaches the kernels).
    fn min_f(self, a: Self::F, b: Self::F) -> Self::F;
    /// `max(a, b)` as the ISA's max instruction does it.
    fn max_f(self, a: Self::F, b: Self::F) -> Self::F;
    /// Rounds to the nearest integer, ties to even.
    fn round_even(self, v: Self::F) -> Self::F;
    /// Truncates to i32 (the kernels only convert integral values).
    fn float_to_int(self, v: Self::F) -> Self::U;
    /// Rounds to the nearest integer, ties to even, as i32 (`|v| < 2^31`): one
    /// instruction where the ISA converts with that rounding.
    #[inline(always)]
    fn round_to_int(self, v: Self::F) -> Self::U {
        self.float_to_int(self.round_even(v))
    }
    /// i32 lanes as f32.
    fn int_to_float(self, v: Self::U) -> Self::F;
    /// The largest lane, and 0 (every extent starts at 0).
    fn hmax_f(self, v: Self::F) -> f32;
    /// The smallest lane, and 0.
    fn hmin_f(self, v: Self::F) -> f32;
    /// The sum of the lanes (in the ISA's order).
    fn hsum_f(self, v: Self::F) -> f32;

    /// 8 bytes widened to u32 lanes.
    fn widen_bytes(self, b: [u8; 8]) -> Self::U;
    /// 8 little-endian u16 (bytes `2j`, `2j + 1`) widened to the u32 lanes.
    fn widen_u16s(self, b: &[u8; 16]) -> Self::U;
    /// The low byte of each lane (values `0..=255`), lane `j` to byte `j`.
    fn narrow_bytes(self, v: Self::U) -> [u8; 8];
    /// Packs 32 staged 4-bit codes (one a byte) into 16 bytes, code `2i` in the low
    /// nibble of byte `i`.
    fn pack_nibbles(self, staged: &[u8; 32], out: &mut [u8; 16]);
    /// Adds `Σ c·q` over 32 4-bit codes `codes` (packed as in a row) and int8 `q` into
    /// the i32 lanes of `acc` (exact; which lane gets which term is the ISA's choice).
    #[inline(always)]
    fn dot_nibbles_i8(self, codes: &[u8; 16], q: &[i8; 32], acc: Self::U) -> Self::U {
        self.dot_bytes_i8(self.nibbles32(codes), self.load_q(q), acc)
    }

    /// Lane `j` of `v` moved to lane `j ^ h`, for `h` 1, 2 or 4 (a Walsh–Hadamard
    /// butterfly's partner).
    fn swap_lanes(self, v: Self::F, h: usize) -> Self::F;
    /// `table[idx_j]` in lane `j`, every `idx_j < 16` (format v3's code book).
    fn lookup16(self, table: &[u8; 16], idx: Self::U) -> Self::U;
    /// Loads 32 bytes.
    fn load_b(self, v: &[u8; 32]) -> Self::B;
    /// 16 bytes from `lo`, then 16 from `hi`.
    fn load_b2(self, lo: &[u8; 16], hi: &[u8; 16]) -> Self::B;
    /// Loads 32 int8 (as their bytes).
    fn load_q(self, q: &[i8; 32]) -> Self::B;
    /// 32 4-bit codes (packed as in a row) as 32 bytes in order.
    fn nibbles32(self, codes: &[u8; 16]) -> Self::B;
    /// 64 4-bit codes (packed as in a row) as the even codes' 32 bytes (byte `j`: code
    /// `2j`, the low nibble of byte `j`) and the odd codes' (code `2j + 1`, its high
    /// nibble): no interleave, for products with [`deinterleave_q`](Self::deinterleave_q).
    fn nibbles64(self, codes: &[u8; 32]) -> (Self::B, Self::B);
    /// 64 int8 as the even ones (byte `j`: `q[2j]`) and the odd ones (`q[2j + 1]`).
    fn deinterleave_q(self, q: &[i8; 64]) -> (Self::B, Self::B);
    /// Byte `j` of each 16-byte half: byte `idx_j` of the same half of `v` for
    /// `idx_j < 16`, 0 for `idx_j >= 0x80` (AVX2's `vpshufb`, NEON's `tbl`).
    fn shuffle_b(self, v: Self::B, idx: Self::B) -> Self::B;
    /// The 32 bytes of `v` as u32 lanes by their place in a 4-byte word: lane `k` of
    /// vector `j` is byte `4k + j` (shifts and masks within each 32-bit lane, no
    /// shuffles).
    fn byte_lanes(self, v: Self::B) -> [Self::U; 4];
    /// 16 bytes of 4-bit codes split in nibble planes: bytes 0–15 the low nibbles (codes
    /// `2i`), bytes 16–31 the high ones (codes `2i + 1`).
    fn nibble_planes(self, codes: &[u8; 16]) -> Self::B;
    /// The 16 u16 lanes (bytes `2j`, `2j + 1`, little-endian): `a·m mod 2^16`.
    fn mul_lo_u16(self, a: Self::B, m: Self::B) -> Self::B;
    /// The u16 lanes shifted right (logical) by `n < 16`.
    fn shr_u16(self, a: Self::B, n: u32) -> Self::B;
    /// The u16 lanes shifted left by `n < 16`.
    fn shl_u16(self, a: Self::B, n: u32) -> Self::B;
    /// `a | b`.
    fn or_b(self, a: Self::B, b: Self::B) -> Self::B;
    /// Byte `j`: `value` where bit `j` of `bits` is set, else 0.
    fn bit_bytes(self, bits: u32, value: u8) -> Self::B;
    /// Adds `Σ c·q` over 32 bytes `c` (each at most 127) and 32 int8 `q` into the i32
    /// lanes of `acc` (exact; which lane gets which term is the ISA's choice).
    fn dot_bytes_i8(self, c: Self::B, q: Self::B, acc: Self::U) -> Self::U;
    /// The lane sums of 4 vectors ([`hsum_i`](Self::hsum_i) of each): that of `v[k]` in
    /// lane `k`, lanes 4–7 zero.
    #[inline(always)]
    fn hsum4_i(self, v: [Self::U; 4]) -> Self::U {
        let [a, b, c, d] = v.map(|v| self.hsum_i(v) as u32);
        self.load_u(&[a, b, c, d, 0, 0, 0, 0])
    }

    /// The lane sums of 8 vectors ([`hsum_i`](Self::hsum_i) of each): that of `v[k]` in
    /// lane `k`.
    #[inline(always)]
    fn hsum8_i(self, v: [Self::U; 8]) -> Self::U {
        self.load_u(&v.map(|v| self.hsum_i(v) as u32))
    }

    /// Lane `j` of `table` at lane `idx_j & 7`, for every `j`.
    #[inline(always)]
    fn permute_u(self, table: Self::U, idx: Self::U) -> Self::U {
        let (t, i) = (self.to_u32s(table), self.to_u32s(idx));
        self.load_u(&i.map(|j| t[j as usize & 7]))
    }

    /// `table[idx_j]` in lane `j` of a 16-entry table of 32-bit values held as two
    /// vectors (entries 0–7, then 8–15), every `idx_j < 16`.
    #[inline(always)]
    fn lookup16_u(self, table: [Self::U; 2], idx: Self::U) -> Self::U {
        let upper = self.gt_i(idx, self.splat_u(7));
        self.select_u(
            upper,
            self.permute_u(table[1], idx),
            self.permute_u(table[0], idx),
        )
    }

    /// Positions (lanes past `k` hold 0), codes (lanes past `k` unspecified) and lane
    /// mask of the next `k <= 8` outliers of a full 4-bit group of 128 whose codes are
    /// `codes`.
    #[inline(always)]
    fn next_outliers8(
        self,
        codes: &[u8; 64],
        pos: &mut PositionReader<'_>,
        k: usize,
    ) -> (Self::U, Self::U, Self::U) {
        next_outliers8_portable(self, codes, pos, k)
    }
}

/// [`Lanes::next_outliers8`] one position at a time (any position width).
#[inline(always)]
pub(crate) fn next_outliers8_portable<S: Lanes>(
    s: S,
    codes: &[u8; 64],
    pos: &mut PositionReader<'_>,
    k: usize,
) -> (S::U, S::U, S::U) {
    let (mut idx, mut c, mut valid) = ([0u32; 8], [0u32; 8], [0u32; 8]);
    for j in 0..k.min(8) {
        let p = pos.next() & 127;
        idx[j] = p as u32;
        c[j] = u32::from(codes[p / 2] >> ((p & 1) * 4)) & 0xF;
        valid[j] = u32::MAX;
    }
    (s.load_u(&idx), s.load_u(&c), s.load_u(&valid))
}

/// `s` as whole `N`-element arrays, and the remainder (`<[T]>::as_chunks`, which is newer
/// than this crate's minimum Rust).
#[inline(always)]
pub(crate) fn arrays<T, const N: usize>(
    s: &[T],
) -> (impl ExactSizeIterator<Item = &[T; N]> + Clone, &[T]) {
    let chunks = s.chunks_exact(N);
    let rest = chunks.remainder();
    (chunks.map(|a| a.try_into().expect("N elements")), rest)
}

/// `s` as whole `N`-element arrays (the remainder left out).
#[inline(always)]
pub(crate) fn arrays_mut<T, const N: usize>(
    s: &mut [T],
) -> impl ExactSizeIterator<Item = &mut [T; N]> {
    s.chunks_exact_mut(N)
        .map(|a| a.try_into().expect("N elements"))
}

/// The halves of 16 lanes.
#[inline(always)]
pub(crate) fn halves<T>(a: &[T; 16]) -> (&[T; 8], &[T; 8]) {
    let (lo, hi) = a.split_at(8);
    (
        lo.try_into().expect("8 elements"),
        hi.try_into().expect("8 elements"),
    )
}

/// `w` as f32 into `out` (`out.len() == w.len()`), with [`Weights::to_f32_slice`]'s
/// bits: f16 8 at a time through [`Lanes::load_f16`] where it is the ISA's own
/// ([`Lanes::NATIVE_F16`]), everything else by `to_f32_slice`.
#[inline(always)]
pub(crate) fn weights_to_f32<S: Lanes>(s: S, w: crate::Weights<'_>, out: &mut [f32]) {
    let (crate::Weights::F16(h), true) = (w, S::NATIVE_F16) else {
        return w.to_f32_slice(out);
    };
    assert_eq!(out.len(), h.len(), "f32 output of another length");
    let (h8, h_rest) = h.as_chunks::<8>();
    let (o8, o_rest) = out.as_chunks_mut::<8>();
    for (hc, oc) in h8.iter().zip(o8) {
        s.store_f(s.load_f16(hc), oc);
    }
    crate::weights::f16_to_f32_slice(h_rest, o_rest);
}

#[cfg(all(test, feature = "std"))]
pub(crate) mod tests {
    use std::vec::Vec;

    use super::entry::Kernel;
    use super::{xorshift, Lanes, SimdToken};

    /// `byte_lanes`, `nibble_planes`, `sign_bits` and `sign_bits_of_byte` against their
    /// lane-by-lane definitions.
    struct ByteLaneOps;

    impl<S: Lanes> Kernel<S> for ByteLaneOps {
        type Out = ();
        #[inline(always)]
        fn call(self, s: S) {
            let mut next = xorshift(0x5EED_B4B4_0000_0001);
            for _ in 0..200 {
                let bytes: [u8; 32] = core::array::from_fn(|_| next() as u8);
                let lanes = s.byte_lanes(s.load_b(&bytes));
                for (j, v) in lanes.into_iter().enumerate() {
                    let want: [u32; 8] = core::array::from_fn(|k| u32::from(bytes[4 * k + j]));
                    assert_eq!(s.to_u32s(v), want, "byte_lanes {j}");
                }
                let codes: [u8; 16] = core::array::from_fn(|i| bytes[i]);
                // Byte `4k + j` is lane `k` of `byte_lanes`' vector `j` (checked above).
                let mut planes = [0u8; 32];
                for (j, v) in s
                    .byte_lanes(s.nibble_planes(&codes))
                    .into_iter()
                    .enumerate()
                {
                    for (k, w) in s.to_u32s(v).into_iter().enumerate() {
                        planes[4 * k + j] = w as u8;
                    }
                }
                let want: [u8; 32] = core::array::from_fn(|i| {
                    if i < 16 {
                        codes[i] & 15
                    } else {
                        codes[i - 16] >> 4
                    }
                });
                assert_eq!(planes, want, "nibble_planes");
            }
            for bits in 0..256u32 {
                let want: [u32; 8] =
                    core::array::from_fn(|j| if (bits >> j) & 1 == 1 { 0x8000_0000 } else { 0 });
                assert_eq!(s.to_u32s(s.sign_bits(bits)), want, "sign_bits({bits:#x})");
                // The same byte at each place of a word whose other bytes are noise.
                for byte in 0..4 {
                    let noise = (next() as u32) & !(0xFF << (8 * byte));
                    let word = noise | bits << (8 * byte);
                    let got = s.to_u32s(s.sign_bits_of_byte(word, byte));
                    assert_eq!(got, want, "sign_bits_of_byte({word:#x}, {byte})");
                }
            }
        }
    }

    fn byte_lane_ops<T: SimdToken>(t: T) {
        t.run(ByteLaneOps);
    }

    #[test]
    fn byte_lane_ops_match_their_definitions() {
        super::on_native_lanes!(byte_lane_ops);
    }

    /// Every f16 bit pattern (`src`) through `load_f16` into `lanes`, and through
    /// `weights_to_f32` into `slice` (3 shorter, which leaves a tail); checked by
    /// [`check_f16_conversion`] after the run, so that a caller can change the thread's
    /// floating-point state around the run alone.
    pub(crate) struct F16Conversion<'a> {
        pub(crate) src: &'a [half::f16],
        pub(crate) lanes: &'a mut [f32],
        pub(crate) slice: &'a mut [f32],
    }

    impl<S: Lanes> Kernel<S> for F16Conversion<'_> {
        type Out = ();
        #[inline(always)]
        fn call(self, s: S) {
            let (h8, _) = self.src.as_chunks::<8>();
            for (h, o) in h8.iter().zip(self.lanes.as_chunks_mut::<8>().0) {
                s.store_f(s.load_f16(h), o);
            }
            let n = self.slice.len();
            super::weights_to_f32(s, crate::Weights::F16(&self.src[..n]), self.slice);
        }
    }

    /// The buffers of an [`F16Conversion`]: every pattern, and the two outputs.
    pub(crate) fn f16_conversion_buffers() -> (Vec<half::f16>, Vec<f32>, Vec<f32>) {
        let src: Vec<half::f16> = (0..=u16::MAX).map(half::f16::from_bits).collect();
        let n = src.len();
        (src, std::vec![0f32; n], std::vec![0f32; n - 3])
    }

    /// Both outputs of an [`F16Conversion`] against the portable conversion, which
    /// `weights::tests` holds to `half`'s bits (and `x86_64::tests` under flushed
    /// subnormals).
    pub(crate) fn check_f16_conversion(src: &[half::f16], lanes: &[f32], slice: &[f32]) {
        let mut want = std::vec![0f32; src.len()];
        crate::weights::f16_to_f32_slice(src, &mut want);
        for (i, (g, w)) in lanes.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "load_f16 of {i:#06x}");
        }
        for (i, (g, w)) in slice.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "weights_to_f32 of {i:#06x}");
        }
    }

    fn f16_conversion<T: SimdToken>(t: T) {
        let (src, mut lanes, mut slice) = f16_conversion_buffers();
        t.run(F16Conversion {
            src: &src,
            lanes: &mut lanes,
            slice: &mut slice,
        });
        check_f16_conversion(&src, &lanes, &slice);
    }

    #[test]
    fn f16_lanes_convert_as_half_does() {
        super::on_native_lanes!(f16_conversion);
    }
}
