//! `adpq quantize` (and its round trip through `dequantize`) on synthetic checkpoints:
//! odd shapes, dtypes, options, thread counts and backends, reports and progress.

use safetensors::Dtype;
use serde_json::Value;

mod common;
use common::*;

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
    // The defaults: format v3 with the v3 preset's base (the 4-bit code book, g 64, no
    // outliers); its rules give up_proj and down_proj 5 bits.
    assert_eq!(meta["adpq.version"], "3");
    let params: Value = serde_json::from_str(&meta["adpq.params"]).unwrap();
    assert_eq!(params["format"], "v3");
    assert_eq!(params["bits"], 4);
    assert_eq!(params["group_size"], 64);
    assert_eq!(params["alpha"], 0.0);
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
        "--format",
        "v1",
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
    assert!(String::from_utf8_lossy(&out.stdout).contains("adpq v1 b3 g64 asymmetric"));
    // Reference-compatible selection.
    let q2 = dir.path().join("q2.safetensors");
    ok(&adpq(&[
        "quantize",
        p(&input),
        "-o",
        p(&q2),
        "--format",
        "v2",
        "--reference-iters",
        "100",
        "-q",
    ]));
    ok(&adpq(&["verify", p(&q2)]));
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
    // Format v3, the default, rotates rows and refuses such weights by name...
    let out = adpq(&["quantize", p(&input), "-o", p(&q), "--report", p(&rep)]);
    fails(&out, 1, &["huge.safetensors", "huge.weight", "below 2^116"]);
    // ...which v2 quantizes, with finite statistics.
    let out = adpq(&[
        "quantize",
        p(&input),
        "-o",
        p(&q),
        "--format",
        "v2",
        "--report",
        p(&rep),
    ]);
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
    // The default (v3) has no outliers to count: the line says what was done instead.
    assert!(err.contains("): checked, 5 bits"), "{err}");
    assert!(!err.contains("outliers"), "{err}");
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

/// `--preset v3-auto`: format v3 with each tensor's bits and group chosen from its
/// weights within `--bits-budget` (packed bits, everything counted); deterministic, a
/// larger budget never gives a tensor fewer bits, a `--tensor-params` rule still wins,
/// and a budget below the cheapest setting is a usage error.
#[test]
fn v3_auto_allocates_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("model.safetensors");
    write_st(&input, &synthetic_model(), &[]);
    let run = |budget: &str, extra: &[&str], tag: &str| -> (Value, Vec<u8>) {
        let q = dir.path().join(format!("q-{tag}.safetensors"));
        let rep = dir.path().join(format!("r-{tag}.json"));
        let mut args = vec![
            "quantize",
            p(&input),
            "-o",
            p(&q),
            "--preset",
            "v3-auto",
            "--bits-budget",
            budget,
            "--report",
            p(&rep),
            "-q",
        ];
        args.extend_from_slice(extra);
        ok(&adpq(&args));
        let r: Value = serde_json::from_slice(&std::fs::read(&rep).unwrap()).unwrap();
        (r, std::fs::read(&q).unwrap())
    };
    let bits_of = |r: &Value| -> Vec<u64> {
        QUANTIZED
            .iter()
            .map(|name| {
                let t = r["tensors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t["name"] == *name)
                    .unwrap();
                assert_eq!(t["action"], "quantized", "{name}");
                t["params"]["bits"].as_u64().unwrap_or(4)
            })
            .collect()
    };
    let mut previous: Option<Vec<u64>> = None;
    for budget in ["4.6", "5.0", "5.6", "6.5"] {
        let (r, bytes) = run(budget, &[], budget);
        assert_eq!(r["params"]["format"], "v3");
        let bpw = r["totals"]["bits_per_weight"].as_f64().unwrap();
        assert!(bpw <= budget.parse::<f64>().unwrap(), "{bpw} over {budget}");
        let (_, meta) = read_st(&dir.path().join(format!("q-{budget}.safetensors")));
        assert_eq!(meta["adpq.version"], "3");
        let bits = bits_of(&r);
        if let Some(p) = &previous {
            assert!(
                p.iter().zip(&bits).all(|(a, b)| b >= a),
                "{p:?} -> {bits:?}"
            );
        }
        previous = Some(bits);
        if budget == "5.0" {
            // The same checkpoint, byte for byte, on one thread.
            let (_, again) = run(budget, &["--threads", "1"], "again");
            assert_eq!(bytes, again, "budget {budget}: not deterministic");
        }
    }
    // The largest budget buys the most bits the preset offers (6) everywhere.
    assert_eq!(previous.unwrap(), vec![6, 6, 6]);

    // A rule wins over the allocation and counts against the budget.
    let (r, _) = run(
        "5.0",
        &["--tensor-params", "up_proj=bits:3,group:128"],
        "rule",
    );
    assert_eq!(bits_of(&r)[1], 3);
    assert!(r["totals"]["bits_per_weight"].as_f64().unwrap() <= 5.0);

    let q = dir.path().join("low.safetensors");
    let out = adpq(&[
        "quantize",
        p(&input),
        "-o",
        p(&q),
        "--preset",
        "v3-auto",
        "--bits-budget",
        "2",
    ]);
    fails(&out, 2, &["--bits-budget 2", "below the least"]);
    let out = adpq(&[
        "quantize",
        p(&input),
        "-o",
        p(&q),
        "--format",
        "v2",
        "--bits-budget",
        "4.8",
    ]);
    fails(&out, 2, &["--bits-budget needs --preset v3-auto or v3"]);
}

/// The default preset (v3) keeps its rules for the Llama projections it names and
/// allocates the bits of every other tensor (another architecture's names) within the
/// budget, from the weights, as v3-auto does.
#[test]
fn default_preset_allocates_the_tensors_its_rules_do_not_name() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("model.safetensors");
    let mut model = synthetic_model();
    let bert = [
        "encoder.layer.0.attention.self.query.weight",
        "encoder.layer.0.intermediate.dense.weight",
    ];
    model.push(floats(bert[0], Dtype::F32, &[64, 384], 21));
    model.push(floats(bert[1], Dtype::F32, &[96, 384], 22));
    write_st(&input, &model, &[]);
    let run = |extra: &[&str], tag: &str| -> (Value, String) {
        let q = dir.path().join(format!("q-{tag}.safetensors"));
        let rep = dir.path().join(format!("r-{tag}.json"));
        let mut args = vec!["quantize", p(&input), "-o", p(&q), "--report", p(&rep)];
        args.extend_from_slice(extra);
        let out = adpq(&args);
        ok(&out);
        let r: Value = serde_json::from_slice(&std::fs::read(&rep).unwrap()).unwrap();
        (r, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let params_of = |r: &Value, name: &str| -> (u64, u64) {
        let t = r["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in the report"));
        assert_eq!(t["action"], "quantized", "{name}");
        let bits = |k: &str, d: u64| t["params"][k].as_u64().unwrap_or(d);
        (bits("bits", 4), bits("group_size", 64))
    };
    for (budget, tag) in [
        (None, "default"),
        (Some("3.5"), "low"),
        (Some("6.6"), "high"),
    ] {
        let extra: Vec<&str> = budget.map_or(vec![], |b| vec!["--bits-budget", b]);
        let (r, stderr) = run(&extra, tag);
        assert!(stderr.contains("bit allocation: budget"), "{stderr}");
        assert_eq!(r["params"]["format"], "v3");
        // The named projections keep the rules whatever the budget.
        assert_eq!(params_of(&r, "model.layers.0.self_attn.q_proj.weight").0, 4);
        assert_eq!(params_of(&r, "model.layers.0.mlp.up_proj.weight").0, 5);
        assert_eq!(params_of(&r, "model.layers.0.mlp.down_proj.weight").0, 5);
        let bits: Vec<u64> = bert.iter().map(|n| params_of(&r, n).0).collect();
        // The unnamed tensors' packed bits per weight, everything counted, within it.
        let (tensors, _) = read_st(&dir.path().join(format!("q-{tag}.safetensors")));
        let (mut packed_bits, mut weights) = (0.0, 0.0);
        for n in bert {
            let t = adpq_core::PackedTensor::parse(&tensors[n].2).unwrap();
            packed_bits += t.layout().bits_per_weight() * (t.rows() * t.cols()) as f64;
            weights += (t.rows() * t.cols()) as f64;
        }
        let spent = packed_bits / weights;
        assert!(
            spent <= budget.map_or(4.8, |b| b.parse().unwrap()),
            "{tag}: {spent} bits/weight"
        );
        assert!(bits.iter().all(|b| (3..=6).contains(b)), "{bits:?}");
        match budget {
            Some("3.5") => assert_eq!(bits, [3, 3], "the least the budget allows"),
            Some("6.6") => assert_eq!(bits, [6, 6], "the most the preset offers"),
            _ => {}
        }
    }
    // A Llama checkpoint: every tensor named, nothing allocated, as before the fallback.
    let llama = dir.path().join("llama.safetensors");
    write_st(&llama, &synthetic_model(), &[]);
    let out = adpq(&[
        "quantize",
        p(&llama),
        "-o",
        p(&dir.path().join("l.safetensors")),
    ]);
    ok(&out);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("bit allocation"));
    // A user's budget with every tensor named: said, not silently ignored.
    let out = adpq(&[
        "quantize",
        p(&llama),
        "-o",
        p(&dir.path().join("l2.safetensors")),
        "--bits-budget",
        "3.5",
    ]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--bits-budget 3.5 has nothing to allocate"),
        "{stderr}"
    );
    // A tensor whose group records alone cost more than the default budget keeps the
    // base (said on stderr) while a larger one beside it is allocated within the budget;
    // a budget the user sets covers both, and is refused when they cannot fit it.
    let tiny = dir.path().join("tiny.safetensors");
    write_st(
        &tiny,
        &[
            floats("l.0.weight", Dtype::F32, &[2, 128], 5),
            floats("l.1.weight", Dtype::F32, &[64, 256], 6),
        ],
        &[],
    );
    let t = dir.path().join("t.safetensors");
    let rep = dir.path().join("t.json");
    let out = adpq(&["quantize", p(&tiny), "-o", p(&t), "--report", p(&rep)]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 tensor(s) too small"), "{stderr}");
    let r: Value = serde_json::from_slice(&std::fs::read(&rep).unwrap()).unwrap();
    assert_eq!(params_of(&r, "l.0.weight").0, 4, "the base");
    let (tensors, meta) = read_st(&t);
    assert_eq!(meta["adpq.version"], "3");
    let big = adpq_core::PackedTensor::parse(&tensors["l.1.weight"].2).unwrap();
    assert!(
        big.layout().bits_per_weight() <= 4.8,
        "{}",
        big.layout().bits_per_weight()
    );
    ok(&adpq(&["verify", p(&t)]));
    let out = adpq(&[
        "quantize",
        p(&tiny),
        "-o",
        p(&t),
        "--bits-budget",
        "3",
        "--force",
    ]);
    fails(&out, 2, &["--bits-budget 3", "below the least"]);
}

/// The default preset's names are whole name components: Phi-3's fused `qkv_proj` and
/// `gate_up_proj` are not `v_proj` and `up_proj`, so their bits are allocated, not the
/// rules'; and `--bits-budget` alone sets the default preset's budget.
#[test]
fn default_preset_names_whole_components() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("phi.safetensors");
    let names = [
        "model.layers.0.self_attn.qkv_proj.weight",
        "model.layers.0.self_attn.o_proj.weight",
        "model.layers.0.mlp.gate_up_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
    ];
    let model: Vec<Tensor> = names
        .iter()
        .enumerate()
        .map(|(i, n)| floats(n, Dtype::F32, &[96, 256], 30 + i as u64))
        .collect();
    write_st(&input, &model, &[]);
    for (extra, budget) in [(&[][..], 4.8), (&["--bits-budget", "4.5"][..], 4.5)] {
        let q = dir.path().join("q.safetensors");
        let mut args = vec!["quantize", p(&input), "-o", p(&q), "--force"];
        args.extend_from_slice(extra);
        let out = adpq(&args);
        ok(&out);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("budget {budget} bits/weight")),
            "{stderr}"
        );
        let (tensors, _) = read_st(&q);
        let packed = |n: &str| {
            let t = adpq_core::PackedTensor::parse(&tensors[n].2).unwrap();
            (t.params().bits, t.layout().bits_per_weight())
        };
        // The named ones keep the rules: o_proj the base, down_proj 5 bits.
        assert_eq!(packed(names[1]).0, 4);
        assert_eq!(packed(names[3]).0, 5);
        // The fused ones share the budget (equal shapes: the mean of their bits/weight).
        let mean = (packed(names[0]).1 + packed(names[2]).1) / 2.0;
        assert!(mean <= budget, "{mean} over {budget}");
    }
}

/// A tied token embedding (no `lm_head.weight` in the checkpoint) is the output
/// projection: the default preset codes it at 7 bits; `--exclude embed_tokens`, another
/// preset or format, or an LM head in the checkpoint keep it byte for byte.
#[test]
fn default_preset_quantizes_a_tied_embedding_only() {
    let dir = tempfile::tempdir().unwrap();
    let embed = "model.embed_tokens.weight";
    let proj = "model.layers.0.self_attn.q_proj.weight";
    let tied = dir.path().join("tied.safetensors");
    let model = [
        floats(embed, Dtype::BF16, &[96, 128], 40),
        floats(proj, Dtype::F32, &[32, 128], 41),
    ];
    write_st(&tied, &model, &[]);
    let untied = dir.path().join("untied.safetensors");
    let mut with_head = model.to_vec();
    with_head.push(floats("lm_head.weight", Dtype::F32, &[96, 128], 42));
    write_st(&untied, &with_head, &[]);
    let embedding_of = |input: &std::path::Path, extra: &[&str]| {
        let q = dir.path().join("q.safetensors");
        let mut args = vec!["quantize", p(input), "-o", p(&q), "--force", "-q"];
        args.extend_from_slice(extra);
        ok(&adpq(&args));
        let (tensors, _) = read_st(&q);
        let (dtype, _, bytes) = &tensors[embed];
        assert_eq!(
            tensors[proj].0,
            Dtype::U8,
            "{extra:?}: the projection is packed"
        );
        match dtype {
            Dtype::U8 => Some(adpq_core::PackedTensor::parse(bytes).unwrap().params().bits),
            _ => {
                assert_eq!(
                    bytes, &model[0].3,
                    "{extra:?}: passed through byte for byte"
                );
                None
            }
        }
    };
    assert_eq!(embedding_of(&tied, &[]), Some(7));
    for extra in [
        &["--exclude", "embed_tokens"][..],
        &["--format", "v2"],
        &["--preset", "none"],
        &["--preset", "v3-auto"],
    ] {
        assert_eq!(embedding_of(&tied, extra), None, "{extra:?}");
    }
    assert_eq!(embedding_of(&untied, &[]), None);
}
