//! `adpq inspect` and `adpq verify`, and the checks that `dequantize` shares with them:
//! corrupt packed tensors and untrustworthy `adpq.tensors` metadata.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

mod common;
use common::*;

#[test]
fn corrupt_packed_tensor_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("m.safetensors");
    write_st(&input, &synthetic_model(), &[]);
    let q = tmp.path().join("q.safetensors");
    ok(&adpq(&["quantize", p(&input), "-o", p(&q), "-q"]));
    // Flip one bit in the codes of a packed tensor.
    let mut bytes = std::fs::read(&q).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let name = "model.layers.0.mlp.up_proj.weight";
    let start = header[name]["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[8 + n + start + 2000] ^= 0x10;
    let bad = tmp.path().join("bad.safetensors");
    std::fs::write(&bad, &bytes).unwrap();
    fails(
        &adpq(&["verify", p(&bad)]),
        1,
        &["bad.safetensors", name, "checksum"],
    );
    let d = tmp.path().join("d.safetensors");
    fails(
        &adpq(&["dequantize", p(&bad), "-o", p(&d)]),
        1,
        &[name, "checksum"],
    );
    assert!(!d.exists());
    // inspect still lists it (structure only).
    ok(&adpq(&["inspect", p(&bad)]));
}

/// Copies a safetensors file with its `__metadata__` changed by `edit`.
fn rewrite_meta(src: &Path, dst: &Path, edit: impl FnOnce(&mut BTreeMap<String, String>)) {
    let (tensors, mut meta) = read_st(src);
    edit(&mut meta);
    let tensors: Vec<Tensor> = tensors
        .into_iter()
        .map(|(n, (d, s, b))| (n, d, s, b))
        .collect();
    let meta: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    write_st(dst, &tensors, &meta);
}

/// `verify`, `dequantize` and `inspect` do not trust `adpq.tensors`: a missing or invalid
/// key, or a packed tensor it does not list, is an error (never "ok: 0 tensors", never
/// packed bytes in a "standard" checkpoint).
#[test]
fn adpq_tensors_metadata_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("m.safetensors");
    write_st(&input, &synthetic_model(), &[]);
    let q = tmp.path().join("q.safetensors");
    ok(&adpq(&["quantize", p(&input), "-o", p(&q), "-q"]));
    let d = tmp.path().join("d.safetensors");
    let bad = tmp.path().join("bad.safetensors");
    let one = QUANTIZED[1];
    type Edit = Box<dyn FnOnce(&mut BTreeMap<String, String>)>;
    let cases: [(&str, Edit, &str); 4] = [
        (
            "missing",
            Box::new(|m| {
                m.remove("adpq.tensors");
            }),
            "adpq.tensors",
        ),
        (
            "not json",
            Box::new(|m| {
                m.insert("adpq.tensors".into(), "{oops".into());
            }),
            "adpq.tensors",
        ),
        (
            "empty",
            Box::new(|m| {
                m.insert("adpq.tensors".into(), "{}".into());
            }),
            "not listed in adpq.tensors",
        ),
        (
            "one missing",
            Box::new(|m| {
                let mut t: BTreeMap<String, Value> =
                    serde_json::from_str(&m["adpq.tensors"]).unwrap();
                t.remove(one);
                m.insert("adpq.tensors".into(), serde_json::to_string(&t).unwrap());
            }),
            one,
        ),
    ];
    for (what, edit, needle) in cases {
        eprintln!("case: {what}");
        rewrite_meta(&q, &bad, edit);
        fails(&adpq(&["verify", p(&bad)]), 1, &["bad.safetensors", needle]);
        fails(
            &adpq(&["dequantize", p(&bad), "-o", p(&d), "-q"]),
            1,
            &["bad.safetensors", needle],
        );
        assert!(!d.exists());
        let out = adpq(&["inspect", p(&bad)]);
        ok(&out);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("INVALID"), "{what}:\n{text}");
        let out = adpq(&["inspect", "--json", p(&bad)]);
        ok(&out);
        let j: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(j["errors"].as_u64().unwrap() > 0, "{what}: {j}");
    }
    // The good file still verifies; a plain checkpoint is "not an adpq checkpoint".
    ok(&adpq(&["verify", p(&q)]));
    let j: Value = serde_json::from_slice(&adpq(&["inspect", "--json", p(&q)]).stdout).unwrap();
    assert_eq!(j["errors"], 0);
    fails(
        &adpq(&["verify", p(&input)]),
        1,
        &["not an adpq checkpoint"],
    );
    fails(
        &adpq(&["dequantize", p(&input), "-o", p(&d)]),
        1,
        &["not an adpq checkpoint"],
    );
    assert!(!d.exists());
}
