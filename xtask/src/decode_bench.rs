//! `cargo xtask bench --decode [--reps N]`: tokens per second of `adpq generate` on
//! SmolLM2-135M's packed weights beside llama.cpp's `llama-bench` tg64 on the same
//! model requantized to Q4_0 and Q4_K_M, on 1 and 2 threads, in one run.
//!
//! `scripts/llama-bench.sh` builds llama.cpp (pinned source, native SIMD) and
//! requantizes the model; the adpq checkpoints are made here into `target/bench/decode/`
//! with `adpq quantize` (v2 default, v3 preset, and v3 with the tied embedding / output
//! projection at 6 bits, which llama.cpp's files quantize too). Each adpq figure is the
//! best of `--reps` runs (default 3) of 64 generated tokens after a 5-token prompt; each
//! llama.cpp figure is `llama-bench -p 0 -n 64 -r N`'s mean. Prints a table and writes
//! `target/bench/decode.json`.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::{project_root, run_checked, DynResult};

/// Threads measured.
const THREADS: [usize; 2] = [1, 2];
/// Tokens generated per run (llama-bench's tg64).
const TOKENS: usize = 64;
const PROMPT: &str = "The capital of France is";

/// One adpq checkpoint of the bench: its name and `adpq quantize` flags.
const ADPQ: [(&str, &[&str]); 3] = [
    ("adpq v2 (default)", &[]),
    ("adpq v3 (preset v3)", &["--format", "v3"]),
    (
        "adpq v3, 6-bit embedding/output",
        &[
            "--format",
            "v3",
            "--include",
            r"\.weight$",
            "--exclude",
            "norm",
            "--tensor-params",
            "embed_tokens=bits:6",
        ],
    ),
];
/// llama.cpp types, as `scripts/llama-bench.sh` names its models.
const LLAMA: [&str; 2] = ["Q4_0", "Q4_K_M"];

/// One row of the table: tokens/s per thread count.
struct Row {
    name: String,
    mib: f64,
    tps: Vec<f64>,
}

/// Entry point.
pub fn run(args: &[String]) -> DynResult {
    let mut reps = 3usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--reps" => reps = it.next().ok_or("--reps needs a number")?.parse()?,
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    let root = project_root();
    let data = root.join("target/data");
    if !data.join("smollm2/model.safetensors").exists() {
        crate::demo::fetch(&[])?;
    }
    run_checked(Command::new("bash").arg(root.join("scripts/llama-bench.sh")))?;
    let adpq = crate::build_release_adpq()?;
    let out_dir = root.join("target/bench/decode");
    std::fs::create_dir_all(&out_dir)?;

    let mut rows = Vec::new();
    for (i, (name, flags)) in ADPQ.iter().enumerate() {
        let file = out_dir.join(format!("smollm2-{i}.safetensors"));
        eprintln!("xtask bench --decode: adpq quantize {flags:?}");
        run_checked(
            Command::new(&adpq)
                .arg("quantize")
                .arg(data.join("smollm2/model.safetensors"))
                .arg("-o")
                .arg(&file)
                .args(["--force", "-q"])
                .args(*flags),
        )?;
        let mut tps = Vec::new();
        for t in THREADS {
            let best = (0..reps)
                .map(|_| generate_tps(&adpq, &data.join("smollm2"), &file, t))
                .collect::<DynResult<Vec<f64>>>()?
                .into_iter()
                .fold(0f64, f64::max);
            tps.push(best);
        }
        rows.push(Row {
            name: name.to_string(),
            mib: mib(&file)?,
            tps,
        });
    }
    let lb = root.join("target/llama-bench");
    for ty in LLAMA {
        let model = lb.join(format!("models/smollm2-{ty}.gguf"));
        rows.push(Row {
            name: format!("llama.cpp {ty}"),
            mib: mib(&model)?,
            tps: llama_tps(&lb.join("build/bin"), &model, reps)?,
        });
    }
    print!("{}", table(&rows));
    let json: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({"weights": r.name, "file_mib": r.mib,
                   "tokens_per_s": THREADS.iter().zip(&r.tps)
                       .map(|(t, v)| json!({"threads": t, "tg64": v})).collect::<Vec<_>>()})
        })
        .collect();
    let path = root.join("target/bench/decode.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")?;
    eprintln!("xtask bench --decode: wrote {}", path.display());
    Ok(())
}

fn mib(path: &Path) -> DynResult<f64> {
    Ok(std::fs::metadata(path)?.len() as f64 / (1024.0 * 1024.0))
}

/// Decode tokens/s of one `adpq generate` run (from its stderr line).
fn generate_tps(adpq: &Path, model: &Path, file: &Path, threads: usize) -> DynResult<f64> {
    let out = Command::new(adpq)
        .arg("generate")
        .arg("--model")
        .arg(model)
        .arg("--quantized")
        .arg(file)
        .args(["--prompt", PROMPT, "-n", &TOKENS.to_string()])
        .args(["-j", &threads.to_string()])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("adpq generate failed: {err}").into());
    }
    // "... generated 64 tokens in 2.51 s (25.5 tokens/s); ..."
    let tail = err
        .split("generated ")
        .nth(1)
        .and_then(|s| s.split('(').nth(1))
        .and_then(|s| s.split(' ').next())
        .ok_or_else(|| format!("no tokens/s in adpq generate's output: {err}"))?;
    Ok(tail.parse()?)
}

/// `llama-bench`'s tg64 mean tokens/s per thread count.
fn llama_tps(bin: &Path, model: &Path, reps: usize) -> DynResult<Vec<f64>> {
    let threads: Vec<String> = THREADS.iter().map(|t| t.to_string()).collect();
    let out = Command::new(bin.join("llama-bench"))
        .env("LD_LIBRARY_PATH", bin)
        .arg("-m")
        .arg(model)
        .args([
            "-p",
            "0",
            "-n",
            &TOKENS.to_string(),
            "-r",
            &reps.to_string(),
        ])
        .args(["-t", &threads.join(","), "-o", "json"])
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "llama-bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    THREADS
        .iter()
        .map(|&t| {
            v.as_array()
                .into_iter()
                .flatten()
                .find(|r| r["n_threads"].as_u64() == Some(t as u64))
                .and_then(|r| r["avg_ts"].as_f64())
                .ok_or_else(|| format!("llama-bench printed no result for {t} thread(s)").into())
        })
        .collect()
}

/// The table: tokens/s per thread count and the ratio to llama.cpp's Q4_0 in this run.
fn table(rows: &[Row]) -> String {
    use std::fmt::Write as _;
    let q4_0 = rows.iter().find(|r| r.name == "llama.cpp Q4_0");
    let mut s = String::from(
        "| weights | file MiB | tg64, 1 thread | vs Q4_0 | tg64, 2 threads | vs Q4_0 |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = write!(s, "| {} | {:.1} |", r.name, r.mib);
        for (i, v) in r.tps.iter().enumerate() {
            let ratio = q4_0.map_or(String::new(), |q| format!("{:.2}×", v / q.tps[i]));
            let _ = write!(s, " {v:.1} t/s | {ratio} |");
        }
        s.push('\n');
    }
    s
}
