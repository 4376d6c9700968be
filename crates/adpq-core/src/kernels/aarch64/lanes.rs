//! [`Lanes`] for NEON: 8 lanes as a pair of 128-bit registers (lanes 0–3, 4–7).
//!
//! NEON is baseline on `aarch64-unknown-linux-gnu`, but rustc still requires a
//! `#[target_feature(enable = "neon")]` context to call the intrinsics safely. So every
//! method calls its intrinsics in an `unsafe` block, justified by the [`NeonLanes`] value:
//! it can only be made from a [`Neon`] token, which proves the CPU has NEON. The methods
//! are `#[inline(always)]` and inline into the `#[target_feature]` entry points of
//! [`super::neon`].

use core::arch::aarch64::*;

use super::neon::Neon;
use crate::kernels::simd::Lanes;

/// The NEON lanes; holding one proves NEON is available.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NeonLanes {
    _proof: Neon,
}

impl NeonLanes {
    /// The lanes of a token.
    #[inline(always)]
    pub(super) fn new(token: Neon) -> Self {
        NeonLanes { _proof: token }
    }
}

/// 8 × f32 as two registers.
#[derive(Clone, Copy)]
pub(crate) struct F8(float32x4_t, float32x4_t);

/// 8 × u32 as two registers.
#[derive(Clone, Copy)]
pub(crate) struct U8(uint32x4_t, uint32x4_t);

/// Runs one expression of intrinsics; the caller is a [`NeonLanes`] method.
macro_rules! neon {
    ($e:expr) => {
        // SAFETY: `self` is a `NeonLanes`, made only from a `Neon` token, which proves the
        // CPU supports NEON (all these intrinsics need). The pointer arguments, where any,
        // are derived from references to exactly as many elements as the intrinsic reads
        // or writes, with the element type's alignment.
        unsafe { $e }
    };
}

/// Applies a two-register intrinsic to both halves.
macro_rules! both {
    ($ty:ident, $f:ident($($a:ident),*)) => {
        neon!($ty($f($($a.0),*), $f($($a.1),*)))
    };
}

impl NeonLanes {
    /// The lane bits `[1, 2, 4, 8]`.
    #[inline(always)]
    fn lane_bits4(self) -> uint32x4_t {
        let bits: [u32; 4] = [1, 2, 4, 8];
        neon!(vld1q_u32(bits.as_ptr()))
    }
}

impl Lanes for NeonLanes {
    type F = F8;
    type U = U8;
    type B = uint8x16x2_t;

    #[inline(always)]
    fn splat_f(self, v: f32) -> F8 {
        neon!(F8(vdupq_n_f32(v), vdupq_n_f32(v)))
    }
    #[inline(always)]
    fn splat_u(self, v: u32) -> U8 {
        neon!(U8(vdupq_n_u32(v), vdupq_n_u32(v)))
    }
    #[inline(always)]
    fn load_f(self, v: &[f32; 8]) -> F8 {
        neon!(F8(vld1q_f32(v.as_ptr()), vld1q_f32(v[4..].as_ptr())))
    }
    #[inline(always)]
    fn load_u(self, v: &[u32; 8]) -> U8 {
        neon!(U8(vld1q_u32(v.as_ptr()), vld1q_u32(v[4..].as_ptr())))
    }
    #[inline(always)]
    fn store_f(self, v: F8, out: &mut [f32; 8]) {
        let (lo, hi) = out.split_at_mut(4);
        neon!({
            vst1q_f32(lo.as_mut_ptr(), v.0);
            vst1q_f32(hi.as_mut_ptr(), v.1);
        })
    }
    #[inline(always)]
    fn to_u32s(self, v: U8) -> [u32; 8] {
        let mut l = [0u32; 8];
        let (lo, hi) = l.split_at_mut(4);
        neon!({
            vst1q_u32(lo.as_mut_ptr(), v.0);
            vst1q_u32(hi.as_mut_ptr(), v.1);
        });
        l
    }
    #[inline(always)]
    fn to_f32s(self, v: F8) -> [f32; 8] {
        let mut l = [0f32; 8];
        self.store_f(v, &mut l);
        l
    }
    #[inline(always)]
    fn bits(self, v: F8) -> U8 {
        both!(U8, vreinterpretq_u32_f32(v))
    }
    #[inline(always)]
    fn float_of_bits(self, v: U8) -> F8 {
        both!(F8, vreinterpretq_f32_u32(v))
    }

    #[inline(always)]
    fn and(self, a: U8, b: U8) -> U8 {
        both!(U8, vandq_u32(a, b))
    }
    #[inline(always)]
    fn or(self, a: U8, b: U8) -> U8 {
        both!(U8, vorrq_u32(a, b))
    }
    #[inline(always)]
    fn andnot(self, a: U8, b: U8) -> U8 {
        both!(U8, vbicq_u32(b, a))
    }
    #[inline(always)]
    fn xor(self, a: U8, b: U8) -> U8 {
        both!(U8, veorq_u32(a, b))
    }
    #[inline(always)]
    fn eq(self, a: U8, b: U8) -> U8 {
        both!(U8, vceqq_u32(a, b))
    }
    #[inline(always)]
    fn gt_i(self, a: U8, b: U8) -> U8 {
        neon!(U8(
            vcgtq_s32(vreinterpretq_s32_u32(a.0), vreinterpretq_s32_u32(b.0)),
            vcgtq_s32(vreinterpretq_s32_u32(a.1), vreinterpretq_s32_u32(b.1)),
        ))
    }
    #[inline(always)]
    fn max_u(self, a: U8, b: U8) -> U8 {
        both!(U8, vmaxq_u32(a, b))
    }
    #[inline(always)]
    fn max_i(self, a: U8, b: U8) -> U8 {
        neon!(U8(
            vreinterpretq_u32_s32(vmaxq_s32(
                vreinterpretq_s32_u32(a.0),
                vreinterpretq_s32_u32(b.0)
            )),
            vreinterpretq_u32_s32(vmaxq_s32(
                vreinterpretq_s32_u32(a.1),
                vreinterpretq_s32_u32(b.1)
            )),
        ))
    }
    #[inline(always)]
    fn min_i(self, a: U8, b: U8) -> U8 {
        neon!(U8(
            vreinterpretq_u32_s32(vminq_s32(
                vreinterpretq_s32_u32(a.0),
                vreinterpretq_s32_u32(b.0)
            )),
            vreinterpretq_u32_s32(vminq_s32(
                vreinterpretq_s32_u32(a.1),
                vreinterpretq_s32_u32(b.1)
            )),
        ))
    }
    #[inline(always)]
    fn add_i(self, a: U8, b: U8) -> U8 {
        both!(U8, vaddq_u32(a, b))
    }
    #[inline(always)]
    fn sub_i(self, a: U8, b: U8) -> U8 {
        both!(U8, vsubq_u32(a, b))
    }
    #[inline(always)]
    fn shr(self, a: U8, n: u32) -> U8 {
        // A negative lane shift shifts right; by 32 it gives 0.
        neon!({
            let sh = vdupq_n_s32(-(n.min(32) as i32));
            U8(vshlq_u32(a.0, sh), vshlq_u32(a.1, sh))
        })
    }
    #[inline(always)]
    fn shr_lanes(self, a: U8, n: U8) -> U8 {
        neon!(U8(
            vshlq_u32(a.0, vnegq_s32(vreinterpretq_s32_u32(n.0))),
            vshlq_u32(a.1, vnegq_s32(vreinterpretq_s32_u32(n.1))),
        ))
    }
    #[inline(always)]
    fn movemask(self, m: U8) -> u32 {
        let b = self.lane_bits4();
        neon!(vaddvq_u32(vandq_u32(m.0, b)) | (vaddvq_u32(vandq_u32(m.1, b)) << 4))
    }
    #[inline(always)]
    fn mask_from_bits(self, bits: u32) -> U8 {
        let b = self.lane_bits4();
        neon!(U8(
            vceqq_u32(vandq_u32(vdupq_n_u32(bits), b), b),
            vceqq_u32(vandq_u32(vdupq_n_u32(bits >> 4), b), b),
        ))
    }
    #[inline(always)]
    fn select_u(self, m: U8, a: U8, b: U8) -> U8 {
        neon!(U8(vbslq_u32(m.0, a.0, b.0), vbslq_u32(m.1, a.1, b.1)))
    }
    #[inline(always)]
    fn select_f(self, m: U8, a: F8, b: F8) -> F8 {
        neon!(F8(vbslq_f32(m.0, a.0, b.0), vbslq_f32(m.1, a.1, b.1)))
    }
    #[inline(always)]
    fn hmax_u(self, v: U8) -> u32 {
        neon!(vmaxvq_u32(vmaxq_u32(v.0, v.1)))
    }
    #[inline(always)]
    fn hsum_i(self, v: U8) -> i32 {
        neon!(vaddvq_u32(vaddq_u32(v.0, v.1))) as i32
    }

    #[inline(always)]
    fn add_f(self, a: F8, b: F8) -> F8 {
        both!(F8, vaddq_f32(a, b))
    }
    #[inline(always)]
    fn sub_f(self, a: F8, b: F8) -> F8 {
        both!(F8, vsubq_f32(a, b))
    }
    #[inline(always)]
    fn mul_f(self, a: F8, b: F8) -> F8 {
        both!(F8, vmulq_f32(a, b))
    }
    #[inline(always)]
    fn div_f(self, a: F8, b: F8) -> F8 {
        both!(F8, vdivq_f32(a, b))
    }
    #[inline(always)]
    fn mul_add(self, a: F8, b: F8, c: F8) -> F8 {
        neon!(F8(vfmaq_f32(c.0, a.0, b.0), vfmaq_f32(c.1, a.1, b.1)))
    }
    #[inline(always)]
    fn mul_sub(self, a: F8, b: F8, c: F8) -> F8 {
        // `−c + a·b`, fused (negation is exact).
        neon!(F8(
            vfmaq_f32(vnegq_f32(c.0), a.0, b.0),
            vfmaq_f32(vnegq_f32(c.1), a.1, b.1),
        ))
    }
    #[inline(always)]
    fn min_f(self, a: F8, b: F8) -> F8 {
        both!(F8, vminq_f32(a, b))
    }
    #[inline(always)]
    fn max_f(self, a: F8, b: F8) -> F8 {
        both!(F8, vmaxq_f32(a, b))
    }
    /// `vrndnq_f32`: round to nearest, ties to even, like the oracle's magic-number trick.
    #[inline(always)]
    fn round_even(self, v: F8) -> F8 {
        both!(F8, vrndnq_f32(v))
    }
    #[inline(always)]
    fn float_to_int(self, v: F8) -> U8 {
        neon!(U8(
            vreinterpretq_u32_s32(vcvtq_s32_f32(v.0)),
            vreinterpretq_u32_s32(vcvtq_s32_f32(v.1)),
        ))
    }
    #[inline(always)]
    fn round_to_int(self, v: F8) -> U8 {
        neon!(U8(
            vreinterpretq_u32_s32(vcvtnq_s32_f32(v.0)),
            vreinterpretq_u32_s32(vcvtnq_s32_f32(v.1)),
        ))
    }
    #[inline(always)]
    fn int_to_float(self, v: U8) -> F8 {
        neon!(F8(
            vcvtq_f32_s32(vreinterpretq_s32_u32(v.0)),
            vcvtq_f32_s32(vreinterpretq_s32_u32(v.1)),
        ))
    }
    #[inline(always)]
    fn hmax_f(self, v: F8) -> f32 {
        neon!(vmaxvq_f32(vmaxq_f32(v.0, v.1)))
    }
    #[inline(always)]
    fn hmin_f(self, v: F8) -> f32 {
        neon!(vminvq_f32(vminq_f32(v.0, v.1)))
    }
    #[inline(always)]
    fn hsum_f(self, v: F8) -> f32 {
        neon!(vaddvq_f32(vaddq_f32(v.0, v.1)))
    }

    #[inline(always)]
    fn widen_bytes(self, b: [u8; 8]) -> U8 {
        neon!({
            let h = vmovl_u8(vcreate_u8(u64::from_le_bytes(b)));
            U8(vmovl_u16(vget_low_u16(h)), vmovl_u16(vget_high_u16(h)))
        })
    }
    #[inline(always)]
    fn widen_u16s(self, b: &[u8; 16]) -> U8 {
        let (lo, hi) = b.split_at(8);
        let half = |h: &[u8]| u64::from_le_bytes(h.try_into().expect("8 bytes"));
        neon!(U8(
            vmovl_u16(vcreate_u16(half(lo))),
            vmovl_u16(vcreate_u16(half(hi)))
        ))
    }
    #[inline(always)]
    fn narrow_bytes(self, v: U8) -> [u8; 8] {
        let mut out = [0u8; 8];
        neon!({
            let b = vmovn_u16(vcombine_u16(vmovn_u32(v.0), vmovn_u32(v.1)));
            vst1_u8(out.as_mut_ptr(), b);
        });
        out
    }
    #[inline(always)]
    fn pack_nibbles(self, staged: &[u8; 32], out: &mut [u8; 16]) {
        neon!({
            let v = vld2q_u8(staged.as_ptr()); // even bytes, odd bytes
            vst1q_u8(out.as_mut_ptr(), vorrq_u8(v.0, vshlq_n_u8::<4>(v.1)));
        })
    }
    /// `vrev64q` for `h` 1, `vextq` for 2, the two registers swapped for 4.
    #[inline(always)]
    fn swap_lanes(self, v: F8, h: usize) -> F8 {
        match h {
            1 => both!(F8, vrev64q_f32(v)),
            2 => neon!(F8(vextq_f32::<2>(v.0, v.0), vextq_f32::<2>(v.1, v.1))),
            _ => F8(v.1, v.0),
        }
    }
    /// `vqtbl1q_u8` on the low byte of each lane (the others index entry 0, masked off).
    /// `tbl` over the table's 64 bytes: lane `j`'s bytes are `4·idx_j + 0..4`.
    #[inline(always)]
    fn lookup16_u(self, table: [U8; 2], idx: U8) -> U8 {
        neon!({
            let t = uint8x16x4_t(
                vreinterpretq_u8_u32(table[0].0),
                vreinterpretq_u8_u32(table[0].1),
                vreinterpretq_u8_u32(table[1].0),
                vreinterpretq_u8_u32(table[1].1),
            );
            let (four, offsets) = (vdupq_n_u32(0x0404_0404), vdupq_n_u32(0x0302_0100));
            let lo = vreinterpretq_u8_u32(vmlaq_u32(offsets, idx.0, four));
            let hi = vreinterpretq_u8_u32(vmlaq_u32(offsets, idx.1, four));
            U8(
                vreinterpretq_u32_u8(vqtbl4q_u8(t, lo)),
                vreinterpretq_u32_u8(vqtbl4q_u8(t, hi)),
            )
        })
    }
    #[inline(always)]
    fn lookup16(self, table: &[u8; 16], idx: U8) -> U8 {
        neon!({
            let t = vld1q_u8(table.as_ptr());
            let low = vdupq_n_u32(0xFF);
            let lo = vqtbl1q_u8(t, vreinterpretq_u8_u32(idx.0));
            let hi = vqtbl1q_u8(t, vreinterpretq_u8_u32(idx.1));
            U8(
                vandq_u32(vreinterpretq_u32_u8(lo), low),
                vandq_u32(vreinterpretq_u32_u8(hi), low),
            )
        })
    }
    #[inline(always)]
    fn load_b(self, v: &[u8; 32]) -> uint8x16x2_t {
        neon!(uint8x16x2_t(
            vld1q_u8(v.as_ptr()),
            vld1q_u8(v[16..].as_ptr())
        ))
    }
    #[inline(always)]
    fn load_b2(self, lo: &[u8; 16], hi: &[u8; 16]) -> uint8x16x2_t {
        neon!(uint8x16x2_t(vld1q_u8(lo.as_ptr()), vld1q_u8(hi.as_ptr())))
    }
    #[inline(always)]
    fn load_q(self, q: &[i8; 32]) -> uint8x16x2_t {
        neon!(uint8x16x2_t(
            vreinterpretq_u8_s8(vld1q_s8(q.as_ptr())),
            vreinterpretq_u8_s8(vld1q_s8(q[16..].as_ptr())),
        ))
    }
    #[inline(always)]
    fn nibbles32(self, codes: &[u8; 16]) -> uint8x16x2_t {
        neon!({
            let v = vld1q_u8(codes.as_ptr());
            let lo = vandq_u8(v, vdupq_n_u8(0x0F));
            let hi = vshrq_n_u8::<4>(v);
            vzipq_u8(lo, hi)
        })
    }
    #[inline(always)]
    fn nibbles64(self, codes: &[u8; 32]) -> (uint8x16x2_t, uint8x16x2_t) {
        neon!({
            let (a, b) = (vld1q_u8(codes.as_ptr()), vld1q_u8(codes[16..].as_ptr()));
            let low = vdupq_n_u8(0x0F);
            (
                uint8x16x2_t(vandq_u8(a, low), vandq_u8(b, low)),
                uint8x16x2_t(vshrq_n_u8::<4>(a), vshrq_n_u8::<4>(b)),
            )
        })
    }
    /// Two de-interleaving loads (`ld2`).
    #[inline(always)]
    fn deinterleave_q(self, q: &[i8; 64]) -> (uint8x16x2_t, uint8x16x2_t) {
        neon!({
            let a = vld2q_s8(q.as_ptr());
            let b = vld2q_s8(q[32..].as_ptr());
            (
                uint8x16x2_t(vreinterpretq_u8_s8(a.0), vreinterpretq_u8_s8(b.0)),
                uint8x16x2_t(vreinterpretq_u8_s8(a.1), vreinterpretq_u8_s8(b.1)),
            )
        })
    }
    #[inline(always)]
    fn shuffle_b(self, v: uint8x16x2_t, idx: uint8x16x2_t) -> uint8x16x2_t {
        neon!(uint8x16x2_t(vqtbl1q_u8(v.0, idx.0), vqtbl1q_u8(v.1, idx.1)))
    }
    #[inline(always)]
    fn byte_lanes(self, v: uint8x16x2_t) -> [U8; 4] {
        neon!({
            let (a, b) = (vreinterpretq_u32_u8(v.0), vreinterpretq_u32_u8(v.1));
            let byte = vdupq_n_u32(0xFF);
            [
                U8(vandq_u32(a, byte), vandq_u32(b, byte)),
                U8(
                    vandq_u32(vshrq_n_u32::<8>(a), byte),
                    vandq_u32(vshrq_n_u32::<8>(b), byte),
                ),
                U8(
                    vandq_u32(vshrq_n_u32::<16>(a), byte),
                    vandq_u32(vshrq_n_u32::<16>(b), byte),
                ),
                U8(vshrq_n_u32::<24>(a), vshrq_n_u32::<24>(b)),
            ]
        })
    }
    #[inline(always)]
    fn nibble_planes(self, codes: &[u8; 16]) -> uint8x16x2_t {
        neon!({
            let v = vld1q_u8(codes.as_ptr());
            uint8x16x2_t(vandq_u8(v, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(v))
        })
    }
    #[inline(always)]
    fn mul_lo_u16(self, a: uint8x16x2_t, m: uint8x16x2_t) -> uint8x16x2_t {
        let mul = |a, m| {
            neon!(vreinterpretq_u8_u16(vmulq_u16(
                vreinterpretq_u16_u8(a),
                vreinterpretq_u16_u8(m)
            )))
        };
        uint8x16x2_t(mul(a.0, m.0), mul(a.1, m.1))
    }
    #[inline(always)]
    fn shr_u16(self, a: uint8x16x2_t, n: u32) -> uint8x16x2_t {
        // `vshlq` by a negative count shifts right.
        self.shl_by(a, -(n as i16))
    }
    #[inline(always)]
    fn shl_u16(self, a: uint8x16x2_t, n: u32) -> uint8x16x2_t {
        self.shl_by(a, n as i16)
    }
    #[inline(always)]
    fn or_b(self, a: uint8x16x2_t, b: uint8x16x2_t) -> uint8x16x2_t {
        neon!(uint8x16x2_t(vorrq_u8(a.0, b.0), vorrq_u8(a.1, b.1)))
    }
    #[inline(always)]
    fn bit_bytes(self, bits: u32, value: u8) -> uint8x16x2_t {
        // Byte `j` gets the byte of `bits` holding bit `j`, then tests that bit.
        const SPREAD: [[u8; 16]; 2] = [
            [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1],
            [2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3],
        ];
        neon!({
            let v = vreinterpretq_u8_u32(vdupq_n_u32(bits));
            let bit = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
            let value = vdupq_n_u8(value);
            let half = |spread: &[u8; 16]| {
                vandq_u8(
                    vtstq_u8(vqtbl1q_u8(v, vld1q_u8(spread.as_ptr())), bit),
                    value,
                )
            };
            uint8x16x2_t(half(&SPREAD[0]), half(&SPREAD[1]))
        })
    }
    #[inline(always)]
    fn dot_bytes_i8(self, c: uint8x16x2_t, q: uint8x16x2_t, acc: U8) -> U8 {
        neon!({
            let (c0, c1) = (vreinterpretq_s8_u8(c.0), vreinterpretq_s8_u8(c.1));
            let (q0, q1) = (vreinterpretq_s8_u8(q.0), vreinterpretq_s8_u8(q.1));
            // |c·q + c·q| ≤ 2·127·127 fits i16; pairs of i16 add into the i32 lanes.
            let s0 = vmlal_high_s8(vmull_s8(vget_low_s8(c0), vget_low_s8(q0)), c0, q0);
            let s1 = vmlal_high_s8(vmull_s8(vget_low_s8(c1), vget_low_s8(q1)), c1, q1);
            U8(
                vreinterpretq_u32_s32(vpadalq_s16(vreinterpretq_s32_u32(acc.0), s0)),
                vreinterpretq_u32_s32(vpadalq_s16(vreinterpretq_s32_u32(acc.1), s1)),
            )
        })
    }
    /// Two [`hsum4_i`](Lanes::hsum4_i), one per half.
    #[inline(always)]
    fn hsum8_i(self, v: [U8; 8]) -> U8 {
        let [a, b, c, d, e, f, g, h] = v;
        U8(self.hsum4_i([a, b, c, d]).0, self.hsum4_i([e, f, g, h]).0)
    }
    /// Pairwise adds (`vpaddq`) down to one register.
    #[inline(always)]
    fn hsum4_i(self, v: [U8; 4]) -> U8 {
        neon!({
            let [a, b, c, d] = v.map(|v| vaddq_u32(v.0, v.1));
            U8(
                vpaddq_u32(vpaddq_u32(a, b), vpaddq_u32(c, d)),
                vdupq_n_u32(0),
            )
        })
    }
}

impl NeonLanes {
    /// The u16 lanes shifted left by `n` (right for negative `n`).
    #[inline(always)]
    fn shl_by(self, a: uint8x16x2_t, n: i16) -> uint8x16x2_t {
        neon!({
            let n = vdupq_n_s16(n);
            let sh = |a| vreinterpretq_u8_u16(vshlq_u16(vreinterpretq_u16_u8(a), n));
            uint8x16x2_t(sh(a.0), sh(a.1))
        })
    }
}
