//! The C entry points called from Rust: results equal the core's, and the conventions
//! hold (a status for every bad argument, outputs untouched on failure, bulk outputs
//! zeroed, handles that no parse filled refused).

use core::ptr::{null, null_mut};

use adpq_capi::*;
use adpq_core::narrow::write_rows;
use adpq_core::{
    packed_len, quantize_tensor, select_tensor, CpuKernels, OutDtype, PackedTensor, Params, Scalar,
    Weights,
};

use adpq_status::*;

const ROWS: usize = 12;
const COLS: usize = 200;
const SCALAR: u32 = adpq_backend::ADPQ_BACKEND_SCALAR as u32;
const AUTO: u32 = adpq_backend::ADPQ_BACKEND_AUTO as u32;
const F32: u32 = adpq_dtype::ADPQ_DTYPE_F32 as u32;
const F16: u32 = adpq_dtype::ADPQ_DTYPE_F16 as u32;
const BF16: u32 = adpq_dtype::ADPQ_DTYPE_BF16 as u32;

fn weights() -> Vec<f32> {
    (0..ROWS * COLS)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 100.0 * if i % 29 == 0 { 9.0 } else { 1.0 })
        .collect()
}

fn c_params(preset: adpq_preset) -> adpq_params {
    let mut p = core::mem::MaybeUninit::<adpq_params>::uninit();
    // SAFETY: `p` is writable storage of an adpq_params.
    let s = unsafe { adpq_params_preset(preset as u32, p.as_mut_ptr()) };
    assert_eq!(s, ADPQ_STATUS_OK);
    // SAFETY: written on success.
    unsafe { p.assume_init() }
}

/// Quantizes `w` through the C ABI.
fn c_quantize(w: &[f32], p: &adpq_params, backend: u32) -> Result<Vec<u8>, adpq_status> {
    // SAFETY: zeroed storage is what the header asks for.
    let mut sel: adpq_selection = unsafe { core::mem::zeroed() };
    let mut len = 0usize;
    // SAFETY: every pointer is valid for what the function reads or writes.
    let s = unsafe {
        adpq_quantize_select(
            backend,
            w.as_ptr().cast(),
            F32,
            ROWS,
            COLS,
            p,
            &mut sel,
            &mut len,
        )
    };
    if s != ADPQ_STATUS_OK {
        return Err(s);
    }
    let mut out = vec![0u8; len];
    // SAFETY: as above; `out` holds `len` bytes.
    let s = unsafe {
        adpq_quantize(
            backend,
            w.as_ptr().cast(),
            F32,
            ROWS,
            COLS,
            p,
            &sel,
            out.as_mut_ptr(),
            out.len(),
        )
    };
    if s == ADPQ_STATUS_OK {
        Ok(out)
    } else {
        Err(s)
    }
}

fn core_quantize(w: &[f32], p: &Params) -> Vec<u8> {
    let k = Scalar::new();
    let sel = select_tensor(&k, Weights::F32(w), ROWS, COLS, p).unwrap();
    let mut buf = vec![0u8; packed_len(ROWS, COLS, p.format(), sel.n_outliers).unwrap()];
    quantize_tensor(&k, Weights::F32(w), ROWS, COLS, p, &sel, &mut buf).unwrap();
    buf
}

fn parse(buf: &[u8]) -> adpq_tensor {
    // SAFETY: zeroed storage.
    let mut t: adpq_tensor = unsafe { core::mem::zeroed() };
    // SAFETY: `buf` is readable for its length and outlives `t` in every test.
    let s = unsafe { adpq_tensor_parse(buf.as_ptr(), buf.len(), &mut t) };
    assert_eq!(s, ADPQ_STATUS_OK);
    t
}

#[test]
fn quantize_parse_info_match_the_core() {
    let w = weights();
    for (preset, params) in [
        (adpq_preset::ADPQ_PRESET_DEFAULT, Params::DEFAULT),
        (adpq_preset::ADPQ_PRESET_V1, Params::V1),
        (adpq_preset::ADPQ_PRESET_V2, Params::V2),
        (adpq_preset::ADPQ_PRESET_V3, Params::V3),
        (adpq_preset::ADPQ_PRESET_V2_TUNED, Params::V2_PRESET),
    ] {
        let p = c_params(preset);
        let bytes = c_quantize(&w, &p, AUTO).unwrap();
        assert_eq!(
            bytes,
            core_quantize(&w, &params),
            "{preset:?}: the oracle's bytes"
        );
        let t = parse(&bytes);
        let mut info = adpq_tensor_info::default();
        // SAFETY: valid handle and output.
        let s = unsafe { adpq_tensor_get_info(&t, &mut info) };
        assert_eq!(s, ADPQ_STATUS_OK);
        let core = PackedTensor::parse(&bytes).unwrap();
        assert_eq!((info.rows, info.cols), (ROWS as u64, COLS as u64));
        assert_eq!(info.version, u32::from(params.version().number()));
        assert_eq!(info.bits, u32::from(params.bits()));
        assert_eq!(info.group_size, u32::from(params.group_size()));
        assert_eq!(info.n_outliers, core.n_outliers());
        assert_eq!(info.packed_len, bytes.len() as u64);
        assert_eq!(info.bits_per_weight, core.layout().bits_per_weight());
    }
}

/// Rows, narrowing, dot products: the core's bits, in format v2 (its preset, with
/// outliers) and v3 (the default; rotated rows: the C ABI rotates the activations through
/// the core, without allocating).
#[test]
fn dequantize_and_gemv_match_the_core() {
    for preset in [
        adpq_preset::ADPQ_PRESET_V2_TUNED,
        adpq_preset::ADPQ_PRESET_V3,
        adpq_preset::ADPQ_PRESET_DEFAULT,
    ] {
        dequantize_and_gemv_match_the_core_in(preset);
    }
}

fn dequantize_and_gemv_match_the_core_in(preset: adpq_preset) {
    let w = weights();
    let bytes = c_quantize(&w, &c_params(preset), SCALAR).unwrap();
    let t = parse(&bytes);
    let core = PackedTensor::parse(&bytes).unwrap();
    let k = Scalar::new();

    // f32 rows 3..7.
    let mut want = vec![0f32; 4 * COLS];
    k.dequantize_rows(&core, 3, &mut want).unwrap();
    let mut got = vec![0f32; 4 * COLS];
    // SAFETY: `got` holds 4 * COLS floats.
    let s = unsafe {
        adpq_dequantize_rows(
            &t,
            SCALAR,
            3,
            4,
            F32,
            got.as_mut_ptr().cast(),
            got.len() * 4,
            null_mut(),
            0,
        )
    };
    assert_eq!(s, ADPQ_STATUS_OK);
    assert_eq!(got, want);

    // f16 and bf16 of every row, scratch for one row or for all: the core's narrowing.
    let mut all = vec![0f32; ROWS * COLS];
    k.dequantize_rows(&core, 0, &mut all).unwrap();
    for (dt, od) in [(F16, OutDtype::F16), (BF16, OutDtype::Bf16)] {
        let mut want = vec![0u8; ROWS * COLS * 2];
        write_rows(&core, 0, &all, od, &mut want).unwrap();
        for scratch_rows in [1, 5, ROWS] {
            let mut scratch = vec![0f32; scratch_rows * COLS];
            // Odd address: 16-bit output needs no alignment.
            let mut got = vec![0u8; ROWS * COLS * 2 + 1];
            // SAFETY: `got[1..]` holds the output, `scratch` its length in floats.
            let s = unsafe {
                adpq_dequantize_rows(
                    &t,
                    AUTO,
                    0,
                    ROWS,
                    dt,
                    got.as_mut_ptr().add(1).cast(),
                    ROWS * COLS * 2,
                    scratch.as_mut_ptr(),
                    scratch.len(),
                )
            };
            assert_eq!(s, ADPQ_STATUS_OK);
            assert_eq!(
                &got[1..],
                &want[..],
                "{od} with {scratch_rows} scratch rows"
            );
        }
    }

    // gemv, dot, gemv_q8 with the scalar kernels: the same bits as the core.
    let x: Vec<f32> = (0..COLS).map(|i| (i as f32 * 0.01).sin()).collect();
    let mut want = vec![0f32; ROWS];
    k.gemv(&core, &x, &mut want).unwrap();
    let mut y = vec![0f32; ROWS];
    // SAFETY: lengths as passed.
    let s = unsafe { adpq_gemv(&t, SCALAR, x.as_ptr(), COLS, y.as_mut_ptr(), ROWS) };
    assert_eq!(s, ADPQ_STATUS_OK);
    assert_eq!(y, want);
    let mut d = 0f32;
    // SAFETY: lengths as passed.
    let s = unsafe { adpq_dot_row(&t, SCALAR, 5, x.as_ptr(), COLS, &mut d) };
    assert_eq!(s, ADPQ_STATUS_OK);
    assert_eq!(d, k.dot_row(&core, 5, &x).unwrap());

    let mut need = 0usize;
    // SAFETY: valid handle and output.
    let s = unsafe { adpq_q8_scratch_len(&t, &mut need) };
    assert_eq!(s, ADPQ_STATUS_OK);
    let g = core.params().group_size;
    let groups = COLS.div_ceil(usize::from(g));
    let (mut q, mut sc, mut su) = (vec![0i8; COLS], vec![0f32; groups], vec![0i32; groups]);
    let a = adpq_core::Q8Activations::quantize_for(&core, &x, &mut q, &mut sc, &mut su).unwrap();
    assert_eq!(a.group_size(), g);
    let mut want8 = vec![0f32; ROWS];
    k.gemv_q8(&core, &a, &mut want8).unwrap();
    for offset in 0..4 {
        // Every alignment of the scratch bytes works.
        let mut scratch = vec![0u8; need + offset];
        let mut y8 = vec![0f32; ROWS];
        // SAFETY: `scratch[offset..]` holds `need` bytes.
        let s = unsafe {
            adpq_gemv_q8(
                &t,
                SCALAR,
                x.as_ptr(),
                COLS,
                scratch.as_mut_ptr().add(offset),
                need,
                y8.as_mut_ptr(),
                ROWS,
            )
        };
        assert_eq!(s, ADPQ_STATUS_OK);
        assert_eq!(y8, want8);
    }
}

#[test]
fn bad_arguments_get_a_status_and_leave_outputs_alone() {
    let w = weights();
    let bytes = c_quantize(&w, &c_params(adpq_preset::ADPQ_PRESET_V1), AUTO).unwrap();
    let t = parse(&bytes);
    let x = vec![0.5f32; COLS];
    let mut y = vec![7f32; ROWS];

    // SAFETY: (whole block) every pointer is NULL or valid for the lengths passed; the
    // functions must refuse the bad ones before touching memory.
    unsafe {
        // NULLs.
        let mut h: adpq_tensor = core::mem::zeroed();
        assert_eq!(
            adpq_tensor_parse(null(), 10, &mut h),
            ADPQ_STATUS_NULL_POINTER
        );
        assert_eq!(
            adpq_tensor_parse(bytes.as_ptr(), bytes.len(), null_mut()),
            ADPQ_STATUS_NULL_POINTER
        );
        assert_eq!(
            adpq_gemv(null(), AUTO, x.as_ptr(), COLS, y.as_mut_ptr(), ROWS),
            ADPQ_STATUS_NULL_POINTER
        );
        assert_eq!(
            adpq_gemv(&t, AUTO, null(), COLS, y.as_mut_ptr(), ROWS),
            ADPQ_STATUS_NULL_POINTER
        );
        assert_eq!(
            adpq_tensor_get_info(&t, null_mut()),
            ADPQ_STATUS_NULL_POINTER
        );
        assert_eq!(adpq_params_preset(0, null_mut()), ADPQ_STATUS_NULL_POINTER);
        // The first value past the last preset, and any later one, is refused.
        let mut p = core::mem::MaybeUninit::<adpq_params>::uninit();
        for unknown in [5, 6, u32::MAX] {
            assert_eq!(
                adpq_params_preset(unknown, p.as_mut_ptr()),
                ADPQ_STATUS_INVALID_ARGUMENT
            );
        }
        assert_eq!(
            adpq_dequantize_rows(
                &t,
                AUTO,
                0,
                1,
                F16,
                y.as_mut_ptr().cast(),
                COLS * 2,
                null_mut(),
                0
            ),
            ADPQ_STATUS_NULL_POINTER
        );
        // A zeroed handle (never parsed) and a failed parse's handle.
        assert_eq!(
            adpq_gemv(&h, AUTO, x.as_ptr(), COLS, y.as_mut_ptr(), ROWS),
            ADPQ_STATUS_INVALID_HANDLE
        );
        let mut bad = bytes.clone();
        bad[bytes.len() / 2] ^= 0x10;
        assert_eq!(
            adpq_tensor_parse(bad.as_ptr(), bad.len(), &mut h),
            ADPQ_STATUS_FORMAT_CHECKSUM
        );
        assert_eq!(
            adpq_gemv(&h, AUTO, x.as_ptr(), COLS, y.as_mut_ptr(), ROWS),
            ADPQ_STATUS_INVALID_HANDLE
        );
        assert_eq!(
            adpq_tensor_parse(bytes.as_ptr(), 10, &mut h),
            ADPQ_STATUS_FORMAT_TRUNCATED
        );
        assert_eq!(
            adpq_tensor_parse(x.as_ptr().cast(), 100, &mut h),
            ADPQ_STATUS_FORMAT_BAD_MAGIC
        );
        assert_eq!(y, vec![7f32; ROWS], "outputs untouched by refused calls");
        // Misaligned floats.
        let xb = vec![0u8; COLS * 4 + 4];
        let mis = xb
            .as_ptr()
            .add(usize::from((xb.as_ptr() as usize).is_multiple_of(4)));
        assert_eq!(
            adpq_gemv(&t, AUTO, mis.cast(), COLS, y.as_mut_ptr(), ROWS),
            ADPQ_STATUS_MISALIGNED
        );
        // Wrong lengths and enum values.
        assert_eq!(
            adpq_gemv(&t, AUTO, x.as_ptr(), COLS - 1, y.as_mut_ptr(), ROWS),
            ADPQ_STATUS_SHAPE_MISMATCH
        );
        assert_eq!(
            adpq_gemv(&t, AUTO, x.as_ptr(), COLS, y.as_mut_ptr(), ROWS - 1),
            ADPQ_STATUS_BUFFER_SIZE
        );
        assert_eq!(
            adpq_gemv(&t, 99, x.as_ptr(), COLS, y.as_mut_ptr(), ROWS),
            ADPQ_STATUS_INVALID_ARGUMENT
        );
        let mut out = vec![0f32; COLS];
        assert_eq!(
            adpq_dequantize_rows(
                &t,
                AUTO,
                ROWS,
                1,
                F32,
                out.as_mut_ptr().cast(),
                COLS * 4,
                null_mut(),
                0
            ),
            ADPQ_STATUS_INVALID_ARGUMENT
        );
        assert_eq!(
            adpq_dequantize_rows(
                &t,
                AUTO,
                usize::MAX,
                2,
                F32,
                out.as_mut_ptr().cast(),
                COLS * 4,
                null_mut(),
                0
            ),
            ADPQ_STATUS_INVALID_ARGUMENT
        );
        assert_eq!(
            adpq_dequantize_rows(
                &t,
                AUTO,
                0,
                1,
                7,
                out.as_mut_ptr().cast(),
                COLS * 4,
                null_mut(),
                0
            ),
            ADPQ_STATUS_INVALID_ARGUMENT
        );
        assert_eq!(
            adpq_dequantize_rows(
                &t,
                AUTO,
                0,
                1,
                F16,
                out.as_mut_ptr().cast(),
                COLS * 2,
                out.as_mut_ptr(),
                COLS - 1
            ),
            ADPQ_STATUS_BUFFER_SIZE
        );
        let mut d = 3f32;
        assert_eq!(
            adpq_dot_row(&t, AUTO, ROWS, x.as_ptr(), COLS, &mut d),
            ADPQ_STATUS_INVALID_ARGUMENT
        );
        assert_eq!(d, 3.0);
        // A non-finite activation: a status, and y zero-filled, not half written.
        let mut xn = x.clone();
        xn[COLS - 1] = f32::NAN;
        let mut need = 0;
        assert_eq!(adpq_q8_scratch_len(&t, &mut need), ADPQ_STATUS_OK);
        let mut scratch = vec![0u8; need];
        assert_eq!(
            adpq_gemv_q8(
                &t,
                AUTO,
                xn.as_ptr(),
                COLS,
                scratch.as_mut_ptr(),
                need - 4,
                y.as_mut_ptr(),
                ROWS
            ),
            ADPQ_STATUS_BUFFER_SIZE
        );
        assert_eq!(
            adpq_gemv_q8(
                &t,
                AUTO,
                xn.as_ptr(),
                COLS,
                scratch.as_mut_ptr(),
                need,
                y.as_mut_ptr(),
                ROWS
            ),
            ADPQ_STATUS_NON_FINITE
        );
        assert_eq!(y, vec![0f32; ROWS]);
        // Backends: AUTO resolves to something that runs; NEON/AVX2 only where present.
        let mut b = 99u32;
        assert_eq!(adpq_backend_resolve(AUTO, &mut b), ADPQ_STATUS_OK);
        assert!(!adpq_backend_name(b).is_null());
        assert_eq!(
            core::ffi::CStr::from_ptr(adpq_backend_name(SCALAR))
                .to_str()
                .unwrap(),
            "scalar"
        );
        assert!(adpq_backend_name(42).is_null());
        let neon = adpq_backend::ADPQ_BACKEND_NEON as u32;
        if !cfg!(target_arch = "aarch64") {
            let mut b = 5u32;
            assert_eq!(
                adpq_backend_resolve(neon, &mut b),
                ADPQ_STATUS_BACKEND_UNAVAILABLE
            );
            assert_eq!(b, 5);
        }
        // AVX-VNNI resolves to itself exactly where the core can run it.
        let vnni = adpq_backend::ADPQ_BACKEND_AVX_VNNI as u32;
        let mut b = 5u32;
        if adpq_core::AvxVnni::is_available() {
            assert_eq!(adpq_backend_resolve(vnni, &mut b), ADPQ_STATUS_OK);
            assert_eq!(b, vnni);
            assert_eq!(
                core::ffi::CStr::from_ptr(adpq_backend_name(vnni))
                    .to_str()
                    .unwrap(),
                "avx-vnni"
            );
        } else {
            assert_eq!(
                adpq_backend_resolve(vnni, &mut b),
                ADPQ_STATUS_BACKEND_UNAVAILABLE
            );
            assert_eq!(b, 5);
        }
    }
}

#[test]
fn quantize_refuses_bad_params_and_mismatched_selections() {
    let w = weights();
    let mut p = c_params(adpq_preset::ADPQ_PRESET_V2);
    p.group_size = 300; // v2 stores groups below 256
    assert_eq!(c_quantize(&w, &p, AUTO), Err(ADPQ_STATUS_INVALID_PARAMS));
    p = c_params(adpq_preset::ADPQ_PRESET_V1);
    p.alpha = f64::NAN;
    assert_eq!(c_quantize(&w, &p, AUTO), Err(ADPQ_STATUS_INVALID_PARAMS));
    let mut wn = w.clone();
    wn[17] = f32::INFINITY;
    assert_eq!(
        c_quantize(&wn, &c_params(adpq_preset::ADPQ_PRESET_V1), AUTO),
        Err(ADPQ_STATUS_NON_FINITE)
    );

    // A selection of other weights: refused, and the output zero-filled.
    let p = c_params(adpq_preset::ADPQ_PRESET_V1);
    // SAFETY: zeroed storage; every pointer valid for its length.
    unsafe {
        let mut sel: adpq_selection = core::mem::zeroed();
        let mut len = 0;
        let mut out = vec![0xAAu8; 64];
        assert_eq!(
            adpq_quantize(
                AUTO,
                w.as_ptr().cast(),
                F32,
                ROWS,
                COLS,
                &p,
                &sel,
                out.as_mut_ptr(),
                out.len()
            ),
            ADPQ_STATUS_INVALID_HANDLE
        );
        assert_eq!(
            adpq_quantize_select(
                AUTO,
                w.as_ptr().cast(),
                F32,
                ROWS,
                COLS,
                &p,
                &mut sel,
                &mut len
            ),
            ADPQ_STATUS_OK
        );
        let other: Vec<f32> = w.iter().map(|v| v * 0.5 + 0.01).collect();
        let mut out = vec![0xAAu8; len];
        let s = adpq_quantize(
            AUTO,
            other.as_ptr().cast(),
            F32,
            ROWS,
            COLS,
            &p,
            &sel,
            out.as_mut_ptr(),
            len,
        );
        assert_ne!(s, ADPQ_STATUS_OK);
        assert!(out.iter().all(|&b| b == 0), "zero-filled on failure");
        // Half-precision input: the same bytes as the core's.
        let h: Vec<adpq_core::f16> = w.iter().map(|&v| adpq_core::f16::from_f32(v)).collect();
        assert_eq!(
            adpq_quantize_select(
                AUTO,
                h.as_ptr().cast(),
                F16,
                ROWS,
                COLS,
                &p,
                &mut sel,
                &mut len
            ),
            ADPQ_STATUS_OK
        );
        let mut out = vec![0u8; len];
        assert_eq!(
            adpq_quantize(
                AUTO,
                h.as_ptr().cast(),
                F16,
                ROWS,
                COLS,
                &p,
                &sel,
                out.as_mut_ptr(),
                len
            ),
            ADPQ_STATUS_OK
        );
        let k = Scalar::new();
        let params = Params::V1;
        let cs = select_tensor(&k, Weights::F16(&h), ROWS, COLS, &params).unwrap();
        let mut want = vec![0u8; packed_len(ROWS, COLS, params.format(), cs.n_outliers).unwrap()];
        quantize_tensor(&k, Weights::F16(&h), ROWS, COLS, &params, &cs, &mut want).unwrap();
        assert_eq!(out, want);
    }
}
