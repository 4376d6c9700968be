//! Time is linear in the number of tensors of one file (lookups by name are O(1)): a
//! file of many tiny tensors goes through every command quickly.

use std::time::Instant;

use safetensors::Dtype;

mod common;
use common::*;

/// 20 000 tensors (10 000 quantized, 10 000 passed through) through quantize, inspect,
/// verify and dequantize. With a quadratic step the quantize alone took minutes at this
/// size in a debug build; the bound leaves room for a slow, busy machine.
#[test]
fn twenty_thousand_tensors() {
    const N: usize = 10_000;
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("many.safetensors");
    let mut tensors: Vec<Tensor> = Vec::with_capacity(2 * N);
    for i in 0..N {
        tensors.push(floats(
            &format!("l.{i}.weight"),
            Dtype::F32,
            &[2, 128],
            i as u64,
        ));
        tensors.push(floats(&format!("l.{i}.bias"), Dtype::F32, &[4], i as u64));
    }
    write_st(&input, &tensors, &[]);
    let q = tmp.path().join("q.safetensors");
    let d = tmp.path().join("d.safetensors");
    let start = Instant::now();
    ok(&adpq(&[
        "quantize",
        p(&input),
        "-o",
        p(&q),
        "-q",
        "--summary-only",
    ]));
    ok(&adpq(&["inspect", p(&q)]));
    ok(&adpq(&["verify", p(&q)]));
    ok(&adpq(&["dequantize", p(&q), "-o", p(&d), "-q"]));
    let secs = start.elapsed().as_secs_f64();
    eprintln!("20k tensors: quantize, inspect, verify, dequantize in {secs:.1} s");
    assert!(secs < 120.0, "{secs:.1} s for 20k tensors");
    let (restored, _) = read_st(&d);
    assert_eq!(restored.len(), 2 * N);
}
