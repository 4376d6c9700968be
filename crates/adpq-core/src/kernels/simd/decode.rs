//! Reading packed rows: dequantization and f32 dot products.

use super::{arrays, arrays_mut, halves, Lanes};
use crate::bits::get_bits;
use crate::error::Result;
use crate::format::code_at;
use crate::format::{GroupRecord, PackedRow, PackedTensor, RowCursor};
use crate::kernels::check_activations;
use crate::kernels::scalar::check_out_rows;

/// Reads consecutive `width`-bit outlier positions from a row's place in the stream.
pub(crate) struct PositionReader<'a> {
    data: &'a [u8],
    /// The next position's first bit.
    pub bit: usize,
    /// Bits per position.
    pub width: u32,
}

impl<'a> PositionReader<'a> {
    /// The reader of row `row`'s positions in `t`.
    #[inline(always)]
    pub fn new(t: &PackedTensor<'_>, row: &PackedRow<'a>) -> Self {
        let width = t.layout().position_bits;
        Self::at(row.positions, row.first_outlier * width as usize, width)
    }

    /// The reader of the `width`-bit positions of `data` from bit `bit`.
    #[inline(always)]
    pub fn at(data: &'a [u8], bit: usize, width: u32) -> Self {
        PositionReader { data, bit, width }
    }

    /// The next 57 (or more) bits of the stream, zero past its end (for the lane unpacks).
    #[inline(always)]
    pub fn window(&self) -> u64 {
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

    /// The next position.
    #[inline(always)]
    pub fn next(&mut self) -> usize {
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

/// The 8 4-bit codes of `word` (code `j` in bits `4j..4j + 4`) as lanes.
#[inline(always)]
pub(crate) fn nibbles8<S: Lanes>(s: S, word: u32) -> S::U {
    let shifts = s.load_u(&[0, 4, 8, 12, 16, 20, 24, 28]);
    s.and(s.shr_lanes(s.splat_u(word), shifts), s.splat_u(0xF))
}

/// 8 codes starting at code `i` of a row (as i32 lanes), for 4- or 8-bit codes with `i`
/// on a byte boundary.
///
/// # Panics
/// When the 8 codes are not all inside `codes` (the slicing is bounds-checked).
#[inline(always)]
pub(super) fn load_codes8<S: Lanes>(s: S, codes: &[u8], i: usize, bits: u8) -> S::U {
    if bits == 4 {
        let b: [u8; 4] = codes[i / 2..i / 2 + 4].try_into().expect("4 bytes");
        nibbles8(s, u32::from_le_bytes(b))
    } else {
        s.widen_bytes(codes[i..i + 8].try_into().expect("8 bytes"))
    }
}

/// `(codes − off) as f32`.
#[inline(always)]
fn centered<S: Lanes>(s: S, codes: S::U, off: S::U) -> S::F {
    s.int_to_float(s.sub_i(codes, off))
}

/// The codes of a full 4-bit group of 128 that starts at code `base`.
#[inline(always)]
fn full_group_4bit(codes: &[u8], base: usize) -> &[u8; 64] {
    codes[base / 2..base / 2 + 64].try_into().expect("64 bytes")
}

/// The outlier patch of one full group of 128 4-bit codes: values computed 8 at a time
/// exactly as the oracle does (`(c − z_out) as f32 · Δ_out`), stored lane by lane.
#[inline(always)]
fn patch_g128_4bit<S: Lanes>(
    s: S,
    codes: &[u8; 64],
    out: &mut [f32; 128],
    pos: &mut PositionReader<'_>,
    rec: &GroupRecord,
) {
    let off_out = s.splat_i(rec.outliers.offset);
    let step_out = s.splat_f(rec.outliers.step);
    let mut left = rec.count;
    while left > 0 {
        let k = left.min(8);
        let (idx, c, _) = s.next_outliers8(codes, pos, k);
        let vals = s.mul_f(centered(s, c, off_out), step_out);
        let (ix, v) = (s.to_u32s(idx), s.to_f32s(vals));
        for j in 0..k {
            out[ix[j] as usize & 127] = v[j];
        }
        left -= k;
    }
}

/// Checks a block of rows from `first_row` against `t`, then runs `row(r, row_out)` on
/// each row of `out`.
#[inline(always)]
pub(crate) fn dequantize_rows(
    t: &PackedTensor<'_>,
    first_row: usize,
    out: &mut [f32],
    mut row: impl FnMut(usize, &mut [f32]) -> Result<()>,
) -> Result<()> {
    check_out_rows(t, first_row, out.len())?;
    for (i, row_out) in out.chunks_mut(t.cols()).enumerate() {
        row(first_row + i, row_out)?;
    }
    Ok(())
}

/// Dequantizes the groups of a row from `at` on into `out`: the dense pass on the inlier
/// grid, then the outlier patch. Returns the outliers of those groups.
#[inline(always)]
pub(crate) fn dequantize_row<S: Lanes>(
    s: S,
    t: &PackedTensor<'_>,
    at: RowCursor,
    out: &mut [f32],
) -> Result<usize> {
    let row = t.row(at.row())?;
    let fp = t.params();
    let g = usize::from(fp.group_size);
    let mut pos = PositionReader::new(t, &row);
    pos.bit += at.outlier() * pos.width as usize;
    let mut outliers = 0;
    for (j, chunk) in out.chunks_mut(g).enumerate() {
        let gi = at.group() + j;
        let rec = t.record(&row, gi);
        outliers += rec.count;
        let base = gi * g;
        let off = s.splat_i(rec.inliers.offset);
        let step = s.splat_f(rec.inliers.step);
        if fp.bits == 4 && g == 128 && chunk.len() == 128 {
            // The default format's full groups: no per-chunk width tests or bounds checks.
            let codes = full_group_4bit(row.codes, base);
            let out: &mut [f32; 128] = chunk.try_into().expect("128 f32");
            let (words, _) = arrays::<u8, 4>(codes);
            for (cb, o) in words.zip(arrays_mut::<f32, 8>(out)) {
                let c = nibbles8(s, u32::from_le_bytes(*cb));
                s.store_f(s.mul_f(centered(s, c, off), step), o);
            }
            patch_g128_4bit(s, codes, out, &mut pos, &rec);
            continue;
        }
        let fast = (fp.bits == 4 && base.is_multiple_of(2)) || fp.bits == 8;
        let done = if fast {
            for (c, o) in arrays_mut::<f32, 8>(chunk).enumerate() {
                let codes = load_codes8(s, row.codes, base + c * 8, fp.bits);
                s.store_f(s.mul_f(centered(s, codes, off), step), o);
            }
            chunk.len() / 8 * 8
        } else {
            0
        };
        for (i, o) in chunk.iter_mut().enumerate().skip(done) {
            *o = rec.inliers.decode(code_at(row.codes, base + i, fp.bits));
        }
        for _ in 0..rec.count {
            let p = pos.next();
            if let Some(o) = chunk.get_mut(p) {
                *o = rec.outliers.decode(code_at(row.codes, base + p, fp.bits));
            }
        }
    }
    Ok(outliers)
}

/// The outlier correction of one full group of 128 4-bit codes, 8 outliers at a time:
/// adds `Σ v_p · ((c_p − z_out)·Δ_out − (c_p − z_in)·Δ_in)` into `acc`, where `gather`
/// loads the 8 `v_p` of the given positions (lanes past the outliers are zeroed here).
#[inline(always)]
pub(super) fn outlier_corrections<S: Lanes>(
    s: S,
    codes: &[u8; 64],
    pos: &mut PositionReader<'_>,
    rec: &GroupRecord,
    mut acc: S::F,
    gather: impl Fn([u32; 8]) -> S::F,
) -> S::F {
    let (off_out, off_in) = (
        s.splat_i(rec.outliers.offset),
        s.splat_i(rec.inliers.offset),
    );
    let (step_out, step_in) = (s.splat_f(rec.outliers.step), s.splat_f(rec.inliers.step));
    let mut left = rec.count;
    while left > 0 {
        let k = left.min(8);
        let (idx, c, valid) = s.next_outliers8(codes, pos, k);
        // Lanes past `k` get v = 0: they add 0 · delta = 0 (delta is finite).
        let v = s.float_of_bits(s.and(s.bits(gather(s.to_u32s(idx))), valid));
        let cin = s.mul_f(centered(s, c, off_in), step_in);
        let delta = s.mul_sub(centered(s, c, off_out), step_out, cin);
        acc = s.mul_add(delta, v, acc);
        left -= k;
    }
    acc
}

/// Dot product of one packed row with `x` (FMA, 8 lanes: see the module docs).
#[inline(always)]
pub(crate) fn dot_row<S: Lanes>(s: S, t: &PackedTensor<'_>, r: usize, x: &[f32]) -> Result<f32> {
    check_activations(t, x)?;
    let row = t.row(r)?;
    let fp = t.params();
    let g = usize::from(fp.group_size);
    let mut pos = PositionReader::new(t, &row);
    let mut accv = s.splat_f(0.0);
    let mut acc = 0f32;
    for (gi, xs) in x.chunks(g).enumerate() {
        let rec = t.record(&row, gi);
        let base = gi * g;
        let fast = (fp.bits == 4 && base.is_multiple_of(2)) || fp.bits == 8;
        let mut done = 0;
        if fast {
            let off = s.splat_i(rec.inliers.offset);
            let (mut d0, mut d1) = (s.splat_f(0.0), s.splat_f(0.0));
            let (mut pairs, odd) = arrays::<f32, 16>(xs);
            if fp.bits == 4 {
                // The group's codes as one slice: no per-chunk bounds checks or width tests.
                let gc = &row.codes[base / 2..base / 2 + pairs.len() * 8];
                for (cb, xc) in arrays::<u8, 8>(gc).0.zip(&mut pairs) {
                    let (x0, x1) = halves(xc);
                    let w = u64::from_le_bytes(*cb);
                    let c0 = centered(s, nibbles8(s, w as u32), off);
                    let c1 = centered(s, nibbles8(s, (w >> 32) as u32), off);
                    d0 = s.mul_add(c0, s.load_f(x0), d0);
                    d1 = s.mul_add(c1, s.load_f(x1), d1);
                }
            }
            for (c, xc) in pairs.enumerate() {
                let (x0, x1) = halves(xc);
                let i = base + c * 16;
                let c0 = centered(s, load_codes8(s, row.codes, i, fp.bits), off);
                let c1 = centered(s, load_codes8(s, row.codes, i + 8, fp.bits), off);
                d0 = s.mul_add(c0, s.load_f(x0), d0);
                d1 = s.mul_add(c1, s.load_f(x1), d1);
            }
            done = xs.len() - odd.len();
            if let Some(x0) = odd.get(..8) {
                let c0 = centered(s, load_codes8(s, row.codes, base + done, fp.bits), off);
                d0 = s.mul_add(c0, s.load_f(x0.try_into().expect("8 f32")), d0);
                done += 8;
            }
            accv = s.mul_add(s.add_f(d0, d1), s.splat_f(rec.inliers.step), accv);
        }
        let mut dense = 0f32;
        for (i, &xi) in xs.iter().enumerate().skip(done) {
            dense +=
                (i32::from(code_at(row.codes, base + i, fp.bits)) - rec.inliers.offset) as f32 * xi;
        }
        acc += dense * rec.inliers.step;
        // Outliers: replace their inlier-grid term by their outlier-grid value.
        if fp.bits == 4 && g == 128 && xs.len() == 128 {
            let xs: &[f32; 128] = xs.try_into().expect("128 f32");
            let codes = full_group_4bit(row.codes, base);
            // `& 127` keeps every index in `xs` (no bounds check emitted, none can fail).
            let gather = |ix: [u32; 8]| s.load_f(&ix.map(|i| xs[i as usize & 127]));
            accv = outlier_corrections(s, codes, &mut pos, &rec, accv, gather);
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
    Ok(acc + s.hsum_f(accv))
}
