//! [`Lanes`] for AVX2 + FMA: one 256-bit register per 8 lanes.
//!
//! Every method is `#[inline(always)]` and calls its intrinsics in an `unsafe` block: the
//! intrinsics need AVX2, FMA, F16C (and POPCNT for `count_ones`), and an [`Avx2Lanes`]
//! value can only be made from an [`Avx2`] or [`AvxVnni`] token, which proves the CPU has
//! all four.
//! The methods inline into the `#[target_feature]` entry points of [`super::avx2`] and
//! [`super::vnni`], where the intrinsics compile to single instructions. With `VNNI` (only
//! made from an [`AvxVnni`] token) the int8 dot is one `vpdpbusd` instead of three.

use core::arch::x86_64::*;

use super::avx2::Avx2;
use super::vnni::AvxVnni;
use crate::kernels::simd::{Lanes, PositionReader};

/// The AVX2 lanes; holding one proves AVX2, FMA, POPCNT and F16C are available, and with
/// `VNNI` also AVX-VNNI.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx2Lanes<const VNNI: bool> {
    _proof: Avx2,
}

impl Avx2Lanes<false> {
    /// The lanes of a token.
    #[inline(always)]
    pub(super) fn new(token: Avx2) -> Self {
        Avx2Lanes { _proof: token }
    }
}

impl Avx2Lanes<true> {
    /// The lanes of an AVX-VNNI token.
    #[inline(always)]
    pub(super) fn with_vnni(token: AvxVnni) -> Self {
        Avx2Lanes {
            _proof: token.avx2(),
        }
    }
}

/// Runs one expression of intrinsics; the caller is an [`Avx2Lanes`] method.
macro_rules! avx2 {
    ($e:expr) => {
        // SAFETY: `self` is an `Avx2Lanes`, made only from an `Avx2` or `AvxVnni` token,
        // each of which proves the CPU supports AVX2, FMA, POPCNT and F16C (all these
        // intrinsics need). The pointer
        // arguments, where any, are derived from references to exactly as many bytes as
        // the intrinsic reads or writes, and the unaligned forms have no alignment
        // requirement.
        unsafe { $e }
    };
}

impl<const VNNI: bool> Lanes for Avx2Lanes<VNNI> {
    type F = __m256;
    type U = __m256i;
    type B = __m256i;
    const NATIVE_F16: bool = true;

    #[inline(always)]
    fn splat_f(self, v: f32) -> __m256 {
        avx2!(_mm256_set1_ps(v))
    }
    #[inline(always)]
    fn splat_u(self, v: u32) -> __m256i {
        avx2!(_mm256_set1_epi32(v as i32))
    }
    #[inline(always)]
    fn load_f(self, v: &[f32; 8]) -> __m256 {
        avx2!(_mm256_loadu_ps(v.as_ptr()))
    }
    #[inline(always)]
    fn load_f16(self, h: &[half::f16; 8]) -> __m256 {
        // F16C: exact for every value, subnormals included whatever MXCSR's DAZ says,
        // and a NaN gets its quiet bit, as `half` converts.
        avx2!(_mm256_cvtph_ps(_mm_loadu_si128(h.as_ptr().cast())))
    }
    #[inline(always)]
    fn load_u(self, v: &[u32; 8]) -> __m256i {
        avx2!(_mm256_loadu_si256(v.as_ptr().cast()))
    }
    #[inline(always)]
    fn store_f(self, v: __m256, out: &mut [f32; 8]) {
        avx2!(_mm256_storeu_ps(out.as_mut_ptr(), v))
    }
    #[inline(always)]
    fn to_u32s(self, v: __m256i) -> [u32; 8] {
        let mut l = [0u32; 8];
        avx2!(_mm256_storeu_si256(l.as_mut_ptr().cast(), v));
        l
    }
    #[inline(always)]
    fn to_f32s(self, v: __m256) -> [f32; 8] {
        let mut l = [0f32; 8];
        self.store_f(v, &mut l);
        l
    }
    #[inline(always)]
    fn bits(self, v: __m256) -> __m256i {
        avx2!(_mm256_castps_si256(v))
    }
    #[inline(always)]
    fn float_of_bits(self, v: __m256i) -> __m256 {
        avx2!(_mm256_castsi256_ps(v))
    }

    #[inline(always)]
    fn and(self, a: __m256i, b: __m256i) -> __m256i {
        avx2!(_mm256_and_si256(a, b))
    }
    #[inline(always)]
    fn or(self, a: __m256i, b: __m256i) -> __m256i {
        avx2!(_mm256_or_si256(a, b))
    }
    #[inline(always)]
    fn andnot(self, a: __m256i, b: __m256i) -> __m256i {
        avx2!(_mm256_andnot_si256(a, b))
    }
    #[inline(always)]
    fn xor(self, a: __m256i, b: __m256i) -> __m256i {
        avx2!(_mm256_xor_si256(a, b))
    }
    #[inline(always)]
    fn eq(self, a: __m256i, b: __m256i) -> __m256i {
        avx2!(_mm256_cmpeq_epi32(a, b))
    }
    #[inline(always)]
    fn gt_i(self, a: __m256i, b: __m256i) -> __m256i {
        avx2!(_mm256_cmpgt_epi32(a, b))
    }
    #[inline(always)]
    fn max_u(self, a: __m256i, b: __m256i) -> __m256i {
        avx2!(_mm256_max_epu32(a, b))
    }
    #[inline(always)]
    fn max_i(self, a: __m256i, b: __m256i) -> __m256i {
        avx2!(_mm256_max_epi32(a, b))
    }
    #[inline(always)]
    fn min_i(self, a: __m256i, b: __m256i) -> __m256i {
        avx2!(_mm256_min_epi32(a, b))
    }
    #[inline(always)]
    fn add_i(self, a: __m256i, b: __m256i) -> __m256i {
        avx2!(_mm256_add_epi32(a, b))
    }
    #[inline(always)]
    fn sub_i(self, a: __m256i, b: __m256i) -> __m256i {
        avx2!(_mm256_sub_epi32(a, b))
    }
    #[inline(always)]
    fn shr(self, a: __m256i, n: u32) -> __m256i {
        avx2!(_mm256_srl_epi32(a, _mm_cvtsi32_si128(n as i32)))
    }
    #[inline(always)]
    fn shr_lanes(self, a: __m256i, n: __m256i) -> __m256i {
        avx2!(_mm256_srlv_epi32(a, n))
    }
    #[inline(always)]
    fn movemask(self, m: __m256i) -> u32 {
        avx2!(_mm256_movemask_ps(_mm256_castsi256_ps(m))) as u32
    }
    #[inline(always)]
    fn mask_from_bits(self, bits: u32) -> __m256i {
        avx2!({
            let bitsel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
            let v = _mm256_and_si256(_mm256_set1_epi32(bits as i32), bitsel);
            _mm256_cmpeq_epi32(v, bitsel)
        })
    }
    /// Bit `j` shifted to bit 31 of lane `j` (`vpsllvd`), then masked.
    #[inline(always)]
    fn sign_bits(self, bits: u32) -> __m256i {
        avx2!({
            let shifts = _mm256_setr_epi32(31, 30, 29, 28, 27, 26, 25, 24);
            let v = _mm256_sllv_epi32(_mm256_set1_epi32(bits as i32), shifts);
            _mm256_and_si256(v, _mm256_set1_epi32(i32::MIN))
        })
    }
    #[inline(always)]
    fn sign_bits_of_byte(self, word: u32, byte: usize) -> __m256i {
        /// Per byte of a word, lane `j`'s shift that brings the byte's bit `j` to bit 31
        /// (the bits above it leave the lane).
        const SHIFTS: [[i32; 8]; 4] = {
            let mut t = [[0i32; 8]; 4];
            let mut b = 0;
            while b < 4 {
                let mut j = 0;
                while j < 8 {
                    t[b][j] = 31 - 8 * b as i32 - j as i32;
                    j += 1;
                }
                b += 1;
            }
            t
        };
        let shifts = &SHIFTS[byte & 3];
        avx2!({
            let shifts = _mm256_loadu_si256(shifts.as_ptr().cast());
            let v = _mm256_sllv_epi32(_mm256_set1_epi32(word as i32), shifts);
            _mm256_and_si256(v, _mm256_set1_epi32(i32::MIN))
        })
    }
    #[inline(always)]
    fn select_u(self, m: __m256i, a: __m256i, b: __m256i) -> __m256i {
        avx2!(_mm256_blendv_epi8(b, a, m))
    }
    #[inline(always)]
    fn select_f(self, m: __m256i, a: __m256, b: __m256) -> __m256 {
        avx2!(_mm256_blendv_ps(b, a, _mm256_castsi256_ps(m)))
    }
    #[inline(always)]
    fn hmax_u(self, v: __m256i) -> u32 {
        self.to_u32s(v).into_iter().max().unwrap_or(0)
    }
    #[inline(always)]
    fn hsum_i(self, v: __m256i) -> i32 {
        avx2!({
            let s4 = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
            let s2 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
            let s1 = _mm_add_epi32(s2, _mm_shuffle_epi32::<0b01>(s2));
            _mm_cvtsi128_si32(s1)
        })
    }

    #[inline(always)]
    fn add_f(self, a: __m256, b: __m256) -> __m256 {
        avx2!(_mm256_add_ps(a, b))
    }
    #[inline(always)]
    fn permute_u(self, table: __m256i, idx: __m256i) -> __m256i {
        avx2!(_mm256_permutevar8x32_epi32(table, idx))
    }
    #[inline(always)]
    fn sub_f(self, a: __m256, b: __m256) -> __m256 {
        avx2!(_mm256_sub_ps(a, b))
    }
    #[inline(always)]
    fn mul_f(self, a: __m256, b: __m256) -> __m256 {
        avx2!(_mm256_mul_ps(a, b))
    }
    #[inline(always)]
    fn div_f(self, a: __m256, b: __m256) -> __m256 {
        avx2!(_mm256_div_ps(a, b))
    }
    #[inline(always)]
    fn mul_add(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        avx2!(_mm256_fmadd_ps(a, b, c))
    }
    #[inline(always)]
    fn mul_sub(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        avx2!(_mm256_fmsub_ps(a, b, c))
    }
    #[inline(always)]
    fn min_f(self, a: __m256, b: __m256) -> __m256 {
        avx2!(_mm256_min_ps(a, b))
    }
    #[inline(always)]
    fn max_f(self, a: __m256, b: __m256) -> __m256 {
        avx2!(_mm256_max_ps(a, b))
    }
    /// `vroundps` to nearest even, which equals the oracle's magic-number trick for
    /// `|x| ≤ 2^22` (the kernels clamp to ±512 first).
    #[inline(always)]
    fn round_even(self, v: __m256) -> __m256 {
        avx2!(_mm256_round_ps::<
            { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
        >(v))
    }
    #[inline(always)]
    fn float_to_int(self, v: __m256) -> __m256i {
        avx2!(_mm256_cvtps_epi32(v))
    }
    /// `vcvtps2dq` rounds by MXCSR, which Rust code runs at its default: nearest, ties
    /// to even.
    #[inline(always)]
    fn round_to_int(self, v: __m256) -> __m256i {
        avx2!(_mm256_cvtps_epi32(v))
    }
    #[inline(always)]
    fn int_to_float(self, v: __m256i) -> __m256 {
        avx2!(_mm256_cvtepi32_ps(v))
    }
    #[inline(always)]
    fn hmax_f(self, v: __m256) -> f32 {
        self.to_f32s(v).iter().fold(0f32, |a, &b| a.max(b))
    }
    #[inline(always)]
    fn hmin_f(self, v: __m256) -> f32 {
        self.to_f32s(v).iter().fold(0f32, |a, &b| a.min(b))
    }
    /// Pairwise: lanes 0+4, 1+5, … then halves again.
    #[inline(always)]
    fn hsum_f(self, v: __m256) -> f32 {
        avx2!({
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
            _mm_cvtss_f32(s)
        })
    }

    #[inline(always)]
    fn widen_bytes(self, b: [u8; 8]) -> __m256i {
        avx2!(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(i64::from_le_bytes(
            b
        ))))
    }
    #[inline(always)]
    fn widen_u16s(self, b: &[u8; 16]) -> __m256i {
        let (lo, hi) = b.split_at(8);
        let half = |h: &[u8]| i64::from_le_bytes(h.try_into().expect("8 bytes"));
        avx2!(_mm256_cvtepu16_epi32(_mm_set_epi64x(half(hi), half(lo))))
    }
    #[inline(always)]
    fn narrow_bytes(self, v: __m256i) -> [u8; 8] {
        avx2!({
            let pick = _mm256_setr_epi8(
                0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, //
                0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
            );
            let b = _mm256_shuffle_epi8(v, pick);
            let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1));
            // The low 8 bytes as a u64 (`vmovq`), little-endian: byte `j` is lane `j`.
            (_mm_cvtsi128_si64(_mm256_castsi256_si128(b)) as u64).to_le_bytes()
        })
    }
    #[inline(always)]
    fn pack_nibbles(self, staged: &[u8; 32], out: &mut [u8; 16]) {
        avx2!({
            let v = _mm256_loadu_si256(staged.as_ptr().cast());
            // Bytes [1, 16]: lo + 16 · hi per pair.
            let pairs = _mm256_maddubs_epi16(v, _mm256_set1_epi16(0x1001));
            let packed = _mm256_packus_epi16(pairs, pairs);
            let packed = _mm256_permute4x64_epi64::<0b1000>(packed);
            _mm_storeu_si128(out.as_mut_ptr().cast(), _mm256_castsi256_si128(packed));
        })
    }
    /// `vpermilps` within 128-bit halves for `h` 1 and 2, `vperm2f128` for 4.
    #[inline(always)]
    fn swap_lanes(self, v: __m256, h: usize) -> __m256 {
        match h {
            1 => avx2!(_mm256_permute_ps::<0b10_11_00_01>(v)),
            2 => avx2!(_mm256_permute_ps::<0b01_00_11_10>(v)),
            _ => avx2!(_mm256_permute2f128_ps::<1>(v, v)),
        }
    }
    /// `vpshufb` on the low byte of each lane (the others index entry 0, masked off).
    #[inline(always)]
    fn lookup16(self, table: &[u8; 16], idx: __m256i) -> __m256i {
        avx2!({
            let t = _mm256_broadcastsi128_si256(_mm_loadu_si128(table.as_ptr().cast()));
            _mm256_and_si256(_mm256_shuffle_epi8(t, idx), _mm256_set1_epi32(0xFF))
        })
    }
    #[inline(always)]
    fn load_b(self, v: &[u8; 32]) -> __m256i {
        avx2!(_mm256_loadu_si256(v.as_ptr().cast()))
    }
    #[inline(always)]
    fn load_b2(self, lo: &[u8; 16], hi: &[u8; 16]) -> __m256i {
        avx2!(_mm256_loadu2_m128i(hi.as_ptr().cast(), lo.as_ptr().cast()))
    }
    #[inline(always)]
    fn load_q(self, q: &[i8; 32]) -> __m256i {
        avx2!(_mm256_loadu_si256(q.as_ptr().cast()))
    }
    #[inline(always)]
    fn nibbles32(self, codes: &[u8; 16]) -> __m256i {
        avx2!({
            let v = _mm_loadu_si128(codes.as_ptr().cast());
            let low = _mm_set1_epi8(0x0F);
            let lo = _mm_and_si128(v, low);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), low);
            _mm256_set_m128i(_mm_unpackhi_epi8(lo, hi), _mm_unpacklo_epi8(lo, hi))
        })
    }
    #[inline(always)]
    fn nibbles64(self, codes: &[u8; 32]) -> (__m256i, __m256i) {
        avx2!({
            let v = _mm256_loadu_si256(codes.as_ptr().cast());
            let low = _mm256_set1_epi8(0x0F);
            (
                _mm256_and_si256(v, low),
                _mm256_and_si256(_mm256_srli_epi16::<4>(v), low),
            )
        })
    }
    /// Per 128-bit half a byte shuffle (its 8 even bytes, then its 8 odd), the 64-bit
    /// quarters reordered to evens then odds, and the halves of the two gathered.
    #[inline(always)]
    fn deinterleave_q(self, q: &[i8; 64]) -> (__m256i, __m256i) {
        avx2!({
            let split = _mm256_setr_epi8(
                0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, //
                0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
            );
            let half = |v: __m256i| {
                // Quarters: evens of half 0, evens of half 1, odds of half 0, odds of 1.
                _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_shuffle_epi8(v, split))
            };
            let a = half(_mm256_loadu_si256(q.as_ptr().cast()));
            let b = half(_mm256_loadu_si256(q[32..].as_ptr().cast()));
            (
                _mm256_permute2x128_si256::<0x20>(a, b),
                _mm256_permute2x128_si256::<0x31>(a, b),
            )
        })
    }
    #[inline(always)]
    fn shuffle_b(self, v: __m256i, idx: __m256i) -> __m256i {
        avx2!(_mm256_shuffle_epi8(v, idx))
    }
    #[inline(always)]
    fn byte_lanes(self, v: __m256i) -> [__m256i; 4] {
        avx2!({
            let byte = _mm256_set1_epi32(0xFF);
            [
                _mm256_and_si256(v, byte),
                _mm256_and_si256(_mm256_srli_epi32::<8>(v), byte),
                _mm256_and_si256(_mm256_srli_epi32::<16>(v), byte),
                _mm256_srli_epi32::<24>(v),
            ]
        })
    }
    /// The 16 bytes in both halves (a load, no shuffle), the upper half's 32-bit lanes
    /// shifted by 4 (a neighbour's low bits land above the nibble, masked off).
    #[inline(always)]
    fn nibble_planes(self, codes: &[u8; 16]) -> __m256i {
        avx2!({
            let v = _mm256_broadcastsi128_si256(_mm_loadu_si128(codes.as_ptr().cast()));
            let shifted = _mm256_srlv_epi32(v, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
            _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F))
        })
    }
    #[inline(always)]
    fn mul_lo_u16(self, a: __m256i, m: __m256i) -> __m256i {
        avx2!(_mm256_mullo_epi16(a, m))
    }
    #[inline(always)]
    fn shr_u16(self, a: __m256i, n: u32) -> __m256i {
        avx2!(_mm256_srl_epi16(a, _mm_cvtsi32_si128(n as i32)))
    }
    #[inline(always)]
    fn shl_u16(self, a: __m256i, n: u32) -> __m256i {
        avx2!(_mm256_sll_epi16(a, _mm_cvtsi32_si128(n as i32)))
    }
    #[inline(always)]
    fn or_b(self, a: __m256i, b: __m256i) -> __m256i {
        avx2!(_mm256_or_si256(a, b))
    }
    #[inline(always)]
    fn bit_bytes(self, bits: u32, value: u8) -> __m256i {
        avx2!({
            // Byte `j` gets the byte of `bits` holding bit `j`, then tests that bit.
            let spread = _mm256_setr_epi8(
                0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, //
                2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
            );
            let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
            let v = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), spread);
            let set = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
            _mm256_and_si256(set, _mm256_set1_epi8(value as i8))
        })
    }
    #[inline(always)]
    fn dot_bytes_i8(self, c: __m256i, q: __m256i, acc: __m256i) -> __m256i {
        if VNNI {
            // SAFETY: `Avx2Lanes<true>` is made only from an `AvxVnni` token, which proves
            // the CPU supports AVX-VNNI (and AVX2). The sums equal the branch below: four
            // products of at most 127·128 each fit an i32 without saturation.
            return unsafe { _mm256_dpbusd_avx_epi32(acc, c, q) };
        }
        avx2!({
            // `c` is at most 127, so |c·q + c·q| ≤ 2·127·127: no i16 saturation.
            let pairs = _mm256_maddubs_epi16(c, q);
            _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
        })
    }
    /// Six `vphaddd` and one add of the halves, paired by two lane permutes.
    #[inline(always)]
    fn hsum8_i(self, v: [__m256i; 8]) -> __m256i {
        avx2!({
            let ab = _mm256_hadd_epi32(v[0], v[1]);
            let cd = _mm256_hadd_epi32(v[2], v[3]);
            let ef = _mm256_hadd_epi32(v[4], v[5]);
            let gh = _mm256_hadd_epi32(v[6], v[7]);
            // Lane `k` of each half: a partial sum of vector `k` (a–d, then e–h).
            let abcd = _mm256_hadd_epi32(ab, cd);
            let efgh = _mm256_hadd_epi32(ef, gh);
            _mm256_add_epi32(
                _mm256_permute2x128_si256::<0x20>(abcd, efgh),
                _mm256_permute2x128_si256::<0x31>(abcd, efgh),
            )
        })
    }
    /// Three `vphaddd` and one add of the halves.
    #[inline(always)]
    fn hsum4_i(self, v: [__m256i; 4]) -> __m256i {
        avx2!({
            let ab = _mm256_hadd_epi32(v[0], v[1]);
            let cd = _mm256_hadd_epi32(v[2], v[3]);
            // Lane `k` of each half: a partial sum of vector `k`.
            let abcd = _mm256_hadd_epi32(ab, cd);
            _mm256_zextsi128_si256(_mm_add_epi32(
                _mm256_castsi256_si128(abcd),
                _mm256_extracti128_si256::<1>(abcd),
            ))
        })
    }

    /// Positions unpacked from the 7-bit stream with shifts, codes picked from the
    /// group's code dwords with two permutes.
    ///
    /// The unpack is `vpsrlvq` + `vpshufd` + `vpsrlvd`, not BMI2 `PDEP`
    /// (`_pdep_u64(w, 0x7F7F_7F7F_7F7F_7F7F)` then `vpmovzxbd`): PDEP is 3 cycles on Intel
    /// but microcoded on AMD Zen1/Zen2, where it costs one loop per set mask bit (56
    /// here, hundreds of cycles).
    #[inline(always)]
    fn next_outliers8(
        self,
        codes: &[u8; 64],
        pos: &mut PositionReader<'_>,
        k: usize,
    ) -> (__m256i, __m256i, __m256i) {
        debug_assert!(pos.width == 7 && k <= 8);
        let window = pos.window();
        pos.bit += k * 7;
        avx2!({
            let dwords = (
                _mm256_loadu_si256(codes.as_ptr().cast()),
                _mm256_loadu_si256(codes[32..].as_ptr().cast()),
            );
            // Position `j` is bits `7j..7j + 7` of the window. Qword `m` of `q` is the
            // window shifted right by `14m`: its low dword holds positions `2m` (at bit 0)
            // and `2m + 1` (at bit 7). `vpshufd` copies each low dword into two lanes (per
            // 128-bit half: qwords 0, 1 | 2, 3), and a per-lane shift by 0 or 7 brings
            // lane `j`'s position down.
            let q = _mm256_srlv_epi64(
                _mm256_set1_epi64x(window as i64),
                _mm256_setr_epi64x(0, 14, 28, 42),
            );
            let d = _mm256_shuffle_epi32::<0b10_10_00_00>(q);
            let p = _mm256_srlv_epi32(d, _mm256_setr_epi32(0, 7, 0, 7, 0, 7, 0, 7));
            let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let valid = _mm256_cmpgt_epi32(_mm256_set1_epi32(k as i32), lanes);
            let idx = _mm256_and_si256(_mm256_and_si256(p, _mm256_set1_epi32(0x7F)), valid);
            let dw = _mm256_srli_epi32::<3>(idx);
            let word = _mm256_blendv_epi8(
                _mm256_permutevar8x32_epi32(dwords.0, dw),
                _mm256_permutevar8x32_epi32(dwords.1, dw),
                _mm256_cmpgt_epi32(dw, _mm256_set1_epi32(7)),
            );
            let sh = _mm256_slli_epi32::<2>(_mm256_and_si256(idx, _mm256_set1_epi32(7)));
            let c = _mm256_and_si256(_mm256_srlv_epi32(word, sh), _mm256_set1_epi32(0xF));
            (idx, c, valid)
        })
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::kernels::simd::next_outliers8_portable;

    /// The shift-and-permute unpack equals the one-at-a-time reading, for every count and
    /// bit offset (up to where 8 positions still fit the stream).
    #[test]
    fn next_outliers8_matches_the_portable_reading() {
        let Some(token) = Avx2::try_new() else {
            return;
        };
        let s = Avx2Lanes::new(token);
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut byte = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        };
        let codes: [u8; 64] = core::array::from_fn(|_| byte());
        let stream: [u8; 24] = core::array::from_fn(|_| byte());
        for bit in 0..=stream.len() * 8 - 8 * 7 {
            for k in 1..=8 {
                let mut fast = PositionReader::at(&stream, bit, 7);
                let mut slow = PositionReader::at(&stream, bit, 7);
                let a = s.next_outliers8(&codes, &mut fast, k);
                let b = next_outliers8_portable(s, &codes, &mut slow, k);
                // Codes past `k` are unspecified: compare them masked.
                let lanes = |(i, c, v): (__m256i, __m256i, __m256i)| {
                    (s.to_u32s(i), s.to_u32s(s.and(c, v)), s.to_u32s(v))
                };
                assert_eq!(lanes(a), lanes(b), "bit {bit}, k {k}");
                assert_eq!(fast.bit, slow.bit);
            }
        }
    }
}
