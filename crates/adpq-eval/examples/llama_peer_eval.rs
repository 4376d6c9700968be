//! Perplexity, KL and top-1 of llama.cpp's whole-model types on SmolLM2-135M (block
//! projections fake-quantized by the peer, `adpq_eval::peer`, each with the type
//! `llama-quantize` would give it; embedding and norms kept), against the input model.
//!
//! `cargo run --release -p adpq-eval --example llama_peer_eval -- [WINDOWS] [LEN] [TYPES...]`
//! (defaults 8 × 512 and Q4_0 IQ4_NL IQ4_XS Q4_K_S Q4_K_M); data from `cargo xtask fetch`,
//! the peer from `scripts/llama-peer.sh`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;

use adpq_core::kernels::AnyKernels;
use adpq_engine::CpuEngine;
use adpq_eval::peer::{tensor_type, LlamaPeer};
use adpq_eval::{evaluate, windows, Candidate, Linear, LlamaConfig, Model, TextTokenizer};
use adpq_io::Checkpoint;

type Error = Box<dyn std::error::Error>;

/// One model type's projections: name -> dequantized weights, and its bits per weight.
fn fake_quantize(
    peer: &LlamaPeer,
    model: &Model<'_>,
    model_type: &str,
) -> Result<(HashMap<String, Vec<f32>>, f64), Error> {
    let heads = model.config.num_attention_heads;
    let n_gqa = heads / model.config.num_key_value_heads.unwrap_or(heads).max(1);
    let n_layers = model.layers.len();
    let (mut out, mut bits, mut count) = (HashMap::new(), 0f64, 0f64);
    for (name, lin) in model.projections() {
        let Linear::Dense { w, rows, cols } = lin else {
            return Err(format!("{name}: dense input weights expected").into());
        };
        let kind = tensor_type(model_type, &name, n_layers, n_gqa)?;
        let q = peer.fake_quantize(kind, w, *rows, *cols)?;
        bits += q.bits_per_weight * w.len() as f64;
        count += w.len() as f64;
        out.insert(name, q.weights);
    }
    Ok((out, bits / count))
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n_win: usize = args.first().map_or(Ok(8), |s| s.parse())?;
    let len: usize = args.get(1).map_or(Ok(512), |s| s.parse())?;
    let mut types: Vec<&str> = args.iter().skip(2).map(String::as_str).collect();
    if types.is_empty() {
        types = vec!["Q4_0", "IQ4_NL", "IQ4_XS", "Q4_K_S", "Q4_K_M"];
    }
    let peer = LlamaPeer::find().ok_or("llama.cpp peer not built: run scripts/llama-peer.sh")?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/data");
    let config = LlamaConfig::from_file(&root.join("smollm2/config.json"))?;
    let ckpt = Checkpoint::open(&root.join("smollm2/model.safetensors"))?;
    let reference = Model::load(config, &ckpt)?;
    let tok = TextTokenizer::from_file(&root.join("smollm2/tokenizer.json"))?;
    let text = std::fs::read_to_string(root.join("text/lee_background.cor"))?;
    let tokens = tok.encode(&text)?;
    let wins = windows(&tokens, n_win, len)?;
    let kernels = AnyKernels::detect();

    let mut quantized = Vec::new();
    for t in &types {
        eprintln!("quantizing with {t}...");
        quantized.push(fake_quantize(&peer, &reference, t)?);
    }
    let mut models = Vec::new();
    for (weights, _) in &quantized {
        models.push(reference.map_projections(|name, lin| {
            let (rows, cols) = lin.shape();
            Ok(Linear::Dense {
                w: Cow::Borrowed(&weights[name][..]),
                rows,
                cols,
            })
        })?);
    }
    let cands: Vec<Candidate> = types
        .iter()
        .zip(&models)
        .map(|(t, m)| Candidate {
            name: (*t).to_owned(),
            model: m,
        })
        .collect();
    let r = evaluate(
        &reference,
        &cands,
        &wins,
        &CpuEngine::new(kernels),
        &mut |s| eprint!("\r{}/{} {:30}", s.done, s.total, s.model),
    )?;
    eprintln!();
    println!(
        "input ppl {:.3} ({n_win} × {len}, {:.0} s)",
        r.reference.perplexity, r.seconds
    );
    println!("| llama.cpp type | bits/weight | ppl × input | KL | top-1 |");
    println!("|---|---|---|---|---|");
    for (s, (_, bits)) in r.candidates.iter().zip(&quantized) {
        println!(
            "| {} | {bits:.3} | {:.4} | {:.4} | {:.1} % |",
            s.name,
            s.perplexity_ratio,
            s.mean_kl,
            s.top1_agreement * 100.0
        );
    }
    Ok(())
}
