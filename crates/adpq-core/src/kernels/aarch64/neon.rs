//! The NEON backend (aarch64, where NEON is baseline).
//!
//! Same structure and the same exactness contract as the AVX2 backend: integer
//! histograms and counts; the scalar oracle's f32 operations per lane for codes
//! (`vrndnq_f32` rounds half to even, like the magic-number trick), so packed bytes are
//! identical; dequantization bit-identical; dot products within
//! [`dot_tolerance`](crate::kernels::dot_tolerance). An 8-weight "chunk" is a pair of
//! 4-lane registers, so masks are one byte per chunk as in the AVX2 backend.
//!
//! NEON is baseline on `aarch64-unknown-linux-gnu`, but rustc still requires a
//! `#[target_feature(enable = "neon")]` context to call the intrinsics safely ("the neon
//! target feature being enabled in the build configuration does not remove the
//! requirement"). So every function here that runs an intrinsic carries that attribute,
//! helpers included (calls between them are safe), and the only `unsafe` calls into them
//! are the [`Neon`] methods. The remaining `unsafe` blocks are raw loads and stores.

use core::arch::aarch64::*;

use half::slice::HalfFloatSliceExt;

use crate::error::{Error, Result};
use crate::format::{encode_record, PackedTensor};
use crate::kernels::common::{
    classify_in_order, for_f32_blocks, histogram_with, rejected_weight, TieMode,
};
use crate::kernels::scalar::{check_out_rows, check_rows, code_at, grid_of, put_code};
use crate::kernels::{CpuKernels, RowJob, RowsDone, RowsOut};
use crate::params::{Grid, MAX_GROUP_SIZE};
use crate::quant::GridScale;
use crate::select::{is_valid_abs_bits, BadValue, HistogramPass, HIST_BINS};
use crate::weights::{Element, Weights};

/// The NEON backend. Holding a value proves the CPU has NEON (baseline on aarch64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neon {
    _proof: (),
}

impl Neon {
    /// Whether NEON is available: the target's baseline (`aarch64-*` targets other than
    /// the soft-float bare-metal ones).
    #[inline]
    pub fn is_available() -> bool {
        cfg!(target_feature = "neon")
    }

    /// The backend, when available.
    #[inline]
    pub fn try_new() -> Option<Self> {
        if Self::is_available() {
            Some(Neon { _proof: () })
        } else {
            None
        }
    }

    /// The backend without checking.
    ///
    /// # Safety
    /// The CPU running any method of the returned value must support NEON.
    #[inline]
    pub unsafe fn new_unchecked() -> Self {
        Neon { _proof: () }
    }
}

/// The lane bits `[1, 2, 4, 8]`.
#[target_feature(enable = "neon")]
#[inline]
fn lane_bits4() -> uint32x4_t {
    let bits: [u32; 4] = [1, 2, 4, 8];
    // SAFETY: `vld1q_u32` reads 4 u32 (16 bytes, u32 alignment) from `bits`, which is
    // exactly that.
    unsafe { vld1q_u32(bits.as_ptr()) }
}

/// Mask bits (lane `j` → bit `j`) of a 4-lane all-ones/all-zeros mask.
#[target_feature(enable = "neon")]
#[inline]
fn movemask4(m: uint32x4_t) -> u32 {
    vaddvq_u32(vandq_u32(m, lane_bits4()))
}

/// The 4-lane mask of bits `m & 0xF`.
#[target_feature(enable = "neon")]
#[inline]
fn mask_from_bits4(m: u32) -> uint32x4_t {
    let b = lane_bits4();
    vceqq_u32(vandq_u32(vdupq_n_u32(m), b), b)
}

#[target_feature(enable = "neon")]
fn histogram_f32(
    s: &[f32],
    pass: &HistogramPass,
    bins: &mut [u32; HIST_BINS],
    sub: &mut [[u32; HIST_BINS]; 4],
) -> u32 {
    let absmask = vdupq_n_u32(0x7FFF_FFFF);
    let mask = vdupq_n_u32(pass.mask & (HIST_BINS as u32 - 1));
    let sh = vdupq_n_s32(-(pass.shift.min(31) as i32));
    let mut maxv = vdupq_n_u32(0);
    let mut idx = [0u32; 4];
    let chunks = s.chunks_exact(4);
    let tail = chunks.remainder();
    let dense = pass.prefix_shift >= 31 && pass.prefix == 0;
    if dense {
        for c in chunks {
            // SAFETY: `c` holds exactly 4 f32.
            let v = unsafe { vld1q_u32(c.as_ptr().cast()) };
            let a = vandq_u32(v, absmask);
            maxv = vmaxq_u32(maxv, a);
            let b = vandq_u32(vshlq_u32(a, sh), mask);
            // SAFETY: `idx` is 4 u32.
            unsafe { vst1q_u32(idx.as_mut_ptr(), b) };
            for (j, &k) in idx.iter().enumerate() {
                sub[j][k as usize & (HIST_BINS - 1)] += 1;
            }
        }
    } else {
        let prefix = vdupq_n_u32(pass.prefix);
        let psh = vdupq_n_s32(-(pass.prefix_shift.min(32) as i32));
        for c in chunks {
            // SAFETY: `c` holds exactly 4 f32.
            let v = unsafe { vld1q_u32(c.as_ptr().cast()) };
            let a = vandq_u32(v, absmask);
            maxv = vmaxq_u32(maxv, a);
            let hit = vceqq_u32(vshlq_u32(a, psh), prefix);
            if vmaxvq_u32(hit) != 0 {
                let mut m = movemask4(hit);
                let b = vandq_u32(vshlq_u32(a, sh), mask);
                // SAFETY: `idx` is 4 u32.
                unsafe { vst1q_u32(idx.as_mut_ptr(), b) };
                while m != 0 {
                    let j = m.trailing_zeros() as usize;
                    bins[idx[j] as usize & (HIST_BINS - 1)] += 1;
                    m &= m - 1;
                }
            }
        }
    }
    let mut max = vmaxvq_u32(maxv);
    for &v in tail {
        let b = v.abs_bits();
        max = max.max(b);
        if let Some(bin) = pass.bin(b) {
            bins[bin & (HIST_BINS - 1)] += 1;
        }
    }
    max
}

/// Counts of `bits(|w|) < t` and `bits(|w|) == t` (unsigned compares: exact for any `t`).
#[target_feature(enable = "neon")]
fn count_f32(s: &[f32], t: u32) -> (u64, u64) {
    let absmask = vdupq_n_u32(0x7FFF_FFFF);
    let tv = vdupq_n_u32(t);
    let one = vdupq_n_u32(1);
    let (mut lt, mut eq) = (0u64, 0u64);
    let mut chunks = s.chunks_exact(4);
    // Lane counters, flushed before they could overflow.
    loop {
        let (mut l, mut e) = (vdupq_n_u32(0), vdupq_n_u32(0));
        let mut any = false;
        for c in (&mut chunks).take(1 << 20) {
            any = true;
            // SAFETY: `c` holds exactly 4 f32.
            let a = vandq_u32(unsafe { vld1q_u32(c.as_ptr().cast()) }, absmask);
            l = vaddq_u32(l, vandq_u32(vcltq_u32(a, tv), one));
            e = vaddq_u32(e, vandq_u32(vceqq_u32(a, tv), one));
        }
        lt += u64::from(vaddvq_u32(l));
        eq += u64::from(vaddvq_u32(e));
        if !any {
            break;
        }
    }
    for &v in chunks.remainder() {
        let b = v.abs_bits();
        lt += u64::from(b < t);
        eq += u64::from(b == t);
    }
    (lt, eq)
}

/// Per-group extents, two 4-lane registers per quantity (lanes 0–3 and 4–7 of a chunk).
struct Stats {
    in_max: float32x4_t,
    out_max: float32x4_t,
    in_lo: float32x4_t,
    in_hi: float32x4_t,
    out_lo: float32x4_t,
    out_hi: float32x4_t,
    n_out: u32,
}

impl Stats {
    #[target_feature(enable = "neon")]
    #[inline]
    fn new() -> Stats {
        let z = vdupq_n_f32(0.0);
        Stats {
            in_max: z,
            out_max: z,
            in_lo: z,
            in_hi: z,
            out_lo: z,
            out_hi: z,
            n_out: 0,
        }
    }

    /// Adds 4 weights `v` with outlier lanes `o`; masked-off lanes contribute 0.
    #[target_feature(enable = "neon")]
    #[inline]
    fn add(&mut self, v: float32x4_t, o: uint32x4_t, grid: Grid) {
        let vb = vreinterpretq_u32_f32(v);
        match grid {
            Grid::Symmetric => {
                let a = vandq_u32(vb, vdupq_n_u32(0x7FFF_FFFF));
                let ai = vreinterpretq_f32_u32(vbicq_u32(a, o));
                let ao = vreinterpretq_f32_u32(vandq_u32(a, o));
                self.in_max = vmaxq_f32(self.in_max, ai);
                self.out_max = vmaxq_f32(self.out_max, ao);
            }
            Grid::Asymmetric => {
                let vi = vreinterpretq_f32_u32(vbicq_u32(vb, o));
                let vo = vreinterpretq_f32_u32(vandq_u32(vb, o));
                self.in_lo = vminq_f32(self.in_lo, vi);
                self.in_hi = vmaxq_f32(self.in_hi, vi);
                self.out_lo = vminq_f32(self.out_lo, vo);
                self.out_hi = vmaxq_f32(self.out_hi, vo);
            }
        }
    }
}

/// Codes of 4 weights as u32 lanes in `0..=code_max` (the oracle's operations).
#[target_feature(enable = "neon")]
#[inline]
fn encode4(
    v: float32x4_t,
    o: uint32x4_t,
    gin: &GridScale,
    gout: &GridScale,
    code_max: i32,
) -> uint32x4_t {
    let inv = vbslq_f32(o, vdupq_n_f32(gout.inv), vdupq_n_f32(gin.inv));
    let off = vbslq_s32(o, vdupq_n_s32(gout.offset), vdupq_n_s32(gin.offset));
    let q = vmulq_f32(v, inv);
    let q = vminq_f32(vmaxq_f32(q, vdupq_n_f32(-512.0)), vdupq_n_f32(512.0));
    let q = vrndnq_f32(q);
    let qi = vaddq_s32(vcvtq_s32_f32(q), off);
    let qi = vminq_s32(vmaxq_s32(qi, vdupq_n_s32(0)), vdupq_n_s32(code_max));
    vreinterpretq_u32_s32(qi)
}

#[target_feature(enable = "neon")]
fn pack_codes(row_codes: &mut [u8], base: usize, staged: &[u8], bits: u8) {
    let n = staged.len();
    if bits == 8 {
        row_codes[base..base + n].copy_from_slice(staged);
    } else if bits == 4 && base.is_multiple_of(2) {
        let dst = &mut row_codes[base / 2..(base + n).div_ceil(2)];
        let mut src = staged.chunks_exact(32);
        let mut out = dst.chunks_exact_mut(16);
        for (s, d) in (&mut src).zip(&mut out) {
            // SAFETY: `s` is 32 bytes and `d` 16 bytes.
            unsafe {
                let v = vld2q_u8(s.as_ptr()); // even bytes, odd bytes
                let packed = vorrq_u8(v.0, vshlq_n_u8::<4>(v.1));
                vst1q_u8(d.as_mut_ptr(), packed);
            }
        }
        let done = n - src.remainder().len();
        for (i, pair) in src.remainder().chunks(2).enumerate() {
            let hi = pair.get(1).copied().unwrap_or(0);
            dst[done / 2 + i] = pair[0] | (hi << 4);
        }
    } else {
        for (i, &c) in staged.iter().enumerate() {
            put_code(row_codes, base + i, bits, c);
        }
    }
}

#[target_feature(enable = "neon")]
fn quantize_rows_neon(w: Weights<'_>, job: &RowJob, out: &mut RowsOut<'_>) -> Result<RowsDone> {
    let rows = check_rows(w.len(), job, out)?;
    let fp = job.params;
    let cols = job.cols;
    let g = usize::from(fp.group_size);
    let rec_bytes = fp.record_bytes();
    let row_rec_bytes = cols.div_ceil(g) * rec_bytes;
    let row_code_bytes = (cols * usize::from(fp.bits)).div_ceil(8);
    let code_max = fp.code_max();
    let mut rule = job.rule;
    let mut done = RowsDone::default();
    const MAXG: usize = MAX_GROUP_SIZE as usize;
    let mut conv = [0f32; MAXG + 8];
    let mut staged = [0u8; MAXG + 8];
    let mut masks = [0u8; MAXG / 8 + 1];
    for r in 0..rows {
        let recs = &mut out.records[r * row_rec_bytes..(r + 1) * row_rec_bytes];
        let codes = &mut out.codes[r * row_code_bytes..(r + 1) * row_code_bytes];
        codes.fill(0);
        let mut row_count = 0u32;
        for gi in 0..cols.div_ceil(g) {
            let base = gi * g;
            let n = g.min(cols - base);
            let start = r * cols + base;
            let x: &[f32] = match w {
                Weights::F32(s) => &s[start..start + n],
                Weights::F16(s) => {
                    s[start..start + n].convert_to_f32_slice(&mut conv[..n]);
                    &conv[..n]
                }
                Weights::Bf16(s) => {
                    s[start..start + n].convert_to_f32_slice(&mut conv[..n]);
                    &conv[..n]
                }
            };
            let full = n / 8;
            let rem = n % 8;
            let mut tail = [0f32; 8];
            tail[..rem].copy_from_slice(&x[full * 8..]);
            let tail_valid = (1u32 << rem) - 1;
            // Chunk `c` as two 4-lane registers, with its valid-lane bits.
            let chunk = |c: usize| -> (float32x4_t, float32x4_t, u32) {
                let (p, valid) = if c < full {
                    (x[c * 8..c * 8 + 8].as_ptr(), 0xFF)
                } else {
                    (tail.as_ptr(), tail_valid)
                };
                // SAFETY: `p` points at 8 readable f32 (a full chunk of `x`, or `tail`).
                unsafe { (vld1q_f32(p), vld1q_f32(p.add(4)), valid) }
            };
            let n_chunks = full + usize::from(rem != 0);

            let mode = TieMode::of(&rule);
            let tv = vdupq_n_u32(rule.threshold_bits);
            let take_eq = vdupq_n_u32(if mode == TieMode::All { u32::MAX } else { 0 });
            let absmask = vdupq_n_u32(0x7FFF_FFFF);
            let mut maxbits = vdupq_n_u32(0);
            let mut eq_count = 0u32;
            let (mut st0, mut st1) = (Stats::new(), Stats::new());
            for (c, mask) in masks[..n_chunks].iter_mut().enumerate() {
                let (v0, v1, valid) = chunk(c);
                let mut m = 0u32;
                for (h, v, st) in [(0u32, v0, &mut st0), (4, v1, &mut st1)] {
                    let a = vandq_u32(vreinterpretq_u32_f32(v), absmask);
                    maxbits = vmaxq_u32(maxbits, a);
                    let vm = mask_from_bits4(valid >> h);
                    let gt = vcgtq_u32(a, tv);
                    let eq = vandq_u32(vceqq_u32(a, tv), vm);
                    let o = vandq_u32(vorrq_u32(gt, vandq_u32(eq, take_eq)), vm);
                    eq_count += movemask4(eq).count_ones();
                    let mo = movemask4(o);
                    st.n_out += mo.count_ones();
                    st.add(v, o, fp.grid);
                    m |= mo << h;
                }
                *mask = m as u8;
            }
            if !is_valid_abs_bits(vmaxvq_u32(maxbits)) {
                let first = (job.first_row + r as u64) * cols as u64 + base as u64;
                return Err(rejected_weight(x, first, cols));
            }
            match mode {
                TieMode::All => done.equal_taken += u64::from(eq_count),
                TieMode::None => {}
                TieMode::Limited if eq_count > 0 => {
                    classify_in_order(x, &mut rule, &mut masks[..n_chunks], &mut done.equal_taken);
                    st0 = Stats::new();
                    st1 = Stats::new();
                    for (c, &m) in masks[..n_chunks].iter().enumerate() {
                        let (v0, v1, _) = chunk(c);
                        let m = u32::from(m);
                        st0.n_out += (m & 0xF).count_ones();
                        st1.n_out += (m >> 4).count_ones();
                        st0.add(v0, mask_from_bits4(m), fp.grid);
                        st1.add(v1, mask_from_bits4(m >> 4), fp.grid);
                    }
                }
                TieMode::Limited => {}
            }
            let n_out = (st0.n_out + st1.n_out) as usize;
            let n_in = n - n_out;
            let (gin, gout) = match fp.grid {
                Grid::Symmetric => (
                    grid_of(
                        &fp,
                        job.scale_exp,
                        vmaxvq_f32(vmaxq_f32(st0.in_max, st1.in_max)),
                        0.0,
                        0.0,
                        n_in,
                    ),
                    grid_of(
                        &fp,
                        job.scale_exp,
                        vmaxvq_f32(vmaxq_f32(st0.out_max, st1.out_max)),
                        0.0,
                        0.0,
                        n_out,
                    ),
                ),
                Grid::Asymmetric => (
                    grid_of(
                        &fp,
                        job.scale_exp,
                        0.0,
                        vminvq_f32(vminq_f32(st0.in_lo, st1.in_lo)),
                        vmaxvq_f32(vmaxq_f32(st0.in_hi, st1.in_hi)),
                        n_in,
                    ),
                    grid_of(
                        &fp,
                        job.scale_exp,
                        0.0,
                        vminvq_f32(vminq_f32(st0.out_lo, st1.out_lo)),
                        vmaxvq_f32(vmaxq_f32(st0.out_hi, st1.out_hi)),
                        n_out,
                    ),
                ),
            };

            for (c, &m) in masks[..n_chunks].iter().enumerate() {
                let (v0, v1, _) = chunk(c);
                let m = u32::from(m);
                let c0 = encode4(v0, mask_from_bits4(m), &gin, &gout, code_max);
                let c1 = encode4(v1, mask_from_bits4(m >> 4), &gin, &gout, code_max);
                let b = vmovn_u16(vcombine_u16(vmovn_u32(c0), vmovn_u32(c1)));
                let dst = &mut staged[c * 8..c * 8 + 8];
                // SAFETY: `dst` is 8 bytes.
                unsafe { vst1_u8(dst.as_mut_ptr(), b) };
                let mut mm = m;
                while mm != 0 {
                    let i = c * 8 + mm.trailing_zeros() as usize;
                    if !out.positions.push(i as u32) {
                        return Err(Error::BufferSize {
                            needed: out.positions.written() + 1,
                            actual: out.positions.written(),
                        });
                    }
                    mm &= mm - 1;
                }
            }
            pack_codes(codes, base, &staged[..n], fp.bits);
            encode_record(
                &mut recs[gi * rec_bytes..(gi + 1) * rec_bytes],
                &fp,
                &gin,
                &gout,
                n_out,
            );
            row_count += n_out as u32;
        }
        out.counts[r * 4..r * 4 + 4].copy_from_slice(&row_count.to_le_bytes());
        done.outliers += u64::from(row_count);
    }
    Ok(done)
}

/// 8 codes from code `i` (4-bit codes with `i` even, or 8-bit), as two i32x4 registers.
///
/// # Panics
/// When the 8 codes are not all inside `codes` (the slicing is bounds-checked).
#[target_feature(enable = "neon")]
#[inline]
fn load_codes8(codes: &[u8], i: usize, bits: u8) -> (int32x4_t, int32x4_t) {
    if bits == 4 {
        let b: [u8; 4] = codes[i / 2..i / 2 + 4].try_into().expect("4 bytes");
        let w = vdupq_n_u32(u32::from_le_bytes(b));
        let s0: [i32; 4] = [0, -4, -8, -12];
        let s1: [i32; 4] = [-16, -20, -24, -28];
        let m = vdupq_n_u32(0xF);
        // SAFETY: each `vld1q_s32` reads 4 i32 from a `[i32; 4]` (exactly its size and
        // alignment).
        let (s0, s1) = unsafe { (vld1q_s32(s0.as_ptr()), vld1q_s32(s1.as_ptr())) };
        (
            vreinterpretq_s32_u32(vandq_u32(vshlq_u32(w, s0), m)),
            vreinterpretq_s32_u32(vandq_u32(vshlq_u32(w, s1), m)),
        )
    } else {
        let b: [u8; 8] = codes[i..i + 8].try_into().expect("8 bytes");
        let h = vmovl_u8(vcreate_u8(u64::from_le_bytes(b)));
        (
            vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(h))),
            vreinterpretq_s32_u32(vmovl_u16(vget_high_u16(h))),
        )
    }
}

#[target_feature(enable = "neon")]
fn dequantize_row_neon(t: &PackedTensor<'_>, r: usize, out: &mut [f32]) -> Result<()> {
    let fp = t.params();
    for (group, chunk) in t.groups(r)?.zip(out.chunks_mut(usize::from(fp.group_size))) {
        let (rec, base, codes) = (group.record, group.start, group.codes);
        let fast = (fp.bits == 4 && base.is_multiple_of(2)) || fp.bits == 8;
        let done = if fast {
            let off = vdupq_n_s32(rec.inliers.offset);
            let step = vdupq_n_f32(rec.inliers.step);
            for (c, o) in chunk.chunks_exact_mut(8).enumerate() {
                let (c0, c1) = load_codes8(codes, base + c * 8, fp.bits);
                let v0 = vmulq_f32(vcvtq_f32_s32(vsubq_s32(c0, off)), step);
                let v1 = vmulq_f32(vcvtq_f32_s32(vsubq_s32(c1, off)), step);
                // SAFETY: `o` is 8 f32.
                unsafe {
                    vst1q_f32(o.as_mut_ptr(), v0);
                    vst1q_f32(o.as_mut_ptr().add(4), v1);
                }
            }
            chunk.len() / 8 * 8
        } else {
            0
        };
        for (i, o) in chunk.iter_mut().enumerate().skip(done) {
            *o = rec.inliers.decode(code_at(codes, base + i, fp.bits));
        }
        for p in group.outliers() {
            if let Some(o) = chunk.get_mut(p) {
                *o = rec.outliers.decode(code_at(codes, base + p, fp.bits));
            }
        }
    }
    Ok(())
}

#[target_feature(enable = "neon")]
fn dot_row_neon(t: &PackedTensor<'_>, r: usize, x: &[f32]) -> Result<f32> {
    if x.len() != t.cols() {
        return Err(Error::ShapeMismatch {
            expected: t.cols() as u64,
            actual: x.len() as u64,
        });
    }
    let fp = t.params();
    let mut accv = vdupq_n_f32(0.0);
    let mut acc = 0f32;
    for (group, xs) in t.groups(r)?.zip(x.chunks(usize::from(fp.group_size))) {
        let (rec, base, codes) = (group.record, group.start, group.codes);
        let fast = (fp.bits == 4 && base.is_multiple_of(2)) || fp.bits == 8;
        let mut done = 0;
        if fast {
            let off = vdupq_n_s32(rec.inliers.offset);
            let (mut d0, mut d1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
            for (c, xc) in xs.chunks_exact(8).enumerate() {
                let (c0, c1) = load_codes8(codes, base + c * 8, fp.bits);
                // SAFETY: `xc` is 8 f32.
                let (x0, x1) = unsafe { (vld1q_f32(xc.as_ptr()), vld1q_f32(xc.as_ptr().add(4))) };
                d0 = vfmaq_f32(d0, vcvtq_f32_s32(vsubq_s32(c0, off)), x0);
                d1 = vfmaq_f32(d1, vcvtq_f32_s32(vsubq_s32(c1, off)), x1);
            }
            done = xs.len() / 8 * 8;
            accv = vfmaq_f32(accv, vaddq_f32(d0, d1), vdupq_n_f32(rec.inliers.step));
        }
        let mut dense = 0f32;
        for (i, &xi) in xs.iter().enumerate().skip(done) {
            dense +=
                (i32::from(code_at(codes, base + i, fp.bits)) - rec.inliers.offset) as f32 * xi;
        }
        acc += dense * rec.inliers.step;
        for p in group.outliers() {
            if let Some(&xp) = xs.get(p) {
                let c = code_at(codes, base + p, fp.bits);
                acc += xp * (rec.outliers.decode(c) - rec.inliers.decode(c));
            }
        }
    }
    Ok(acc + vaddvq_f32(accv))
}

impl CpuKernels for Neon {
    fn name(&self) -> &'static str {
        "neon"
    }

    fn histogram(
        &self,
        w: Weights<'_>,
        pass: &HistogramPass,
        bins: &mut [u32; HIST_BINS],
    ) -> Result<u32, BadValue> {
        // The shifts must fit NEON's lane shifts too.
        let in_contract =
            (pass.mask as usize) < HIST_BINS && pass.shift < 32 && pass.prefix_shift <= 32;
        histogram_with(w, pass, bins, in_contract, |s, bins, sub| {
            // SAFETY: holding `self` proves NEON is available (the only feature enabled here).
            unsafe { histogram_f32(s, pass, bins, sub) }
        })
    }

    fn count_at_least(&self, w: Weights<'_>, threshold_bits: u32) -> u64 {
        let mut lt = 0;
        // SAFETY: holding `self` proves NEON is available (the only feature enabled here).
        for_f32_blocks(w, |s| lt += unsafe { count_f32(s, threshold_bits) }.0);
        w.len() as u64 - lt
    }

    fn count_equal(&self, w: Weights<'_>, threshold_bits: u32) -> u64 {
        let mut eq = 0;
        // SAFETY: holding `self` proves NEON is available (the only feature enabled here).
        for_f32_blocks(w, |s| eq += unsafe { count_f32(s, threshold_bits) }.1);
        eq
    }

    fn quantize_rows(
        &self,
        w: Weights<'_>,
        job: &RowJob,
        out: &mut RowsOut<'_>,
    ) -> Result<RowsDone> {
        // SAFETY: holding `self` proves NEON is available (the only feature enabled here).
        unsafe { quantize_rows_neon(w, job, out) }
    }

    fn dequantize_rows(
        &self,
        t: &PackedTensor<'_>,
        first_row: usize,
        out: &mut [f32],
    ) -> Result<()> {
        check_out_rows(t, first_row, out.len())?;
        for (i, row_out) in out.chunks_mut(t.cols()).enumerate() {
            // SAFETY: holding `self` proves NEON is available (the only feature enabled here).
            unsafe { dequantize_row_neon(t, first_row + i, row_out)? };
        }
        Ok(())
    }

    fn dot_row(&self, t: &PackedTensor<'_>, row: usize, x: &[f32]) -> Result<f32> {
        // SAFETY: holding `self` proves NEON is available (the only feature enabled here).
        unsafe { dot_row_neon(t, row, x) }
    }
}
