//! `adpq generate` end to end: usage errors exit 2 before loading anything, and (release,
//! `--ignored`, real SmolLM2 from `cargo xtask fetch`) text generated on a v3 checkpoint's
//! packed weights continues a prompt the way the dense model does.

mod common;
use common::*;

use std::path::{Path, PathBuf};

fn smollm2() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/data/smollm2");
    if dir.join("model.safetensors").exists() {
        return Some(dir);
    }
    let hint = format!("{} absent (run `cargo xtask fetch`)", dir.display());
    if std::env::var_os("ADPQ_REQUIRE_DATA").is_some_and(|v| v == "1") {
        panic!("ADPQ_REQUIRE_DATA=1 but {hint}");
    }
    eprintln!("SKIP: {hint}");
    None
}

#[test]
fn usage_errors_are_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nothing");
    fails(
        &adpq(&[
            "generate",
            "--model",
            p(&missing),
            "--prompt",
            "Hi",
            "--temperature=-1",
        ]),
        2,
        &["--temperature"],
    );
    fails(
        &adpq(&[
            "generate",
            "--model",
            p(&missing),
            "--prompt",
            "Hi",
            "--backend",
            "cuda",
        ]),
        2,
        &["generate runs on the CPU"],
    );
    // No config.json: an error naming it.
    let out = adpq(&["generate", "--model", p(tmp.path()), "--prompt", "Hi"]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config.json") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
#[ignore = "about 100 M weights; run with --release -- --ignored"]
fn generates_on_packed_weights_like_the_dense_model() {
    let Some(dir) = smollm2() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("v3.safetensors");
    ok(&adpq(&[
        "quantize",
        p(&dir.join("model.safetensors")),
        "-o",
        p(&q),
        "--format",
        "v3",
        "-q",
    ]));
    let prompt =
        "The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is";
    let run = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            p(&dir),
            "--prompt",
            prompt,
            "-n",
            "3",
        ];
        args.extend_from_slice(extra);
        let out = adpq(&args);
        ok(&out);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains("tokens/s"), "{err}");
        String::from_utf8(out.stdout).unwrap()
    };
    let dense = run(&[]);
    let packed = run(&["--quantized", p(&q)]);
    // The repacked copy changes the speed, not the tokens.
    assert_eq!(packed, run(&["--quantized", p(&q), "--no-repack"]));
    assert!(dense.starts_with(prompt), "{dense}");
    // Greedy: both continue the list with Rome.
    for text in [&dense, &packed] {
        assert!(text[prompt.len()..].starts_with(" Rome"), "{text}");
    }
    // Sampling is seeded: the same seed, the same text.
    let sampled = [
        "--quantized",
        p(&q),
        "--top-k",
        "40",
        "--temperature",
        "0.8",
        "--seed",
        "7",
    ];
    assert_eq!(run(&sampled), run(&sampled));
}
