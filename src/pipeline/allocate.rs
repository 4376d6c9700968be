//! `quantize --preset v3-auto` (and preset `v3`, the default, for the tensors its rules do
//! not name): each tensor's bits and group size chosen from its weights alone, under a
//! bits/weight budget, before any file is planned.
//!
//! For every tensor to quantize, each candidate setting ([`crate::policy::auto_candidates`])
//! is encoded by the engine on an evenly spaced sample of the tensor's rows (v3 codes
//! each row on its own, so a sampled row packs exactly as it will in the file) and its
//! relative squared error `Σ(w − ŵ)² / Σw²` measured on the sample.
//! [`crate::alloc::allocate`] then picks the settings with the least summed relative
//! error whose packed size, everything counted, fits the budget: no names, no shapes,
//! no calibration text.
//!
//! Why the relative error of each tensor, not the checkpoint's summed squared error: a
//! matrix's relative error is its output's noise-to-signal ratio, whatever the input, and
//! does not change when a scale moves between a matrix and the norm before it (which
//! the absolute error does). Measured (docs/FORMAT-v3-experiments.md, "Bit allocation
//! without names"): on SmolLM2 the summed squared error puts the bits on the largest
//! weights and loses to it clearly (1.134× against 1.112×, 8 windows).

use crate::alloc::{allocate, Candidate};
use crate::error::{Error, Result};
use crate::filter::Decision;
use crate::policy::{auto_candidates, TensorParams};
use crate::progress::Progress;
use adpq_core::{packed_len, Error as CoreError, PackedTensor, Params, Weights};
use adpq_engine::{Engine, EngineError};
use adpq_io::{weight_data, Checkpoint, SafetensorsFile, TensorRef};

use super::engine_error;
use super::quantize::QuantizeOptions;

/// Weights per tensor encoded for each candidate (at least [`MIN_SAMPLE_ROWS`] rows):
/// enough that the estimate moves by about a percent, far less than the factor of
/// about 4 between one bit and the next.
const SAMPLE_WEIGHTS: usize = 32 * 1024;
/// Fewest rows sampled from a tensor that has them.
const MIN_SAMPLE_ROWS: usize = 16;

/// One tensor taking part in the allocation.
struct Entry {
    name: String,
    /// The settings it may get, in the order of `candidates`' errors.
    params: Vec<Params>,
    candidates: Vec<Candidate>,
}

/// The run's parameters with each tensor's allocated setting, for a budget of
/// `budget` bits per quantized weight (everything counted). Tensors a rule matches keep
/// the rule's parameters and count against the budget (`v3-auto`), or stay out of it
/// (preset `v3`: the budget is that of the tensors no rule names).
pub(super) fn allocate_bits<E: Engine>(
    engine: &E,
    ckpt: &Checkpoint,
    opts: &QuantizeOptions,
    budget: f64,
    progress: &mut dyn Progress,
) -> Result<TensorParams> {
    let mut entries = Vec::new();
    let mut weights = 0u64;
    // The default budget is a target: a tensor that cannot fit it whatever its setting
    // (a small matrix, whose group records cost more) keeps the base, out of the budget.
    let alone = opts.params.soft_budget().then_some(budget);
    let mut kept_base = 0usize;
    for f in &ckpt.files {
        for t in f.iter() {
            crate::signals::check()?;
            if opts.filter.decide(t.name, t.dtype, t.shape) != Decision::Quantize
                || (opts.params.ruled_outside_budget() && opts.params.by_rule(t.name).is_some())
            {
                continue;
            }
            progress.message(&format!("allocate {}", t.name));
            let entry = estimate(engine, f, &t, &opts.params, alone)?;
            f.release(&t);
            match entry {
                Estimate::Allocate(e) => {
                    weights += t.numel() as u64;
                    entries.push(e);
                }
                Estimate::KeepBase => kept_base += 1,
                Estimate::Out => {}
            }
        }
    }
    if kept_base > 0 {
        progress.line(&format!(
            "bit allocation: {kept_base} tensor(s) too small to fit {budget} bits/weight at \
             any setting keep the base ({} bits, groups of {})",
            opts.params.base().bits(),
            opts.params.base().group_size()
        ));
    }
    if entries.is_empty() {
        // Preset v3 on a checkpoint whose every tensor its rules name: nothing to allocate.
        if opts.params.ruled_outside_budget() && !opts.params.soft_budget() {
            progress.line(&format!(
                "bit allocation: every quantized tensor is named by a rule: --bits-budget \
                 {budget} has nothing to allocate"
            ));
        }
        return Ok(opts.params.with_assigned(Vec::new()));
    }
    let candidates: Vec<Vec<Candidate>> = entries
        .iter_mut()
        .map(|e| std::mem::take(&mut e.candidates))
        .collect();
    let budget_bits = (budget * weights as f64).floor() as u64;
    let choice = match allocate(&candidates, budget_bits) {
        Some(choice) => choice,
        None => {
            let least: u64 = candidates
                .iter()
                .map(|c| c.iter().map(|c| c.cost_bits).min().unwrap_or(0))
                .sum();
            let least = least as f64 / weights.max(1) as f64;
            if !opts.params.soft_budget() {
                return Err(Error::Usage(format!(
                    "--bits-budget {budget}: below the least these tensors can take \
                     ({least:.3} bits/weight)"
                )));
            }
            // Unreachable in practice with the default budget (every tensor taking part
            // fits it alone, so all fit it together), but f64 rounding must not fail a
            // run that used no flags.
            progress.line(&format!(
                "bit allocation: these tensors take at least {least:.3} bits/weight, more \
                 than the budget {budget}: each gets its smallest setting"
            ));
            candidates.iter().map(|c| cheapest(c)).collect()
        }
    };
    let spent: u64 = candidates
        .iter()
        .zip(&choice)
        .map(|(c, &i)| c[i].cost_bits)
        .sum();
    let mut counts = [0usize; 9];
    let assigned: Vec<(String, Params)> = entries
        .into_iter()
        .zip(&choice)
        .map(|(e, &i)| {
            counts[usize::from(e.params[i].bits())] += 1;
            (e.name, e.params[i])
        })
        .collect();
    let by_bits: Vec<String> = (2..=8)
        .filter(|&b| counts[b] > 0)
        .map(|b| format!("{} at {b} bits", counts[b]))
        .collect();
    progress.line(&format!(
        "bit allocation: budget {budget} bits/weight, planned {:.3} ({})",
        spent as f64 / weights.max(1) as f64,
        by_bits.join(", ")
    ));
    Ok(opts.params.with_assigned(assigned))
}

/// The index of the cheapest of a tensor's candidates (the least error among equals).
fn cheapest(candidates: &[Candidate]) -> usize {
    (0..candidates.len())
        .min_by(|&a, &b| {
            let (a, b) = (&candidates[a], &candidates[b]);
            a.cost_bits
                .cmp(&b.cost_bits)
                .then(a.error.total_cmp(&b.error))
        })
        .unwrap_or(0)
}

/// What the allocation does with one tensor.
enum Estimate {
    /// It takes part, with these candidates.
    Allocate(Entry),
    /// It cannot fit the (default) budget at any setting: it keeps the base.
    KeepBase,
    /// No candidate shrinks it (planning passes it through), or its sampled rows are too
    /// small to code: it takes no part and costs nothing in the budget.
    Out,
}

/// The candidates of one tensor with their estimated errors. With `alone` (the default
/// budget), a tensor whose cheapest setting costs more bits per weight than it keeps the
/// base instead, unsampled.
fn estimate<E: Engine>(
    engine: &E,
    f: &SafetensorsFile,
    t: &TensorRef<'_>,
    params: &TensorParams,
    alone: Option<f64>,
) -> Result<Estimate> {
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let core = |e| Error::core(f.path(), t.name, e);
    let cost = |p: &Params| -> Result<Option<u64>> {
        let len = packed_len(rows, cols, p.format(), 0).map_err(core)?;
        Ok((len < t.data.len()).then_some(8 * len as u64))
    };
    // A tensor a rule fixes: one candidate, its error irrelevant.
    if let Some(fixed) = params.by_rule(t.name) {
        return Ok(match cost(&fixed)? {
            Some(cost_bits) => Estimate::Allocate(Entry {
                name: t.name.to_string(),
                params: vec![fixed],
                candidates: vec![Candidate {
                    cost_bits,
                    error: 0.0,
                }],
            }),
            None => Estimate::Out,
        });
    }
    let settings = auto_candidates(params.base());
    if let Some(budget) = alone {
        let mut least = None;
        for p in &settings {
            if let Some(c) = cost(p)? {
                least = Some(least.map_or(c, |l: u64| l.min(c)));
            }
        }
        match least {
            None => return Ok(Estimate::Out),
            Some(c) if c as f64 > budget * t.numel() as f64 => return Ok(Estimate::KeepBase),
            Some(_) => {}
        }
    }
    let wd = weight_data(t).ok_or_else(|| Error::tensor(f.path(), t.name, "not a float tensor"))?;
    let sample_rows = sample_rows(rows, cols);
    let sample = gather_rows(wd.weights(), cols, &sample_rows);
    let signal: f64 = sample.iter().map(|&w| f64::from(w) * f64::from(w)).sum();
    let mut entry = Entry {
        name: t.name.to_string(),
        params: Vec::new(),
        candidates: Vec::new(),
    };
    for p in settings {
        let Some(cost_bits) = cost(&p)? else { continue };
        let error = match sample_error(engine, &sample, sample_rows.len(), cols, &p) {
            Ok(e) => e,
            // Sampled rows too small to code (weights near 2^-100): planning may pass the
            // tensor through, so it takes no part rather than hold bits of the budget.
            Err(EngineError::Core(CoreError::TooSmall { .. })) => return Ok(Estimate::Out),
            Err(e) => return Err(engine_error(f, t.name)(e)),
        };
        entry.params.push(p);
        entry.candidates.push(Candidate {
            cost_bits,
            // An all-zero sample loses nothing at any setting: the cheapest wins.
            error: if signal > 0.0 { error / signal } else { 0.0 },
        });
    }
    Ok(if entry.params.is_empty() {
        Estimate::Out
    } else {
        Estimate::Allocate(entry)
    })
}

/// The rows sampled from a `rows × cols` tensor: about [`SAMPLE_WEIGHTS`] weights, evenly
/// spaced from the first row (every row of a small tensor).
fn sample_rows(rows: usize, cols: usize) -> Vec<usize> {
    let n = SAMPLE_WEIGHTS.div_ceil(cols).max(MIN_SAMPLE_ROWS).min(rows);
    (0..n).map(|i| i * rows / n).collect()
}

/// Rows `which` of a row-major tensor with `cols` columns, as f32.
fn gather_rows(w: Weights<'_>, cols: usize, which: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(which.len() * cols);
    for &r in which {
        out.extend((r * cols..(r + 1) * cols).map(|i| w.value(i).unwrap_or(0.0)));
    }
    out
}

/// `Σ (w − ŵ)²` of `rows × cols` weights `w` packed with `params` and decoded.
fn sample_error<E: Engine>(
    engine: &E,
    w: &[f32],
    rows: usize,
    cols: usize,
    params: &Params,
) -> std::result::Result<f64, EngineError> {
    let dense = engine.load(Weights::F32(w), rows, cols)?;
    let sel = engine.select(&dense, params)?;
    let mut buf = vec![0u8; packed_len(rows, cols, params.format(), sel.n_outliers)?];
    engine.quantize(&dense, params, &sel, &mut buf)?;
    let packed = engine.load_packed(PackedTensor::parse(&buf)?)?;
    let mut decoded = vec![0f32; rows * cols];
    engine.dequantize_rows(&packed, 0, &mut decoded)?;
    Ok(w.iter()
        .zip(&decoded)
        .map(|(&a, &b)| {
            let d = f64::from(a) - f64::from(b);
            d * d
        })
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_spread_and_bounded() {
        assert_eq!(sample_rows(4, 576), vec![0, 1, 2, 3]);
        let s = sample_rows(1536, 576);
        assert_eq!(s.len(), SAMPLE_WEIGHTS.div_ceil(576));
        assert!(s.windows(2).all(|w| w[0] < w[1]) && *s.last().unwrap() < 1536);
        assert_eq!(sample_rows(10_000, 100_000).len(), MIN_SAMPLE_ROWS);
    }
}
