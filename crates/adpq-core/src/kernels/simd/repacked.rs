//! The int8-activation gemv over format v3 rows repacked at load ([`Repacked`]): the
//! block dot of [`gemv_q8_rows_v3`] (the same code chunks, the same per-group f32
//! arithmetic, so the same bits) reading one stream per block of rows, each group's
//! record fields one load for the block's rows, the next block's same group asked of the
//! cache while this one is summed.

use super::code_chunks::{with_v3_code_chunks, CodeChunks, FivePlanes, SevenAsBytes};
use super::decode_v3::{add_group_q8, gemv_q8_rows_v3, hsums, level_unit, LaneUnits};
use super::Lanes;
use crate::error::Result;
use crate::kernels::check_row_range;
use crate::kernels::prefetch::prefetch_lines;
use crate::kernels::q8::Q8Activations;
use crate::kernels::repacked::{Repacked, FIELDS_BYTES, ROWS, UNITS_BYTES};

/// Rows `first..first + y.len()` of `W x̂` for a tensor with repacked rows: its whole
/// blocks from the repacked bytes, any rows before the first or after the last from the
/// packed rows ([`gemv_q8_rows_v3`]); every output the reference's bits.
#[inline(always)]
pub(crate) fn gemv_q8_repacked<S: Lanes>(
    s: S,
    r: &Repacked<'_>,
    first: usize,
    a: &Q8Activations<'_>,
    y: &mut [f32],
) -> Result<()> {
    let t = r.packed();
    check_row_range(t, first, y.len())?;
    a.check(t)?;
    let end = first + y.len();
    let lo = first.next_multiple_of(ROWS).min(end);
    let hi = (r.shape().blocks * ROWS).min(end).max(lo);
    let (head, rest) = y.split_at_mut(lo - first);
    let (blocks, tail) = rest.split_at_mut((hi - lo) / ROWS * ROWS);
    gemv_q8_rows_v3(s, t, first, a, head)?;
    let first_block = lo / ROWS;
    // The common group widths as constants, so that a group's loops and slices have
    // fixed lengths (no bounds checks, unrolled); any other width as a variable.
    macro_rules! widths {
        ($chunks:expr) => {
            match r.shape().group {
                64 => in_blocks::<S, _, 64>(s, r, first_block, a, blocks, $chunks),
                128 => in_blocks::<S, _, 128>(s, r, first_block, a, blocks, $chunks),
                _ => in_blocks::<S, _, 0>(s, r, first_block, a, blocks, $chunks),
            }
        };
    }
    match r.shape().bits {
        // Laid out by the repack otherwise than in the packed row.
        5 => widths!(FivePlanes),
        7 => widths!(SevenAsBytes),
        // Other widths are not repacked (`Repacked` refuses them): the packed rows.
        bits => with_v3_code_chunks!(s, bits, chunks => widths!(chunks), _ => {
            return gemv_q8_rows_v3(s, t, first, a, y)
        }),
    }
    gemv_q8_rows_v3(s, t, lo + blocks.len(), a, tail)
}

/// Blocks `first_block..` of `r` into `y` (whole blocks of [`ROWS`] outputs), codes of
/// `C::BITS` in groups of `G` columns (0: the tensor's group width, not a constant): row
/// `n`'s arithmetic in lane `n`, as [`gemv_q8_rows_v3`]'s block dot.
#[inline(always)]
fn in_blocks<S: Lanes, C: CodeChunks<S>, const G: usize>(
    s: S,
    r: &Repacked<'_>,
    first_block: usize,
    a: &Q8Activations<'_>,
    y: &mut [f32],
    chunks: C,
) {
    let shape = r.shape();
    let g = if G == 0 { shape.group } else { G };
    let (block_bytes, whole_bytes) = (shape.block_bytes, group_bytes::<S, C>(g));
    debug_assert_eq!(whole_bytes, shape.group_bytes, "the layout's group");
    let level = s.splat_f(level_unit(&r.packed().params()));
    let (q, scales, sums) = (a.q(), a.scales(), a.sums());
    // Whole groups, then the last one when it is partial (its activations `q_last`).
    let whole = q.len() / g;
    let q_last = &q[whole * g..];
    let bytes = &r.bytes()[first_block * block_bytes..];
    // Index loops and plain slices: in the ISA's one large function the compiler leaves
    // iterator adapters and closures out of line, once per group.
    for (k, out) in y.chunks_exact_mut(ROWS).enumerate() {
        let block = &bytes[k * block_bytes..][..block_bytes];
        let ahead = bytes.get((k + 1) * block_bytes..).unwrap_or(&[]);
        let units = LaneUnits {
            step: f32_lanes(s, &block[..4 * ROWS]),
            min: f32_lanes(s, &block[4 * ROWS..UNITS_BYTES]),
            level,
        };
        let mut acc = s.splat_f(0.0);
        for gi in 0..whole {
            let at = UNITS_BYTES + gi * whole_bytes;
            // One block ahead: a block's dot is too short for the hardware prefetcher.
            if let Some(lines) = ahead.get(at..at + whole_bytes) {
                prefetch_lines(lines);
            }
            let group = (&q[gi * g..][..g], &block[at..][..whole_bytes]);
            acc = add_group(s, chunks, &units, acc, group, (scales[gi], sums[gi]));
        }
        if !q_last.is_empty() {
            let last = &block[UNITS_BYTES + whole * whole_bytes..];
            acc = add_group(
                s,
                chunks,
                &units,
                acc,
                (q_last, last),
                (scales[whole], sums[whole]),
            );
        }
        out.copy_from_slice(&s.to_f32s(acc)[..ROWS]);
    }
}

/// The [`ROWS`] little-endian f32 of `b` in the lanes.
#[inline(always)]
fn f32_lanes<S: Lanes>(s: S, b: &[u8]) -> S::F {
    let mut v = [0f32; 8];
    for (v, b) in v.iter_mut().zip(b.chunks_exact(4)) {
        *v = f32::from_le_bytes(b.try_into().expect("4 bytes"));
    }
    s.load_f(&v)
}

/// Bytes of a repacked group of `g` columns: every row's codes, then the fields.
#[inline(always)]
fn group_bytes<S: Lanes, C: CodeChunks<S>>(g: usize) -> usize {
    ROWS * (g / 32 * C::BYTES) + FIELDS_BYTES
}

/// `acc` plus one group's terms of the block's rows: `qs` its activations, `group` its
/// repacked bytes, `(sx, Σ q)` the activations' scale and sum.
#[inline(always)]
fn add_group<S: Lanes, C: CodeChunks<S>>(
    s: S,
    chunks: C,
    units: &LaneUnits<S>,
    acc: S::F,
    (qs, group): (&[i8], &[u8]),
    (scale, sum): (f32, i32),
) -> S::F {
    let code_bytes = qs.len() / 32 * C::BYTES;
    // A loop, not `from_fn` or `map`, which the compiler leaves out of line.
    let mut codes: [&[u8]; ROWS] = [&[]; ROWS];
    for (n, codes) in codes.iter_mut().enumerate() {
        *codes = &group[n * code_bytes..][..code_bytes];
    }
    let mut isum = [s.splat_u(0); ROWS];
    chunks.group_sums(s, qs, codes, &mut isum);
    let fields = s.widen_u16s(
        group[ROWS * code_bytes..][..FIELDS_BYTES]
            .try_into()
            .expect("16 bytes"),
    );
    add_group_q8(s, acc, units, (fields, hsums(s, isum)), (scale, sum))
}
