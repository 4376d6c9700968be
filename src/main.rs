//! The `adpq` command line. See `adpq --help` and docs/CLI.md.
//!
//! This binary is the only place with CLI dependencies (clap, indicatif, regex): argument
//! parsing here, the whole-checkpoint commands in [`pipeline`] (generic over
//! [`adpq_engine::Engine`], files through `adpq-io`), figures in [`report`], the
//! progress display in [`progress`] and the include/exclude rule in [`filter`].
//!
//! Exit codes: 0 success, 1 runtime or data error (the message names the file and the
//! tensor), 2 usage error, 128 + the signal when stopped by SIGINT, SIGTERM or SIGHUP
//! ([`signals`]).
#![deny(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

mod error;
mod eval;
mod filter;
mod pipeline;
mod policy;
mod progress;
mod report;
mod signals;
mod sweep;

use crate::error::Error;
use adpq_core::kernels::AnyKernels;
use adpq_core::{FormatVersion, Grid, Params, SelectionMode};
use adpq_engine::{CpuEngine, OutDtype};
use adpq_io::Output;
use clap::{Args, Parser, Subcommand, ValueEnum};
use filter::TensorFilter;
use pipeline::{DequantizeOptions, QuantizeOptions};
use policy::{Preset, TensorParams};
use progress::ConsoleProgress;

#[derive(Parser, Debug)]
#[command(
    name = "adpq",
    version,
    about = "AdpQ: zero-shot ~4-bit quantization of LLM checkpoints (safetensors)",
    after_help = "Exit codes: 0 success, 1 runtime or data error, 2 usage error, 130/143/129 interrupted (SIGINT/SIGTERM/SIGHUP)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Quantize a checkpoint (.safetensors file, or a folder with shards and an index).
    Quantize(QuantizeArgs),
    /// Turn an adpq checkpoint back into a standard safetensors checkpoint.
    Dequantize(DequantizeArgs),
    /// List the tensors of a checkpoint, with the parameters of the quantized ones.
    Inspect(InspectArgs),
    /// Check every packed tensor of an adpq checkpoint (structure and checksum).
    Verify(VerifyArgs),
    /// Perplexity, KL divergence and top-1 agreement of quantized models against the input.
    Eval(eval::EvalArgs),
}

/// Resolves `--backend` (`auto`, `scalar`, `avx2`, `neon`): one detection, then the
/// `Copy` token goes into every parallel closure.
fn backend(name: &str) -> Result<AnyKernels, Error> {
    AnyKernels::by_name(name).map_err(|e| Error::Usage(e.to_string()))
}

/// Most worker threads `--threads` accepts. Far more cannot start on ordinary systems, and
/// some of those failures abort the process inside the standard library (a thread that
/// cannot set up its stack guard), past any error handling.
const MAX_THREADS: usize = 1024;

fn parse_threads(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|e| format!("{e} (a number of threads, 0: one per core)"))?;
    if n > MAX_THREADS {
        return Err(format!("at most {MAX_THREADS} (0: one per core)"));
    }
    Ok(n)
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Worker threads (0: one per core; at most 1024).
    #[arg(long, short = 'j', default_value_t = 0, value_parser = parse_threads)]
    threads: usize,
    /// Compute backend: auto (fastest this CPU supports), scalar, avx2, neon.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct QuantizeArgs {
    /// Input: a .safetensors file, a folder, or a *.safetensors.index.json.
    input: PathBuf,
    /// Output: a file for a file input, a folder for a folder input.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Packed format version: v2 (asymmetric searched inliers, groups below 256), or v1
    /// (the first format: two f16 steps per group; its defaults: --group-size 128
    /// --alpha 0.06, symmetric; no preset) [default: v2].
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Target fraction of outliers per tensor [default: the preset's, 0.04; --preset none:
    /// 0.05; v1: 0.06].
    #[arg(long)]
    alpha: Option<f64>,
    /// Bits per code (2..=8) [default: 4].
    #[arg(long)]
    bits: Option<u8>,
    /// Weights per group along a row (v2: 16..=255; v1: 16..=1024) [default: 64; v1: 128].
    #[arg(long)]
    group_size: Option<u16>,
    /// v1 only: asymmetric (min-max, zero point) grids instead of symmetric ones (v2's
    /// inliers are always asymmetric).
    #[arg(long)]
    asymmetric: bool,
    /// Other bits and/or alpha for the tensors whose names match REGEX, e.g.
    /// 'v_proj=bits:6,alpha:0.05' (repeatable; the first matching rule wins).
    #[arg(long, value_name = "REGEX=bits:N,alpha:X")]
    tensor_params: Vec<String>,
    /// A named policy: its defaults and rules (after --tensor-params' rules).
    /// v2-vproj6: 6-bit codes and alpha 0.05 for v_proj, alpha 0.04 elsewhere; none: v2's
    /// plain defaults (4 bits, alpha 0.05) for every tensor [default: v2-vproj6, with v2].
    #[arg(long, value_enum)]
    preset: Option<Preset>,
    /// Select outliers like the Python reference (Brent search, at most N iterations)
    /// instead of exactly round(alpha*N).
    #[arg(long, value_name = "N")]
    reference_iters: Option<u32>,
    /// Quantize the 2-D float tensors whose names match (replaces the default rule:
    /// `*.weight` without `embed` or `lm_head`).
    #[arg(long, value_name = "REGEX")]
    include: Option<String>,
    /// Do not quantize tensors whose names match.
    #[arg(long, value_name = "REGEX")]
    exclude: Option<String>,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE.json")]
    report: Option<PathBuf>,
    /// Select outliers and print the plan and sizes; write no checkpoint.
    #[arg(long)]
    dry_run: bool,
    /// Skip the error statistics (relative MSE, SQNR, RTN baseline).
    #[arg(long)]
    no_stats: bool,
    /// Print only the totals, not the per-tensor table.
    #[arg(long)]
    summary_only: bool,
    /// Replace an existing output folder.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum FormatArg {
    V1,
    V2,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum DtypeArg {
    F32,
    F16,
    Bf16,
}

#[derive(Args, Debug)]
struct DequantizeArgs {
    /// An adpq checkpoint (file or folder).
    input: PathBuf,
    /// Output file or folder.
    #[arg(short, long)]
    output: PathBuf,
    /// Dtype of the restored tensors (default: each tensor's original dtype).
    #[arg(long, value_enum)]
    dtype: Option<DtypeArg>,
    /// Replace an existing output folder.
    #[arg(long)]
    force: bool,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE.json")]
    report: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct InspectArgs {
    /// A checkpoint (file or folder), quantized or not.
    input: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct VerifyArgs {
    /// An adpq checkpoint (file or folder).
    input: PathBuf,
    /// Worker threads (0: one per core; at most 1024).
    #[arg(long, short = 'j', default_value_t = 0, value_parser = parse_threads)]
    threads: usize,
}

fn pool(threads: usize) -> Result<rayon::ThreadPool, Error> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::Usage(format!("cannot start {threads} threads: {e}")))
}

/// Writes the command's output to stdout and flushes it. A failed write is an error
/// ([`Error::Stdout`], exit 1); a closed pipe (`| head -c1`) is [`Error::BrokenPipe`],
/// which ends the command quietly with 141, as SIGPIPE ends a Unix tool.
fn print_stdout(f: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<(), Error> {
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    f(&mut lock)
        .and_then(|()| lock.flush())
        .map_err(Error::stdout)
}

/// Opens the `--report` output before any work (its temporary file is created now), so
/// a report that cannot be written fails the run before anything else is written. An
/// error too when it would overwrite the input or the output.
pub(crate) fn open_report(
    report: Option<&PathBuf>,
    input: &std::path::Path,
    output: Option<&std::path::Path>,
) -> Result<Option<Output>, Error> {
    let Some(path) = report else {
        return Ok(None);
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    if !parent.is_dir() || path.is_dir() {
        return Err(Error::Usage(format!(
            "--report {}: the folder does not exist or the path is a folder",
            path.display()
        )));
    }
    pipeline::check_report_path(path, input, output)?;
    signals::create(|| Output::file(path)).map(Some)
}

/// Writes the report into its temporary file, then puts the checkpoint and the report in
/// place (in that order): a failure before the renames leaves neither behind.
fn finish(done: pipeline::Done, report_out: Option<Output>) -> Result<report::Report, Error> {
    if let Some(out) = &report_out {
        report::write_json(out, &done.report)?;
    }
    signals::commit(|| {
        let report = done.commit()?;
        if let Some(out) = report_out {
            out.commit()?;
        }
        Ok(report)
    })
}

/// The run's base parameters from `--format`, `--preset` and the flags the user set (a
/// flag left out takes the format's or the preset's default); a usage error when they do
/// not go together.
fn quantize_params(a: &QuantizeArgs) -> Result<Params, Error> {
    let version = match (a.format, effective_preset(a)) {
        (Some(FormatArg::V1), Some(p)) => {
            return Err(Error::Usage(format!(
                "--format v1 cannot be combined with --preset {}",
                p.to_possible_value()
                    .map_or("?".into(), |v| v.get_name().to_string())
            )));
        }
        (Some(FormatArg::V1), None) => FormatVersion::V1,
        (_, Some(p)) => p.version(),
        (Some(FormatArg::V2), None) | (None, None) => FormatVersion::V2,
    };
    let base = match (effective_preset(a), version) {
        (Some(p), _) => p.base(),
        (None, FormatVersion::V1) => Params::DEFAULT,
        (None, FormatVersion::V2) => Params::V2,
    };
    let grid = match version {
        FormatVersion::V2 => Grid::Asymmetric,
        FormatVersion::V1 if a.asymmetric => Grid::Asymmetric,
        FormatVersion::V1 => base.grid,
    };
    let mut params = Params {
        bits: a.bits.unwrap_or(base.bits),
        group_size: a.group_size.unwrap_or(base.group_size),
        alpha: a.alpha.unwrap_or(base.alpha),
        grid,
        version,
        ..base
    };
    if let Some(n) = a.reference_iters {
        params = params.with_selection(SelectionMode::Reference { n_iters: n });
    }
    params.validate().map_err(|e| {
        let format = match version {
            FormatVersion::V1 => "",
            FormatVersion::V2 => "--format v2: ",
        };
        Error::Usage(format!("{format}{e}"))
    })?;
    Ok(params)
}

/// The preset in force: `--preset`, or `v2-vproj6` (the measured best, docs/FORMAT-v2.md)
/// unless `--format v1` asks for the first format.
fn effective_preset(a: &QuantizeArgs) -> Option<Preset> {
    match (a.preset, a.format) {
        (Some(Preset::None), Some(FormatArg::V1)) => None,
        (Some(p), _) => Some(p),
        (None, Some(FormatArg::V1)) => None,
        (None, _) => Some(Preset::V2Vproj6),
    }
}

/// The per-tensor rules: the user's `--tensor-params`, then the preset's.
fn rules(a: &QuantizeArgs) -> Vec<String> {
    let preset = effective_preset(a).map_or(&[][..], Preset::rules);
    a.tensor_params
        .iter()
        .cloned()
        .chain(preset.iter().map(|s| s.to_string()))
        .collect()
}

fn quantize(a: QuantizeArgs) -> Result<(), Error> {
    let report_out = open_report(a.report.as_ref(), &a.input, a.output.as_deref())?;
    let params = quantize_params(&a)?;
    let output = match (&a.output, a.dry_run) {
        (Some(o), _) => o.clone(),
        (None, true) => PathBuf::new(),
        (None, false) => {
            return Err(Error::Usage(
                "missing -o/--output (or use --dry-run)".into(),
            ))
        }
    };
    let opts = QuantizeOptions {
        params: TensorParams::new(params, &rules(&a))?,
        filter: TensorFilter::new(a.include.as_deref(), a.exclude.as_deref())?,
        dry_run: a.dry_run,
        no_stats: a.no_stats,
        force: a.force,
    };
    let b = backend(&a.run.backend)?;
    let mut progress = ConsoleProgress::new(a.run.quiet);
    let pool = pool(a.run.threads)?;
    let done = pool.install(|| {
        pipeline::quantize(&CpuEngine::new(b), &a.input, &output, &opts, &mut progress)
    })?;
    let report = finish(done, report_out)?;
    print_stdout(|out| report.print(out, a.summary_only))?;
    Ok(())
}

fn dequantize(a: DequantizeArgs) -> Result<(), Error> {
    let report_out = open_report(a.report.as_ref(), &a.input, Some(&a.output))?;
    let opts = DequantizeOptions {
        dtype: a.dtype.map(|d| match d {
            DtypeArg::F32 => OutDtype::F32,
            DtypeArg::F16 => OutDtype::F16,
            DtypeArg::Bf16 => OutDtype::Bf16,
        }),
        force: a.force,
    };
    let b = backend(&a.run.backend)?;
    let mut progress = ConsoleProgress::new(a.run.quiet);
    let pool = pool(a.run.threads)?;
    let done = pool.install(|| {
        pipeline::dequantize(
            &CpuEngine::new(b),
            &a.input,
            &a.output,
            &opts,
            &mut progress,
        )
    })?;
    let report = finish(done, report_out)?;
    print_stdout(|out| report.print(out, true))?;
    Ok(())
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Quantize(a) => quantize(a),
        Command::Dequantize(a) => dequantize(a),
        Command::Eval(a) => eval::run(a),
        Command::Inspect(a) => {
            let ins = pipeline::inspect(&a.input)?;
            if a.json {
                print_stdout(|out| {
                    serde_json::to_writer_pretty(&mut *out, &ins)?;
                    writeln!(out)
                })?;
            } else {
                print_stdout(|out| ins.print(out))?;
            }
            Ok(())
        }
        Command::Verify(a) => {
            let n = pool(a.threads)?.install(|| pipeline::verify(&a.input))?;
            print_stdout(|out| {
                writeln!(
                    out,
                    "ok: {n} packed tensor(s) verified in {}",
                    a.input.display()
                )
            })?;
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    // First, before anything can create a file: a signal from now on removes the
    // temporaries and exits with 128 + the signal (see `signals`).
    if let Err(e) = signals::install() {
        progress::stderr_line(&format!("adpq: error: {e}"));
        return ExitCode::from(e.exit_code());
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The signal watcher removes the temporaries, reports and exits.
        Err(e @ Error::Interrupted { .. }) => {
            ExitCode::from(signals::wait_for_watcher(e.exit_code()))
        }
        Err(e) => {
            if e.is_reported() {
                progress::stderr_line(&format!("adpq: error: {e}"));
            }
            ExitCode::from(e.exit_code())
        }
    }
}
