//! `cargo xtask memory [--quick] [--only tiny|big] [--bin PATH] [--keep]`: peak memory and time of `adpq`
//! on synthetic checkpoints with many tiny tensors and with one huge tensor, measured
//! with `/usr/bin/time -v` (maximum resident set size, wall-clock time).
//!
//! The checkpoints are generated here into `target/memory/` (deleted afterwards unless
//! `--keep`): `N` tiny 2×64 F16 tensors named `l.I.weight` (each quantized: v2 packs it
//! below its 256 bytes) for N in 10⁵, 3·10⁵, 10⁶ (`--quick`: 10⁴, 3·10⁴, 10⁵; above
//! 3·10⁵ a sharded folder of 3·10⁵ per file, since a file's header holds at most 100 MB),
//! and one
//! 1×10⁸ F32 tensor (`--quick`: 1×10⁷). Each runs `quantize`, then `dequantize`,
//! `verify` and `inspect` on the result. `--only tiny` runs the tiny-tensor cases only,
//! `--only big` the huge tensor only. `--bin` measures another build of `adpq` (an
//! older one, for a before/after table); by default the release build of this tree.
//! Prints a Markdown table (README "Untrusted input").

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{cargo, project_root, run_checked, DynResult};

/// One measured command.
struct Row {
    case: String,
    command: &'static str,
    max_rss_mb: f64,
    wall_s: f64,
    cpu_s: f64,
}

pub fn run(args: &[String]) -> DynResult {
    let quick = args.iter().any(|a| a == "--quick");
    let keep = args.iter().any(|a| a == "--keep");
    let only = match args.iter().position(|a| a == "--only") {
        Some(i) => match args.get(i + 1).map(String::as_str) {
            Some(o @ ("tiny" | "big")) => Some(o),
            _ => return Err("--only takes `tiny` or `big`".into()),
        },
        None => None,
    };
    let bin = match args.iter().position(|a| a == "--bin") {
        Some(i) => PathBuf::from(args.get(i + 1).ok_or("--bin needs a path")?),
        None => {
            run_checked(cargo().args(["build", "--release", "-p", "adpq"]))?;
            project_root().join("target/release/adpq")
        }
    };
    if !Path::new("/usr/bin/time").exists() {
        return Err("/usr/bin/time (GNU time) is needed: apt-get install time".into());
    }
    let dir = project_root().join("target/memory");
    std::fs::create_dir_all(&dir)?;
    let counts: &[usize] = match (only, quick) {
        (Some("big"), _) => &[],
        (_, true) => &[10_000, 30_000, 100_000],
        (_, false) => &[100_000, 300_000, 1_000_000],
    };
    let big: usize = if quick { 10_000_000 } else { 100_000_000 };

    let mut rows = Vec::new();
    for &n in counts {
        // One safetensors file's header holds at most 100 MB (the readers' limit), about
        // 7·10⁵ such tensors once quantized: 10⁶ go into a sharded folder.
        let (input, case) = if n <= SHARD {
            let input = dir.join(format!("tiny-{n}.safetensors"));
            tiny_file(&input, 0, n)?;
            (input, format!("{n} tensors 2x64 F16"))
        } else {
            let input = dir.join(format!("tiny-{n}"));
            tiny_folder(&input, n)?;
            let shards = n.div_ceil(SHARD);
            (input, format!("{n} tensors 2x64 F16, {shards} shards"))
        };
        measure_all(&bin, &dir, &input, &case, &mut rows)?;
        if !keep {
            let _ = std::fs::remove_file(&input);
            let _ = std::fs::remove_dir_all(&input);
        }
    }
    if only != Some("tiny") {
        let input = dir.join(format!("big-{big}.safetensors"));
        big_checkpoint(&input, big)?;
        measure_all(
            &bin,
            &dir,
            &input,
            &format!("1 tensor 1x{big} F32"),
            &mut rows,
        )?;
        if !keep {
            let _ = std::fs::remove_file(&input);
        }
    }

    println!("adpq: {}", bin.display());
    println!("| checkpoint | command | peak RSS (MB) | wall (s) | CPU (s) |");
    println!("|---|---|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} |",
            r.case, r.command, r.max_rss_mb, r.wall_s, r.cpu_s
        );
    }
    Ok(())
}

/// Tensors per shard of a generated folder.
const SHARD: usize = 300_000;

/// quantize, dequantize, verify and inspect of `input`, appended to `rows`.
fn measure_all(bin: &Path, dir: &Path, input: &Path, case: &str, rows: &mut Vec<Row>) -> DynResult {
    let (q, d) = match input.is_dir() {
        true => (dir.join("q"), dir.join("d")),
        false => (dir.join("q.safetensors"), dir.join("d.safetensors")),
    };
    for o in [&q, &d] {
        let _ = std::fs::remove_file(o);
        let _ = std::fs::remove_dir_all(o);
    }
    let runs: [(&'static str, Vec<&Path>); 4] = [
        ("quantize", vec![input, Path::new("-o"), &q]),
        ("dequantize", vec![&q, Path::new("-o"), &d]),
        ("verify", vec![&q]),
        ("inspect", vec![&q]),
    ];
    for (command, args) in runs {
        let (max_rss_mb, wall_s, cpu_s) = time_v(bin, command, &args)?;
        eprintln!("{case}: {command}: {max_rss_mb:.0} MB, {wall_s:.2} s, CPU {cpu_s:.2} s");
        rows.push(Row {
            case: case.to_string(),
            command,
            max_rss_mb,
            wall_s,
            cpu_s,
        });
    }
    for o in [&q, &d] {
        let _ = std::fs::remove_file(o);
        let _ = std::fs::remove_dir_all(o);
    }
    Ok(())
}

/// Runs `adpq COMMAND ARGS -q` (stdout discarded) under `/usr/bin/time -v`; returns the
/// maximum resident set size in MB, the wall-clock seconds and the CPU seconds (user +
/// system, less sensitive than wall time to other load on the machine).
fn time_v(bin: &Path, command: &str, args: &[&Path]) -> DynResult<(f64, f64, f64)> {
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-v").arg(bin).arg(command).args(args);
    if matches!(command, "quantize" | "dequantize") {
        cmd.arg("-q");
    }
    let out = cmd.stdout(std::process::Stdio::null()).output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("{command} failed: {err}").into());
    }
    let field = |name: &str| {
        err.lines()
            .find_map(|l| l.trim().strip_prefix(name).map(str::trim))
            .map(str::to_string)
            .ok_or_else(|| format!("no `{name}` in /usr/bin/time's output:\n{err}"))
    };
    let rss_kb: f64 = field("Maximum resident set size (kbytes):")?.parse()?;
    let wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss):")?;
    let wall_s = wall
        .split(':')
        .try_fold(0.0, |acc, part| part.parse::<f64>().map(|v| acc * 60.0 + v))?;
    let cpu_s: f64 = field("User time (seconds):")?.parse::<f64>()?
        + field("System time (seconds):")?.parse::<f64>()?;
    Ok((rss_kb / 1024.0, wall_s, cpu_s))
}

/// Writes a safetensors header for `tensors` (name, dtype, shape, bytes), in order.
fn header(tensors: impl Iterator<Item = (String, &'static str, String, usize)>) -> Vec<u8> {
    let mut json = String::from("{");
    let mut at = 0usize;
    for (i, (name, dtype, shape, len)) in tensors.enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&format!(
            "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape},\"data_offsets\":[{at},{}]}}",
            at + len
        ));
        at += len;
    }
    json.push('}');
    while !json.len().is_multiple_of(8) {
        json.push(' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out
}

/// Deterministic weights in about [-0.05, 0.05] with a few larger ones, as f32.
fn weight(i: usize) -> f32 {
    let x = ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f32 / (1u64 << 24) as f32;
    let v = (x - 0.5) * 0.1;
    if i.is_multiple_of(97) {
        v * 8.0
    } else {
        v
    }
}

/// A sharded folder of tiny tensors ([`tiny_file`]), [`SHARD`] per file, with its
/// `model.safetensors.index.json`.
fn tiny_folder(dir: &Path, n: usize) -> DynResult {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let shards = n.div_ceil(SHARD);
    let mut map = serde_json::Map::new();
    for s in 0..shards {
        let name = format!("model-{:05}-of-{shards:05}.safetensors", s + 1);
        let (first, end) = (s * SHARD, ((s + 1) * SHARD).min(n));
        tiny_file(&dir.join(&name), first, end)?;
        for i in first..end {
            map.insert(format!("l.{i}.weight"), name.clone().into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string())?;
    Ok(())
}

/// Tensors `l.I.weight` for I in `first..end`, 2×64 F16.
fn tiny_file(path: &Path, first: usize, end: usize) -> DynResult {
    let (rows, cols) = (2usize, 64usize);
    let len = rows * cols * 2;
    let head = header((first..end).map(|i| {
        (
            format!("l.{i}.weight"),
            "F16",
            format!("[{rows},{cols}]"),
            len,
        )
    }));
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    out.write_all(&head)?;
    let mut buf = Vec::with_capacity(len);
    for t in first..end {
        buf.clear();
        for j in 0..rows * cols {
            buf.extend_from_slice(&f16_bits(weight(t * 131 + j)).to_le_bytes());
        }
        out.write_all(&buf)?;
    }
    out.flush()?;
    Ok(())
}

/// One tensor `big.weight`, 1×`n` F32.
fn big_checkpoint(path: &Path, n: usize) -> DynResult {
    let head = header(std::iter::once((
        "big.weight".to_string(),
        "F32",
        format!("[1,{n}]"),
        n * 4,
    )));
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    out.write_all(&head)?;
    for i in 0..n {
        out.write_all(&weight(i).to_le_bytes())?;
    }
    out.flush()?;
    Ok(())
}

/// f32 to IEEE half bits (round to nearest even; the weights here are normal and small).
fn f16_bits(v: f32) -> u16 {
    let b = v.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    if exp <= 0 {
        return sign; // flushes the (never used) subnormals to zero
    }
    let mant = b & 0x7f_ffff;
    let mut h = u32::from(sign) | ((exp as u32) << 10) | (mant >> 13);
    let rest = mant & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && (h & 1) == 1) {
        h += 1;
    }
    h as u16
}
