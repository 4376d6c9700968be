//! llama.cpp's quantizer as a peer (`adpq_eval::peer`) on real MiniLM weights from
//! `target/data` (`cargo xtask fetch`). Needs the tool (`scripts/llama-peer.sh`): skips
//! with a message when it or the data is absent, fails instead when
//! `ADPQ_REQUIRE_LLAMA_PEER` (tool) or `ADPQ_REQUIRE_DATA` (data) is set.

use std::path::PathBuf;

use adpq_eval::peer::{LlamaPeer, PeerError, TOOL_ENV};
use adpq_io::{weight_data, SafetensorsFile};

fn skip_or_fail(require: &str, msg: String) {
    if std::env::var_os(require).is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
}

fn peer() -> Option<LlamaPeer> {
    let found = LlamaPeer::find();
    if found.is_none() {
        skip_or_fail(
            "ADPQ_REQUIRE_LLAMA_PEER",
            format!(
                "llama.cpp peer not found at ${TOOL_ENV} or {} (run scripts/llama-peer.sh)",
                LlamaPeer::default_path().display()
            ),
        );
    }
    found
}

/// A MiniLM weight matrix: (values, rows, cols).
fn minilm(name: &str) -> Option<(Vec<f32>, usize, usize)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/data/minilm/model.safetensors");
    if !path.exists() {
        skip_or_fail(
            "ADPQ_REQUIRE_DATA",
            format!("{} missing (run `cargo xtask fetch`)", path.display()),
        );
        return None;
    }
    let file = SafetensorsFile::open(&path).unwrap();
    let tensor = file.tensor(name).unwrap();
    let data = weight_data(&tensor).unwrap();
    let values = (0..tensor.numel())
        .map(|i| data.weights().value(i).unwrap())
        .collect();
    Some((values, tensor.shape[0], tensor.shape[1]))
}

fn rel_mse(original: &[f32], quantized: &[f32]) -> f64 {
    let (mut err, mut sum) = (0f64, 0f64);
    for (a, b) in original.iter().zip(quantized) {
        err += f64::from(a - b).powi(2);
        sum += f64::from(*a).powi(2);
    }
    err / sum
}

const QUERY: &str = "encoder.layer.0.attention.self.query.weight";
/// 384 × 1536: rows that 256-wide super-blocks divide.
const FFN_DOWN: &str = "encoder.layer.0.output.dense.weight";

#[test]
fn q8_0_reconstructs_each_weight_within_its_block_step() {
    let (Some(peer), Some((w, rows, cols))) = (peer(), minilm(QUERY)) else {
        return;
    };
    let q = peer.fake_quantize("Q8_0", &w, rows, cols).unwrap();
    assert_eq!(q.type_used, "q8_0");
    assert_eq!(q.bits_per_weight, 8.5);
    // Q8_0: blocks of 32 with one f16 scale d = max|w| / 127, codes round(w / d). The
    // error is half a step plus the scale's f16 rounding (≤ 127 · d · 2^-11): within d.
    for (block, (orig, back)) in w.chunks(32).zip(q.weights.chunks(32)).enumerate() {
        let step = orig.iter().fold(0f32, |m, x| m.max(x.abs())) / 127.0;
        for (a, b) in orig.iter().zip(back) {
            assert!(
                (a - b).abs() <= step,
                "block {block}: {a} -> {b}, step {step}"
            );
        }
    }
    assert!(rel_mse(&w, &q.weights) < 1e-4);
}

#[test]
fn q4_0_costs_exactly_four_and_a_half_bits() {
    let (Some(peer), Some((w, rows, cols))) = (peer(), minilm(QUERY)) else {
        return;
    };
    let q = peer.fake_quantize("q4_0", &w, rows, cols).unwrap();
    assert_eq!(q.type_used, "q4_0");
    assert_eq!(q.bits_per_weight, 4.5);
    let e = rel_mse(&w, &q.weights);
    assert!(e > 1e-4 && e < 0.05, "rel-MSE {e}");
}

#[test]
fn k_quants_fall_back_as_llama_quantize_does_on_narrow_rows() {
    let (Some(peer), Some((w, rows, cols)), Some((w2, rows2, cols2))) =
        (peer(), minilm(QUERY), minilm(FFN_DOWN))
    else {
        return;
    };
    // 384 columns: Q4_K's 256-wide super-blocks do not fit, llama.cpp writes Q5_0.
    let narrow = peer.fake_quantize("Q4_K", &w, rows, cols).unwrap();
    assert_eq!(
        (narrow.type_used.as_str(), narrow.bits_per_weight),
        ("q5_0", 5.5)
    );
    let iq4_xs = peer.fake_quantize("IQ4_XS", &w, rows, cols).unwrap();
    assert_eq!(
        (iq4_xs.type_used.as_str(), iq4_xs.bits_per_weight),
        ("iq4_nl", 4.5)
    );
    // 1536 columns: the real thing (144 bytes per 256 weights; 136 for IQ4_XS).
    let wide = peer.fake_quantize("Q4_K", &w2, rows2, cols2).unwrap();
    assert_eq!(
        (wide.type_used.as_str(), wide.bits_per_weight),
        ("q4_K", 4.5)
    );
    let iq4_xs = peer.fake_quantize("IQ4_XS", &w2, rows2, cols2).unwrap();
    assert_eq!(
        (iq4_xs.type_used.as_str(), iq4_xs.bits_per_weight),
        ("iq4_xs", 4.25)
    );
    assert!(rel_mse(&w2, &wide.weights) < 0.05);
}

#[test]
fn an_unknown_type_is_refused_with_the_tools_message() {
    let Some(peer) = peer() else {
        return;
    };
    let err = peer.fake_quantize("Q9_9", &[0.5; 64], 2, 32).unwrap_err();
    match err {
        PeerError::Failed { stderr, .. } => assert!(stderr.contains("Q9_9"), "{stderr}"),
        other => panic!("expected Failed, got {other}"),
    }
}
