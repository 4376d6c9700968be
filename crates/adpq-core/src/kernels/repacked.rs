//! Format v3 rows repacked at load for the int8 gemv of a decoder: the same codes and
//! record fields, laid out in the order the block kernel reads them.
//!
//! A packed tensor keeps each row's records, then each row's codes, so a gemv over 4
//! rows at a time reads 8 streams and extracts every group's 12-bit record fields one
//! row at a time. Repacked, each block of [`ROWS`] rows is one stream:
//!
//! ```text
//! block  = step units (8 × f32) | minimum units (8 × f32) | group 0 | group 1 | …
//! group  = row 0's codes | row 1's | … | row 7's | 8 × u16 record fields
//! ```
//!
//! (codes as they lie in the packed row, but 5-bit ones laid out in planes of their low 4
//! and their top bit, see `five_planes`, and 7-bit ones a byte each; fields `q_d | q_m <<
//! 6` little-endian.) 1–4 % more bytes than the packed tensor for SmolLM2's 4- to 6-bit
//! matrices, 15 % for 7-bit ones (a byte per code). Eight rows fill the
//! eight f32 lanes of the per-group arithmetic (with 4 rows half of them idled, and
//! one thread decoded SmolLM2 17 % slower). An engine keeps the
//! buffer beside the packed tensor and calls
//! [`CpuKernels::gemv_q8_repacked`](super::CpuKernels::gemv_q8_repacked), whose outputs
//! are those of [`gemv_q8_rows`](super::CpuKernels::gemv_q8_rows) on the packed tensor
//! bit for bit: the rows past the last whole block are read from the packed tensor.
//!
//! Only what the block kernel reads in byte lanes is repacked: format v3, 4 (code book)
//! or 5 to 8 bits, groups and rows a multiple of 32 columns, at least [`ROWS`] rows.

use crate::error::{Error, Result};
use crate::format::record_v3::read_record;
use crate::format::PackedTensor;
use crate::params::FormatVersion;

/// Rows per block (the block kernel's rows).
pub const ROWS: usize = 8;

/// Bytes at the head of a block: its rows' step and minimum units.
pub(crate) const UNITS_BYTES: usize = 2 * 4 * ROWS;

/// Bytes of a group's record fields (one u16 per row).
pub(crate) const FIELDS_BYTES: usize = 2 * ROWS;

/// Where the blocks' parts lie (derived from the packed tensor's shape and parameters).
/// Read by the SIMD kernels only, which targets without them do not build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
pub(crate) struct Shape {
    /// Whole blocks (rows `0..blocks · ROWS` are repacked).
    pub(crate) blocks: usize,
    /// Columns per group.
    pub(crate) group: usize,
    /// Bits per code.
    pub(crate) bits: usize,
    /// Bits per code in the repacked copy: 8 for 7-bit codes (a byte each, which the
    /// kernel multiplies as they lie), else `bits`.
    pub(crate) stored: usize,
    /// Bytes of a whole group (every row's codes and the fields).
    pub(crate) group_bytes: usize,
    /// Bytes of a block.
    pub(crate) block_bytes: usize,
}

impl Shape {
    /// The layout of `t`, or `None` when `t` is not repacked (see the module docs).
    fn of(t: &PackedTensor<'_>) -> Option<Shape> {
        let p = t.params();
        let (bits, group, cols) = (usize::from(p.bits), usize::from(p.group_size), t.cols());
        let repacked = p.version == FormatVersion::V3
            && (4..=8).contains(&bits)
            && group % 32 == 0
            && cols % 32 == 0
            && t.rows() >= ROWS;
        repacked.then(|| {
            let groups = cols.div_ceil(group);
            let stored = if bits == 7 { 8 } else { bits };
            Shape {
                blocks: t.rows() / ROWS,
                group,
                bits,
                stored,
                group_bytes: ROWS * group * stored / 8 + FIELDS_BYTES,
                block_bytes: UNITS_BYTES + ROWS * cols * stored / 8 + groups * FIELDS_BYTES,
            }
        })
    }

    /// Bytes of the repacked rows.
    fn len(&self) -> usize {
        self.blocks * self.block_bytes
    }
}

/// A packed v3 tensor with its rows repacked (see the module docs): what
/// [`CpuKernels::gemv_q8_repacked`](super::CpuKernels::gemv_q8_repacked) reads.
#[derive(Debug, Clone, Copy)]
pub struct Repacked<'a> {
    packed: PackedTensor<'a>,
    bytes: &'a [u8],
    shape: Shape,
}

impl<'a> Repacked<'a> {
    /// Bytes [`repack`](Repacked::repack) writes for `t`, or `None` when `t` is not
    /// repacked (not format v3, 2 or 3 bits, groups or rows not a multiple of 32
    /// columns, fewer than [`ROWS`] rows): its gemv stays on the packed rows.
    pub fn len_for(t: &PackedTensor<'_>) -> Option<usize> {
        Shape::of(t).map(|s| s.len())
    }

    /// Writes `t`'s whole blocks of rows, repacked, into `out` (of
    /// [`len_for`](Repacked::len_for) bytes): an error when `t` is not repacked or `out`
    /// has another length.
    pub fn repack(t: &PackedTensor<'_>, out: &mut [u8]) -> Result<()> {
        let shape = checked_shape(t, out.len())?;
        let Shape {
            group,
            bits,
            stored,
            ..
        } = shape;
        let cols = t.cols();
        for (b, block) in out.chunks_exact_mut(shape.block_bytes).enumerate() {
            for n in 0..ROWS {
                let (records, codes) = t.row_spans(b * ROWS + n, 1)?;
                let (step_unit, min_unit) = t.v3_units(records);
                block[4 * n..][..4].copy_from_slice(&step_unit.to_le_bytes());
                block[4 * (ROWS + n)..][..4].copy_from_slice(&min_unit.to_le_bytes());
                for (gi, start) in (0..cols).step_by(group).enumerate() {
                    // Every group but the last is whole, so group `gi` starts here.
                    let at = UNITS_BYTES + gi * shape.group_bytes;
                    let len = group.min(cols - start);
                    let code_bytes = len * stored / 8;
                    let this = &mut block[at..at + ROWS * code_bytes + FIELDS_BYTES];
                    let (from, to) = (
                        &codes[start * bits / 8..][..len * bits / 8],
                        &mut this[n * code_bytes..][..code_bytes],
                    );
                    match bits {
                        5 => five_planes(from, to),
                        7 => unpack_codes(from, 7, to),
                        _ => to.copy_from_slice(from),
                    }
                    let (q_step, q_min) = read_record(records, gi);
                    let fields = u16::from(q_step) | (u16::from(q_min) << 6);
                    this[ROWS * code_bytes + 2 * n..][..2].copy_from_slice(&fields.to_le_bytes());
                }
            }
        }
        Ok(())
    }

    /// `t` with its repacked rows `bytes` (written by [`repack`](Repacked::repack) for
    /// `t`): an error when `t` is not repacked or `bytes` has another length.
    pub fn new(packed: PackedTensor<'a>, bytes: &'a [u8]) -> Result<Repacked<'a>> {
        let shape = checked_shape(&packed, bytes.len())?;
        Ok(Repacked {
            packed,
            bytes,
            shape,
        })
    }

    /// The packed tensor.
    pub fn packed(&self) -> &PackedTensor<'a> {
        &self.packed
    }

    /// The repacked rows.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    pub(crate) fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Their layout.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    pub(crate) fn shape(&self) -> &Shape {
        &self.shape
    }
}

/// 5-bit codes `from` (as they lie in a packed row: code `i` at bit `5i`, little-endian)
/// of one group or partial group, in planes into `to` (as many bytes): per 64 codes
/// where the group is whole 64s, else per 32, their low 4 bits packed as 4-bit codes
/// (code `2j` in the low nibble of byte `j`) and then their top bits as little-endian
/// u32: of the even codes and of the odd codes per 64, of all per 32.
fn five_planes(from: &[u8], to: &mut [u8]) {
    let paired = (from.len() * 8 / 5).is_multiple_of(64);
    let span = if paired { 64 } else { 32 };
    let mut codes = [0u8; 64];
    for (from, out) in from
        .chunks_exact(span * 5 / 8)
        .zip(to.chunks_exact_mut(span * 5 / 8))
    {
        let codes = &mut codes[..span];
        unpack_codes(from, 5, codes);
        let (low, top) = out.split_at_mut(span / 2);
        for (b, pair) in low.iter_mut().zip(codes.chunks_exact(2)) {
            *b = pair[0] & 15 | (pair[1] & 15) << 4;
        }
        for (t, word) in top.chunks_exact_mut(4).enumerate() {
            // Per 64: the even codes' top bits, then the odd codes'; per 32: all in order.
            let bits = (0..32).fold(0u32, |acc, j| {
                let i = if paired { 2 * j + t } else { j };
                acc | u32::from(codes[i] >> 4) << j
            });
            word.copy_from_slice(&bits.to_le_bytes());
        }
    }
}

/// The codes of `bits` (at most 8) of whole chunks of 8 codes of a packed row (`bits`
/// bytes each, code `i` at bit `bits · i`, little-endian) into `out`, a byte each.
fn unpack_codes(from: &[u8], bits: usize, out: &mut [u8]) {
    let mask = (1u64 << bits) - 1;
    for (eight, out) in from.chunks_exact(bits).zip(out.chunks_exact_mut(8)) {
        let mut word = [0u8; 8];
        word[..bits].copy_from_slice(eight);
        let word = u64::from_le_bytes(word);
        for (k, o) in out.iter_mut().enumerate() {
            *o = ((word >> (bits * k)) & mask) as u8;
        }
    }
}

/// `t`'s layout, checked against a buffer of `len` bytes.
fn checked_shape(t: &PackedTensor<'_>, len: usize) -> Result<Shape> {
    let shape = Shape::of(t).ok_or(Error::Unsupported(
        "repacked rows are for format v3 at 4 to 8 bits, groups and rows of whole 32 columns, at least 8 rows",
    ))?;
    if len != shape.len() {
        return Err(Error::BufferSize {
            needed: shape.len() as u64,
            actual: len as u64,
        });
    }
    Ok(shape)
}
