//! Perplexity, KL divergence and top-1 agreement of candidate models against a
//! reference, over fixed windows of tokens.
//!
//! Each window is scored on its own (positions `0..len−1` predict tokens `1..len`).
//! Per window the reference runs once and every candidate is compared with it, so a
//! sweep over many variants pays for the reference once; no logits outlive a window.

use std::time::Instant;

use adpq_engine::Engine;
use rayon::prelude::*;
use serde::Serialize;

use crate::forward::logits_into;
use crate::model::Model;
use crate::{EvalError, Result};

/// `n` consecutive, non-overlapping windows of `len` tokens from the start of `tokens`.
pub fn windows(tokens: &[u32], n: usize, len: usize) -> Result<Vec<&[u32]>> {
    if n == 0 || len < 2 {
        return Err(EvalError::Text(
            "at least one window of at least 2 tokens".into(),
        ));
    }
    if tokens.len() < n * len {
        return Err(EvalError::Text(format!(
            "the text has {} tokens, {n} windows of {len} need {}",
            tokens.len(),
            n * len
        )));
    }
    Ok(tokens.chunks_exact(len).take(n).collect())
}

/// A model to compare with the reference.
#[derive(Debug)]
pub struct Candidate<'m> {
    /// Name in the report (a path, `rtn-sym-g128-b4`...).
    pub name: String,
    /// The model.
    pub model: &'m Model<'m>,
}

/// The figures of one model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    /// Name (the reference is `input`).
    pub name: String,
    /// Storage bits per weight of the block projections (32 for f32 weights).
    pub bits_per_weight: f64,
    /// `exp(mean negative log-likelihood)` of the next tokens.
    pub perplexity: f64,
    /// Perplexity divided by the reference's.
    pub perplexity_ratio: f64,
    /// Mean over positions of `KL(reference ‖ model)` of the next-token distributions, in nats.
    pub mean_kl: f64,
    /// Fraction of positions whose most likely next token equals the reference's.
    pub top1_agreement: f64,
    /// Seconds spent in this model's forward passes.
    pub forward_seconds: f64,
}

/// The result of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    /// Windows scored.
    pub windows: usize,
    /// Tokens per window.
    pub window_len: usize,
    /// Predictions scored per model (`windows · (window_len − 1)`).
    pub predictions: u64,
    /// The reference (KL 0, agreement 1).
    pub reference: Score,
    /// The candidates, in the order given.
    pub candidates: Vec<Score>,
    /// Wall time of the whole evaluation.
    pub seconds: f64,
}

/// What [`evaluate`] reports after each forward pass.
#[derive(Debug, Clone, Copy)]
pub struct Step<'s> {
    /// Window index (0-based).
    pub window: usize,
    /// Model just run (`input` or a candidate's name).
    pub model: &'s str,
    /// Forward passes done so far, of `total`.
    pub done: usize,
    /// All forward passes: `windows · (1 + candidates)`.
    pub total: usize,
}

#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    nll: f64,
    kl: f64,
    agree: u64,
    seconds: f64,
}

/// Scores `candidates` against `reference` on `windows` (see the module docs), calling
/// `progress` after every forward pass.
pub fn evaluate(
    reference: &Model<'_>,
    candidates: &[Candidate<'_>],
    windows: &[&[u32]],
    engine: &(impl Engine + Sync),
    progress: &mut dyn FnMut(Step<'_>),
) -> Result<EvalReport> {
    let start = Instant::now();
    let vocab = reference.config.vocab_size;
    if let Some(c) = candidates
        .iter()
        .find(|c| c.model.config.vocab_size != vocab)
    {
        return Err(EvalError::Config(format!(
            "{}: vocabulary differs from the reference",
            c.name
        )));
    }
    let total = windows.len() * (1 + candidates.len());
    let mut done = 0;
    let mut ref_sums = Sums::default();
    let mut sums = vec![Sums::default(); candidates.len()];
    let mut predictions = 0u64;
    // Log-probabilities of the reference and of a candidate, reused window to window.
    let (mut lp, mut lq) = (Vec::new(), Vec::new());
    for (w, tokens) in windows.iter().enumerate() {
        let t0 = Instant::now();
        logits_into(reference, engine, tokens, &mut lp)?;
        ref_sums.seconds += t0.elapsed().as_secs_f64();
        log_softmax(&mut lp, vocab);
        let targets = &tokens[1..];
        ref_sums.nll += nll(&lp, vocab, targets);
        predictions += targets.len() as u64;
        done += 1;
        progress(Step {
            window: w,
            model: "input",
            done,
            total,
        });
        for (c, s) in candidates.iter().zip(&mut sums) {
            let t0 = Instant::now();
            logits_into(c.model, engine, tokens, &mut lq)?;
            s.seconds += t0.elapsed().as_secs_f64();
            log_softmax(&mut lq, vocab);
            s.nll += nll(&lq, vocab, targets);
            let (kl, agree) = compare(&lp, &lq, vocab, targets.len());
            s.kl += kl;
            s.agree += agree;
            done += 1;
            progress(Step {
                window: w,
                model: &c.name,
                done,
                total,
            });
        }
    }
    let n = predictions.max(1) as f64;
    let ref_ppl = (ref_sums.nll / n).exp();
    let score = |name: &str, model: &Model<'_>, s: &Sums| {
        let perplexity = (s.nll / n).exp();
        Score {
            name: name.into(),
            bits_per_weight: model.projection_bits_per_weight(),
            perplexity,
            perplexity_ratio: perplexity / ref_ppl,
            mean_kl: s.kl / n,
            top1_agreement: s.agree as f64 / n,
            forward_seconds: s.seconds,
        }
    };
    let mut reference_score = score("input", reference, &ref_sums);
    reference_score.top1_agreement = 1.0;
    Ok(EvalReport {
        windows: windows.len(),
        window_len: windows.first().map_or(0, |w| w.len()),
        predictions,
        reference: reference_score,
        candidates: candidates
            .iter()
            .zip(&sums)
            .map(|(c, s)| score(&c.name, c.model, s))
            .collect(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Turns each row of logits into log-probabilities in place.
fn log_softmax(x: &mut [f32], vocab: usize) {
    x.par_chunks_mut(vocab).for_each(|row| {
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let sum: f64 = row.iter().map(|&v| f64::from((v - m).exp())).sum();
        let lse = m + sum.ln() as f32;
        row.iter_mut().for_each(|v| *v -= lse);
    });
}

/// `Σ −log p(target)` over the first `targets.len()` rows.
fn nll(lp: &[f32], vocab: usize, targets: &[u32]) -> f64 {
    lp.chunks_exact(vocab)
        .zip(targets)
        .map(|(row, &t)| -f64::from(row[t as usize]))
        .sum()
}

/// `(Σ KL(p ‖ q), rows whose argmax agree)` over the first `rows` rows. Rows are
/// scored in parallel and their KL added in row order, so the sum is the same bits on
/// any number of threads.
fn compare(lp: &[f32], lq: &[f32], vocab: usize, rows: usize) -> (f64, u64) {
    let per_row: Vec<(f64, bool)> = lp
        .par_chunks(vocab)
        .zip(lq.par_chunks(vocab))
        .take(rows)
        .map(|(p, q)| {
            let kl: f64 = p
                .iter()
                .zip(q)
                .map(|(&a, &b)| f64::from(a.exp()) * f64::from(a - b))
                .sum();
            (kl.max(0.0), argmax(p) == argmax(q))
        })
        .collect();
    per_row.iter().fold((0.0, 0), |(kl, agree), &(k, a)| {
        (kl + k, agree + u64::from(a))
    })
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn softmax64(x: &[f64]) -> Vec<f64> {
        let z: f64 = x.iter().map(|v| v.exp()).sum();
        x.iter().map(|v| v.exp() / z).collect()
    }

    #[test]
    fn log_softmax_kl_nll_and_agreement_on_known_rows() {
        let (p_rows, q_rows) = (
            [[0.0, 1.0, 2.0], [0.0, 0.0, 1.0]],
            [[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]],
        );
        let mut p: Vec<f32> = p_rows.iter().flatten().map(|&v| v as f32).collect();
        let mut q: Vec<f32> = q_rows.iter().flatten().map(|&v| v as f32).collect();
        log_softmax(&mut p, 3);
        log_softmax(&mut q, 3);
        for row in p.chunks(3) {
            let s: f32 = row.iter().map(|v| v.exp()).sum();
            assert!((s - 1.0).abs() < 1e-6);
        }
        // Row 0: identical (KL 0, argmax 2 both); row 1: argmax 2 vs 0.
        let (kl, agree) = compare(&p, &q, 3, 2);
        assert_eq!(agree, 1);
        let (a, b) = (softmax64(&p_rows[1]), softmax64(&q_rows[1]));
        let want: f64 = a.iter().zip(&b).map(|(x, y)| x * (x / y).ln()).sum();
        assert!((kl - want).abs() < 1e-5, "{kl} vs {want}");
        let want_nll = -softmax64(&p_rows[0])[2].ln() - softmax64(&p_rows[1])[0].ln();
        assert!((nll(&p, 3, &[2, 0]) - want_nll).abs() < 1e-5);
    }

    #[test]
    fn windows_are_consecutive_and_a_short_text_is_an_error() {
        let toks: Vec<u32> = (0..10).collect();
        let w = windows(&toks, 3, 3).unwrap();
        assert_eq!(w, vec![&[0, 1, 2][..], &[3, 4, 5], &[6, 7, 8]]);
        assert!(windows(&toks, 4, 3)
            .unwrap_err()
            .to_string()
            .contains("10 tokens"));
        assert!(windows(&toks, 1, 1).is_err());
    }
}
