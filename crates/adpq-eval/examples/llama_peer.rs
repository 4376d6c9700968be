//! llama.cpp's types on a checkpoint's linear layers (every 2-D tensor but embeddings),
//! through the peer (`adpq_eval::peer`, built by `scripts/llama-peer.sh`): relative MSE
//! over all of them, bits per weight (fallback types counted), the types llama.cpp used,
//! and ggml's quantize speed on one thread.
//!
//! `cargo run --release -p adpq-eval --example llama_peer -- [MODEL] [TYPES...]`
//! MODEL: a folder under `target/data` (default `minilm`); TYPES default to
//! Q4_0 IQ4_NL IQ4_XS Q4_K_S Q4_K_M Q4_K Q5_0 Q8_0. A type `llama-quantize` knows as a
//! whole-model type (Q4_K_M...) gets its per-tensor recipe (`peer::tensor_type`, from
//! the layer count and heads in config.json); any other ggml type (Q4_K) is used as is.

use std::collections::BTreeMap;
use std::path::PathBuf;

use adpq_eval::peer::{tensor_type, LlamaPeer};
use adpq_io::{weight_data, SafetensorsFile};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = args.next().unwrap_or_else(|| "minilm".into());
    let mut types: Vec<String> = args.collect();
    if types.is_empty() {
        types = [
            "Q4_0", "IQ4_NL", "IQ4_XS", "Q4_K_S", "Q4_K_M", "Q4_K", "Q5_0", "Q8_0",
        ]
        .map(String::from)
        .to_vec();
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/data")
        .join(&model);
    let path = dir.join("model.safetensors");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)?;
    let count = |key: &str| config[key].as_u64().unwrap_or(1) as usize;
    let n_layers = count("num_hidden_layers");
    let n_gqa = count("num_attention_heads") / count("num_key_value_heads").max(1);
    let peer = LlamaPeer::find().ok_or("llama.cpp peer not built: run scripts/llama-peer.sh")?;
    let file = SafetensorsFile::open(&path)?;
    let mut tensors = Vec::new();
    for t in file.tensors() {
        if t.shape.len() != 2 || t.name.contains("embed") {
            continue;
        }
        let data = weight_data(&t).ok_or("not a float tensor")?;
        let w: Vec<f32> = (0..t.numel())
            .map(|i| data.weights().value(i))
            .collect::<Option<_>>()
            .ok_or("unreadable weight")?;
        tensors.push((t.name.to_owned(), w, t.shape[0], t.shape[1]));
    }
    let weights: usize = tensors.iter().map(|(_, w, _, _)| w.len()).sum();
    println!(
        "{model}: {} linear tensors, {weights} weights",
        tensors.len()
    );
    println!("| type | bits/weight | rel-MSE | types used (tensors) | quantize, 1 thread |");
    println!("|---|---|---|---|---|");
    for kind in &types {
        let (mut err, mut sum, mut bits, mut seconds) = (0f64, 0f64, 0f64, 0f64);
        let mut used = BTreeMap::<String, usize>::new();
        for (name, w, rows, cols) in &tensors {
            let asked = tensor_type(kind, name, n_layers, n_gqa).unwrap_or(kind);
            let q = peer.fake_quantize(asked, w, *rows, *cols)?;
            for (a, b) in w.iter().zip(&q.weights) {
                err += f64::from(a - b).powi(2);
                sum += f64::from(*a).powi(2);
            }
            bits += q.bits_per_weight * w.len() as f64;
            seconds += q.quantize_seconds;
            *used.entry(q.type_used).or_default() += 1;
        }
        let used: Vec<String> = used.iter().map(|(t, n)| format!("{t} ({n})")).collect();
        println!(
            "| {kind} | {:.3} | {:.5} | {} | {:.1} M weights/s |",
            bits / weights as f64,
            err / sum,
            used.join(", "),
            weights as f64 / seconds / 1e6
        );
    }
    Ok(())
}
