//! A file of many tiny tensors goes through every command. Lookups by name are O(1)
//! (hash maps), so time is linear in the number of tensors; the figures are measured, not
//! asserted here (README, "Untrusted input": 100k tensors in 4–5 s, release).

use safetensors::Dtype;

mod common;
use common::*;

/// 20 000 tensors (10 000 quantized, 10 000 passed through) through quantize, inspect,
/// verify and dequantize, every tensor back. (With the old quadratic lookup the quantize
/// alone took minutes at this size in a debug build; the time is printed, not asserted.)
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
    let start = std::time::Instant::now();
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
    let (restored, _) = read_st(&d);
    assert_eq!(restored.len(), 2 * N);
    let (input_back, _) = read_st(&input);
    for i in [0, N / 2, N - 1] {
        let bias = format!("l.{i}.bias");
        assert_eq!(
            restored[&bias], input_back[&bias],
            "{bias} not passed through"
        );
        let weight = format!("l.{i}.weight");
        assert_eq!(restored[&weight].0, Dtype::F32, "{weight} not restored");
    }
}
