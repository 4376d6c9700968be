//! Proof that `adpq-core` is `no_std` and needs no allocator.
//!
//! This binary has no std and no allocator: it links `adpq-core` without its `std` feature
//! and only the C library (for the process entry point, `write` and `abort`). If anything
//! in the dependency graph pulled in std, linking would fail with a duplicate `panic_impl`
//! lang item; if the core needed an allocator, it would fail for want of one.
//!
//! It quantizes small tensors into fixed-size stack buffers, parses and dequantizes them,
//! checks the results, and exits 0 only when every check passes. Run it with
//! `cargo xtask nostd`.
#![no_std]
#![no_main]

use core::ffi::{c_char, c_int};
use core::fmt::Write;

use adpq_core::quant::{pow2, GridScale};
use adpq_core::{
    f16, packed_len, CpuKernels, Error, FormatError, FormatVersion, Grid, PackedTensor,
    ParamFields, Params, Scalar, SelectionMode, Weights,
};

extern "C" {
    fn write(fd: c_int, buf: *const u8, count: usize) -> isize;
    fn abort() -> !;
}

/// Unbuffered standard error through libc's `write`.
struct Stderr;

impl Write for Stderr {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let mut rest = s.as_bytes();
        while !rest.is_empty() {
            // SAFETY: `rest` is a live, initialized byte slice of `rest.len()` bytes.
            let n = unsafe { write(2, rest.as_ptr(), rest.len()) };
            if n <= 0 {
                return Err(core::fmt::Error);
            }
            rest = &rest[n as usize..];
        }
        Ok(())
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let _ = writeln!(Stderr, "nostd-check: panic: {info}");
    // SAFETY: `abort` takes no arguments and never returns.
    unsafe { abort() }
}

/// `core` is built with unwinding; with `panic = "abort"` nothing calls the personality
/// routine, but the linker still wants the symbol.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

const ROWS: usize = 4;
const COLS: usize = 200; // groups of 64 or 128: the last group of each row is short
const N: usize = ROWS * COLS;
/// Comfortably above `packed_len` of every configuration below (checked at run time).
const BUF_LEN: usize = 2048;

/// A check that failed: what and, for the exit status, which.
struct Failure(&'static str);

fn ensure(ok: bool, what: &'static str) -> Result<(), Failure> {
    if ok {
        Ok(())
    } else {
        Err(Failure(what))
    }
}

fn core_err(_: Error) -> Failure {
    Failure("adpq-core returned an error")
}

/// Deterministic weights: a spread of small values plus a few large ones (the outliers).
fn weights() -> [f32; N] {
    let mut w = [0f32; N];
    for (i, v) in w.iter_mut().enumerate() {
        let x = ((i * 37 % 101) as f32 - 50.0) / 100.0;
        *v = if i % 23 == 7 { x * 12.0 } else { x };
    }
    w
}

/// Quantizes `w` with `params` into a stack buffer, parses it back and checks it.
fn check(name: &str, w: Weights<'_>, params: &Params) -> Result<(), Failure> {
    let _ = writeln!(Stderr, "nostd-check: {name}");
    let backend = Scalar::new();
    let sel = adpq_core::select_tensor(&backend, w, ROWS, COLS, params).map_err(core_err)?;
    let k = libm_round(params.alpha() * N as f64);
    ensure(sel.n_outliers == k, "outlier count is not round(alpha * N)")?;

    let len = packed_len(ROWS, COLS, params.format(), sel.n_outliers).map_err(core_err)?;
    ensure(len <= BUF_LEN, "packed_len exceeds the fixed buffer")?;
    let mut buf = [0u8; BUF_LEN];
    let buf = &mut buf[..len];
    adpq_core::quantize_tensor(&backend, w, ROWS, COLS, params, &sel, buf).map_err(core_err)?;

    let t = PackedTensor::parse(buf).map_err(core_err)?;
    ensure(t.rows() == ROWS && t.cols() == COLS, "parsed shape differs")?;
    ensure(t.n_outliers() == k, "parsed outlier count differs")?;
    ensure(t.params() == params.format(), "parsed parameters differ")?;

    let mut back = [0f32; N];
    backend
        .dequantize_rows(&t, 0, &mut back)
        .map_err(core_err)?;

    if params.version() == FormatVersion::V2 {
        check_nearest_v2(&t, w, &back, k)?;
    } else {
        check_bound_v1(&t, w, &back, k)?;
    }

    // The fused dot product agrees with the dequantized row.
    let mut x = [0f32; COLS];
    for (c, v) in x.iter_mut().enumerate() {
        *v = ((c % 7) as f32 - 3.0) * 0.25;
    }
    for r in 0..ROWS {
        let y = backend.dot_row(&t, r, &x).map_err(core_err)?;
        let want: f32 = back[r * COLS..(r + 1) * COLS]
            .iter()
            .zip(&x)
            .map(|(a, b)| a * b)
            .sum();
        ensure(
            (y - want).abs() <= 1e-3 * (1.0 + want.abs()),
            "dot_row disagrees with dequantize",
        )?;
    }

    // Corruption is detected, truncation too.
    buf[len / 2] ^= 0x40;
    ensure(
        matches!(
            PackedTensor::parse(buf),
            Err(Error::Format(FormatError::ChecksumMismatch { .. }))
        ),
        "a flipped bit was not caught by the checksum",
    )?;
    buf[len / 2] ^= 0x40;
    ensure(
        PackedTensor::parse(&buf[..len - 1]).is_err(),
        "a truncated buffer parsed",
    )?;
    ensure(
        PackedTensor::parse(buf).is_ok(),
        "the restored buffer does not parse",
    )?;

    let _ = writeln!(Stderr, "  ok: {len} bytes, {k} outliers");
    Ok(())
}

/// Version 1: every weight is within the error bound of its own grid (half a step plus
/// the f16 rounding of the step at the clamped end of the range), so within the larger one.
fn check_bound_v1(
    t: &PackedTensor<'_>,
    w: Weights<'_>,
    back: &[f32; N],
    k: u64,
) -> Result<(), Failure> {
    let g = usize::from(t.params().group_size);
    let mut outliers = 0;
    for r in 0..ROWS {
        let row = t.row(r).map_err(core_err)?;
        for gi in 0..COLS.div_ceil(g) {
            let rec = t.record(&row, gi);
            outliers += rec.count as u64;
            let bound = error_bound(&rec.inliers, t).max(error_bound(&rec.outliers, t));
            for c in gi * g..((gi + 1) * g).min(COLS) {
                let i = r * COLS + c;
                let orig = w.value(i).ok_or(Failure("weight index"))?;
                if (back[i] - orig).abs() > bound {
                    let _ = writeln!(
                        Stderr,
                        "  row {r} col {c}: {} vs {orig}, bound {bound}",
                        back[i]
                    );
                    return Err(Failure("dequantized weight off its grid"));
                }
            }
        }
    }
    ensure(outliers == k, "group outlier counts do not add up")?;
    Ok(())
}

/// Version 2: every weight decodes to the nearest value its grid holds (any inlier code;
/// for an outlier, any offset with its sign), up to the f32 rounding of the encoder.
fn check_nearest_v2(
    t: &PackedTensor<'_>,
    w: Weights<'_>,
    back: &[f32; N],
    k: u64,
) -> Result<(), Failure> {
    let fp = t.params();
    let sign = 1u8 << (fp.bits - 1);
    let mut outliers = 0;
    for r in 0..ROWS {
        let groups = t.affine_groups(r).map_err(core_err)?;
        let units = *groups.units();
        for group in groups {
            outliers += group.record.count as u64;
            let mut is_out = [false; 256];
            for p in group.outliers() {
                is_out[p] = true;
            }
            let grid = group.record.grid;
            for (i, &outlier) in is_out.iter().enumerate().take(group.len) {
                let idx = r * COLS + group.start + i;
                let orig = w.value(idx).ok_or(Failure("weight index"))?;
                let err = (back[idx] - orig).abs();
                let (best, step) = if outlier {
                    let neg = if orig < 0.0 { sign } else { 0 };
                    let best = (0..sign)
                        .map(|c| (units.outlier(c | neg, fp.bits) - orig).abs())
                        .fold(f32::INFINITY, f32::min);
                    (best, units.outlier_step)
                } else {
                    let best = (0..=fp.code_max() as u8)
                        .map(|c| (grid.decode(c) - orig).abs())
                        .fold(f32::INFINITY, f32::min);
                    (best, grid.step)
                };
                if err > best + 1e-4 * step + f32::MIN_POSITIVE {
                    let _ = writeln!(
                        Stderr,
                        "  row {r} col {}: {} vs {orig}",
                        group.start + i,
                        back[idx]
                    );
                    return Err(Failure("dequantized weight not the nearest on its grid"));
                }
            }
        }
    }
    ensure(outliers == k, "group outlier counts do not add up")
}

/// The reconstruction error bound of a grid, as `adpq_core::harness::error_bound` (which
/// needs std) and `adpq_core::quant` document it: `Δ/2 + code_max · ulp(h)/2`.
fn error_bound(grid: &GridScale, t: &PackedTensor<'_>) -> f32 {
    let h = f16::from_bits(grid.h);
    let ulp =
        (f16::from_bits(grid.h + 1).to_f32() - h.to_f32()) * pow2(i32::from(t.info().scale_exp));
    (grid.step * 0.5 + t.params().code_max() as f32 * ulp * 0.5) * (1.0 + 1e-5) + f32::MIN_POSITIVE
}

/// `round(x)` for the small non-negative values used here (no libm needed in this crate).
fn libm_round(x: f64) -> u64 {
    (x + 0.5) as u64
}

fn run() -> Result<(), Failure> {
    let w = weights();
    let mut h = [f16::ZERO; N];
    for (d, s) in h.iter_mut().zip(&w) {
        *d = f16::from_f32(*s);
    }
    let zeros = [0f32; N];

    check(
        "f32, 4 bits, g=128, alpha=0.06, symmetric",
        Weights::F32(&w),
        &Params::V1,
    )?;
    let asym = Params::new(3, 64, 0.1, Grid::Asymmetric).map_err(core_err)?;
    check(
        "f32, 3 bits, g=64, alpha=0.1, asymmetric",
        Weights::F32(&w),
        &asym,
    )?;
    check(
        "f16, 4 bits, g=128, alpha=0.06, symmetric",
        Weights::F16(&h),
        &Params::V1,
    )?;
    let reference = Params::V1
        .with_selection(SelectionMode::Reference { n_iters: 100 })
        .map_err(core_err)?;
    let w_ref = Weights::F32(&w);
    // Reference mode stops within 0.1 % of alpha*N, not exactly on it: check it separately.
    let sel = adpq_core::select_tensor(&Scalar::new(), w_ref, ROWS, COLS, &reference)
        .map_err(core_err)?;
    ensure(
        sel.n_outliers > 0 && sel.n_outliers <= N as u64,
        "reference selection count",
    )?;
    check(
        "f32, format v2: 4 bits, g=64, alpha=0.05",
        Weights::F32(&w),
        &Params::V2,
    )?;
    let v2_6 = ParamFields {
        bits: 6,
        group_size: 17,
        ..Params::V2.fields()
    }
    .validate()
    .map_err(core_err)?;
    check(
        "f16, format v2: 6 bits, g=17, alpha=0.05",
        Weights::F16(&h),
        &v2_6,
    )?;
    check(
        "all zeros, 4 bits, g=128",
        Weights::F32(&zeros),
        &Params::V1,
    )?;
    Ok(())
}

#[no_mangle]
extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    match run() {
        Ok(()) => {
            let _ = writeln!(Stderr, "nostd-check: all checks passed");
            0
        }
        Err(Failure(what)) => {
            let _ = writeln!(Stderr, "nostd-check: FAILED: {what}");
            1
        }
    }
}
