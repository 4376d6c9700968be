//! The walk over a gemv's rows a block at a time, shared by every format's int8 dot:
//! [`ROW_BLOCK`] rows together (sharing each activation load and one horizontal sum per
//! group), the rest one at a time, each block's successor asked of the cache first.

use crate::error::Result;
use crate::format::PackedTensor;
use crate::kernels::prefetch_rows;

/// Rows a format's block dot works on together.
pub(super) const ROW_BLOCK: usize = 4;

/// A format's dot of `N` consecutive rows (`N` is [`ROW_BLOCK`] or 1), each output its
/// row's alone, bit for bit, however many rows run together. A trait, not a closure, so
/// that the dot inlines into the ISA's `#[target_feature]` function (see the module
/// docs of `simd`).
pub(super) trait RowsDot {
    /// Rows `first..first + N` into `out`.
    fn rows<const N: usize>(&self, first: usize, out: &mut [f32; N]) -> Result<()>;
}

/// Rows `first..first + y.len()` of `t` by `dot`, [`ROW_BLOCK`] at a time.
#[inline(always)]
pub(super) fn in_row_blocks<D: RowsDot>(
    t: &PackedTensor<'_>,
    first: usize,
    y: &mut [f32],
    dot: D,
) -> Result<()> {
    let done = y.len() / ROW_BLOCK * ROW_BLOCK;
    let mut blocks = y.chunks_exact_mut(ROW_BLOCK);
    for (k, out) in (&mut blocks).enumerate() {
        let r = first + k * ROW_BLOCK;
        // A block's dot is too short for the hardware prefetcher to run ahead of: without
        // the hint every block waits on its own misses.
        prefetch_rows(t, r + ROW_BLOCK, ROW_BLOCK);
        dot.rows::<ROW_BLOCK>(r, out.try_into().expect("a block of rows"))?;
    }
    for (i, out) in blocks.into_remainder().iter_mut().enumerate() {
        dot.rows(first + done + i, core::array::from_mut(out))?;
    }
    Ok(())
}
