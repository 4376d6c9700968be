//! Format v3 experiments (issue 15, part 1): rotation, non-uniform code books, outlier
//! grids, each with and without AdpQ's outlier split, ranked like docs/FORMAT-v2.md.
//!
//! ```text
//! cargo run --release -p adpq-eval --example v3_experiments -- ppl WINDOWS LEN VARIANT...
//! cargo run --release -p adpq-eval --example v3_experiments -- minilm VARIANT...
//! cargo run --release -p adpq-eval --example v3_experiments -- stress VARIANT...
//! cargo run --release -p adpq-eval --example v3_experiments -- wht
//! ```
//!
//! Variant names: `variant.rs`. Data from `cargo xtask fetch` under `target/data`.

mod codebook;
mod grid;
mod rotate;
mod stress;
mod variant;
mod wht;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use adpq_core::AnyKernels;
use adpq_engine::CpuEngine;
use adpq_eval::{evaluate, windows, Candidate, Linear, LlamaConfig, Model, TextTokenizer};
use adpq_io::{weight_data, Checkpoint, SafetensorsFile};
use variant::Variant;

/// MiniLM (F32): `Σ(w−ŵ)²/Σw²` over every 2-D non-embedding tensor, and bits/weight.
fn minilm(v: &Variant, root: &Path) -> (f64, f64) {
    let f = SafetensorsFile::open(&root.join("minilm/model.safetensors")).unwrap();
    let (mut err, mut sum, mut bits, mut n) = (0f64, 0f64, 0f64, 0f64);
    for t in f.tensors() {
        if t.shape.len() != 2 || t.name.contains("embeddings") {
            continue;
        }
        let (rows, cols) = (t.shape[0], t.shape[1]);
        let data = weight_data(&t).unwrap();
        let w: Vec<f32> = (0..t.numel())
            .map(|i| data.weights().value(i).unwrap())
            .collect();
        let (q, b) = v.apply(t.name, &w, rows, cols);
        for (a, b) in w.iter().zip(&q) {
            err += f64::from(a - b).powi(2);
            sum += f64::from(*a).powi(2);
        }
        bits += b;
        n += (rows * cols) as f64;
    }
    (err / sum, bits / n)
}

fn ppl(root: &Path, n_win: usize, len: usize, vs: &[Variant]) {
    let config = LlamaConfig::from_file(&root.join("smollm2/config.json")).unwrap();
    let ckpt = Checkpoint::open(&root.join("smollm2/model.safetensors")).unwrap();
    let reference = Model::load(config, &ckpt).unwrap();
    let tok = TextTokenizer::from_file(&root.join("smollm2/tokenizer.json")).unwrap();
    let text = std::fs::read_to_string(root.join("text/lee_background.cor")).unwrap();
    let tokens = tok.encode(&text).unwrap();
    let wins = windows(&tokens, n_win, len).unwrap();
    let mut models = Vec::new();
    let mut bits = Vec::new();
    for v in vs {
        eprintln!("quantizing {}", v.name);
        let (mut b, mut n) = (0f64, 0f64);
        let m = reference
            .map_projections(|name, lin| {
                let Linear::Dense { w, rows, cols } = lin else {
                    unreachable!("dense input")
                };
                let (q, size) = v.apply(name, w, *rows, *cols);
                b += size;
                n += (rows * cols) as f64;
                Ok(Linear::Dense {
                    w: Cow::Owned(q),
                    rows: *rows,
                    cols: *cols,
                })
            })
            .unwrap();
        models.push(m);
        bits.push(b / n);
    }
    let cands: Vec<Candidate> = vs
        .iter()
        .zip(&models)
        .map(|(v, m)| Candidate {
            name: v.name.clone(),
            model: m,
        })
        .collect();
    let r = evaluate(
        &reference,
        &cands,
        &wins,
        &CpuEngine::new(AnyKernels::detect()),
        &mut |s| eprint!("\r{}/{} {:30}", s.done, s.total, s.model),
    )
    .unwrap();
    eprintln!();
    println!(
        "input ppl {:.3} ({} × {})",
        r.reference.perplexity, n_win, len
    );
    println!("| variant | bits/weight | ppl × input | KL | top-1 | MiniLM rel-MSE (bits) |");
    println!("|---|---|---|---|---|---|");
    for ((s, v), b) in r.candidates.iter().zip(vs).zip(&bits) {
        let (mse, mb) = minilm(v, root);
        println!(
            "| {} | {:.3} | {:.4} | {:.4} | {:.1} % | {:.5} ({:.2}) |",
            s.name,
            b,
            s.perplexity_ratio,
            s.mean_kl,
            s.top1_agreement * 100.0,
            mse,
            mb
        );
    }
}

fn stress(vs: &[Variant]) {
    let ms = stress::matrices();
    let base = [Variant::parse("v1"), Variant::parse("v1ref")];
    print!("| variant |");
    for (name, _) in &ms {
        print!(" {name} |");
    }
    println!("\n|---|{}", "---|".repeat(ms.len()));
    let mut refs = Vec::new();
    for (_, w) in &ms {
        let e: Vec<f64> = base
            .iter()
            .map(|v| stress::rel_mse(w, &v.apply("stress", w, stress::ROWS, stress::COLS).0))
            .collect();
        refs.push(e);
    }
    for v in base.iter().chain(vs) {
        print!("| {} |", v.name);
        for ((_, w), e) in ms.iter().zip(&refs) {
            let (q, b) = v.apply("stress", w, stress::ROWS, stress::COLS);
            let m = stress::rel_mse(w, &q);
            print!(
                " {:.2}b {:.5} ({:.2}×v1, {:.2}×ref) |",
                b / w.len() as f64,
                m,
                m / e[0],
                m / e[1]
            );
        }
        println!();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/data");
    let names =
        |from: usize| -> Vec<Variant> { args[from..].iter().map(|s| Variant::parse(s)).collect() };
    match args.first().map(String::as_str) {
        Some("ppl") => ppl(
            &root,
            args[1].parse().unwrap(),
            args[2].parse().unwrap(),
            &names(3),
        ),
        Some("minilm") => {
            for v in names(1) {
                let (m, b) = minilm(&v, &root);
                println!("| {} | {:.3} | {:.5} |", v.name, b, m);
            }
        }
        Some("stress") => stress(&names(1)),
        Some("wht") => wht::run(),
        _ => eprintln!("usage: v3_experiments ppl|minilm|stress|wht ..."),
    }
}
