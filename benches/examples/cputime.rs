//! Throughput by this thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), for tuning on a
//! shared machine where wall-clock benches are noisy: time slices lost to other
//! processes do not count.
//!
//! `cargo run --release -p adpq-bench --example cputime -- BACKEND OP [REPS]` with OP one
//! of select, quantize, pack (quantize without the selection), dequantize, dequantize_row, gemv, gemv_q8, each with a `_v2` or
//! `_v3` suffix for that format version (`Params::V2`, `Params::V3`; v1 at
//! `Params::V1` without), and gemv_q8_repacked_v3 (gemv_q8 over the rows repacked at
//! load, `kernels::Repacked`). `gemv_q8` quantizes the activations inside the timed region
//! with the kernel set's `quantize_activations` (rotating them first for v3), as an
//! engine does once per token.
//!
//! `ADPQ_BENCH_V3_TENSOR=NAME` runs the `_v3` ops with preset v3's parameters for a
//! tensor of that name (`Params::v3_for`: `mlp.up_proj` codes 5 bits, `self_attn.v_proj` 6
//! bits in groups of 128) instead of `Params::V3` (4 bits, the code book, groups of 64).
//!
//! Instruction counts of the packing alone (valgrind hides AVX-VNNI: name `avx2`):
//! `valgrind --tool=callgrind --toggle-collect='*quantize_tensor*' cputime avx2 pack_v3 1`
//! counts 3 calls (the setup's, the warm-up's and the one timed).

#[path = "shared/cpu_time.rs"]
mod cpu_time;

use adpq_bench::{gaussian, shape};
use adpq_core::kernels::{AnyKernels, Repacked};
use adpq_core::{packed_len, CpuKernels, PackedTensor, Params, Weights};
use cpu_time::on_cpu_ns;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(name), Some(op)) = (args.first(), args.get(1)) else {
        eprintln!("usage: cputime BACKEND OP [REPS]");
        std::process::exit(2);
    };
    let reps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let b = AnyKernels::by_name(name).unwrap_or_else(|e| panic!("{e}"));
    let (rows, cols) = shape();
    let n = rows * cols;
    let w = gaussian(n, 1);
    let x = gaussian(cols, 2);
    // `OP_v2`, `OP_v3`: the same operation in format version 2 or 3.
    let (op, params) = if let Some(op) = op.strip_suffix("_v2") {
        (op.to_string(), Params::V2)
    } else if let Some(op) = op.strip_suffix("_v3") {
        let params = match std::env::var("ADPQ_BENCH_V3_TENSOR") {
            Ok(name) => Params::v3_for(&name),
            Err(_) => Params::V3,
        };
        (op.to_string(), params)
    } else {
        (op.clone(), Params::V1)
    };
    let ww = Weights::F32(&w);
    let sel = adpq_core::select_tensor(&b, ww, rows, cols, &params).unwrap();
    let mut buf = vec![0u8; packed_len(rows, cols, params.format(), sel.n_outliers).unwrap()];
    adpq_core::quantize_tensor(&b, ww, rows, cols, &params, &sel, &mut buf).unwrap();
    let packed = buf.clone();
    let t = PackedTensor::parse(&packed).unwrap();
    let mut repacked = vec![0u8; Repacked::len_for(&t).unwrap_or(0)];
    if !repacked.is_empty() {
        Repacked::repack(&t, &mut repacked).unwrap();
    }
    let mut out = vec![0f32; n];
    let mut y = vec![0f32; rows];
    let mut run = || match op.as_str() {
        "select" => {
            std::hint::black_box(adpq_core::select_tensor(&b, ww, rows, cols, &params).unwrap());
        }
        "quantize" => {
            let sel = adpq_core::select_tensor(&b, ww, rows, cols, &params).unwrap();
            adpq_core::quantize_tensor(&b, ww, rows, cols, &params, &sel, &mut buf).unwrap();
        }
        "pack" => {
            adpq_core::quantize_tensor(&b, ww, rows, cols, &params, &sel, &mut buf).unwrap();
        }
        "dequantize" => b.dequantize_rows(&t, 0, &mut out).unwrap(),
        "dequantize_row" => {
            for r in 0..rows {
                b.dequantize_rows(&t, r, &mut out[..cols]).unwrap();
            }
        }
        "gemv" => b.gemv(&t, std::hint::black_box(&x), &mut y).unwrap(),
        "gemv_q8" => {
            let groups = cols.div_ceil(usize::from(params.group_size()));
            let (mut q, mut sc, mut su) = (vec![0i8; cols], vec![0f32; groups], vec![0i32; groups]);
            let a = b
                .quantize_activations(&t, &x, &mut q, &mut sc, &mut su)
                .unwrap();
            b.gemv_q8(&t, &a, &mut y).unwrap()
        }
        // v3's rows repacked at load, as `adpq generate` reads them.
        "gemv_q8_repacked" => {
            let groups = cols.div_ceil(usize::from(params.group_size()));
            let (mut q, mut sc, mut su) = (vec![0i8; cols], vec![0f32; groups], vec![0i32; groups]);
            let a = b
                .quantize_activations(&t, &x, &mut q, &mut sc, &mut su)
                .unwrap();
            let r = Repacked::new(t, &repacked).expect("a repackable tensor");
            b.gemv_q8_repacked(&r, 0, &a, &mut y).unwrap()
        }
        other => panic!("unknown op {other}"),
    };
    run();
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t0 = on_cpu_ns();
        run();
        best = best.min((on_cpu_ns() - t0) as f64);
    }
    println!(
        "{name} {op} v{} {rows}x{cols}: {:.3} Gelem/s per on-CPU second (best of {reps})",
        params.version().number(),
        n as f64 / best
    );
}
