//! [`CudaEngine`]: the [`Engine`] over the NVRTC kernels, tensors resident on the device.
//!
//! A dense tensor is uploaded once as stored (f32, or f16/bf16 as their 16-bit patterns)
//! and the selection passes and the quantization run on it there; a packed tensor's
//! sections are uploaded once for dequantization, error sums and products.

mod launch;
mod select;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use adpq_core::narrow::write_rows;
use adpq_core::select::check_shape;
use adpq_core::OutDtype;
use adpq_core::{packed_len, PackedTensor, Params, Q8Activations, Quantized, Selection, Weights};
use adpq_engine::{Engine, EngineError, EngineResult, ErrorSums};
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream};
use cudarc::nvrtc::Ptx;
use half::slice::HalfFloatSliceExt;

pub use launch::PackedParams;

use crate::error::CudaError;
use crate::ptx::{compile_all, nvrtc_present, Arch, KernelPtx};
use launch::quant_job;

/// The CUDA engine: one device, its default stream and the loaded kernels.
#[derive(Debug)]
pub struct CudaEngine {
    stream: Arc<CudaStream>,
    k: Kernels,
    name: String,
}

/// The kernels, loaded from their modules.
#[derive(Debug)]
pub(crate) struct Kernels {
    pub(crate) histogram: CudaFunction,
    pub(crate) count: CudaFunction,
    pub(crate) group_ties: CudaFunction,
    pub(crate) scan: CudaFunction,
    pub(crate) v2_extents: CudaFunction,
    pub(crate) row_units: CudaFunction,
    pub(crate) v3_rotate: CudaFunction,
    pub(crate) v3_extents: CudaFunction,
    pub(crate) v3_groups: CudaFunction,
    pub(crate) v3_unrotate: CudaFunction,
    pub(crate) quantize_groups: CudaFunction,
    pub(crate) row_counts: CudaFunction,
    pub(crate) positions: CudaFunction,
    pub(crate) dequantize: CudaFunction,
    pub(crate) error_sums: CudaFunction,
    pub(crate) gemm: CudaFunction,
    pub(crate) gemv_q8: CudaFunction,
}

/// PTX per architecture, compiled once per process.
fn ptx_for(arch: Arch) -> Result<Arc<Vec<KernelPtx>>, CudaError> {
    static CACHE: OnceLock<Mutex<HashMap<Arch, Arc<Vec<KernelPtx>>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(p) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&arch) {
        return Ok(p.clone());
    }
    let ptx = Arc::new(compile_all(arch)?);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(arch, ptx.clone());
    Ok(ptx)
}

/// Whether the CUDA driver library can be loaded.
pub fn driver_present() -> bool {
    // SAFETY: only tries to open libcuda (libloading); it calls nothing in it.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

impl CudaEngine {
    /// The engine on device 0.
    ///
    /// Returns an error, never panics, when there is no driver ([`CudaError::NoDriver`]),
    /// no NVRTC ([`CudaError::NoNvrtc`]), no device ([`CudaError::NoDevice`]), or when a
    /// kernel does not compile or load.
    pub fn new() -> Result<CudaEngine, CudaError> {
        CudaEngine::on_device(0)
    }

    /// The engine on device `ordinal`.
    pub fn on_device(ordinal: usize) -> Result<CudaEngine, CudaError> {
        // cudarc panics on first use of a library it cannot load: check both first.
        if !driver_present() {
            return Err(CudaError::NoDriver);
        }
        if !nvrtc_present() {
            return Err(CudaError::NoNvrtc);
        }
        let devices = match CudaContext::device_count() {
            Err(e) if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_NO_DEVICE => {
                return Err(CudaError::NoDevice)
            }
            r => r?,
        };
        if ordinal >= usize::try_from(devices).unwrap_or(0) {
            return Err(CudaError::NoDevice);
        }
        let ctx = CudaContext::new(ordinal)?;
        let (major, minor) = ctx.compute_capability()?;
        let arch = Arch {
            major: major as u32,
            minor: minor as u32,
        };
        let ptx = ptx_for(arch)?;
        let mut modules = HashMap::new();
        for k in ptx.iter() {
            modules.insert(k.name, ctx.load_module(Ptx::from_src(k.ptx.clone()))?);
        }
        let f = |module: &str, name: &str| -> Result<CudaFunction, CudaError> {
            Ok(modules[module].load_function(name)?)
        };
        let k = Kernels {
            histogram: f("select", "adpq_histogram")?,
            count: f("select", "adpq_count")?,
            group_ties: f("quantize", "adpq_group_ties")?,
            scan: f("quantize", "adpq_scan")?,
            v2_extents: f("quantize", "adpq_v2_extents")?,
            row_units: f("quantize", "adpq_put_row_units")?,
            v3_rotate: f("quantize", "adpq_v3_rotate")?,
            v3_extents: f("quantize", "adpq_v3_extents")?,
            v3_groups: f("quantize", "adpq_v3_groups")?,
            v3_unrotate: f("dequantize", "adpq_v3_unrotate")?,
            quantize_groups: f("quantize", "adpq_quantize_groups")?,
            row_counts: f("quantize", "adpq_row_counts")?,
            positions: f("quantize", "adpq_positions")?,
            dequantize: f("dequantize", "adpq_dequantize")?,
            error_sums: f("dequantize", "adpq_error_sums")?,
            gemm: f("gemv", "adpq_gemm")?,
            gemv_q8: f("gemv", "adpq_gemv_q8")?,
        };
        let name = format!("cuda ({}, {})", ctx.name()?, arch.name());
        Ok(CudaEngine {
            stream: ctx.default_stream(),
            k,
            name,
        })
    }

    /// `y = W x̂` with int8 activations (see [`Q8Activations`]), as the CPU's
    /// `gemv_q8`: within `adpq_core::kernels::dot_tolerance` of its sums.
    pub fn gemv_q8(
        &self,
        packed: &CudaPacked<'_>,
        a: &Q8Activations<'_>,
        y: &mut [f32],
    ) -> EngineResult<()> {
        let (rows, cols) = (packed.t.rows(), packed.t.cols());
        let groups = cols.div_ceil(usize::from(packed.t.params().group_size));
        if a.group_size() != packed.t.params().group_size
            || a.q().len() != cols
            || a.scales().len() != groups
            || a.sums().len() != groups
            || y.len() != rows
        {
            return Err(adpq_core::Error::ShapeMismatch {
                expected: cols as u64,
                actual: a.q().len() as u64,
            }
            .into());
        }
        // Format v3: the activations must be in the tensor's rotated basis
        // (`Q8Activations::quantize_for`), as the CPU's gemv_q8 requires.
        if a.rotation() != packed.t.info().rotation {
            return Err(adpq_core::Error::Unsupported(
                "activations were quantized for another rotation than the tensor's",
            )
            .into());
        }
        launch::gemv_q8(self, packed, a, y)
    }

    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub(crate) fn kernels(&self) -> &Kernels {
        &self.k
    }
}

/// A driver result as an engine result naming what failed.
pub(crate) fn dev<T>(what: &str, r: Result<T, cudarc::driver::DriverError>) -> EngineResult<T> {
    r.map_err(|e| EngineError::Device {
        what: format!("cuda: {what}"),
        source: Box::new(e),
    })
}

/// Weights resident on the device, as stored.
#[derive(Debug)]
pub(crate) enum DeviceWeights {
    /// f32.
    F32(CudaSlice<f32>),
    /// f16 or bf16 bit patterns, with the kernels' storage code (1 or 2).
    Half(CudaSlice<u16>, i32),
}

/// Activation vectors resident on the device (`count` vectors, row-major).
#[derive(Debug)]
pub struct DeviceVectors {
    pub(crate) buf: CudaSlice<f32>,
    pub(crate) count: usize,
}

/// A dense tensor resident on the device.
#[derive(Debug)]
pub struct CudaDense {
    pub(crate) w: DeviceWeights,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
}

impl CudaDense {
    pub(crate) fn len(&self) -> usize {
        self.rows * self.cols
    }
}

/// A packed tensor: its parsed host view and its sections resident on the device.
#[derive(Debug)]
pub struct CudaPacked<'a> {
    pub(crate) t: PackedTensor<'a>,
    pub(crate) records: CudaSlice<u8>,
    pub(crate) codes: CudaSlice<u8>,
    pub(crate) positions: CudaSlice<u8>,
    pub(crate) positions_len: u64,
    pub(crate) offsets: CudaSlice<u32>,
    pub(crate) params: PackedParams,
}

impl Engine for CudaEngine {
    type Dense<'a> = CudaDense;
    type Packed<'a> = CudaPacked<'a>;

    fn name(&self) -> &str {
        &self.name
    }

    fn load<'a>(&'a self, w: Weights<'a>, rows: usize, cols: usize) -> EngineResult<CudaDense> {
        if rows.checked_mul(cols) != Some(w.len()) {
            return Err(adpq_core::Error::ShapeMismatch {
                expected: (rows * cols) as u64,
                actual: w.len() as u64,
            }
            .into());
        }
        let s = &self.stream;
        let w = match w {
            Weights::F32(v) => DeviceWeights::F32(dev("upload weights", s.clone_htod(v))?),
            Weights::F16(v) => DeviceWeights::Half(
                dev("upload weights", s.clone_htod(v.reinterpret_cast()))?,
                1,
            ),
            Weights::Bf16(v) => DeviceWeights::Half(
                dev("upload weights", s.clone_htod(v.reinterpret_cast()))?,
                2,
            ),
        };
        Ok(CudaDense { w, rows, cols })
    }

    fn select(&self, t: &CudaDense, params: &Params) -> EngineResult<Selection> {
        select::select(self, t, params)
    }

    fn quantize(
        &self,
        t: &CudaDense,
        params: &Params,
        sel: &Selection,
        out: &mut [u8],
    ) -> EngineResult<Quantized> {
        check_shape(t.len(), t.rows, t.cols)?;
        let fp = params.format();
        let needed = packed_len(t.rows, t.cols, fp, sel.n_outliers)?;
        if out.len() != needed {
            return Err(adpq_core::Error::BufferSize {
                needed: needed as u64,
                actual: out.len() as u64,
            }
            .into());
        }
        let job = quant_job(params, sel);
        let sections = launch::quantize(self, t, &job)?;
        if sections.n_outliers() != sel.n_outliers {
            return Err(EngineError::Device {
                what: "cuda quantize".into(),
                source: format!(
                    "the kernels found {} outliers where the selection has {}",
                    sections.n_outliers(),
                    sel.n_outliers
                )
                .into(),
            });
        }
        // The core writes offsets, header and CRC and validates the buffer.
        Ok(sections.write(t.rows, t.cols, params, sel, out)?)
    }

    fn load_packed<'a>(&'a self, p: PackedTensor<'a>) -> EngineResult<CudaPacked<'a>> {
        let b = p.as_bytes();
        let l = p.layout();
        let (offsets_at, records_at) = (l.offsets_at(), l.records_at());
        let (codes_at, positions_at) = (l.codes_at(), l.positions_at());
        let s = &self.stream;
        let mut offsets: Vec<u32> = b[offsets_at..records_at]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        // At least one: a v3 tensor has no offsets (the kernels never read them).
        offsets.resize(offsets.len().max(1), 0);
        // At least one byte each: a tensor without outliers has no position stream.
        let up = |bytes: &[u8]| {
            let mut v = bytes.to_vec();
            v.resize(v.len().max(1), 0);
            dev("upload packed tensor", s.clone_htod(&v))
        };
        Ok(CudaPacked {
            records: up(&b[records_at..codes_at])?,
            codes: up(&b[codes_at..positions_at])?,
            positions: up(&b[positions_at..])?,
            positions_len: (b.len() - positions_at) as u64,
            offsets: dev("upload offsets", s.clone_htod(&offsets))?,
            params: PackedParams::of(&p),
            t: p,
        })
    }

    fn error_sums(&self, t: &CudaDense, packed: &CudaPacked<'_>) -> EngineResult<ErrorSums> {
        if (t.rows, t.cols) != (packed.t.rows(), packed.t.cols()) {
            return Err(adpq_core::Error::ShapeMismatch {
                expected: packed.t.rows() as u64 * packed.t.cols() as u64,
                actual: t.len() as u64,
            }
            .into());
        }
        let deq = launch::dequantize(self, packed)?;
        let sums = launch::error_sums(self, t, &deq, packed)?;
        let mut e = ErrorSums {
            count: t.len() as u64,
            ..ErrorSums::default()
        };
        // Group order, as the CPU's row_error_sums adds them.
        for g in sums.chunks_exact(3) {
            e.signal += g[0];
            e.adpq += g[1];
            e.rtn += g[2];
        }
        Ok(e)
    }

    fn dequantize(
        &self,
        packed: &CudaPacked<'_>,
        dtype: OutDtype,
        out: &mut [u8],
    ) -> EngineResult<()> {
        let deq = launch::dequantize(self, packed)?;
        let values = dev("download values", self.stream.clone_dtoh(&deq))?;
        // The core's narrowing rule on the host: saturate within the quantization error,
        // refuse beyond, exactly as the CPU engine.
        write_rows(
            &packed.t,
            0,
            &values[..packed.t.rows() * packed.t.cols()],
            dtype,
            out,
        )?;
        Ok(())
    }

    fn dequantize_rows(
        &self,
        packed: &CudaPacked<'_>,
        first_row: usize,
        out: &mut [f32],
    ) -> EngineResult<()> {
        let (rows, cols) = (packed.t.rows(), packed.t.cols());
        let n = out.len() / cols;
        if !out.len().is_multiple_of(cols) || first_row.checked_add(n).is_none_or(|e| e > rows) {
            return Err(adpq_core::Error::RowOutOfRange {
                row: (first_row + n) as u64,
                rows: rows as u64,
            }
            .into());
        }
        let deq = launch::dequantize(self, packed)?;
        let part = deq.slice(first_row * cols..first_row * cols + out.len());
        dev("download values", self.stream.memcpy_dtoh(&part, out))
    }

    fn gemv(&self, packed: &CudaPacked<'_>, x: &[f32], y: &mut [f32]) -> EngineResult<()> {
        self.gemm(packed, x, 1, y)
    }

    fn gemm(
        &self,
        packed: &CudaPacked<'_>,
        x: &[f32],
        count: usize,
        y: &mut [f32],
    ) -> EngineResult<()> {
        let (rows, cols) = (packed.t.rows(), packed.t.cols());
        if count == 0 || x.len() != count * cols || y.len() != count * rows {
            return Err(adpq_core::Error::ShapeMismatch {
                expected: (count * cols) as u64,
                actual: x.len() as u64,
            }
            .into());
        }
        let dx = self.upload(x, count)?;
        let mut dy = DeviceVectors {
            buf: dev("allocate outputs", self.stream.alloc_zeros::<f32>(y.len()))?,
            count,
        };
        self.gemm_resident(packed, &dx, &mut dy)?;
        self.download(&dy, y)
    }

    type Vectors = DeviceVectors;

    fn upload(&self, x: &[f32], count: usize) -> EngineResult<DeviceVectors> {
        if count == 0 || x.is_empty() || !x.len().is_multiple_of(count) {
            return Err(adpq_core::Error::ShapeMismatch {
                expected: count as u64,
                actual: x.len() as u64,
            }
            .into());
        }
        Ok(DeviceVectors {
            buf: dev("upload activations", self.stream.clone_htod(x))?,
            count,
        })
    }

    fn download(&self, v: &DeviceVectors, out: &mut [f32]) -> EngineResult<()> {
        if out.len() != v.buf.len() {
            return Err(adpq_core::Error::BufferSize {
                needed: v.buf.len() as u64,
                actual: out.len() as u64,
            }
            .into());
        }
        dev("download vectors", self.stream.memcpy_dtoh(&v.buf, out))
    }

    fn gemm_resident(
        &self,
        packed: &CudaPacked<'_>,
        x: &DeviceVectors,
        y: &mut DeviceVectors,
    ) -> EngineResult<()> {
        let (rows, cols) = (packed.t.rows(), packed.t.cols());
        if x.buf.len() != x.count * cols {
            return Err(adpq_core::Error::ShapeMismatch {
                expected: (x.count * cols) as u64,
                actual: x.buf.len() as u64,
            }
            .into());
        }
        if y.buf.len() != x.count * rows {
            y.buf = dev(
                "allocate outputs",
                self.stream.alloc_zeros::<f32>(x.count * rows),
            )?;
        }
        y.count = x.count;
        launch::gemm(self, packed, &x.buf, x.count as u32, &mut y.buf)
    }
}
