//! Quantizing rows into format v2 over lanes, with the scalar oracle's bytes
//! (`kernels/scalar_v2.rs`): per row, a pre-pass (validation, outlier classification, the
//! row's units); per group, the shared range search ([`search_group`]) over 8-lane
//! passes, then the codes.
//!
//! **Exactness.** The passes do the oracle's f32 operations lane by lane: element `i` of
//! a group sits in lane `i % 8`, outliers and padding are masked to `+0` (which leaves a
//! sum unchanged), multiplies and adds stay separate (no FMA), rounding is half to even
//! as the oracle's, and the lanes are totalled by [`LaneSums::total`]. So the
//! sums, the chosen grids and the codes equal the oracle's bit for bit.

use super::quantize::{classify_group, group_f32, pack_codes, push_positions, Chunks, Stats};
use super::Lanes;
use crate::affine::{
    search_group, AffineGrid, Candidates, GroupPasses, LaneSums, RefitSums, RowUnits,
    CANDIDATE_SLOTS, SHRINK,
};
use crate::error::Result;
use crate::format::record_v2::{write_record, write_units};
use crate::kernels::common::rejected_weight;
use crate::kernels::rows::{RowV2, RowsV2};
use crate::kernels::scalar_v2::RowExtent;
use crate::kernels::{RowJob, RowsDone, RowsOut};
use crate::params::{FormatParams, Grid, MAX_GROUP_SIZE_V2};
use crate::weights::Weights;

/// The largest group, and its chunks of 8.
const MAXG: usize = MAX_GROUP_SIZE_V2 as usize;
const MAX_CHUNKS: usize = MAXG.div_ceil(8);

/// `v.clamp(0, hi)` lane by lane (no NaN reaches it). The result is rounded half to even
/// next, as the oracle's `(x + 1.5·2^23) − 1.5·2^23` does on `0..=255`; the two differ only
/// in the sign of a zero, which no code and no sum sees (`+0`-started sums absorb `±0`).
#[inline(always)]
fn clamp0<S: Lanes>(s: S, v: S::F, hi: S::F) -> S::F {
    s.min_f(s.max_f(v, s.splat_f(0.0)), hi)
}

/// A grid's constants in lanes.
#[derive(Clone, Copy)]
struct GridLanes<S: Lanes> {
    step: S::F,
    min: S::F,
    inv: S::F,
    code_max: S::F,
}

impl<S: Lanes> GridLanes<S> {
    #[inline(always)]
    fn new(s: S, grid: &AffineGrid, code_max: f32) -> Self {
        GridLanes {
            step: s.splat_f(grid.step),
            min: s.splat_f(grid.min),
            inv: s.splat_f(grid.inv),
            code_max: s.splat_f(code_max),
        }
    }

    /// `(decode(encode(v)) − v)²` of 8 weights where mask `m` is set, else `+0`.
    #[inline(always)]
    fn sq_error(&self, s: S, v: S::F, m: S::U) -> S::F {
        let e = s.sub_f(s.add_f(s.mul_f(self.encode(s, v), self.step), self.min), v);
        masked(s, s.mul_f(e, e), m)
    }

    /// [`AffineGrid::encode`] of 8 weights.
    #[inline(always)]
    fn encode(&self, s: S, v: S::F) -> S::F {
        s.round_even(clamp0(
            s,
            s.mul_f(s.sub_f(v, self.min), self.inv),
            self.code_max,
        ))
    }
}

/// `v` where mask `m` is set, else `+0`.
#[inline(always)]
fn masked<S: Lanes>(s: S, v: S::F, m: S::U) -> S::F {
    s.float_of_bits(s.and(s.bits(v), m))
}

/// The total of 8 lanes in [`LaneSums`]'s order, `((a0 + a1) + (a2 + a3)) + ((a4 + a5) +
/// (a6 + a7))`, as three butterflies in lanes: lane 0 adds the same pairs in the same
/// order (a sum of two is the same either way round), with no trip through memory.
#[inline(always)]
pub(super) fn total<S: Lanes>(s: S, v: S::F) -> f32 {
    let v = s.add_f(v, s.swap_lanes(v, 1));
    let v = s.add_f(v, s.swap_lanes(v, 2));
    let v = s.add_f(v, s.swap_lanes(v, 4));
    s.to_f32s(v)[0]
}

/// [`Candidates::compute`] in lanes, 8 candidates at a time: the same f32 operations
/// (the clamps as `max` then `min`, equal to `f32::clamp` for the finite quotients that
/// positive finite units give; other units take the one-at-a-time path).
#[inline(always)]
pub(super) fn candidates<S: Lanes>(
    s: S,
    lo: f32,
    hi: f32,
    units: &RowUnits,
    fp: &FormatParams,
) -> Candidates {
    let top = f32::from(fp.field_max());
    let step_scale = fp.code_max() as f32 * units.step_unit;
    let finite_positive = |x: f32| x > 0.0 && x < f32::INFINITY;
    if !(finite_positive(step_scale) && finite_positive(units.step_unit)) {
        return Candidates::compute(lo, hi, units, fp);
    }
    // Each slot's range ends (unused slots repeat candidate 0).
    let (mut los, mut his) = ([lo; CANDIDATE_SLOTS], [hi; CANDIDATE_SLOTS]);
    for (i, si) in SHRINK.iter().enumerate() {
        let lo_i = lo * si;
        for (j, sj) in SHRINK.iter().enumerate() {
            let k = i * SHRINK.len() + j;
            (los[k], his[k]) = (lo_i, hi * sj);
        }
    }
    let z = s.splat_f(0.0);
    let (one, top) = (s.splat_f(1.0), s.splat_f(top));
    let (scale, step_unit) = (s.splat_f(step_scale), s.splat_f(units.step_unit));
    let min_unit = s.splat_f(units.min_unit);
    let sign = s.splat_u(0x8000_0000);
    let mut c = Candidates {
        q_step: [0.0; CANDIDATE_SLOTS],
        q_min: [0.0; CANDIDATE_SLOTS],
        step: [0.0; CANDIDATE_SLOTS],
        min: [0.0; CANDIDATE_SLOTS],
        inv: [0.0; CANDIDATE_SLOTS],
    };
    for v in 0..CANDIDATE_SLOTS / 8 {
        let lo = s.load_f(eight(&mut los, v));
        let hi = s.load_f(eight(&mut his, v));
        let q_step = s.div_f(s.sub_f(hi, lo), scale);
        let q_step = s.round_even(s.min_f(s.max_f(q_step, one), top));
        let q_min = if units.min_unit > 0.0 {
            s.round_even(s.min_f(s.max_f(s.div_f(neg(s, lo, sign), min_unit), z), top))
        } else {
            z
        };
        // `AffineGrid::new`: `step ≥ u_d > 0`, so `inv` is `1/step`.
        let step = s.mul_f(q_step, step_unit);
        let min = neg(s, s.mul_f(q_min, min_unit), sign);
        let inv = s.div_f(one, step);
        s.store_f(q_step, eight(&mut c.q_step, v));
        s.store_f(q_min, eight(&mut c.q_min, v));
        s.store_f(step, eight(&mut c.step, v));
        s.store_f(min, eight(&mut c.min, v));
        s.store_f(inv, eight(&mut c.inv, v));
    }
    c
}

/// `−v` exactly (the sign bit flipped, as f32 negation does); `sign` is `0x8000_0000`.
#[inline(always)]
fn neg<S: Lanes>(s: S, v: S::F, sign: S::U) -> S::F {
    s.float_of_bits(s.xor(s.bits(v), sign))
}

/// Slot vector `v` of a candidates array.
#[inline(always)]
fn eight(a: &mut [f32; CANDIDATE_SLOTS], v: usize) -> &mut [f32; 8] {
    (&mut a[v * 8..v * 8 + 8]).try_into().expect("8 lanes")
}

/// The 8-lane passes over one group: its chunks (zero-padded) and inlier lane masks.
struct LanePasses<'g, S: Lanes> {
    s: S,
    vals: &'g [[f32; 8]],
    inliers: &'g [[u32; 8]],
    n_in: u32,
    code_max: f32,
}

impl<'g, S: Lanes> LanePasses<'g, S> {
    /// The passes over group `ch` whose outlier mask bits are `masks` (one byte a chunk),
    /// staged into `vals` and `inliers`.
    #[inline(always)]
    fn stage(
        s: S,
        ch: &Chunks<'_>,
        masks: &[u8],
        vals: &'g mut [[f32; 8]; MAX_CHUNKS],
        inliers: &'g mut [[u32; 8]; MAX_CHUNKS],
        code_max: f32,
    ) -> Self {
        let mut n_in = 0;
        for (c, (v, m)) in vals
            .iter_mut()
            .zip(inliers.iter_mut())
            .take(ch.n)
            .enumerate()
        {
            let (x8, valid) = ch.get(s, c);
            let bits = valid & !u32::from(masks[c]);
            n_in += bits.count_ones();
            s.store_f(x8, v);
            *m = s.to_u32s(s.mask_from_bits(bits));
        }
        LanePasses {
            s,
            vals: &vals[..ch.n],
            inliers: &inliers[..ch.n],
            n_in,
            code_max,
        }
    }
}

impl<S: Lanes> GroupPasses for LanePasses<'_, S> {
    #[inline(always)]
    fn candidates(&mut self, lo: f32, hi: f32, units: &RowUnits, fp: &FormatParams) -> Candidates {
        candidates(self.s, lo, hi, units, fp)
    }

    #[inline(always)]
    fn error(&mut self, grid: &AffineGrid) -> f32 {
        let s = self.s;
        let gl = GridLanes::new(s, grid, self.code_max);
        let mut acc = s.splat_f(0.0);
        for (v, m) in self.vals.iter().zip(self.inliers) {
            acc = s.add_f(acc, gl.sq_error(s, s.load_f(v), s.load_u(m)));
        }
        total(s, acc)
    }

    /// Three candidates a sweep: independent sums (each still in chunk order) that the
    /// CPU overlaps, with no branch between them.
    #[inline(always)]
    fn errors(&mut self, grids: &[AffineGrid], errors: &mut [f32]) {
        let s = self.s;
        let code_max = self.code_max;
        let mut grids = grids.chunks_exact(3);
        let mut errs = errors.chunks_exact_mut(3);
        for (g3, e3) in (&mut grids).zip(&mut errs) {
            // Spelled out: `[0, 1, 2].map(..)` is a closure the compiler may leave out of
            // line, compiled without the ISA's features (then each splat is a call).
            let gl = [
                GridLanes::new(s, &g3[0], code_max),
                GridLanes::new(s, &g3[1], code_max),
                GridLanes::new(s, &g3[2], code_max),
            ];
            let z = s.splat_f(0.0);
            let mut acc = [z, z, z];
            for (v, m) in self.vals.iter().zip(self.inliers) {
                let (v, m) = (s.load_f(v), s.load_u(m));
                for k in 0..3 {
                    acc[k] = s.add_f(acc[k], gl[k].sq_error(s, v, m));
                }
            }
            for k in 0..3 {
                e3[k] = total(s, acc[k]);
            }
        }
        for (grid, e) in grids.remainder().iter().zip(errs.into_remainder()) {
            *e = self.error(grid);
        }
    }

    #[inline(always)]
    fn refit_sums(&mut self, grid: &AffineGrid) -> RefitSums {
        let s = self.s;
        let gl = GridLanes::new(s, grid, self.code_max);
        let z = s.splat_f(0.0);
        let (mut sc, mut scc, mut sw, mut scw) = (z, z, z, z);
        for (v, m) in self.vals.iter().zip(self.inliers) {
            let (v, m) = (s.load_f(v), s.load_u(m));
            let c = gl.encode(s, v);
            sc = s.add_f(sc, masked(s, c, m));
            scc = s.add_f(scc, masked(s, s.mul_f(c, c), m));
            sw = s.add_f(sw, masked(s, v, m));
            scw = s.add_f(scw, masked(s, s.mul_f(c, v), m));
        }
        RefitSums {
            n: self.n_in,
            c: LaneSums(s.to_f32s(sc)),
            cc: LaneSums(s.to_f32s(scc)),
            w: LaneSums(s.to_f32s(sw)),
            cw: LaneSums(s.to_f32s(scw)),
        }
    }
}

/// A group's inlier range `[lo, hi]` and largest outlier magnitude, from its extents.
#[inline(always)]
fn extents<S: Lanes>(s: S, st: &Stats<S>) -> (f32, f32, f32) {
    let out_max = (-s.hmin_f(st.out_lo)).max(s.hmax_f(st.out_hi));
    (s.hmin_f(st.in_lo), s.hmax_f(st.in_hi), out_max)
}

/// The codes of 8 weights: [`AffineGrid::encode`] where mask `o` is clear,
/// [`RowUnits::encode_outlier`] where it is set.
#[inline(always)]
fn encode8<S: Lanes>(s: S, v: S::F, o: S::U, gl: &GridLanes<S>, out: &OutlierLanes<S>) -> S::U {
    let inlier = s.float_to_int(gl.encode(s, v));
    let a = s.float_of_bits(s.and(s.bits(v), s.splat_u(0x7FFF_FFFF)));
    let k = s.round_even(clamp0(
        s,
        s.mul_f(s.sub_f(a, out.threshold), out.inv),
        out.k_max,
    ));
    let sign = s.shr(s.and(s.bits(v), s.splat_u(0x8000_0000)), out.sign_shift);
    s.select_u(o, s.or(s.float_to_int(k), sign), inlier)
}

/// A row's outlier grid in lanes.
struct OutlierLanes<S: Lanes> {
    threshold: S::F,
    inv: S::F,
    k_max: S::F,
    /// Moves the f32 sign bit to the code's top bit.
    sign_shift: u32,
}

impl<S: Lanes> OutlierLanes<S> {
    #[inline(always)]
    fn new(s: S, units: &RowUnits, fp: &FormatParams) -> Self {
        // As `RowUnits::encode_outlier`.
        let inv = if units.outlier_step > 0.0 {
            1.0 / units.outlier_step
        } else {
            0.0
        };
        OutlierLanes {
            threshold: s.splat_f(units.threshold),
            inv: s.splat_f(inv),
            k_max: s.splat_f(fp.magnitude_max() as f32),
            sign_shift: 32 - u32::from(fp.bits),
        }
    }
}

/// Quantizes whole rows into format v2 (the oracle's bytes, see the module docs).
#[inline(always)]
pub(crate) fn quantize_rows_v2<S: Lanes>(
    s: S,
    w: Weights<'_>,
    job: &RowJob,
    out: &mut RowsOut<'_>,
) -> Result<RowsDone> {
    let walk = RowsV2::new(w.len(), job, out)?;
    let fp = job.params;
    let cols = job.cols;
    let g = usize::from(fp.group_size);
    let code_max = fp.code_max() as f32;
    let mut rule = job.rule;
    let mut done = RowsDone::default();
    let mut conv = [0f32; MAXG];
    let mut masks = [0u8; MAX_CHUNKS];
    let mut vals = [[0f32; 8]; MAX_CHUNKS];
    let mut inliers = [[0u32; 8]; MAX_CHUNKS];
    let mut staged = [0u8; MAX_CHUNKS * 8];
    for r in 0..walk.rows {
        let first = (job.first_row + r as u64) * cols as u64;
        // Pass 1: validate the row and take its extent (with a copy of the rule: pass 2
        // classifies again).
        let mut pre = rule;
        let mut ties = 0u64;
        let mut extent = RowExtent::default();
        for base in (0..cols).step_by(g) {
            let x = group_f32(s, w, r * cols + base, g.min(cols - base), &mut conv);
            let ch = Chunks::new(x);
            let grid = Grid::Asymmetric;
            let Some(st) = classify_group(s, &ch, &mut pre, &mut masks, &mut ties, grid) else {
                return Err(rejected_weight(x, first + base as u64, cols));
            };
            let (lo, hi, out_max) = extents(s, &st);
            extent.add_group(lo, hi, out_max);
        }
        let units = extent.units(job);
        let outlier_lanes = OutlierLanes::new(s, &units, &fp);
        let RowV2 {
            records: recs,
            codes,
            positions,
        } = walk.row(out, r);
        write_units(recs, &units);
        // Pass 2: each group's grid and codes.
        let mut row_count = 0u32;
        for (gi, base) in (0..cols).step_by(g).enumerate() {
            let n = g.min(cols - base);
            let x = group_f32(s, w, r * cols + base, n, &mut conv);
            let ch = Chunks::new(x);
            let grid = Grid::Asymmetric;
            let taken = &mut done.equal_taken;
            let Some(st) = classify_group(s, &ch, &mut rule, &mut masks, taken, grid) else {
                // Pass 1 validated the row.
                return Err(rejected_weight(x, first + base as u64, cols));
            };
            let (lo, hi, _) = extents(s, &st);
            let mut passes = LanePasses::stage(s, &ch, &masks, &mut vals, &mut inliers, code_max);
            let grid = search_group(&mut passes, lo, hi, &units, &fp);
            let gl = GridLanes::new(s, &grid, code_max);
            for (c, v) in vals[..ch.n].iter().enumerate() {
                let o = s.mask_from_bits(u32::from(masks[c]));
                let codes8 = encode8(s, s.load_f(v), o, &gl, &outlier_lanes);
                staged[c * 8..c * 8 + 8].copy_from_slice(&s.narrow_bytes(codes8));
                push_positions(positions, c, masks[c])?;
            }
            pack_codes(s, codes, base, &staged[..n], fp.bits);
            let n_out = st.n_out as usize;
            write_record(recs, gi, &grid, n_out);
            row_count += n_out as u32;
        }
        walk.finish_row(out, r, row_count, &mut done);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::scalar_v2::ScalarPasses;
    use crate::kernels::simd::entry::Kernel;
    use crate::kernels::simd::{refit_bits, xorshift, SimdToken};
    use crate::params::{FormatVersion, Params};
    use crate::quant::scale_exponent;

    /// One group's error and refit sums on one grid, over lanes.
    struct Passes<'a> {
        x: &'a [f32],
        is_out: &'a [bool],
        grid: AffineGrid,
        code_max: f32,
    }

    impl<S: Lanes> Kernel<S> for Passes<'_> {
        type Out = (f32, RefitSums);
        #[inline(always)]
        fn call(self, s: S) -> (f32, RefitSums) {
            let mut masks = [0u8; MAX_CHUNKS];
            for (i, _) in self.is_out.iter().enumerate().filter(|(_, &o)| o) {
                masks[i / 8] |= 1 << (i % 8);
            }
            let (mut vals, mut inliers) = ([[0f32; 8]; MAX_CHUNKS], [[0u32; 8]; MAX_CHUNKS]);
            let ch = Chunks::new(self.x);
            let mut p = LanePasses::stage(s, &ch, &masks, &mut vals, &mut inliers, self.code_max);
            (p.error(&self.grid), p.refit_sums(&self.grid))
        }
    }

    /// Random groups, outliers and grids: the lane sums equal the oracle's bit for bit.
    fn passes_match<T: SimdToken>(t: T) {
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15u64);
        let (mut x, mut is_out) = ([0f32; MAXG], [false; MAXG]);
        for case in 0..3000 {
            let width = 2 + (case % 7) as u8;
            let n = 1 + (next() % 255) as usize;
            let fp = Params::new(width, 255, 0.0, Grid::Asymmetric)
                .unwrap()
                .with_version(FormatVersion::V2)
                .unwrap()
                .format();
            let scale = [1e-3f32, 0.1, 1.0, 37.0][case % 4];
            for (v, o) in x.iter_mut().zip(&mut is_out).take(n) {
                *v = ((next() >> 40) as f32 / (1u64 << 24) as f32 - 0.4) * scale;
                *o = next().is_multiple_of(11);
            }
            let e = scale_exponent(scale, &fp);
            let units = RowUnits::for_row(scale, scale / 2.0, 0.0, f32::INFINITY, &fp, e);
            let q_step = 1 + (next() % 255) as u8;
            let grid = AffineGrid::new(q_step, (next() % 256) as u8, &units);
            let code_max = fp.code_max() as f32;
            let (x, is_out) = (&x[..n], &is_out[..n]);
            let mut oracle = ScalarPasses {
                vals: x,
                is_out,
                code_max,
            };
            let want = (oracle.error(&grid), oracle.refit_sums(&grid));
            let got = t.run(Passes {
                x,
                is_out,
                grid,
                code_max,
            });
            assert_eq!(got.0.to_bits(), want.0.to_bits(), "case {case}: error");
            assert_eq!(
                refit_bits(&got.1),
                refit_bits(&want.1),
                "case {case}: refit sums"
            );
        }
    }

    /// [`candidates`] over lanes for one group.
    struct Cands<'a> {
        lo: f32,
        hi: f32,
        units: &'a RowUnits,
        fp: &'a FormatParams,
    }

    impl<S: Lanes> Kernel<S> for Cands<'_> {
        type Out = Candidates;
        #[inline(always)]
        fn call(self, s: S) -> Candidates {
            candidates(s, self.lo, self.hi, self.units, self.fp)
        }
    }

    /// Random ranges, units and field widths: the lanes candidates equal
    /// `Candidates::compute` bit for bit (both signs of zero, tiny and huge units).
    fn candidates_match<T: SimdToken>(t: T) {
        let mut next = xorshift(0x2545_F491_4F6C_DD1Du64);
        for case in 0..20_000 {
            let width = 2 + (case % 7) as u8;
            let version = if case % 3 == 0 {
                FormatVersion::V3
            } else {
                FormatVersion::V2
            };
            let Ok(p) = Params::new(width, 64, 0.0, Grid::Asymmetric) else {
                continue;
            };
            let Ok(p) = p.with_version(version) else {
                continue;
            };
            let fp = p.format();
            let scale = [1e-30f32, 1e-3, 0.1, 1.0, 37.0, 1e30][case % 6];
            let u = |n: u64| (n >> 40) as f32 / (1u64 << 24) as f32;
            let mut lo = -u(next()) * scale;
            let hi = u(next()) * scale + f32::MIN_POSITIVE;
            if case % 17 == 0 {
                lo = -0.0;
            }
            let span = (hi - lo) * (1.0 + u(next()));
            let e = scale_exponent(span, &fp);
            let units =
                RowUnits::for_row(span, -lo * (1.0 + u(next())), 0.0, f32::INFINITY, &fp, e);
            let want = Candidates::compute(lo, hi, &units, &fp);
            let got = t.run(Cands {
                lo,
                hi,
                units: &units,
                fp: &fp,
            });
            // The used slots (the rest are unspecified).
            let n = SHRINK.len() * SHRINK.len();
            let bits = |c: &Candidates| {
                [c.q_step, c.q_min, c.step, c.min, c.inv].map(|a| {
                    let mut b = [0u32; CANDIDATE_SLOTS];
                    for (b, v) in b.iter_mut().zip(&a[..n]) {
                        *b = v.to_bits();
                    }
                    b
                })
            };
            assert_eq!(bits(&got), bits(&want), "case {case}: {lo} {hi} {units:?}");
        }
    }

    #[test]
    fn lane_candidates_equal_the_oracle_bit_for_bit() {
        crate::kernels::simd::on_native_lanes!(candidates_match);
    }

    #[test]
    fn lane_passes_equal_the_oracle_bit_for_bit() {
        crate::kernels::simd::on_native_lanes!(passes_match);
    }
}
