//! Dequantized values never become infinities silently: at the edge of the F16 range
//! they saturate (the weight was representable), far beyond it the run fails and says
//! which dtype to use instead.

use safetensors::Dtype;

mod common;
use common::*;

/// A `rows × cols` tensor of `dtype` with values up to ±30000 and every 97th weight at
/// +`edge` or −`edge`.
fn with_edges(name: &str, dtype: Dtype, rows: usize, cols: usize, edge: f32) -> Tensor {
    let vals: Vec<f32> = (0..rows * cols)
        .map(|i| match i % 97 {
            0 => edge,
            1 => -edge,
            _ => ((i as f32) * 0.37).sin() * 30000.0,
        })
        .collect();
    let bytes = match dtype {
        Dtype::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F16 => vals
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        _ => unreachable!(),
    };
    (name.into(), dtype, vec![rows, cols], bytes)
}

/// F16 weights at ±65504 (the largest f16) came back as ±inf: the f16-rounded step times
/// the largest code exceeds 65504 slightly. They now come back as ±65504, with the
/// default dtype (the original F16) and with `--dtype f16`, in format v1 and v2.
#[test]
fn f16_weights_at_the_range_edge_come_back_finite() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("m.safetensors");
    let name = "model.layers.0.mlp.up_proj.weight";
    let t = with_edges(name, Dtype::F16, 8, 512, 65504.0);
    let original = to_f32(Dtype::F16, &t.3);
    write_st(&input, &[t], &[]);
    for format in ["v1", "v2"] {
        let q = tmp.path().join("q.safetensors");
        ok(&adpq(&[
            "quantize",
            p(&input),
            "-o",
            p(&q),
            "--format",
            format,
            "-q",
        ]));
        edge_comes_back(&q, name, &original, format);
    }
}

/// Dequantizes `q` (default dtype and `--dtype f16`): every value finite, the ±65504
/// weights exactly back.
fn edge_comes_back(q: &std::path::Path, name: &str, original: &[f32], format: &str) {
    let tmp = tempfile::tempdir().unwrap();
    for extra in [&[][..], &["--dtype", "f16"]] {
        let d = tmp.path().join("d.safetensors");
        let mut args = vec!["dequantize", p(q), "-o", p(&d), "-q"];
        args.extend_from_slice(extra);
        ok(&adpq(&args));
        let (tensors, _) = read_st(&d);
        let (dtype, _, bytes) = &tensors[name];
        assert_eq!(*dtype, Dtype::F16);
        let back = to_f32(Dtype::F16, bytes);
        assert!(
            back.iter().all(|v| v.is_finite()),
            "{format} {extra:?}: an inf came back"
        );
        for (i, (b, o)) in back.iter().zip(original).enumerate() {
            if o.abs() == 65504.0 {
                assert_eq!(b, o, "{format} {extra:?}: element {i}");
            }
        }
    }
}

/// An F32 model with weights far beyond the f16 range, dequantized with `--dtype f16`:
/// an error naming the file and the tensor and suggesting f32 or bf16, exit 1, nothing
/// left behind. `--dtype bf16` and the default (F32) hold the values. In format v1 and v2.
#[test]
fn values_beyond_f16_are_an_error_with_dtype_f16() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("m.safetensors");
    let name = "model.layers.0.mlp.up_proj.weight";
    write_st(&input, &[with_edges(name, Dtype::F32, 8, 512, 1.0e6)], &[]);
    for format in ["v1", "v2"] {
        beyond_f16_is_refused(tmp.path(), &input, name, format);
    }
}

fn beyond_f16_is_refused(dir: &std::path::Path, input: &std::path::Path, name: &str, format: &str) {
    let q = dir.join("q.safetensors");
    ok(&adpq(&[
        "quantize",
        p(input),
        "-o",
        p(&q),
        "--format",
        format,
        "-q",
    ]));
    let d = dir.join("d.safetensors");
    fails(
        &adpq(&["dequantize", p(&q), "-o", p(&d), "--dtype", "f16", "-q"]),
        1,
        &[
            "q.safetensors",
            name,
            "beyond the range of F16",
            "--dtype f32 or --dtype bf16",
        ],
    );
    assert!(!d.exists());
    assert_eq!(names_in(dir), ["m.safetensors", "q.safetensors"]);
    for dtype in ["bf16", "f32"] {
        ok(&adpq(&[
            "dequantize",
            p(&q),
            "-o",
            p(&d),
            "--dtype",
            dtype,
            "-q",
        ]));
        let (tensors, _) = read_st(&d);
        let (dt, _, bytes) = &tensors[name];
        let back = to_f32(*dt, bytes);
        assert!(back.iter().all(|v| v.is_finite()));
        assert!(back.iter().any(|v| v.abs() > 9.0e5), "{format} {dtype}");
        std::fs::remove_file(&d).unwrap();
    }
}

/// A tensor whose weights are all subnormal (~1e-40) was quantized to zeros. The core now
/// refuses it (`TooSmall`) and quantize keeps it exactly, with a warning naming it, while
/// the other tensors are quantized as usual; the output reads back.
#[test]
fn tiny_tensors_are_kept_exactly_not_zeroed() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("m.safetensors");
    let tiny_name = "model.layers.0.self_attn.q_proj.weight";
    let normal = floats(
        "model.layers.0.mlp.up_proj.weight",
        Dtype::F32,
        &[16, 256],
        3,
    );
    let tiny_vals: Vec<f32> = (0..16 * 256)
        .map(|i| (1 + i % 7) as f32 * 1e-40 * if i % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    let tiny_bytes: Vec<u8> = tiny_vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let tiny = (
        tiny_name.to_string(),
        Dtype::F32,
        vec![16, 256],
        tiny_bytes.clone(),
    );
    write_st(&input, &[normal, tiny], &[]);
    // The same with preset v3-auto, whose allocation codes a sample of every tensor first.
    for extra in [&[][..], &["--preset", "v3-auto", "--force"][..]] {
        tiny_tensor_kept(
            &input,
            &tmp.path().join("q.safetensors"),
            extra,
            tiny_name,
            &tiny_bytes,
        );
    }
}

/// Quantizes `input` (with `extra` flags) and checks that `tiny_name` was kept exactly.
fn tiny_tensor_kept(
    input: &std::path::Path,
    q: &std::path::Path,
    extra: &[&str],
    tiny_name: &str,
    tiny_bytes: &[u8],
) {
    let mut args = vec!["quantize", p(input), "-o", p(q)];
    args.extend_from_slice(extra);
    let out = adpq(&args);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(tiny_name) && stderr.contains("too small"),
        "no warning naming the tensor: {stderr}"
    );
    let (tensors, _) = read_st(q);
    let (dtype, shape, bytes) = &tensors[tiny_name];
    assert_eq!(
        (*dtype, shape.as_slice()),
        (Dtype::F32, &[16usize, 256][..])
    );
    assert!(
        *bytes == tiny_bytes,
        "the tiny tensor was not kept byte for byte"
    );
    assert_eq!(tensors["model.layers.0.mlp.up_proj.weight"].0, Dtype::U8);
    ok(&adpq(&["verify", p(q)]));
}

/// Issue 14's hostile v2 tensor: the header's exponent raised and every row's outlier
/// step zeroed, CRC fixed. Its inliers decode to about 10¹⁶ under a threshold that fits
/// F16. It used to pass `verify` and saturate silently to ±65504 with the default dtype
/// (F16); now `verify` and `dequantize` both refuse it, naming the tensor, and F32 holds
/// the values.
#[test]
fn hostile_v2_inliers_beyond_the_threshold_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("m.safetensors");
    let name = "model.layers.0.mlp.up_proj.weight";
    write_st(&input, &[floats(name, Dtype::F16, &[16, 128], 3)], &[]);
    let q = tmp.path().join("q.safetensors");
    ok(&adpq(&["quantize", p(&input), "-o", p(&q), "-q"]));
    ok(&adpq(&["verify", p(&q)]));

    let mut bytes = std::fs::read(&q).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let range = &header[name]["data_offsets"];
    let start = 8 + n + range[0].as_u64().unwrap() as usize;
    let end = 8 + n + range[1].as_u64().unwrap() as usize;
    let buf = &mut bytes[start..end];
    let (records_at, row_bytes, rows) = {
        let t = adpq_core::PackedTensor::parse(buf).unwrap();
        let l = t.layout();
        (l.records_at(), l.row_record_bytes(), t.rows())
    };
    buf[12] = (buf[12] as i8 + 60) as u8; // the header's scale exponent
    for r in 0..rows {
        let units = records_at + r * row_bytes;
        buf[units + 4..units + 6].fill(0); // the row's outlier step (f16)
    }
    let crc = adpq_core::format::checksum(buf);
    buf[56..60].copy_from_slice(&crc.to_le_bytes());
    assert!(
        adpq_core::PackedTensor::parse(buf).is_ok(),
        "still a valid buffer"
    );
    let bad = tmp.path().join("bad.safetensors");
    std::fs::write(&bad, &bytes).unwrap();

    fails(
        &adpq(&["verify", p(&bad)]),
        1,
        &["bad.safetensors", name, "original dtype F16"],
    );
    let d = tmp.path().join("d.safetensors");
    fails(
        &adpq(&["dequantize", p(&bad), "-o", p(&d)]),
        1,
        &[name, "beyond the range of F16"],
    );
    assert!(!d.exists());
    ok(&adpq(&[
        "dequantize",
        p(&bad),
        "-o",
        p(&d),
        "--dtype",
        "f32",
        "-q",
    ]));
    let (tensors, _) = read_st(&d);
    let back = to_f32(Dtype::F32, &tensors[name].2);
    assert!(
        back.iter().any(|v| v.abs() > 1e15),
        "the raised exponent shows"
    );
}
