//! Format v3's f32-activation dot products over lanes: `dot_row` and `gemv`, each
//! group's `d·Σ L[c]·x + m·Σ x` with `x` in the rotated basis (rotated once per pass of
//! [`PASS`] columns for a gemv, a segment at a time for one row).
//!
//! A segment at a time ([`dot_segment`]): the groups' `(d, m)` are made 8 at a time in
//! lanes, `Σ m·Σ x` is one multiply-add per 8 groups, and the groups run one lean loop
//! per code width ([`lean_groups`], a row's short last group included): `Σ L[c]·x` in
//! lanes (FMA), times `d` once per group. At 4 bits, in whole groups of 32 or more, 32
//! codes a step are split in nibble planes, looked up in the code book as bytes and moved
//! to their lanes by shifts, against activations put in that order once per pass
//! ([`PLANES_ORDER`]). A row's sums are totalled once per pass ([`PassSum`]) in `gemv` and
//! `dot_row` alike, so the gemv equals the dot product bit for bit; both stay within
//! [`dot_tolerance`](crate::kernels::dot_tolerance) of the oracle.

use super::decode_v3::{codes8, level_unit, record_fields};
use super::rotate::forward_at;
use super::{arrays, halves, Lanes};
use crate::affine::RowUnits;
use crate::error::Result;
use crate::format::{code_at, PackedTensor};
use crate::kernels::{check_activations, check_gemv_out};
use crate::params::{FormatParams, CODEBOOK_4BIT};
use crate::rotate::{Rotation, MAX_SEGMENT};

/// Segments of `x` one [`gemv_v3`] pass rotates together (a 16 KiB stack buffer), so
/// that each row's codes for the pass are read in one sweep.
const PASS_SEGMENTS: usize = 8;
/// Columns of one pass.
const PASS: usize = PASS_SEGMENTS * MAX_SEGMENT;
/// Most groups of one pass (groups have at least 16 columns).
const PASS_GROUPS: usize = PASS / 16;

/// Columns `start..start + xs.len()` of `x` (`start` a multiple of [`MAX_SEGMENT`]) in
/// the rotated basis, in `xs`, and `Σ x` of each of their groups in `sums`; each 32
/// columns of a segment's whole groups put in [`PLANES_ORDER`] where [`lean_groups`]
/// reads their codes in nibble planes (4-bit codes in groups of 32 or more).
#[inline(always)]
fn rotate_pass<S: Lanes>(
    s: S,
    rotation: Option<&Rotation>,
    x: &[f32],
    start: usize,
    xs: &mut [f32],
    fp: &FormatParams,
    sums: &mut [f32],
) {
    let g = usize::from(fp.group_size);
    xs.copy_from_slice(&x[start..start + xs.len()]);
    if let Some(rot) = rotation {
        forward_at(s, rot, start, xs);
    }
    for (sum, xg) in sums.iter_mut().zip(xs.chunks(g)) {
        let (whole, rest) = arrays::<f32, 8>(xg);
        let v = whole.fold(s.splat_f(0.0), |v, xc| s.add_f(v, s.load_f(xc)));
        *sum = s.hsum_f(v) + rest.iter().sum::<f32>();
    }
    if fp.uses_codebook() && g >= 32 {
        for seg in xs.chunks_mut(MAX_SEGMENT) {
            let whole = whole_columns(g, seg.len());
            for c in seg[..whole].as_chunks_mut::<32>().0 {
                let column = *c;
                for (v, &from) in c.iter_mut().zip(&PLANES_ORDER) {
                    *v = column[from];
                }
            }
        }
    }
}

/// The column of 32 whose activation goes to place `8j + k`: 16 bytes of 4-bit codes
/// split in nibble planes ([`Lanes::nibble_planes`]: byte `b < 16` holds column `2b`,
/// byte `16 + b` column `2b + 1`) are read by their place in a 4-byte word
/// ([`Lanes::byte_lanes`]: lane `k` of vector `j` is byte `4k + j`), so the activations
/// of a segment read that way are put in the same order once per pass instead of the
/// codes being shuffled back for every row.
const PLANES_ORDER: [usize; 32] = {
    let mut order = [0usize; 32];
    let mut j = 0;
    while j < 4 {
        let mut k = 0;
        while k < 8 {
            let b = 4 * k + j;
            order[8 * j + k] = if b < 16 { 2 * b } else { 2 * (b - 16) + 1 };
            k += 1;
        }
        j += 1;
    }
    order
};

/// A row's running dot product over one [`gemv_v3`] pass: each group's `d·Σ L[c]·x` and
/// `m·Σ x` in lanes, a short last group's tail in a scalar, totalled once per pass
/// ([`PassSum::total`]), where [`dot_row_v3`] totals it too, so both give the same bits.
#[derive(Clone, Copy)]
struct PassSum<S: Lanes> {
    /// `Σ d·(Σ L[c]·x)`.
    lanes: S::F,
    /// `Σ m·Σ x`, 8 groups a vector.
    offsets: S::F,
    scalar: f32,
}

impl<S: Lanes> PassSum<S> {
    #[inline(always)]
    fn new(s: S) -> Self {
        PassSum {
            lanes: s.splat_f(0.0),
            offsets: s.splat_f(0.0),
            scalar: 0.0,
        }
    }

    #[inline(always)]
    fn total(self, s: S) -> f32 {
        self.scalar + s.hsum_f(s.add_f(self.lanes, self.offsets))
    }
}

/// Most groups of one segment.
const SEGMENT_GROUPS: usize = MAX_SEGMENT / 16;

/// Adds to `sum` the groups of one segment of a row (columns `start..start + xs.len()`,
/// at most [`MAX_SEGMENT`]): `d·Σ L[c]·x + m·Σ x`, with `Σ x` of each group from `sums`
/// (`xs` rotated). The groups' `(d, m)` are made 8 at a time in lanes first, so the
/// group loop only broadcasts its `d`, and `Σ m·Σ x` is one multiply-add per 8 groups.
#[inline(always)]
fn dot_segment<S: Lanes>(
    s: S,
    fp: &FormatParams,
    (records, codes, units): (&[u8], &[u8], &RowUnits),
    start: usize,
    (xs, sums): (&[f32], &[f32]),
    sum: &mut PassSum<S>,
) {
    let g = usize::from(fp.group_size);
    let first = start / g;
    let n = sums.len().min(SEGMENT_GROUPS);
    // Each group's `(d, m)` as `step_min` computes them, in lanes.
    let mut steps = [0f32; SEGMENT_GROUPS];
    let mut padded = [0f32; SEGMENT_GROUPS];
    padded[..n].copy_from_slice(&sums[..n]);
    let (step_unit, min_unit) = (s.splat_f(units.step_unit), s.splat_f(units.min_unit));
    let sign = s.splat_u(0x8000_0000);
    let mut offsets = sum.offsets;
    for (k, (st, xsum)) in steps
        .as_chunks_mut::<8>()
        .0
        .iter_mut()
        .zip(padded.as_chunks::<8>().0)
        .enumerate()
        .take(n.div_ceil(8))
    {
        // Up to 7 padding groups past the segment read whatever fields lie there (or 0
        // past the records): finite (q ≤ 63 times finite units), and times `Σ x = 0`.
        let mut fields = [0u32; 8];
        for (i, f) in fields.iter_mut().enumerate() {
            *f = record_fields(records, first + k * 8 + i);
        }
        let fields = s.load_u(&fields);
        let step = s.mul_f(s.int_to_float(s.and(fields, s.splat_u(63))), step_unit);
        let min = s.mul_f(s.int_to_float(s.shr(fields, 6)), min_unit);
        let min = s.float_of_bits(s.xor(s.bits(min), sign));
        s.store_f(step, st);
        // Padding groups have `Σ x = 0`.
        offsets = s.mul_add(min, s.load_f(xsum), offsets);
    }
    let unit = level_unit(fp);
    // The row's codes from the segment's first (a multiple of 512 columns, so a whole
    // byte) on: a row's short last group is read up to the row's end.
    let seg_codes = &codes[start * usize::from(fp.bits) / 8..];
    let steps = &steps[..n];
    let so_far = PassSum { offsets, ..*sum };
    *sum = match fp.bits {
        2 => lean_groups::<S, 2>(s, seg_codes, xs, steps, g, unit, so_far),
        3 => lean_groups::<S, 3>(s, seg_codes, xs, steps, g, unit, so_far),
        4 => lean_groups::<S, 4>(s, seg_codes, xs, steps, g, unit, so_far),
        5 => lean_groups::<S, 5>(s, seg_codes, xs, steps, g, unit, so_far),
        6 => lean_groups::<S, 6>(s, seg_codes, xs, steps, g, unit, so_far),
        7 => lean_groups::<S, 7>(s, seg_codes, xs, steps, g, unit, so_far),
        _ => lean_groups::<S, 8>(s, seg_codes, xs, steps, g, unit, so_far),
    };
}

/// `sum` plus `d·Σ L[c]·x` of one segment's groups of `BITS`-wide codes (`codes` the
/// row's codes from the segment's first, `xs` its rotated activations, `steps` each
/// group's `d`, `unit` what a level is worth): per group, lane sums of `L[c]·x` (`L[c]`
/// the code book's eighths at 4 bits, else `c`) times `d·unit` once. Whole groups go 16
/// codes a step, or 32 at 4 bits in groups of 32 or more (their activations then in
/// [`PLANES_ORDER`]); a row's short last group goes 16, then 8 codes a step in column
/// order, its last few columns one at a time into the scalar.
#[inline(always)]
fn lean_groups<S: Lanes, const BITS: u8>(
    s: S,
    codes: &[u8],
    xs: &[f32],
    steps: &[f32],
    g: usize,
    unit: f32,
    mut sum: PassSum<S>,
) -> PassSum<S> {
    let (whole, short) = xs.split_at(whole_columns(g, xs.len()));
    let mut acc = sum.lanes;
    if BITS == 4 && g >= 32 {
        // 32 codes (16 bytes) at a time: split in nibble planes, looked up in the code
        // book (`vpshufb`/`tbl`), each byte to its 32-bit lane by shifts and masks;
        // the segment's activations are in the matching order ([`PLANES_ORDER`]).
        let book = s.load_b2(&CODEBOOK_4BIT, &CODEBOOK_4BIT);
        let z = s.splat_f(0.0);
        let (x32, _) = whole.as_chunks::<32>();
        let (c32, _) = codes.as_chunks::<16>();
        let per_group = g / 32;
        for ((xg, cg), &step) in x32
            .chunks_exact(per_group)
            .zip(c32.chunks_exact(per_group))
            .zip(steps)
        {
            let mut d = [z; 4];
            for (xc, cb) in xg.iter().zip(cg) {
                let levels = s.byte_lanes(s.shuffle_b(book, s.nibble_planes(cb)));
                let (xc, _) = xc.as_chunks::<8>();
                for ((dk, lk), xk) in d.iter_mut().zip(levels).zip(xc) {
                    *dk = s.mul_add(s.int_to_float(lk), s.load_f(xk), *dk);
                }
            }
            let sum = s.add_f(s.add_f(d[0], d[1]), s.add_f(d[2], d[3]));
            acc = s.mul_add(sum, s.splat_f(step * unit), acc);
        }
    } else {
        for (k, (xg, &step)) in whole.chunks_exact(g).zip(steps).enumerate() {
            let d = sixteens::<S, BITS>(s, codes, k * g, xg.as_chunks::<16>().0);
            acc = s.mul_add(d, s.splat_f(step * unit), acc);
        }
    }
    if !short.is_empty() {
        let first = whole.len();
        let step = steps[first / g];
        let (x16, rest) = short.as_chunks::<16>();
        let mut d = sixteens::<S, BITS>(s, codes, first, x16);
        let mut done = first + x16.len() * 16;
        if let Some(x8) = rest.first_chunk::<8>() {
            d = s.mul_add(
                s.int_to_float(levels8::<S, BITS>(s, codes, done)),
                s.load_f(x8),
                d,
            );
            done += 8;
        }
        let mut tail = 0f32;
        for (i, &xi) in xs.iter().enumerate().skip(done) {
            let c = code_at(codes, i, BITS);
            let level = if BITS == 4 {
                CODEBOOK_4BIT[usize::from(c)]
            } else {
                c
            };
            tail += f32::from(level) * xi;
        }
        acc = s.mul_add(d, s.splat_f(step * unit), acc);
        sum.scalar += tail * (step * unit);
    }
    sum.lanes = acc;
    sum
}

/// Columns of a segment of `len` that are whole groups of `g`: all but a row's short
/// last group.
#[inline(always)]
fn whole_columns(g: usize, len: usize) -> usize {
    len / g * g
}

/// `Σ L[c]·x` in lanes of codes `i..` against `x16`, in column order, 16 codes a step.
#[inline(always)]
fn sixteens<S: Lanes, const BITS: u8>(s: S, codes: &[u8], i: usize, x16: &[[f32; 16]]) -> S::F {
    let z = s.splat_f(0.0);
    let (mut d0, mut d1) = (z, z);
    for (c, xc) in x16.iter().enumerate() {
        let (x0, x1) = halves(xc);
        let at = i + 16 * c;
        let (l0, l1) = (
            levels8::<S, BITS>(s, codes, at),
            levels8::<S, BITS>(s, codes, at + 8),
        );
        d0 = s.mul_add(s.int_to_float(l0), s.load_f(x0), d0);
        d1 = s.mul_add(s.int_to_float(l1), s.load_f(x1), d1);
    }
    s.add_f(d0, d1)
}

/// The integer levels of codes `i..i + 8` (`i` a multiple of 8): the code book's
/// eighths at 4 bits, else the codes.
#[inline(always)]
fn levels8<S: Lanes, const BITS: u8>(s: S, codes: &[u8], i: usize) -> S::U {
    let c = codes8(s, codes, i, BITS);
    if BITS == 4 {
        s.lookup16(&CODEBOOK_4BIT, c)
    } else {
        c
    }
}

/// Dot product of one v3 row with `x`: `x` rotated a segment at a time (lanes), then each
/// group's `d·Σ L[c]·x + m·Σ x` (see the module docs), totalled every [`PASS`] columns as
/// [`gemv_v3`] totals them.
#[inline(always)]
pub(crate) fn dot_row_v3<S: Lanes>(s: S, t: &PackedTensor<'_>, r: usize, x: &[f32]) -> Result<f32> {
    check_activations(t, x)?;
    let fp = t.params();
    let row = t.row(r)?;
    let units = t.units_of(&row);
    let g = usize::from(fp.group_size);
    let rotation = t.info().rotation;
    let mut buf = [0f32; MAX_SEGMENT];
    let mut sums = [0f32; MAX_SEGMENT / 16];
    let mut acc = 0f32;
    let mut pass = PassSum::new(s);
    for start in (0..x.len()).step_by(MAX_SEGMENT) {
        let n = MAX_SEGMENT.min(x.len() - start);
        let (xs, sums) = (&mut buf[..n], &mut sums[..n.div_ceil(g)]);
        rotate_pass(s, rotation.as_ref(), x, start, xs, &fp, sums);
        let parts = (row.records, row.codes, &units);
        dot_segment(s, &fp, parts, start, (xs, sums), &mut pass);
        if (start + n).is_multiple_of(PASS) || start + n == x.len() {
            acc += pass.total(s);
            pass = PassSum::new(s);
        }
    }
    Ok(acc)
}

/// `y = W x` for a v3 tensor: `x` rotated once, [`PASS_SEGMENTS`] segments at a time,
/// and every row's share of each pass added as [`dot_row_v3`] adds it (the same bits).
#[inline(always)]
pub(crate) fn gemv_v3<S: Lanes>(
    s: S,
    t: &PackedTensor<'_>,
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    check_activations(t, x)?;
    check_gemv_out(t, y)?;
    let fp = t.params();
    let g = usize::from(fp.group_size);
    let rotation = t.info().rotation;
    let mut buf = [0f32; PASS];
    let mut sums = [0f32; PASS_GROUPS];
    y.fill(0.0);
    for pass in (0..x.len()).step_by(PASS) {
        let n = PASS.min(x.len() - pass);
        let (xs, sums) = (&mut buf[..n], &mut sums[..n.div_ceil(g)]);
        rotate_pass(s, rotation.as_ref(), x, pass, xs, &fp, sums);
        for (r, out) in y.iter_mut().enumerate() {
            let row = t.row(r)?;
            let units = t.units_of(&row);
            let parts = (row.records, row.codes, &units);
            let mut sum = PassSum::new(s);
            let per_segment = MAX_SEGMENT / g;
            for (k, seg) in xs.chunks(MAX_SEGMENT).enumerate() {
                let seg_sums = &sums[k * per_segment..sums.len().min((k + 1) * per_segment)];
                dot_segment(
                    s,
                    &fp,
                    parts,
                    pass + k * MAX_SEGMENT,
                    (seg, seg_sums),
                    &mut sum,
                );
            }
            *out += sum.total(s);
        }
    }
    Ok(())
}
