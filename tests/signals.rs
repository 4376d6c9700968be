//! Stopped runs leave nothing behind: SIGINT and SIGTERM remove the temporary output and
//! exit with 128 + the signal; a write past the file-size limit (SIGXFSZ) is an I/O
//! error (exit 1) with the same cleanup.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use safetensors::Dtype;

mod common;
use common::*;

/// A checkpoint big enough that a debug build takes seconds to quantize it.
fn big_model(path: &Path) {
    let tensors: Vec<Tensor> = (0..16)
        .map(|i| {
            floats(
                &format!("model.layers.{i}.mlp.up_proj.weight"),
                Dtype::F32,
                &[1024, 1024],
                i,
            )
        })
        .collect();
    write_st(path, &tensors, &[]);
}

/// The hidden temporaries of output `out` in its folder.
fn temporaries(out: &Path) -> Vec<String> {
    let prefix = format!(".{}.adpq-tmp-", out.file_name().unwrap().to_str().unwrap());
    names_in(out.parent().unwrap())
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// Waits until `ready` holds (polling), panicking after a minute or if the child exited.
fn wait_for(child: &mut Child, what: &str, ready: impl Fn() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "adpq exited before {what}"
        );
        assert!(start.elapsed() < Duration::from_secs(60), "no {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_adpq"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn kill(child: &Child, signal: &str) {
    let sent = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(sent.success());
}

#[test]
fn interrupted_runs_clean_up_and_exit_128_plus_signal() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("big.safetensors");
    big_model(&input);
    let out = tmp.path().join("out.safetensors");
    // SIGINT once the data is being written; SIGTERM while the plan is being made (the
    // temporary exists, still empty).
    for (signal, code, writing) in [("INT", 130, true), ("TERM", 143, false)] {
        let mut child = spawn(&["quantize", p(&input), "-o", p(&out), "-q"]);
        wait_for(&mut child, "a temporary output", || {
            temporaries(&out).iter().any(|t| {
                let len = std::fs::metadata(tmp.path().join(t)).map_or(0, |m| m.len());
                !writing || len > 0
            })
        });
        kill(&child, signal);
        let result = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(code), "SIG{signal}: {err}");
        assert!(
            err.contains(&format!("interrupted by SIG{signal}")),
            "{err}"
        );
        assert!(!out.exists());
        assert_eq!(temporaries(&out), Vec::<String>::new(), "SIG{signal}");
    }
    assert_eq!(names_in(tmp.path()), ["big.safetensors"]);
}

#[test]
fn file_size_limit_is_an_io_error() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("m.safetensors");
    let tensors: Vec<Tensor> = (0..4)
        .map(|i| floats(&format!("l.{i}.weight"), Dtype::F32, &[256, 1024], i))
        .collect();
    write_st(&input, &tensors, &[]);
    let out = tmp.path().join("out.safetensors");
    // `ulimit -f` counts blocks of 512 or 1024 bytes: 64 of them are far below the output.
    let result = Command::new("sh")
        .arg("-c")
        .arg("ulimit -f 64 && exec \"$0\" quantize \"$1\" -o \"$2\" -q")
        .arg(env!("CARGO_BIN_EXE_adpq"))
        .arg(&input)
        .arg(&out)
        .output()
        .unwrap();
    fails(&result, 1, &["out.safetensors", "File too large"]);
    assert!(!out.exists());
    assert_eq!(temporaries(&out), Vec::<String>::new());
    // The same run without the limit succeeds.
    ok(&adpq(&["quantize", p(&input), "-o", p(&out), "-q"]));
}

/// Signals in the first milliseconds (before, during and after the `--report` and output
/// temporaries are created), single and double, leave nothing behind and exit with 128 +
/// the signal. A signal that lands before `main` installed the handlers (exec time) may
/// still kill the process by its default action; then nothing can exist yet either.
#[test]
fn early_and_double_signals_leave_nothing() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("big.safetensors");
    big_model(&input);
    let out = tmp.path().join("out.safetensors");
    let report = tmp.path().join("report.json");
    // A signal this process ignores, its children inherit ignored: under `nohup`
    // (SIGHUP) or as a background job of a non-interactive shell (SIGINT), one that lands
    // before the child's handlers are installed is then (rightly) ignored and the run
    // completes. SIGTERM stands in for those.
    let signals = [("INT", 2), ("TERM", 15), ("HUP", 1)].map(|(name, num)| {
        if ignored_here(num) {
            eprintln!("SIG{name} is ignored here: SIGTERM in its place");
            ("TERM", 15)
        } else {
            (name, num)
        }
    });
    let mut handled = 0;
    let delays_us = [
        0u64, 200, 500, 1000, 1500, 2000, 3000, 4000, 6000, 9000, 15000, 30000, 80000,
    ];
    for (i, delay) in delays_us.iter().enumerate() {
        for double in [false, true] {
            let (name, num) = signals[(i + usize::from(double)) % 3];
            let child = spawn(&[
                "quantize",
                p(&input),
                "-o",
                p(&out),
                "--report",
                p(&report),
                "-q",
            ]);
            std::thread::sleep(Duration::from_micros(*delay));
            kill(&child, name);
            if double {
                std::thread::sleep(Duration::from_micros(300));
                kill(&child, name);
            }
            let result = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&result.stderr);
            let what = format!("SIG{name} after {delay} us (double: {double})");
            match result.status.code() {
                Some(code) => {
                    assert_eq!(code, 128 + num, "{what}: {err}");
                    assert!(!err.contains("panicked"), "{what}: {err}");
                    handled += 1;
                }
                None => assert_eq!(result.status.signal(), Some(num), "{what}"),
            }
            assert_eq!(names_in(tmp.path()), ["big.safetensors"], "{what}: {err}");
        }
    }
    // Most runs are past exec when the signal lands: the handlers must have run.
    assert!(
        handled >= delays_us.len(),
        "only {handled} runs handled the signal"
    );
}

/// A second signal during the selection passes still cleans up (it used to kill the
/// process and leave the empty output temporary).
#[test]
fn second_signal_during_selection_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("big.safetensors");
    big_model(&input);
    let out = tmp.path().join("out.safetensors");
    for signal in ["INT", "TERM"] {
        let mut child = spawn(&["quantize", p(&input), "-o", p(&out), "-q"]);
        wait_for(&mut child, "a temporary output", || {
            !temporaries(&out).is_empty()
        });
        kill(&child, signal);
        kill(&child, signal);
        let result = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&result.stderr);
        let code = if signal == "INT" { 130 } else { 143 };
        assert_eq!(result.status.code(), Some(code), "SIG{signal}: {err}");
        assert!(
            err.contains(&format!("interrupted by SIG{signal}")),
            "{err}"
        );
        assert_eq!(names_in(tmp.path()), ["big.safetensors"], "SIG{signal}");
    }
}

/// A stop request is honoured inside one long tensor (during its selection passes), not
/// only once the tensor is done: the run never reports the tensor as selected.
#[test]
fn signal_inside_a_long_tensor_stops_it() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("one.safetensors");
    write_st(
        &input,
        &[floats("l.0.weight", Dtype::F32, &[4096, 4096], 1)],
        &[],
    );
    let out = tmp.path().join("out.safetensors");
    // Not quiet: the progress lines say whether the selection finished.
    let mut child = Command::new(env!("CARGO_BIN_EXE_adpq"))
        .args(["quantize", p(&input), "-o", p(&out)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&mut child, "a temporary output", || {
        !temporaries(&out).is_empty()
    });
    kill(&child, "TERM");
    let result = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(143), "{err}");
    assert!(!err.contains("selected l.0.weight"), "{err}");
    assert_eq!(names_in(tmp.path()), ["one.safetensors"]);
}

/// Whether this process ignores signal `num` (its bit in `SigIgn` of
/// `/proc/self/status`), as its children then do from their first instant.
fn ignored_here(num: i32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("SigIgn:"))?;
            u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok()
        })
        .is_some_and(|mask| mask & (1 << (num - 1)) != 0)
}
