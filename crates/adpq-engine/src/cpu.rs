//! The CPU engine: [`Engine`] over any [`CpuKernels`], parallel inside on the current
//! rayon pool (the caller picks the thread count with `ThreadPool::install`).

use adpq_core::{
    CpuKernels, Error as CoreError, OutDtype, PackedTensor, Params, Quantized, Selection, Weights,
};
use rayon::prelude::*;

use crate::driver::{Driver, BLOCK_ELEMS};
use crate::rtn::ErrorSums;
use crate::{Engine, EngineResult};

/// The CPU engine over the kernels `K` (`Scalar`, `Avx2`, `Neon` or `AnyKernels`). Its
/// context is the kernel token, which proves the CPU features; the threads are those of
/// the rayon pool it is called on.
#[derive(Debug, Clone, Copy)]
pub struct CpuEngine<K> {
    driver: Driver<K>,
}

impl<K: CpuKernels> CpuEngine<K> {
    /// An engine over `kernels`.
    pub fn new(kernels: K) -> Self {
        CpuEngine {
            driver: Driver::new(kernels),
        }
    }

    /// The kernels.
    pub fn kernels(&self) -> K {
        self.driver.backend()
    }
}

/// A dense tensor of the CPU engine: the weights stay where they are (typically a
/// memory map), borrowed.
#[derive(Debug, Clone, Copy)]
pub struct CpuDense<'a> {
    w: Weights<'a>,
    rows: usize,
    cols: usize,
}

impl<K: CpuKernels> Engine for CpuEngine<K> {
    type Dense<'a>
        = CpuDense<'a>
    where
        K: 'a;
    type Packed<'a>
        = PackedTensor<'a>
    where
        K: 'a;

    fn name(&self) -> &str {
        self.driver.backend().name()
    }

    fn load<'a>(&'a self, w: Weights<'a>, rows: usize, cols: usize) -> EngineResult<CpuDense<'a>> {
        if rows.checked_mul(cols) != Some(w.len()) {
            return Err(CoreError::ShapeMismatch {
                expected: rows.saturating_mul(cols) as u64,
                actual: w.len() as u64,
            }
            .into());
        }
        Ok(CpuDense { w, rows, cols })
    }

    fn select(&self, t: &CpuDense<'_>, params: &Params) -> EngineResult<Selection> {
        Ok(self.driver.select(t.w, t.rows, t.cols, params)?)
    }

    fn quantize(
        &self,
        t: &CpuDense<'_>,
        params: &Params,
        sel: &Selection,
        out: &mut [u8],
    ) -> EngineResult<Quantized> {
        Ok(self
            .driver
            .quantize(t.w, t.rows, t.cols, params, sel, out)?)
    }

    fn load_packed<'a>(&'a self, p: PackedTensor<'a>) -> EngineResult<PackedTensor<'a>> {
        Ok(p)
    }

    fn error_sums(&self, t: &CpuDense<'_>, packed: &PackedTensor<'_>) -> EngineResult<ErrorSums> {
        Ok(self.driver.error_sums(t.w, packed)?)
    }

    fn dequantize(
        &self,
        packed: &PackedTensor<'_>,
        dtype: OutDtype,
        out: &mut [u8],
    ) -> EngineResult<()> {
        Ok(self.driver.dequantize(packed, dtype, out)?)
    }

    fn dequantize_rows(
        &self,
        packed: &PackedTensor<'_>,
        first_row: usize,
        out: &mut [f32],
    ) -> EngineResult<()> {
        Ok(self.kernels().dequantize_rows(packed, first_row, out)?)
    }

    fn gemv(&self, packed: &PackedTensor<'_>, x: &[f32], y: &mut [f32]) -> EngineResult<()> {
        self.gemm(packed, x, 1, y)
    }

    fn gemm(
        &self,
        packed: &PackedTensor<'_>,
        x: &[f32],
        count: usize,
        y: &mut [f32],
    ) -> EngineResult<()> {
        let (rows, cols) = (packed.rows(), packed.cols());
        if x.len() != count * cols {
            return Err(CoreError::ShapeMismatch {
                expected: (count * cols) as u64,
                actual: x.len() as u64,
            }
            .into());
        }
        if y.len() != count * rows {
            return Err(CoreError::BufferSize {
                needed: (count * rows) as u64,
                actual: y.len() as u64,
            }
            .into());
        }
        if count == 0 {
            return Ok(());
        }
        // Blocks of rows in parallel, every vector per row (its codes decoded once into
        // cache); outputs gathered per block, then scattered into `y`'s row-major layout.
        let k = self.kernels();
        let block_rows = (BLOCK_ELEMS / cols.max(1)).max(1);
        let blocks: Vec<EngineResult<Vec<f32>>> = (0..rows.div_ceil(block_rows))
            .into_par_iter()
            .map(|b| {
                let rs = b * block_rows..((b + 1) * block_rows).min(rows);
                let mut out = Vec::with_capacity(rs.len() * count);
                for r in rs {
                    for xv in x.chunks_exact(cols) {
                        out.push(k.dot_row(packed, r, xv)?);
                    }
                }
                Ok(out)
            })
            .collect();
        for (b, block) in blocks.into_iter().enumerate() {
            for (i, per_row) in block?.chunks_exact(count).enumerate() {
                let r = b * block_rows + i;
                for (v, &value) in per_row.iter().enumerate() {
                    y[v * rows + r] = value;
                }
            }
        }
        Ok(())
    }

    type Vectors = HostVectors;

    fn upload(&self, x: &[f32], count: usize) -> EngineResult<HostVectors> {
        if count == 0 || !x.len().is_multiple_of(count) {
            return Err(CoreError::ShapeMismatch {
                expected: count as u64,
                actual: x.len() as u64,
            }
            .into());
        }
        Ok(HostVectors {
            data: x.to_vec(),
            count,
        })
    }

    fn download(&self, v: &HostVectors, out: &mut [f32]) -> EngineResult<()> {
        if out.len() != v.data.len() {
            return Err(CoreError::BufferSize {
                needed: v.data.len() as u64,
                actual: out.len() as u64,
            }
            .into());
        }
        out.copy_from_slice(&v.data);
        Ok(())
    }

    fn gemm_resident(
        &self,
        packed: &PackedTensor<'_>,
        x: &HostVectors,
        y: &mut HostVectors,
    ) -> EngineResult<()> {
        y.data.resize(x.count * packed.rows(), 0.0);
        y.count = x.count;
        self.gemm(packed, &x.data, x.count, &mut y.data)
    }
}

/// Activation vectors of the CPU engine: host memory, `count` vectors back to back.
#[derive(Debug, Clone, PartialEq)]
pub struct HostVectors {
    data: Vec<f32>,
    count: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use adpq_core::{packed_len, Scalar};

    fn weights(rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| {
                let x = (i as f32 * 0.618_034).fract() - 0.5;
                if i % 37 == 0 {
                    x * 16.0
                } else {
                    x
                }
            })
            .collect()
    }

    /// Through the trait, the CPU engine gives the single-threaded core's selection,
    /// bytes, dequantization and products.
    #[test]
    fn engine_equals_the_scalar_core() {
        let (rows, cols) = (70, 1000);
        let w = weights(rows, cols);
        let params = Params::V1;
        let sel_ref =
            adpq_core::select_tensor(&Scalar, Weights::F32(&w), rows, cols, &params).unwrap();
        let mut expect =
            vec![0u8; packed_len(rows, cols, params.format(), sel_ref.n_outliers).unwrap()];
        adpq_core::quantize_tensor(
            &Scalar,
            Weights::F32(&w),
            rows,
            cols,
            &params,
            &sel_ref,
            &mut expect,
        )
        .unwrap();

        let engine = CpuEngine::new(Scalar);
        assert_eq!(engine.name(), "scalar");
        let t = engine.load(Weights::F32(&w), rows, cols).unwrap();
        let sel = engine.select(&t, &params).unwrap();
        assert_eq!(sel, sel_ref);
        let mut buf = vec![0u8; expect.len()];
        engine.quantize(&t, &params, &sel, &mut buf).unwrap();
        assert!(buf == expect);

        let packed = engine
            .load_packed(PackedTensor::parse(&buf).unwrap())
            .unwrap();
        let sums = engine.error_sums(&t, &packed).unwrap();
        assert!(sums.rel_mse() > 0.0 && sums.rel_mse() < sums.rtn_rel_mse());

        let x: Vec<f32> = (0..cols).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
        let mut y_ref = vec![0f32; rows];
        Scalar.gemv(&packed, &x, &mut y_ref).unwrap();
        let mut y = vec![0f32; rows];
        engine.gemv(&packed, &x, &mut y).unwrap();
        assert_eq!(y, y_ref);

        // Three vectors at once, on the host and resident: each equals its gemv.
        let xs: Vec<f32> = (0..3 * cols)
            .map(|i| ((i * 7) % 23) as f32 * 0.05 - 0.5)
            .collect();
        let mut ys = vec![0f32; 3 * rows];
        engine.gemm(&packed, &xs, 3, &mut ys).unwrap();
        for (v, xv) in xs.chunks_exact(cols).enumerate() {
            Scalar.gemv(&packed, xv, &mut y_ref).unwrap();
            assert_eq!(&ys[v * rows..(v + 1) * rows], &y_ref[..], "vector {v}");
        }
        let xr = engine.upload(&xs, 3).unwrap();
        let mut yr = engine.upload(&[0.0], 1).unwrap();
        engine.gemm_resident(&packed, &xr, &mut yr).unwrap();
        let mut back = vec![0f32; 3 * rows];
        engine.download(&yr, &mut back).unwrap();
        assert_eq!(back, ys);
        assert!(engine.gemm(&packed, &xs[1..], 3, &mut ys).is_err());
        assert!(engine.gemm(&packed, &xs, 3, &mut ys[1..]).is_err());
        assert!(engine.upload(&xs[1..], 3).is_err());

        let mut rows_back = vec![0f32; 5 * cols];
        engine.dequantize_rows(&packed, 7, &mut rows_back).unwrap();
        let mut rows_ref = vec![0f32; 5 * cols];
        Scalar.dequantize_rows(&packed, 7, &mut rows_ref).unwrap();
        assert_eq!(rows_back, rows_ref);

        let mut deq = vec![0f32; rows * cols];
        Scalar.dequantize_rows(&packed, 0, &mut deq).unwrap();
        let mut out = vec![0u8; rows * cols * 4];
        engine.dequantize(&packed, OutDtype::F32, &mut out).unwrap();
        let back: Vec<f32> = out
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(back, deq);
    }

    #[test]
    fn wrong_sizes_are_errors() {
        let engine = CpuEngine::new(Scalar);
        let w = weights(4, 128);
        assert!(engine.load(Weights::F32(&w), 5, 128).is_err());
        let t = engine.load(Weights::F32(&w), 4, 128).unwrap();
        let sel = engine.select(&t, &Params::V1).unwrap();
        let mut short = vec![0u8; 3];
        assert!(engine.quantize(&t, &Params::V1, &sel, &mut short).is_err());
        let mut buf = vec![0u8; packed_len(4, 128, Params::V1.format(), sel.n_outliers).unwrap()];
        engine.quantize(&t, &Params::V1, &sel, &mut buf).unwrap();
        let p = PackedTensor::parse(&buf).unwrap();
        let mut y = vec![0f32; 3];
        assert!(engine.gemv(&p, &[0.0; 128], &mut y).is_err());
    }
}
