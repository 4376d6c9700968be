//! The AVX2 (+FMA) backend.
//!
//! Every function that runs an intrinsic is `#[target_feature(enable =
//! "avx2,fma,popcnt")]` and private to this module, helpers included: the compiler
//! then checks that each caller enables the same features (calls between them are safe)
//! and the only `unsafe` calls into them are the [`Avx2`] methods, whose value proves that
//! the CPU has all three. The remaining `unsafe` blocks are raw unaligned loads and stores,
//! each with its bounds argument.
//!
//! **Exactness.** Histograms and counts are integer work and equal the scalar results.
//! Quantization performs the scalar oracle's f32 operations lane by lane (`x · (1/Δ)`,
//! clamp to ±512, round half to even with `vroundps`, which equals the magic-number trick
//! for `|x| ≤ 2^22`, add the offset, clamp), so the packed bytes are identical.
//! Dequantization is `(code − offset) as f32 · Δ`, also identical. Only the dot products
//! sum in another order (8 lanes, FMA): see [`dot_tolerance`](crate::kernels::dot_tolerance).

use core::arch::x86_64::*;

use half::slice::HalfFloatSliceExt;

use crate::bits::get_bits;
use crate::error::{Error, Result};
use crate::format::{encode_record, GroupRecord, PackedTensor};
use crate::kernels::common::{
    classify_in_order, for_f32_blocks, histogram_with, rejected_weight, TieMode,
};
use crate::kernels::q8::{dot_row_q8_ref, Q8Activations};
use crate::kernels::scalar::{
    check_out_rows, check_rows, code_at, grid_of, put_code, scan_range_generic,
};
use crate::kernels::{CpuKernels, RowJob, RowsDone, RowsOut};
use crate::params::{Grid, MAX_GROUP_SIZE};
use crate::quant::GridScale;
use crate::select::{
    is_valid_abs_bits, BadValue, HistogramPass, RangeScan, HIST_BINS, NON_FINITE_BITS,
    OUT_OF_RANGE_BITS,
};
use crate::weights::{Element, Weights};

cpufeatures::new!(cpuid_avx2_fma, "avx2", "fma", "popcnt");

/// The AVX2 backend. Holding a value proves the CPU supports AVX2, FMA and POPCNT (each is
/// checked). BMI2 is not needed: outlier positions are unpacked with shifts, not PDEP
/// (microcoded and slow on AMD Zen1/Zen2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Avx2 {
    _proof: (),
}

impl Avx2 {
    /// Whether this CPU has AVX2, FMA and POPCNT (compile-time target features first, then
    /// CPUID, which `cpufeatures` does without `std` and caches).
    ///
    /// These three are exactly the features every `#[target_feature]` function of this
    /// module enables (`count_ones` compiles to POPCNT; nothing uses BMI1/BMI2, LZCNT or
    /// F16C), and the compile-time shortcut and the CPUID list must both name all of them:
    /// a feature enabled below but missing from either check would let a token exist on a
    /// CPU without it.
    #[inline]
    pub fn is_available() -> bool {
        #[cfg(all(
            target_feature = "avx2",
            target_feature = "fma",
            target_feature = "popcnt"
        ))]
        {
            true
        }
        #[cfg(not(all(
            target_feature = "avx2",
            target_feature = "fma",
            target_feature = "popcnt"
        )))]
        {
            cpuid_avx2_fma::get()
        }
    }

    /// The backend, when the CPU supports it.
    #[inline]
    pub fn try_new() -> Option<Self> {
        if Self::is_available() {
            Some(Avx2 { _proof: () })
        } else {
            None
        }
    }

    /// The backend without checking the CPU.
    ///
    /// # Safety
    /// The CPU running any method of the returned value must support AVX2, FMA and POPCNT.
    #[inline]
    pub unsafe fn new_unchecked() -> Self {
        Avx2 { _proof: () }
    }
}

/// One histogram pass over f32 weights; returns the largest magnitude bits (unvalidated).
///
/// Dense passes (every weight counted: the first pass) spread the increments over four
/// sub-histograms so that runs of equal bins do not stall on store forwarding. Sparse
/// passes compare 8 prefixes at once and only touch the bins on a match.
#[target_feature(enable = "avx2,fma,popcnt")]
fn histogram_f32(
    s: &[f32],
    pass: &HistogramPass,
    bins: &mut [u32; HIST_BINS],
    sub: &mut [[u32; HIST_BINS]; 4],
) -> u32 {
    let absmask = _mm256_set1_epi32(0x7FFF_FFFF);
    let mask = pass.mask & (HIST_BINS as u32 - 1);
    let maskv = _mm256_set1_epi32(mask as i32);
    let sh = _mm_cvtsi32_si128(pass.shift as i32);
    let mut maxv = _mm256_setzero_si256();
    let mut idx = [0u32; 8];
    let chunks = s.chunks_exact(8);
    let tail = chunks.remainder();
    let dense = pass.prefix_shift >= 31 && pass.prefix == 0;
    if dense {
        for c in chunks {
            // SAFETY: `c` holds exactly 8 f32 (32 bytes); loadu has no alignment requirement.
            let v = unsafe { _mm256_loadu_si256(c.as_ptr().cast()) };
            let a = _mm256_and_si256(v, absmask);
            maxv = _mm256_max_epi32(maxv, a);
            let b = _mm256_and_si256(_mm256_srl_epi32(a, sh), maskv);
            // SAFETY: `idx` is 8 u32 (32 bytes); storeu has no alignment requirement.
            unsafe { _mm256_storeu_si256(idx.as_mut_ptr().cast(), b) };
            for (j, &k) in idx.iter().enumerate() {
                sub[j & 3][k as usize & (HIST_BINS - 1)] += 1;
            }
        }
    } else {
        let prefix = _mm256_set1_epi32(pass.prefix as i32);
        let psh = _mm_cvtsi32_si128(pass.prefix_shift as i32);
        for c in chunks {
            // SAFETY: `c` holds exactly 8 f32; loadu has no alignment requirement.
            let v = unsafe { _mm256_loadu_si256(c.as_ptr().cast()) };
            let a = _mm256_and_si256(v, absmask);
            maxv = _mm256_max_epi32(maxv, a);
            let hit = _mm256_cmpeq_epi32(_mm256_srl_epi32(a, psh), prefix);
            let mut m = _mm256_movemask_ps(_mm256_castsi256_ps(hit)) as u32;
            if m != 0 {
                let b = _mm256_and_si256(_mm256_srl_epi32(a, sh), maskv);
                // SAFETY: `idx` is 8 u32; storeu has no alignment requirement.
                unsafe { _mm256_storeu_si256(idx.as_mut_ptr().cast(), b) };
                while m != 0 {
                    let j = m.trailing_zeros() as usize;
                    bins[idx[j] as usize & (HIST_BINS - 1)] += 1;
                    m &= m - 1;
                }
            }
        }
    }
    let mut max = lanes_u32(maxv).iter().copied().max().unwrap_or(0);
    for &v in tail {
        let b = v.abs_bits();
        max = max.max(b);
        if let Some(bin) = pass.bin(b) {
            bins[bin & (HIST_BINS - 1)] += 1;
        }
    }
    max
}

/// Counts of `bits(|w|) < t` (`lt`) and `bits(|w|) == t` (`eq`) over f32 weights.
#[target_feature(enable = "avx2,fma,popcnt")]
fn count_f32(s: &[f32], t: u32) -> (u64, u64) {
    let absmask = _mm256_set1_epi32(0x7FFF_FFFF);
    let tv = _mm256_set1_epi32(t as i32);
    let (mut lt, mut eq) = (0u64, 0u64);
    let chunks = s.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        // SAFETY: `c` holds exactly 8 f32; loadu has no alignment requirement.
        let v = unsafe { _mm256_loadu_si256(c.as_ptr().cast()) };
        let a = _mm256_and_si256(v, absmask);
        // Signed compares are exact: `a < 2^31` and the caller keeps `t < 2^31`.
        let l = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(tv, a))) as u32;
        let e = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(tv, a))) as u32;
        lt += u64::from(l.count_ones());
        eq += u64::from(e.count_ones());
    }
    for &v in tail {
        let b = v.abs_bits();
        lt += u64::from(b < t);
        eq += u64::from(b == t);
    }
    (lt, eq)
}

/// The AVX2 [`CpuKernels::scan_range`] over f32 weights whose first flat index is `base`,
/// adding into `scan`.
#[target_feature(enable = "avx2,fma,popcnt")]
fn scan_range_f32(
    s: &[f32],
    base: u64,
    (lo, hi): (u32, u32),
    out: &mut [u32],
    scan: &mut RangeScan,
) -> Result<(), BadValue> {
    // Signed compares are exact: magnitudes are below 2^31 and `lo, hi <= NON_FINITE_BITS`.
    let absmask = _mm256_set1_epi32(0x7FFF_FFFF);
    let last_valid = _mm256_set1_epi32(OUT_OF_RANGE_BITS as i32 - 1);
    let (lo_v, hi_v) = (_mm256_set1_epi32(lo as i32), _mm256_set1_epi32(hi as i32));
    let mut max = _mm256_setzero_si256();
    let chunks = s.chunks_exact(8);
    let tail = chunks.remainder();
    for (ci, c) in chunks.enumerate() {
        // SAFETY: `c` holds exactly 8 f32; loadu has no alignment requirement.
        let a = _mm256_and_si256(unsafe { _mm256_loadu_si256(c.as_ptr().cast()) }, absmask);
        let bad = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(a, last_valid)));
        if bad != 0 {
            let lane = bad.trailing_zeros() as usize;
            return Err(BadValue {
                index: base + (ci * 8 + lane) as u64,
                value: c[lane],
            });
        }
        max = _mm256_max_epu32(max, a);
        let below_hi = _mm256_cmpgt_epi32(hi_v, a);
        let below_lo = _mm256_cmpgt_epi32(lo_v, a);
        let below = _mm256_movemask_ps(_mm256_castsi256_ps(below_hi)) as u32;
        scan.at_least_hi += u64::from(8 - below.count_ones());
        let mut inside =
            _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_andnot_si256(below_lo, below_hi))) as u32;
        if inside != 0 {
            let lanes = lanes_u32(a);
            while inside != 0 {
                let lane = inside.trailing_zeros() as usize;
                if let Some(slot) = out.get_mut(scan.in_range as usize) {
                    *slot = lanes[lane];
                }
                scan.in_range += 1;
                inside &= inside - 1;
            }
        }
    }
    let tail_base = base + (s.len() - tail.len()) as u64;
    let free = out.get_mut(scan.in_range as usize..).unwrap_or_default();
    let rest = scan_range_generic(tail, lo, hi, free).map_err(|e| BadValue {
        index: tail_base + e.index,
        value: e.value,
    })?;
    scan.at_least_hi += rest.at_least_hi;
    scan.in_range += rest.in_range;
    let lanes_max = lanes_u32(max).into_iter().max().unwrap_or(0);
    scan.max_abs_bits = scan.max_abs_bits.max(rest.max_abs_bits).max(lanes_max);
    Ok(())
}

/// Per-group accumulators.
struct Stats {
    in_max: __m256,
    out_max: __m256,
    in_lo: __m256,
    in_hi: __m256,
    out_lo: __m256,
    out_hi: __m256,
    n_out: u32,
}

impl Stats {
    #[target_feature(enable = "avx2,fma,popcnt")]
    #[inline]
    fn new() -> Stats {
        let z = _mm256_setzero_ps();
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

    /// Adds 8 weights `v` with outlier lanes `o` (mask bits `m`). Masked-off lanes
    /// contribute 0, which never moves an extent (they all start at 0).
    #[target_feature(enable = "avx2,fma,popcnt")]
    #[inline]
    fn add(&mut self, v: __m256, o: __m256, m: u32, grid: Grid, absmask: __m256) {
        self.n_out += m.count_ones();
        match grid {
            Grid::Symmetric => {
                let a = _mm256_and_ps(v, absmask);
                self.in_max = _mm256_max_ps(self.in_max, _mm256_andnot_ps(o, a));
                self.out_max = _mm256_max_ps(self.out_max, _mm256_and_ps(o, a));
            }
            Grid::Asymmetric => {
                let vi = _mm256_andnot_ps(o, v);
                let vo = _mm256_and_ps(o, v);
                self.in_lo = _mm256_min_ps(self.in_lo, vi);
                self.in_hi = _mm256_max_ps(self.in_hi, vi);
                self.out_lo = _mm256_min_ps(self.out_lo, vo);
                self.out_hi = _mm256_max_ps(self.out_hi, vo);
            }
        }
    }
}

/// The 8-lane outlier mask for mask bits `m` (bit `j` = lane `j`).
#[target_feature(enable = "avx2,fma,popcnt")]
#[inline]
fn mask_from_bits(m: u32) -> __m256i {
    let bitsel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    _mm256_cmpeq_epi32(
        _mm256_and_si256(_mm256_set1_epi32(m as i32), bitsel),
        bitsel,
    )
}

/// Codes of 8 weights, as i32 lanes in `0..=code_max`.
#[target_feature(enable = "avx2,fma,popcnt")]
#[inline]
fn encode8(v: __m256, o: __m256i, gin: &GridScale, gout: &GridScale, code_max: __m256i) -> __m256i {
    let of = _mm256_castsi256_ps(o);
    let inv = _mm256_blendv_ps(_mm256_set1_ps(gin.inv), _mm256_set1_ps(gout.inv), of);
    let off = _mm256_blendv_epi8(
        _mm256_set1_epi32(gin.offset),
        _mm256_set1_epi32(gout.offset),
        o,
    );
    // The scalar oracle: `round_ties_even((w * inv).clamp(-512, 512)) as i32 + offset`.
    let q = _mm256_mul_ps(v, inv);
    let q = _mm256_min_ps(
        _mm256_max_ps(q, _mm256_set1_ps(-512.0)),
        _mm256_set1_ps(512.0),
    );
    let q = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(q);
    let qi = _mm256_add_epi32(_mm256_cvtps_epi32(q), off);
    _mm256_min_epi32(_mm256_max_epi32(qi, _mm256_setzero_si256()), code_max)
}

/// Stores the low byte of each i32 lane of `c` (values `0..=255`) as 8 bytes at `dst`.
#[target_feature(enable = "avx2,fma,popcnt")]
#[inline]
fn store_codes8(c: __m256i, dst: &mut [u8; 8]) {
    let pick = _mm256_setr_epi8(
        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, //
        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    );
    let b = _mm256_shuffle_epi8(c, pick);
    let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1));
    // The low 8 bytes as a u64 (`vmovq`), little-endian: byte `j` is code `j`.
    *dst = (_mm_cvtsi128_si64(_mm256_castsi256_si128(b)) as u64).to_le_bytes();
}

/// Writes `n` staged 8-bit codes as the `bits`-wide codes `base..base + n` of a zeroed row.
#[target_feature(enable = "avx2,fma,popcnt")]
fn pack_codes(row_codes: &mut [u8], base: usize, staged: &[u8], bits: u8) {
    let n = staged.len();
    if bits == 8 {
        row_codes[base..base + n].copy_from_slice(staged);
    } else if bits == 4 && base.is_multiple_of(2) {
        let dst = &mut row_codes[base / 2..(base + n).div_ceil(2)];
        let weights = _mm256_set1_epi16(0x1001); // bytes [1, 16]: lo + 16 · hi
        let mut src = staged.chunks_exact(32);
        let mut out = dst.chunks_exact_mut(16);
        for (s, d) in (&mut src).zip(&mut out) {
            // SAFETY: `s` is 32 bytes and `d` 16 bytes; unaligned load/store.
            unsafe {
                let v = _mm256_loadu_si256(s.as_ptr().cast());
                let pairs = _mm256_maddubs_epi16(v, weights);
                let packed = _mm256_packus_epi16(pairs, pairs);
                let packed = _mm256_permute4x64_epi64::<0b1000>(packed);
                _mm_storeu_si128(d.as_mut_ptr().cast(), _mm256_castsi256_si128(packed));
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

/// Quantizes whole rows of f32 (or converted) weights.
#[target_feature(enable = "avx2,fma,popcnt")]
fn quantize_rows_avx2(w: Weights<'_>, job: &RowJob, out: &mut RowsOut<'_>) -> Result<RowsDone> {
    let rows = check_rows(w.len(), job, out)?;
    let fp = job.params;
    let cols = job.cols;
    let g = usize::from(fp.group_size);
    let rec_bytes = fp.record_bytes();
    let row_rec_bytes = cols.div_ceil(g) * rec_bytes;
    let row_code_bytes = (cols * usize::from(fp.bits)).div_ceil(8);
    let code_max = fp.code_max();
    let code_max_v = _mm256_set1_epi32(code_max);
    let mut rule = job.rule;
    let mut done = RowsDone::default();
    let absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
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
            // The group as f32, padded to whole 8-lane chunks in `conv` when needed.
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
            let chunk = |c: usize| -> (__m256, u32) {
                if c < full {
                    // SAFETY: chunk `c < full` lies inside `x` (8 f32, unaligned load).
                    (unsafe { _mm256_loadu_ps(x.as_ptr().add(c * 8)) }, 0xFF)
                } else {
                    // SAFETY: `tail` is 8 f32.
                    (unsafe { _mm256_loadu_ps(tail.as_ptr()) }, tail_valid)
                }
            };
            let n_chunks = full + usize::from(rem != 0);

            // Pass A: classify, validate, accumulate the grids' extents.
            let mode = TieMode::of(&rule);
            // `a > t` and `a == t` as signed compares are exact for `t < 2^31` (`a < 2^31`);
            // a larger `t` takes nobody.
            let t_big = rule.threshold_bits > i32::MAX as u32;
            let tv = _mm256_set1_epi32(rule.threshold_bits.min(i32::MAX as u32) as i32);
            let take_eq = if mode == TieMode::All && !t_big {
                _mm256_set1_epi32(-1)
            } else {
                _mm256_setzero_si256()
            };
            let take_gt = if t_big {
                _mm256_setzero_si256()
            } else {
                _mm256_set1_epi32(-1)
            };
            let mut maxbits = _mm256_setzero_si256();
            let mut eq_count = 0u32;
            let mut st = Stats::new();
            for (c, mask) in masks[..n_chunks].iter_mut().enumerate() {
                let (v, valid) = chunk(c);
                let a = _mm256_castps_si256(_mm256_and_ps(v, absmask));
                maxbits = _mm256_max_epi32(maxbits, a);
                let gt = _mm256_and_si256(_mm256_cmpgt_epi32(a, tv), take_gt);
                let eq = _mm256_cmpeq_epi32(a, tv);
                let mut o = _mm256_or_si256(gt, _mm256_and_si256(eq, take_eq));
                let mut eqm = _mm256_movemask_ps(_mm256_castsi256_ps(eq)) as u32;
                if valid != 0xFF {
                    o = _mm256_and_si256(o, mask_from_bits(valid));
                    eqm &= valid;
                }
                if t_big {
                    eqm = 0;
                }
                eq_count += eqm.count_ones();
                let m = _mm256_movemask_ps(_mm256_castsi256_ps(o)) as u32;
                *mask = m as u8;
                st.add(v, _mm256_castsi256_ps(o), m, fp.grid, absmask);
            }
            if lanes_u32(maxbits).iter().any(|&b| !is_valid_abs_bits(b)) {
                let first = (job.first_row + r as u64) * cols as u64 + base as u64;
                return Err(rejected_weight(x, first, cols));
            }
            match mode {
                TieMode::All => done.equal_taken += u64::from(eq_count),
                TieMode::None => {}
                TieMode::Limited if eq_count > 0 => {
                    // Ties decide in row-major order: classify this group one by one, then
                    // redo the extents under the final masks (pass B).
                    classify_in_order(x, &mut rule, &mut masks[..n_chunks], &mut done.equal_taken);
                    st = Stats::new();
                    for (c, &m) in masks[..n_chunks].iter().enumerate() {
                        let (v, _) = chunk(c);
                        let o = _mm256_castsi256_ps(mask_from_bits(u32::from(m)));
                        st.add(v, o, u32::from(m), fp.grid, absmask);
                    }
                }
                TieMode::Limited => {}
            }
            let n_out = st.n_out as usize;
            let n_in = n - n_out;
            let (gin, gout) = match fp.grid {
                Grid::Symmetric => (
                    grid_of(&fp, job.scale_exp, hmax(st.in_max), 0.0, 0.0, n_in),
                    grid_of(&fp, job.scale_exp, hmax(st.out_max), 0.0, 0.0, n_out),
                ),
                Grid::Asymmetric => (
                    grid_of(
                        &fp,
                        job.scale_exp,
                        0.0,
                        hmin(st.in_lo),
                        hmax(st.in_hi),
                        n_in,
                    ),
                    grid_of(
                        &fp,
                        job.scale_exp,
                        0.0,
                        hmin(st.out_lo),
                        hmax(st.out_hi),
                        n_out,
                    ),
                ),
            };

            // Pass C: codes and positions.
            for (c, &m) in masks[..n_chunks].iter().enumerate() {
                let (v, _) = chunk(c);
                let codes8 = encode8(v, mask_from_bits(u32::from(m)), &gin, &gout, code_max_v);
                let dst: &mut [u8; 8] =
                    (&mut staged[c * 8..c * 8 + 8]).try_into().expect("8 bytes");
                store_codes8(codes8, dst);
                let mut m = u32::from(m);
                while m != 0 {
                    let i = c * 8 + m.trailing_zeros() as usize;
                    if !out.positions.push(i as u32) {
                        return Err(Error::BufferSize {
                            needed: out.positions.written() + 1,
                            actual: out.positions.written(),
                        });
                    }
                    m &= m - 1;
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

/// The 8 lanes of `v`.
#[target_feature(enable = "avx2,fma,popcnt")]
#[inline]
fn lanes_f32(v: __m256) -> [f32; 8] {
    let mut l = [0f32; 8];
    // SAFETY: `_mm256_storeu_ps` writes 32 bytes with no alignment requirement; `l` is
    // exactly 8 f32 (32 bytes), owned and writable.
    unsafe { _mm256_storeu_ps(l.as_mut_ptr(), v) };
    l
}

/// The 8 lanes of `v` as u32.
#[target_feature(enable = "avx2,fma,popcnt")]
#[inline]
fn lanes_u32(v: __m256i) -> [u32; 8] {
    let mut l = [0u32; 8];
    // SAFETY: `_mm256_storeu_si256` writes 32 bytes with no alignment requirement; `l` is
    // exactly 8 u32 (32 bytes), owned and writable.
    unsafe { _mm256_storeu_si256(l.as_mut_ptr().cast(), v) };
    l
}

/// The largest lane of `v`, and 0 (every extent starts at 0).
#[target_feature(enable = "avx2,fma,popcnt")]
#[inline]
fn hmax(v: __m256) -> f32 {
    lanes_f32(v).iter().fold(0f32, |a, &b| a.max(b))
}

/// The smallest lane of `v`, and 0.
#[target_feature(enable = "avx2,fma,popcnt")]
#[inline]
fn hmin(v: __m256) -> f32 {
    lanes_f32(v).iter().fold(0f32, |a, &b| a.min(b))
}

/// The sum of the lanes of `v` (pairwise: 0+4, 1+5, …).
#[target_feature(enable = "avx2,fma,popcnt")]
#[inline]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

/// 8 codes starting at code `i` of a row (as i32 lanes), for 4- or 8-bit codes with `i`
/// on a byte boundary.
///
/// # Panics
/// When the 8 codes are not all inside `codes` (the slicing is bounds-checked; no raw
/// pointer is read).
#[target_feature(enable = "avx2,fma,popcnt")]
#[inline]
fn load_codes8(codes: &[u8], i: usize, bits: u8) -> __m256i {
    if bits == 4 {
        let b: [u8; 4] = codes[i / 2..i / 2 + 4].try_into().expect("4 bytes");
        let w = _mm256_set1_epi32(i32::from_le_bytes(b));
        let shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
        _mm256_and_si256(_mm256_srlv_epi32(w, shifts), _mm256_set1_epi32(0xF))
    } else {
        let b: [u8; 8] = codes[i..i + 8].try_into().expect("8 bytes");
        _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(i64::from_le_bytes(b)))
    }
}

/// Reads consecutive `width`-bit outlier positions from a row's place in the stream.
struct PositionReader<'a> {
    data: &'a [u8],
    bit: usize,
    width: u32,
}

impl PositionReader<'_> {
    /// The next 57 (or more) bits of the stream, zero past its end.
    #[inline(always)]
    fn window(&self) -> u64 {
        let byte = self.bit >> 3;
        let w = match self.data.get(byte..byte + 8) {
            Some(w) => u64::from_le_bytes(w.try_into().expect("8 bytes")),
            None => {
                let mut b = [0u8; 8];
                let rest = self.data.get(byte..).unwrap_or(&[]);
                b[..rest.len()].copy_from_slice(rest);
                u64::from_le_bytes(b)
            }
        };
        w >> (self.bit & 7)
    }

    #[inline(always)]
    fn next(&mut self) -> usize {
        let byte = self.bit >> 3;
        let v = match self.data.get(byte..byte + 8) {
            Some(w) => {
                let w: [u8; 8] = w.try_into().expect("8 bytes");
                ((u64::from_le_bytes(w) >> (self.bit & 7)) & ((1u64 << self.width) - 1)) as usize
            }
            None => get_bits(self.data, self.bit, self.width) as usize,
        };
        self.bit += self.width as usize;
        v
    }
}

/// The 16 code dwords of a full 4-bit group of 128 (codes `8d..8d+8` in dword `d`).
#[target_feature(enable = "avx2,fma,popcnt")]
#[inline]
fn group_code_dwords(codes: &[u8; 64]) -> (__m256i, __m256i) {
    // SAFETY: two unaligned 32-byte loads at offsets 0 and 32 of the 64 bytes of `codes`
    // (`loadu` has no alignment requirement).
    unsafe {
        (
            _mm256_loadu_si256(codes.as_ptr().cast()),
            _mm256_loadu_si256(codes.as_ptr().add(32).cast()),
        )
    }
}

/// Positions (lanes past `k` hold 0), codes and lane mask of the next `k ≤ 8` outliers of
/// a full 4-bit group of 128: positions unpacked from the 7-bit stream with shifts, codes
/// picked from the group's code dwords with two permutes.
///
/// The unpack is `vpsrlvq` + `vpshufd` + `vpsrlvd`, not BMI2 `PDEP` (`_pdep_u64(w,
/// 0x7F7F_7F7F_7F7F_7F7F)` then `vpmovzxbd`): PDEP is 3 cycles on Intel but microcoded on
/// AMD Zen1/Zen2, where it costs one loop per set mask bit (56 here, hundreds of cycles).
#[target_feature(enable = "avx2,fma,popcnt")]
#[inline]
fn next_outliers8(
    dwords: (__m256i, __m256i),
    pos: &mut PositionReader<'_>,
    k: usize,
) -> (__m256i, __m256i, __m256i) {
    debug_assert!(pos.width == 7 && k <= 8);
    // Position `j` is bits `7j..7j + 7` of the window. Qword `m` of `q` is the window
    // shifted right by `14m`: its low dword holds positions `2m` (at bit 0) and `2m + 1`
    // (at bit 7). `vpshufd` copies each low dword into two lanes (per 128-bit half:
    // qwords 0, 1 | 2, 3), and a per-lane shift by 0 or 7 brings lane `j`'s position down.
    let q = _mm256_srlv_epi64(
        _mm256_set1_epi64x(pos.window() as i64),
        _mm256_setr_epi64x(0, 14, 28, 42),
    );
    let d = _mm256_shuffle_epi32::<0b10_10_00_00>(q);
    let p = _mm256_srlv_epi32(d, _mm256_setr_epi32(0, 7, 0, 7, 0, 7, 0, 7));
    pos.bit += k * 7;
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
}

/// The outlier correction of one full group of 128 4-bit codes, 8 outliers at a time
/// ([`next_outliers8`]), with `x` loaded lane by lane (as fast as `vgatherdps` here, and
/// immune to the microcode mitigations that make gathers slow on some CPUs).
/// Adds `Σ x_p · ((c_p − z_out)·Δ_out − (c_p − z_in)·Δ_in)`.
#[target_feature(enable = "avx2,fma,popcnt")]
#[inline]
fn outliers_g128_4bit(
    codes: &[u8; 64],
    xs: &[f32; 128],
    pos: &mut PositionReader<'_>,
    rec: &GroupRecord,
    mut accv: __m256,
) -> __m256 {
    let dwords = group_code_dwords(codes);
    let (off_out, off_in) = (
        _mm256_set1_epi32(rec.outliers.offset),
        _mm256_set1_epi32(rec.inliers.offset),
    );
    let (step_out, step_in) = (
        _mm256_set1_ps(rec.outliers.step),
        _mm256_set1_ps(rec.inliers.step),
    );
    let mut left = rec.count;
    while left > 0 {
        let k = left.min(8);
        let (idx, c, valid) = next_outliers8(dwords, pos, k);
        let ix = lanes_u32(idx);
        // `& 127` keeps every index in `xs` (no bounds check emitted, none can fail).
        let xg = _mm256_and_ps(
            _mm256_setr_ps(
                xs[ix[0] as usize & 127],
                xs[ix[1] as usize & 127],
                xs[ix[2] as usize & 127],
                xs[ix[3] as usize & 127],
                xs[ix[4] as usize & 127],
                xs[ix[5] as usize & 127],
                xs[ix[6] as usize & 127],
                xs[ix[7] as usize & 127],
            ),
            _mm256_castsi256_ps(valid),
        );
        let cout = _mm256_cvtepi32_ps(_mm256_sub_epi32(c, off_out));
        let cin = _mm256_cvtepi32_ps(_mm256_sub_epi32(c, off_in));
        let delta = _mm256_fmsub_ps(cout, step_out, _mm256_mul_ps(cin, step_in));
        // Lanes past `k` hold x = 0: they add 0 · delta = 0 (delta is finite).
        accv = _mm256_fmadd_ps(delta, xg, accv);
        left -= k;
    }
    accv
}

/// The outlier patch of one full group of 128 4-bit codes: values computed 8 at a time
/// exactly as the oracle does (`(c − z_out) as f32 · Δ_out`), stored lane by lane.
#[target_feature(enable = "avx2,fma,popcnt")]
#[inline]
fn patch_g128_4bit(
    codes: &[u8; 64],
    out: &mut [f32; 128],
    pos: &mut PositionReader<'_>,
    rec: &GroupRecord,
) {
    let dwords = group_code_dwords(codes);
    let off_out = _mm256_set1_epi32(rec.outliers.offset);
    let step_out = _mm256_set1_ps(rec.outliers.step);
    let mut left = rec.count;
    while left > 0 {
        let k = left.min(8);
        let (idx, c, _) = next_outliers8(dwords, pos, k);
        let vals = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(c, off_out)), step_out);
        let (ix, v) = (lanes_u32(idx), lanes_f32(vals));
        for j in 0..k {
            out[ix[j] as usize & 127] = v[j];
        }
        left -= k;
    }
}

/// Dequantizes one row: the dense pass on the inlier grid, then the outlier patch.
#[target_feature(enable = "avx2,fma,popcnt")]
fn dequantize_row_avx2(t: &PackedTensor<'_>, r: usize, out: &mut [f32]) -> Result<()> {
    let row = t.row(r)?;
    let fp = t.params();
    let g = usize::from(fp.group_size);
    let mut pos = PositionReader {
        data: row.positions,
        bit: row.first_outlier * t.layout().position_bits as usize,
        width: t.layout().position_bits,
    };
    for (gi, chunk) in out.chunks_mut(g).enumerate() {
        let rec = t.record(&row, gi);
        let base = gi * g;
        if fp.bits == 4 && g == 128 && chunk.len() == 128 {
            // The default format's full groups: no per-chunk width tests or bounds checks.
            let codes: &[u8; 64] = row.codes[base / 2..base / 2 + 64]
                .try_into()
                .expect("64 bytes");
            let out: &mut [f32; 128] = chunk.try_into().expect("128 f32");
            let off = _mm256_set1_epi32(rec.inliers.offset);
            let step = _mm256_set1_ps(rec.inliers.step);
            let shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
            let nib = _mm256_set1_epi32(0xF);
            for (cb, o) in codes.chunks_exact(4).zip(out.chunks_exact_mut(8)) {
                let w = i32::from_le_bytes(cb.try_into().expect("4 bytes"));
                let c = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(w), shifts), nib);
                let v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(c, off)), step);
                // SAFETY: `o` is 8 f32; unaligned store.
                unsafe { _mm256_storeu_ps(o.as_mut_ptr(), v) };
            }
            patch_g128_4bit(codes, out, &mut pos, &rec);
            continue;
        }
        let fast = (fp.bits == 4 && base % 2 == 0) || fp.bits == 8;
        let done = if fast {
            let off = _mm256_set1_epi32(rec.inliers.offset);
            let step = _mm256_set1_ps(rec.inliers.step);
            for (c, o) in chunk.chunks_exact_mut(8).enumerate() {
                let codes = load_codes8(row.codes, base + c * 8, fp.bits);
                let v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(codes, off)), step);
                // SAFETY: `o` is 8 f32; unaligned store.
                unsafe { _mm256_storeu_ps(o.as_mut_ptr(), v) };
            }
            chunk.len() / 8 * 8
        } else {
            0
        };
        for (i, o) in chunk.iter_mut().enumerate().skip(done) {
            *o = (i32::from(code_at(row.codes, base + i, fp.bits)) - rec.inliers.offset) as f32
                * rec.inliers.step;
        }
        for _ in 0..rec.count {
            let p = pos.next();
            if let Some(o) = chunk.get_mut(p) {
                *o = (i32::from(code_at(row.codes, base + p, fp.bits)) - rec.outliers.offset)
                    as f32
                    * rec.outliers.step;
            }
        }
    }
    Ok(())
}

/// Dot product of one packed row with `x` (FMA, 8 lanes: see the module docs).
#[target_feature(enable = "avx2,fma,popcnt")]
fn dot_row_avx2(t: &PackedTensor<'_>, r: usize, x: &[f32]) -> Result<f32> {
    if x.len() != t.cols() {
        return Err(Error::ShapeMismatch {
            expected: t.cols() as u64,
            actual: x.len() as u64,
        });
    }
    let row = t.row(r)?;
    let fp = t.params();
    let g = usize::from(fp.group_size);
    let mut pos = PositionReader {
        data: row.positions,
        bit: row.first_outlier * t.layout().position_bits as usize,
        width: t.layout().position_bits,
    };
    let mut accv = _mm256_setzero_ps();
    let mut acc = 0f32;
    for (gi, xs) in x.chunks(g).enumerate() {
        let rec = t.record(&row, gi);
        let base = gi * g;
        let fast = (fp.bits == 4 && base % 2 == 0) || fp.bits == 8;
        let mut done = 0;
        if fast {
            let off = _mm256_set1_epi32(rec.inliers.offset);
            let (mut d0, mut d1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut pairs = xs.chunks_exact(16);
            if fp.bits == 4 {
                // The group's codes as one slice: no per-chunk bounds checks or width tests.
                let gc = &row.codes[base / 2..base / 2 + xs.len() / 16 * 8];
                let shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
                let nib = _mm256_set1_epi32(0xF);
                for (cb, xc) in gc.chunks_exact(8).zip(&mut pairs) {
                    let w = u64::from_le_bytes(cb.try_into().expect("8 bytes"));
                    let c0 = _mm256_and_si256(
                        _mm256_srlv_epi32(_mm256_set1_epi32(w as i32), shifts),
                        nib,
                    );
                    let c1 = _mm256_and_si256(
                        _mm256_srlv_epi32(_mm256_set1_epi32((w >> 32) as i32), shifts),
                        nib,
                    );
                    let c0 = _mm256_cvtepi32_ps(_mm256_sub_epi32(c0, off));
                    let c1 = _mm256_cvtepi32_ps(_mm256_sub_epi32(c1, off));
                    // SAFETY: `xc` is 16 f32; unaligned loads of 8 each.
                    let (x0, x1) = unsafe {
                        (
                            _mm256_loadu_ps(xc.as_ptr()),
                            _mm256_loadu_ps(xc.as_ptr().add(8)),
                        )
                    };
                    d0 = _mm256_fmadd_ps(c0, x0, d0);
                    d1 = _mm256_fmadd_ps(c1, x1, d1);
                }
            }
            for (c, xc) in (&mut pairs).enumerate() {
                let i = base + c * 16;
                let c0 =
                    _mm256_cvtepi32_ps(_mm256_sub_epi32(load_codes8(row.codes, i, fp.bits), off));
                let c1 = _mm256_cvtepi32_ps(_mm256_sub_epi32(
                    load_codes8(row.codes, i + 8, fp.bits),
                    off,
                ));
                // SAFETY: `xc` is 16 f32; unaligned loads of 8 each.
                let (x0, x1) = unsafe {
                    (
                        _mm256_loadu_ps(xc.as_ptr()),
                        _mm256_loadu_ps(xc.as_ptr().add(8)),
                    )
                };
                d0 = _mm256_fmadd_ps(c0, x0, d0);
                d1 = _mm256_fmadd_ps(c1, x1, d1);
            }
            done = xs.len() - pairs.remainder().len();
            if pairs.remainder().len() >= 8 {
                let c0 = _mm256_cvtepi32_ps(_mm256_sub_epi32(
                    load_codes8(row.codes, base + done, fp.bits),
                    off,
                ));
                // SAFETY: at least 8 f32 remain at `done`.
                let x0 = unsafe { _mm256_loadu_ps(xs.as_ptr().add(done)) };
                d0 = _mm256_fmadd_ps(c0, x0, d0);
                done += 8;
            }
            accv = _mm256_fmadd_ps(
                _mm256_add_ps(d0, d1),
                _mm256_set1_ps(rec.inliers.step),
                accv,
            );
        }
        let mut dense = 0f32;
        for (i, &xi) in xs.iter().enumerate().skip(done) {
            dense +=
                (i32::from(code_at(row.codes, base + i, fp.bits)) - rec.inliers.offset) as f32 * xi;
        }
        acc += dense * rec.inliers.step;
        // Outliers: replace their inlier-grid term by their outlier-grid value.
        if fp.bits == 4 && g == 128 && xs.len() == 128 {
            let codes: &[u8; 64] = row.codes[base / 2..base / 2 + 64]
                .try_into()
                .expect("64 bytes");
            let xs: &[f32; 128] = xs.try_into().expect("128 f32");
            accv = outliers_g128_4bit(codes, xs, &mut pos, &rec, accv);
            continue;
        }
        let (mut corr_out, mut corr_in) = (0f32, 0f32);
        for _ in 0..rec.count {
            let p = pos.next();
            if let Some(&xp) = xs.get(p) {
                let c = i32::from(code_at(row.codes, base + p, fp.bits));
                corr_out += xp * (c - rec.outliers.offset) as f32;
                corr_in += xp * (c - rec.inliers.offset) as f32;
            }
        }
        acc += corr_out * rec.outliers.step - corr_in * rec.inliers.step;
    }
    Ok(acc + hsum(accv))
}

impl Avx2 {
    /// Dot product of packed row `row` with int8 activations (see
    /// [`kernels::q8`](crate::kernels::Q8Activations)): exact integer `Σ c·q` per group
    /// with `maddubs`, vectorized outlier corrections. Formats other than 4-bit codes in
    /// groups of 128 use the portable reference.
    pub fn dot_row_q8(
        &self,
        t: &PackedTensor<'_>,
        row: usize,
        a: &Q8Activations<'_>,
    ) -> Result<f32> {
        // SAFETY: holding `self` proves AVX2, FMA and POPCNT are available.
        unsafe { dot_row_q8_avx2(t, row, a) }
    }
}

/// The outlier correction of a full group with int8 activations:
/// adds `Σ q_p · ((c_p − z_out)·Δ_out − (c_p − z_in)·Δ_in)` into `corr`.
#[target_feature(enable = "avx2,fma,popcnt")]
#[inline]
fn outliers_q8_g128(
    codes: &[u8; 64],
    qs: &[i8; 128],
    pos: &mut PositionReader<'_>,
    rec: &GroupRecord,
    mut corr: __m256,
) -> __m256 {
    let dwords = group_code_dwords(codes);
    let (off_out, off_in) = (
        _mm256_set1_epi32(rec.outliers.offset),
        _mm256_set1_epi32(rec.inliers.offset),
    );
    let (step_out, step_in) = (
        _mm256_set1_ps(rec.outliers.step),
        _mm256_set1_ps(rec.inliers.step),
    );
    let mut left = rec.count;
    while left > 0 {
        let k = left.min(8);
        let (idx, c, valid) = next_outliers8(dwords, pos, k);
        let ix = lanes_u32(idx);
        let mut qb = [0u8; 8];
        for (d, &i) in qb.iter_mut().zip(&ix) {
            *d = qs[i as usize & 127] as u8;
        }
        let qv = _mm256_and_si256(
            _mm256_cvtepi8_epi32(_mm_cvtsi64_si128(i64::from_le_bytes(qb))),
            valid,
        );
        let cout = _mm256_cvtepi32_ps(_mm256_sub_epi32(c, off_out));
        let cin = _mm256_cvtepi32_ps(_mm256_sub_epi32(c, off_in));
        let delta = _mm256_fmsub_ps(cout, step_out, _mm256_mul_ps(cin, step_in));
        corr = _mm256_fmadd_ps(delta, _mm256_cvtepi32_ps(qv), corr);
        left -= k;
    }
    corr
}

#[target_feature(enable = "avx2,fma,popcnt")]
fn dot_row_q8_avx2(t: &PackedTensor<'_>, r: usize, a: &Q8Activations<'_>) -> Result<f32> {
    a.check(t)?;
    let fp = t.params();
    if !(fp.bits == 4 && fp.group_size == 128) {
        return dot_row_q8_ref(t, r, a);
    }
    let row = t.row(r)?;
    let mut pos = PositionReader {
        data: row.positions,
        bit: row.first_outlier * t.layout().position_bits as usize,
        width: t.layout().position_bits,
    };
    let ones = _mm256_set1_epi16(1);
    let low = _mm_set1_epi8(0x0F);
    let mut accv = _mm256_setzero_ps();
    let mut acc = 0f32;
    for (gi, qs) in a.q().chunks(128).enumerate() {
        let rec = t.record(&row, gi);
        let base = gi * 128;
        let sx = a.scales()[gi];
        if let Ok(qs) = <&[i8; 128]>::try_from(qs) {
            let codes: &[u8; 64] = row.codes[base / 2..base / 2 + 64]
                .try_into()
                .expect("64 bytes");
            let mut isum = _mm256_setzero_si256();
            for (cb, qc) in codes.chunks_exact(16).zip(qs.chunks_exact(32)) {
                // SAFETY: `cb` is 16 bytes and `qc` 32 bytes; unaligned loads.
                let (v, qv) = unsafe {
                    (
                        _mm_loadu_si128(cb.as_ptr().cast()),
                        _mm256_loadu_si256(qc.as_ptr().cast()),
                    )
                };
                let lo = _mm_and_si128(v, low);
                let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), low);
                let c = _mm256_set_m128i(_mm_unpackhi_epi8(lo, hi), _mm_unpacklo_epi8(lo, hi));
                // |c·q + c·q| ≤ 2·15·127: no i16 saturation.
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_maddubs_epi16(c, qv), ones));
            }
            // The exact integer dense sum, as the reference computes it.
            let s4 = _mm_add_epi32(
                _mm256_castsi256_si128(isum),
                _mm256_extracti128_si256::<1>(isum),
            );
            let s2 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
            let s1 = _mm_add_epi32(s2, _mm_shuffle_epi32::<0b01>(s2));
            let dense = _mm_cvtsi128_si32(s1) - rec.inliers.offset * a.sums()[gi];
            acc += sx * (rec.inliers.step * dense as f32);
            if rec.count > 0 {
                let corr = outliers_q8_g128(codes, qs, &mut pos, &rec, _mm256_setzero_ps());
                accv = _mm256_fmadd_ps(corr, _mm256_set1_ps(sx), accv);
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
                    let c = i32::from(code_at(row.codes, base + p, 4));
                    corr += f32::from(qp)
                        * ((c - rec.outliers.offset) as f32 * rec.outliers.step
                            - (c - rec.inliers.offset) as f32 * rec.inliers.step);
                }
            }
            acc += sx * (rec.inliers.step * dense as f32 + corr);
        }
    }
    Ok(acc + hsum(accv))
}

impl CpuKernels for Avx2 {
    fn name(&self) -> &'static str {
        "avx2"
    }

    fn histogram(
        &self,
        w: Weights<'_>,
        pass: &HistogramPass,
        bins: &mut [u32; HIST_BINS],
    ) -> Result<u32, BadValue> {
        let in_contract = (pass.mask as usize) < HIST_BINS;
        histogram_with(w, pass, bins, in_contract, |s, bins, sub| {
            // SAFETY: holding `self` proves AVX2, FMA and POPCNT are available.
            unsafe { histogram_f32(s, pass, bins, sub) }
        })
    }

    fn count_at_least(&self, w: Weights<'_>, threshold_bits: u32) -> u64 {
        if threshold_bits > i32::MAX as u32 {
            return 0;
        }
        let mut lt = 0;
        // SAFETY: holding `self` proves AVX2, FMA and POPCNT are available.
        for_f32_blocks(w, |s| lt += unsafe { count_f32(s, threshold_bits) }.0);
        w.len() as u64 - lt
    }

    fn scan_range(
        &self,
        w: Weights<'_>,
        lo: u32,
        hi: u32,
        out: &mut [u32],
    ) -> Result<RangeScan, BadValue> {
        let (lo, hi) = (lo.min(NON_FINITE_BITS), hi.min(NON_FINITE_BITS));
        let mut scan = RangeScan::default();
        let mut base = 0u64;
        let mut result = Ok(());
        for_f32_blocks(w, |s| {
            if result.is_ok() {
                // SAFETY: holding `self` proves AVX2, FMA and POPCNT are available.
                result = unsafe { scan_range_f32(s, base, (lo, hi), out, &mut scan) };
                base += s.len() as u64;
            }
        });
        result.map(|()| scan)
    }

    fn count_equal(&self, w: Weights<'_>, threshold_bits: u32) -> u64 {
        if threshold_bits > i32::MAX as u32 {
            return 0;
        }
        let mut eq = 0;
        // SAFETY: holding `self` proves AVX2, FMA and POPCNT are available.
        for_f32_blocks(w, |s| eq += unsafe { count_f32(s, threshold_bits) }.1);
        eq
    }

    fn quantize_rows(
        &self,
        w: Weights<'_>,
        job: &RowJob,
        out: &mut RowsOut<'_>,
    ) -> Result<RowsDone> {
        // SAFETY: holding `self` proves AVX2, FMA and POPCNT are available.
        unsafe { quantize_rows_avx2(w, job, out) }
    }

    fn dequantize_rows(
        &self,
        t: &PackedTensor<'_>,
        first_row: usize,
        out: &mut [f32],
    ) -> Result<()> {
        check_out_rows(t, first_row, out.len())?;
        for (i, row_out) in out.chunks_mut(t.cols()).enumerate() {
            // SAFETY: holding `self` proves AVX2, FMA and POPCNT are available.
            unsafe { dequantize_row_avx2(t, first_row + i, row_out)? };
        }
        Ok(())
    }

    fn dot_row(&self, t: &PackedTensor<'_>, row: usize, x: &[f32]) -> Result<f32> {
        // SAFETY: holding `self` proves AVX2, FMA and POPCNT are available.
        unsafe { dot_row_avx2(t, row, x) }
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::Avx2;

    /// The token exists exactly when the CPU has every feature the module's functions enable.
    #[test]
    fn token_requires_every_enabled_feature() {
        let all = std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("popcnt");
        assert_eq!(Avx2::is_available(), all);
        assert_eq!(Avx2::try_new().is_some(), all);
    }
}
