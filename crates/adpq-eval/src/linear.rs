//! Weight matrices and `Y = X Wᵀ`: dense, packed (dequantized block by block), or
//! round-to-nearest fake-quantized on the fly.
//!
//! Every kind multiplies the same way: the rows of `W` are split into blocks of
//! [`BLOCK_ROWS`]; each block (on its own rayon task) is made dense in a cache-sized
//! buffer if it is not already, and one GEMM computes the matching columns of `Y`.
//! So a packed tensor is never expanded whole, and the dense reference and the packed
//! candidate go through the same GEMM.

use std::borrow::Cow;

use adpq_core::PackedTensor;
use adpq_engine::Engine;
use ndarray::{linalg::general_mat_mul, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

use crate::rtn::RtnSpec;
use crate::{EvalError, Result};

/// Rows of `W` per task: 128 rows of the widest SmolLM2 input (1536) are 768 KiB. Each
/// GEMM call packs all of `X` again, so fewer, larger blocks pay less for that (64 rows:
/// packing was 13 % of a forward pass).
pub const BLOCK_ROWS: usize = 128;

/// A `rows × cols` weight matrix (row-major: one row per output feature).
#[derive(Debug)]
pub enum Linear<'a> {
    /// Plain f32 weights (borrowed from a memory map, or converted from f16/bf16).
    Dense {
        /// `rows · cols` weights.
        w: Cow<'a, [f32]>,
        /// Output features.
        rows: usize,
        /// Input features.
        cols: usize,
    },
    /// An adpq packed tensor.
    Packed(PackedTensor<'a>),
    /// Dense weights seen through round-to-nearest quantization (a baseline).
    Rtn {
        /// The original `rows · cols` weights.
        w: &'a [f32],
        /// Output features.
        rows: usize,
        /// Input features.
        cols: usize,
        /// The RTN grid.
        spec: RtnSpec,
    },
    /// Weights decoded from another quantizer's format (llama.cpp's, through
    /// [`crate::peer`]), with that format's storage cost.
    Decoded {
        /// The decoded `rows · cols` weights.
        w: Cow<'a, [f32]>,
        /// Output features.
        rows: usize,
        /// Input features.
        cols: usize,
        /// Storage bits per weight of the format they were decoded from.
        bits_per_weight: f64,
    },
}

impl Linear<'_> {
    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Linear::Dense { rows, cols, .. }
            | Linear::Rtn { rows, cols, .. }
            | Linear::Decoded { rows, cols, .. } => (*rows, *cols),
            Linear::Packed(p) => (p.rows(), p.cols()),
        }
    }

    /// Bits of storage per weight: 32 for dense, the packed size for adpq (header and
    /// records counted), the nominal size of the RTN grid, the decoded format's size.
    pub fn bits_per_weight(&self) -> f64 {
        match self {
            Linear::Dense { .. } => 32.0,
            Linear::Packed(p) => p.as_bytes().len() as f64 * 8.0 / (p.rows() * p.cols()) as f64,
            Linear::Rtn { spec, .. } => spec.bits_per_weight(),
            Linear::Decoded {
                bits_per_weight, ..
            } => *bits_per_weight,
        }
    }

    /// Writes rows `first..first + out.len() / cols` as f32 into `out`.
    pub fn rows_into<E: Engine>(&self, engine: &E, first: usize, out: &mut [f32]) -> Result<()> {
        let (_, cols) = self.shape();
        match self {
            Linear::Dense { w, .. } | Linear::Decoded { w, .. } => {
                out.copy_from_slice(&w[first * cols..first * cols + out.len()]);
            }
            Linear::Packed(p) => {
                // Free for the CPU engine (a borrow); a device engine may keep its copy.
                let packed = engine.load_packed(*p).map_err(EvalError::from_engine)?;
                engine
                    .dequantize_rows(&packed, first, out)
                    .map_err(EvalError::from_engine)?
            }
            Linear::Rtn { w, spec, .. } => {
                let src = &w[first * cols..first * cols + out.len()];
                for (o, s) in out.chunks_exact_mut(cols).zip(src.chunks_exact(cols)) {
                    spec.fake_quantize_row(s, o);
                }
            }
        }
        Ok(())
    }

    /// `y = x Wᵀ` for `t` rows of input: `x` is `t × cols`, `y` is `t × rows`, both
    /// row-major. Parallel over blocks of `W`'s rows on the current rayon pool.
    pub fn matmul<E: Engine + Sync>(
        &self,
        engine: &E,
        x: &[f32],
        t: usize,
        y: &mut [f32],
    ) -> Result<()> {
        let (rows, cols) = self.shape();
        if x.len() != t * cols || y.len() != t * rows {
            return Err(EvalError::Shape(format!(
                "matmul of a {rows}x{cols} weight with {} inputs into {} outputs ({t} tokens)",
                x.len(),
                y.len()
            )));
        }
        let xv = ArrayView2::from_shape((t, cols), x).map_err(shape_err)?;
        let mut yv = ArrayViewMut2::from_shape((t, rows), y).map_err(shape_err)?;
        let blocks: Vec<_> = yv
            .axis_chunks_iter_mut(Axis(1), BLOCK_ROWS)
            .enumerate()
            .collect();
        blocks
            .into_par_iter()
            .map_init(Vec::new, |buf: &mut Vec<f32>, (b, mut yb)| {
                let first = b * BLOCK_ROWS;
                let n = yb.ncols();
                let wb: ArrayView2<f32> = match self {
                    Linear::Dense { w, .. } | Linear::Decoded { w, .. } => {
                        ArrayView2::from_shape((n, cols), &w[first * cols..(first + n) * cols])
                            .map_err(shape_err)?
                    }
                    _ => {
                        buf.resize(n * cols, 0.0);
                        self.rows_into(engine, first, buf)?;
                        ArrayView2::from_shape((n, cols), &buf[..]).map_err(shape_err)?
                    }
                };
                general_mat_mul(1.0, &xv, &wb.t(), 0.0, &mut yb);
                Ok(())
            })
            .collect::<Result<()>>()
    }
}

fn shape_err(e: ndarray::ShapeError) -> EvalError {
    EvalError::Shape(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use adpq_core::kernels::Scalar;
    use adpq_engine::CpuEngine;

    fn naive(w: &[f32], rows: usize, cols: usize, x: &[f32], t: usize) -> Vec<f32> {
        let mut y = vec![0f32; t * rows];
        for i in 0..t {
            for r in 0..rows {
                y[i * rows + r] = (0..cols).map(|c| x[i * cols + c] * w[r * cols + c]).sum();
            }
        }
        y
    }

    #[test]
    fn dense_matmul_matches_the_naive_product_across_block_edges() {
        let (rows, cols, t) = (BLOCK_ROWS * 2 + 5, 37, 3);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 113) as f32 / 50.0 - 1.0)
            .collect();
        let x: Vec<f32> = (0..t * cols)
            .map(|i| ((i * 31) % 17) as f32 / 8.0 - 1.0)
            .collect();
        let lin = Linear::Dense {
            w: Cow::Borrowed(&w),
            rows,
            cols,
        };
        let mut y = vec![0f32; t * rows];
        lin.matmul(&CpuEngine::new(Scalar), &x, t, &mut y).unwrap();
        for (a, b) in y.iter().zip(naive(&w, rows, cols, &x, t)) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        let mut short = vec![0f32; t * rows - 1];
        assert!(lin
            .matmul(&CpuEngine::new(Scalar), &x, t, &mut short)
            .is_err());
    }
}
