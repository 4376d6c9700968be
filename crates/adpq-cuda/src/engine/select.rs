//! Outlier selection on a resident tensor: the core's `select_outliers` over a
//! `TensorScan` whose passes are the select.cu kernels.

use std::cell::RefCell;

use adpq_core::select::{BadValue, HistogramPass, HIST_BINS};
use adpq_core::{select_outliers, Params, Selection, TensorScan};
use adpq_engine::{EngineError, EngineResult};
use cudarc::driver::PushKernelArg;

use super::launch::{cfg, launched};
use super::{dev, CudaDense, CudaEngine, DeviceWeights};

/// The passes of one selection; a device error ends the search and is reported instead
/// of its result.
struct DeviceScan<'a> {
    e: &'a CudaEngine,
    t: &'a CudaDense,
    failed: RefCell<Option<EngineError>>,
}

/// A stand-in result after a device error: stops the search, never reported.
const STOP: BadValue = BadValue {
    index: 0,
    value: f32::NAN,
};

impl DeviceScan<'_> {
    fn fail(&self, e: EngineError) {
        self.failed.borrow_mut().get_or_insert(e);
    }

    fn histogram_pass(
        &self,
        pass: &HistogramPass,
        bins: &mut [u32; HIST_BINS],
    ) -> EngineResult<Result<u32, BadValue>> {
        let s = self.e.stream();
        let n = self.t.len() as u64;
        let mut dbins = dev("allocate bins", s.alloc_zeros::<u32>(HIST_BINS))?;
        let mut max = dev("allocate max", s.alloc_zeros::<u32>(1))?;
        let mut bad = dev("allocate flag", s.clone_htod(&[u64::MAX]))?;
        let mut b = s.launch_builder(&self.e.kernels().histogram);
        let dtype = match &self.t.w {
            DeviceWeights::F32(w) => {
                b.arg(w);
                0i32
            }
            DeviceWeights::Half(w, d) => {
                b.arg(w);
                *d
            }
        };
        b.arg(&dtype)
            .arg(&n)
            .arg(&pass.prefix_shift)
            .arg(&pass.prefix);
        b.arg(&pass.shift)
            .arg(&pass.mask)
            .arg(&mut dbins)
            .arg(&mut max)
            .arg(&mut bad);
        // SAFETY: adpq_histogram's parameters in order: the weights (n elements of
        // `dtype`), the pass, 2048 bins, one u32 and one u64.
        let launch = unsafe { b.launch(cfg(n.div_ceil(16))) };
        launched("histogram", launch.map(|_| ()))?;
        let first_bad = dev("download flag", s.clone_dtoh(&bad))?[0];
        if first_bad != u64::MAX {
            return Ok(Err(BadValue {
                index: first_bad,
                value: self.value_at(first_bad)?,
            }));
        }
        let counts = dev("download bins", s.clone_dtoh(&dbins))?;
        for (b, c) in bins.iter_mut().zip(counts) {
            *b += c;
        }
        Ok(Ok(dev("download max", s.clone_dtoh(&max))?[0]))
    }

    fn value_at(&self, i: u64) -> EngineResult<f32> {
        let s = self.e.stream();
        let i = i as usize;
        Ok(match &self.t.w {
            DeviceWeights::F32(w) => dev("download value", s.clone_dtoh(&w.slice(i..i + 1)))?[0],
            DeviceWeights::Half(w, d) => {
                let b = dev("download value", s.clone_dtoh(&w.slice(i..i + 1)))?[0];
                if *d == 1 {
                    half::f16::from_bits(b).to_f32()
                } else {
                    half::bf16::from_bits(b).to_f32()
                }
            }
        })
    }

    fn count(&self, t: u32, at_least: bool) -> EngineResult<u64> {
        let s = self.e.stream();
        let n = self.t.len() as u64;
        let mut count = dev("allocate count", s.alloc_zeros::<u64>(1))?;
        let mut b = s.launch_builder(&self.e.kernels().count);
        let dtype = match &self.t.w {
            DeviceWeights::F32(w) => {
                b.arg(w);
                0i32
            }
            DeviceWeights::Half(w, d) => {
                b.arg(w);
                *d
            }
        };
        let at_least = i32::from(at_least);
        b.arg(&dtype).arg(&n).arg(&t).arg(&at_least).arg(&mut count);
        // SAFETY: adpq_count's parameters in order; `count` holds one u64.
        let launch = unsafe { b.launch(cfg(n.div_ceil(16))) };
        launched("count", launch.map(|_| ()))?;
        Ok(dev("download count", s.clone_dtoh(&count))?[0])
    }
}

impl TensorScan for DeviceScan<'_> {
    fn weight_count(&self) -> usize {
        self.t.len()
    }

    fn histogram(
        &self,
        pass: &HistogramPass,
        bins: &mut [u32; HIST_BINS],
    ) -> Result<u32, BadValue> {
        match self.histogram_pass(pass, bins) {
            Ok(r) => r,
            Err(e) => {
                self.fail(e);
                Err(STOP)
            }
        }
    }

    fn count_at_least(&self, threshold_bits: u32) -> u64 {
        self.count(threshold_bits, true).unwrap_or_else(|e| {
            self.fail(e);
            0
        })
    }
}

/// Selects the outliers of a resident tensor (the histogram passes or the reference
/// search of the core, each pass one kernel launch).
pub(crate) fn select(e: &CudaEngine, t: &CudaDense, params: &Params) -> EngineResult<Selection> {
    let scan = DeviceScan {
        e,
        t,
        failed: RefCell::new(None),
    };
    let r = select_outliers(&scan, t.rows, t.cols, params);
    if let Some(err) = scan.failed.into_inner() {
        return Err(err);
    }
    Ok(r?)
}
