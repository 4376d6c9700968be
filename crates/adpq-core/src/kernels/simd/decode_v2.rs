//! Reading format v2 rows over lanes: dequantization (bit-identical to the oracle's
//! `c·d + m`, a multiply then an add) and the f32 and int8-activation dot products.

use super::code_chunks::{CodeChunks, FourBit, Uniform};
use super::decode::{load_codes8, nibbles8, PositionReader};
use super::row_blocks::{in_row_blocks, RowsDot};
use super::{arrays, arrays_mut, halves, Lanes};
use crate::affine::{AffineGrid, RowUnits};
use crate::error::Result;
use crate::format::record_v2::read_record;
use crate::format::{code_at, PackedTensor, RowCursor};
use crate::kernels::q8::{dot_row_q8_ref, Q8Activations};
use crate::kernels::{check_activations, check_gemv_out, check_row_range};

/// Whether 8 codes from code `base` load as one word: 8-bit codes, or 4-bit codes that
/// start on a byte.
#[inline(always)]
fn loads_whole(bits: u8, base: usize) -> bool {
    bits == 8 || (bits == 4 && base.is_multiple_of(2))
}

/// Dequantizes the groups of a v2 row from the cursor `at` on: `c·d + m` 8 codes at a
/// time where the codes load as words, then the outliers (8 at a time in lanes for 4-bit
/// groups of 64), bit-identical to the oracle. Returns the outliers of those groups.
#[inline(always)]
pub(crate) fn dequantize_row_v2<S: Lanes>(
    s: S,
    t: &PackedTensor<'_>,
    at: RowCursor,
    out: &mut [f32],
) -> Result<usize> {
    let row = t.row(at.row())?;
    let units = t.units_of(&row);
    let bits = t.params().bits;
    let g = usize::from(t.params().group_size);
    let mut pos = PositionReader::new(t, &row);
    pos.bit += at.outlier() * pos.width as usize;
    let mut outliers = 0;
    for (j, chunk) in out.chunks_mut(g).enumerate() {
        let gi = at.group() + j;
        let (q_step, q_min, count) = read_record(row.records, gi);
        outliers += count;
        let grid = AffineGrid::new(q_step, q_min, &units);
        let base = gi * g;
        let mut done = 0;
        if loads_whole(bits, base) {
            let (step, min) = (s.splat_f(grid.step), s.splat_f(grid.min));
            for (c, o) in arrays_mut::<f32, 8>(chunk).enumerate() {
                let codes = s.int_to_float(load_codes8(s, row.codes, base + c * 8, bits));
                s.store_f(s.add_f(s.mul_f(codes, step), min), o);
            }
            done = chunk.len() / 8 * 8;
        }
        for (i, o) in chunk.iter_mut().enumerate().skip(done) {
            *o = grid.decode(code_at(row.codes, base + i, bits));
        }
        if bits == 4 && g == 64 && pos.width == 6 {
            if let Ok(out) = <&mut [f32; 64]>::try_from(&mut *chunk) {
                let codes = row.codes[base / 2..base / 2 + 32]
                    .try_into()
                    .expect("32 bytes");
                patch_g64(s, &units, codes, out, &mut pos, count);
                continue;
            }
        }
        for _ in 0..count {
            let p = pos.next();
            if let Some(o) = chunk.get_mut(p) {
                *o = units.outlier(code_at(row.codes, base + p, bits), bits);
            }
        }
    }
    Ok(outliers)
}

/// The values of 4-bit outlier codes `c`: `RowUnits::outlier` lane by lane (`t + k·h`,
/// the sign bit set from the code's top bit), bit-identical.
#[inline(always)]
fn outliers4<S: Lanes>(s: S, units: &RowUnits, c: S::U) -> S::F {
    let k = s.int_to_float(s.and(c, s.splat_u(7)));
    let mag = s.add_f(
        s.splat_f(units.threshold),
        s.mul_f(k, s.splat_f(units.outlier_step)),
    );
    let sign = s.and(s.gt_i(s.shr(c, 3), s.splat_u(0)), s.splat_u(0x8000_0000));
    s.float_of_bits(s.or(s.bits(mag), sign))
}

/// Writes the `count` outliers of a full 4-bit group of 64 (codes `codes`) into `out`.
#[inline(always)]
fn patch_g64<S: Lanes>(
    s: S,
    units: &RowUnits,
    codes: &[u8; 32],
    out: &mut [f32; 64],
    pos: &mut PositionReader<'_>,
    count: usize,
) {
    let mut left = count;
    while left > 0 {
        let k = left.min(8);
        let (idx, c, _) = next_outliers8_g64(s, codes, pos, k);
        let (ix, v) = (s.to_u32s(idx), s.to_f32s(outliers4(s, units, c)));
        for j in 0..k {
            out[ix[j] as usize & 63] = v[j];
        }
        left -= k;
    }
}

/// Outlier corrections `x_p · (ŵ_p − (c_p·d + m))` of a row, gathered 8 at a time and
/// added in lanes.
struct Corrections<S: Lanes> {
    s: S,
    units: RowUnits,
    bits: u8,
    n: usize,
    codes: [u32; 8],
    xs: [f32; 8],
    steps: [f32; 8],
    mins: [f32; 8],
    acc: S::F,
}

impl<S: Lanes> Corrections<S> {
    #[inline(always)]
    fn new(s: S, units: RowUnits, bits: u8) -> Self {
        Corrections {
            s,
            units,
            bits,
            n: 0,
            codes: [0; 8],
            xs: [0.0; 8],
            steps: [0.0; 8],
            mins: [0.0; 8],
            acc: s.splat_f(0.0),
        }
    }

    /// Adds the outlier with code `c` and activation `x` of a group with grid `(d, m)`.
    #[inline(always)]
    fn push(&mut self, c: u8, x: f32, step: f32, min: f32) {
        let n = self.n & 7;
        self.codes[n] = u32::from(c);
        self.xs[n] = x;
        self.steps[n] = step;
        self.mins[n] = min;
        self.n = n + 1;
        if self.n == 8 {
            self.flush();
        }
    }

    /// Adds the gathered corrections into the lanes (unused lanes add `+0`).
    #[inline(always)]
    fn flush(&mut self) {
        if self.n == 0 {
            // Also without outliers, where the threshold may be infinite.
            return;
        }
        let (s, units, bits) = (self.s, &self.units, self.bits);
        let c = s.load_u(&self.codes);
        let k = s.int_to_float(s.and(c, s.splat_u((1 << (bits - 1)) - 1)));
        // `RowUnits::outlier`: `±(t + k·h)`, the sign in the code's top bit.
        let mag = s.add_f(
            s.splat_f(units.threshold),
            s.mul_f(k, s.splat_f(units.outlier_step)),
        );
        let neg = s.gt_i(s.shr(c, u32::from(bits) - 1), s.splat_u(0));
        let out = s.select_f(neg, s.sub_f(s.splat_f(0.0), mag), mag);
        let dense = s.add_f(
            s.mul_f(s.int_to_float(c), s.load_f(&self.steps)),
            s.load_f(&self.mins),
        );
        let used = s.mask_from_bits((1 << self.n) - 1);
        let term = s.mul_f(s.sub_f(out, dense), s.load_f(&self.xs));
        self.acc = s.add_f(self.acc, s.float_of_bits(s.and(s.bits(term), used)));
        self.n = 0;
    }
}

/// Positions (lanes past `k` hold 0), codes and lane mask of the next `k <= 8` outliers
/// of a full 4-bit group of 64 (6-bit positions) whose codes are `codes`: the positions
/// unpacked from the stream with shifts, the codes picked from the group's dwords.
#[inline(always)]
fn next_outliers8_g64<S: Lanes>(
    s: S,
    codes: &[u8; 32],
    pos: &mut PositionReader<'_>,
    k: usize,
) -> (S::U, S::U, S::U) {
    let window = pos.window();
    pos.bit += k * 6;
    // Positions 0..4 are bits 0..24 of the window, 4..8 bits 24..48.
    let halves = s.select_u(
        s.mask_from_bits(0xF0),
        s.splat_u((window >> 24) as u32),
        s.splat_u(window as u32),
    );
    let p = s.shr_lanes(halves, s.load_u(&[0, 6, 12, 18, 0, 6, 12, 18]));
    let valid = s.gt_i(s.splat_u(k as u32), s.load_u(&[0, 1, 2, 3, 4, 5, 6, 7]));
    let idx = s.and(s.and(p, s.splat_u(63)), valid);
    let dwords: [u32; 8] = core::array::from_fn(|j| {
        u32::from_le_bytes(codes[4 * j..4 * j + 4].try_into().expect("4 bytes"))
    });
    let word = s.permute_u(s.load_u(&dwords), s.shr(idx, 3));
    let shift = s.and(s.add_i(idx, idx), s.splat_u(14));
    let shift = s.add_i(shift, shift);
    let c = s.and(s.shr_lanes(word, shift), s.splat_u(0xF));
    (idx, c, valid)
}

/// `Σ x_p · (ŵ_p − (c_p·d + m))` over the `count` outliers of a full 4-bit group of 64
/// whose codes are `codes` and grid `(d, m)`, added into `acc` 8 at a time; `gather`
/// loads the 8 `x_p` of the given positions (`< 64`).
#[inline(always)]
fn corrections_g64<S: Lanes>(
    s: S,
    units: &RowUnits,
    (codes, grid): (&[u8; 32], (f32, f32)),
    pos: &mut PositionReader<'_>,
    count: usize,
    mut acc: S::F,
    gather: impl Fn([u32; 8]) -> S::F,
) -> S::F {
    let mut left = count;
    while left > 0 {
        let k = left.min(8);
        let (idx, c, valid) = next_outliers8_g64(s, codes, pos, k);
        let x = gather(s.to_u32s(idx));
        let out = outliers4(s, units, c);
        let dense = s.add_f(
            s.mul_f(s.int_to_float(c), s.splat_f(grid.0)),
            s.splat_f(grid.1),
        );
        // Lanes past `k` add +0.
        let term = s.mul_f(s.sub_f(out, dense), x);
        acc = s.add_f(acc, s.float_of_bits(s.and(s.bits(term), valid)));
        left -= k;
    }
    acc
}

/// Dot product of one v2 row with `x`: per group `d·Σc·x + m·Σx` in lanes (FMA), and the
/// outliers' corrections 8 at a time (see [`dot_tolerance`](crate::kernels::dot_tolerance)).
#[inline(always)]
pub(crate) fn dot_row_v2<S: Lanes>(s: S, t: &PackedTensor<'_>, r: usize, x: &[f32]) -> Result<f32> {
    dot_row_v2_with::<S, false>(s, t, r, x, &[])
}

/// [`dot_row_v2`], with `Σx` per group from `xsums` when `SUMS` (as `gemv_v2` computes
/// them once for every row), else summed here.
#[inline(always)]
fn dot_row_v2_with<S: Lanes, const SUMS: bool>(
    s: S,
    t: &PackedTensor<'_>,
    r: usize,
    x: &[f32],
    xsums: &[f32],
) -> Result<f32> {
    check_activations(t, x)?;
    let row = t.row(r)?;
    let units = t.units_of(&row);
    let bits = t.params().bits;
    let g = usize::from(t.params().group_size);
    let mut pos = PositionReader::new(t, &row);
    let mut corr = Corrections::new(s, units, bits);
    let mut accv = s.splat_f(0.0);
    let (mut acc, mut acc_min) = (0f32, 0f32);
    for (gi, xs) in x.chunks(g).enumerate() {
        let (q_step, q_min, count) = read_record(row.records, gi);
        // As `AffineGrid::new`, without its reciprocal.
        let step = f32::from(q_step) * units.step_unit;
        let min = -(f32::from(q_min) * units.min_unit);
        let base = gi * g;
        let mut done = 0;
        if loads_whole(bits, base) {
            let z = s.splat_f(0.0);
            let (mut d0, mut d1, mut s0, mut s1) = (z, z, z, z);
            let (mut pairs, odd) = arrays::<f32, 16>(xs);
            if bits == 4 {
                // The group's codes as one slice: no per-chunk bounds checks or width tests.
                let gc = &row.codes[base / 2..base / 2 + pairs.len() * 8];
                for (cb, xc) in arrays::<u8, 8>(gc).0.zip(&mut pairs) {
                    let (x0, x1) = halves(xc);
                    let (x0, x1) = (s.load_f(x0), s.load_f(x1));
                    let w = u64::from_le_bytes(*cb);
                    let c0 = s.int_to_float(nibbles8(s, w as u32));
                    let c1 = s.int_to_float(nibbles8(s, (w >> 32) as u32));
                    (d0, d1) = (s.mul_add(c0, x0, d0), s.mul_add(c1, x1, d1));
                    if !SUMS {
                        (s0, s1) = (s.add_f(s0, x0), s.add_f(s1, x1));
                    }
                }
            }
            for (c, xc) in pairs.enumerate() {
                let (x0, x1) = halves(xc);
                let (x0, x1) = (s.load_f(x0), s.load_f(x1));
                let i = base + c * 16;
                let c0 = s.int_to_float(load_codes8(s, row.codes, i, bits));
                let c1 = s.int_to_float(load_codes8(s, row.codes, i + 8, bits));
                (d0, d1) = (s.mul_add(c0, x0, d0), s.mul_add(c1, x1, d1));
                if !SUMS {
                    (s0, s1) = (s.add_f(s0, x0), s.add_f(s1, x1));
                }
            }
            done = xs.len() - odd.len();
            if let Some(x0) = odd.get(..8) {
                let x0 = s.load_f(x0.try_into().expect("8 f32"));
                let c0 = s.int_to_float(load_codes8(s, row.codes, base + done, bits));
                d0 = s.mul_add(c0, x0, d0);
                if !SUMS {
                    s0 = s.add_f(s0, x0);
                }
                done += 8;
            }
            accv = s.mul_add(s.add_f(d0, d1), s.splat_f(step), accv);
            if !SUMS {
                accv = s.mul_add(s.add_f(s0, s1), s.splat_f(min), accv);
            }
        }
        if done < xs.len() {
            let (mut cx, mut sx) = (0f32, 0f32);
            for (i, &xi) in xs.iter().enumerate().skip(done) {
                cx += f32::from(code_at(row.codes, base + i, bits)) * xi;
                sx += xi;
            }
            acc += if SUMS {
                cx * step
            } else {
                cx * step + sx * min
            };
        }
        if SUMS {
            acc_min += min * xsums.get(gi).copied().unwrap_or(0.0);
        }
        if bits == 4 && g == 64 && pos.width == 6 {
            if let Ok(xs) = <&[f32; 64]>::try_from(xs) {
                let codes = row.codes[base / 2..base / 2 + 32]
                    .try_into()
                    .expect("32 bytes");
                // `& 63` keeps every index in `xs` (no bounds check emitted, none can fail).
                let gather = |ix: [u32; 8]| s.load_f(&ix.map(|i| xs[i as usize & 63]));
                let group = (codes, (step, min));
                accv = corrections_g64(s, &units, group, &mut pos, count, accv, gather);
                continue;
            }
        }
        for _ in 0..count {
            let p = pos.next();
            if let Some(&xp) = xs.get(p) {
                let c = code_at(row.codes, base + p, bits);
                corr.push(c, xp, step, min);
            }
        }
    }
    corr.flush();
    Ok((acc + acc_min) + s.hsum_f(s.add_f(accv, corr.acc)))
}

/// Groups whose activation sums [`gemv_v2`] keeps (on the stack); wider rows run
/// [`dot_row_v2`] row by row.
const MAX_SUM_GROUPS: usize = 1024;

/// `y = W x` for a v2 tensor: `Σx` per group once for every row, then each row's dot.
#[inline(always)]
pub(crate) fn gemv_v2<S: Lanes>(
    s: S,
    t: &PackedTensor<'_>,
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    check_gemv_out(t, y)?;
    check_activations(t, x)?;
    let g = usize::from(t.params().group_size);
    let groups = x.len().div_ceil(g);
    if groups > MAX_SUM_GROUPS {
        for (r, out) in y.iter_mut().enumerate() {
            *out = dot_row_v2(s, t, r, x)?;
        }
        return Ok(());
    }
    let mut sums = [0f32; MAX_SUM_GROUPS];
    for (sum, xs) in sums.iter_mut().zip(x.chunks(g)) {
        let (whole, rest) = arrays::<f32, 8>(xs);
        let v = whole.fold(s.splat_f(0.0), |v, xc| s.add_f(v, s.load_f(xc)));
        *sum = s.hsum_f(v) + rest.iter().sum::<f32>();
    }
    for (r, out) in y.iter_mut().enumerate() {
        *out = dot_row_v2_with::<S, true>(s, t, r, x, &sums[..groups])?;
    }
    Ok(())
}

/// Dot product of v2 row `r` with int8 activations: one row of [`gemv_q8_rows_v2`].
#[inline(always)]
pub(crate) fn dot_row_q8_v2<S: Lanes>(
    s: S,
    t: &PackedTensor<'_>,
    r: usize,
    a: &Q8Activations<'_>,
) -> Result<f32> {
    let mut y = [0f32];
    gemv_q8_rows_v2(s, t, r, a, &mut y)?;
    Ok(y[0])
}

/// Rows `first..first + y.len()` of `W x̂` for a v2 tensor with int8 activations, 4- to
/// 7-bit codes in groups of a multiple of 32: the exact integer `Σ c·q` of each group
/// (byte lanes of codes, [`CodeChunks`]), 4 rows at a time; then per row the outlier
/// corrections, in lanes for 4-bit groups of 64, else as the reference computes them.
/// Each row's arithmetic is the same however many rows run together. Other formats run
/// the reference.
#[inline(always)]
pub(crate) fn gemv_q8_rows_v2<S: Lanes>(
    s: S,
    t: &PackedTensor<'_>,
    first: usize,
    a: &Q8Activations<'_>,
    y: &mut [f32],
) -> Result<()> {
    check_row_range(t, first, y.len())?;
    a.check(t)?;
    let fp = t.params();
    if !usize::from(fp.group_size).is_multiple_of(32) {
        return rows_by_reference(t, first, a, y);
    }
    match fp.bits {
        4 => in_row_blocks(
            t,
            first,
            y,
            RowsV2 {
                s,
                t,
                a,
                chunks: FourBit::<S, false>::new(s),
            },
        ),
        5 => in_row_blocks(
            t,
            first,
            y,
            RowsV2 {
                s,
                t,
                a,
                chunks: Uniform::<S, 5>::new(s),
            },
        ),
        6 => in_row_blocks(
            t,
            first,
            y,
            RowsV2 {
                s,
                t,
                a,
                chunks: Uniform::<S, 6>::new(s),
            },
        ),
        7 => in_row_blocks(
            t,
            first,
            y,
            RowsV2 {
                s,
                t,
                a,
                chunks: Uniform::<S, 7>::new(s),
            },
        ),
        _ => rows_by_reference(t, first, a, y),
    }
}

/// Rows `first..first + y.len()` by [`dot_row_q8_ref`].
fn rows_by_reference(
    t: &PackedTensor<'_>,
    first: usize,
    a: &Q8Activations<'_>,
    y: &mut [f32],
) -> Result<()> {
    for (i, out) in y.iter_mut().enumerate() {
        *out = dot_row_q8_ref(t, first + i, a)?;
    }
    Ok(())
}

/// [`dot_rows_q8_v2`] as a [`RowsDot`].
struct RowsV2<'t, 'a, S, C> {
    s: S,
    t: &'t PackedTensor<'a>,
    a: &'t Q8Activations<'a>,
    chunks: C,
}

impl<S: Lanes, C: CodeChunks<S>> RowsDot for RowsV2<'_, '_, S, C> {
    #[inline(always)]
    fn rows<const N: usize>(&self, first: usize, out: &mut [f32; N]) -> Result<()> {
        dot_rows_q8_v2(self.s, self.t, first, self.a, self.chunks, out)
    }
}

/// Rows `first..first + N` of [`gemv_q8_rows_v2`] (codes of `C::BITS`, groups of a
/// multiple of 32).
#[inline(always)]
fn dot_rows_q8_v2<S: Lanes, C: CodeChunks<S>, const N: usize>(
    s: S,
    t: &PackedTensor<'_>,
    first: usize,
    a: &Q8Activations<'_>,
    chunks: C,
    out: &mut [f32; N],
) -> Result<()> {
    let g = usize::from(t.params().group_size);
    let bits = C::BITS as u8;
    let rows = {
        let mut rows = [t.row(first)?; N];
        for (n, row) in rows.iter_mut().enumerate().skip(1) {
            *row = t.row(first + n)?;
        }
        rows
    };
    let units = rows.map(|row| t.units_of(&row));
    let mut pos = rows.map(|row| PositionReader::new(t, &row));
    let mut accv = [s.splat_f(0.0); N];
    let mut acc = [0f32; N];
    for (gi, qs) in a.q().chunks(g).enumerate() {
        let sx = a.scales()[gi];
        let base = gi * g;
        let isum: [i32; N] = if qs.len() == g {
            // Each row's codes of the group (whole bytes: `g` is a multiple of 32).
            let (at, len) = (base / 8 * C::BITS, g / 8 * C::BITS);
            let mut codes: [&[u8]; N] = [&[]; N];
            for (codes, row) in codes.iter_mut().zip(&rows) {
                *codes = &row.codes[at..at + len];
            }
            let mut isum = [s.splat_u(0); N];
            chunks.group_sums(s, qs, codes, &mut isum);
            if N == 4 {
                let four = s.to_u32s(s.hsum4_i(core::array::from_fn(|n| isum[n])));
                core::array::from_fn(|n| four[n] as i32)
            } else {
                isum.map(|v| s.hsum_i(v))
            }
        } else {
            // A short last group.
            core::array::from_fn(|n| {
                let mut isum = 0i32;
                for (i, &qi) in qs.iter().enumerate() {
                    isum += i32::from(code_at(rows[n].codes, base + i, bits)) * i32::from(qi);
                }
                isum
            })
        };
        for n in 0..N {
            let (row, units, pos) = (&rows[n], &units[n], &mut pos[n]);
            let (q_step, q_min, count) = read_record(row.records, gi);
            // As `AffineGrid::new`, without its reciprocal.
            let step = f32::from(q_step) * units.step_unit;
            let min = -(f32::from(q_min) * units.min_unit);
            // The activation scale multiplies first, as in the reference.
            let dense = (sx * step) * isum[n] as f32 + (sx * min) * a.sums()[gi] as f32;
            if C::BITS == 4 && g == 64 && pos.width == 6 {
                if let Ok(qs) = <&[i8; 64]>::try_from(qs) {
                    let codes = row.codes[base / 2..base / 2 + 32]
                        .try_into()
                        .expect("32 bytes");
                    let sxv = s.splat_f(sx);
                    let gather = |ix: [u32; 8]| {
                        let q = ix.map(|i| i32::from(qs[i as usize & 63]) as u32);
                        s.mul_f(sxv, s.int_to_float(s.load_u(&q)))
                    };
                    let group = (codes, (step, min));
                    accv[n] = corrections_g64(s, units, group, pos, count, accv[n], gather);
                    acc[n] += dense;
                    continue;
                }
            }
            // The reference's arithmetic.
            let mut corr = 0f32;
            for _ in 0..count {
                let p = pos.next();
                if let Some(&qp) = qs.get(p) {
                    let c = code_at(row.codes, base + p, bits);
                    let decoded = f32::from(c) * step + min;
                    corr += (sx * f32::from(qp)) * (units.outlier(c, bits) - decoded);
                }
            }
            acc[n] += dense + corr;
        }
    }
    for n in 0..N {
        out[n] = acc[n] + s.hsum_f(accv[n]);
    }
    Ok(())
}
