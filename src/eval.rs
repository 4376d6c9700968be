//! `adpq eval`: its arguments; load the input model and each candidate (adpq
//! checkpoints, RTN baselines, the variants of `--sweep`), tokenize the text, run
//! [`adpq_eval::evaluate`] with progress, and print the table.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use adpq_engine::{CpuEngine, Engine};
use adpq_eval::peer::{LlamaPeer, PeerProjections};
use adpq_eval::{
    Candidate, EvalError, EvalReport, LlamaConfig, Model, PackedProjections, RtnSpec, TextTokenizer,
};
use adpq_io::Checkpoint;
use clap::Args;
use serde::Serialize;

use crate::policy::TensorParams;
use crate::progress::{ConsoleProgress, Progress};
use crate::sweep::{self, Method, RowFamily, SweepSet};
use crate::{choose, open_report, pool, print_stdout, Chosen, RunArgs};

/// The arguments of `adpq eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The input model: a folder with config.json, tokenizer.json and the weights, or a
    /// .safetensors file in such a folder.
    #[arg(long)]
    model: PathBuf,
    /// An adpq checkpoint of the model to score (repeatable).
    #[arg(long, value_name = "CHECKPOINT")]
    quantized: Vec<PathBuf>,
    /// An RTN baseline to score (repeatable): sym or asym, then -gN (group, 128), -bN (bits, 4).
    #[arg(long, value_name = "SPEC")]
    rtn: Vec<RtnSpec>,
    /// Also score the standard sweep, built in memory from the input model: RTN sym/asym
    /// at g 32/64/128, AdpQ v1 at α .02/.06/.10 and v1 asymmetric at g 64, AdpQ v2 at
    /// α .02/.06/.10 and the v2-vproj6 preset, AdpQ v3 at g 64/32 and the v3 preset (see
    /// `cargo xtask sweep` for its table and plot). `--sweep quick` leaves out the uniform
    /// v2 and v3 rows and llama.cpp's slow types.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "full", value_name = "full|quick")]
    sweep: Option<SweepSet>,
    /// English text (UTF-8) to score on.
    #[arg(long, value_name = "FILE")]
    text: PathBuf,
    /// Number of windows, taken one after another from the start of the text.
    #[arg(long, default_value_t = 8)]
    windows: usize,
    /// Tokens per window.
    #[arg(long, default_value_t = 512)]
    window_len: usize,
    /// config.json, when not beside the model.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// tokenizer.json, when not beside the model.
    #[arg(long, value_name = "FILE")]
    tokenizer: Option<PathBuf>,
    /// Write the results as JSON to this file.
    #[arg(long, value_name = "FILE.json")]
    report: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
}

/// `adpq eval`: runs [`eval`] with the arguments, prints the table, writes the JSON.
pub fn run(a: EvalArgs) -> Result<(), Error> {
    // The report never replaces an input (the model, a checkpoint, the text).
    if let Some(path) = &a.report {
        for input in a.quantized.iter().chain([&a.text]) {
            crate::pipeline::check_report_path(path, input, None)?;
        }
    }
    // Created now (and checked against the model), so an unwritable report fails first.
    let report_out = open_report(a.report.as_ref(), &a.model, None)?;
    let opts = EvalOptions {
        model: a.model,
        config: a.config,
        tokenizer: a.tokenizer,
        quantized: a.quantized,
        rtn: a.rtn,
        sweep: a.sweep,
        text: a.text,
        windows: a.windows,
        window_len: a.window_len,
    };
    let chosen = choose(&a.run)?;
    let mut progress = ConsoleProgress::new(a.run.quiet);
    let pool = pool(a.run.threads)?;
    let report = match chosen {
        Chosen::Cuda(cuda) => pool.install(|| eval(&opts, &*cuda, &mut progress)),
        Chosen::Cpu(kernels) => {
            pool.install(|| eval(&opts, &CpuEngine::new(kernels), &mut progress))
        }
    }?;
    // The JSON first: a failed or closed stdout does not lose it.
    if let Some(out) = report_out {
        let names: Vec<String> = opts
            .quantized
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let json = EvalJson {
            report: &report,
            families: sweep::families(&names, &opts.rtn, opts.sweep),
        };
        crate::report::write_json(&out, &json)?;
        crate::signals::commit(|| Ok(out.commit()?))?;
    }
    print_stdout(|out| print_report(out, &report))
}

/// `--report`'s JSON: the figures, and the family of each row (the table and plot of
/// `cargo xtask sweep` group rows by it).
#[derive(Serialize)]
struct EvalJson<'r> {
    #[serde(flatten)]
    report: &'r EvalReport,
    families: Vec<RowFamily>,
}

/// Options of [`eval`].
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// The input model: a folder (config.json, tokenizer.json, weights) or a weights file
    /// whose folder holds the two json files.
    pub model: PathBuf,
    /// `config.json`, when not beside the model.
    pub config: Option<PathBuf>,
    /// `tokenizer.json`, when not beside the model.
    pub tokenizer: Option<PathBuf>,
    /// adpq checkpoints of the same model.
    pub quantized: Vec<PathBuf>,
    /// RTN baselines of the input model.
    pub rtn: Vec<RtnSpec>,
    /// Add the variants of [`sweep::variants`].
    pub sweep: Option<SweepSet>,
    /// The text (UTF-8).
    pub text: PathBuf,
    /// Number of windows.
    pub windows: usize,
    /// Tokens per window.
    pub window_len: usize,
}

/// Scores every candidate against the input model.
pub fn eval<E: Engine + Sync>(
    opts: &EvalOptions,
    engine: &E,
    progress: &mut dyn Progress,
) -> Result<EvalReport> {
    if !opts.model.exists() {
        return Err(Error::Usage(format!(
            "--model {}: no such file or folder",
            opts.model.display()
        )));
    }
    let dir = if opts.model.is_dir() {
        opts.model.clone()
    } else {
        opts.model
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    };
    let config_path = opts
        .config
        .clone()
        .unwrap_or_else(|| dir.join("config.json"));
    let tok_path = opts
        .tokenizer
        .clone()
        .unwrap_or_else(|| dir.join("tokenizer.json"));
    let config = LlamaConfig::from_file(&config_path).map_err(err(&config_path))?;
    let tokenizer = TextTokenizer::from_file(&tok_path).map_err(err(&tok_path))?;
    let text = std::fs::read_to_string(&opts.text).map_err(|e| Error::io(&opts.text, e))?;
    let tokens = tokenizer.encode(&text).map_err(err(&opts.text))?;
    let windows = adpq_eval::windows(&tokens, opts.windows, opts.window_len)
        .map_err(|e| Error::Usage(format!("{}: {e}", opts.text.display())))?;

    let input_ckpt = Checkpoint::open(&opts.model)?;
    let reference = Model::load(config.clone(), &input_ckpt).map_err(err(&opts.model))?;
    let ckpts = opts
        .quantized
        .iter()
        .map(|p| Checkpoint::open(p))
        .collect::<Result<Vec<_>, adpq_io::Error>>()?;
    let mut models = Vec::new();
    for (path, ckpt) in opts.quantized.iter().zip(&ckpts) {
        let m = Model::load(config.clone(), ckpt).map_err(err(path))?;
        models.push((path.display().to_string(), m));
    }
    for spec in &opts.rtn {
        let m = reference.with_rtn(*spec).map_err(err(&opts.model))?;
        models.push((spec.to_string(), m));
    }
    // The sweep's packed variants are quantized up front (each owns its buffers; the
    // models below borrow them), through the same engine as `adpq quantize`.
    let variants = opts.sweep.map(sweep::variants).unwrap_or_default();
    let mut packed = Vec::new();
    let mut decoded = Vec::new();
    for v in &variants {
        if let Method::Llama(kind) = v.method {
            let peer = LlamaPeer::find().ok_or_else(|| {
                Error::Usage("llama.cpp's quantizer is not built (scripts/llama-peer.sh)".into())
            })?;
            progress.line(&format!("sweep: quantizing {} with llama.cpp", v.name));
            decoded.push(
                PeerProjections::quantize(&peer, &reference, kind).map_err(err(&opts.model))?,
            );
        }
    }
    for v in &variants {
        let params = match &v.method {
            Method::Rtn(_) | Method::Llama(_) => continue,
            Method::Adpq(params) => TensorParams::uniform(*params),
            Method::Preset(p) => TensorParams::new(p.base(), p.rules())?,
        };
        progress.line(&format!("sweep: quantizing {}", v.name));
        let p = PackedProjections::quantize_with(&reference, engine, |name| params.of(name))
            .map_err(err(&opts.model))?;
        packed.push(p);
    }
    let (mut packed_iter, mut decoded_iter) = (packed.iter(), decoded.iter());
    for v in &variants {
        let m = match &v.method {
            Method::Rtn(spec) => reference.with_rtn(*spec),
            Method::Llama(_) => decoded_iter
                .next()
                .expect("one decoded set per llama.cpp variant")
                .model(&reference),
            Method::Adpq(_) | Method::Preset(_) => packed_iter
                .next()
                .expect("one packed set per AdpQ variant")
                .model(&reference),
        }
        .map_err(err(&opts.model))?;
        models.push((v.name.clone(), m));
    }
    let candidates: Vec<Candidate<'_>> = models
        .iter()
        .map(|(name, model)| Candidate {
            name: name.clone(),
            model,
        })
        .collect();

    progress.line(&format!(
        "eval: {} windows x {} tokens of {} ({} tokens in all), {} candidate(s)",
        windows.len(),
        opts.window_len,
        opts.text.display(),
        tokens.len(),
        candidates.len()
    ));
    progress.begin((windows.len() * (1 + candidates.len())) as u64);
    let report = adpq_eval::evaluate(&reference, &candidates, &windows, engine, &mut |s| {
        progress.message(&format!(
            "window {}/{}: {}",
            s.window + 1,
            windows.len(),
            s.model
        ));
        progress.note(&format!(
            "window {}/{}: {} done ({}/{})",
            s.window + 1,
            windows.len(),
            s.model,
            s.done,
            s.total
        ));
        progress.advance(1);
    })
    .map_err(err(&opts.model))?;
    progress.finish();
    Ok(report)
}

/// Maps an evaluation error to the CLI's error, naming `path`.
pub(crate) fn err(path: &Path) -> impl Fn(EvalError) -> Error + '_ {
    move |e| match e {
        EvalError::Checkpoint(e) => e.into(),
        EvalError::Io { path, source } => Error::io(path, source),
        other => Error::invalid(path, other.to_string()),
    }
}

/// Prints the table of an [`EvalReport`].
pub fn print_report(out: &mut dyn Write, r: &EvalReport) -> std::io::Result<()> {
    writeln!(
        out,
        "{} windows x {} tokens, {} predictions per model, {:.1} s",
        r.windows, r.window_len, r.predictions, r.seconds
    )?;
    let width = r
        .candidates
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0)
        .max(5);
    writeln!(
        out,
        "{:<width$}  {:>7}  {:>10}  {:>7}  {:>8}  {:>7}  {:>9}",
        "model", "bits/w", "perplexity", "x input", "mean KL", "top-1", "forward s"
    )?;
    for s in std::iter::once(&r.reference).chain(&r.candidates) {
        writeln!(
            out,
            "{:<width$}  {:>7.3}  {:>10.3}  {:>7.4}  {:>8.5}  {:>6.2}%  {:>9.1}",
            s.name,
            s.bits_per_weight,
            s.perplexity,
            s.perplexity_ratio,
            s.mean_kl,
            s.top1_agreement * 100.0,
            s.forward_seconds
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use adpq_eval::Score;

    fn score(name: &str, ppl: f64, kl: f64, top1: f64) -> Score {
        Score {
            name: name.into(),
            bits_per_weight: 4.807,
            perplexity: ppl,
            perplexity_ratio: ppl / 33.06,
            mean_kl: kl,
            top1_agreement: top1,
            forward_seconds: 1.25,
        }
    }

    #[test]
    fn the_table_has_a_row_per_model_with_its_figures() {
        let r = EvalReport {
            windows: 8,
            window_len: 512,
            predictions: 4088,
            reference: score("input", 33.06, 0.0, 1.0),
            candidates: vec![score(
                "a-long-candidate-name.safetensors",
                41.166,
                0.27986,
                0.704,
            )],
            seconds: 20.0,
        };
        let mut out = Vec::new();
        print_report(&mut out, &r).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("8 windows x 512 tokens, 4088 predictions"));
        let row: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(
            row,
            [
                "a-long-candidate-name.safetensors",
                "4.807",
                "41.166",
                "1.2452",
                "0.27986",
                "70.40%",
                "1.2"
            ]
        );
        // Columns line up: every row is as wide as the header.
        assert!(
            lines[1..].iter().all(|l| l.len() == lines[1].len()),
            "{text}"
        );
    }

    /// `cargo xtask sweep` reads these keys of `--report`'s JSON.
    #[test]
    fn the_json_report_holds_the_figures_and_each_rows_family() {
        let r = EvalReport {
            windows: 2,
            window_len: 512,
            predictions: 1022,
            reference: score("input", 33.06, 0.0, 1.0),
            candidates: vec![score("rtn-sym-g128-b4", 53.43, 0.65, 0.559)],
            seconds: 20.0,
        };
        let spec: RtnSpec = "sym".parse().unwrap();
        let json = EvalJson {
            report: &r,
            families: sweep::families(&[], &[spec], None),
        };
        let v = serde_json::to_value(&json).unwrap();
        assert_eq!(v["windows"], 2);
        assert_eq!(v["reference"]["name"], "input");
        let c = &v["candidates"][0];
        assert_eq!(c["name"], "rtn-sym-g128-b4");
        for key in [
            "bits_per_weight",
            "perplexity",
            "perplexity_ratio",
            "mean_kl",
        ] {
            assert!(c[key].is_f64(), "{key}");
        }
        assert_eq!(v["families"][1]["name"], "rtn-sym-g128-b4");
        assert_eq!(v["families"][1]["family"], "RTN sym");
    }
}
