//! Reading format v3 rows over lanes: dequantization (bit-identical to the oracle's
//! `L[c]·d + m`, a multiply then an add, then the same inverse rotation, the codes
//! decoded straight into its first pass), and the int8-activation dot products (the f32
//! ones are `dot_v3.rs`).
//!
//! Codes of any width load 8 at a time ([`codes8`]); at 4 bits a code indexes the code
//! book, looked up in lanes ([`Lanes::lookup16`]) as integer eighths `CODEBOOK_4BIT[c]`.
//! The int8 dot product sums
//! `Σ L[c]·q` exactly (32 codes at a time as bytes, `maddubs`-style, several rows sharing
//! each activation load: [`gemv_q8_rows_v3`]) and then does the reference's f32
//! arithmetic per group, so it equals [`dot_row_q8_ref`] bit for bit.

use super::code_chunks::{with_v3_code_chunks, CodeChunks};
use super::decode::{load_codes8, nibbles8};
use super::rotate::{inverse_at, rotate_from, SignWords, Source};
use super::row_blocks::{in_row_blocks, RowsDot};
use super::{arrays, arrays_mut, halves, Lanes};
use crate::affine::RowUnits;
use crate::error::Result;
use crate::format::record_v3::{read_record, RECORD_BITS, UNIT_BYTES};
use crate::format::{code_at, PackedTensor};
use crate::kernels::check_row_range;
use crate::kernels::q8::{dot_row_q8_ref, Q8Activations};
use crate::params::{FormatParams, CODEBOOK_4BIT};

/// The 8 `bits`-wide codes from code `i` (a multiple of 8) of a row, as lanes.
#[inline(always)]
pub(super) fn codes8<S: Lanes>(s: S, codes: &[u8], i: usize, bits: u8) -> S::U {
    match bits {
        4 | 8 => load_codes8(s, codes, i, bits),
        _ => {
            // 8 codes of `b` bits are `b` whole bytes: codes 0–3 in the low dword,
            // codes 4–7 from bit `4b`.
            let b = u32::from(bits);
            let at = i * bits as usize / 8;
            let word = match codes.get(at..at + 8) {
                Some(w) => u64::from_le_bytes(w.try_into().expect("8 bytes")),
                None => {
                    let rest = codes.get(at..).unwrap_or(&[]);
                    let mut w = [0u8; 8];
                    let n = rest.len().min(8);
                    w[..n].copy_from_slice(&rest[..n]);
                    u64::from_le_bytes(w)
                }
            };
            let halves = s.select_u(
                s.mask_from_bits(0xF0),
                s.splat_u((word >> (4 * b)) as u32),
                s.splat_u(word as u32),
            );
            let shifts = s.load_u(&[0, b, 2 * b, 3 * b, 0, b, 2 * b, 3 * b]);
            s.and(s.shr_lanes(halves, shifts), s.splat_u((1 << b) - 1))
        }
    }
}

/// The integer levels of 8 codes: `CODEBOOK_4BIT[c]` (eighths) with the code book, else `c`.
#[inline(always)]
pub(super) fn int_levels8<S: Lanes>(s: S, codes: &[u8], i: usize, fp: &FormatParams) -> S::U {
    let c = codes8(s, codes, i, fp.bits);
    if fp.uses_codebook() {
        s.lookup16(&CODEBOOK_4BIT, c)
    } else {
        c
    }
}

/// What one integer level is worth: `1/8` with the code book, else 1.
#[inline(always)]
pub(super) fn level_unit(fp: &FormatParams) -> f32 {
    if fp.uses_codebook() {
        0.125
    } else {
        1.0
    }
}

/// A group's `(d, m)` as [`AffineGrid::new`](crate::affine::AffineGrid::new) computes
/// them (without its reciprocal).
#[inline(always)]
fn step_min(records: &[u8], gi: usize, units: &RowUnits) -> (f32, f32) {
    let fields = record_fields(records, gi);
    (
        (fields & 63) as f32 * units.step_unit,
        -((fields >> 6) as f32 * units.min_unit),
    )
}

/// Dequantizes columns `start..start + out.len()` of a v3 row (whole rotation segments,
/// or reaching the row's end), bit-identical to the oracle's `L[c]·d + m` then inverse
/// rotation. Returns the outliers decoded: none.
///
/// Where the rows' blocks are whole registers (segments of at least 8 columns, `out` a
/// multiple of 8), the codes are decoded straight into the inverse rotation's first
/// pass ([`Decoded`]), so the unrotated values are never stored; otherwise they are
/// decoded first, then rotated in place.
#[inline(always)]
pub(crate) fn dequantize_row_v3<S: Lanes>(
    s: S,
    t: &PackedTensor<'_>,
    r: usize,
    start: usize,
    out: &mut [f32],
) -> Result<usize> {
    let fp = t.params();
    let row = t.row(r)?;
    let units = t.units_of(&row);
    match t.info().rotation {
        Some(rot) if rot.segment() >= 8 && out.len().is_multiple_of(8) => {
            if fp.uses_codebook() {
                let mut src = Decoded::<S, true>::new(s, &fp, row.records, row.codes, units);
                rotate_from(s, &rot, start, out, &mut src, true);
            } else {
                let mut src = Decoded::<S, false>::new(s, &fp, row.records, row.codes, units);
                rotate_from(s, &rot, start, out, &mut src, true);
            }
        }
        rotation => {
            decode_unrotated(s, &fp, (row.records, row.codes, &units), start, out);
            if let Some(rot) = rotation {
                inverse_at(s, &rot, start, out);
            }
        }
    }
    Ok(0)
}

/// `L[c]·d + m` of columns `start..start + out.len()` of a row, 8 codes at a time (the
/// oracle's multiply then add), before any rotation.
#[inline(always)]
fn decode_unrotated<S: Lanes>(
    s: S,
    fp: &FormatParams,
    (records, codes, units): (&[u8], &[u8], &RowUnits),
    start: usize,
    out: &mut [f32],
) {
    let g = usize::from(fp.group_size);
    let unit = s.splat_f(level_unit(fp));
    for (gi, chunk) in out.chunks_mut(g).enumerate() {
        let (step, min) = step_min(records, start / g + gi, units);
        let base = start + gi * g;
        let (step_v, min_v) = (s.splat_f(step), s.splat_f(min));
        let whole = chunk.len() / 8 * 8;
        for (c, o) in arrays_mut::<f32, 8>(chunk).enumerate() {
            let levels = s.int_to_float(int_levels8(s, codes, base + c * 8, fp));
            // `FormatParams::level` is `T[c]·0.125` (exact), then `L·d + m`.
            let levels = if fp.uses_codebook() {
                s.mul_f(levels, unit)
            } else {
                levels
            };
            s.store_f(s.add_f(s.mul_f(levels, step_v), min_v), o);
        }
        for (i, o) in chunk.iter_mut().enumerate().skip(whole) {
            *o = fp.level(code_at(codes, base + i, fp.bits)) * step + min;
        }
    }
}

/// A row's values for the inverse rotation's first pass, a run of registers at a time: the
/// oracle's `(L[c]·d + m)·scale` (then the butterflies). With the code book (`BOOK`)
/// each group's 16 possible values are made once, by those same operations, and looked
/// up by code; other widths compute them per code.
struct Decoded<'r, S: Lanes, const BOOK: bool> {
    records: &'r [u8],
    codes: &'r [u8],
    units: RowUnits,
    bits: u8,
    /// `log2` of the group size (a power of two in v3).
    g_shift: u32,
    /// The code book's levels (`T[c]·0.125`), entries 0–7 and 8–15.
    book: [S::F; 2],
    /// The block's scale.
    scale: S::F,
    /// The group whose constants below are loaded (`usize::MAX`: none).
    group: usize,
    /// Uniform widths: the group's step and minimum.
    step: S::F,
    min: S::F,
    /// The code book: the group's 16 values, scaled, as f32 bits.
    table: [S::U; 2],
}

impl<'r, S: Lanes, const BOOK: bool> Decoded<'r, S, BOOK> {
    #[inline(always)]
    fn new(s: S, fp: &FormatParams, records: &'r [u8], codes: &'r [u8], units: RowUnits) -> Self {
        let (lo, hi) = halves(&CODEBOOK_4BIT);
        let widen = |t: &[u8; 8]| -> [u32; 8] {
            let mut w = [0u32; 8];
            for (w, &t) in w.iter_mut().zip(t) {
                *w = u32::from(t);
            }
            w
        };
        let unit = s.splat_f(level_unit(fp));
        let z = s.splat_f(0.0);
        Decoded {
            records,
            codes,
            units,
            bits: fp.bits,
            g_shift: fp.group_size.trailing_zeros(),
            book: [
                s.mul_f(s.int_to_float(s.load_u(&widen(lo))), unit),
                s.mul_f(s.int_to_float(s.load_u(&widen(hi))), unit),
            ],
            scale: z,
            group: usize::MAX,
            step: z,
            min: z,
            table: [s.splat_u(0); 2],
        }
    }

    /// Loads group `gi`'s constants.
    #[inline(always)]
    fn enter(&mut self, s: S, gi: usize) {
        let (step, min) = step_min(self.records, gi, &self.units);
        let (step, min) = (s.splat_f(step), s.splat_f(min));
        if BOOK {
            // Spelled out, not a closure: it may be left out of line, without the ISA's
            // features.
            let [lo, hi] = self.book;
            self.table = [
                s.bits(s.mul_f(s.add_f(s.mul_f(lo, step), min), self.scale)),
                s.bits(s.mul_f(s.add_f(s.mul_f(hi, step), min), self.scale)),
            ];
        } else {
            (self.step, self.min) = (step, min);
        }
        self.group = gi;
    }
}

impl<S: Lanes, const BOOK: bool> Source<S> for Decoded<'_, S, BOOK> {
    #[inline(always)]
    fn begin_block(&mut self, s: S, scale: f32) {
        self.scale = s.splat_f(scale);
        // The code book's table holds the scale: made again in the new block.
        self.group = usize::MAX;
    }

    #[inline(always)]
    fn load_run<const V: usize>(
        &mut self,
        s: S,
        col: usize,
        _: &[[f32; 8]],
        _: &SignWords,
    ) -> [S::F; V] {
        debug_assert!(col.is_multiple_of(8 * V), "a run off its alignment");
        // The code book's codes of the run, bounds-checked once (4 bits: `4V` bytes).
        let book_codes = if BOOK {
            self.codes.get(col / 2..col / 2 + 4 * V).unwrap_or(&[])
        } else {
            &[]
        };
        let mut v = [s.splat_f(0.0); V];
        // Groups are powers of two: a run of `8V` columns (`col` a multiple of `8V`) lies
        // in one group, whose constants then stay in registers for the whole run, or
        // (groups shorter than a run) starts a group every `g / 8` registers.
        let g_mask = (1usize << self.g_shift) - 1;
        if g_mask >= 8 * V - 1 {
            self.enter_group_of(s, col);
            for (k, vk) in v.iter_mut().enumerate() {
                *vk = self.decode8(s, col + 8 * k, book_codes.get(4 * k..4 * k + 4));
            }
        } else {
            for (k, vk) in v.iter_mut().enumerate() {
                let c = col + 8 * k;
                // `col` is itself a group start here (a multiple of `8V`, which `g`
                // divides).
                if c & g_mask == 0 {
                    self.enter_group_of(s, c);
                }
                *vk = self.decode8(s, c, book_codes.get(4 * k..4 * k + 4));
            }
        }
        v
    }
}

impl<S: Lanes, const BOOK: bool> Decoded<'_, S, BOOK> {
    /// Loads the constants of the group of column `col`, unless they are loaded.
    #[inline(always)]
    fn enter_group_of(&mut self, s: S, col: usize) {
        // A shift, not a division (a `div` per run costs more than its decode).
        let gi = col >> self.g_shift;
        if gi != self.group {
            self.enter(s, gi);
        }
    }

    /// Columns `col..col + 8` in the current group, `book_codes` their 4 bytes of code
    /// book codes when the run's were in bounds.
    #[inline(always)]
    fn decode8(&self, s: S, col: usize, book_codes: Option<&[u8]>) -> S::F {
        if BOOK {
            let codes = match book_codes {
                Some(b) => nibbles8(s, u32::from_le_bytes(b.try_into().expect("4 bytes"))),
                // A run past the codes (never in a parsed tensor): the checked load.
                None => codes8(s, self.codes, col, self.bits),
            };
            s.float_of_bits(s.lookup16_u(self.table, codes))
        } else {
            // A level is worth 1: `c·d + m`, then the scale (the oracle's multiply by a
            // scale of 1, which it skips, keeps the bits).
            let codes = codes8(s, self.codes, col, self.bits);
            let x = s.add_f(s.mul_f(s.int_to_float(codes), self.step), self.min);
            s.mul_f(x, self.scale)
        }
    }
}

/// [`dot_row_q8_v3`] at 2 or 3 bits (the widths without byte-lane unpackers): per
/// group `Σ c·q` in f32 lanes, 8 codes at a time. Exact, so the reference's bits: codes
/// are below 2^8 and `|q| ≤ 127`, so each product and a group's sum (at most 512 terms)
/// stay below 2^24.
#[inline(always)]
fn dot_row_q8_uniform<S: Lanes>(
    s: S,
    t: &PackedTensor<'_>,
    r: usize,
    a: &Q8Activations<'_>,
) -> Result<f32> {
    let fp = t.params();
    let g = usize::from(fp.group_size);
    let row = t.row(r)?;
    let units = t.units_of(&row);
    let (sign_at, wrap) = (s.splat_u(127), s.splat_f(256.0));
    let mut acc = 0f32;
    for (gi, qs) in a.q().chunks(g).enumerate() {
        let base = gi * g;
        let (whole, rest) = arrays::<i8, 8>(qs);
        let mut sum_v = s.splat_f(0.0);
        for (k, q8) in whole.enumerate() {
            let levels = s.int_to_float(codes8(s, row.codes, base + k * 8, fp.bits));
            // The bytes of `q` widened unsigned, then those above 127 made negative.
            let qu = s.widen_bytes(q8.map(|q| q as u8));
            let qf = s.int_to_float(qu);
            let qf = s.select_f(s.gt_i(qu, sign_at), s.sub_f(qf, wrap), qf);
            sum_v = s.add_f(sum_v, s.mul_f(levels, qf));
        }
        let mut isum = s.hsum_f(sum_v) as i32;
        let done = qs.len() - rest.len();
        for (i, &qi) in rest.iter().enumerate() {
            isum += i32::from(code_at(row.codes, base + done + i, fp.bits)) * i32::from(qi);
        }
        // The reference's arithmetic, in its order (a level is worth 1).
        let (step, min) = step_min(row.records, gi, &units);
        let sx = a.scales()[gi];
        acc += (sx * step) * isum as f32 + (sx * min) * a.sums()[gi] as f32;
    }
    Ok(acc)
}

/// Dot product of v3 row `r` with int8 activations (already in the rotated basis): one
/// row of [`gemv_q8_rows_v3`], so the reference's bits.
#[inline(always)]
pub(crate) fn dot_row_q8_v3<S: Lanes>(
    s: S,
    t: &PackedTensor<'_>,
    r: usize,
    a: &Q8Activations<'_>,
) -> Result<f32> {
    let mut y = [0f32];
    gemv_q8_rows_v3(s, t, r, a, &mut y)?;
    Ok(y[0])
}

/// Rows `first..first + y.len()` of `W x̂` for a v3 tensor with int8 activations (already
/// in the rotated basis): per group the exact integer `Σ L[c]·q`, 32 codes at a time as
/// bytes (the code book looked up, or 5- to 7-bit codes unpacked: [`CodeChunks`]) and
/// `maddubs`-style products (8-bit codes as their two nibbles), [`ROW_BLOCK`](super::row_blocks::ROW_BLOCK) rows at a time; then the reference's f32
/// arithmetic per group, so each output is the reference's bit for bit. 2- and 3-bit
/// codes take f32 lanes one row at a time; groups below 32 columns the reference.
#[inline(always)]
pub(crate) fn gemv_q8_rows_v3<S: Lanes>(
    s: S,
    t: &PackedTensor<'_>,
    first: usize,
    a: &Q8Activations<'_>,
    y: &mut [f32],
) -> Result<()> {
    check_row_range(t, first, y.len())?;
    a.check(t)?;
    let fp = t.params();
    if fp.group_size < 32 {
        for (i, out) in y.iter_mut().enumerate() {
            *out = dot_row_q8_ref(t, first + i, a)?;
        }
        return Ok(());
    }
    // Format v3: 4 bits is the code book.
    with_v3_code_chunks!(
        s,
        fp.bits,
        chunks => in_row_blocks(t, first, y, RowsV3 { s, t, a, chunks }),
        _ => {
            for (i, out) in y.iter_mut().enumerate() {
                *out = dot_row_q8_uniform(s, t, first + i, a)?;
            }
            Ok(())
        }
    )
}

/// [`dot_rows_q8`] as a [`RowsDot`].
struct RowsV3<'t, 'a, S, C> {
    s: S,
    t: &'t PackedTensor<'a>,
    a: &'t Q8Activations<'a>,
    chunks: C,
}

impl<S: Lanes, C: CodeChunks<S>> RowsDot for RowsV3<'_, '_, S, C> {
    #[inline(always)]
    fn rows<const N: usize>(&self, first: usize, out: &mut [f32; N]) -> Result<()> {
        dot_rows_q8(self.s, self.t, first, self.a, self.chunks, out)
    }
}

/// Rows `first..first + N` (`N <= 8`) of [`gemv_q8_rows_v3`] (groups of at least 32
/// columns). Row `n`'s f32 arithmetic runs in lane `n`: the reference's operations one
/// by one (no FMA), so its bits.
#[inline(always)]
fn dot_rows_q8<S: Lanes, C: CodeChunks<S>, const N: usize>(
    s: S,
    t: &PackedTensor<'_>,
    first: usize,
    a: &Q8Activations<'_>,
    chunks: C,
    out: &mut [f32; N],
) -> Result<()> {
    let fp = t.params();
    let g = usize::from(fp.group_size);
    // Row `n`'s records and codes (one bounds check for the block, not one per row).
    let (records, codes) = t.row_spans(first, N)?;
    let (rb, cb) = (records.len() / N, codes.len() / N);
    // A loop, not `from_fn`: the compiler leaves the closure out of line.
    let mut rows: [(&[u8], &[u8]); N] = [(&[], &[]); N];
    for (n, row) in rows.iter_mut().enumerate() {
        *row = (&records[n * rb..][..rb], &codes[n * cb..][..cb]);
    }
    // Lane `n`: row `n`'s units.
    let (mut step_units, mut min_units) = ([0f32; 8], [0f32; 8]);
    for (n, (records, _)) in rows.iter().enumerate() {
        (step_units[n], min_units[n]) = t.v3_units(records);
    }
    let units = LaneUnits {
        step: s.load_f(&step_units),
        min: s.load_f(&min_units),
        level: s.splat_f(level_unit(&fp)),
    };
    let mut acc = s.splat_f(0.0);
    for (gi, qs) in a.q().chunks(g).enumerate() {
        let base = gi * g;
        let rest = arrays::<i8, 32>(qs).1;
        // Each row's codes of the group's whole chunks.
        let at = base / 8 * C::BITS;
        let len = qs.len() / 32 * C::BYTES;
        // A loop, not `map`: the compiler leaves `map` out of line here, and the call makes
        // the group loop spill its vector registers.
        let mut codes: [&[u8]; N] = [&[]; N];
        for (codes, (_, row)) in codes.iter_mut().zip(&rows) {
            *codes = &row[at..at + len];
        }
        let mut isum = [s.splat_u(0); N];
        chunks.group_sums(s, &qs[..qs.len() - rest.len()], codes, &mut isum);
        let mut isum = hsums(s, isum);
        if !rest.is_empty() {
            let done = qs.len() - rest.len();
            let mut tail = [0u32; 8];
            for (n, (_, row)) in rows.iter().enumerate() {
                for (i, &qi) in rest.iter().enumerate() {
                    let c = code_at(row, base + done + i, fp.bits);
                    tail[n] = tail[n].wrapping_add((C::level(c) * i32::from(qi)) as u32);
                }
            }
            isum = s.add_i(isum, s.load_u(&tail));
        }
        let mut fields = [0u32; 8];
        for (f, (records, _)) in fields.iter_mut().zip(&rows) {
            *f = record_fields(records, gi);
        }
        let group = (s.load_u(&fields), isum);
        acc = add_group_q8(s, acc, &units, group, (a.scales()[gi], a.sums()[gi]));
    }
    let acc = s.to_f32s(acc);
    out.copy_from_slice(&acc[..N]);
    Ok(())
}

/// Each lane's row's step and minimum units, and what one integer level is worth.
pub(super) struct LaneUnits<S: Lanes> {
    /// The rows' step units (lane `n`: row `n`'s).
    pub(super) step: S::F,
    /// The rows' minimum units.
    pub(super) min: S::F,
    /// [`level_unit`] in every lane.
    pub(super) level: S::F,
}

/// `acc` plus one group's term of each lane's row: `fields` its record fields
/// (`q_d | q_m << 6`) and `isum` its exact `Σ L[c]·q`, beside the activations' group
/// scale and sum `(sx, Σ q)`; the reference's f32 arithmetic in its order (no FMA), so
/// its bits.
#[inline(always)]
pub(super) fn add_group_q8<S: Lanes>(
    s: S,
    acc: S::F,
    units: &LaneUnits<S>,
    (fields, isum): (S::U, S::U),
    (scale, sum): (f32, i32),
) -> S::F {
    // `step_min` in lanes: `q_d·d_unit`, `−(q_m·m_unit)` (the sign flipped, as `−`).
    let q_step = s.int_to_float(s.and(fields, s.splat_u(63)));
    let q_min = s.int_to_float(s.shr(fields, 6));
    let step = s.mul_f(q_step, units.step);
    let min = s.mul_f(q_min, units.min);
    let min = s.float_of_bits(s.xor(s.bits(min), s.splat_u(0x8000_0000)));
    // `acc += (sx·(d·unit))·Σ L·q + (sx·m)·Σ q`.
    let sx = s.splat_f(scale);
    let dense = s.mul_f(
        s.mul_f(sx, s.mul_f(step, units.level)),
        s.int_to_float(isum),
    );
    let offset = s.mul_f(s.mul_f(sx, min), s.splat_f(sum as f32));
    s.add_f(acc, s.add_f(dense, offset))
}

/// Group `g`'s 12 record bits (`q_d | q_m << 6`) of a row's records, as
/// [`read_record`] reads them, from one 4-byte load where the records allow.
#[inline(always)]
pub(super) fn record_fields(records: &[u8], g: usize) -> u32 {
    let bit = g * RECORD_BITS;
    match records.get(UNIT_BYTES + bit / 8..UNIT_BYTES + bit / 8 + 4) {
        Some(w) => {
            let w = u32::from_le_bytes(w.try_into().expect("4 bytes"));
            (w >> (bit % 8)) & ((1 << RECORD_BITS) - 1)
        }
        None => {
            let (q_step, q_min) = read_record(records, g);
            u32::from(q_step) | (u32::from(q_min) << 6)
        }
    }
}

/// The lane sums of `N <= 8` vectors: vector `n`'s in lane `n`, the other lanes 0.
#[inline(always)]
pub(super) fn hsums<S: Lanes, const N: usize>(s: S, v: [S::U; N]) -> S::U {
    if N == 4 {
        s.hsum4_i(core::array::from_fn(|i| v[i]))
    } else if N == 8 {
        s.hsum8_i(core::array::from_fn(|i| v[i]))
    } else {
        let mut sums = [0u32; 8];
        for (sum, v) in sums.iter_mut().zip(v) {
            *sum = s.hsum_i(v) as u32;
        }
        s.load_u(&sums)
    }
}
