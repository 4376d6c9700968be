//! Criterion benches of every backend this CPU can run, per operation, on one thread:
//! `{backend}/{op}/{rows}x{cols}` with throughput in weight elements.
//!
//! - `select`: the exact outlier search alone (2–3 histogram passes);
//! - `quantize`: selection plus packing (what `adpq quantize` does per tensor);
//! - `quantize_f16`, `quantize_bf16`: the same from half-precision input;
//! - `dequantize`: the whole tensor back to f32 (a 64 MiB write at 4096x4096);
//! - `dequantize_row`: row by row into one reused row buffer (cache-resident output);
//!   also `dequantize_row_v2`, `dequantize_row_v3`;
//! - `gemv`: `y = W x` with f32 activations (fused, no dequantized copy);
//! - `gemv_q8`: the same with int8 activations (quantized per group inside the loop);
//! - `select_v2`, `quantize_v2`, `dequantize_v2`, `gemv_v2`, `gemv_q8_v2`: the same in
//!   format version 2 (`Params::V2`: 4 bits, groups of 64, α = 0.05);
//! - `select_v3`, `quantize_v3`, `dequantize_v3`, `gemv_v3`, `gemv_q8_v3`: the same in
//!   format version 3 (`Params::V3`: rotated rows, the 4-bit code book, groups of 64).
//!   `gemv_v3` includes rotating `x` once per call, `gemv_q8_v3` rotating and quantizing
//!   it (the activation transform a v3 engine pays per token); `gemv_q8_repacked_v3` is
//!   `gemv_q8_v3` over the rows repacked at load (`kernels::Repacked`), as `adpq
//!   generate` reads them.
//!
//! - `memory/read`: a plain sum over `rows·cols/2` bytes (4 bits a weight), throughput in
//!   bytes: the rate the machine reads a packed tensor's worth of memory at, beside which
//!   `cargo xtask bench` sets the gemvs' effective rate of packed bytes read. The packed
//!   size of each format goes to the file `ADPQ_BENCH_SIZES` names, one `SUFFIX BYTES`
//!   line per format (suffix `-` for version 1).
//!
//! With `--features candle`, candle-core peers run on the same data: `candle/q4_0_quantize`,
//! `candle/q4k_quantize`, `candle/q4_0_dequantize` and `candle/q4_0_q8_0_vec_dot` (one
//! `vec_dot` per row against an activation vector quantized to Q8_0 once).
//! `cargo xtask bench` runs this quickly and summarizes it.

use std::hint::black_box;
use std::time::Duration;

use adpq_bench::{gaussian, quick, shape};
use adpq_core::kernels::{AnyKernels, Repacked};
use adpq_core::{bf16, f16, packed_len, CpuKernels, PackedTensor, Params, Weights};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};

fn config() -> Criterion {
    let c = Criterion::default().sample_size(10);
    if quick() {
        c.warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_millis(1500))
    } else {
        c.warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5))
    }
}

fn adpq(c: &mut Criterion) {
    let (rows, cols) = shape();
    let n = rows * cols;
    let label = format!("{rows}x{cols}");
    let w = gaussian(n, 1);
    let x = gaussian(cols, 2);
    let params = Params::V1;
    for b in AnyKernels::available() {
        let name = b.name();
        let ww = Weights::F32(&w);
        let sel = adpq_core::select_tensor(&b, ww, rows, cols, &params).expect("select");
        let mut buf = vec![0u8; packed_len(rows, cols, params.format(), sel.n_outliers).unwrap()];

        // Versions 1 (`op`), 2 (`op_v2`) and 3 (`op_v3`): select, quantize, dequantize,
        // gemv, gemv_q8.
        let mut sizes = String::new();
        for (p, suffix) in [(params, ""), (Params::V2, "_v2"), (Params::V3, "_v3")] {
            let bytes = format_ops(c, b, &w, &x, (rows, cols), &p, suffix);
            sizes += &format!("{} {bytes}\n", if suffix.is_empty() { "-" } else { suffix });
        }
        if let Some(path) = std::env::var_os("ADPQ_BENCH_SIZES") {
            std::fs::write(path, sizes).expect("write the packed sizes");
        }

        // Half-precision checkpoints: the same weights as f16 and bf16 input (converted
        // per block inside the kernels, `Weights::to_f32_slice`).
        let w16: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let wb16: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        for (op, wh) in [
            ("quantize_f16", Weights::F16(&w16)),
            ("quantize_bf16", Weights::Bf16(&wb16)),
        ] {
            let mut g = c.benchmark_group(format!("{name}/{op}"));
            g.throughput(Throughput::Elements(n as u64));
            g.bench_function(&label, |bch| {
                bch.iter(|| {
                    let sel =
                        adpq_core::select_tensor(&b, black_box(wh), rows, cols, &params).unwrap();
                    // k = round(α·N) does not depend on the dtype: the f32 buffer fits.
                    adpq_core::quantize_tensor(&b, wh, rows, cols, &params, &sel, &mut buf).unwrap()
                })
            });
            g.finish();
        }
    }
}

/// A bench group with throughput in `n` weights.
fn group(c: &mut Criterion, id: String, n: usize) -> BenchmarkGroup<'_, WallTime> {
    let mut g = c.benchmark_group(id);
    g.throughput(Throughput::Elements(n as u64));
    g
}

/// A plain read of `n / 2` bytes (a 4-bit tensor's worth), throughput in bytes.
fn memory(c: &mut Criterion) {
    let (rows, cols) = shape();
    let words: Vec<u64> = (0..rows * cols / 16).map(|i| i as u64).collect();
    let mut g = c.benchmark_group("memory/read");
    g.throughput(Throughput::Elements((words.len() * 8) as u64));
    g.bench_function(format!("{rows}x{cols}"), |bch| {
        bch.iter(|| {
            // Four independent sums, so the adds keep up with the loads.
            let mut acc = [0u64; 4];
            for w in black_box(&words).chunks_exact(4) {
                for (a, &v) in acc.iter_mut().zip(w) {
                    *a = a.wrapping_add(v);
                }
            }
            acc
        })
    });
    g.finish();
}

/// The operations measured for each format version: `{backend}/{op}{suffix}/{shape}`.
/// Returns the packed tensor's bytes.
fn format_ops(
    c: &mut Criterion,
    b: AnyKernels,
    w: &[f32],
    x: &[f32],
    (rows, cols): (usize, usize),
    params: &Params,
    suffix: &str,
) -> usize {
    let name = b.name();
    let n = rows * cols;
    let label = format!("{rows}x{cols}");
    let ww = Weights::F32(w);
    let sel = adpq_core::select_tensor(&b, ww, rows, cols, params).expect("select");
    let mut buf = vec![0u8; packed_len(rows, cols, params.format(), sel.n_outliers).unwrap()];
    let id = |op: &str| format!("{name}/{op}{suffix}");

    let mut g = group(c, id("select"), n);
    g.bench_function(&label, |bch| {
        bch.iter(|| adpq_core::select_tensor(&b, black_box(ww), rows, cols, params).unwrap())
    });
    g.finish();

    let mut g = group(c, id("quantize"), n);
    g.bench_function(&label, |bch| {
        bch.iter(|| {
            let sel = adpq_core::select_tensor(&b, black_box(ww), rows, cols, params).unwrap();
            adpq_core::quantize_tensor(&b, ww, rows, cols, params, &sel, &mut buf).unwrap()
        })
    });
    g.finish();

    adpq_core::quantize_tensor(&b, ww, rows, cols, params, &sel, &mut buf).unwrap();
    let t = PackedTensor::parse(&buf).expect("parse");
    let mut out = vec![0f32; n];
    let mut g = group(c, id("dequantize"), n);
    g.bench_function(&label, |bch| {
        bch.iter(|| b.dequantize_rows(black_box(&t), 0, &mut out).unwrap())
    });
    g.finish();

    // Row by row into one reused row buffer (stays in L1): what an engine that
    // dequantizes a row or tile at a time sees, without the DRAM write of `dequantize`.
    let mut row_buf = vec![0f32; cols];
    let mut g = group(c, id("dequantize_row"), n);
    g.bench_function(&label, |bch| {
        bch.iter(|| {
            for r in 0..rows {
                b.dequantize_rows(black_box(&t), r, &mut row_buf).unwrap();
            }
        })
    });
    g.finish();

    let mut y = vec![0f32; rows];
    let mut g = group(c, id("gemv"), n);
    g.bench_function(&label, |bch| {
        bch.iter(|| b.gemv(black_box(&t), black_box(x), &mut y).unwrap())
    });
    g.finish();

    // int8 activations, quantized inside the timed loop (once per call, as per token;
    // rotated first for a v3 tensor).
    let groups = cols.div_ceil(usize::from(params.group_size()));
    let (mut q, mut sc, mut su) = (vec![0i8; cols], vec![0f32; groups], vec![0i32; groups]);
    let mut g = group(c, id("gemv_q8"), n);
    g.bench_function(&label, |bch| {
        bch.iter(|| {
            let a = b
                .quantize_activations(&t, black_box(x), &mut q, &mut sc, &mut su)
                .unwrap();
            b.gemv_q8(black_box(&t), &a, &mut y).unwrap()
        })
    });
    g.finish();

    // The same over the rows repacked at load, as `adpq generate` reads them (format v3).
    if let Some(len) = Repacked::len_for(&t) {
        let mut bytes = vec![0u8; len];
        Repacked::repack(&t, &mut bytes).expect("repack");
        let r = Repacked::new(t, &bytes).expect("repacked rows");
        let mut g = group(c, id("gemv_q8_repacked"), n);
        g.bench_function(&label, |bch| {
            bch.iter(|| {
                let a = b
                    .quantize_activations(&t, black_box(x), &mut q, &mut sc, &mut su)
                    .unwrap();
                b.gemv_q8_repacked(black_box(&r), 0, &a, &mut y).unwrap()
            })
        });
        g.finish();
    }
    t.as_bytes().len()
}

#[cfg(feature = "candle")]
fn candle(c: &mut Criterion) {
    use candle_core::quantized::k_quants::{BlockQ4_0, BlockQ8_0, GgmlType};
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    let (rows, cols) = shape();
    let n = rows * cols;
    let label = format!("{rows}x{cols}");
    let w = gaussian(n, 1);
    let x = gaussian(cols, 2);
    let t = Tensor::from_slice(&w, (rows, cols), &Device::Cpu).expect("tensor");
    for (op, dtype) in [
        ("q4_0_quantize", GgmlDType::Q4_0),
        ("q4k_quantize", GgmlDType::Q4K),
    ] {
        let mut g = c.benchmark_group(format!("candle/{op}"));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(&label, |bch| {
            bch.iter(|| QTensor::quantize(black_box(&t), dtype).unwrap())
        });
        g.finish();
    }

    let blocks = cols / 32;
    let mut wq = vec![BlockQ4_0::zeros(); rows * blocks];
    BlockQ4_0::from_float(&w, &mut wq);
    let mut xq = vec![BlockQ8_0::zeros(); blocks];
    BlockQ8_0::from_float(&x, &mut xq);

    let mut out = vec![0f32; n];
    let mut g = c.benchmark_group("candle/q4_0_dequantize");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(&label, |bch| {
        bch.iter(|| BlockQ4_0::to_float(black_box(&wq), &mut out))
    });
    g.finish();

    let mut y = vec![0f32; rows];
    let mut g = c.benchmark_group("candle/q4_0_q8_0_vec_dot");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(&label, |bch| {
        bch.iter(|| {
            for (r, yr) in y.iter_mut().enumerate() {
                *yr = BlockQ4_0::vec_dot(cols, &wq[r * blocks..(r + 1) * blocks], black_box(&xq));
            }
        })
    });
    g.finish();
}

#[cfg(not(feature = "candle"))]
fn candle(_: &mut Criterion) {}

criterion_group! {
    name = benches;
    config = config();
    targets = memory, adpq, candle
}
criterion_main!(benches);
