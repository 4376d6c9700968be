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

mod alloc;
mod error;
mod eval;
mod filter;
mod generate;
mod pipeline;
mod policy;
mod progress;
mod report;
mod signals;
mod sweep;

use crate::error::Error;
use adpq_core::kernels::AnyKernels;
use adpq_engine::{CpuEngine, OutDtype};
use adpq_io::Output;
use clap::{Args, Parser, Subcommand, ValueEnum};
use filter::TensorFilter;
use pipeline::{DequantizeOptions, QuantizeOptions};
use policy::ParamArgs;
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
    /// Generate text token by token on an adpq checkpoint's packed weights (or the
    /// model's own), with a KV cache; prints the text and tokens per second.
    Generate(generate::GenerateArgs),
}

/// Resolves `--backend` (`auto`, `scalar`, `avx2`, `avx-vnni`, `neon`): one detection, then the
/// `Copy` token goes into every parallel closure.
fn backend(name: &str) -> Result<AnyKernels, Error> {
    AnyKernels::by_name(name).map_err(|e| Error::Usage(e.to_string()))
}

/// The engine `--backend` names: `cuda` (an error without a usable device, before any
/// output exists), `auto` (CUDA when usable, said on stderr; else the fastest CPU
/// kernels, with a one-line notice), or CPU kernels by name.
pub(crate) enum Chosen {
    Cuda(Box<adpq_cuda::CudaEngine>),
    Cpu(AnyKernels),
}

pub(crate) fn choose(run: &RunArgs) -> Result<Chosen, Error> {
    let cuda = || adpq_cuda::CudaEngine::new();
    match run.backend.as_str() {
        "cuda" => cuda()
            .map(|e| Chosen::Cuda(Box::new(e)))
            .map_err(|e| Error::Usage(format!("--backend cuda: {e}"))),
        "auto" => match cuda() {
            Ok(e) => {
                if !run.quiet {
                    eprintln!("adpq: using {}", adpq_engine::Engine::name(&e));
                }
                Ok(Chosen::Cuda(Box::new(e)))
            }
            Err(why) => {
                let b = backend("auto")?;
                if !run.quiet {
                    eprintln!(
                        "adpq: CUDA not used ({why}); CPU backend {}",
                        adpq_core::CpuKernels::name(&b)
                    );
                }
                Ok(Chosen::Cpu(b))
            }
        },
        name => backend(name).map(Chosen::Cpu),
    }
}

/// Runs `$body` with `$e` bound to the chosen engine (the pipeline is generic over it).
macro_rules! with_engine {
    ($chosen:expr, |$e:ident| $body:expr) => {
        match $chosen {
            Chosen::Cuda(cuda) => {
                let $e = &*cuda;
                $body
            }
            Chosen::Cpu(b) => {
                let $e = &CpuEngine::new(b);
                $body
            }
        }
    };
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
    /// Compute backend: auto (CUDA when usable, else the fastest this CPU supports),
    /// cuda, scalar, avx2, avx-vnni, neon.
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
    #[command(flatten)]
    params: ParamArgs,
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

/// Puts the checkpoint and the report (written into its temporary file by the run's
/// [`report::TensorLog`]) in place, in that order: a failure before the renames leaves
/// neither behind.
fn finish(done: pipeline::Done, report_out: Option<Output>) -> Result<report::Report, Error> {
    signals::commit(|| {
        let report = done.commit()?;
        if let Some(out) = report_out {
            out.commit()?;
        }
        Ok(report)
    })
}

fn quantize(a: QuantizeArgs) -> Result<(), Error> {
    let report_out = open_report(a.report.as_ref(), &a.input, a.output.as_deref())?;
    let params = a.params.resolve()?;
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
        params,
        filter: TensorFilter::new(a.include.as_deref(), a.exclude.as_deref())?
            .taking_tied_embedding(a.params.takes_tied_embedding()),
        dry_run: a.dry_run,
        no_stats: a.no_stats,
        force: a.force,
    };
    let chosen = choose(&a.run)?;
    let mut progress = ConsoleProgress::new(a.run.quiet);
    let pool = pool(a.run.threads)?;
    let log = report::TensorLog::new(report_out.as_ref(), !a.summary_only)?;
    let done = with_engine!(chosen, |e| pool.install(|| {
        pipeline::quantize(e, &a.input, &output, &opts, &mut progress, log)
    }))?;
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
    let chosen = choose(&a.run)?;
    let mut progress = ConsoleProgress::new(a.run.quiet);
    let pool = pool(a.run.threads)?;
    // The table is never printed (only the totals): no rows to keep.
    let log = report::TensorLog::new(report_out.as_ref(), false)?;
    let done = with_engine!(chosen, |e| pool.install(|| {
        pipeline::dequantize(e, &a.input, &a.output, &opts, &mut progress, log)
    }))?;
    let report = finish(done, report_out)?;
    print_stdout(|out| report.print(out, true))?;
    Ok(())
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Quantize(a) => quantize(a),
        Command::Dequantize(a) => dequantize(a),
        Command::Eval(a) => eval::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Inspect(a) => {
            let ins = pipeline::inspect(&a.input)?;
            // Buffered: the listing comes a line per tensor.
            print_stdout(|out| {
                let mut out = std::io::BufWriter::new(out);
                if a.json {
                    ins.write_json(&mut out)?;
                } else {
                    ins.print(&mut out)?;
                }
                out.flush()
            })?;
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
        // An error met while the watcher removes the temporaries (one vanished from under
        // the run) is the signal's doing: the watcher reports it and exits 128 + signal.
        Err(e) if signals::stopping() => ExitCode::from(signals::wait_for_watcher(e.exit_code())),
        Err(e) => {
            if e.is_reported() {
                progress::stderr_line(&format!("adpq: error: {e}"));
            }
            ExitCode::from(e.exit_code())
        }
    }
}
