//! Project automation: `cargo xtask <task>` (alias in `.cargo/config.toml`).
//!
//! Each task lives in its own module. Cargo is invoked through `$CARGO` so the same
//! toolchain that runs xtask builds the project.

mod bench;
mod decode_bench;
mod demo;
mod fuzz;
mod memory;
mod nostd;
mod quantize_bench;
mod sweep;

use std::process::ExitCode;

/// Error type of the tasks: a message for the user.
pub type DynResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

const USAGE: &str = "usage: cargo xtask <task> [args]

tasks:
  demo [--model minilm|smollm2]  fetch a real checkpoint, quantize it, print the report
  fetch                          fetch the real checkpoints into target/data
  bench [--quick]                run the benchmarks, print a table, write target/bench/summary.json
  bench --decode [--reps N]      adpq generate tokens/s beside llama.cpp's llama-bench
  bench --quantize [--reps N] [--tensors N] [--dtype bf16|f16|f32]... [--no-stats] [--format v1|v2|v3]
                                 adpq quantize GB/s on 1 and 2 threads (Student-t
                                 checkpoints generated in target/bench/quantize)
  fuzz [SECONDS]                 run each cargo-fuzz target for SECONDS (default 20)
  memory [--quick] [--only tiny|big] [--bin PATH] [--keep]
                                 peak memory and time (/usr/bin/time -v) of quantize,
                                 dequantize, verify, inspect on 1e5..1e6 tiny tensors and
                                 one 1e8-weight tensor (generated in target/memory)
  nostd                          prove adpq-core is no_std (host binary + thumbv7em build)
  sweep [--quick] [--windows N] [--threads N] [--update-docs] [--plot-only]
                                 quality of every standard variant on SmolLM2-135M (8 x 512
                                 tokens; --quick: 2 windows): target/sweep/sweep.{md,json,png};
                                 --update-docs copies the plot to docs/sweep.png;
                                 --plot-only redraws table and plot from sweep.json
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(task) = args.first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    let result = match task.as_str() {
        "demo" => demo::run(rest),
        "fetch" => demo::fetch(rest),
        "bench" => bench::run(rest),
        "fuzz" => fuzz::run(rest),
        "memory" => memory::run(rest),
        "nostd" => nostd::run(rest),
        "sweep" => sweep::run(rest),
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("unknown task `{other}`\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of `xtask/`).
pub fn project_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the root")
        .to_path_buf()
}

/// `cargo`, as the one running this task.
pub fn cargo() -> std::process::Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(project_root());
    cmd
}

/// Builds the release `adpq` binary and returns its path (under `CARGO_TARGET_DIR` when
/// set).
pub fn build_release_adpq() -> DynResult<std::path::PathBuf> {
    run_checked(cargo().args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "adpq",
        "--bin",
        "adpq",
    ]))?;
    let root = project_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), std::path::PathBuf::from);
    let target = if target.is_absolute() {
        target
    } else {
        root.join(target)
    };
    Ok(target.join("release/adpq"))
}

/// Runs a command, failing with its description when it exits non-zero.
pub fn run_checked(cmd: &mut std::process::Command) -> DynResult {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !status.success() {
        return Err(format!("{cmd:?} failed with {status}").into());
    }
    Ok(())
}
