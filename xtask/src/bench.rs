//! `cargo xtask bench [--quick] [--no-peers] [--shape RxC] [FILTER]`, or
//! `cargo xtask bench --decode [--reps N]` (decode tokens/s beside llama.cpp: see
//! `decode_bench.rs`), or `cargo xtask bench --quantize` (`adpq quantize` GB/s on 1 and 2
//! threads: see `quantize_bench.rs`)
//!
//! Builds and runs the criterion benches in `benches/` (package `adpq-bench`: every
//! backend this CPU can run, one thread) together with the candle-core peers on the same
//! data, then prints one table, one line per kernel goal of issue 17 (goal 4, and goal 1's
//! encoder bar per core, for the default format: the fastest SIMD kernel set against the
//! bar) and writes
//! `target/bench/summary.json`: an array of `{"backend", "op", "shape", "elems_per_s"}`
//! (median of the criterion samples).
//!
//! The bench build lives in its own target directory (`<target>/bench-build`) because on
//! x86_64 with AVX2 it is compiled with `-C target-feature=+avx2,+fma`: candle selects
//! its SIMD kernels at compile time only, and without that flag its peers would run
//! their scalar fallbacks. adpq's backends are selected at run time either way (the
//! `scalar` rows are the same source compiled with those features enabled).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::{cargo, project_root, run_checked, DynResult};

/// One measured row.
#[derive(Debug, Clone)]
struct Row {
    backend: String,
    op: String,
    shape: String,
    elems_per_s: f64,
}

/// The candle peer of each adpq operation.
fn peer_of(op: &str) -> Option<&'static str> {
    match op {
        "quantize" | "quantize_v2" | "quantize_v3" => Some("q4_0_quantize"),
        "dequantize" | "dequantize_row" | "dequantize_v2" | "dequantize_row_v2"
        | "dequantize_v3" | "dequantize_row_v3" => Some("q4_0_dequantize"),
        "gemv"
        | "gemv_q8"
        | "gemv_v2"
        | "gemv_q8_v2"
        | "gemv_v3"
        | "gemv_q8_v3"
        | "gemv_q8_repacked_v3" => Some("q4_0_q8_0_vec_dot"),
        _ => None,
    }
}

/// Entry point.
pub fn run(args: &[String]) -> DynResult {
    if args.first().is_some_and(|a| a == "--decode") {
        return crate::decode_bench::run(&args[1..]);
    }
    if args.first().is_some_and(|a| a == "--quantize") {
        return crate::quantize_bench::run(&args[1..]);
    }
    let mut quick = false;
    let mut peers = true;
    let mut shape: Option<String> = None;
    let mut filter: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--no-peers" => peers = false,
            "--shape" => shape = Some(it.next().ok_or("--shape needs ROWSxCOLS")?.clone()),
            s if s.starts_with('-') => return Err(format!("unknown flag `{s}`").into()),
            s => filter = Some(s.to_string()),
        }
    }

    let target_root = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"));
    let build_dir = target_root.join("bench-build");
    let criterion_dir = build_dir.join("criterion");
    // Stale results of earlier runs must not leak into this summary.
    if criterion_dir.exists() {
        std::fs::remove_dir_all(&criterion_dir)?;
    }

    let mut cmd = cargo();
    cmd.args(["bench", "-p", "adpq-bench", "--bench", "ops"]);
    if peers {
        cmd.args(["--features", "candle"]);
    }
    cmd.env("CARGO_TARGET_DIR", &build_dir);
    // One thread, for every backend and every peer.
    cmd.env("RAYON_NUM_THREADS", "1");
    if quick {
        cmd.env("ADPQ_BENCH_QUICK", "1");
    }
    if let Some(s) = &shape {
        cmd.env("ADPQ_BENCH_SHAPE", s);
    }
    let sizes_file = build_dir.join("packed_bytes.txt");
    let _ = std::fs::remove_file(&sizes_file);
    cmd.env("ADPQ_BENCH_SIZES", &sizes_file);
    if let Some(flags) = simd_rustflags() {
        let mut rf = std::env::var("RUSTFLAGS").unwrap_or_default();
        if !rf.is_empty() {
            rf.push(' ');
        }
        rf.push_str(flags);
        cmd.env("RUSTFLAGS", rf);
    }
    cmd.arg("--");
    if let Some(f) = &filter {
        cmd.arg(f);
    }
    eprintln!("xtask bench: {cmd:?}");
    run_checked(&mut cmd)?;

    let mut rows = collect(&criterion_dir)?;
    rows.sort_by(|a, b| {
        (order(&a.backend), &a.op, &a.shape).cmp(&(order(&b.backend), &b.op, &b.shape))
    });
    let sizes = packed_sizes(&sizes_file);
    print!("{}", table(&rows, &sizes));
    print!("{}", kernel_goals(&rows));

    let out_dir = project_root().join("target").join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let summary: Vec<Value> = rows
        .iter()
        .map(|r| json!({"backend": r.backend, "op": r.op, "shape": r.shape, "elems_per_s": r.elems_per_s}))
        .collect();
    let path = out_dir.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)? + "\n")?;
    eprintln!("xtask bench: wrote {}", path.display());
    Ok(())
}

/// What a goal of [`KERNEL_GOALS`] compares its figure with.
#[derive(Clone, Copy)]
enum Bar {
    /// At least this ratio to the op's candle peer on the same data.
    Peer(f64),
    /// At least this many weights per second.
    Rate(f64),
}

/// Issue 17's kernel bars for the default format (v3) on one thread: the goal, the op,
/// what it is, and its bar. Goal 1's encoder bar is per core, so one thread is its
/// measure; goal 4 is the kernels'.
const KERNEL_GOALS: [(&str, &str, &str, Bar); 5] = [
    (
        "goal 1",
        "quantize_v3",
        "the default format's encoder, selection + packing, Params::V3,",
        Bar::Rate(3e8),
    ),
    (
        "goal 4",
        "gemv_q8_v3",
        "int8-activation gemv",
        Bar::Peer(1.0),
    ),
    (
        "goal 4",
        "gemv_q8_repacked_v3",
        "int8-activation gemv, rows repacked at load",
        Bar::Peer(1.0),
    ),
    ("goal 4", "gemv_v3", "f32 gemv", Bar::Peer(0.8)),
    (
        "goal 4",
        "dequantize_row_v3",
        "dequantize a row at a time",
        Bar::Rate(4e9),
    ),
];

/// One line per goal of [`KERNEL_GOALS`] whose op ran: the fastest SIMD kernel set's
/// figure, its ratio and whether it meets the bar (none for a peer goal without its peer,
/// as under `--no-peers`).
fn kernel_goals(rows: &[Row]) -> String {
    let mut s = String::new();
    for (goal_no, op, what, bar) in KERNEL_GOALS {
        let Some(best) = rows
            .iter()
            .filter(|r| r.op == op && !["scalar", "candle", "memory"].contains(&r.backend.as_str()))
            .max_by(|a, b| a.elems_per_s.total_cmp(&b.elems_per_s))
        else {
            continue;
        };
        let rate = best.elems_per_s / 1e9;
        // Three significant digits for the encoder's fraction of a G/s too.
        let prec = if rate < 1.0 { 3 } else { 2 };
        let (goal, ratio, against) = match bar {
            Bar::Peer(min) => {
                let Some(p) = peer_of(op) else { continue };
                let Some(peer) = rows
                    .iter()
                    .find(|q| q.backend == "candle" && q.op == p && q.shape == best.shape)
                else {
                    continue;
                };
                (
                    format!("≥ {min:.1}× candle {p}"),
                    best.elems_per_s / peer.elems_per_s / min,
                    format!(
                        "{:.2}× ({:.2} G/s)",
                        best.elems_per_s / peer.elems_per_s,
                        peer.elems_per_s / 1e9
                    ),
                )
            }
            Bar::Rate(min) => (
                format!("≥ {} G weights/s", min / 1e9),
                best.elems_per_s / min,
                format!("{:.2}× the goal", best.elems_per_s / min),
            ),
        };
        let _ = writeln!(
            s,
            "{goal_no} ({what} {goal}, one thread): {} {op} {} at {rate:.prec$} G/s = {against} — {}",
            best.backend,
            best.shape,
            if ratio >= 1.0 { "met" } else { "not met" }
        );
    }
    s
}

/// `-C target-feature` flags that let candle use its AVX2 kernels, when this CPU has them.
fn simd_rustflags() -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Some("-C target-feature=+avx2,+fma");
        }
    }
    None
}

fn order(backend: &str) -> usize {
    ["memory", "scalar", "avx2", "avx-vnni", "neon", "candle"]
        .iter()
        .position(|b| *b == backend)
        .unwrap_or(9)
}

/// Reads `criterion/<bench>/new/{benchmark,estimates}.json` for every bench that ran.
fn collect(dir: &Path) -> DynResult<Vec<Row>> {
    let mut rows = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e?.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == "new") {
                    if let Some(r) = read_one(&p)? {
                        rows.push(r);
                    }
                } else {
                    stack.push(p);
                }
            }
        }
    }
    if rows.is_empty() {
        return Err(format!("no criterion results under {}", dir.display()).into());
    }
    Ok(rows)
}

fn read_one(new: &Path) -> DynResult<Option<Row>> {
    let (b, e) = (new.join("benchmark.json"), new.join("estimates.json"));
    if !b.exists() || !e.exists() {
        return Ok(None);
    }
    let bench: Value = serde_json::from_str(&std::fs::read_to_string(&b)?)?;
    let est: Value = serde_json::from_str(&std::fs::read_to_string(&e)?)?;
    let full_id = bench["full_id"]
        .as_str()
        .ok_or("benchmark.json without full_id")?;
    let elems = bench["throughput"]["Elements"]
        .as_f64()
        .ok_or_else(|| format!("{full_id}: no element throughput"))?;
    let ns = est["median"]["point_estimate"]
        .as_f64()
        .ok_or_else(|| format!("{full_id}: no median"))?;
    let parts: Vec<&str> = full_id.split('/').collect();
    let [backend, op, shape] = parts[..] else {
        return Err(format!("unexpected bench id `{full_id}`").into());
    };
    Ok(Some(Row {
        backend: backend.to_string(),
        op: op.to_string(),
        shape: shape.to_string(),
        elems_per_s: elems / (ns * 1e-9),
    }))
}

/// The packed bytes of each format's bench tensor (`ADPQ_BENCH_SIZES`: `SUFFIX BYTES`
/// lines, `-` for version 1), by op suffix; empty when the bench did not write them.
fn packed_sizes(path: &Path) -> Vec<(String, f64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (suffix, bytes) = l.split_once(' ')?;
            let suffix = if suffix == "-" { "" } else { suffix };
            Some((suffix.to_string(), bytes.trim().parse().ok()?))
        })
        .collect()
}

/// A gemv row's effective rate of packed bytes read, in GB/s, and its ratio to the plain
/// memory read of the same run: what goal 4 of issue 17 asks beside the weights/s.
fn packed_rate(r: &Row, rows: &[Row], sizes: &[(String, f64)]) -> Option<String> {
    // The repacked rows' rate is given in the packed tensor's bytes too.
    let suffix =
        r.op.strip_prefix("gemv_q8_repacked")
            .or_else(|| r.op.strip_prefix("gemv_q8"))
            .or_else(|| r.op.strip_prefix("gemv"))?;
    let bytes = sizes.iter().find(|(s, _)| s == suffix)?.1;
    let (h, w) = r.shape.split_once('x')?;
    let n = h.parse::<f64>().ok()? * w.parse::<f64>().ok()?;
    let gbs = r.elems_per_s * bytes / n / 1e9;
    let read = rows
        .iter()
        .find(|q| q.backend == "memory" && q.op == "read" && q.shape == r.shape)?;
    Some(format!(
        "{gbs:.2} GB/s packed, {:.2}x memory read",
        gbs * 1e9 / read.elems_per_s
    ))
}

fn table(rows: &[Row], sizes: &[(String, f64)]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<8} {:<20} {:<10} {:>12}  {:<28}",
        "backend", "op", "shape", "Gelem/s", "vs candle peer (same data)"
    );
    for r in rows {
        let peer = peer_of(&r.op).and_then(|p| {
            rows.iter()
                .find(|q| q.backend == "candle" && q.op == p && q.shape == r.shape)
                .map(|q| (p, r.elems_per_s / q.elems_per_s))
        });
        let mut vs = match peer {
            Some((p, ratio)) if r.backend != "candle" => format!("{ratio:.2}x {p}"),
            _ => String::new(),
        };
        if let Some(rate) = packed_rate(r, rows, sizes) {
            vs = format!("{vs:<28}  {rate}");
        }
        let _ = writeln!(
            s,
            "{:<8} {:<20} {:<10} {:>12.3}  {:<28}",
            r.backend,
            r.op,
            r.shape,
            r.elems_per_s / 1e9,
            vs
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(backend: &str, op: &str, g_per_s: f64) -> Row {
        Row {
            backend: backend.into(),
            op: op.into(),
            shape: "4096x4096".into(),
            elems_per_s: g_per_s * 1e9,
        }
    }

    /// The goal lines take the fastest SIMD set, never scalar, and judge it against the
    /// bar; a peer goal without its peer prints nothing.
    #[test]
    fn kernel_goals_judge_the_fastest_simd_set() {
        let rows = [
            row("scalar", "gemv_q8_v3", 50.0),
            row("avx2", "gemv_q8_v3", 9.0),
            row("avx-vnni", "gemv_q8_v3", 12.0),
            row("candle", "q4_0_q8_0_vec_dot", 10.0),
            row("avx2", "gemv_v3", 7.9),
            row("avx2", "dequantize_row_v3", 2.6),
            row("scalar", "quantize_v3", 0.4),
            row("avx2", "quantize_v3", 0.15),
        ];
        let text = kernel_goals(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("goal 1 ") && lines[0].contains("avx2 quantize_v3"));
        assert!(
            lines[0].contains("at 0.150 G/s = 0.50× the goal"),
            "{}",
            lines[0]
        );
        assert!(lines[0].ends_with("— not met"));
        assert!(lines[1].contains("avx-vnni gemv_q8_v3") && lines[1].contains("1.20×"));
        assert!(lines[1].starts_with("goal 4 ") && lines[1].ends_with("— met"));
        assert!(lines[2].contains("0.79×") && lines[2].ends_with("— not met"));
        assert!(lines[3].contains("2.60 G/s") && lines[3].ends_with("— not met"));
        assert!(kernel_goals(&rows[1..3]).is_empty());
    }
}
