//! `cargo xtask fuzz [SECONDS] [TARGET...]`: runs each cargo-fuzz target of `fuzz/` for
//! SECONDS (default 15), failing when one finds a crash, a timeout or a leak.
//!
//! Installs cargo-fuzz (`cargo install cargo-fuzz --locked`) when it is missing; needs the
//! rustup `nightly` toolchain (for `-Z sanitizer=address`). Each target reads the checked-in
//! seeds in `fuzz/seeds/TARGET` (when present) and grows `fuzz/corpus/TARGET`, which is
//! ignored by git and kept between runs. libFuzzer's output goes to
//! `fuzz/target/logs/TARGET.log`; its tail is printed.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::{project_root, DynResult};

/// The fuzz targets, in the order they run.
const TARGETS: &[&str] = &[
    "parse_packed",
    "roundtrip",
    "selection",
    "decode_finite",
    "checkpoint",
    "index",
    "capi",
];
const DEFAULT_SECONDS: u32 = 15;
/// A single input running longer than this is reported as a hang (inputs are small).
const UNIT_TIMEOUT_S: u32 = 10;
/// Resident memory above this is reported as a finding: the readers must bound what
/// they allocate whatever the input claims (sizes in headers are checked against data).
const RSS_LIMIT_MB: u32 = 2048;
/// Lines of the log shown when a target fails: from the finding, and at the end.
const FINDING_LINES: usize = 12;
const FAILURE_TAIL_LINES: usize = 30;

/// Entry point.
pub fn run(args: &[String]) -> DynResult {
    let mut seconds = DEFAULT_SECONDS;
    let mut targets: Vec<&str> = Vec::new();
    for a in args {
        if let Ok(s) = a.parse::<u32>() {
            seconds = s;
        } else if let Some(t) = TARGETS.iter().find(|t| **t == a.as_str()) {
            targets.push(t);
        } else {
            return Err(format!(
                "unexpected argument `{a}`; usage: cargo xtask fuzz [SECONDS] [{}]...",
                TARGETS.join("|")
            )
            .into());
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }

    ensure_nightly()?;
    ensure_cargo_fuzz()?;

    let root = project_root();
    let fuzz_dir = root.join("fuzz");
    let logs = fuzz_dir.join("target").join("logs");
    fs::create_dir_all(&logs)?;

    // Build every target first, so the build is not counted in the fuzzing time and a
    // compile error shows up as such.
    let start = Instant::now();
    if targets.len() == TARGETS.len() {
        // Without a target, `cargo fuzz build` builds them all in one cargo invocation.
        crate::run_checked(nightly_fuzz().arg("build"))?;
    } else {
        for target in &targets {
            crate::run_checked(nightly_fuzz().args(["build", target]))?;
        }
    }
    eprintln!("xtask fuzz: built in {:.0?}", start.elapsed());

    for target in targets {
        fuzz_one(&fuzz_dir, &logs, target, seconds)?;
    }
    Ok(())
}

/// Runs one target for `seconds`, failing when libFuzzer reports anything.
fn fuzz_one(fuzz_dir: &Path, logs: &Path, target: &str, seconds: u32) -> DynResult {
    let corpus = fuzz_dir.join("corpus").join(target);
    fs::create_dir_all(&corpus)?;
    let seeds = fuzz_dir.join("seeds").join(target);
    let log_path = logs.join(format!("{target}.log"));
    let log = fs::File::create(&log_path)?;

    let mut cmd = nightly_fuzz();
    cmd.args(["run", target]).arg(&corpus);
    if seeds.is_dir() {
        // Extra corpus dirs are read, new inputs only go to the first one.
        cmd.arg(&seeds);
    }
    cmd.arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={UNIT_TIMEOUT_S}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg("-print_final_stats=1")
        .stdout(log.try_clone()?)
        .stderr(log);

    eprintln!(
        "xtask fuzz: {target} for {seconds} s (log: {})",
        log_path.display()
    );
    let start = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let elapsed = start.elapsed();
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    if status.success() {
        // libFuzzer's summary; the full log (new units, dictionary) stays in the file.
        let summary = lines
            .iter()
            .filter(|l| l.starts_with("stat::") || l.starts_with("Done "));
        for line in summary {
            eprintln!("  | {line}");
        }
    } else {
        // The finding itself (a Rust panic, or a sanitizer / libFuzzer error) comes first,
        // then cargo-fuzz's reproduction hints at the end of the log.
        let tail_from = lines.len().saturating_sub(FAILURE_TAIL_LINES);
        let finding = lines[..tail_from]
            .iter()
            .position(|l| l.contains("panicked at") || l.starts_with("==") && l.contains("ERROR:"));
        if let Some(at) = finding {
            for line in &lines[at..(at + FINDING_LINES).min(tail_from)] {
                eprintln!("  | {line}");
            }
            eprintln!("  | ...");
        }
        for line in &lines[tail_from..] {
            eprintln!("  | {line}");
        }
    }
    if !status.success() {
        let artifacts = fuzz_dir.join("artifacts").join(target);
        return Err(format!(
            "fuzz target `{target}` failed ({status}) after {elapsed:.0?}: see {} and the \
             inputs in {}; reproduce with `cargo +nightly fuzz run {target} <artifact>`",
            log_path.display(),
            artifacts.display()
        )
        .into());
    }
    let runs = final_stat(&text, "stat::number_of_executed_units:").unwrap_or(0);
    let secs = elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "xtask fuzz: {target}: ok, {runs} runs in {elapsed:.0?} ({:.0} exec/s), corpus {} inputs",
        runs as f64 / secs,
        count_files(&corpus)
    );
    Ok(())
}

/// `cargo +nightly fuzz` from the fuzz crate's parent, with the variables the outer
/// (stable) cargo set for us removed so the nightly proxy and `fuzz/target` are used.
fn nightly_fuzz() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(project_root())
        .env_remove("CARGO")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_TARGET_DIR")
        .args(["+nightly", "fuzz"]);
    cmd
}

fn ensure_nightly() -> DynResult {
    let ok = Command::new("cargo")
        .env_remove("RUSTUP_TOOLCHAIN")
        .args(["+nightly", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return Err(
            "the rustup `nightly` toolchain is needed for cargo-fuzz (-Z sanitizer)".into(),
        );
    }
    Ok(())
}

fn ensure_cargo_fuzz() -> DynResult {
    let present = Command::new("cargo")
        .env_remove("RUSTUP_TOOLCHAIN")
        .args(["+nightly", "fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    eprintln!("xtask fuzz: installing cargo-fuzz");
    let start = Instant::now();
    crate::run_checked(crate::cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    eprintln!(
        "xtask fuzz: cargo-fuzz installed in {:.0?}",
        start.elapsed()
    );
    Ok(())
}

/// The value of a `-print_final_stats=1` line such as `stat::number_of_executed_units: 42`.
fn final_stat(log: &str, key: &str) -> Option<u64> {
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
}

fn count_files(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::final_stat;

    #[test]
    fn parses_final_stats() {
        let log = "#1 INITED\nstat::number_of_executed_units: 3921160\nstat::peak_rss_mb: 487\n";
        assert_eq!(
            final_stat(log, "stat::number_of_executed_units:"),
            Some(3921160)
        );
        assert_eq!(final_stat(log, "stat::missing:"), None);
    }
}
