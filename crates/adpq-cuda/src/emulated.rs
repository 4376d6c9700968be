//! The `.cu` kernels run on the host under `host/emulate.hpp` (feature `host-math`):
//! each CUDA thread an OS thread, blocks one after another, shuffles and `__syncthreads`
//! through barriers, atomics through `std::atomic_ref`. What the tests use to check the
//! kernels' thread mapping, shared memory, atomics and scans against the scalar oracle
//! without a GPU. Not part of the stable API.

use std::ffi::c_void;

use adpq_core::select::{BadValue, HistogramPass, HIST_BINS};
use adpq_core::{PackedTensor, Q8Activations, TensorScan, Weights};

use crate::host::HostJob;
use crate::job::rotation_fields;
use crate::Sections;

/// Blocks and threads per block of the emulated launches (the scan: one block of
/// `threads`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Blocks in the grid.
    pub blocks: u32,
    /// Threads per block, a multiple of 32 up to 1024.
    pub threads: u32,
}

extern "C" {
    fn emu_histogram(
        grid: u32,
        block: u32,
        w: *const c_void,
        dtype: i32,
        n: u64,
        prefix_shift: u32,
        prefix: u32,
        shift: u32,
        mask: u32,
        bins: *mut u32,
        max_bits: *mut u32,
        first_bad: *mut u64,
    );
    fn emu_count(
        grid: u32,
        block: u32,
        w: *const c_void,
        dtype: i32,
        n: u64,
        t: u32,
        at_least: i32,
        count: *mut u64,
    );
    fn emu_quantize(
        grid: u32,
        block: u32,
        scan_block: u32,
        w: *const c_void,
        dtype: i32,
        rows: u32,
        cols: u32,
        version: i32,
        bits: i32,
        group_size: i32,
        asymmetric: i32,
        scale_exp: i32,
        threshold_bits: u32,
        take_equal: u64,
        rot_seed: u32,
        rot_log2: u32,
        row_counts: *mut u32,
        records: *mut u8,
        codes: *mut u8,
        positions: *mut u8,
        positions_len: u64,
        bad: *mut u64,
    ) -> i64;
    fn emu_dequantize(
        grid: u32,
        block: u32,
        records: *const u8,
        codes: *const u8,
        positions: *const u8,
        positions_len: u64,
        offsets: *const u32,
        rows: u32,
        cols: u32,
        version: i32,
        bits: i32,
        group_size: i32,
        asymmetric: i32,
        scale_exp: i32,
        threshold_bits: u32,
        rot_seed: u32,
        rot_log2: u32,
        out: *mut f32,
    );
    fn emu_error_sums(
        grid: u32,
        block: u32,
        w: *const c_void,
        dtype: i32,
        deq: *const f32,
        rows: u32,
        cols: u32,
        bits: i32,
        g: u32,
        sums: *mut f64,
    );
    fn emu_gemm(
        grid: u32,
        block: u32,
        records: *const u8,
        codes: *const u8,
        positions: *const u8,
        positions_len: u64,
        offsets: *const u32,
        rows: u32,
        cols: u32,
        version: i32,
        bits: i32,
        group_size: i32,
        asymmetric: i32,
        scale_exp: i32,
        threshold_bits: u32,
        rot_seed: u32,
        rot_log2: u32,
        x: *const f32,
        batch: u32,
        y: *mut f32,
    );
    fn emu_gemv_q8(
        grid: u32,
        block: u32,
        records: *const u8,
        codes: *const u8,
        positions: *const u8,
        positions_len: u64,
        offsets: *const u32,
        rows: u32,
        cols: u32,
        version: i32,
        bits: i32,
        group_size: i32,
        asymmetric: i32,
        scale_exp: i32,
        threshold_bits: u32,
        rot_seed: u32,
        rot_log2: u32,
        q: *const i8,
        scales: *const f32,
        sums: *const i32,
        y: *mut f32,
    );
}

fn raw(w: Weights<'_>) -> (*const c_void, i32) {
    match w {
        Weights::F32(s) => (s.as_ptr().cast(), 0),
        Weights::F16(s) => (s.as_ptr().cast(), 1),
        Weights::Bf16(s) => (s.as_ptr().cast(), 2),
    }
}

fn check_shape(shape: Shape) {
    assert!(
        shape.blocks >= 1
            && shape.threads >= 32
            && shape.threads <= 1024
            && shape.threads.is_multiple_of(32),
        "bad launch shape {shape:?}"
    );
}

/// A [`TensorScan`] whose passes are the emulated select.cu kernels.
#[derive(Debug)]
pub struct EmulatedScan<'w> {
    w: Weights<'w>,
    shape: Shape,
}

impl<'w> EmulatedScan<'w> {
    /// Scans `w` with launches of `shape`.
    pub fn new(w: Weights<'w>, shape: Shape) -> Self {
        check_shape(shape);
        EmulatedScan { w, shape }
    }
}

impl TensorScan for EmulatedScan<'_> {
    fn weight_count(&self) -> usize {
        self.w.len()
    }

    fn histogram(
        &self,
        pass: &HistogramPass,
        bins: &mut [u32; HIST_BINS],
    ) -> Result<u32, BadValue> {
        let (ptr, dtype) = raw(self.w);
        let (mut local, mut max, mut bad) = ([0u32; HIST_BINS], 0u32, u64::MAX);
        // SAFETY: `ptr` holds `len` elements of `dtype`; `local` has the kernel's 2048
        // bins, `max` and `bad` one value each; the launch shape was checked.
        unsafe {
            emu_histogram(
                self.shape.blocks,
                self.shape.threads,
                ptr,
                dtype,
                self.w.len() as u64,
                pass.prefix_shift,
                pass.prefix,
                pass.shift,
                pass.mask,
                local.as_mut_ptr(),
                &mut max,
                &mut bad,
            )
        };
        if bad != u64::MAX {
            return Err(BadValue {
                index: bad,
                value: self.w.value(bad as usize).unwrap_or(f32::NAN),
            });
        }
        for (b, l) in bins.iter_mut().zip(local) {
            *b += l;
        }
        Ok(max)
    }

    fn count_at_least(&self, threshold_bits: u32) -> u64 {
        let (ptr, dtype) = raw(self.w);
        let mut count = 0u64;
        // SAFETY: as in `histogram`; `count` is one u64.
        unsafe {
            emu_count(
                self.shape.blocks,
                self.shape.threads,
                ptr,
                dtype,
                self.w.len() as u64,
                threshold_bits,
                1,
                &mut count,
            )
        };
        count
    }
}

/// Quantizes with the emulated quantize.cu launches, in the engine's sequence (format v3:
/// its rotation, extents, units and group launches). `None` when a weight is rejected or
/// the selection's count does not fit.
pub fn quantize(
    w: Weights<'_>,
    rows: usize,
    cols: usize,
    job: &HostJob,
    n_outliers: u64,
    shape: Shape,
) -> Option<Sections> {
    check_shape(shape);
    let fp = job.format;
    assert!(fp.validate().is_ok() && rows > 0 && cols > 0 && rows * cols == w.len());
    let mut row_counts = vec![0u32; rows];
    let mut records = vec![0u8; rows * fp.row_record_bytes(cols)];
    let mut codes = vec![0u8; rows * (cols * usize::from(fp.bits)).div_ceil(8)];
    let pos_len = (n_outliers * u64::from(fp.position_bits())).div_ceil(8);
    let mut positions = vec![0u8; pos_len as usize];
    let (ptr, dtype) = raw(w);
    let c = job.c();
    let (version, bits, g, asym) = (c.version, c.bits, c.group_size, c.asymmetric);
    let mut bad = 0u64;
    // SAFETY: `ptr` holds rows · cols elements of `dtype`; the outputs have the sizes the
    // C++ driver copies into (row counts, records and codes of this shape and format;
    // positions checked against `pos_len` before the copy); the parameters are valid.
    let n = unsafe {
        emu_quantize(
            shape.blocks,
            shape.threads,
            shape.threads,
            ptr,
            dtype,
            rows as u32,
            cols as u32,
            version,
            bits,
            g,
            asym,
            i32::from(job.scale_exp),
            job.threshold_bits,
            job.take_equal,
            c.rot_seed,
            c.rot_log2,
            row_counts.as_mut_ptr(),
            records.as_mut_ptr(),
            codes.as_mut_ptr(),
            positions.as_mut_ptr(),
            pos_len,
            &mut bad,
        )
    };
    if fp.version == adpq_core::FormatVersion::V3 {
        // No outlier counts in v3.
        row_counts.clear();
    }
    (n >= 0).then_some(Sections {
        row_counts,
        records,
        codes,
        positions,
    })
}

/// A parsed tensor's sections and parameters as the kernels take them.
struct Packed<'a> {
    records: &'a [u8],
    codes: &'a [u8],
    positions: Vec<u8>,
    positions_len: u64,
    offsets: Vec<u32>,
    fields: (i32, i32, i32, i32),
    scale_exp: i32,
    threshold_bits: u32,
    rot: (u32, u32),
}

fn packed<'a>(t: &PackedTensor<'a>) -> Packed<'a> {
    let (l, b) = (t.layout(), t.as_bytes());
    let mut positions = b[l.positions_at()..].to_vec();
    let positions_len = positions.len() as u64;
    positions.push(0); // never empty, as the engine uploads it
    Packed {
        records: &b[l.records_at()..l.codes_at()],
        codes: &b[l.codes_at()..l.positions_at()],
        positions,
        positions_len,
        offsets: b[l.offsets_at()..l.records_at()]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        fields: {
            let c = HostJob {
                format: t.params(),
                scale_exp: 0,
                threshold_bits: 0,
                take_equal: 0,
            }
            .c();
            (c.version, c.bits, c.group_size, c.asymmetric)
        },
        scale_exp: i32::from(t.info().scale_exp),
        threshold_bits: t.info().threshold.to_bits(),
        rot: rotation_fields(t.info().rotation),
    }
}

/// Dequantizes a parsed tensor with the emulated dequantize kernel.
pub fn dequantize(t: &PackedTensor<'_>, shape: Shape) -> Vec<f32> {
    check_shape(shape);
    let p = packed(t);
    let mut out = vec![0f32; t.rows() * t.cols()];
    let (v, b, g, a) = p.fields;
    // SAFETY: the sections come from a tensor the core's parser validated (every read
    // lies inside them); `out` holds rows · cols values.
    unsafe {
        emu_dequantize(
            shape.blocks,
            shape.threads,
            p.records.as_ptr(),
            p.codes.as_ptr(),
            p.positions.as_ptr(),
            p.positions_len,
            p.offsets.as_ptr(),
            t.rows() as u32,
            t.cols() as u32,
            v,
            b,
            g,
            a,
            p.scale_exp,
            p.threshold_bits,
            p.rot.0,
            p.rot.1,
            out.as_mut_ptr(),
        )
    };
    out
}

/// The emulated error-sum kernel's per-group sums, added in group order (as the engine).
pub fn error_sums(
    w: Weights<'_>,
    deq: &[f32],
    cols: usize,
    bits: u8,
    group_size: u16,
    shape: Shape,
) -> [f64; 3] {
    check_shape(shape);
    assert!(w.len() == deq.len() && cols > 0 && deq.len().is_multiple_of(cols));
    let rows = deq.len() / cols;
    let groups = rows * cols.div_ceil(usize::from(group_size));
    let mut sums = vec![0f64; 3 * groups];
    let (ptr, dtype) = raw(w);
    // SAFETY: `w` and `deq` hold rows · cols values, `sums` three per group.
    unsafe {
        emu_error_sums(
            shape.blocks,
            shape.threads,
            ptr,
            dtype,
            deq.as_ptr(),
            rows as u32,
            cols as u32,
            i32::from(bits),
            u32::from(group_size),
            sums.as_mut_ptr(),
        )
    };
    let mut out = [0f64; 3];
    for g in sums.chunks_exact(3) {
        out[0] += g[0];
        out[1] += g[1];
        out[2] += g[2];
    }
    out
}

/// `Y = W X` for `batch` vectors with the emulated gemm kernel (warp per row).
pub fn gemm(t: &PackedTensor<'_>, x: &[f32], batch: usize, shape: Shape) -> Vec<f32> {
    check_shape(shape);
    assert!(batch > 0 && x.len() == batch * t.cols());
    let p = packed(t);
    let mut y = vec![0f32; batch * t.rows()];
    let (v, b, g, a) = p.fields;
    // SAFETY: as in `dequantize`; `x` holds batch · cols values, `y` batch · rows.
    unsafe {
        emu_gemm(
            shape.blocks,
            shape.threads,
            p.records.as_ptr(),
            p.codes.as_ptr(),
            p.positions.as_ptr(),
            p.positions_len,
            p.offsets.as_ptr(),
            t.rows() as u32,
            t.cols() as u32,
            v,
            b,
            g,
            a,
            p.scale_exp,
            p.threshold_bits,
            p.rot.0,
            p.rot.1,
            x.as_ptr(),
            batch as u32,
            y.as_mut_ptr(),
        )
    };
    y
}

/// `y = W x̂` with int8 activations, with the emulated gemv_q8 kernel.
pub fn gemv_q8(t: &PackedTensor<'_>, a: &Q8Activations<'_>, shape: Shape) -> Vec<f32> {
    check_shape(shape);
    let groups = t.cols().div_ceil(usize::from(t.params().group_size));
    assert!(
        a.group_size() == t.params().group_size
            && a.rotation() == t.info().rotation
            && a.q().len() == t.cols()
            && a.scales().len() == groups
            && a.sums().len() == groups
    );
    let p = packed(t);
    let mut y = vec![0f32; t.rows()];
    let (v, b, g, asym) = p.fields;
    // SAFETY: as in `dequantize`; the activations were checked against the tensor above.
    unsafe {
        emu_gemv_q8(
            shape.blocks,
            shape.threads,
            p.records.as_ptr(),
            p.codes.as_ptr(),
            p.positions.as_ptr(),
            p.positions_len,
            p.offsets.as_ptr(),
            t.rows() as u32,
            t.cols() as u32,
            v,
            b,
            g,
            asym,
            p.scale_exp,
            p.threshold_bits,
            p.rot.0,
            p.rot.1,
            a.q().as_ptr(),
            a.scales().as_ptr(),
            a.sums().as_ptr(),
            y.as_mut_ptr(),
        )
    };
    y
}
