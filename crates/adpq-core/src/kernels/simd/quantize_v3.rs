//! Quantizing rows into format v3 over lanes, with the scalar oracle's bytes
//! (`kernels/scalar_v3.rs`): each segment rotated in lanes (bit-identical,
//! `simd/rotate.rs`), then per group the shared range search ([`search_group`]) over
//! 8-lane passes, then the codes.
//!
//! **Exactness.** As in `quantize_v2.rs`: element `i` of a group sits in lane `i % 8`,
//! padding is masked to `+0`, multiplies and adds stay separate (no FMA), and the lanes
//! are totalled by [`LaneSums::total`]. At 4 bits a value's code is the number of code
//! book midpoints below `u = (w − m)/d` (a compare of non-negative f32 bit patterns, as
//! exact as the oracle's float compare), and its level `CODEBOOK_4BIT[c] · 0.125` is
//! exact, so the sums, grids and codes equal the oracle's bit for bit.

use super::quantize::{pack_codes, Chunks};
use super::rotate::forward_at;
use super::Lanes;
use crate::affine::{
    search_group, AffineGrid, Candidates, GroupPasses, LaneSums, RefitSums, RowUnits,
};
use crate::error::Result;
use crate::format::record_v3::{write_record, write_units};
use crate::kernels::rows::RowsV2;
use crate::kernels::scalar_v2::RowExtent;
use crate::kernels::scalar_v3::{load_segment, MIDPOINTS};
use crate::kernels::{RowJob, RowsDone, RowsOut};
use crate::params::{FormatParams, CODEBOOK_4BIT, MAX_GROUP_SIZE_V3};
use crate::rotate::MAX_SEGMENT;
use crate::weights::{Element, Weights};

/// The largest group's chunks of 8.
const MAX_CHUNKS: usize = MAX_GROUP_SIZE_V3 as usize / 8;

/// `v.clamp(0, hi)` lane by lane: `+0` for `±0` and below (both ISAs' max returns its
/// second operand, `+0`, on equal zeros), so every result has its sign bit clear.
#[inline(always)]
fn clamp0<S: Lanes>(s: S, v: S::F, hi: S::F) -> S::F {
    s.min_f(s.max_f(v, s.splat_f(0.0)), hi)
}

/// `v` where mask `m` is set, else `+0`.
#[inline(always)]
fn masked<S: Lanes>(s: S, v: S::F, m: S::U) -> S::F {
    s.float_of_bits(s.and(s.bits(v), m))
}

/// The total of 8 lanes in [`LaneSums`]'s order.
#[inline(always)]
fn total<S: Lanes>(s: S, v: S::F) -> f32 {
    LaneSums(s.to_f32s(v)).total()
}

/// The coding of a format in lanes: its code book midpoints (as f32 bits) or its
/// uniform grid's top code.
#[derive(Clone, Copy)]
struct Coder<S: Lanes> {
    codebook: bool,
    midpoints: [S::U; 15],
    code_max: S::F,
}

impl<S: Lanes> Coder<S> {
    #[inline(always)]
    fn new(s: S, fp: &FormatParams) -> Self {
        Coder {
            codebook: fp.uses_codebook(),
            midpoints: MIDPOINTS.map(|m| s.splat_u(m.to_bits())),
            code_max: s.splat_f(fp.code_max() as f32),
        }
    }

    /// [`scalar_v3::encode`](crate::kernels::scalar_v3::encode) of 8 weights on a grid
    /// `(m, 1/d)`, as i32 lanes.
    #[inline(always)]
    fn codes(&self, s: S, v: S::F, min: S::F, inv: S::F) -> S::U {
        let u = clamp0(s, s.mul_f(s.sub_f(v, min), inv), self.code_max);
        if self.codebook {
            // `u ≥ +0`: its bits order as the value does. Each mask is −1 where set.
            let bits = s.bits(u);
            self.midpoints
                .iter()
                .fold(s.splat_u(0), |c, &m| s.sub_i(c, s.gt_i(bits, m)))
        } else {
            s.float_to_int(s.round_even(u))
        }
    }

    /// [`FormatParams::level`] of 8 codes (exact: `T[c] · 0.125`, or `c`).
    #[inline(always)]
    fn levels(&self, s: S, codes: S::U) -> S::F {
        if self.codebook {
            let t = s.int_to_float(s.lookup16(&CODEBOOK_4BIT, codes));
            s.mul_f(t, s.splat_f(0.125))
        } else {
            s.int_to_float(codes)
        }
    }
}

/// A grid's constants in lanes.
#[derive(Clone, Copy)]
struct GridLanes<S: Lanes> {
    step: S::F,
    min: S::F,
    inv: S::F,
}

impl<S: Lanes> GridLanes<S> {
    #[inline(always)]
    fn new(s: S, grid: &AffineGrid) -> Self {
        GridLanes {
            step: s.splat_f(grid.step),
            min: s.splat_f(grid.min),
            inv: s.splat_f(grid.inv),
        }
    }

    /// The levels of 8 weights' codes.
    #[inline(always)]
    fn levels(&self, s: S, coder: &Coder<S>, v: S::F) -> S::F {
        coder.levels(s, coder.codes(s, v, self.min, self.inv))
    }

    /// `(L·d + m − v)²` of 8 weights where mask `m` is set, else `+0`.
    #[inline(always)]
    fn sq_error(&self, s: S, coder: &Coder<S>, v: S::F, m: S::U) -> S::F {
        let level = self.levels(s, coder, v);
        let e = s.sub_f(s.add_f(s.mul_f(level, self.step), self.min), v);
        masked(s, s.mul_f(e, e), m)
    }
}

/// The 8-lane passes over one (rotated) group: its chunks, zero-padded, and their masks.
struct LanePasses<'g, S: Lanes> {
    s: S,
    vals: &'g [[f32; 8]],
    valid: &'g [[u32; 8]],
    n: u32,
    coder: Coder<S>,
}

impl<S: Lanes> GroupPasses for LanePasses<'_, S> {
    #[inline(always)]
    fn candidates(&mut self, lo: f32, hi: f32, units: &RowUnits, fp: &FormatParams) -> Candidates {
        super::quantize_v2::candidates(self.s, lo, hi, units, fp)
    }

    #[inline(always)]
    fn error(&mut self, grid: &AffineGrid) -> f32 {
        let s = self.s;
        let gl = GridLanes::new(s, grid);
        let mut acc = s.splat_f(0.0);
        for (v, m) in self.vals.iter().zip(self.valid) {
            acc = s.add_f(acc, gl.sq_error(s, &self.coder, s.load_f(v), s.load_u(m)));
        }
        total(s, acc)
    }

    /// Two candidates a sweep: independent sums (each still in chunk order) that the CPU
    /// overlaps.
    #[inline(always)]
    fn errors(&mut self, grids: &[AffineGrid], errors: &mut [f32]) {
        let s = self.s;
        let mut grids = grids.chunks_exact(2);
        let mut errs = errors.chunks_exact_mut(2);
        for (g2, e2) in (&mut grids).zip(&mut errs) {
            let gl = [GridLanes::new(s, &g2[0]), GridLanes::new(s, &g2[1])];
            let z = s.splat_f(0.0);
            let mut acc = [z, z];
            for (v, m) in self.vals.iter().zip(self.valid) {
                let (v, m) = (s.load_f(v), s.load_u(m));
                for k in 0..2 {
                    acc[k] = s.add_f(acc[k], gl[k].sq_error(s, &self.coder, v, m));
                }
            }
            e2[0] = total(s, acc[0]);
            e2[1] = total(s, acc[1]);
        }
        for (grid, e) in grids.remainder().iter().zip(errs.into_remainder()) {
            *e = self.error(grid);
        }
    }

    #[inline(always)]
    fn refit_sums(&mut self, grid: &AffineGrid) -> RefitSums {
        let s = self.s;
        let gl = GridLanes::new(s, grid);
        let z = s.splat_f(0.0);
        let (mut sc, mut scc, mut sw, mut scw) = (z, z, z, z);
        for (v, m) in self.vals.iter().zip(self.valid) {
            let (v, m) = (s.load_f(v), s.load_u(m));
            let c = gl.levels(s, &self.coder, v);
            sc = s.add_f(sc, masked(s, c, m));
            scc = s.add_f(scc, masked(s, s.mul_f(c, c), m));
            sw = s.add_f(sw, masked(s, v, m));
            scw = s.add_f(scw, masked(s, s.mul_f(c, v), m));
        }
        RefitSums {
            n: self.n,
            c: LaneSums(s.to_f32s(sc)),
            cc: LaneSums(s.to_f32s(scc)),
            w: LaneSums(s.to_f32s(sw)),
            cw: LaneSums(s.to_f32s(scw)),
        }
    }
}

/// A group staged as zero-padded chunks: its `[min(x, 0), max(x, 0)]` (padding zeros
/// change neither) and element count.
#[inline(always)]
fn stage<S: Lanes>(
    s: S,
    x: &[f32],
    vals: &mut [[f32; 8]; MAX_CHUNKS],
    valid: &mut [[u32; 8]; MAX_CHUNKS],
) -> (usize, f32, f32) {
    let ch = Chunks::new(x);
    let z = s.splat_f(0.0);
    let (mut lo, mut hi) = (z, z);
    for (c, (v, m)) in vals.iter_mut().zip(valid.iter_mut()).take(ch.n).enumerate() {
        let (x8, bits) = ch.get(s, c);
        lo = s.min_f(lo, x8);
        hi = s.max_f(hi, x8);
        s.store_f(x8, v);
        *m = s.to_u32s(s.mask_from_bits(bits));
    }
    (ch.n, s.hmin_f(lo), s.hmax_f(hi))
}

/// Quantizes whole rows into format v3 (the oracle's bytes, see the module docs).
#[inline(always)]
pub(crate) fn quantize_rows_v3<S: Lanes>(
    s: S,
    w: Weights<'_>,
    job: &RowJob,
    out: &mut RowsOut<'_>,
) -> Result<RowsDone> {
    crate::with_weights!(w, src => quantize_rows_typed(s, src, job, out))
}

#[inline(always)]
fn quantize_rows_typed<S: Lanes, T: Element>(
    s: S,
    src: &[T],
    job: &RowJob,
    out: &mut RowsOut<'_>,
) -> Result<RowsDone> {
    let walk = RowsV2::new(src.len(), job, out)?;
    out.records.fill(0);
    let fp = job.params;
    let cols = job.cols;
    let g = usize::from(fp.group_size);
    let rotation = job.rotation.as_ref();
    let coder = Coder::new(s, &fp);
    let mut buf = [0f32; MAX_SEGMENT];
    let mut vals = [[0f32; 8]; MAX_CHUNKS];
    let mut valid = [[0u32; 8]; MAX_CHUNKS];
    let mut staged = [0u8; MAX_CHUNKS * 8];
    for r in 0..walk.rows {
        let row = &src[r * cols..(r + 1) * cols];
        // Pass 1: the extent of the row's rotated groups.
        let mut extent = RowExtent::default();
        for start in (0..cols).step_by(MAX_SEGMENT) {
            let n = load_segment(row, start, &mut buf, None, job, r)?;
            if let Some(rot) = rotation {
                forward_at(s, rot, start, &mut buf[..n]);
            }
            for chunk in buf[..n].chunks(g) {
                let (_, lo, hi) = stage(s, chunk, &mut vals, &mut valid);
                extent.add_group(lo, hi, 0.0);
            }
        }
        let units = extent.units(job);
        let row_out = walk.row(out, r);
        write_units(row_out.records, &units);
        // Pass 2: each group's grid and codes.
        for start in (0..cols).step_by(MAX_SEGMENT) {
            let n = load_segment(row, start, &mut buf, None, job, r)?;
            if let Some(rot) = rotation {
                forward_at(s, rot, start, &mut buf[..n]);
            }
            for (k, chunk) in buf[..n].chunks(g).enumerate() {
                let (n_chunks, lo, hi) = stage(s, chunk, &mut vals, &mut valid);
                let mut passes = LanePasses {
                    s,
                    vals: &vals[..n_chunks],
                    valid: &valid[..n_chunks],
                    n: chunk.len() as u32,
                    coder,
                };
                let grid = search_group(&mut passes, lo, hi, &units, &fp);
                let gl = GridLanes::new(s, &grid);
                for (c, v) in vals[..n_chunks].iter().enumerate() {
                    let codes = coder.codes(s, s.load_f(v), gl.min, gl.inv);
                    staged[c * 8..c * 8 + 8].copy_from_slice(&s.narrow_bytes(codes));
                }
                let first = start + k * g;
                pack_codes(s, row_out.codes, first, &staged[..chunk.len()], fp.bits);
                write_record(row_out.records, first / g, &grid);
            }
        }
    }
    Ok(RowsDone::default())
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::affine::RowUnits;
    use crate::kernels::scalar_v3::PassesV3;
    use crate::kernels::simd::entry::Kernel;
    use crate::kernels::simd::SimdToken;
    use crate::params::{FormatVersion, Grid, Params};
    use crate::quant::scale_exponent;

    /// One group's error and refit sums on one grid, over lanes.
    struct Passes<'a> {
        x: &'a [f32],
        grid: AffineGrid,
        fp: FormatParams,
    }

    impl<S: Lanes> Kernel<S> for Passes<'_> {
        type Out = (f32, RefitSums, [u8; MAX_CHUNKS * 8]);
        #[inline(always)]
        fn call(self, s: S) -> Self::Out {
            let (mut vals, mut valid) = ([[0f32; 8]; MAX_CHUNKS], [[0u32; 8]; MAX_CHUNKS]);
            let (n_chunks, _, _) = stage(s, self.x, &mut vals, &mut valid);
            let coder = Coder::new(s, &self.fp);
            let mut p = LanePasses {
                s,
                vals: &vals[..n_chunks],
                valid: &valid[..n_chunks],
                n: self.x.len() as u32,
                coder,
            };
            let gl = GridLanes::new(s, &self.grid);
            let mut codes = [0u8; MAX_CHUNKS * 8];
            for (c, v) in vals[..n_chunks].iter().enumerate() {
                let c8 = coder.codes(s, s.load_f(v), gl.min, gl.inv);
                codes[c * 8..c * 8 + 8].copy_from_slice(&s.narrow_bytes(c8));
            }
            (p.error(&self.grid), p.refit_sums(&self.grid), codes)
        }
    }

    fn bits(s: &RefitSums) -> (u32, [[u32; 8]; 4]) {
        let b = |l: &LaneSums| l.0.map(f32::to_bits);
        (s.n, [b(&s.c), b(&s.cc), b(&s.w), b(&s.cw)])
    }

    /// Random groups and grids at every width: the lane sums and codes equal the
    /// oracle's bit for bit (values on and next to the code book's midpoints included).
    fn passes_match<T: SimdToken>(t: T) {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut x = [0f32; MAX_CHUNKS * 8];
        for case in 0..3000 {
            let width = 2 + (case % 7) as u8;
            let n = 1 + (next() % 512) as usize;
            let fp = Params::new(width, 64, 0.0, Grid::Asymmetric)
                .unwrap()
                .with_version(FormatVersion::V3)
                .unwrap()
                .format();
            let scale = [1e-3f32, 0.1, 1.0, 37.0][case % 4];
            let e = scale_exponent(scale, &fp);
            let units = RowUnits::for_row(scale, scale / 2.0, 0.0, f32::INFINITY, &fp, e);
            let grid = AffineGrid::new(1 + (next() % 63) as u8, (next() % 64) as u8, &units);
            for v in x.iter_mut().take(n) {
                *v = if next() % 5 == 0 {
                    // On a midpoint, or a level, of the grid.
                    let k = (next() % 15) as usize;
                    let u = if next() % 2 == 0 {
                        MIDPOINTS[k]
                    } else {
                        fp.level(k as u8)
                    };
                    u * grid.step + grid.min
                } else {
                    ((next() >> 40) as f32 / (1u64 << 24) as f32 - 0.4) * scale
                };
            }
            let x = &x[..n];
            let mut oracle = PassesV3 { vals: x, fp };
            let want = (oracle.error(&grid), oracle.refit_sums(&grid));
            let got = t.run(Passes { x, grid, fp });
            assert_eq!(got.0.to_bits(), want.0.to_bits(), "case {case}: error");
            assert_eq!(bits(&got.1), bits(&want.1), "case {case}: refit sums");
            for (i, &v) in x.iter().enumerate() {
                let c = crate::kernels::scalar_v3::encode(&grid, v, &fp);
                assert_eq!(got.2[i], c, "case {case}: code {i}");
            }
        }
    }

    #[test]
    fn lane_passes_equal_the_oracle_bit_for_bit() {
        #[cfg(target_arch = "x86_64")]
        if let Some(t) = crate::kernels::Avx2::try_new() {
            passes_match(t);
        }
        #[cfg(target_arch = "aarch64")]
        passes_match(crate::kernels::Neon::try_new().expect("NEON is baseline on aarch64"));
    }
}
