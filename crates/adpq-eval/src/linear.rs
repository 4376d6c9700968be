//! Weight matrices and `Y = X Wᵀ`: dense, packed (dequantized block by block), or
//! round-to-nearest fake-quantized on the fly.
//!
//! Every kind multiplies the same way: the rows of `W` are split into about one block
//! per thread ([`block_rows`], at most [`MAX_BLOCK_ROWS`]); each block (on its own rayon
//! task) is made dense in its thread's buffer if it is not already, and one GEMM
//! computes the matching columns of `Y`. So a packed tensor is never expanded into one
//! buffer (at most `threads × MAX_BLOCK_ROWS` rows are dense at a time, and each rayon
//! worker keeps its buffer for the next call), and the dense reference and the packed
//! candidate go through the same GEMM.

use std::borrow::Cow;
use std::cell::RefCell;

use adpq_core::kernels::Repacked;
use adpq_core::PackedTensor;
use adpq_engine::Engine;
use ndarray::{linalg::general_mat_mul, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

use crate::repack::RepackedRows;
use crate::rtn::RtnSpec;
use crate::{EvalError, Result};

/// Most rows of `W` per task: matrixmultiply's `nc`, the columns of `Y` one packing of
/// `X` serves. Each GEMM call packs all of `X` again, so blocks of `rows / threads` pay
/// that once per thread where the former fixed 128 rows paid it 4.5 to 12 times a thread
/// (`W` 576 to 1536 rows, 2 threads). It bounds the buffer each worker keeps
/// (`MAX_BLOCK_ROWS × cols` f32: 2.25 MiB for SmolLM2, 56 MiB for a 14336-column
/// projection), which lives as long as the worker thread.
pub(crate) const MAX_BLOCK_ROWS: usize = 1024;

/// Block sizes are rounded up to this: the AVX-512 GEMM kernel's width (16 columns of
/// `Y`), so only a tensor's last block has a partial panel.
const BLOCK_ALIGN: usize = 16;

/// Rows of `W` per task for a `rows`-row matrix on `threads` threads: as many blocks as
/// threads, or a multiple of `threads` when blocks would exceed [`MAX_BLOCK_ROWS`],
/// rounded up to [`BLOCK_ALIGN`] rows (so a small matrix may have fewer blocks than
/// threads, and the last block fewer rows). Each output is computed the same way
/// whatever the split (the GEMM's order of summation along `cols` does not depend on
/// it), so the results do not depend on `threads` (tested).
pub(crate) fn block_rows(rows: usize, threads: usize) -> usize {
    let threads = threads.max(1);
    let blocks = rows.div_ceil(MAX_BLOCK_ROWS).div_ceil(threads).max(1) * threads;
    rows.div_ceil(blocks)
        .next_multiple_of(BLOCK_ALIGN)
        .clamp(BLOCK_ALIGN, MAX_BLOCK_ROWS)
}

thread_local! {
    /// A worker's dense copy of its current block of a packed or RTN matrix, kept from
    /// block to block and call to call (at most `MAX_BLOCK_ROWS × cols` f32).
    static BLOCK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

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
    /// An adpq packed tensor with its rows also repacked for the decoder's int8 gemv
    /// ([`Model::repack_for_decoding`](crate::model::Model::repack_for_decoding)):
    /// everything else reads the packed tensor.
    Repacked {
        /// The packed tensor.
        packed: PackedTensor<'a>,
        /// Its rows repacked ([`Repacked::repack`]).
        rows: RepackedRows,
    },
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
            Linear::Packed(p) | Linear::Repacked { packed: p, .. } => (p.rows(), p.cols()),
        }
    }

    /// Bits of storage per weight: 32 for dense, the packed size for adpq (header and
    /// records counted), the nominal size of the RTN grid, the decoded format's size.
    pub fn bits_per_weight(&self) -> f64 {
        match self {
            Linear::Dense { .. } => 32.0,
            Linear::Packed(p) | Linear::Repacked { packed: p, .. } => {
                p.as_bytes().len() as f64 * 8.0 / (p.rows() * p.cols()) as f64
            }
            Linear::Rtn { spec, .. } => spec.bits_per_weight(),
            Linear::Decoded {
                bits_per_weight, ..
            } => *bits_per_weight,
        }
    }

    /// The packed tensor, with its repacked rows where it has them: `None` for a matrix
    /// that is not packed, an error when its repacked rows are not the tensor's.
    pub(crate) fn packed(&self) -> Result<Option<(&PackedTensor<'_>, Option<Repacked<'_>>)>> {
        Ok(match self {
            Linear::Packed(p) => Some((p, None)),
            Linear::Repacked { packed, rows } => {
                Some((packed, Some(Repacked::new(*packed, rows.bytes())?)))
            }
            _ => None,
        })
    }

    /// Writes rows `first..first + out.len() / cols` as f32 into `out`.
    pub fn rows_into<E: Engine>(&self, engine: &E, first: usize, out: &mut [f32]) -> Result<()> {
        let (_, cols) = self.shape();
        match self {
            Linear::Dense { w, .. } | Linear::Decoded { w, .. } => {
                out.copy_from_slice(&w[first * cols..first * cols + out.len()]);
            }
            Linear::Packed(p) | Linear::Repacked { packed: p, .. } => {
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
        let block = block_rows(rows, rayon::current_num_threads());
        let blocks: Vec<_> = yv
            .axis_chunks_iter_mut(Axis(1), block)
            .enumerate()
            .collect();
        blocks.into_par_iter().try_for_each(|(b, mut yb)| {
            let first = b * block;
            let n = yb.ncols();
            match self {
                Linear::Dense { w, .. } | Linear::Decoded { w, .. } => {
                    let wb = ArrayView2::from_shape((n, cols), &w[first * cols..][..n * cols])
                        .map_err(shape_err)?;
                    general_mat_mul(1.0, &xv, &wb.t(), 0.0, &mut yb);
                }
                // A fresh buffer only if this thread is already inside a block (a
                // nested product, which the CPU engine never makes).
                _ => BLOCK.with(|cell| match cell.try_borrow_mut() {
                    Ok(mut buf) => self.block_product(engine, first, &xv, &mut yb, &mut buf),
                    Err(_) => self.block_product(engine, first, &xv, &mut yb, &mut Vec::new()),
                })?,
            }
            Ok(())
        })
    }

    /// `yb = x W[first..first + yb.ncols()]ᵀ`, the rows made dense in `buf` first.
    fn block_product<E: Engine>(
        &self,
        engine: &E,
        first: usize,
        x: &ArrayView2<f32>,
        yb: &mut ArrayViewMut2<f32>,
        buf: &mut Vec<f32>,
    ) -> Result<()> {
        let (n, cols) = (yb.ncols(), self.shape().1);
        buf.resize(n * cols, 0.0);
        self.rows_into(engine, first, buf)?;
        let wb = ArrayView2::from_shape((n, cols), &buf[..]).map_err(shape_err)?;
        general_mat_mul(1.0, x, &wb.t(), 0.0, yb);
        Ok(())
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

    fn data(n: usize, mul: usize, modulo: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * mul) % modulo) as f32 / (modulo / 2) as f32 - 1.0)
            .collect()
    }

    #[test]
    fn dense_matmul_matches_the_naive_product_across_block_edges() {
        let (rows, cols, t) = (MAX_BLOCK_ROWS * 2 + 5, 37, 3);
        let (w, x) = (data(rows * cols, 7919, 113), data(t * cols, 31, 17));
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

    #[test]
    fn blocks_share_rows_evenly_between_threads() {
        assert_eq!(block_rows(576, 1), 576);
        assert_eq!(block_rows(576, 2), 288);
        assert_eq!(block_rows(1536, 1), 768);
        assert_eq!(block_rows(1536, 2), 768);
        assert_eq!(block_rows(49152, 2), 1024);
        assert_eq!(block_rows(3, 4), 16);
        assert_eq!(block_rows(0, 0), 16);
    }

    /// Blocks of `rows / threads` rows: the products are the same bits on 1, 2 and 3
    /// threads, dense and dequantized (RTN) alike.
    #[test]
    fn products_do_not_depend_on_the_thread_count() {
        let (rows, cols, t) = (1000, 300, 21);
        let (w, x) = (data(rows * cols, 7919, 113), data(t * cols, 31, 17));
        let dense = Linear::Dense {
            w: Cow::Borrowed(&w),
            rows,
            cols,
        };
        let rtn = Linear::Rtn {
            w: &w,
            rows,
            cols,
            spec: "sym-g64-b4".parse().unwrap(),
        };
        for lin in [&dense, &rtn] {
            let product = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut y = vec![0f32; t * rows];
                pool.install(|| lin.matmul(&CpuEngine::new(Scalar), &x, t, &mut y))
                    .unwrap();
                y
            };
            let one = product(1);
            assert!(one == product(2) && one == product(3));
        }
    }
}
