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

use super::quantize::pack_codes;
use super::rotate::forward_at;
use super::Lanes;
use crate::affine::{
    search_group, AffineGrid, Candidates, GroupPasses, LaneSums, RefitSums, RowUnits,
};
use crate::error::Result;
use crate::format::put_code;
use crate::format::record_v3::{write_record, write_units};
use crate::kernels::rows::RowsV2;
use crate::kernels::scalar_v2::RowExtent;
use crate::kernels::scalar_v3::{load_segment, MIDPOINTS};
use crate::kernels::{RowJob, RowsDone, RowsOut};
use crate::params::{FormatParams, CODEBOOK_4BIT, MAX_GROUP_SIZE_V3};
use crate::rotate::MAX_SEGMENT;
use crate::select::is_valid_abs_bits;
use crate::weights::sealed::Sealed;
use crate::weights::{Element, Weights};

/// The largest group's chunks of 8.
const MAX_CHUNKS: usize = MAX_GROUP_SIZE_V3 as usize / 8;

/// The largest f32 below 1, `1 − 2^−24`: see [`BINS`].
const BELOW_ONE: f32 = f32::from_bits(0x3F7F_FFFF);

/// The code book's 16 bins, for coding a value `u` in `[0, 15]` (`+0` included) with one
/// compare instead of 15: `u` falls in bin `i = round(u · BELOW_ONE)` (ties to even),
/// and its code, the number of [`MIDPOINTS`] below it, is `base[i] + (u > mid[i])`.
///
/// `u · BELOW_ONE` is `u` or the f32 just below it, so bin `i` holds the values from
/// about `i − 0.5` to `i + 0.5`, their ends within an ulp of those half-integers. The
/// only midpoint that close to a half-integer is 7.5 itself, and the multiply puts it in
/// bin 7 (`7.5 · BELOW_ONE` is the f32 below 7.5, which rounds to 7) and the f32 above it
/// in bin 8 (it becomes 7.5, which ties to 8). So every bin has at most one midpoint
/// strictly inside (`mid[i]`, or 16, above every `u`, when none), `base[i]` counts those
/// at or below `i − 0.5`, which every value of the bin exceeds, and those at or above
/// `i + 0.5` exceed every value of the bin. Bin 0 has none: its `base` is −1 and its
/// `mid` −1 as i32 bits, below every `u ≥ +0`, so that `base[i] = i − 1 + (i > 7)` for
/// every bin (what [`Coder::book_code`] computes instead of a lookup). The test
/// `bins_count_the_midpoints` checks every value near each midpoint and half-integer;
/// between those both sides are constant. The bin only picks which compare to make: the
/// compare itself is the oracle's `u > m`, so the code is exact whatever the rounding of
/// the bin's arithmetic.
const BINS: ([i32; 16], [u32; 16]) = {
    let mut base = [0i32; 16];
    let mut mid = [16f32.to_bits(); 16];
    let mut i = 0;
    while i < 16 {
        let (lo, hi) = (i as f32 - 0.5, i as f32 + 0.5);
        let mut inside = 0;
        let mut k = 0;
        while k < MIDPOINTS.len() {
            let m = MIDPOINTS[k];
            if m <= lo {
                base[i] += 1;
            } else if m < hi {
                mid[i] = m.to_bits();
                inside += 1;
            }
            k += 1;
        }
        assert!(inside <= 1, "a bin holds two midpoints");
        if i == 0 {
            assert!(base[0] == 0 && inside == 0);
            (base[0], mid[0]) = (-1, u32::MAX);
        }
        assert!(base[i] == i as i32 - 1 + (i > 7) as i32);
        i += 1;
    }
    (base, mid)
};

/// `BINS.1[i] + 1` (wrapping: bin 0's is 0): `u ≤ mid[i]` is `bits(u) < BIN_MID_NEXT[i]`
/// as i32 (false for every `u ≥ +0` in bin 0).
const BIN_MID_NEXT: [u32; 16] = {
    let mut next = [0u32; 16];
    let mut i = 0;
    while i < 16 {
        next[i] = BINS.1[i].wrapping_add(1);
        i += 1;
    }
    next
};

/// The code book's levels `CODEBOOK_4BIT[c] / 8` as f32 bits.
const LEVEL_BITS: [u32; 16] = {
    let mut l = [0u32; 16];
    let mut c = 0;
    while c < 16 {
        l[c] = (CODEBOOK_4BIT[c] as f32 * 0.125).to_bits();
        c += 1;
    }
    l
};

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

/// A 16-entry table of 32-bit values in two vectors, for [`Lanes::lookup16_u`].
#[inline(always)]
fn table16<S: Lanes>(s: S, t: &[u32; 16]) -> [S::U; 2] {
    let (lo, hi) = super::halves(t);
    [s.load_u(lo), s.load_u(hi)]
}

/// The coding of a format in lanes (`BOOK`: the 4-bit code book, else the uniform grid
/// of `code_max + 1` levels).
#[derive(Clone, Copy)]
struct Coder<S: Lanes, const BOOK: bool> {
    code_max: S::F,
    below_one: S::F,
    /// `BINS.1`, each plus 1: the bits of the f32 after each bin's midpoint.
    bin_mid_next: [S::U; 2],
    /// The levels' f32 bits.
    levels: [S::U; 2],
}

impl<S: Lanes, const BOOK: bool> Coder<S, BOOK> {
    #[inline(always)]
    fn new(s: S, fp: &FormatParams) -> Self {
        debug_assert_eq!(BOOK, fp.uses_codebook());
        Coder {
            code_max: s.splat_f(fp.code_max() as f32),
            below_one: s.splat_f(BELOW_ONE),
            bin_mid_next: table16(s, &BIN_MID_NEXT),
            levels: table16(s, &LEVEL_BITS),
        }
    }

    /// `(w − m)/d` of 8 weights clamped to `[+0, code_max]`, as the oracle's
    /// [`encode`](crate::kernels::scalar_v3::encode) computes it.
    #[inline(always)]
    fn unit(&self, s: S, v: S::F, gl: &GridLanes<S>) -> S::F {
        clamp0(s, s.mul_f(s.sub_f(v, gl.min), gl.inv), self.code_max)
    }

    /// The code book code of 8 clamped values `u` ([`BINS`]).
    #[inline(always)]
    fn book_code(&self, s: S, u: S::F) -> S::U {
        let bin = s.round_to_int(s.mul_f(u, self.below_one));
        // `lookup16_u` makes the same mask (CSE merges them).
        let upper = s.gt_i(bin, s.splat_u(7));
        // `u ≥ +0`: its bits order as the value does, and `u ≤ mid` is `bits(u) <
        // bits(mid) + 1`. Masks are −1 where set.
        let at_most = s.gt_i(s.lookup16_u(self.bin_mid_next, bin), s.bits(u));
        // `BINS.0[bin] + (u > mid)` is `bin − 1 + (bin > 7) + 1 − (u ≤ mid)`.
        s.add_i(s.sub_i(bin, upper), at_most)
    }

    /// The codes of 8 weights, as i32 lanes.
    #[inline(always)]
    fn codes(&self, s: S, v: S::F, gl: &GridLanes<S>) -> S::U {
        let u = self.unit(s, v, gl);
        if BOOK {
            self.book_code(s, u)
        } else {
            s.float_to_int(s.round_even(u))
        }
    }

    /// The levels ([`FormatParams::level`]) of 8 weights' codes.
    #[inline(always)]
    fn levels(&self, s: S, v: S::F, gl: &GridLanes<S>) -> S::F {
        let u = self.unit(s, v, gl);
        if BOOK {
            s.float_of_bits(s.lookup16_u(self.levels, self.book_code(s, u)))
        } else {
            s.round_even(u)
        }
    }

    /// `(L·d + m − v)²` of 8 weights (the decoded value looked up by code on the code
    /// book: `L[c]·d + m` per code, the same two operations).
    #[inline(always)]
    fn sq_error(&self, s: S, v: S::F, gl: &GridLanes<S>) -> S::F {
        let u = self.unit(s, v, gl);
        let decoded = if BOOK {
            s.float_of_bits(s.lookup16_u(gl.decoded, self.book_code(s, u)))
        } else {
            s.add_f(s.mul_f(s.round_even(u), gl.step), gl.min)
        };
        let e = s.sub_f(decoded, v);
        s.mul_f(e, e)
    }
}

/// A grid's constants in lanes.
#[derive(Clone, Copy)]
struct GridLanes<S: Lanes> {
    step: S::F,
    min: S::F,
    inv: S::F,
    /// On the code book, the value each code decodes to (`L[c]·d + m`) as f32 bits.
    decoded: [S::U; 2],
}

impl<S: Lanes> GridLanes<S> {
    #[inline(always)]
    fn new<const BOOK: bool>(s: S, coder: &Coder<S, BOOK>, grid: &AffineGrid) -> Self {
        Self::of(s, coder, grid.step, grid.min, grid.inv)
    }

    /// The constants of the grid of step `step`, minimum `min` and `1/step` `inv`.
    #[inline(always)]
    fn of<const BOOK: bool>(s: S, coder: &Coder<S, BOOK>, step: f32, min: f32, inv: f32) -> Self {
        let (step, min) = (s.splat_f(step), s.splat_f(min));
        // Spelled out: a closure (`levels.map(..)`) may be left out of line, compiled
        // without the ISA's features.
        let decoded = if BOOK {
            let [lo, hi] = coder.levels;
            [
                s.bits(s.add_f(s.mul_f(s.float_of_bits(lo), step), min)),
                s.bits(s.add_f(s.mul_f(s.float_of_bits(hi), step), min)),
            ]
        } else {
            [s.splat_u(0); 2]
        };
        GridLanes {
            step,
            min,
            inv: s.splat_f(inv),
            decoded,
        }
    }
}

/// The total of 8 lanes in [`LaneSums`]'s order.
#[inline(always)]
fn total<S: Lanes>(s: S, v: S::F) -> f32 {
    super::quantize_v2::total(s, v)
}

/// The 8-lane passes over one (rotated) group: its whole chunks, and its last, short
/// chunk (zero-padded) with its lane mask.
struct LanePasses<'g, S: Lanes, const BOOK: bool> {
    s: S,
    full: &'g [[f32; 8]],
    tail: Option<(&'g [f32; 8], S::U)>,
    n: u32,
    coder: Coder<S, BOOK>,
}

impl<S: Lanes, const BOOK: bool> LanePasses<'_, S, BOOK> {
    /// The sums of `K` grids' squared errors.
    #[inline(always)]
    fn sweep<const K: usize>(&self, gl: &[GridLanes<S>; K]) -> [f32; K] {
        let s = self.s;
        let mut acc = [s.splat_f(0.0); K];
        for v in self.full {
            let v = s.load_f(v);
            for k in 0..K {
                acc[k] = s.add_f(acc[k], self.coder.sq_error(s, v, &gl[k]));
            }
        }
        if let Some((v, m)) = self.tail {
            let v = s.load_f(v);
            for k in 0..K {
                acc[k] = s.add_f(acc[k], masked(s, self.coder.sq_error(s, v, &gl[k]), m));
            }
        }
        let mut out = [0f32; K];
        for k in 0..K {
            out[k] = total(s, acc[k]);
        }
        out
    }
}

impl<S: Lanes, const BOOK: bool> GroupPasses for LanePasses<'_, S, BOOK> {
    #[inline(always)]
    fn candidates(&mut self, lo: f32, hi: f32, units: &RowUnits, fp: &FormatParams) -> Candidates {
        super::quantize_v2::candidates(self.s, lo, hi, units, fp)
    }

    #[inline(always)]
    fn error(&mut self, grid: &AffineGrid) -> f32 {
        let gl = GridLanes::new(self.s, &self.coder, grid);
        self.sweep(&[gl])[0]
    }

    /// One candidate a sweep (two would need more than 16 AVX2 registers), its grid's
    /// constants taken from `c`'s fields, the first least kept as
    /// [`first_least`](crate::affine::first_least) keeps it.
    #[inline(always)]
    fn least_error(&mut self, c: &Candidates, order: &[u8]) -> (usize, f32) {
        let s = self.s;
        let (mut best_j, mut best_err) = (0, f32::NAN);
        for (j, &k) in order.iter().enumerate() {
            // Not a closure: it may be left out of line, without the ISA's features.
            let k = usize::from(k);
            let gl = GridLanes::of(s, &self.coder, c.step[k], c.min[k], c.inv[k]);
            let err = self.sweep(&[gl])[0];
            // `j == 0` takes the first error, as `first_least` starts from it.
            let better = j == 0 || err < best_err;
            best_j = if better { j } else { best_j };
            best_err = if better { err } else { best_err };
        }
        (best_j, best_err)
    }

    #[inline(always)]
    fn refit_sums(&mut self, grid: &AffineGrid) -> RefitSums {
        let s = self.s;
        let gl = GridLanes::new(s, &self.coder, grid);
        let z = s.splat_f(0.0);
        let mut sums = [z; 4];
        for v in self.full {
            let v = s.load_f(v);
            let c = self.coder.levels(s, v, &gl);
            add_refit(s, &mut sums, [c, s.mul_f(c, c), v, s.mul_f(c, v)]);
        }
        if let Some((v, m)) = self.tail {
            let v = s.load_f(v);
            let c = self.coder.levels(s, v, &gl);
            let terms = [c, s.mul_f(c, c), v, s.mul_f(c, v)];
            let terms = [
                masked(s, terms[0], m),
                masked(s, terms[1], m),
                masked(s, terms[2], m),
                masked(s, terms[3], m),
            ];
            add_refit(s, &mut sums, terms);
        }
        let [sc, scc, sw, scw] = sums;
        RefitSums {
            n: self.n,
            c: LaneSums(s.to_f32s(sc)),
            cc: LaneSums(s.to_f32s(scc)),
            w: LaneSums(s.to_f32s(sw)),
            cw: LaneSums(s.to_f32s(scw)),
        }
    }
}

/// Adds a chunk's refit terms (`c`, `c²`, `w`, `c·w`) to the sums.
#[inline(always)]
fn add_refit<S: Lanes>(s: S, sums: &mut [S::F; 4], terms: [S::F; 4]) {
    for (a, t) in sums.iter_mut().zip(terms) {
        *a = s.add_f(*a, t);
    }
}

/// A group as 8-lane chunks: its whole chunks (borrowed), and its last, short one
/// zero-padded with the mask bits of its weights (0 when there is none).
struct Staged<'g> {
    full: &'g [[f32; 8]],
    tail: [f32; 8],
    tail_bits: u32,
}

/// A group staged, and its `[min(x, 0), max(x, 0)]` (padding zeros change neither).
#[inline(always)]
fn stage<S: Lanes>(s: S, x: &[f32]) -> (Staged<'_>, f32, f32) {
    let (full, rest) = x.as_chunks::<8>();
    let mut tail = [0f32; 8];
    // Tested first: an empty copy is still a call to `memcpy`.
    if !rest.is_empty() {
        tail[..rest.len()].copy_from_slice(rest);
    }
    let z = s.splat_f(0.0);
    let (mut lo, mut hi) = (z, z);
    for v in full {
        let v = s.load_f(v);
        lo = s.min_f(lo, v);
        hi = s.max_f(hi, v);
    }
    if !rest.is_empty() {
        let v = s.load_f(&tail);
        lo = s.min_f(lo, v);
        hi = s.max_f(hi, v);
    }
    let tail_bits = (1u32 << rest.len()) - 1;
    let st = Staged {
        full,
        tail,
        tail_bits,
    };
    (st, s.hmin_f(lo), s.hmax_f(hi))
}

/// A group's `[min(x, 0), max(x, 0)]` in lanes, as [`stage`] takes it.
#[inline(always)]
fn range<S: Lanes>(s: S, x: &[f32]) -> (f32, f32) {
    let (_, lo, hi) = stage(s, x);
    (lo, hi)
}

/// Columns `start..` of `row`, a segment's worth, as f32 in `buf` (not rotated); with
/// `CHECK`, rejecting a weight no format may hold as [`load_segment`] does. The
/// conversion and the check run as branch-free passes over the segment (which
/// vectorize; the f32 value is valid exactly when the element's `abs_bits` is), and only
/// a segment with a rejected weight goes through `load_segment` again to report the
/// first.
#[inline(always)]
fn load<S: Lanes, T: Element, const CHECK: bool>(
    s: S,
    row: &[T],
    start: usize,
    buf: &mut [f32; MAX_SEGMENT],
    job: &RowJob,
    r: usize,
) -> Result<usize> {
    let seg = &row[start..(start + MAX_SEGMENT).min(row.len())];
    let values = &mut buf[..seg.len()];
    super::weights_to_f32(s, <T as Sealed>::weights(seg), values);
    if CHECK {
        let mut bad = false;
        for v in values.iter() {
            bad |= !is_valid_abs_bits(v.to_bits() & 0x7FFF_FFFF);
        }
        if bad {
            return load_segment(row, start, buf, None, job, r);
        }
    }
    Ok(seg.len())
}

/// The passes over a group staged by [`stage`].
#[inline(always)]
fn passes<'g, S: Lanes, const BOOK: bool>(
    s: S,
    st: &'g Staged<'g>,
    n: usize,
    coder: Coder<S, BOOK>,
) -> LanePasses<'g, S, BOOK> {
    // Not `bool::then`: a closure may be left out of line, without the ISA's features.
    let tail = if st.tail_bits != 0 {
        Some((&st.tail, s.mask_from_bits(st.tail_bits)))
    } else {
        None
    };
    LanePasses {
        s,
        full: st.full,
        tail,
        n: n as u32,
        coder,
    }
}

/// 8 codes below `2^bits` (byte `j`: code `j`) packed `bits` apart, LSB first, as a row
/// stores them: pairs, then fours, then the eight.
#[inline(always)]
fn pack8(x: u64, bits: u32) -> u64 {
    const PAIRS: u64 = 0x00FF_00FF_00FF_00FF;
    const FOURS: u64 = 0x0000_FFFF_0000_FFFF;
    let x = (x & PAIRS) | ((x >> 8) & PAIRS) << bits;
    let x = (x & FOURS) | ((x >> 16) & FOURS) << (2 * bits);
    (x & 0xFFFF_FFFF) | (x >> 32) << (4 * bits)
}

/// Packs a group's staged codes into a row's codes from code `first` on. Widths other
/// than 4 and 8 go 8 codes (`bits` whole bytes) at a time where `first` is a multiple of
/// 8: each 8 written as one 8-byte store where the row has room (the bytes past its
/// `bits` are zero, and belong to codes not yet written, so they stay zero), the rest
/// one code at a time.
#[inline(always)]
fn pack_group_codes<S: Lanes>(s: S, row_codes: &mut [u8], first: usize, staged: &[u8], bits: u8) {
    if bits == 4 || bits == 8 || !first.is_multiple_of(8) {
        pack_codes(s, row_codes, first, staged, bits);
        return;
    }
    let b = usize::from(bits);
    let (eights, rest) = staged.as_chunks::<8>();
    for (c, e) in eights.iter().enumerate() {
        let v = pack8(u64::from_le_bytes(*e), u32::from(bits)).to_le_bytes();
        let at = (first / 8 + c) * b;
        match row_codes.get_mut(at..at + 8) {
            Some(dst) => dst.copy_from_slice(&v),
            None => row_codes[at..at + b].copy_from_slice(&v[..b]),
        }
    }
    let done = staged.len() - rest.len();
    for (i, &code) in rest.iter().enumerate() {
        put_code(row_codes, first + done + i, bits, code);
    }
}

/// Quantizes whole rows into format v3 (the oracle's bytes, see the module docs).
#[inline(always)]
pub(crate) fn quantize_rows_v3<S: Lanes>(
    s: S,
    w: Weights<'_>,
    job: &RowJob,
    out: &mut RowsOut<'_>,
) -> Result<RowsDone> {
    if job.params.uses_codebook() {
        crate::with_weights!(w, src => quantize_rows_typed::<S, _, true>(s, src, job, out))
    } else {
        crate::with_weights!(w, src => quantize_rows_typed::<S, _, false>(s, src, job, out))
    }
}

#[inline(always)]
fn quantize_rows_typed<S: Lanes, T: Element, const BOOK: bool>(
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
    let coder = Coder::<S, BOOK>::new(s, &fp);
    let mut buf = [0f32; MAX_SEGMENT];
    let mut staged = [0u8; MAX_CHUNKS * 8];
    for r in 0..walk.rows {
        let row = &src[r * cols..(r + 1) * cols];
        // Pass 1: the extent of the row's rotated groups.
        let mut extent = RowExtent::default();
        for start in (0..cols).step_by(MAX_SEGMENT) {
            let n = load::<S, T, true>(s, row, start, &mut buf, job, r)?;
            if let Some(rot) = rotation {
                forward_at(s, rot, start, &mut buf[..n]);
            }
            for chunk in buf[..n].chunks(g) {
                let (lo, hi) = range(s, chunk);
                extent.add_group(lo, hi, 0.0);
            }
        }
        let units = extent.units(job);
        let row_out = walk.row(out, r);
        write_units(row_out.records, &units);
        // Pass 2: each group's grid and codes.
        for start in (0..cols).step_by(MAX_SEGMENT) {
            // Pass 1 validated the row.
            let n = load::<S, T, false>(s, row, start, &mut buf, job, r)?;
            if let Some(rot) = rotation {
                forward_at(s, rot, start, &mut buf[..n]);
            }
            for (k, chunk) in buf[..n].chunks(g).enumerate() {
                let (st, lo, hi) = stage(s, chunk);
                let mut p = passes(s, &st, chunk.len(), coder);
                let grid = search_group(&mut p, lo, hi, &units, &fp);
                let gl = GridLanes::new(s, &coder, &grid);
                let (eights, _) = staged.as_chunks_mut::<8>();
                for (v, o) in st.full.iter().zip(eights.iter_mut()) {
                    *o = s.narrow_bytes(coder.codes(s, s.load_f(v), &gl));
                }
                if st.tail_bits != 0 {
                    let o = &mut eights[st.full.len()];
                    *o = s.narrow_bytes(coder.codes(s, s.load_f(&st.tail), &gl));
                }
                let first = start + k * g;
                let codes = &staged[..chunk.len()];
                pack_group_codes(s, row_out.codes, first, codes, fp.bits);
                write_record(row_out.records, first / g, &grid);
            }
        }
    }
    Ok(RowsDone::default())
}

#[cfg(all(test, feature = "std"))]
mod tests;
