//! Bad input and bad usage: every failure is clean (exit code, one-line message naming
//! the file and tensor, no panic) and leaves neither output nor temporary behind.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::*;

/// Runs a quantize that must fail, checking the error, that nothing is left in the
/// output folder, and that the input is unchanged.
fn quantize_fails(input: &Path, out_dir: &Path, needles: &[&str]) -> String {
    let before = std::fs::read(input).ok();
    let listing = names_in(out_dir);
    let out = out_dir.join("out.safetensors");
    let err = fails(&adpq(&["quantize", p(input), "-o", p(&out)]), 1, needles);
    assert_eq!(
        names_in(out_dir),
        listing,
        "output or temporary left behind"
    );
    assert_eq!(std::fs::read(input).ok(), before, "input modified");
    err
}

fn raw_file(path: &Path, header: &str, data_len: usize) {
    let mut h = header.as_bytes().to_vec();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&h);
    bytes.extend(std::iter::repeat_n(0u8, data_len));
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn bad_inputs_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = tmp.path().join("in");
    let outs = tmp.path().join("out");
    std::fs::create_dir_all(&inputs).unwrap();
    std::fs::create_dir_all(&outs).unwrap();
    let good = inputs.join("good.safetensors");
    write_st(&good, &synthetic_model(), &[]);
    let good_bytes = std::fs::read(&good).unwrap();

    // Truncated file.
    let f = inputs.join("truncated.safetensors");
    std::fs::write(&f, &good_bytes[..good_bytes.len() - 100]).unwrap();
    quantize_fails(
        &f,
        &outs,
        &["truncated.safetensors", "not a valid safetensors file"],
    );
    // Shorter than the length prefix; empty; garbage header.
    let f = inputs.join("tiny.safetensors");
    for bytes in [&b"abc"[..], b"", &[0xFFu8; 64]] {
        std::fs::write(&f, bytes).unwrap();
        quantize_fails(&f, &outs, &["tiny.safetensors"]);
    }
    // Header lying about offsets (beyond the data, overlapping, or a gap), and an
    // unknown dtype: (file, header, bytes of data).
    let bad_headers = [
        (
            "lying.safetensors",
            r#"{"a.weight":{"dtype":"F32","shape":[16,16],"data_offsets":[0,1024]}}"#,
            512,
        ),
        (
            "lying.safetensors",
            r#"{"a.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[8,24]}}"#,
            24,
        ),
        (
            "lying.safetensors",
            r#"{"a.weight":{"dtype":"F32","shape":[4,4],"data_offsets":[0,32]}}"#,
            32,
        ),
        (
            "dtype.safetensors",
            r#"{"a.weight":{"dtype":"Q9","shape":[2,2],"data_offsets":[0,16]}}"#,
            16,
        ),
    ];
    for (name, header, data_len) in bad_headers {
        let f = inputs.join(name);
        raw_file(&f, header, data_len);
        quantize_fails(&f, &outs, &[name]);
    }
    // NaN and infinite weights: the error names file, tensor, row and column.
    for (name, v) in [("nan", f32::NAN), ("inf", f32::NEG_INFINITY)] {
        let mut model = synthetic_model();
        let (_, _, _, bytes) = &mut model[0];
        let at = (3 * 576 + 17) * 4;
        bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let f = inputs.join(format!("{name}.safetensors"));
        write_st(&f, &model, &[]);
        quantize_fails(
            &f,
            &outs,
            &[
                &format!("{name}.safetensors"),
                "model.layers.0.self_attn.q_proj.weight",
                "row 3, column 17",
            ],
        );
    }
    // Missing input.
    quantize_fails(
        &inputs.join("missing.safetensors"),
        &outs,
        &["missing.safetensors"],
    );
    // Output in a missing folder.
    let err = fails(
        &adpq(&[
            "quantize",
            p(&good),
            "-o",
            p(&tmp.path().join("nope/x/out.safetensors")),
        ]),
        1,
        &["nope"],
    );
    assert!(err.contains("does not exist"), "{err}");
    // Output in a read-only folder (as root, permissions do not bind: use /proc then).
    let ro = tmp.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let mut perms = std::fs::metadata(&ro).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&ro, perms).unwrap();
    let probe = ro.join("probe");
    let ro_target = if std::fs::write(&probe, b"x").is_ok() {
        std::fs::remove_file(&probe).unwrap();
        eprintln!("NOTE: running as root, using /proc as the read-only output folder");
        PathBuf::from("/proc/adpq-test-out.safetensors")
    } else {
        ro.join("out.safetensors")
    };
    fails(&adpq(&["quantize", p(&good), "-o", p(&ro_target)]), 1, &[]);
    assert!(!ro_target.exists());
    assert_eq!(names_in(&ro), Vec::<String>::new());
    // Dequantize/verify of a file that is not an adpq checkpoint.
    fails(
        &adpq(&["dequantize", p(&good), "-o", p(&outs.join("d.safetensors"))]),
        1,
        &["not an adpq checkpoint"],
    );
    fails(&adpq(&["verify", p(&good)]), 1, &["not an adpq checkpoint"]);
    assert_eq!(names_in(&outs), Vec::<String>::new());
    assert_eq!(std::fs::read(&good).unwrap(), good_bytes);
}

#[test]
fn usage_errors_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("m.safetensors");
    write_st(&input, &synthetic_model(), &[]);
    let o = tmp.path().join("o.safetensors");
    // Flags after `quantize INPUT -o OUTPUT`, and what the message must name.
    let bad_flags: [(&[&str], &str); 5] = [
        (&["--bits", "9"], "bits"),
        (&["--group-size", "8"], "group size"),
        (&["--alpha", "0.9"], "alpha"),
        (&["--include", "("], "--include"),
        (&["--backend", "sse9"], "sse9"),
    ];
    for (flags, needle) in bad_flags {
        let mut args = vec!["quantize", p(&input), "-o", p(&o)];
        args.extend_from_slice(flags);
        fails(&adpq(&args), 2, &[needle]);
    }
    fails(&adpq(&["quantize", p(&input)]), 2, &["--output"]);
    fails(
        &adpq(&["quantize", p(&input), "-o", p(&input)]),
        2,
        &["is the input"],
    );
    fails(&adpq(&["frobnicate"]), 2, &[]);
    fails(&adpq(&[]), 2, &[]);
    ok(&adpq(&["--help"]));
    assert_eq!(names_in(tmp.path()), ["m.safetensors"]);
}

#[test]
fn hostile_index_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    sharded(&src);
    let index = src.join("model.safetensors.index.json");
    let good = std::fs::read_to_string(&index).unwrap();
    let cases = [
        // A shard outside the folder.
        good.replacen("model-00001-of-00002.safetensors", "../evil.safetensors", 1),
        // A missing shard.
        good.replace(
            "model-00002-of-00002.safetensors",
            "model-00009-of-00002.safetensors",
        ),
        // Not JSON.
        "{ not json".to_string(),
        // No weight_map.
        "{}".to_string(),
    ];
    let out = tmp.path().join("out");
    for case in cases {
        std::fs::write(&index, &case).unwrap();
        fails(&adpq(&["quantize", p(&src), "-o", p(&out)]), 1, &["model"]);
        assert!(!out.exists());
        assert_eq!(names_in(tmp.path()), ["src"]);
    }
    // A report path in a missing folder is refused before any work.
    std::fs::write(&index, &good).unwrap();
    fails(
        &adpq(&[
            "quantize",
            p(&src),
            "-o",
            p(&out),
            "--report",
            "/nonexistent/r.json",
        ]),
        2,
        &["--report"],
    );
    assert!(!out.exists());
}

/// `--threads` is validated up front (a huge count used to abort inside the standard
/// library with exit 134); 0 still means one per core.
#[test]
fn absurd_thread_counts_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("m.safetensors");
    write_st(&input, &synthetic_model(), &[]);
    let q = tmp.path().join("q.safetensors");
    for n in ["100000", "1025", "many"] {
        fails(
            &adpq(&["quantize", p(&input), "-o", p(&q), "--threads", n]),
            2,
            &["--threads"],
        );
        fails(&adpq(&["verify", p(&input), "-j", n]), 2, &["--threads"]);
    }
    assert!(!q.exists());
    ok(&adpq(&[
        "quantize",
        p(&input),
        "-o",
        p(&q),
        "-j",
        "0",
        "-q",
    ]));
    ok(&adpq(&["verify", p(&q), "-j", "3"]));
    let d = tmp.path().join("d.safetensors");
    ok(&adpq(&[
        "dequantize",
        p(&q),
        "-o",
        p(&d),
        "-j",
        "1024",
        "-q",
    ]));
}

/// The reference selection cannot work with alpha = 0: a usage error up front, not a
/// data error on the first tensor.
#[test]
fn reference_selection_needs_positive_alpha() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("m.safetensors");
    write_st(&input, &synthetic_model(), &[]);
    let q = tmp.path().join("q.safetensors");
    for extra in [&[][..], &["--dry-run"][..]] {
        let mut args = vec![
            "quantize",
            p(&input),
            "-o",
            p(&q),
            "--format",
            "v2",
            "--reference-iters",
            "20",
            "--alpha",
            "0",
        ];
        args.extend_from_slice(extra);
        fails(&adpq(&args), 2, &["--reference-iters", "alpha > 0"]);
    }
    assert!(!q.exists());
    // Exact selection with alpha 0, and reference selection with alpha > 0, work.
    ok(&adpq(&[
        "quantize",
        p(&input),
        "-o",
        p(&q),
        "--format",
        "v2",
        "--alpha",
        "0",
        "-q",
    ]));
    ok(&adpq(&[
        "quantize",
        p(&input),
        "-o",
        p(&q),
        "--format",
        "v2",
        "--reference-iters",
        "20",
        "-q",
    ]));
    // Format v3, the default, has no outliers to select.
    fails(
        &adpq(&[
            "quantize",
            p(&input),
            "-o",
            p(&q),
            "--reference-iters",
            "20",
        ]),
        2,
        &["--reference-iters", "no outliers", "--format v2"],
    );
    // So is an outlier fraction: the error names the default and the way out.
    fails(
        &adpq(&["quantize", p(&input), "-o", p(&q), "--alpha", "0.05"]),
        2,
        &["format v3, the default", "--format v2", "alpha must be 0"],
    );
}

/// An input that is neither a regular file nor a folder is named for what it is (it
/// used to say "Not a directory"), and is never read (a FIFO would block).
#[test]
fn inputs_that_are_not_files_or_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("fifo.safetensors");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let out = tmp.path().join("out.safetensors");
    for (input, kind) in [
        (fifo.as_path(), "a FIFO"),
        (Path::new("/dev/zero"), "a character device"),
    ] {
        for args in [
            vec!["quantize", p(input), "-o", p(&out)],
            vec!["dequantize", p(input), "-o", p(&out)],
            vec!["inspect", p(input)],
            vec!["verify", p(input)],
        ] {
            fails(
                &adpq(&args),
                1,
                &[p(input), "not a regular file or folder", kind],
            );
        }
    }
    // A FIFO inside an input folder is skipped with a warning, not read.
    let dir = tmp.path().join("model");
    std::fs::create_dir(&dir).unwrap();
    write_st(&dir.join("model.safetensors"), &synthetic_model(), &[]);
    assert!(Command::new("mkfifo")
        .arg(dir.join("pipe"))
        .status()
        .unwrap()
        .success());
    let q = tmp.path().join("q");
    let run = adpq(&["quantize", p(&dir), "-o", p(&q)]);
    ok(&run);
    assert!(String::from_utf8_lossy(&run.stderr).contains("pipe (not a regular file)"));
    assert_eq!(names_in(&q), ["model.safetensors"]);
    assert_eq!(names_in(tmp.path()), ["fifo.safetensors", "model", "q"]);
}

/// A header whose sizes or offsets do not add up names the tensor and the figures (the
/// safetensors crate's own message names neither).
#[test]
fn header_errors_name_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let outs = tmp.path().join("out");
    std::fs::create_dir(&outs).unwrap();
    let f = tmp.path().join("bad.safetensors");
    let cases = [
        (
            r#"{"ok.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b.weight":{"dtype":"F32","shape":[4,4],"data_offsets":[16,48]}}"#,
            48,
            vec![
                "tensor `b.weight`",
                "shape [4, 4] of F32 needs 64 bytes",
                "[16, 48] hold 32",
            ],
        ),
        (
            r#"{"a.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[8,24]}}"#,
            24,
            vec!["tensor `b.weight`", "starts at byte 8", "expected 16"],
        ),
        (
            r#"{"a.weight":{"dtype":"Q9","shape":[2,2],"data_offsets":[0,16]}}"#,
            16,
            vec!["tensor `a.weight`", "Q9"],
        ),
        (
            r#"{"a.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#,
            20,
            vec!["holds 20 bytes of data", "trailing bytes"],
        ),
        (
            r#"{"a.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#,
            10,
            vec!["holds 10 bytes of data", "truncated"],
        ),
        (
            r#"{"__metadata__":{"format":7},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#,
            2,
            vec!["__metadata__", "`format` is not a string"],
        ),
    ];
    for (header, data_len, needles) in cases {
        raw_file(&f, header, data_len);
        let mut needles = needles;
        needles.push("bad.safetensors");
        quantize_fails(&f, &outs, &needles);
        fails(&adpq(&["inspect", p(&f)]), 1, &needles);
    }
}
