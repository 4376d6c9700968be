//! Integration tests of the `adpq` binary on synthetic checkpoints (written here with the
//! `safetensors` crate) and, when `scripts/data/fetch.sh` has run, on real ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

fn adpq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adpq"))
        .args(args)
        .output()
        .expect("run adpq")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "adpq failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A clean failure: the exit code, a one-line `adpq: error:` message containing every
/// `needle`, and no panic.
fn fails(out: &Output, code: i32, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "stderr:\n{err}");
    assert!(!err.contains("panicked"), "panic:\n{err}");
    if code == 1 {
        assert!(err.contains("adpq: error:"), "{err}");
    }
    for n in needles {
        assert!(err.contains(n), "stderr lacks `{n}`:\n{err}");
    }
    err
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let u = ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
        // Roughly Laplacian-ish tails, like real weights.
        if (self.0 >> 16).is_multiple_of(53) {
            u * 8.0 * 0.02
        } else {
            u * 0.02
        }
    }
}

type Tensor = (String, Dtype, Vec<usize>, Vec<u8>);

fn floats(name: &str, dtype: Dtype, shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut g = Lcg(seed);
    let vals: Vec<f32> = (0..n).map(|_| g.next()).collect();
    let bytes = match dtype {
        Dtype::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F16 => vals
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        Dtype::BF16 => vals
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
        _ => unreachable!(),
    };
    (name.into(), dtype, shape.to_vec(), bytes)
}

fn write_st(path: &Path, tensors: &[Tensor], meta: &[(&str, &str)]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let meta: Option<std::collections::HashMap<String, String>> = (!meta.is_empty()).then(|| {
        meta.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    });
    safetensors::serialize_to_file(views, meta, path).unwrap();
}

type Loaded = (
    BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
    BTreeMap<String, String>,
);

fn read_st(path: &Path) -> Loaded {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, (t.dtype(), t.shape().to_vec(), t.data().to_vec())))
        .collect();
    let meta = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    (tensors, meta)
}

fn to_f32(dtype: Dtype, b: &[u8]) -> Vec<f32> {
    match dtype {
        Dtype::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => panic!("not float"),
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The synthetic model: odd row lengths (576, 1000), three float dtypes, and tensors that
/// must pass through (1-D, I64, embeddings, LM head).
fn synthetic_model() -> Vec<Tensor> {
    let ids: Vec<u8> = (0..16i64).flat_map(|i| i.to_le_bytes()).collect();
    vec![
        floats(
            "model.layers.0.self_attn.q_proj.weight",
            Dtype::F32,
            &[24, 576],
            1,
        ),
        floats(
            "model.layers.0.mlp.up_proj.weight",
            Dtype::F16,
            &[10, 1000],
            2,
        ),
        floats(
            "model.layers.0.mlp.down_proj.weight",
            Dtype::BF16,
            &[16, 256],
            3,
        ),
        floats(
            "model.layers.0.input_layernorm.weight",
            Dtype::F32,
            &[576],
            4,
        ),
        floats("model.embed_tokens.weight", Dtype::F32, &[10, 64], 5),
        floats("lm_head.weight", Dtype::F32, &[10, 64], 6),
        ("position_ids".into(), Dtype::I64, vec![1, 16], ids),
    ]
}

const QUANTIZED: [&str; 3] = [
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.mlp.up_proj.weight",
    "model.layers.0.mlp.down_proj.weight",
];

#[test]
fn synthetic_roundtrip_odd_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("model.safetensors");
    let model = synthetic_model();
    write_st(&input, &model, &[("format", "pt")]);
    let before = std::fs::read(&input).unwrap();
    let q = dir.path().join("q.safetensors");
    let report = dir.path().join("report.json");
    let out = adpq(&[
        "quantize",
        p(&input),
        "-o",
        p(&q),
        "--report",
        p(&report),
        "-q",
    ]);
    ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("relative MSE: AdpQ"), "{stdout}");
    assert_eq!(std::fs::read(&input).unwrap(), before, "input modified");

    // The report.
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["totals"]["converted"], 3);
    assert_eq!(r["totals"]["passthrough"], 4);
    for t in r["tensors"].as_array().unwrap() {
        if t["action"] == "quantized" {
            let (a, b) = (
                t["rel_mse"].as_f64().unwrap(),
                t["rtn_rel_mse"].as_f64().unwrap(),
            );
            assert!(a > 0.0 && a <= b, "{}: AdpQ {a} vs RTN {b}", t["name"]);
            assert!(t["sqnr_db"].as_f64().unwrap() > 15.0);
        }
    }

    // The quantized file.
    let (tensors, meta) = read_st(&q);
    assert_eq!(meta["format"], "adpq");
    assert_eq!(meta["adpq.original_format"], "pt");
    assert_eq!(meta["adpq.version"], "1");
    let params: Value = serde_json::from_str(&meta["adpq.params"]).unwrap();
    assert_eq!(params["bits"], 4);
    assert_eq!(params["group_size"], 128);
    let originals: Value = serde_json::from_str(&meta["adpq.tensors"]).unwrap();
    assert_eq!(
        originals["model.layers.0.mlp.up_proj.weight"]["dtype"],
        "F16"
    );
    for (name, dtype, shape, bytes) in &model {
        let (d, s, b) = &tensors[name];
        if QUANTIZED.contains(&name.as_str()) {
            assert_eq!(*d, Dtype::U8);
            assert_eq!(s.len(), 1);
            let t = adpq_core::PackedTensor::parse(b).unwrap();
            assert_eq!([t.rows(), t.cols()], [shape[0], shape[1]]);
        } else {
            assert_eq!(
                (d, s, b),
                (dtype, shape, bytes),
                "{name} not passed through"
            );
        }
    }

    // inspect, verify.
    let out = adpq(&["inspect", p(&q)]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("7 tensors, 3 quantized"));
    let out = adpq(&["inspect", "--json", p(&q)]);
    ok(&out);
    let ins: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ins["quantized"], 3);
    ok(&adpq(&["verify", p(&q)]));

    // Dequantize: original dtypes, shapes and metadata are back; values are close.
    let d = dir.path().join("d.safetensors");
    ok(&adpq(&["dequantize", p(&q), "-o", p(&d), "-q"]));
    let (back, meta) = read_st(&d);
    assert_eq!(meta.get("format").map(String::as_str), Some("pt"));
    assert!(!meta.keys().any(|k| k.starts_with("adpq")));
    for (name, dtype, shape, bytes) in &model {
        let (d, s, b) = &back[name];
        assert_eq!((d, s), (dtype, shape), "{name}");
        if QUANTIZED.contains(&name.as_str()) {
            let (w, v) = (to_f32(*dtype, bytes), to_f32(*d, b));
            let err: f64 = w
                .iter()
                .zip(&v)
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum();
            let sig: f64 = w.iter().map(|a| f64::from(*a).powi(2)).sum();
            assert!(err / sig < 0.02, "{name}: rel MSE {}", err / sig);
        } else {
            assert_eq!(b, bytes, "{name}");
        }
    }
    // --dtype overrides.
    let d32 = dir.path().join("d32.safetensors");
    ok(&adpq(&[
        "dequantize",
        p(&q),
        "-o",
        p(&d32),
        "--dtype",
        "f32",
        "-q",
    ]));
    let (back, _) = read_st(&d32);
    for name in QUANTIZED {
        assert_eq!(back[name].0, Dtype::F32);
    }
    // Nothing else was left in the folder.
    assert_eq!(
        names_in(dir.path()),
        [
            "d.safetensors",
            "d32.safetensors",
            "model.safetensors",
            "q.safetensors",
            "report.json"
        ]
    );
    assert_eq!(std::fs::read(&input).unwrap(), before, "input modified");
}

#[test]
fn output_is_identical_for_any_thread_count_and_backend() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("m.safetensors");
    write_st(&input, &synthetic_model(), &[]);
    let mut outputs = Vec::new();
    for (threads, backend) in [
        ("1", "scalar"),
        ("2", "scalar"),
        ("3", "scalar"),
        ("1", "auto"),
        ("2", "auto"),
    ] {
        let o = dir.path().join(format!("q{threads}{backend}.safetensors"));
        ok(&adpq(&[
            "quantize",
            p(&input),
            "-o",
            p(&o),
            "--threads",
            threads,
            "--backend",
            backend,
            "-q",
        ]));
        outputs.push((threads, backend, std::fs::read(&o).unwrap()));
    }
    for (t, b, bytes) in &outputs[1..] {
        assert!(
            *bytes == outputs[0].2,
            "threads {t}, backend {b} differ from 1 thread scalar"
        );
    }
}

#[test]
fn options_dry_run_include_exclude_asymmetric() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("m.safetensors");
    write_st(&input, &synthetic_model(), &[]);
    // Dry run: a plan, no output.
    let out = adpq(&[
        "quantize",
        p(&input),
        "--dry-run",
        "--include",
        "embed|proj",
        "--exclude",
        "down",
    ]);
    ok(&out);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("dry run"), "{s}");
    assert!(s.contains("quantized 3 of 7"), "{s}");
    assert_eq!(names_in(dir.path()), ["m.safetensors"]);
    // Asymmetric 3-bit, group 64, JSON report.
    let q = dir.path().join("q.safetensors");
    let rep = dir.path().join("r.json");
    ok(&adpq(&[
        "quantize",
        p(&input),
        "-o",
        p(&q),
        "--bits",
        "3",
        "--group-size",
        "64",
        "--asymmetric",
        "--alpha",
        "0.03",
        "--report",
        p(&rep),
        "-q",
    ]));
    let r: Value = serde_json::from_slice(&std::fs::read(&rep).unwrap()).unwrap();
    assert_eq!(r["params"]["grid"], "asymmetric");
    assert_eq!(r["params"]["bits"], 3);
    ok(&adpq(&["verify", p(&q)]));
    let out = adpq(&["inspect", p(&q)]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("adpq b3 g64 asymmetric"));
    // Reference-compatible selection.
    let q2 = dir.path().join("q2.safetensors");
    ok(&adpq(&[
        "quantize",
        p(&input),
        "-o",
        p(&q2),
        "--reference-iters",
        "100",
        "-q",
    ]));
    ok(&adpq(&["verify", p(&q2)]));
}

fn sharded(dir: &Path) -> Vec<Tensor> {
    let model = synthetic_model();
    let (a, b) = model.split_at(3);
    write_st(
        &dir.join("model-00001-of-00002.safetensors"),
        a,
        &[("format", "pt")],
    );
    write_st(
        &dir.join("model-00002-of-00002.safetensors"),
        b,
        &[("format", "pt")],
    );
    let mut map = serde_json::Map::new();
    for (i, part) in [a, b].iter().enumerate() {
        for t in part.iter() {
            map.insert(
                t.0.clone(),
                format!("model-0000{}-of-00002.safetensors", i + 1).into(),
            );
        }
    }
    let total: usize = model.iter().map(|t| t.3.len()).sum();
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("config.json"), "{\"hidden_size\": 576}").unwrap();
    model
}

#[test]
fn sharded_checkpoint_roundtrip() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let model = sharded(&src);
    let q = tmp.path().join("q");
    ok(&adpq(&["quantize", p(&src), "-o", p(&q), "-q"]));
    assert_eq!(
        names_in(&q),
        [
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json"
        ]
    );
    let index: Value =
        serde_json::from_slice(&std::fs::read(q.join("model.safetensors.index.json")).unwrap())
            .unwrap();
    let mut total = 0u64;
    for shard in [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        let (t, meta) = read_st(&q.join(shard));
        assert_eq!(meta["format"], "adpq");
        total += t.values().map(|x| x.2.len() as u64).sum::<u64>();
        for name in t.keys() {
            assert_eq!(index["weight_map"][name], shard);
        }
    }
    assert_eq!(index["metadata"]["total_size"], total);
    ok(&adpq(&["verify", p(&q)]));
    // The index file works as an input too.
    ok(&adpq(&[
        "inspect",
        p(&q.join("model.safetensors.index.json")),
    ]));

    // An existing non-empty output folder needs --force.
    let out = adpq(&["quantize", p(&src), "-o", p(&q), "-q"]);
    fails(&out, 2, &["--force"]);
    ok(&adpq(&["quantize", p(&src), "-o", p(&q), "-q", "--force"]));

    let d = tmp.path().join("d");
    ok(&adpq(&["dequantize", p(&q), "-o", p(&d), "-q"]));
    let mut seen = 0;
    for shard in [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        let (t, meta) = read_st(&d.join(shard));
        assert_eq!(meta["format"], "pt");
        for (name, (dt, s, b)) in &t {
            let orig = model.iter().find(|m| &m.0 == name).unwrap();
            assert_eq!((dt, s), (&orig.1, &orig.2));
            if !QUANTIZED.contains(&name.as_str()) {
                assert_eq!(b, &orig.3, "{name}");
            }
            seen += 1;
        }
    }
    assert_eq!(seen, model.len());
    assert_eq!(names_in(tmp.path()), ["d", "q", "src"]);
}

/// Runs a quantize that must fail, checking the error, that nothing is left in the
/// output folder, and that the input is unchanged.
fn quantize_fails(input: &Path, out_dir: &Path, needles: &[&str]) -> String {
    let before = std::fs::read(input).ok();
    let listing = names_in(out_dir);
    let out = out_dir.join("out.safetensors");
    let err = fails(&adpq(&["quantize", p(input), "-o", p(&out)]), 1, needles);
    assert_eq!(
        names_in(out_dir),
        listing,
        "output or temporary left behind"
    );
    assert_eq!(std::fs::read(input).ok(), before, "input modified");
    err
}

fn raw_file(path: &Path, header: &str, data_len: usize) {
    let mut h = header.as_bytes().to_vec();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&h);
    bytes.extend(std::iter::repeat_n(0u8, data_len));
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn bad_inputs_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = tmp.path().join("in");
    let outs = tmp.path().join("out");
    std::fs::create_dir_all(&inputs).unwrap();
    std::fs::create_dir_all(&outs).unwrap();
    let good = inputs.join("good.safetensors");
    write_st(&good, &synthetic_model(), &[]);
    let good_bytes = std::fs::read(&good).unwrap();

    // Truncated file.
    let f = inputs.join("truncated.safetensors");
    std::fs::write(&f, &good_bytes[..good_bytes.len() - 100]).unwrap();
    quantize_fails(
        &f,
        &outs,
        &["truncated.safetensors", "not a valid safetensors file"],
    );
    // Shorter than the length prefix; empty; garbage header.
    let f = inputs.join("tiny.safetensors");
    std::fs::write(&f, b"abc").unwrap();
    quantize_fails(&f, &outs, &["tiny.safetensors"]);
    std::fs::write(&f, b"").unwrap();
    quantize_fails(&f, &outs, &["tiny.safetensors"]);
    std::fs::write(&f, [0xFFu8; 64]).unwrap();
    quantize_fails(&f, &outs, &["tiny.safetensors"]);
    // Header lying about offsets: beyond the data, overlapping, or a gap.
    let f = inputs.join("lying.safetensors");
    raw_file(
        &f,
        r#"{"a.weight":{"dtype":"F32","shape":[16,16],"data_offsets":[0,1024]}}"#,
        512,
    );
    quantize_fails(&f, &outs, &["lying.safetensors"]);
    raw_file(
        &f,
        r#"{"a.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[8,24]}}"#,
        24,
    );
    quantize_fails(&f, &outs, &["lying.safetensors"]);
    raw_file(
        &f,
        r#"{"a.weight":{"dtype":"F32","shape":[4,4],"data_offsets":[0,32]}}"#,
        32,
    );
    quantize_fails(&f, &outs, &["lying.safetensors"]);
    // Unknown dtype.
    let f = inputs.join("dtype.safetensors");
    raw_file(
        &f,
        r#"{"a.weight":{"dtype":"Q9","shape":[2,2],"data_offsets":[0,16]}}"#,
        16,
    );
    quantize_fails(&f, &outs, &["dtype.safetensors"]);
    // NaN and infinite weights: the error names file, tensor, row and column.
    for (name, v) in [("nan", f32::NAN), ("inf", f32::NEG_INFINITY)] {
        let mut model = synthetic_model();
        let (_, _, _, bytes) = &mut model[0];
        let at = (3 * 576 + 17) * 4;
        bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let f = inputs.join(format!("{name}.safetensors"));
        write_st(&f, &model, &[]);
        quantize_fails(
            &f,
            &outs,
            &[
                &format!("{name}.safetensors"),
                "model.layers.0.self_attn.q_proj.weight",
                "row 3, column 17",
            ],
        );
    }
    // Missing input.
    quantize_fails(
        &inputs.join("missing.safetensors"),
        &outs,
        &["missing.safetensors"],
    );
    // Output in a missing folder.
    let err = fails(
        &adpq(&[
            "quantize",
            p(&good),
            "-o",
            p(&tmp.path().join("nope/x/out.safetensors")),
        ]),
        1,
        &["nope"],
    );
    assert!(err.contains("does not exist"), "{err}");
    // Output in a read-only folder (as root, permissions do not bind: use /proc then).
    let ro = tmp.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let mut perms = std::fs::metadata(&ro).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&ro, perms).unwrap();
    let probe = ro.join("probe");
    let ro_target = if std::fs::write(&probe, b"x").is_ok() {
        std::fs::remove_file(&probe).unwrap();
        eprintln!("NOTE: running as root, using /proc as the read-only output folder");
        PathBuf::from("/proc/adpq-test-out.safetensors")
    } else {
        ro.join("out.safetensors")
    };
    fails(&adpq(&["quantize", p(&good), "-o", p(&ro_target)]), 1, &[]);
    assert!(!ro_target.exists());
    assert_eq!(names_in(&ro), Vec::<String>::new());
    // Dequantize/verify of a file that is not an adpq checkpoint.
    fails(
        &adpq(&["dequantize", p(&good), "-o", p(&outs.join("d.safetensors"))]),
        1,
        &["not an adpq checkpoint"],
    );
    fails(&adpq(&["verify", p(&good)]), 1, &["not an adpq checkpoint"]);
    assert_eq!(names_in(&outs), Vec::<String>::new());
    assert_eq!(std::fs::read(&good).unwrap(), good_bytes);
}

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

#[test]
fn usage_errors_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("m.safetensors");
    write_st(&input, &synthetic_model(), &[]);
    let o = tmp.path().join("o.safetensors");
    fails(
        &adpq(&["quantize", p(&input), "-o", p(&o), "--bits", "9"]),
        2,
        &["bits"],
    );
    fails(
        &adpq(&["quantize", p(&input), "-o", p(&o), "--group-size", "8"]),
        2,
        &["group size"],
    );
    fails(
        &adpq(&["quantize", p(&input), "-o", p(&o), "--alpha", "0.9"]),
        2,
        &["alpha"],
    );
    fails(
        &adpq(&["quantize", p(&input), "-o", p(&o), "--include", "("]),
        2,
        &["--include"],
    );
    fails(
        &adpq(&["quantize", p(&input), "-o", p(&o), "--backend", "sse9"]),
        2,
        &["sse9"],
    );
    fails(&adpq(&["quantize", p(&input)]), 2, &["--output"]);
    fails(
        &adpq(&["quantize", p(&input), "-o", p(&input)]),
        2,
        &["is the input"],
    );
    fails(&adpq(&["frobnicate"]), 2, &[]);
    fails(&adpq(&[]), 2, &[]);
    ok(&adpq(&["--help"]));
    assert_eq!(names_in(tmp.path()), ["m.safetensors"]);
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/data")
}

/// Real checkpoints are fetched by `cargo xtask fetch`. Without them a test says so and
/// returns, unless `ADPQ_REQUIRE_DATA=1` (set by `.ci/run`), where absence is a failure.
fn skip_missing_data(input: &Path) {
    let hint = format!("{} absent (run `cargo xtask fetch`)", input.display());
    if std::env::var_os("ADPQ_REQUIRE_DATA").is_some_and(|v| v == "1") {
        panic!("ADPQ_REQUIRE_DATA=1 but {hint}");
    }
    eprintln!("SKIP: {hint}");
}

/// Quantizes a real checkpoint with a report, checks that AdpQ beats RTN overall and on
/// every tensor and that the output verifies; returns the temp dir, the output path and
/// the report.
fn quantize_real(input: &Path, label: &str) -> (tempfile::TempDir, PathBuf, Value) {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("q.safetensors");
    let rep = tmp.path().join("r.json");
    ok(&adpq(&[
        "quantize",
        p(input),
        "-o",
        p(&q),
        "--report",
        p(&rep),
        "-q",
    ]));
    let r: Value = serde_json::from_slice(&std::fs::read(&rep).unwrap()).unwrap();
    let (a, b) = (
        r["totals"]["rel_mse"].as_f64().unwrap(),
        r["totals"]["rtn_rel_mse"].as_f64().unwrap(),
    );
    eprintln!("{label} relative MSE: AdpQ {a:.4e}, RTN {b:.4e}");
    assert!(a < b);
    assert_eq!(r["totals"]["worse_than_rtn"], 0);
    ok(&adpq(&["verify", p(&q)]));
    (tmp, q, r)
}

/// MiniLM (real F32 BERT checkpoint, 104 tensors incl. one I64): the round trip keeps
/// every untouched tensor byte-identical, and AdpQ beats RTN.
#[test]
fn real_minilm_roundtrip() {
    let input = data_dir().join("minilm/model.safetensors");
    if !input.exists() {
        skip_missing_data(&input);
        return;
    }
    let (tmp, q, r) = quantize_real(&input, "MiniLM");
    let d = tmp.path().join("d.safetensors");
    ok(&adpq(&["dequantize", p(&q), "-o", p(&d), "-q"]));
    let (orig, _) = read_st(&input);
    let (back, _) = read_st(&d);
    assert_eq!(orig.len(), 104);
    assert_eq!(back.len(), 104);
    let quantized: Vec<&str> = r["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["action"] == "quantized")
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(!quantized.is_empty());
    let mut i64_seen = false;
    for (name, (d, s, bytes)) in &orig {
        let (d2, s2, b2) = &back[name];
        assert_eq!((d, s), (d2, s2), "{name}");
        if *d == Dtype::I64 {
            i64_seen = true;
        }
        if !quantized.contains(&name.as_str()) {
            assert!(bytes == b2, "{name} changed");
        }
    }
    assert!(i64_seen);
}

#[test]
fn real_minilm_sharded() {
    let input = data_dir().join("minilm-sharded");
    if !input.join("model.safetensors.index.json").exists() {
        skip_missing_data(&input);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("q");
    ok(&adpq(&[
        "quantize",
        p(&input),
        "-o",
        p(&q),
        "-q",
        "--no-stats",
    ]));
    assert_eq!(names_in(&q), names_in(&input));
    ok(&adpq(&["verify", p(&q)]));
    // Same tensors, same bytes as quantizing the single file.
    let single = data_dir().join("minilm/model.safetensors");
    if single.exists() {
        let qs = tmp.path().join("single.safetensors");
        ok(&adpq(&[
            "quantize",
            p(&single),
            "-o",
            p(&qs),
            "-q",
            "--no-stats",
        ]));
        let (one, _) = read_st(&qs);
        let mut n = 0;
        for f in names_in(&q).iter().filter(|f| f.ends_with(".safetensors")) {
            for (name, t) in read_st(&q.join(f)).0 {
                assert!(one[&name] == t, "{name}");
                n += 1;
            }
        }
        assert_eq!(n, one.len());
    }
}

/// A writer that does not pad its header leaves the data misaligned for f32: the weights
/// are then copied, and the result is the same as for an aligned file.
#[test]
fn misaligned_data_and_folder_without_index() {
    let tmp = tempfile::tempdir().unwrap();
    let (name, _, shape, data) = floats("blk.weight", Dtype::F32, &[4, 160], 11);
    let mut header = format!(
        r#"{{"blk.weight":{{"dtype":"F32","shape":[{},{}],"data_offsets":[0,{}]}}}}"#,
        shape[0],
        shape[1],
        data.len()
    );
    while (8 + header.len()) % 4 != 2 {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&data);
    let odd = tmp.path().join("odd.safetensors");
    std::fs::write(&odd, &bytes).unwrap();
    let aligned = tmp.path().join("aligned.safetensors");
    write_st(&aligned, &[(name.clone(), Dtype::F32, shape, data)], &[]);
    let (q1, q2) = (
        tmp.path().join("q1.safetensors"),
        tmp.path().join("q2.safetensors"),
    );
    ok(&adpq(&["quantize", p(&odd), "-o", p(&q1), "-q"]));
    ok(&adpq(&["quantize", p(&aligned), "-o", p(&q2), "-q"]));
    assert!(read_st(&q1).0[&name] == read_st(&q2).0[&name]);

    // A folder with one unsharded file and a config: same layout out.
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    write_st(&src.join("model.safetensors"), &synthetic_model(), &[]);
    std::fs::write(src.join("config.json"), "{}").unwrap();
    let out = tmp.path().join("out");
    ok(&adpq(&["quantize", p(&src), "-o", p(&out), "-q"]));
    assert_eq!(names_in(&out), ["config.json", "model.safetensors"]);
    // Output inside the input folder is refused.
    fails(
        &adpq(&["quantize", p(&src), "-o", p(&src.join("q"))]),
        2,
        &["is the input"],
    );
}

/// SmolLM2-135M (272 tensors, rows of 576 = 4·128 + 64): AdpQ beats RTN on every
/// quantized tensor. Slow in a debug build: `cargo test -p adpq --release -- --ignored`.
#[test]
#[ignore = "about 100 M weights; run with --release -- --ignored"]
fn real_smollm2_beats_rtn() {
    let input = data_dir().join("smollm2/model.safetensors");
    if !input.exists() {
        skip_missing_data(&input);
        return;
    }
    quantize_real(&input, "SmolLM2");
}

#[test]
fn hostile_index_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    sharded(&src);
    let index = src.join("model.safetensors.index.json");
    let good = std::fs::read_to_string(&index).unwrap();
    let cases = [
        // A shard outside the folder.
        good.replacen("model-00001-of-00002.safetensors", "../evil.safetensors", 1),
        // A missing shard.
        good.replace(
            "model-00002-of-00002.safetensors",
            "model-00009-of-00002.safetensors",
        ),
        // Not JSON.
        "{ not json".to_string(),
        // No weight_map.
        "{}".to_string(),
    ];
    let out = tmp.path().join("out");
    for case in cases {
        std::fs::write(&index, &case).unwrap();
        fails(&adpq(&["quantize", p(&src), "-o", p(&out)]), 1, &["model"]);
        assert!(!out.exists());
        assert_eq!(names_in(tmp.path()), ["src"]);
    }
    // A report path in a missing folder is refused before any work.
    std::fs::write(&index, &good).unwrap();
    fails(
        &adpq(&[
            "quantize",
            p(&src),
            "-o",
            p(&out),
            "--report",
            "/nonexistent/r.json",
        ]),
        2,
        &["--report"],
    );
    assert!(!out.exists());
}

/// An output folder that holds the input (its parent, or any ancestor) is refused, even
/// with `--force`: replacing it would delete the input and its neighbours.
#[test]
fn output_holding_the_input_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let outer = tmp.path().join("outer");
    let model = outer.join("model");
    std::fs::create_dir_all(&model).unwrap();
    write_st(&model.join("model.safetensors"), &synthetic_model(), &[]);
    std::fs::write(model.join("config.json"), "{}").unwrap();
    std::fs::write(outer.join("keep.txt"), "precious").unwrap();
    let q = outer.join("q");
    ok(&adpq(&["quantize", p(&model), "-o", p(&q), "-q"]));
    let listing = |d: &Path| (names_in(d), names_in(&d.join("model")));
    let before = listing(&outer);
    for target in [&outer, tmp.path()] {
        fails(
            &adpq(&["quantize", p(&model), "-o", p(target), "--force", "-q"]),
            2,
            &["is the input"],
        );
        fails(
            &adpq(&["dequantize", p(&q), "-o", p(target), "--force", "-q"]),
            2,
            &["is the input"],
        );
        // Through the index-less folder given as a path with `..` in it, too.
        fails(
            &adpq(&[
                "quantize",
                p(&model),
                "-o",
                p(&model.join("..")),
                "--force",
                "-q",
            ]),
            2,
            &["is the input"],
        );
        assert_eq!(listing(&outer), before);
    }
    // A single-file input: its folder is not a valid output either.
    let single = model.join("model.safetensors");
    fails(
        &adpq(&["quantize", p(&single), "-o", p(&model), "--force"]),
        2,
        &[],
    );
    assert_eq!(listing(&outer), before);
    assert_eq!(
        std::fs::read_to_string(outer.join("keep.txt")).unwrap(),
        "precious"
    );
}

/// `--report` may not name the input, a file in the input folder, the output or a file
/// in the output folder: the JSON would replace it.
#[test]
fn report_path_must_not_overwrite_input_or_output() {
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim.safetensors");
    write_st(&victim, &synthetic_model(), &[]);
    let bytes = std::fs::read(&victim).unwrap();
    let q = tmp.path().join("q.safetensors");
    let quant = |report: &Path, out: &Path| {
        adpq(&[
            "quantize",
            p(&victim),
            "-o",
            p(out),
            "--report",
            p(report),
            "-q",
        ])
    };
    fails(&quant(&victim, &q), 2, &["--report", "input"]);
    fails(&quant(&q, &q), 2, &["--report", "output"]);
    // A relative spelling of the same file is caught too.
    let out = Command::new(env!("CARGO_BIN_EXE_adpq"))
        .current_dir(tmp.path())
        .args([
            "quantize",
            "victim.safetensors",
            "-o",
            "q.safetensors",
            "--report",
            "./victim.safetensors",
        ])
        .output()
        .unwrap();
    fails(&out, 2, &["--report", "input"]);
    assert_eq!(std::fs::read(&victim).unwrap(), bytes);
    assert_eq!(names_in(tmp.path()), ["victim.safetensors"]);

    ok(&adpq(&["quantize", p(&victim), "-o", p(&q), "-q"]));
    let qbytes = std::fs::read(&q).unwrap();
    let d = tmp.path().join("d.safetensors");
    let deq = |report: &Path| {
        adpq(&[
            "dequantize",
            p(&q),
            "-o",
            p(&d),
            "--report",
            p(report),
            "-q",
        ])
    };
    fails(&deq(&q), 2, &["--report", "input"]);
    fails(&deq(&d), 2, &["--report", "output"]);
    assert_eq!(std::fs::read(&q).unwrap(), qbytes);
    assert!(!d.exists());

    // Folders: nothing inside the input folder or the output folder.
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    write_st(&src.join("model.safetensors"), &synthetic_model(), &[]);
    std::fs::write(src.join("config.json"), "{}").unwrap();
    let dst = tmp.path().join("dst");
    for (report, what) in [
        (src.join("config.json"), "input"),
        (src.join("new.json"), "input"),
        (dst.join("r.json"), "output"),
    ] {
        if what == "output" {
            std::fs::create_dir_all(&dst).unwrap();
        }
        fails(
            &adpq(&[
                "quantize",
                p(&src),
                "-o",
                p(&dst),
                "--report",
                p(&report),
                "-q",
            ]),
            2,
            &["--report", what],
        );
    }
    assert_eq!(names_in(&src), ["config.json", "model.safetensors"]);
    assert_eq!(
        std::fs::read_to_string(src.join("config.json")).unwrap(),
        "{}"
    );
    // Beside them is fine.
    let r = tmp.path().join("r.json");
    ok(&adpq(&[
        "quantize",
        p(&src),
        "-o",
        p(&dst),
        "--report",
        p(&r),
        "-q",
    ]));
    assert!(r.is_file());
}

/// A Hugging Face hub snapshot: a folder whose files are symlinks into a blob folder.
/// The links are followed (the output holds copies), and the blob folder is not a valid
/// output (it holds the input's files).
#[cfg(unix)]
#[test]
fn folder_of_symlinks_like_the_hub_cache() {
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().unwrap();
    let blobs = tmp.path().join("blobs");
    let snap = tmp.path().join("snapshots/abc123");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    write_st(&blobs.join("1111"), &synthetic_model(), &[]);
    std::fs::write(blobs.join("2222"), r#"{"model_type":"llama"}"#).unwrap();
    std::fs::write(blobs.join("3333"), "tokens").unwrap();
    symlink("../../blobs/1111", snap.join("model.safetensors")).unwrap();
    symlink("../../blobs/2222", snap.join("config.json")).unwrap();
    symlink(blobs.join("3333"), snap.join("tokenizer.json")).unwrap();

    let out = tmp.path().join("out");
    ok(&adpq(&["quantize", p(&snap), "-o", p(&out), "-q"]));
    assert_eq!(
        names_in(&out),
        ["config.json", "model.safetensors", "tokenizer.json"]
    );
    for n in names_in(&out) {
        let m = std::fs::symlink_metadata(out.join(&n)).unwrap();
        assert!(m.file_type().is_file(), "{n} is not a regular file");
    }
    assert_eq!(
        std::fs::read_to_string(out.join("config.json")).unwrap(),
        r#"{"model_type":"llama"}"#
    );
    assert_eq!(read_st(&out.join("model.safetensors")).1["format"], "adpq");
    ok(&adpq(&["verify", p(&out)]));
    ok(&adpq(&["inspect", p(&snap)]));

    // Replacing the blob folder (or the cache root) would delete the input's data.
    for target in [&blobs, tmp.path()] {
        fails(
            &adpq(&["quantize", p(&snap), "-o", p(target), "--force", "-q"]),
            2,
            &["is the input"],
        );
    }
    assert_eq!(names_in(&blobs), ["1111", "2222", "3333"]);
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

/// A tensor that packing would not shrink (e.g. `[1000, 1]`: one group and its scales
/// per weight) is passed through unchanged, with the reason in the report.
#[test]
fn tensors_that_would_grow_pass_through() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("m.safetensors");
    let mut model = synthetic_model();
    model.push(floats("narrow.weight", Dtype::F32, &[1000, 1], 7));
    model.push(floats("narrow_bf16.weight", Dtype::BF16, &[300, 2], 8));
    write_st(&input, &model, &[]);
    let q = tmp.path().join("q.safetensors");
    let rep = tmp.path().join("r.json");
    let out = adpq(&["quantize", p(&input), "-o", p(&q), "--report", p(&rep)]);
    ok(&out);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("passthrough (packing would not shrink it)"),
        "{table}"
    );
    let (tensors, meta) = read_st(&q);
    let r: Value = serde_json::from_slice(&std::fs::read(&rep).unwrap()).unwrap();
    for name in ["narrow.weight", "narrow_bf16.weight"] {
        let orig = model.iter().find(|t| t.0 == name).unwrap();
        let t = &tensors[name];
        assert_eq!((t.0, &t.1), (orig.1, &orig.2), "{name}");
        assert!(t.2 == orig.3, "{name} bytes changed");
        let e = r["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap();
        assert_eq!(e["action"], "passthrough");
        assert_eq!(e["reason"], "packing would not shrink it");
        assert!(!meta["adpq.tensors"].contains(name));
    }
    for name in QUANTIZED {
        assert_eq!(tensors[name].0, Dtype::U8, "{name}");
    }
    assert_eq!(r["totals"]["converted"], QUANTIZED.len());
    ok(&adpq(&["verify", p(&q)]));
}

/// Report statistics at the edges: an RTN error of zero prints "n/a" (JSON `null`)
/// instead of dividing by ~0, and weights near 1e36 (squares beyond f32) give finite
/// error figures.
#[test]
fn report_statistics_at_the_edges() {
    let tmp = tempfile::tempdir().unwrap();
    // Every group of 128 holds -3.5..=3.5 in steps of 0.5: exactly on the 4-bit RTN grid.
    let grid: Vec<u8> = (0..16 * 128)
        .flat_map(|i| (((i % 15) as f32 - 7.0) * 0.5).to_le_bytes())
        .collect();
    let input = tmp.path().join("grid.safetensors");
    write_st(
        &input,
        &[("grid.weight".into(), Dtype::F32, vec![16, 128], grid)],
        &[],
    );
    let rep = tmp.path().join("r.json");
    let q = tmp.path().join("q.safetensors");
    let out = adpq(&["quantize", p(&input), "-o", p(&q), "--report", p(&rep)]);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(n/a of RTN)"), "{text}");
    let r: Value = serde_json::from_slice(&std::fs::read(&rep).unwrap()).unwrap();
    assert_eq!(r["totals"]["rtn_rel_mse"], 0.0);
    assert!(
        r["totals"]["rel_mse_pct_of_rtn"].is_null(),
        "{}",
        r["totals"]
    );

    // Weights around 1e36.
    let (name, _, shape, bytes) = floats("huge.weight", Dtype::F32, &[16, 256], 12);
    let huge: Vec<u8> = to_f32(Dtype::F32, &bytes)
        .iter()
        .flat_map(|v| (v * 1e37).to_le_bytes())
        .collect();
    let input = tmp.path().join("huge.safetensors");
    write_st(&input, &[(name, Dtype::F32, shape, huge)], &[]);
    let out = adpq(&["quantize", p(&input), "-o", p(&q), "--report", p(&rep)]);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("NaN") && !text.contains("inf"),
        "non-finite statistics:\n{text}"
    );
    let r: Value = serde_json::from_slice(&std::fs::read(&rep).unwrap()).unwrap();
    let t = &r["totals"];
    for k in [
        "rel_mse",
        "rtn_rel_mse",
        "rel_mse_pct_of_rtn",
        "sqnr_db",
        "rtn_sqnr_db",
    ] {
        let v = t[k].as_f64().unwrap_or_else(|| panic!("{k}: {t}"));
        assert!(v.is_finite() && v > 0.0, "{k} = {v}");
    }
    assert!(t["rel_mse"].as_f64().unwrap() < 0.1, "{t}");
}

/// Without a terminal, progress is one plain stderr line per tensor for the selection
/// phase, the write phase and dequantize; `-q` silences all of it.
#[test]
fn plain_progress_lines_when_not_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("m.safetensors");
    write_st(&input, &synthetic_model(), &[]);
    let q = tmp.path().join("q.safetensors");
    let d = tmp.path().join("d.safetensors");
    let count = |err: &str, prefix: &str| err.lines().filter(|l| l.starts_with(prefix)).count();

    let out = adpq(&["quantize", p(&input), "-o", p(&q)]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(count(&err, "selected "), QUANTIZED.len(), "{err}");
    assert_eq!(count(&err, "quantized "), QUANTIZED.len(), "{err}");
    for name in QUANTIZED {
        assert!(err.contains(&format!("selected {name} (")), "{err}");
    }
    // The selection lines come first (the whole model is selected before writing).
    let last_select = err.rfind("selected ").unwrap();
    assert!(last_select < err.find("quantized ").unwrap(), "{err}");

    let out = adpq(&["dequantize", p(&q), "-o", p(&d)]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(count(&err, "dequantized "), QUANTIZED.len(), "{err}");

    for cmd in [
        vec!["quantize", p(&input), "-o", p(&q), "-q"],
        vec!["quantize", p(&input), "--dry-run", "-q"],
        vec!["dequantize", p(&q), "-o", p(&d), "-q"],
    ] {
        let out = adpq(&cmd);
        ok(&out);
        assert!(
            out.stderr.is_empty(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `--threads` is validated up front (a huge count used to abort inside the standard
/// library with exit 134); 0 still means one per core.
#[test]
fn absurd_thread_counts_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("m.safetensors");
    write_st(&input, &synthetic_model(), &[]);
    let q = tmp.path().join("q.safetensors");
    for n in ["100000", "1025", "many"] {
        fails(
            &adpq(&["quantize", p(&input), "-o", p(&q), "--threads", n]),
            2,
            &["--threads"],
        );
        fails(&adpq(&["verify", p(&input), "-j", n]), 2, &["--threads"]);
    }
    assert!(!q.exists());
    ok(&adpq(&[
        "quantize",
        p(&input),
        "-o",
        p(&q),
        "-j",
        "0",
        "-q",
    ]));
    ok(&adpq(&["verify", p(&q), "-j", "3"]));
    let d = tmp.path().join("d.safetensors");
    ok(&adpq(&[
        "dequantize",
        p(&q),
        "-o",
        p(&d),
        "-j",
        "1024",
        "-q",
    ]));
}

/// The reference selection cannot work with alpha = 0: a usage error up front, not a
/// data error on the first tensor.
#[test]
fn reference_selection_needs_positive_alpha() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("m.safetensors");
    write_st(&input, &synthetic_model(), &[]);
    let q = tmp.path().join("q.safetensors");
    for extra in [&[][..], &["--dry-run"][..]] {
        let mut args = vec![
            "quantize",
            p(&input),
            "-o",
            p(&q),
            "--reference-iters",
            "20",
            "--alpha",
            "0",
        ];
        args.extend_from_slice(extra);
        fails(&adpq(&args), 2, &["--reference-iters", "alpha > 0"]);
    }
    assert!(!q.exists());
    // Exact selection with alpha 0, and reference selection with alpha > 0, work.
    ok(&adpq(&[
        "quantize",
        p(&input),
        "-o",
        p(&q),
        "--alpha",
        "0",
        "-q",
    ]));
    ok(&adpq(&[
        "quantize",
        p(&input),
        "-o",
        p(&q),
        "--reference-iters",
        "20",
        "-q",
    ]));
}

/// What a folder input holds beyond its checkpoint and regular files (subfolders,
/// `.safetensors` files the index does not list) is not copied, and a warning says so
/// (also with `-q`, and in the JSON report).
#[test]
fn entries_not_copied_are_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    sharded(&src);
    std::fs::write(src.join("config.json"), "{}").unwrap();
    std::fs::create_dir(src.join("onnx")).unwrap();
    std::fs::write(src.join("onnx/model.onnx"), "x").unwrap();
    write_st(
        &src.join("consolidated.safetensors"),
        &[floats("w.weight", Dtype::F32, &[4, 64], 3)],
        &[],
    );
    let out = tmp.path().join("out");
    let rep = tmp.path().join("r.json");
    let run = adpq(&[
        "quantize",
        p(&src),
        "-o",
        p(&out),
        "-q",
        "--report",
        p(&rep),
    ]);
    ok(&run);
    let err = String::from_utf8_lossy(&run.stderr);
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("adpq: warning:"))
        .collect();
    assert_eq!(warnings.len(), 2, "{err}");
    assert!(warnings[0].contains("consolidated.safetensors"), "{err}");
    assert!(
        warnings[0].contains("model.safetensors.index.json"),
        "{err}"
    );
    assert!(warnings[1].contains("onnx/"), "{err}");
    assert!(!names_in(&out).contains(&"onnx".to_string()));
    assert!(!names_in(&out).contains(&"consolidated.safetensors".to_string()));
    assert!(names_in(&out).contains(&"config.json".to_string()));
    let r: Value = serde_json::from_slice(&std::fs::read(&rep).unwrap()).unwrap();
    assert_eq!(r["warnings"].as_array().unwrap().len(), 2, "{r}");

    // dequantize warns about what the quantized folder holds beyond its checkpoint.
    std::fs::create_dir(out.join("extra")).unwrap();
    let d = tmp.path().join("d");
    let run = adpq(&["dequantize", p(&out), "-o", p(&d), "-q"]);
    ok(&run);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.lines()
            .any(|l| l.starts_with("adpq: warning:") && l.contains("extra/")),
        "{err}"
    );

    // A clean folder: no warning.
    let clean = tmp.path().join("clean");
    std::fs::create_dir(&clean).unwrap();
    sharded(&clean);
    let run = adpq(&["quantize", p(&clean), "-o", p(&tmp.path().join("o2")), "-q"]);
    ok(&run);
    assert!(
        run.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// The digest of a checkpoint file's tensors: sha256 over, for each tensor sorted by
/// name, the name's UTF-8 bytes followed by the 32-byte sha256 of its data bytes (as
/// `digest.py` computed the baselines). Returns the hex digest and the tensor count.
fn tensors_digest(path: &Path) -> (String, usize) {
    use sha2::{Digest, Sha256};
    let (tensors, _) = read_st(path);
    let mut all = Sha256::new();
    for (name, (_, _, data)) in &tensors {
        all.update(name.as_bytes());
        all.update(Sha256::digest(data));
    }
    let hex = all.finalize().iter().map(|b| format!("{b:02x}")).collect();
    (hex, tensors.len())
}

/// Quantizes (or dequantizes) `input` with `args` and checks the output's digest
/// against one taken with the binary before the crate split (issue 7).
fn assert_output_digest(input: &Path, out: &Path, args: &[&str], digest: &str, n: usize) {
    let mut cmd = vec![args[0], p(input), "-o", p(out), "-q"];
    cmd.extend_from_slice(&args[1..]);
    ok(&adpq(&cmd));
    assert_eq!(tensors_digest(out), (digest.to_string(), n), "{args:?}");
}

/// Every packed byte of the real MiniLM checkpoint, for the default and two non-default
/// settings, and its bf16 dequantization, is identical to the output of the binary
/// before the std crates were split out.
#[test]
fn real_minilm_output_is_byte_identical_to_baseline() {
    let input = data_dir().join("minilm/model.safetensors");
    if !input.exists() {
        skip_missing_data(&input);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 3] = [
        (
            &["quantize"],
            "f699c32cef5a325c2770c1f50663f713c1ff1491571631f3c97c127f31a3cf62",
        ),
        (
            &[
                "quantize",
                "--asymmetric",
                "--bits",
                "3",
                "--group-size",
                "64",
                "--alpha",
                "0.1",
            ],
            "8d20b9ad196edfbf20137e36230a05cd0225bcc313c45c4d27824d53883c843a",
        ),
        (
            &["quantize", "--reference-iters", "100"],
            "9dbbb40f72df77a79ed81631c1eaf27f62fd7c7b52f83d18cfdfd7f2cee19e32",
        ),
    ];
    for (i, (args, digest)) in cases.iter().enumerate() {
        let out = tmp.path().join(format!("q{i}.safetensors"));
        assert_output_digest(&input, &out, args, digest, 104);
    }
    let default_output = tmp.path().join("q0.safetensors");
    assert_output_digest(
        &default_output,
        &tmp.path().join("d.safetensors"),
        &["dequantize", "--dtype", "bf16"],
        "dd59f3305b92d7538475f646c45e9c0354a589e3f04887881aed56ec58f717fd",
        104,
    );
}

/// SmolLM2-135M quantized with two threads: byte-identical to the binary before the
/// std crates were split out. Release only, like the other SmolLM2 test.
#[test]
#[ignore = "about 100 M weights; run with --release -- --ignored"]
fn real_smollm2_output_is_byte_identical_to_baseline() {
    let input = data_dir().join("smollm2/model.safetensors");
    if !input.exists() {
        skip_missing_data(&input);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    assert_output_digest(
        &input,
        &tmp.path().join("q.safetensors"),
        &["quantize", "--threads", "2"],
        "02cf462de0a3469a53ac4d0eb24d28472e0a871547a5688c659e2e156a861c5a",
        272,
    );
}
