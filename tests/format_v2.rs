//! Format v2 end to end: `quantize --format v2`, per-tensor parameters (`--tensor-params`,
//! `--preset v2-vproj6`), the metadata that records them, and `inspect`, `verify`,
//! `dequantize` on the result; version 1 metadata unchanged; the real MiniLM checkpoint.

use std::path::{Path, PathBuf};

use safetensors::Dtype;
use serde_json::Value;

mod common;
use common::*;

const V_PROJ: &str = "model.layers.0.self_attn.v_proj.weight";
const Q_PROJ: &str = "model.layers.0.self_attn.q_proj.weight";
const DOWN_PROJ: &str = "model.layers.0.mlp.down_proj.weight";

/// A small Llama-named model: three projections (F32, F16, BF16) and a norm.
fn llama_like(dir: &Path) -> PathBuf {
    let input = dir.join("in.safetensors");
    write_st(
        &input,
        &[
            floats(Q_PROJ, Dtype::F32, &[32, 576], 1),
            floats(V_PROJ, Dtype::F16, &[16, 576], 2),
            floats(DOWN_PROJ, Dtype::BF16, &[24, 320], 3),
            floats("model.norm.weight", Dtype::F32, &[576], 4),
        ],
        &[("format", "pt")],
    );
    input
}

fn json(out: &std::process::Output) -> Value {
    ok(out);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `inspect --json`'s tensor entry by name.
fn inspected<'a>(ins: &'a Value, name: &str) -> &'a Value {
    ins["files"][0]["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("{name} not inspected"))
}

/// Relative squared error of `back` against `orig` (both as f32).
fn rel_err(orig: &(Dtype, Vec<usize>, Vec<u8>), back: &(Dtype, Vec<usize>, Vec<u8>)) -> f64 {
    let (a, b) = (to_f32(orig.0, &orig.2), to_f32(back.0, &back.2));
    let num: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum();
    let den: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum();
    num / den
}

/// `--format v2 --preset none`: Params::V2 for every tensor (4 bits, g 64, α .05,
/// asymmetric), `adpq.version` 2 and `"format":"v2"`, and the checkpoint verifies,
/// inspects as v2 and dequantizes close to the input.
#[test]
fn format_v2_defaults_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let input = llama_like(tmp.path());
    let q = tmp.path().join("q.safetensors");
    let rep = tmp.path().join("r.json");
    ok(&adpq(&[
        "quantize",
        p(&input),
        "-o",
        p(&q),
        "--format",
        "v2",
        "--preset",
        "none",
        "--report",
        p(&rep),
        "-q",
    ]));
    let (_, meta) = read_st(&q);
    assert_eq!(meta["adpq.version"], "2");
    let params: Value = serde_json::from_str(&meta["adpq.params"]).unwrap();
    assert_eq!(params["format"], "v2");
    assert_eq!(params["group_size"], 64);
    assert_eq!(params["alpha"], 0.05);
    assert_eq!(params["grid"], "asymmetric");
    let tensors: Value = serde_json::from_str(&meta["adpq.tensors"]).unwrap();
    assert!(
        tensors
            .as_object()
            .unwrap()
            .values()
            .all(|t| t.get("params").is_none()),
        "uniform parameters: no per-tensor records: {tensors}"
    );
    let report = read_json(&rep);
    assert_eq!(report["params"]["format"], "v2");
    assert!(report["totals"]["rel_mse"].as_f64().unwrap() < 0.02);

    ok(&adpq(&["verify", p(&q)]));
    let ins = json(&adpq(&["inspect", p(&q), "--json"]));
    for name in [Q_PROJ, V_PROJ, DOWN_PROJ] {
        let t = inspected(&ins, name);
        assert_eq!(
            (t["version"].as_u64(), t["bits"].as_u64()),
            (Some(2), Some(4))
        );
        assert_eq!(t["group_size"], 64);
    }
    let text = adpq(&["inspect", p(&q)]);
    ok(&text);
    assert!(String::from_utf8_lossy(&text.stdout).contains("adpq v2 b4 g64 asymmetric alpha 0.05"));

    let d = tmp.path().join("d.safetensors");
    ok(&adpq(&["dequantize", p(&q), "-o", p(&d), "-q"]));
    let (orig, _) = read_st(&input);
    let (back, back_meta) = read_st(&d);
    assert_eq!(back_meta.get("format").map(String::as_str), Some("pt"));
    assert!(!back_meta.keys().any(|k| k.starts_with("adpq.")));
    for (name, t) in &orig {
        let b = &back[name];
        assert_eq!((t.0, &t.1), (b.0, &b.1), "{name}: dtype and shape restored");
        if name == "model.norm.weight" {
            assert!(t.2 == b.2, "passed through unchanged");
        } else {
            let e = rel_err(t, b);
            assert!(e > 0.0 && e < 0.02, "{name}: relative error {e}");
        }
    }
}

/// The preset and `--tensor-params`: `v_proj` gets 6 bits and α .05, the rest 4 bits
/// and α .04; a user rule comes first. The metadata, the report and `inspect` tell each
/// tensor's own parameters, and each packed header holds them.
#[test]
fn the_policy_picks_the_right_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let input = llama_like(tmp.path());
    let q = tmp.path().join("q.safetensors");
    let rep = tmp.path().join("r.json");
    ok(&adpq(&[
        "quantize",
        p(&input),
        "-o",
        p(&q),
        "--preset",
        "v2-vproj6",
        "--tensor-params",
        "down_proj=bits:5",
        "--report",
        p(&rep),
        "-q",
    ]));
    let ins = json(&adpq(&["inspect", p(&q), "--json"]));
    let got = |name: &str| {
        let t = inspected(&ins, name);
        (
            t["version"].as_u64().unwrap(),
            t["bits"].as_u64().unwrap(),
            t["alpha"].as_f64().unwrap(),
            t["group_size"].as_u64().unwrap(),
        )
    };
    assert_eq!(got(V_PROJ), (2, 6, 0.05, 64));
    assert_eq!(got(Q_PROJ), (2, 4, 0.04, 64));
    assert_eq!(got(DOWN_PROJ), (2, 5, 0.04, 64), "the user's rule wins");

    let (_, meta) = read_st(&q);
    assert_eq!(meta["adpq.version"], "2");
    let params: Value = serde_json::from_str(&meta["adpq.params"]).unwrap();
    assert_eq!(
        (params["format"].clone(), params["alpha"].clone()),
        ("v2".into(), 0.04.into())
    );
    let tensors: Value = serde_json::from_str(&meta["adpq.tensors"]).unwrap();
    assert_eq!(tensors[V_PROJ]["params"]["bits"], 6);
    assert_eq!(tensors[V_PROJ]["params"]["alpha"], 0.05);
    assert_eq!(tensors[DOWN_PROJ]["params"]["bits"], 5);
    assert!(tensors[Q_PROJ].get("params").is_none(), "base parameters");

    let report = read_json(&rep);
    assert_eq!(
        report["tensor_params"],
        serde_json::json!(["down_proj=bits:5", "v_proj=bits:6,alpha:0.05"])
    );
    let entry = |name: &str| {
        report["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(entry(V_PROJ)["params"]["bits"], 6);
    assert!(entry(Q_PROJ).get("params").is_none());
    // 6-bit codes cost more than 4-bit ones.
    assert!(
        entry(V_PROJ)["bits_per_weight"].as_f64().unwrap()
            > entry(Q_PROJ)["bits_per_weight"].as_f64().unwrap() + 1.5
    );

    ok(&adpq(&["verify", p(&q)]));
    let d = tmp.path().join("d.safetensors");
    ok(&adpq(&["dequantize", p(&q), "-o", p(&d), "-q"]));
    let (orig, _) = read_st(&input);
    let (back, _) = read_st(&d);
    let e6 = rel_err(&orig[V_PROJ], &back[V_PROJ]);
    let e4 = rel_err(&orig[Q_PROJ], &back[Q_PROJ]);
    assert!(e6 < e4 / 4.0, "6 bits {e6} vs 4 bits {e4}");
}

/// An edit of a checkpoint's `__metadata__`.
type MetaEdit = fn(&mut std::collections::BTreeMap<String, String>);

/// A per-tensor record that disagrees with the packed header, a v2 tensor in a file
/// that claims version 1, and a version this build does not know are refused.
#[test]
fn per_tensor_metadata_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let input = llama_like(tmp.path());
    let q = tmp.path().join("q.safetensors");
    ok(&adpq(&[
        "quantize",
        p(&input),
        "-o",
        p(&q),
        "--preset",
        "v2-vproj6",
        "-q",
    ]));
    let cases: [(&str, MetaEdit, &[&str]); 4] = [
        (
            "record dropped",
            |m| {
                let mut t: Value = serde_json::from_str(&m["adpq.tensors"]).unwrap();
                t[V_PROJ].as_object_mut().unwrap().remove("params");
                m.insert("adpq.tensors".into(), t.to_string());
            },
            &["v_proj", "packed header (format v2, bits 6", "disagrees"],
        ),
        (
            "version 1 claimed",
            |m| {
                m.insert("adpq.version".into(), "1".into());
            },
            &["format v2", "adpq.version is 1"],
        ),
        (
            "unknown version",
            |m| {
                m.insert("adpq.version".into(), "4".into());
            },
            &["unsupported adpq format version \"4\"", "versions 1 to 3"],
        ),
        (
            "unknown format",
            |m| {
                let mut t: Value = serde_json::from_str(&m["adpq.params"]).unwrap();
                t["format"] = "v9".into();
                m.insert("adpq.params".into(), t.to_string());
            },
            &["unknown format `v9`"],
        ),
    ];
    for (what, edit, needles) in cases {
        let bad = tmp.path().join("bad.safetensors");
        rewrite_meta(&q, &bad, edit);
        eprintln!("case: {what}");
        fails(&adpq(&["verify", p(&bad)]), 1, needles);
        let d = tmp.path().join("d.safetensors");
        fails(
            &adpq(&["dequantize", p(&bad), "-o", p(&d), "-q"]),
            1,
            needles,
        );
        assert!(!d.exists(), "{what}: nothing written");
    }
}

#[test]
fn invalid_v2_combinations_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let input = llama_like(tmp.path());
    let q = tmp.path().join("q.safetensors");
    let run = |extra: &[&str]| {
        let mut args = vec!["quantize", p(&input), "-o", p(&q), "-q"];
        args.extend_from_slice(extra);
        adpq(&args)
    };
    fails(
        &run(&["--format", "v2", "--group-size", "256"]),
        2,
        &["--format v2", "below 256"],
    );
    fails(
        &run(&["--format", "v1", "--preset", "v2-vproj6"]),
        2,
        &["--format v1", "--preset"],
    );
    fails(
        &run(&["--format", "v2", "--tensor-params", "v_proj=bits:9"]),
        2,
        &["--tensor-params `v_proj=bits:9`"],
    );
    fails(
        &run(&["--tensor-params", "v_proj=rows:2"]),
        2,
        &["unknown key `rows`"],
    );
    assert!(!q.exists());
    // `--asymmetric` is implied by v2 and accepted with it; --group-size 255 is the edge.
    ok(&run(&[
        "--format",
        "v2",
        "--asymmetric",
        "--group-size",
        "255",
    ]));
    ok(&adpq(&["verify", p(&q)]));
}

/// Version 1 output keeps its metadata as before v2 existed: version `1`, no `format`
/// in `adpq.params`, no per-tensor records; `inspect` says v1.
#[test]
fn version_1_metadata_is_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let input = llama_like(tmp.path());
    let q = tmp.path().join("q.safetensors");
    ok(&adpq(&[
        "quantize",
        p(&input),
        "-o",
        p(&q),
        "--format",
        "v1",
        "-q",
    ]));
    let (_, meta) = read_st(&q);
    assert_eq!(meta["adpq.version"], "1");
    assert_eq!(
        meta["adpq.params"],
        r#"{"bits":4,"group_size":128,"alpha":0.06,"grid":"symmetric","selection":"exact"}"#
    );
    assert!(!meta["adpq.tensors"].contains("params"));
    let ins = json(&adpq(&["inspect", p(&q), "--json"]));
    assert_eq!(inspected(&ins, Q_PROJ)["version"], 1);
}

fn minilm() -> Option<PathBuf> {
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/data/minilm/model.safetensors");
    if input.exists() {
        return Some(input);
    }
    if std::env::var_os("ADPQ_REQUIRE_DATA").is_some_and(|v| v == "1") {
        panic!("ADPQ_REQUIRE_DATA=1 but {} is absent", input.display());
    }
    eprintln!("SKIP: {} absent (run `cargo xtask fetch`)", input.display());
    None
}

/// The real MiniLM checkpoint (F32 BERT) in format v2: it verifies, inspects as v2,
/// dequantizes with every untouched tensor byte-identical, and its relative squared
/// error is below version 1's at the defaults (docs/FORMAT-v2.md: about −36 %).
#[test]
fn real_minilm_v2() {
    let Some(input) = minilm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let quantize = |name: &str, extra: &[&str]| {
        let (q, rep) = (
            tmp.path().join(format!("{name}.safetensors")),
            tmp.path().join(format!("{name}.json")),
        );
        let mut args = vec![
            "quantize",
            p(&input),
            "-o",
            p(&q),
            "--report",
            p(&rep),
            "-q",
        ];
        args.extend_from_slice(extra);
        ok(&adpq(&args));
        (q, read_json(&rep))
    };
    let (q2, r2) = quantize("v2", &["--format", "v2"]);
    let (_, r1) = quantize("v1", &["--format", "v1"]);
    let (e1, e2) = (
        r1["totals"]["rel_mse"].as_f64().unwrap(),
        r2["totals"]["rel_mse"].as_f64().unwrap(),
    );
    eprintln!("MiniLM relative MSE: v1 {e1:.5}, v2 {e2:.5}");
    assert!(e2 < 0.8 * e1, "v2 {e2} vs v1 {e1}");
    assert_eq!(r2["totals"]["worse_than_rtn"], 0);

    ok(&adpq(&["verify", p(&q2)]));
    let ins = json(&adpq(&["inspect", p(&q2), "--json"]));
    let quantized: Vec<&Value> = ins["files"][0]["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t.get("bits").is_some())
        .collect();
    assert!(!quantized.is_empty());
    assert!(quantized
        .iter()
        .all(|t| t["version"] == 2 && t["group_size"] == 64));

    let d = tmp.path().join("d.safetensors");
    ok(&adpq(&["dequantize", p(&q2), "-o", p(&d), "-q"]));
    let (orig, _) = read_st(&input);
    let (back, _) = read_st(&d);
    assert_eq!(orig.len(), back.len());
    for (name, t) in &orig {
        let b = &back[name];
        assert_eq!((t.0, &t.1), (b.0, &b.1), "{name}");
        if quantized.iter().any(|q| q["name"] == name.as_str()) {
            assert!(rel_err(t, b) < 0.02, "{name}");
        } else {
            assert!(t.2 == b.2, "{name} changed");
        }
    }
}
