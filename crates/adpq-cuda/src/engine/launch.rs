//! Kernel launches: argument structs shared with the `.cu` files, launch shapes, and the
//! sequences behind quantize, dequantize, error sums and gemm. The only `unsafe` of the
//! engine: a launch trusts that its arguments match the kernel's parameters.

use adpq_core::quant::scale_exponent;
use adpq_core::{FormatVersion, Grid, PackedTensor, Params, Selection};
use adpq_engine::{EngineError, EngineResult};
use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};

use crate::job::{rotation_fields, version_number, QuantJob};
use crate::Sections;

use super::{dev, CudaDense, CudaEngine, CudaPacked, DeviceWeights};

// SAFETY: `QuantJob` is a `#[repr(C)]` struct of plain integers laid out as the
// kernels' `adpq_job` (its size is asserted in `job.rs`).
unsafe impl DeviceRepr for QuantJob {}

/// The job of a selected tensor.
pub(crate) fn quant_job(params: &Params, sel: &Selection) -> QuantJob {
    let fp = params.format();
    QuantJob::new(
        &fp,
        scale_exponent(sel.max_abs(), &fp),
        sel.threshold_bits,
        sel.take_equal,
    )
}

/// `adpq_packed_params` of dequantize.cu and gemv.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PackedParams {
    version: i32,
    bits: i32,
    group_size: i32,
    asymmetric: i32,
    scale_exp: i32,
    threshold_bits: u32,
    rot_seed: u32,
    rot_log2: u32,
}

// SAFETY: a `#[repr(C)]` struct of eight 32-bit integers, as the kernels'
// `adpq_packed_params`.
unsafe impl DeviceRepr for PackedParams {}
const _: () = assert!(std::mem::size_of::<PackedParams>() == 32);

impl PackedParams {
    pub(crate) fn of(t: &PackedTensor<'_>) -> PackedParams {
        let fp = t.params();
        let (rot_seed, rot_log2) = rotation_fields(t.info().rotation);
        PackedParams {
            version: version_number(fp.version),
            bits: i32::from(fp.bits),
            group_size: i32::from(fp.group_size),
            asymmetric: i32::from(fp.grid == Grid::Asymmetric),
            scale_exp: i32::from(t.info().scale_exp),
            threshold_bits: t.info().threshold.to_bits(),
            rot_seed,
            rot_log2,
        }
    }

    /// True for a format v3 tensor (rows rotated, no outliers).
    pub(crate) fn is_v3(&self) -> bool {
        self.version == 3
    }
}

/// Threads per block of the element and group kernels.
const BLOCK: u32 = 256;

/// A grid-stride launch over `n` items.
pub(crate) fn cfg(n: u64) -> LaunchConfig {
    let blocks = n.div_ceil(u64::from(BLOCK)).clamp(1, 8192) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One warp per row.
fn warp_cfg(rows: u64) -> LaunchConfig {
    cfg(rows * 32)
}

/// A launch error as an engine error.
pub(crate) fn launched(what: &str, r: Result<(), cudarc::driver::DriverError>) -> EngineResult<()> {
    dev(what, r)
}

/// Rounds a byte count up to whole 32-bit words: the kernels OR codes and positions into
/// their buffers through atomics on aligned words.
fn words(bytes: usize) -> usize {
    bytes.div_ceil(4).max(1) * 4
}

/// Runs quantize.cu's launches on a resident tensor (see its header for the sequence).
pub(crate) fn quantize(e: &CudaEngine, t: &CudaDense, job: &QuantJob) -> EngineResult<Sections> {
    let s = e.stream();
    let k = e.kernels();
    let (rows, cols) = (t.rows as u32, t.cols as u32);
    let g = job.group_size as u32;
    let groups = cols.div_ceil(g);
    let n_groups = u64::from(rows) * u64::from(groups);
    let fp = adpq_core::FormatParams {
        bits: job.bits as u8,
        group_size: job.group_size as u16,
        grid: if job.asymmetric != 0 {
            Grid::Asymmetric
        } else {
            Grid::Symmetric
        },
        version: match job.version {
            3 => FormatVersion::V3,
            2 => FormatVersion::V2,
            _ => FormatVersion::V1,
        },
    };
    let rec_len = t.rows * fp.row_record_bytes(t.cols);
    let code_len = t.rows * (t.cols * usize::from(fp.bits)).div_ceil(8);
    let alloc_u64 = |n: usize| dev("allocate scratch", s.alloc_zeros::<u64>(n));
    let mut ties = alloc_u64(n_groups as usize + 1)?;
    let mut first_bad = dev("allocate flag", s.clone_htod(&[u64::MAX]))?;
    let (wptr, dtype) = weights_arg(&t.w);
    {
        let mut b = s.launch_builder(&k.group_ties);
        push_weights(&mut b, wptr);
        b.arg(&dtype)
            .arg(&rows)
            .arg(&cols)
            .arg(&g)
            .arg(&job.threshold_bits);
        b.arg(&mut ties).arg(&mut first_bad);
        // SAFETY: the arguments are adpq_group_ties's parameters in order: the weights
        // (rows · cols elements of `dtype`), the shape, the group size, the threshold,
        // `ties` (one u64 per group) and the flag (one u64).
        let launch = unsafe { b.launch(cfg(n_groups)) };
        launched("group ties", launch.map(|_| ()))?;
    }
    let bad = dev("download flag", s.clone_dtoh(&first_bad))?[0];
    if bad != u64::MAX {
        return Err(rejected(e, t, bad)?);
    }
    let mut records = dev("allocate records", s.alloc_zeros::<u8>(words(rec_len)))?;
    let mut codes = dev("allocate codes", s.alloc_zeros::<u8>(words(code_len)))?;
    if job.version == 3 {
        quantize_v3(e, t, job, &mut records, &mut codes)?;
        let mut records = dev("download records", s.clone_dtoh(&records))?;
        let mut codes = dev("download codes", s.clone_dtoh(&codes))?;
        records.truncate(rec_len);
        codes.truncate(code_len);
        // No outlier counts or positions in v3.
        return Ok(Sections {
            row_counts: Vec::new(),
            records,
            codes,
            positions: Vec::new(),
        });
    }
    scan(e, &mut ties, n_groups)?;
    if job.version == 2 {
        let mut extents = dev(
            "allocate extents",
            s.alloc_zeros::<f32>(3 * n_groups as usize),
        )?;
        let mut b = s.launch_builder(&k.v2_extents);
        push_weights(&mut b, wptr);
        b.arg(&dtype)
            .arg(&rows)
            .arg(&cols)
            .arg(job)
            .arg(&ties)
            .arg(&mut extents);
        // SAFETY: adpq_v2_extents's parameters in order; `ties` holds the scanned tie
        // counts (n_groups + 1), `extents` three f32 per group.
        let launch = unsafe { b.launch(cfg(n_groups)) };
        launched("v2 extents", launch.map(|_| ()))?;
        let mut b = s.launch_builder(&k.row_units);
        b.arg(&rows)
            .arg(&cols)
            .arg(job)
            .arg(&extents)
            .arg(&mut records);
        // SAFETY: adpq_put_row_units's parameters in order; `records` holds rows ·
        // row_record_bytes bytes (rounded up to words).
        let launch = unsafe { b.launch(cfg(u64::from(rows))) };
        launched("v2 units", launch.map(|_| ()))?;
    }
    let mut counts = alloc_u64(n_groups as usize + 1)?;
    {
        let mut b = s.launch_builder(&k.quantize_groups);
        push_weights(&mut b, wptr);
        b.arg(&dtype).arg(&rows).arg(&cols).arg(job).arg(&ties);
        b.arg(&mut records).arg(&mut codes).arg(&mut counts);
        // SAFETY: adpq_quantize_groups's parameters in order; records and codes are the
        // sizes of their sections rounded up to words and zeroed, counts one per group.
        let launch = unsafe { b.launch(cfg(n_groups)) };
        launched("quantize groups", launch.map(|_| ()))?;
    }
    scan(e, &mut counts, n_groups)?;
    let total = dev(
        "download count",
        s.clone_dtoh(&counts.slice(n_groups as usize..)),
    )?[0];
    let pos_len = (total * u64::from(fp.position_bits())).div_ceil(8) as usize;
    let mut positions = dev("allocate positions", s.alloc_zeros::<u8>(words(pos_len)))?;
    let mut row_counts = dev("allocate row counts", s.alloc_zeros::<u32>(t.rows))?;
    {
        let mut b = s.launch_builder(&k.row_counts);
        b.arg(&rows).arg(&groups).arg(&counts).arg(&mut row_counts);
        // SAFETY: adpq_row_counts's parameters; `counts` is scanned (n_groups + 1).
        let launch = unsafe { b.launch(cfg(u64::from(rows))) };
        launched("row counts", launch.map(|_| ()))?;
        let mut b = s.launch_builder(&k.positions);
        push_weights(&mut b, wptr);
        b.arg(&dtype)
            .arg(&rows)
            .arg(&cols)
            .arg(job)
            .arg(&ties)
            .arg(&counts);
        b.arg(&mut positions);
        // SAFETY: adpq_positions's parameters; `positions` holds ceil(total · p / 8)
        // bytes rounded up to words, and the group firsts come from the same counts.
        let launch = unsafe { b.launch(cfg(n_groups)) };
        launched("positions", launch.map(|_| ()))?;
    }
    let mut records = dev("download records", s.clone_dtoh(&records))?;
    let mut codes = dev("download codes", s.clone_dtoh(&codes))?;
    let mut positions = dev("download positions", s.clone_dtoh(&positions))?;
    records.truncate(rec_len);
    codes.truncate(code_len);
    positions.truncate(pos_len);
    Ok(Sections {
        row_counts: dev("download row counts", s.clone_dtoh(&row_counts))?,
        records,
        codes,
        positions,
    })
}

/// Format v3's launches after the check for rejected weights (quantize.cu's header): the
/// rows rotated into scratch, each group's extent, each row's units, each group's record
/// and codes, into the zeroed `records` and `codes`.
fn quantize_v3(
    e: &CudaEngine,
    t: &CudaDense,
    job: &QuantJob,
    records: &mut CudaSlice<u8>,
    codes: &mut CudaSlice<u8>,
) -> EngineResult<()> {
    let s = e.stream();
    let k = e.kernels();
    let (rows, cols) = (t.rows as u32, t.cols as u32);
    let n_groups = u64::from(rows) * u64::from(cols.div_ceil(job.group_size as u32));
    let mut rotated = dev("allocate scratch", s.alloc_zeros::<f32>(t.len()))?;
    let (wptr, dtype) = weights_arg(&t.w);
    {
        let mut b = s.launch_builder(&k.v3_rotate);
        push_weights(&mut b, wptr);
        b.arg(&dtype)
            .arg(&rows)
            .arg(&cols)
            .arg(&job.rot_seed)
            .arg(&job.rot_log2)
            .arg(&mut rotated);
        // SAFETY: adpq_v3_rotate's parameters in order: the weights (rows · cols elements
        // of `dtype`), the shape, the rotation, `rotated` (rows · cols f32).
        let launch = unsafe { b.launch(cfg(u64::from(rows) * chunks(cols))) };
        launched("v3 rotate", launch.map(|_| ()))?;
    }
    let mut extents = dev(
        "allocate extents",
        s.alloc_zeros::<f32>(3 * n_groups as usize),
    )?;
    let mut b = s.launch_builder(&k.v3_extents);
    b.arg(&rotated)
        .arg(&rows)
        .arg(&cols)
        .arg(job)
        .arg(&mut extents);
    // SAFETY: adpq_v3_extents's parameters in order; `rotated` holds rows · cols f32,
    // `extents` three f32 per group.
    let launch = unsafe { b.launch(cfg(n_groups)) };
    launched("v3 extents", launch.map(|_| ()))?;
    let mut b = s.launch_builder(&k.row_units);
    b.arg(&rows)
        .arg(&cols)
        .arg(job)
        .arg(&extents)
        .arg(&mut *records);
    // SAFETY: adpq_put_row_units's parameters in order; `records` holds rows ·
    // row_record_bytes bytes (rounded up to words).
    let launch = unsafe { b.launch(cfg(u64::from(rows))) };
    launched("row units", launch.map(|_| ()))?;
    let mut b = s.launch_builder(&k.v3_groups);
    b.arg(&rotated).arg(&rows).arg(&cols).arg(job);
    b.arg(&mut *records).arg(&mut *codes);
    // SAFETY: adpq_v3_groups's parameters in order; records (units written) and codes are
    // the sizes of their sections rounded up to words and zeroed.
    let launch = unsafe { b.launch(cfg(n_groups)) };
    launched("v3 groups", launch.map(|_| ()))
}

/// Chunks of the v3 rotation kernels per row (`ADPQ_MAX_SEGMENT` columns each).
fn chunks(cols: u32) -> u64 {
    u64::from(cols.div_ceil(adpq_core::rotate::MAX_SEGMENT as u32))
}

/// In-place exclusive scan of `data[0..n]` with the total in `data[n]`.
fn scan(e: &CudaEngine, data: &mut CudaSlice<u64>, n: u64) -> EngineResult<()> {
    let mut b = e.stream().launch_builder(&e.kernels().scan);
    b.arg(data).arg(&n);
    let one_block = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (1024, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: adpq_scan's parameters; `data` holds n + 1 values. One block of 1024
    // threads, as the kernel's shared warp totals assume.
    let launch = unsafe { b.launch(one_block) };
    launched("scan", launch.map(|_| ()))
}

/// The core's error for the rejected weight at flat index `i`.
pub(crate) fn rejected(e: &CudaEngine, t: &CudaDense, i: u64) -> EngineResult<EngineError> {
    let s = e.stream();
    let value = match &t.w {
        DeviceWeights::F32(w) => dev(
            "download value",
            s.clone_dtoh(&w.slice(i as usize..i as usize + 1)),
        )?[0],
        DeviceWeights::Half(w, dtype) => {
            let b = dev(
                "download value",
                s.clone_dtoh(&w.slice(i as usize..i as usize + 1)),
            )?[0];
            if *dtype == 1 {
                half::f16::from_bits(b).to_f32()
            } else {
                half::bf16::from_bits(b).to_f32()
            }
        }
    };
    Ok(adpq_core::select::BadValue { index: i, value }
        .into_error(0, t.cols as u64)
        .into())
}

/// The weights' device buffer and storage code.
fn weights_arg(w: &DeviceWeights) -> (&DeviceWeights, i32) {
    match w {
        DeviceWeights::F32(_) => (w, 0),
        DeviceWeights::Half(_, d) => (w, *d),
    }
}

fn push_weights<'a>(b: &mut cudarc::driver::LaunchArgs<'a>, w: &'a DeviceWeights) {
    match w {
        DeviceWeights::F32(s) => b.arg(s),
        DeviceWeights::Half(s, _) => b.arg(s),
    };
}

/// Dequantizes a resident packed tensor into a device f32 buffer (rows · cols values).
pub(crate) fn dequantize(e: &CudaEngine, p: &CudaPacked<'_>) -> EngineResult<CudaSlice<f32>> {
    let s = e.stream();
    let (rows, cols) = (p.t.rows() as u32, p.t.cols() as u32);
    let mut out = dev(
        "allocate values",
        s.alloc_zeros::<f32>(p.t.rows() * p.t.cols()),
    )?;
    let groups = cols.div_ceil(u32::from(p.t.params().group_size));
    let mut b = s.launch_builder(&e.kernels().dequantize);
    b.arg(&p.records)
        .arg(&p.codes)
        .arg(&p.positions)
        .arg(&p.positions_len);
    b.arg(&p.offsets)
        .arg(&rows)
        .arg(&cols)
        .arg(&p.params)
        .arg(&mut out);
    // SAFETY: adpq_dequantize's parameters; the sections come from a tensor the core's
    // parser validated (every record, code and position read lies inside them), and
    // `out` holds rows · cols values.
    let launch = unsafe { b.launch(cfg(u64::from(rows) * u64::from(groups))) };
    launched("dequantize", launch.map(|_| ()))?;
    if p.params.is_v3() {
        let mut b = s.launch_builder(&e.kernels().v3_unrotate);
        b.arg(&mut out).arg(&rows).arg(&cols).arg(&p.params);
        // SAFETY: adpq_v3_unrotate's parameters; `out` holds the rows · cols levels just
        // decoded, rotated back in place.
        let launch = unsafe { b.launch(cfg(u64::from(rows) * chunks(cols))) };
        launched("v3 unrotate", launch.map(|_| ()))?;
    }
    Ok(out)
}

/// Per-group error sums (three f64 per group, row-major group order), downloaded.
pub(crate) fn error_sums(
    e: &CudaEngine,
    t: &CudaDense,
    deq: &CudaSlice<f32>,
    p: &CudaPacked<'_>,
) -> EngineResult<Vec<f64>> {
    let s = e.stream();
    let (rows, cols) = (t.rows as u32, t.cols as u32);
    let fp = p.t.params();
    let g = u32::from(fp.group_size);
    let n_groups = u64::from(rows) * u64::from(cols.div_ceil(g));
    let mut sums = dev("allocate sums", s.alloc_zeros::<f64>(3 * n_groups as usize))?;
    let (wptr, dtype) = weights_arg(&t.w);
    let bits = i32::from(fp.bits);
    let mut b = s.launch_builder(&e.kernels().error_sums);
    push_weights(&mut b, wptr);
    b.arg(&dtype)
        .arg(deq)
        .arg(&rows)
        .arg(&cols)
        .arg(&bits)
        .arg(&g)
        .arg(&mut sums);
    // SAFETY: adpq_error_sums's parameters; weights and `deq` hold rows · cols values,
    // `sums` three per group.
    let launch = unsafe { b.launch(cfg(n_groups)) };
    launched("error sums", launch.map(|_| ()))?;
    dev("download sums", s.clone_dtoh(&sums))
}

/// `y = W x` for `batch` resident vectors.
pub(crate) fn gemm(
    e: &CudaEngine,
    p: &CudaPacked<'_>,
    x: &CudaSlice<f32>,
    batch: u32,
    y: &mut CudaSlice<f32>,
) -> EngineResult<()> {
    let (rows, cols) = (p.t.rows() as u32, p.t.cols() as u32);
    // v3: the vectors rotated once into the tensor's basis.
    let rotated = if p.params.is_v3() {
        let s = e.stream();
        let mut xr = dev("allocate scratch", s.alloc_zeros::<f32>(x.len()))?;
        let mut b = s.launch_builder(&e.kernels().v3_rotate);
        let (dtype, (seed, log2)) = (0i32, rotation_fields(p.t.info().rotation));
        b.arg(x).arg(&dtype).arg(&batch).arg(&cols);
        b.arg(&seed).arg(&log2).arg(&mut xr);
        // SAFETY: adpq_v3_rotate's parameters: `x` holds batch · cols f32 (storage code
        // 0), rotated as `batch` rows into `xr` of the same size.
        let launch = unsafe { b.launch(cfg(u64::from(batch) * chunks(cols))) };
        launched("v3 rotate", launch.map(|_| ()))?;
        Some(xr)
    } else {
        None
    };
    let x = rotated.as_ref().unwrap_or(x);
    let mut b = e.stream().launch_builder(&e.kernels().gemm);
    b.arg(&p.records)
        .arg(&p.codes)
        .arg(&p.positions)
        .arg(&p.positions_len);
    b.arg(&p.offsets)
        .arg(&rows)
        .arg(&cols)
        .arg(&p.params)
        .arg(x)
        .arg(&batch)
        .arg(y);
    // SAFETY: adpq_gemm's parameters; sections validated as in `dequantize`; the caller
    // checked x (batch · cols) and y (batch · rows).
    let launch = unsafe { b.launch(warp_cfg(u64::from(rows))) };
    launched("gemm", launch.map(|_| ()))
}

/// `y = W x̂` with int8 activations, uploaded for the call.
pub(crate) fn gemv_q8(
    e: &CudaEngine,
    p: &CudaPacked<'_>,
    a: &adpq_core::Q8Activations<'_>,
    y: &mut [f32],
) -> EngineResult<()> {
    let s = e.stream();
    let (rows, cols) = (p.t.rows() as u32, p.t.cols() as u32);
    let q = dev("upload activations", s.clone_htod(a.q()))?;
    let scales = dev("upload scales", s.clone_htod(a.scales()))?;
    let sums = dev("upload sums", s.clone_htod(a.sums()))?;
    let mut dy = dev("allocate outputs", s.alloc_zeros::<f32>(y.len()))?;
    let mut b = s.launch_builder(&e.kernels().gemv_q8);
    b.arg(&p.records)
        .arg(&p.codes)
        .arg(&p.positions)
        .arg(&p.positions_len);
    b.arg(&p.offsets).arg(&rows).arg(&cols).arg(&p.params);
    b.arg(&q).arg(&scales).arg(&sums).arg(&mut dy);
    // SAFETY: adpq_gemv_q8's parameters; sections validated as in `dequantize`; the
    // caller checked the activations (cols values, one scale and sum per group) and `y`
    // (rows values).
    let launch = unsafe { b.launch(warp_cfg(u64::from(rows))) };
    launched("gemv q8", launch.map(|_| ()))?;
    y.copy_from_slice(&dev("download outputs", s.clone_dtoh(&dy))?);
    Ok(())
}
