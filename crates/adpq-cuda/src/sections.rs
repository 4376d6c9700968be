//! The sections a device (or the host build of the device arithmetic) fills, and their
//! one way into a packed buffer: the core's write path ([`QuantizePlan`] as one block,
//! [`QuantizePlan::accept_filled`], then `stitch`, which writes offsets, header and CRC
//! and validates the result like the parser). This crate writes no header of its own.

use adpq_core::{Error, Params, QuantizePlan, Quantized, Result, Selection};

/// The per-row counts, records, codes and outlier positions of a whole tensor, laid out
/// as in the packed buffer (`docs/FORMAT.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sections {
    /// Outliers of each row.
    pub row_counts: Vec<u32>,
    /// The records section (v2: each row's units first).
    pub records: Vec<u8>,
    /// The codes section.
    pub codes: Vec<u8>,
    /// The position stream, exactly `ceil(k · p / 8)` bytes.
    pub positions: Vec<u8>,
}

impl Sections {
    /// Outliers in the tensor.
    pub fn n_outliers(&self) -> u64 {
        self.row_counts.iter().map(|&c| u64::from(c)).sum()
    }

    /// Writes the packed buffer of a `rows × cols` tensor quantized with `params` and
    /// `sel` into `out` (exactly `packed_len` bytes) through the core's write path. A
    /// section of the wrong size, or contents the parser would reject, is an error.
    pub fn write(
        &self,
        rows: usize,
        cols: usize,
        params: &Params,
        sel: &Selection,
        out: &mut [u8],
    ) -> Result<Quantized> {
        let plan = QuantizePlan::new(rows, cols, params, sel, rows)?;
        let mut done = None;
        for mut block in plan.split(out, &[])? {
            let mut no_scratch = [0u8; 0];
            let s = block.sections(&mut no_scratch)?;
            fill(s.counts, &counts_le(&self.row_counts))?;
            fill(s.records, &self.records)?;
            fill(s.codes, &self.codes)?;
            fill(s.positions, &self.positions)?;
            done = Some(plan.accept_filled(block)?);
        }
        plan.stitch(out, done.map(|d| (d, &[][..])))
    }
}

fn counts_le(counts: &[u32]) -> Vec<u8> {
    counts.iter().flat_map(|c| c.to_le_bytes()).collect()
}

fn fill(dst: &mut [u8], src: &[u8]) -> Result<()> {
    if dst.len() != src.len() {
        return Err(Error::BufferSize {
            needed: dst.len() as u64,
            actual: src.len() as u64,
        });
    }
    dst.copy_from_slice(src);
    Ok(())
}
