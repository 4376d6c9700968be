//! `cargo xtask bench --quantize [--reps N] [--tensors N] [--dtype bf16|f16|f32]...
//! [--no-stats] [--format v1|v2|v3]`: end-to-end throughput of `adpq quantize` at its
//! defaults (issue 17, goal 1; `--format` to measure another format's), on 1 and 2
//! threads, in one run.
//!
//! Generates a checkpoint of `--tensors` (default 16) 4096×4096 Student-t (ν = 4)
//! matrices per input dtype into `target/bench/quantize/` (kept between runs; about
//! 537 MB in BF16), runs `adpq quantize IN -o OUT --threads T` (statistics included
//! unless `--no-stats`) and reports the best of `--reps` wall-clock runs (default 2) as
//! GB/s of input and M weights/s, with the 2-thread / 1-thread ratio, and (at the
//! defaults) one line per input type on goal 1. Beside it, when
//! `scripts/llama-bench.sh` has built it, llama.cpp's own `llama-quantize` requantizing
//! SmolLM2-135M's Q4_1 GGUF to Q4_0 and Q4_K_M on the same thread counts (its input
//! differs, so its figure is weights/s only). Each adpq run is timed under
//! `/usr/bin/time` too, and its weights per CPU second (user + system) printed: on a
//! shared machine the wall clock counts other processes' time slices. Prints a table and writes
//! `target/bench/quantize.json`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{json, Value};

use crate::{project_root, run_checked, DynResult};

/// Threads measured.
const THREADS: [usize; 2] = [1, 2];
/// Rows and columns of each generated matrix.
const SHAPE: (usize, usize) = (4096, 4096);

/// One row of the table.
struct Row {
    name: String,
    weights: u64,
    input_bytes: Option<u64>,
    /// Best wall-clock seconds per thread count.
    secs: Vec<f64>,
    /// CPU seconds (user + system) of those runs, when measured.
    cpu: Vec<f64>,
}

/// Entry point.
pub fn run(args: &[String]) -> DynResult {
    let mut reps = 2usize;
    let mut tensors = 16usize;
    let mut dtypes: Vec<String> = Vec::new();
    let mut extra: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--reps" => reps = it.next().ok_or("--reps needs a number")?.parse()?,
            "--tensors" => tensors = it.next().ok_or("--tensors needs a number")?.parse()?,
            "--dtype" => dtypes.push(it.next().ok_or("--dtype needs bf16|f16|f32")?.clone()),
            "--no-stats" => extra.push(a.clone()),
            // Another format than the default (v3), e.g. v2 for the figure before it.
            "--format" => {
                let f = it.next().ok_or("--format needs v1|v2|v3")?;
                extra.extend([a.clone(), f.clone()]);
            }
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    if dtypes.is_empty() {
        dtypes = ["bf16", "f16", "f32"].map(String::from).to_vec();
    }
    let root = project_root();
    let adpq = crate::build_release_adpq()?;
    let dir = root.join("target/bench/quantize");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("out.safetensors");
    let times = dir.join("time.txt");
    if !Path::new("/usr/bin/time").exists() {
        return Err("/usr/bin/time (GNU time) is needed: apt-get install time".into());
    }

    let mut rows = Vec::new();
    for dtype in &dtypes {
        let input = generate(&dir, dtype, tensors)?;
        let weights = (tensors * SHAPE.0 * SHAPE.1) as u64;
        let (mut secs, mut cpu) = (Vec::new(), Vec::new());
        for t in THREADS {
            let (mut best, mut cpu_of_best) = (f64::INFINITY, 0f64);
            for _ in 0..reps {
                let t0 = Instant::now();
                run_checked(
                    Command::new("/usr/bin/time")
                        .args(["-f", "%U %S", "-o"])
                        .arg(&times)
                        .arg(&adpq)
                        .arg("quantize")
                        .arg(&input)
                        .arg("-o")
                        .arg(&out)
                        .args(["--force", "-q", "--threads", &t.to_string()])
                        .args(&extra)
                        // Its report: the bench prints its own table.
                        .stdout(Stdio::null())
                        .stderr(Stdio::null()),
                )?;
                let wall = t0.elapsed().as_secs_f64();
                if wall < best {
                    best = wall;
                    let text = std::fs::read_to_string(&times)?;
                    cpu_of_best = text
                        .split_whitespace()
                        .map(str::parse::<f64>)
                        .sum::<Result<f64, _>>()?;
                }
            }
            secs.push(best);
            cpu.push(cpu_of_best);
        }
        rows.push(Row {
            name: format!(
                "adpq defaults, {dtype}{}",
                extra.iter().map(|e| format!(" {e}")).collect::<String>()
            ),
            weights,
            input_bytes: Some(std::fs::metadata(&input)?.len()),
            secs,
            cpu,
        });
    }
    std::fs::remove_file(&out).ok();
    std::fs::remove_file(&times).ok();
    rows.extend(llama_rows(&root, reps)?);

    print!("{}", table(&rows));
    if extra.is_empty() {
        print!("{}", quantize_goals(&rows));
    }
    let json: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({"name": r.name, "weights": r.weights, "input_bytes": r.input_bytes,
                   "runs": THREADS.iter().zip(&r.secs).map(|(t, s)| json!({
                       "threads": t, "seconds": s,
                       "weights_per_s": r.weights as f64 / s,
                       "input_bytes_per_s": r.input_bytes.map(|b| b as f64 / s),
                   })).collect::<Vec<_>>(),
                   "cpu_seconds": r.cpu})
        })
        .collect();
    let path = root.join("target/bench/quantize.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")?;
    eprintln!("xtask bench --quantize: wrote {}", path.display());
    Ok(())
}

/// The generated checkpoint of `tensors` Student-t matrices in `dtype` (made once).
fn generate(dir: &Path, dtype: &str, tensors: usize) -> DynResult<PathBuf> {
    let path = dir.join(format!("student-t-{tensors}x4096x4096-{dtype}.safetensors"));
    if path.exists() {
        return Ok(path);
    }
    let (name, width) = match dtype {
        "bf16" => ("BF16", 2),
        "f16" => ("F16", 2),
        "f32" => ("F32", 4),
        other => return Err(format!("unknown dtype `{other}` (bf16, f16, f32)").into()),
    };
    eprintln!("xtask bench --quantize: generating {}", path.display());
    let n = SHAPE.0 * SHAPE.1;
    let mut header = String::from("{");
    for i in 0..tensors {
        let (a, b) = (i * n * width, (i + 1) * n * width);
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"model.layers.{i}.mlp.up_proj.weight\":{{\"dtype\":\"{name}\",\
             \"shape\":[{},{}],\"data_offsets\":[{a},{b}]}}",
            SHAPE.0, SHAPE.1
        ));
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    f.write_all(&(header.len() as u64).to_le_bytes())?;
    f.write_all(header.as_bytes())?;
    let mut rng = StudentT::new(0x5EED);
    let mut buf = Vec::with_capacity(n * width);
    for _ in 0..tensors {
        buf.clear();
        for _ in 0..n {
            let x = rng.next() * 0.02;
            match width {
                4 => buf.extend_from_slice(&x.to_le_bytes()),
                _ if name == "BF16" => buf.extend_from_slice(&bf16_bits(x).to_le_bytes()),
                _ => buf.extend_from_slice(&f16_bits(x).to_le_bytes()),
            }
        }
        f.write_all(&buf)?;
    }
    f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Student-t samples with 4 degrees of freedom: `z / sqrt(χ²₄ / 4)` (xorshift, Box–Muller).
struct StudentT {
    s: u64,
}

impl StudentT {
    fn new(seed: u64) -> Self {
        StudentT { s: seed | 1 }
    }

    fn uniform(&mut self) -> f64 {
        self.s ^= self.s << 13;
        self.s ^= self.s >> 7;
        self.s ^= self.s << 17;
        ((self.s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    fn next(&mut self) -> f32 {
        let z = self.normal();
        let chi2: f64 = (0..4).map(|_| self.normal().powi(2)).sum();
        (z / (chi2 / 4.0).sqrt()) as f32
    }
}

/// BF16 bits of `x`, rounded to nearest even (finite inputs).
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// F16 bits of `x` (|x| well inside F16's normal range, or flushed to a signed zero).
fn f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xFF) as i32 - 127 + 15;
    if exp <= 0 {
        return sign;
    }
    if exp >= 31 {
        return sign | 0x7BFF;
    }
    let mant = b & 0x7F_FFFF;
    // Round the 23-bit mantissa to 10 bits, to nearest even; a carry moves the exponent.
    let m = mant + 0xFFF + ((mant >> 13) & 1);
    let v = ((exp as u32) << 10) + (m >> 13);
    sign | v.min(0x7BFF) as u16
}

/// llama.cpp's quantizer on SmolLM2's Q4_1 GGUF, when `scripts/llama-bench.sh` built it.
fn llama_rows(root: &Path, reps: usize) -> DynResult<Vec<Row>> {
    let bin = root.join("target/llama-bench/bin");
    let gguf = root.join("target/data/gguf/SmolLM2-135M-Instruct.Q4_1.gguf");
    let quantize = bin.join("llama-quantize");
    if !quantize.exists() || !gguf.exists() {
        eprintln!(
            "xtask bench --quantize: no llama.cpp peer (run scripts/llama-bench.sh to build it)"
        );
        return Ok(Vec::new());
    }
    let out = root.join("target/bench/quantize/llama-out.gguf");
    let mut rows = Vec::new();
    for ty in ["Q4_0", "Q4_K_M"] {
        let mut secs = Vec::new();
        for t in THREADS {
            let mut best = f64::INFINITY;
            for _ in 0..reps {
                let t0 = Instant::now();
                run_checked(
                    Command::new(&quantize)
                        .env("LD_LIBRARY_PATH", &bin)
                        .arg("--allow-requantize")
                        .arg(&gguf)
                        .arg(&out)
                        .arg(ty)
                        .arg(t.to_string())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null()),
                )?;
                best = best.min(t0.elapsed().as_secs_f64());
            }
            secs.push(best);
        }
        rows.push(Row {
            name: format!("llama-quantize SmolLM2 Q4_1 -> {ty}"),
            // SmolLM2-135M's weights (every tensor of the GGUF is requantized).
            weights: 134_515_008,
            input_bytes: None,
            secs,
            cpu: Vec::new(),
        });
    }
    std::fs::remove_file(&out).ok();
    Ok(rows)
}

/// Goal 1's bar on 2 threads: 1 GB/s of BF16 input, in weights per second (the same
/// weights/s for every input type).
const GOAL_WEIGHTS_PER_S: f64 = 500e6;
/// Goal 1's bar for 2 threads over 1.
const GOAL_SCALING: f64 = 1.8;

/// Issue 17, goal 1, one line per adpq row (at the defaults): its 2-thread weights/s
/// against [`GOAL_WEIGHTS_PER_S`] and its 2t/1t against [`GOAL_SCALING`].
fn quantize_goals(rows: &[Row]) -> String {
    let verdict = |met: bool| if met { "met" } else { "not met" };
    let mut s = String::new();
    for r in rows.iter().filter(|r| r.input_bytes.is_some()) {
        let &[one, two] = r.secs.as_slice() else {
            continue;
        };
        let rate = r.weights as f64 / two;
        let scaling = one / two;
        s.push_str(&format!(
            "goal 1 (quantize ≥ {:.0} M weights/s = 1 GB/s of BF16 on 2 threads, 2t ≥ \
             {GOAL_SCALING}× 1t), {}: {:.0} M weights/s = {:.2}× — {}; 2t/1t {scaling:.2} — {}\n",
            GOAL_WEIGHTS_PER_S / 1e6,
            r.name,
            rate / 1e6,
            rate / GOAL_WEIGHTS_PER_S,
            verdict(rate >= GOAL_WEIGHTS_PER_S),
            verdict(scaling >= GOAL_SCALING),
        ));
    }
    s
}

/// The markdown table of the rows.
fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| input | 1 thread | 2 threads | 2t / 1t | M weights per CPU second, 1t / 2t |\n\
         |---|---|---|---|---|\n",
    );
    for r in rows {
        let cell = |secs: f64| match r.input_bytes {
            Some(b) => format!(
                "{:.3} GB/s ({:.0} M weights/s)",
                b as f64 / secs / 1e9,
                r.weights as f64 / secs / 1e6
            ),
            None => format!("{:.0} M weights/s", r.weights as f64 / secs / 1e6),
        };
        let per_cpu = match r.cpu.as_slice() {
            [a, b] => format!(
                "{:.0} / {:.0}",
                r.weights as f64 / a / 1e6,
                r.weights as f64 / b / 1e6
            ),
            _ => String::new(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {:.2} | {per_cpu} |\n",
            r.name,
            cell(r.secs[0]),
            cell(r.secs[1]),
            r.secs[0] / r.secs[1]
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A goal line per adpq row, none for llama.cpp's rows (no input bytes), each half
    /// judged on its own.
    #[test]
    fn quantize_goals_judge_rate_and_scaling() {
        let adpq = |name: &str, secs: [f64; 2]| Row {
            name: name.into(),
            weights: 1_000_000_000,
            input_bytes: Some(2_000_000_000),
            secs: secs.to_vec(),
            cpu: Vec::new(),
        };
        let rows = [
            adpq("adpq defaults, bf16", [6.0, 3.2]),
            adpq("adpq defaults, f32", [2.0, 1.9]),
            Row {
                input_bytes: None,
                ..adpq("llama-quantize", [1.0, 0.5])
            },
        ];
        let text = quantize_goals(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("bf16: 312 M weights/s = 0.62× — not met; 2t/1t 1.88 — met"));
        assert!(lines[1].contains("f32: 526 M weights/s = 1.05× — met; 2t/1t 1.05 — not met"));
    }
}
