//! The forward pass, the metrics and the decoder on a tiny random Llama (2 layers, GQA,
//! tied embedding), no data needed: causality, determinism, packed weights at 8 bits
//! scoring close to the dense ones, and the decoder's bits on any thread count and over
//! repacked rows.

mod common;

use std::borrow::Cow;

use adpq_core::kernels::{AnyKernels, Scalar};
use adpq_core::{packed_len, Grid, PackedTensor, ParamFields, Params, Weights};
use adpq_engine::{CpuEngine, Engine};
use adpq_eval::{
    evaluate, forward, Candidate, Layer, Linear, LlamaConfig, Model, PackedProjections, RtnSpec,
};

/// Deterministic pseudo-random weights in about ±`scale`.
fn weights(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn dense(rows: usize, cols: usize, seed: u64) -> Linear<'static> {
    let scale = 1.5 / (cols as f32).sqrt();
    Linear::Dense {
        w: Cow::Owned(weights(rows * cols, seed, scale)),
        rows,
        cols,
    }
}

fn tiny() -> Model<'static> {
    let config = LlamaConfig::from_json(
        r#"{"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": true}"#,
    )
    .unwrap();
    let (h, f, kv) = (128, 256, 64);
    let layers = (0..2u64)
        .map(|i| Layer {
            attn_norm: Cow::Owned(vec![1.0; h]),
            q: dense(h, h, 10 * i + 1),
            k: dense(kv, h, 10 * i + 2),
            v: dense(kv, h, 10 * i + 3),
            o: dense(h, h, 10 * i + 4),
            mlp_norm: Cow::Owned(
                weights(h, 10 * i + 5, 0.2)
                    .iter()
                    .map(|v| 1.0 + v)
                    .collect(),
            ),
            gate: dense(f, h, 10 * i + 6),
            up: dense(f, h, 10 * i + 7),
            down: dense(h, f, 10 * i + 8),
        })
        .collect();
    Model {
        config,
        embed: Linear::Dense {
            w: Cow::Owned(weights(300 * h, 99, 1.0)),
            rows: 300,
            cols: h,
        },
        layers,
        norm: Cow::Owned(vec![1.0; h]),
        lm_head: None,
    }
}

fn tokens(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + 11) % 300).collect()
}

#[test]
fn logits_are_causal_and_deterministic() {
    // 130 tokens: three of attention's 64-query blocks, so causality is checked past the
    // first block too.
    let (m, n) = (tiny(), 130);
    let toks = tokens(n);
    let full = forward::logits(&m, &CpuEngine::new(Scalar), &toks).unwrap();
    assert_eq!(full.len(), n * 300);
    assert_eq!(
        full,
        forward::logits(&m, &CpuEngine::new(Scalar), &toks).unwrap()
    );
    // A prefix sees the same logits, whatever follows it.
    for len in [17, 97] {
        let prefix = forward::logits(&m, &CpuEngine::new(Scalar), &toks[..len]).unwrap();
        for (a, b) in prefix.iter().zip(&full) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
    for at in [20, 70] {
        let mut changed = toks.clone();
        changed[at] = (changed[at] + 1) % 300;
        let other = forward::logits(&m, &CpuEngine::new(Scalar), &changed).unwrap();
        assert_eq!(full[..at * 300], other[..at * 300], "before {at}");
        // The changed token, and a later query (in the next block for 70) that sees it.
        for row in [at, at + 30] {
            let (a, b) = (&full[row * 300..][..300], &other[row * 300..][..300]);
            assert_ne!(a, b, "row {row} does not see token {at}");
        }
    }
    assert!(
        forward::logits(&m, &CpuEngine::new(Scalar), &[300]).is_err(),
        "token outside the vocabulary"
    );
}

#[test]
fn packed_8_bit_weights_score_close_to_dense_and_rtn_2_bit_far() {
    let m = tiny();
    let kernels = AnyKernels::detect();
    let engine = CpuEngine::new(kernels);
    let params = Params::new(8, 64, 0.06, Grid::Symmetric).unwrap();
    let bufs: Vec<Vec<u8>> = m
        .projections()
        .map(|(_, lin)| {
            let Linear::Dense { w, rows, cols } = lin else {
                unreachable!()
            };
            let t = engine.load(Weights::F32(w), *rows, *cols).unwrap();
            let sel = engine.select(&t, &params).unwrap();
            let mut buf =
                vec![0u8; packed_len(*rows, *cols, params.format(), sel.n_outliers).unwrap()];
            engine.quantize(&t, &params, &sel, &mut buf).unwrap();
            buf
        })
        .collect();
    let mut next = bufs.iter();
    let packed = m
        .map_projections(|_, _| Ok(Linear::Packed(PackedTensor::parse(next.next().unwrap())?)))
        .unwrap();
    // The library's in-memory variant holds the same bytes.
    let variant = PackedProjections::quantize(&m, &engine, &params).unwrap();
    assert_eq!(variant.params(), &params);
    assert_eq!(
        variant.packed_bytes(),
        bufs.iter().map(Vec::len).sum::<usize>()
    );
    let from_variant = variant.model(&m).unwrap();
    let toks = tokens(20);
    assert_eq!(
        forward::logits(&from_variant, &CpuEngine::new(kernels), &toks).unwrap(),
        forward::logits(&packed, &CpuEngine::new(kernels), &toks).unwrap()
    );
    let rtn2 = m
        .with_rtn(RtnSpec {
            bits: 2,
            group_size: 64,
            asymmetric: false,
        })
        .unwrap();
    let same = m
        .map_projections(|_, l| {
            Ok(match l {
                Linear::Dense { w, rows, cols } => Linear::Dense {
                    w: Cow::Borrowed(w),
                    rows: *rows,
                    cols: *cols,
                },
                _ => unreachable!(),
            })
        })
        .unwrap();
    let toks = tokens(96);
    let wins: Vec<&[u32]> = toks.chunks(32).collect();
    let cands = [
        Candidate {
            name: "same".into(),
            model: &same,
        },
        Candidate {
            name: "packed8".into(),
            model: &packed,
        },
        Candidate {
            name: "rtn2".into(),
            model: &rtn2,
        },
    ];
    let mut seen = Vec::new();
    let r = evaluate(&m, &cands, &wins, &CpuEngine::new(kernels), &mut |s| {
        seen.push((s.window, s.model.to_string()))
    })
    .unwrap();
    assert_eq!(seen.len(), 3 * 4);
    assert_eq!(seen[1], (0, "same".to_string()));
    assert_eq!(r.predictions, 3 * 31);
    let (same, p8, r2) = (&r.candidates[0], &r.candidates[1], &r.candidates[2]);
    assert_eq!(
        (same.mean_kl, same.top1_agreement, same.perplexity_ratio),
        (0.0, 1.0, 1.0)
    );
    assert!(
        p8.mean_kl > 0.0 && p8.mean_kl < 1e-3,
        "8-bit KL {}",
        p8.mean_kl
    );
    assert!(
        p8.top1_agreement > 0.9,
        "8-bit agreement {}",
        p8.top1_agreement
    );
    assert!(
        (p8.perplexity_ratio - 1.0).abs() < 0.01,
        "8-bit ratio {}",
        p8.perplexity_ratio
    );
    assert!(
        r2.mean_kl > 10.0 * p8.mean_kl,
        "2-bit RTN KL {} vs 8-bit {}",
        r2.mean_kl,
        p8.mean_kl
    );
    assert!(
        p8.bits_per_weight > 8.0 && p8.bits_per_weight < 10.0,
        "{}",
        p8.bits_per_weight
    );
    assert_eq!(r.reference.bits_per_weight, 32.0);
    assert_eq!(r2.bits_per_weight, 2.25);
}

/// The summary (perplexity, KL, agreement) is the same bits on 1, 2 and 3 threads:
/// products, attention blocks and the per-row sums do not depend on the split.
#[test]
fn scores_do_not_depend_on_the_thread_count() {
    let m = tiny();
    let rtn4 = m
        .with_rtn(RtnSpec {
            bits: 4,
            group_size: 64,
            asymmetric: true,
        })
        .unwrap();
    let cands = [Candidate {
        name: "rtn4".into(),
        model: &rtn4,
    }];
    let toks = tokens(1024);
    let wins: Vec<&[u32]> = toks.chunks(256).collect();
    let scores = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let engine = CpuEngine::new(AnyKernels::detect());
        let r = pool
            .install(|| evaluate(&m, &cands, &wins, &engine, &mut |_| {}))
            .unwrap();
        [&r.reference, &r.candidates[0]].map(|s| {
            (
                s.perplexity.to_bits(),
                s.mean_kl.to_bits(),
                s.top1_agreement.to_bits(),
            )
        })
    };
    let one = scores(1);
    assert!(one[1].1 > 0, "RTN 4-bit has a KL");
    assert_eq!(one, scores(2));
    assert_eq!(one, scores(3));
}

/// Per-tensor parameters in format v2 (`quantize_with`): each projection's header holds
/// the parameters its name was given, and the packed model scores close to the dense one.
#[test]
fn per_tensor_v2_projections_follow_their_names() {
    let m = tiny();
    let kernels = AnyKernels::detect();
    let engine = CpuEngine::new(kernels);
    let six = ParamFields {
        bits: 6,
        ..Params::V2.fields()
    }
    .validate()
    .unwrap();
    let variant = PackedProjections::quantize_with(&m, &engine, |name| {
        if name.contains("v_proj") {
            six
        } else {
            Params::V2
        }
    })
    .unwrap();
    let packed = variant.model(&m).unwrap();
    let mut seen = 0;
    for (name, lin) in packed.projections() {
        let Linear::Packed(p) = lin else {
            panic!("{name} is not packed")
        };
        let want = if name.contains("v_proj") {
            six
        } else {
            Params::V2
        };
        assert_eq!(p.params(), want.format(), "{name}");
        seen += usize::from(name.contains("v_proj"));
    }
    assert_eq!(seen, 2, "one v_proj per layer");
    let toks = tokens(64);
    let wins: Vec<&[u32]> = toks.chunks(32).collect();
    let rtn4 = m
        .with_rtn(RtnSpec {
            bits: 4,
            group_size: 64,
            asymmetric: false,
        })
        .unwrap();
    let cands = [
        Candidate {
            name: "v2".into(),
            model: &packed,
        },
        Candidate {
            name: "rtn4".into(),
            model: &rtn4,
        },
    ];
    let r = evaluate(&m, &cands, &wins, &CpuEngine::new(kernels), &mut |_| {}).unwrap();
    let (v2, rtn) = (&r.candidates[0], &r.candidates[1]);
    assert!(
        v2.mean_kl > 0.0 && v2.mean_kl < rtn.mean_kl,
        "{v2:?} vs {rtn:?}"
    );
}

/// The decoder on the tiny model with v3 projections and a 7-bit tied embedding (the
/// default preset's parameters): its logits are the same bits on 1, 2 and 3 threads
/// (rows taken in chunks), with the threads started per step or kept for all
/// (`with_team`), and with the rows repacked for decoding as without.
#[test]
fn decoder_logits_do_not_depend_on_threads_or_repacking() {
    let m = tiny();
    let kernels = AnyKernels::detect();
    let engine = CpuEngine::new(kernels);
    let projections = PackedProjections::quantize_with(&m, &engine, Params::v3_for).unwrap();
    let Linear::Dense { w: embed, .. } = &m.embed else {
        unreachable!("tiny's embedding is dense")
    };
    let p = Params::v3_for("model.embed_tokens.weight");
    let (rows, cols) = m.embed.shape();
    let sel = adpq_core::select_tensor(&kernels, Weights::F32(embed), rows, cols, &p).unwrap();
    let mut buf = vec![0u8; packed_len(rows, cols, p.format(), sel.n_outliers).unwrap()];
    adpq_core::quantize_tensor(
        &kernels,
        Weights::F32(embed),
        rows,
        cols,
        &p,
        &sel,
        &mut buf,
    )
    .unwrap();
    let with_packed_embedding = || {
        let mut model = projections.model(&m).unwrap();
        model.embed = Linear::Packed(PackedTensor::parse(&buf).unwrap());
        model
    };
    let packed = with_packed_embedding();
    let mut repacked = with_packed_embedding();
    repacked.repack_for_decoding().unwrap();
    assert!(matches!(repacked.embed, Linear::Repacked { .. }));
    assert!(matches!(repacked.layers[0].up, Linear::Repacked { .. }));
    let toks = tokens(12);
    // Each step on its own threads, or (`team`) all on one team's.
    let logits = |model: &Model<'_>, threads: usize, team: bool| {
        common::decoder_logit_bits(model, kernels, &toks, threads, team)
    };
    let want = logits(&packed, 1, false);
    for threads in [1, 2, 3] {
        assert!(
            logits(&repacked, threads, false) == want,
            "repacked, {threads} threads"
        );
        assert!(
            logits(&repacked, threads, true) == want,
            "repacked, {threads} threads on one team"
        );
        if threads > 1 {
            assert!(
                logits(&packed, threads, false) == want,
                "packed, {threads} threads"
            );
        }
    }
}
