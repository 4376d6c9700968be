//! The whole-tensor front door on one thread: select a tensor's outliers and quantize it
//! with any row kernels. Parallel and device engines compose the same pieces
//! ([`select_outliers`] over their own [`TensorScan`](crate::TensorScan), and
//! [`QuantizePlan`] in blocks); these are the sequential reference they must match.

use crate::error::Result;
use crate::kernels::{CpuKernels, KernelScan, Quantized};
use crate::params::Params;
use crate::plan::QuantizePlan;
use crate::select::{check_shape, select_outliers, Selection};
use crate::weights::Weights;

/// Selects the outliers of a `rows × cols` tensor with `kernels`' passes.
pub fn select_tensor<K: CpuKernels>(
    kernels: &K,
    w: Weights<'_>,
    rows: usize,
    cols: usize,
    params: &Params,
) -> Result<Selection> {
    select_outliers(&KernelScan::new(*kernels, w), rows, cols, params)
}

/// Quantizes a whole tensor with a selection made by [`select_tensor`] (or any engine's
/// equal selection) into `out`, which must be exactly [`packed_len`](crate::packed_len)
/// bytes: the [`QuantizePlan`] as one block.
pub fn quantize_tensor<K: CpuKernels>(
    kernels: &K,
    w: Weights<'_>,
    rows: usize,
    cols: usize,
    params: &Params,
    selection: &Selection,
    out: &mut [u8],
) -> Result<Quantized> {
    check_shape(w.len(), rows, cols)?;
    let plan = QuantizePlan::new(rows, cols, params, selection, rows)?;
    let mut done = None;
    for block in plan.split(out, &[])? {
        done = Some(plan.quantize_block(kernels, w, block, &mut [])?);
    }
    plan.stitch(out, done.map(|d| (d, &[][..])))
}
