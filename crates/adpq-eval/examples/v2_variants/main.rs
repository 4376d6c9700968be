//! Format v2 candidates ranked on SmolLM2-135M (perplexity, KL, top-1 against the input)
//! and on MiniLM (relative MSE), from fake-quantized weights (`fakequant.rs`).
//!
//! `cargo run --release -p adpq-eval --example v2_variants -- [WINDOWS] [LEN] [NAMES...]`
//! (defaults 4 × 512, every variant); data from `cargo xtask fetch` under `target/data`.

mod fakequant;

use std::borrow::Cow;
use std::path::PathBuf;

use adpq_core::kernels::AnyKernels;
use adpq_core::Params;
use adpq_engine::CpuEngine;
use adpq_eval::{
    evaluate, windows, Candidate, Linear, LlamaConfig, Model, PackedProjections, TextTokenizer,
};
use adpq_io::{weight_data, Checkpoint, SafetensorsFile};
use fakequant::{Inlier, Outlier, Steps, Variant};

/// The candidates, in the order of the table. `u8r`: u8 records relative to per-row
/// units, outliers on `[t, max]` with one step per row (the record layout format v2 took);
/// `f16g`: f16 records per group of 128, α .06 (v1's layout).
fn variants() -> Vec<Variant> {
    use Inlier::*;
    use Outlier::*;
    let u8r = |name, group, alpha, inlier| {
        Variant::new(name, group, alpha, inlier, MagnitudeRow, Steps::U8Row)
    };
    let f16g = |name, inlier, outlier| Variant::new(name, 128, 0.06, inlier, outlier, Steps::F16);
    const V6: (&str, u8, f64) = ("v_proj", 6, 0.05);
    let probe = |name, only| u8r(name, 64, 0.05, AsymSearch).only(only);
    vec![
        u8r("refit-g64-a.05", 64, 0.05, AsymRefit),
        u8r("search9refit-g64-a.05", 64, 0.05, AsymSearch9Refit),
        u8r("b6-v-a.04", 64, 0.04, AsymSearch).wide(&[V6]),
        u8r("b6-v-down.08-a.03", 64, 0.03, AsymSearch).wide(&[V6, ("down_proj", 4, 0.08)]),
        u8r("b6-v-a.04-search9refit", 64, 0.04, AsymSearch9Refit).wide(&[V6]),
        probe("only-q", "q_proj"),
        probe("only-k", "k_proj"),
        probe("only-v", "v_proj"),
        probe("only-o", "o_proj"),
        probe("only-gate", "gate_proj"),
        probe("only-up", "up_proj"),
        probe("only-down", "down_proj"),
        u8r("b5-v-a.05", 64, 0.05, AsymSearch).wide(&[("v_proj", 5, 0.05)]),
        u8r("b5-down-a.02", 64, 0.02, AsymSearch).wide(&[("down_proj", 5, 0.02)]),
        u8r("b6-v-a.05", 64, 0.045, AsymSearch).wide(&[V6]),
        f16g("v1-fake", SymMax, SymGroup),
        f16g("mag-out", SymMax, MagnitudeGroup),
        f16g("mag+asym-search", AsymSearch, MagnitudeGroup),
        f16g("mag+sym-search", SymSearch, MagnitudeGroup),
        f16g("mag+codebook", CodeBook, MagnitudeGroup),
        u8r("u8:asym-search-g64", 64, 0.06, AsymSearch),
        u8r("u8:asym-search-g64-a.05", 64, 0.05, AsymSearch),
        u8r("u8:asym-search9-g64-a.05", 64, 0.05, AsymSearch9),
        u8r("u8:asym-search5-g64-a.05", 64, 0.05, AsymSearch5),
        u8r("u8:asym-search-g128-a.08", 128, 0.08, AsymSearch),
        u8r("u8:asym-search-g128-a.06", 128, 0.06, AsymSearch),
        u8r("u8:codebook-g64", 64, 0.06, CodeBook),
        u8r("u8:codebook-g32-a.04", 32, 0.04, CodeBook),
        u8r("u8:codebook-g64-a.075", 64, 0.075, CodeBook),
        u8r("u8:codebook-g128-a.10", 128, 0.10, CodeBook),
        u8r("u8:asym-search-g32-a.02", 32, 0.02, AsymSearch),
        u8r("u8:asym-search-g32-noout", 32, 0.0, AsymSearch),
    ]
}

fn bits_of(v: &Variant, shapes: &[(String, usize, usize)]) -> f64 {
    let (mut b, mut n) = (0.0, 0.0);
    for (name, r, c) in shapes {
        let bits = v.for_tensor(name).map_or(32.0, |t| t.bits(*r, *c));
        b += bits * (r * c) as f64;
        n += (r * c) as f64;
    }
    b / n
}

fn minilm_rel_mse(v: Option<&Variant>, root: &std::path::Path) -> f64 {
    let f = SafetensorsFile::open(&root.join("minilm/model.safetensors")).unwrap();
    let (mut err, mut sum) = (0f64, 0f64);
    let kernels = AnyKernels::detect();
    let engine = CpuEngine::new(kernels);
    for t in f.tensors() {
        if t.shape.len() != 2 || t.name.contains("embeddings") {
            continue;
        }
        let (rows, cols) = (t.shape[0], t.shape[1]);
        let data = weight_data(&t).unwrap();
        let w: Vec<f32> = (0..t.numel())
            .map(|i| data.weights().value(i).unwrap())
            .collect();
        let q = match v {
            Some(v) => match v.for_tensor(t.name) {
                Some(tv) => tv.apply(&w, cols),
                None => w.clone(),
            },
            None => real_v1(&engine, &w, rows, cols),
        };
        for (a, b) in w.iter().zip(&q) {
            err += f64::from(a - b).powi(2);
            sum += f64::from(*a).powi(2);
        }
    }
    err / sum
}

/// The real packed v1 (the core's encoder through the engine, the bytes `adpq quantize
/// --format v1` writes), dequantized.
fn real_v1(engine: &CpuEngine<AnyKernels>, w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    use adpq_engine::Engine;
    let p = Params::V1;
    let t = engine.load(adpq_core::Weights::F32(w), rows, cols).unwrap();
    let sel = engine.select(&t, &p).unwrap();
    let mut buf = vec![0u8; adpq_core::packed_len(rows, cols, p.format(), sel.n_outliers).unwrap()];
    engine.quantize(&t, &p, &sel, &mut buf).unwrap();
    let lin = Linear::Packed(adpq_core::PackedTensor::parse(&buf).unwrap());
    let mut out = vec![0f32; w.len()];
    lin.rows_into(engine, 0, &mut out).unwrap();
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n_win: usize = args.first().map_or(4, |s| s.parse().unwrap());
    let len: usize = args.get(1).map_or(512, |s| s.parse().unwrap());
    let only: Vec<&String> = args.iter().skip(2).collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/data");
    let config = LlamaConfig::from_file(&root.join("smollm2/config.json")).unwrap();
    let ckpt = Checkpoint::open(&root.join("smollm2/model.safetensors")).unwrap();
    let reference = Model::load(config, &ckpt).unwrap();
    let tok = TextTokenizer::from_file(&root.join("smollm2/tokenizer.json")).unwrap();
    let text = std::fs::read_to_string(root.join("text/lee_background.cor")).unwrap();
    let tokens = tok.encode(&text).unwrap();
    let wins = windows(&tokens, n_win, len).unwrap();
    let kernels = AnyKernels::detect();
    let shapes: Vec<(String, usize, usize)> = reference
        .projections()
        .map(|(n, l)| (n, l.shape().0, l.shape().1))
        .collect();

    let vs: Vec<Variant> = variants()
        .into_iter()
        .filter(|v| only.is_empty() || only.iter().any(|o| **o == v.name))
        .collect();
    let packed =
        PackedProjections::quantize(&reference, &CpuEngine::new(kernels), &Params::V1).unwrap();
    let v1 = packed.model(&reference).unwrap();
    let mut models = Vec::new();
    for v in &vs {
        let m = reference
            .map_projections(|name, lin| {
                let Linear::Dense { w, rows, cols } = lin else {
                    unreachable!("dense input")
                };
                Ok(Linear::Dense {
                    w: match v.for_tensor(name) {
                        Some(t) => Cow::Owned(t.apply(w, *cols)),
                        None => Cow::Borrowed(&w[..]),
                    },
                    rows: *rows,
                    cols: *cols,
                })
            })
            .unwrap();
        models.push(m);
    }
    let mut cands = vec![Candidate {
        name: "v1 (packed)".into(),
        model: &v1,
    }];
    for (v, m) in vs.iter().zip(&models) {
        cands.push(Candidate {
            name: v.name.into(),
            model: m,
        });
    }
    let r = evaluate(
        &reference,
        &cands,
        &wins,
        &CpuEngine::new(kernels),
        &mut |s| eprint!("\r{}/{} {:30}", s.done, s.total, s.model),
    )
    .unwrap();
    eprintln!();
    println!(
        "input ppl {:.3} ({} × {})",
        r.reference.perplexity, n_win, len
    );
    println!("| variant | bits/weight | ppl × input | KL | top-1 | MiniLM rel-MSE |");
    println!("|---|---|---|---|---|---|");
    for (i, s) in r.candidates.iter().enumerate() {
        let (bits, mse) = if i == 0 {
            (v1.projection_bits_per_weight(), minilm_rel_mse(None, &root))
        } else {
            let v = &vs[i - 1];
            (bits_of(v, &shapes), minilm_rel_mse(Some(v), &root))
        };
        println!(
            "| {} | {:.3} | {:.4} | {:.4} | {:.1} % | {:.5} |",
            s.name,
            bits,
            s.perplexity_ratio,
            s.mean_kl,
            s.top1_agreement * 100.0,
            mse
        );
    }
}
