//! Quantizing rows: classify, validate and take the grids' extents 8 weights at a time,
//! then encode with the oracle's f32 operations per lane.

use super::{arrays, arrays_mut, Lanes};
use crate::bits::BitWriter;
use crate::error::Result;
use crate::format::put_code;
use crate::format::record::grid_of;
use crate::kernels::common::{classify_in_order, rejected_weight, TieMode};
use crate::kernels::rows::{push_position, GroupCursor, GroupDone};
use crate::kernels::{RowJob, RowsDone, RowsOut};
use crate::params::{Grid, MAX_GROUP_SIZE};
use crate::quant::GridScale;
use crate::select::{is_valid_abs_bits, OutlierRule};
use crate::weights::Weights;

/// Per-group extents of the inliers and the outliers.
pub(super) struct Stats<S: Lanes> {
    in_max: S::F,
    out_max: S::F,
    /// Smallest inlier (asymmetric grids; lanes start at 0).
    pub(super) in_lo: S::F,
    /// Largest inlier (asymmetric grids; lanes start at 0).
    pub(super) in_hi: S::F,
    /// Smallest outlier (asymmetric grids; lanes start at 0).
    pub(super) out_lo: S::F,
    /// Largest outlier (asymmetric grids; lanes start at 0).
    pub(super) out_hi: S::F,
    /// Outliers in the group.
    pub(super) n_out: u32,
}

impl<S: Lanes> Stats<S> {
    #[inline(always)]
    fn new(s: S) -> Self {
        let z = s.splat_f(0.0);
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
    #[inline(always)]
    fn add(&mut self, s: S, v: S::F, o: S::U, m: u32, grid: Grid) {
        self.n_out += m.count_ones();
        let vb = s.bits(v);
        match grid {
            Grid::Symmetric => {
                let a = s.and(vb, s.splat_u(0x7FFF_FFFF));
                self.in_max = s.max_f(self.in_max, s.float_of_bits(s.andnot(o, a)));
                self.out_max = s.max_f(self.out_max, s.float_of_bits(s.and(o, a)));
            }
            Grid::Asymmetric => {
                let vi = s.float_of_bits(s.andnot(o, vb));
                let vo = s.float_of_bits(s.and(o, vb));
                self.in_lo = s.min_f(self.in_lo, vi);
                self.in_hi = s.max_f(self.in_hi, vi);
                self.out_lo = s.min_f(self.out_lo, vo);
                self.out_hi = s.max_f(self.out_hi, vo);
            }
        }
    }
}

/// Codes of 8 weights `v` with outlier lanes `o`, as i32 lanes in `0..=code_max`.
#[inline(always)]
fn encode8<S: Lanes>(
    s: S,
    v: S::F,
    o: S::U,
    gin: &GridScale,
    gout: &GridScale,
    code_max: S::U,
) -> S::U {
    let inv = s.select_f(o, s.splat_f(gout.inv), s.splat_f(gin.inv));
    let off = s.select_u(o, s.splat_i(gout.offset), s.splat_i(gin.offset));
    // The scalar oracle: `round_ties_even((w * inv).clamp(-512, 512)) as i32 + offset`.
    let q = s.mul_f(v, inv);
    let q = s.min_f(s.max_f(q, s.splat_f(-512.0)), s.splat_f(512.0));
    let qi = s.add_i(s.float_to_int(s.round_even(q)), off);
    s.min_i(s.max_i(qi, s.splat_u(0)), code_max)
}

/// Writes `n` staged 8-bit codes as the `bits`-wide codes `base..base + n` of a zeroed row.
#[inline(always)]
pub(super) fn pack_codes<S: Lanes>(
    s: S,
    row_codes: &mut [u8],
    base: usize,
    staged: &[u8],
    bits: u8,
) {
    let n = staged.len();
    if bits == 8 {
        row_codes[base..base + n].copy_from_slice(staged);
    } else if bits == 4 && base.is_multiple_of(2) {
        let dst = &mut row_codes[base / 2..(base + n).div_ceil(2)];
        let (src, rest) = arrays::<u8, 32>(staged);
        for (s32, d16) in src.zip(arrays_mut::<u8, 16>(dst)) {
            s.pack_nibbles(s32, d16);
        }
        let done = n - rest.len();
        for (i, pair) in rest.chunks(2).enumerate() {
            let hi = pair.get(1).copied().unwrap_or(0);
            dst[done / 2 + i] = pair[0] | (hi << 4);
        }
    } else {
        for (i, &c) in staged.iter().enumerate() {
            put_code(row_codes, base + i, bits, c);
        }
    }
}

/// A group's weights as 8-lane chunks, the last one padded with zeros.
pub(super) struct Chunks<'x> {
    x: &'x [f32],
    tail: [f32; 8],
    tail_valid: u32,
    /// Chunks in the group.
    pub(super) n: usize,
}

impl<'x> Chunks<'x> {
    /// The chunks of group `x`.
    #[inline(always)]
    pub(super) fn new(x: &'x [f32]) -> Self {
        let (full, rem) = (x.len() / 8, x.len() % 8);
        let mut tail = [0f32; 8];
        tail[..rem].copy_from_slice(&x[full * 8..]);
        Chunks {
            x,
            tail,
            tail_valid: (1u32 << rem) - 1,
            n: full + usize::from(rem != 0),
        }
    }

    /// The group's weights.
    #[inline(always)]
    pub(super) fn values(&self) -> &'x [f32] {
        self.x
    }

    /// Chunk `c` and the mask bits of its weights (8 bits but in the last, short chunk).
    #[inline(always)]
    pub(super) fn get<S: Lanes>(&self, s: S, c: usize) -> (S::F, u32) {
        match self.x.get(c * 8..c * 8 + 8) {
            Some(v) => (s.load_f(v.try_into().expect("8 f32")), 0xFF),
            None => (s.load_f(&self.tail), self.tail_valid),
        }
    }
}

/// A group's weights as f32: borrowed from f32 input, else converted into `conv`
/// ([`weights_to_f32`](super::weights_to_f32)).
///
/// # Panics
/// When `start..start + n` is not inside `w` or `conv` is shorter than `n`.
#[inline(always)]
pub(super) fn group_f32<'a, S: Lanes>(
    s: S,
    w: Weights<'a>,
    start: usize,
    n: usize,
    conv: &'a mut [f32],
) -> &'a [f32] {
    match w {
        Weights::F32(w) => &w[start..start + n],
        _ => {
            let group = w.get(start, start + n).expect("a group inside the tensor");
            super::weights_to_f32(s, group, &mut conv[..n]);
            &conv[..n]
        }
    }
}

/// Classifies one group under `rule` (consuming its tie budget as the oracle does, in
/// row-major order), validates it and takes its extents on `grid`: writes one outlier
/// mask byte per chunk into `masks` and counts the ties taken into `equal_taken`.
/// `None` when a weight is rejected (`rule` untouched then).
#[inline(always)]
pub(super) fn classify_group<S: Lanes>(
    s: S,
    ch: &Chunks<'_>,
    rule: &mut OutlierRule,
    masks: &mut [u8],
    equal_taken: &mut u64,
    grid: Grid,
) -> Option<Stats<S>> {
    let masks = &mut masks[..ch.n];
    let absmask = s.splat_u(0x7FFF_FFFF);
    // Pass A: classify, validate, accumulate the grids' extents.
    let mode = TieMode::of(rule);
    // `a > t` and `a == t` as signed compares are exact for `t < 2^31` (`a < 2^31`);
    // a larger `t` takes nobody.
    let t_big = rule.threshold_bits > i32::MAX as u32;
    let tv = s.splat_u(rule.threshold_bits.min(i32::MAX as u32));
    let all = |on: bool| s.splat_u(if on { u32::MAX } else { 0 });
    let (take_eq, take_gt) = (all(mode == TieMode::All && !t_big), all(!t_big));
    let mut maxbits = s.splat_u(0);
    let mut eq_count = 0u32;
    let mut st = Stats::new(s);
    for (c, mask) in masks.iter_mut().enumerate() {
        let (v, valid) = ch.get(s, c);
        let a = s.and(s.bits(v), absmask);
        maxbits = s.max_u(maxbits, a);
        let gt = s.and(s.gt_i(a, tv), take_gt);
        let eq = s.eq(a, tv);
        let mut o = s.or(gt, s.and(eq, take_eq));
        let mut eqm = s.movemask(eq) & valid;
        if valid != 0xFF {
            o = s.and(o, s.mask_from_bits(valid));
        }
        if t_big {
            eqm = 0;
        }
        eq_count += eqm.count_ones();
        let m = s.movemask(o);
        *mask = m as u8;
        st.add(s, v, o, m, grid);
    }
    if !is_valid_abs_bits(s.hmax_u(maxbits)) {
        return None;
    }
    match mode {
        TieMode::All => *equal_taken += u64::from(eq_count),
        TieMode::None => {}
        TieMode::Limited if eq_count > 0 => {
            // Ties decide in row-major order: classify this group one by one, then
            // redo the extents under the final masks (pass B).
            classify_in_order(ch.values(), rule, masks, equal_taken);
            st = Stats::new(s);
            for (c, &m) in masks.iter().enumerate() {
                let (v, _) = ch.get(s, c);
                let m = u32::from(m);
                st.add(s, v, s.mask_from_bits(m), m, grid);
            }
        }
        TieMode::Limited => {}
    }
    Some(st)
}

/// Quantizes whole rows of f32 (or converted) weights.
#[inline(always)]
pub(crate) fn quantize_rows<S: Lanes>(
    s: S,
    w: Weights<'_>,
    job: &RowJob,
    out: &mut RowsOut<'_>,
) -> Result<RowsDone> {
    let fp = job.params;
    let cols = job.cols;
    let g = usize::from(fp.group_size);
    let code_max = s.splat_i(fp.code_max());
    let mut rule = job.rule;
    let mut equal_taken = 0u64;
    const MAXG: usize = MAX_GROUP_SIZE as usize;
    let mut conv = [0f32; MAXG];
    let mut staged = [0u8; MAXG + 8];
    let mut masks = [0u8; MAXG / 8 + 1];
    let mut cursor = GroupCursor::new(w.len(), job, out)?;
    while let Some((r, gi)) = cursor.next() {
        let (codes, positions) = cursor.codes();
        let base = gi * g;
        let n = g.min(cols - base);
        let x = group_f32(s, w, r * cols + base, n, &mut conv);
        let ch = Chunks::new(x);
        let Some(st) = classify_group(s, &ch, &mut rule, &mut masks, &mut equal_taken, fp.grid)
        else {
            let first = (job.first_row + r as u64) * cols as u64 + base as u64;
            return Err(rejected_weight(x, first, cols));
        };
        let n_out = st.n_out as usize;
        let n_in = n - n_out;
        let (se, fp) = (job.scale_exp, &fp);
        let (gin, gout) = match fp.grid {
            Grid::Symmetric => (
                grid_of(fp, se, s.hmax_f(st.in_max), 0.0, 0.0, n_in),
                grid_of(fp, se, s.hmax_f(st.out_max), 0.0, 0.0, n_out),
            ),
            Grid::Asymmetric => (
                grid_of(fp, se, 0.0, s.hmin_f(st.in_lo), s.hmax_f(st.in_hi), n_in),
                grid_of(fp, se, 0.0, s.hmin_f(st.out_lo), s.hmax_f(st.out_hi), n_out),
            ),
        };

        // Pass C: codes and positions.
        for (c, &m) in masks[..ch.n].iter().enumerate() {
            let (v, _) = ch.get(s, c);
            let codes8 = encode8(s, v, s.mask_from_bits(u32::from(m)), &gin, &gout, code_max);
            staged[c * 8..c * 8 + 8].copy_from_slice(&s.narrow_bytes(codes8));
            push_positions(positions, c, m)?;
        }
        pack_codes(s, codes, base, &staged[..n], fp.bits);
        cursor.done(&GroupDone { gin, gout, n_out });
    }
    Ok(RowsDone {
        outliers: cursor.outliers(),
        equal_taken,
    })
}

/// Appends the positions of chunk `c`'s outliers (mask bits `m`), in order.
#[inline(always)]
pub(super) fn push_positions(positions: &mut BitWriter<'_>, c: usize, m: u8) -> Result<()> {
    let mut m = u32::from(m);
    while m != 0 {
        push_position(positions, (c * 8) as u32 + m.trailing_zeros())?;
        m &= m - 1;
    }
    Ok(())
}
