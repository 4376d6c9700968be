//! `--backend cuda|auto` on a machine without a CUDA driver (checked first: the tests say
//! SKIPPED where a driver is present, since they test its absence).

mod common;

use common::{adpq, fails, ok, p, synthetic_model, write_st};

fn no_driver() -> bool {
    if adpq_cuda::driver_present() {
        println!("SKIPPED: a CUDA driver is present; these tests need it absent");
        return false;
    }
    true
}

/// `--backend cuda` without a device: a clear error, exit 2, and no output file.
#[test]
fn cuda_without_a_driver_fails_before_writing() {
    if !no_driver() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.safetensors");
    write_st(&input, &synthetic_model(), &[]);
    for cmd in ["quantize", "dequantize"] {
        let o = tmp.path().join(format!("{cmd}.safetensors"));
        fails(
            &adpq(&[cmd, p(&input), "-o", p(&o), "--backend", "cuda"]),
            2,
            &["--backend cuda", "no CUDA driver"],
        );
        assert!(!o.exists(), "{cmd} left an output behind");
    }
}

/// `adpq eval --backend cuda` goes through the same engine choice: without a device, the
/// same usage error before any model is read.
#[test]
fn eval_on_cuda_without_a_driver_is_a_usage_error() {
    if !no_driver() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("text.txt");
    std::fs::write(&text, "some text").unwrap();
    fails(
        &adpq(&[
            "eval",
            "--model",
            p(tmp.path()),
            "--text",
            p(&text),
            "--backend",
            "cuda",
        ]),
        2,
        &["--backend cuda", "no CUDA driver"],
    );
}

/// `--backend auto` says in one line that it falls back to the CPU, and then works.
#[test]
fn auto_falls_back_to_the_cpu_with_a_notice() {
    if !no_driver() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.safetensors");
    write_st(&input, &synthetic_model(), &[]);
    let out = adpq(&["quantize", p(&input), "--dry-run"]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    let notices: Vec<_> = err
        .lines()
        .filter(|l| l.contains("CUDA not used"))
        .collect();
    assert_eq!(notices.len(), 1, "{err}");
    assert!(notices[0].contains("CPU backend"), "{err}");
}
