//! Quantizing a tensor as independent row blocks, and stitching their outputs.
//!
//! A [`QuantizePlan`] is fixed once the outliers are selected. It splits the caller's
//! packed buffer into one disjoint [`BlockOut`] per block of rows (counts, records and
//! codes of those rows), runs a block through any [`CpuKernels`], and
//! [stitches](QuantizePlan::stitch) the blocks' outlier position streams, the row
//! offsets, the header and the checksum into the final buffer. Blocks may run in any
//! order on any thread; the bytes depend only on the tensor, never on the block size.
//!
//! The core allocates nothing: block 0 writes its positions straight into the packed
//! buffer, every later block into position scratch lent by the caller
//! ([`BlockOut::scratch_len`] bytes), which `stitch` then copies after the positions of
//! the blocks before it.
//!
//! **Ties.** When only some weights exactly at the threshold are outliers (see
//! [`Selection::is_row_independent`]), a block must know how many of them come before
//! it. Then [`QuantizePlan::needs_tie_counts`] is true and the caller passes the count of
//! each block ([`QuantizePlan::count_ties`]) to [`QuantizePlan::split`].
//!
//! ```
//! use adpq_core::{CpuKernels, Params, QuantizePlan, Scalar, Weights};
//!
//! let (rows, cols) = (6, 256);
//! let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 100.0).collect();
//! let w = Weights::F32(&w);
//! let params = Params::V1;
//! let sel = adpq_core::select_tensor(&Scalar, w, rows, cols, &params)?;
//! let plan = QuantizePlan::new(rows, cols, &params, &sel, 2)?; // 3 blocks of 2 rows
//! let ties: Vec<u64> = if plan.needs_tie_counts() {
//!     (0..plan.block_count()).map(|b| plan.count_ties(&Scalar, w, b)).collect::<Result<_, _>>()?
//! } else {
//!     Vec::new()
//! };
//! let mut out = vec![0u8; plan.packed_len()];
//! let mut done = Vec::new();
//! for block in plan.split(&mut out, &ties)? {
//!     // Each block is independent: a parallel driver hands them to its threads.
//!     let mut scratch = vec![0u8; block.scratch_len()];
//!     done.push((plan.quantize_block(&Scalar, w, block, &mut scratch)?, scratch));
//! }
//! plan.stitch(&mut out, done.iter().map(|(d, s)| (*d, s.as_slice())))?;
//!
//! let mut whole = vec![0u8; plan.packed_len()];
//! adpq_core::quantize_tensor(&Scalar, w, rows, cols, &params, &sel, &mut whole)?;
//! assert_eq!(out, whole);
//! # Ok::<(), adpq_core::Error>(())
//! ```

use core::ops::Range;

use crate::bits::{copy_values, stream_bytes, BitWriter};
use crate::error::{Error, Result};
use crate::format::{finish, HeaderInfo, Layout, PackedTensor, MAGIC};
use crate::kernels::{CpuKernels, Quantized, RowJob, RowsOut};
use crate::params::FormatVersion;
use crate::params::Params;
use crate::quant::{check_magnitude, scale_exponent};
use crate::rotate::Rotation;

/// The largest weight magnitude a rotated (v3) tensor may hold: `2^116`.
const MAX_ROTATED_ABS: f32 = f32::from_bits((127 + 116) << 23);
use crate::select::{OutlierRule, Selection};
use crate::weights::Weights;

/// How a selected tensor is quantized: its layout, header and row blocks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantizePlan {
    layout: Layout,
    info: HeaderInfo,
    selection: Selection,
    block_rows: usize,
}

/// One block's share of the packed buffer: its rows' counts, records and codes.
#[derive(Debug)]
pub struct BlockOut<'b> {
    index: usize,
    first_row: usize,
    rows: usize,
    equal_before: u64,
    scratch_len: usize,
    counts: &'b mut [u8],
    records: &'b mut [u8],
    codes: &'b mut [u8],
    /// The whole position stream of the packed buffer (block 0 only).
    positions: Option<&'b mut [u8]>,
}

/// What quantizing one block produced (see [`QuantizePlan::stitch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockDone {
    index: usize,
    outliers: u64,
    position_bytes: usize,
    /// Filled by an encoder other than this crate's kernels (see
    /// [`QuantizePlan::accept_filled`]): `stitch` validates the sealed buffer.
    external: bool,
}

/// A block's sections of the packed buffer, for an encoder other than this crate's
/// kernels (a device, another process) to fill: see [`BlockOut::sections`].
#[derive(Debug)]
pub struct BlockSections<'s> {
    /// Outlier count of each of the block's rows, little-endian u32, 4 bytes per row.
    pub counts: &'s mut [u8],
    /// The rows' records, [`Layout::row_record_bytes`] per row (v2: the row units
    /// first), as [`format::record`](crate::format::record) and
    /// [`format::record_v2`](crate::format::record_v2) encode them.
    pub records: &'s mut [u8],
    /// The rows' codes, [`Layout::row_code_bytes`] per row.
    pub codes: &'s mut [u8],
    /// The block's outlier positions from bit 0: [`Layout::position_bits`] bits each,
    /// LSB first, in row-major order, each its index within its group.
    pub positions: &'s mut [u8],
}

/// The blocks of a packed buffer, in row order (see [`QuantizePlan::split`]).
#[derive(Debug)]
pub struct Blocks<'p, 'b> {
    plan: &'p QuantizePlan,
    ties: &'p [u64],
    next: usize,
    equal_before: u64,
    counts: &'b mut [u8],
    records: &'b mut [u8],
    codes: &'b mut [u8],
    positions: Option<&'b mut [u8]>,
}

impl QuantizePlan {
    /// The plan for a `rows × cols` tensor with this selection, in blocks of `block_rows`
    /// rows (clamped to `1..=rows`; the last block may be shorter).
    pub fn new(
        rows: usize,
        cols: usize,
        params: &Params,
        selection: &Selection,
        block_rows: usize,
    ) -> Result<QuantizePlan> {
        // A selection made elsewhere than `select_outliers` is held to the same range.
        check_magnitude(selection.max_abs())?;
        let fp = params.format();
        let rotation = (fp.version == FormatVersion::V3).then(Rotation::default_v3);
        // Rotation grows a magnitude by up to √512: keep every decoded value below 2^126.
        if rotation.is_some() && selection.max_abs() > MAX_ROTATED_ABS {
            return Err(Error::Unsupported(
                "format v3 rotates rows: weights must stay below 2^116 in magnitude (format v2 takes up to 2^124)",
            ));
        }
        let layout = Layout::new(rows, cols, fp, selection.n_outliers)?;
        Ok(QuantizePlan {
            layout,
            info: HeaderInfo {
                scale_exp: scale_exponent(selection.max_abs(), &fp),
                selection: params.selection(),
                threshold: selection.threshold(),
                alpha: params.alpha(),
                rotation,
            },
            selection: *selection,
            block_rows: block_rows.clamp(1, rows),
        })
    }

    /// The per-tensor step exponent `e` every grid of the tensor is stored against.
    pub fn scale_exp(&self) -> i8 {
        self.info.scale_exp
    }

    /// The selection the plan quantizes with.
    pub fn selection(&self) -> &Selection {
        &self.selection
    }

    /// Which weights of `block` are outliers, element by element in row-major order:
    /// the threshold and the ties at it still to take (what an external encoder of the
    /// block must apply, see [`BlockOut::sections`]).
    pub fn rule_for(&self, block: &BlockOut<'_>) -> OutlierRule {
        self.selection.rule_after(block.equal_before)
    }

    /// The packed layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Bytes of the packed buffer.
    pub fn packed_len(&self) -> usize {
        self.layout.total_len
    }

    /// Number of row blocks.
    pub fn block_count(&self) -> usize {
        self.layout.rows.div_ceil(self.block_rows)
    }

    /// The rows of block `block`.
    pub fn block_rows(&self, block: usize) -> Range<usize> {
        let start = (block * self.block_rows).min(self.layout.rows);
        start..(start + self.block_rows).min(self.layout.rows)
    }

    /// True when [`split`](Self::split) needs the tie count of every block: some but not
    /// all weights at the threshold are outliers, and there is more than one block.
    pub fn needs_tie_counts(&self) -> bool {
        !self.selection.is_row_independent() && self.block_count() > 1
    }

    /// The weights of block `block` of the tensor `w`.
    fn block_weights<'w>(&self, w: Weights<'w>, rows: Range<usize>) -> Result<Weights<'w>> {
        let cols = self.layout.cols;
        let n = self.layout.rows * cols;
        let mismatch = Error::ShapeMismatch {
            expected: n as u64,
            actual: w.len() as u64,
        };
        if w.len() != n {
            return Err(mismatch);
        }
        w.get(rows.start * cols, rows.end * cols).ok_or(mismatch)
    }

    /// The weights of block `block` exactly at the threshold (what
    /// [`split`](Self::split) needs per block when [`needs_tie_counts`](Self::needs_tie_counts)).
    pub fn count_ties<K: CpuKernels>(
        &self,
        kernels: &K,
        w: Weights<'_>,
        block: usize,
    ) -> Result<u64> {
        let wb = self.block_weights(w, self.block_rows(block))?;
        Ok(kernels.count_equal(wb, self.selection.threshold_bits))
    }

    /// Splits a packed buffer of [`packed_len`](Self::packed_len) bytes into its blocks.
    /// `ties` holds the tie count of every block when
    /// [`needs_tie_counts`](Self::needs_tie_counts), and may be empty otherwise.
    pub fn split<'p, 'b>(&'p self, out: &'b mut [u8], ties: &'p [u64]) -> Result<Blocks<'p, 'b>> {
        let l = &self.layout;
        if out.len() != l.total_len {
            return Err(Error::BufferSize {
                needed: l.total_len as u64,
                actual: out.len() as u64,
            });
        }
        if (self.needs_tie_counts() || !ties.is_empty()) && ties.len() != self.block_count() {
            return Err(Error::BufferSize {
                needed: self.block_count() as u64,
                actual: ties.len() as u64,
            });
        }
        let sections = l.split_mut(out);
        Ok(Blocks {
            plan: self,
            ties,
            next: 0,
            equal_before: 0,
            counts: sections.counts,
            records: sections.records,
            codes: sections.codes,
            positions: Some(sections.positions),
        })
    }

    /// Quantizes one block of the tensor `w` (all of it, `rows · cols` weights) into its
    /// share of the buffer. `scratch` receives the block's positions unless it is block 0;
    /// it needs at least [`BlockOut::scratch_len`] bytes.
    pub fn quantize_block<K: CpuKernels>(
        &self,
        kernels: &K,
        w: Weights<'_>,
        block: BlockOut<'_>,
        scratch: &mut [u8],
    ) -> Result<BlockDone> {
        let wb = self.block_weights(w, block.first_row..block.first_row + block.rows)?;
        let job = RowJob {
            cols: self.layout.cols,
            params: self.layout.params,
            rule: self.rule_for(&block),
            scale_exp: self.info.scale_exp,
            first_row: block.first_row as u64,
            rotation: self.info.rotation,
        };
        let (index, mut block) = (block.index, block);
        let sections = block.sections(scratch)?;
        let mut out = RowsOut {
            counts: sections.counts,
            records: sections.records,
            codes: sections.codes,
            positions: BitWriter::new(sections.positions, self.layout.position_bits),
        };
        let done = kernels.quantize_rows(wb, &job, &mut out)?;
        Ok(BlockDone {
            index,
            outliers: done.outliers,
            position_bytes: stream_bytes(done.outliers, self.layout.position_bits) as usize,
            external: false,
        })
    }

    /// Accepts a block whose [sections](BlockOut::sections) an encoder other than this
    /// crate's kernels filled (a device, another process): its outliers are the sum of
    /// its rows' counts. [`stitch`](Self::stitch) then validates the whole sealed buffer
    /// as the parser does (records, counts, positions, offsets), so a wrong block is an
    /// error and never a corrupt tensor.
    pub fn accept_filled(&self, block: BlockOut<'_>) -> Result<BlockDone> {
        let outliers: u64 = block
            .counts
            .chunks_exact(4)
            .map(|c| u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .sum();
        if outliers > self.layout.n_outliers {
            return Err(Error::OutlierCount {
                expected: self.layout.n_outliers,
                actual: outliers,
            });
        }
        Ok(BlockDone {
            index: block.index,
            outliers,
            position_bytes: stream_bytes(outliers, self.layout.position_bits) as usize,
            external: true,
        })
    }

    /// Seals the packed buffer once every block is quantized: appends the position
    /// streams of blocks 1.. (`blocks` yields every block's result with its scratch, in
    /// block order; block 0's scratch is ignored), writes the row offsets, the header and
    /// the checksum.
    pub fn stitch<'s, I>(&self, out: &mut [u8], blocks: I) -> Result<Quantized>
    where
        I: IntoIterator<Item = (BlockDone, &'s [u8])>,
    {
        let l = &self.layout;
        if out.len() != l.total_len {
            return Err(Error::BufferSize {
                needed: l.total_len as u64,
                actual: out.len() as u64,
            });
        }
        let k = l.n_outliers;
        let positions = &mut out[l.positions_at..];
        let (mut next, mut seen, mut external) = (0u64, 0usize, false);
        for (done, scratch) in blocks {
            external |= done.external;
            if done.index != seen {
                return Err(Error::BufferSize {
                    needed: seen as u64,
                    actual: done.index as u64,
                });
            }
            seen += 1;
            let fits = next + done.outliers <= k;
            if !fits
                || (done.index > 0
                    && !copy_values(
                        scratch,
                        done.outliers as usize,
                        l.position_bits,
                        positions,
                        next as usize,
                    ))
            {
                return Err(Error::OutlierCount {
                    expected: k,
                    actual: next + done.outliers,
                });
            }
            next += done.outliers;
        }
        if seen != self.block_count() {
            return Err(Error::BufferSize {
                needed: self.block_count() as u64,
                actual: seen as u64,
            });
        }
        if next != k {
            return Err(Error::OutlierCount {
                expected: k,
                actual: next,
            });
        }
        finish(out, l, &self.info)?;
        if external {
            if let Err(e) = PackedTensor::parse(out) {
                // Not a tensor anyone may mistake for a valid one.
                out[..MAGIC.len()].fill(0);
                return Err(e);
            }
        }
        Ok(Quantized {
            selection: self.selection,
            bytes: l.total_len,
            bits_per_weight: l.bits_per_weight(),
        })
    }
}

impl<'b> Iterator for Blocks<'_, 'b> {
    type Item = BlockOut<'b>;

    fn next(&mut self) -> Option<BlockOut<'b>> {
        let plan = self.plan;
        let l = &plan.layout;
        let index = self.next;
        if index >= plan.block_count() {
            return None;
        }
        self.next += 1;
        let rows = plan.block_rows(index);
        let n = rows.len();
        let (counts, rest) =
            core::mem::take(&mut self.counts).split_at_mut(n * l.params.row_count_bytes());
        self.counts = rest;
        let (records, rest) =
            core::mem::take(&mut self.records).split_at_mut(n * l.row_record_bytes());
        self.records = rest;
        let (codes, rest) = core::mem::take(&mut self.codes).split_at_mut(n * l.row_code_bytes);
        self.codes = rest;
        let equal_before = self.equal_before;
        self.equal_before += self.ties.get(index).copied().unwrap_or(0);
        let elems = (n * l.cols) as u64;
        Some(BlockOut {
            index,
            first_row: rows.start,
            rows: n,
            equal_before,
            scratch_len: if index == 0 {
                0
            } else {
                stream_bytes(l.n_outliers.min(elems), l.position_bits) as usize
            },
            counts,
            records,
            codes,
            positions: self.positions.take(),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.plan.block_count() - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Blocks<'_, '_> {}

impl BlockOut<'_> {
    /// Index of the block.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The block's rows.
    pub fn rows(&self) -> Range<usize> {
        self.first_row..self.first_row + self.rows
    }

    /// The block's sections, to fill by an encoder other than this crate's kernels, then
    /// hand to [`QuantizePlan::accept_filled`]. The positions go into the packed buffer
    /// itself for block 0, else into `scratch` (at least
    /// [`scratch_len`](Self::scratch_len) bytes, then passed to `stitch` with the block).
    pub fn sections<'s>(&'s mut self, scratch: &'s mut [u8]) -> Result<BlockSections<'s>> {
        let positions = match self.positions.as_deref_mut() {
            Some(positions) => positions,
            None => scratch_of(scratch, self.scratch_len)?,
        };
        Ok(BlockSections {
            counts: self.counts,
            records: self.records,
            codes: self.codes,
            positions,
        })
    }

    /// Bytes of position scratch this block needs (0 for block 0, which writes its
    /// positions in place).
    pub fn scratch_len(&self) -> usize {
        self.scratch_len
    }
}

/// The first `len` bytes of a block's position scratch.
fn scratch_of(scratch: &mut [u8], len: usize) -> Result<&mut [u8]> {
    let actual = scratch.len() as u64;
    scratch.get_mut(..len).ok_or(Error::BufferSize {
        needed: len as u64,
        actual,
    })
}

impl BlockDone {
    /// Outliers the block wrote.
    pub fn outliers(&self) -> u64 {
        self.outliers
    }

    /// Bytes of its scratch that hold the block's positions (what `stitch` reads).
    pub fn position_bytes(&self) -> usize {
        self.position_bytes
    }
}
