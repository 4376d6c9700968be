//! Where outputs may go: never onto the input (or a folder holding it), and `--report`
//! never onto the input or the output.

use std::path::Path;
use std::process::Command;

mod common;
use common::*;

/// An output folder that holds the input (its parent, or any ancestor) is refused, even
/// with `--force`: replacing it would delete the input and its neighbours.
#[test]
fn output_holding_the_input_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let outer = tmp.path().join("outer");
    let model = outer.join("model");
    std::fs::create_dir_all(&model).unwrap();
    write_st(&model.join("model.safetensors"), &synthetic_model(), &[]);
    std::fs::write(model.join("config.json"), "{}").unwrap();
    std::fs::write(outer.join("keep.txt"), "precious").unwrap();
    let q = outer.join("q");
    ok(&adpq(&["quantize", p(&model), "-o", p(&q), "-q"]));
    let listing = |d: &Path| (names_in(d), names_in(&d.join("model")));
    let before = listing(&outer);
    for target in [&outer, tmp.path()] {
        fails(
            &adpq(&["quantize", p(&model), "-o", p(target), "--force", "-q"]),
            2,
            &["is the input"],
        );
        fails(
            &adpq(&["dequantize", p(&q), "-o", p(target), "--force", "-q"]),
            2,
            &["is the input"],
        );
        // Through the index-less folder given as a path with `..` in it, too.
        fails(
            &adpq(&[
                "quantize",
                p(&model),
                "-o",
                p(&model.join("..")),
                "--force",
                "-q",
            ]),
            2,
            &["is the input"],
        );
        assert_eq!(listing(&outer), before);
    }
    // A single-file input: its folder is not a valid output either.
    let single = model.join("model.safetensors");
    fails(
        &adpq(&["quantize", p(&single), "-o", p(&model), "--force"]),
        2,
        &[],
    );
    assert_eq!(listing(&outer), before);
    assert_eq!(
        std::fs::read_to_string(outer.join("keep.txt")).unwrap(),
        "precious"
    );
}

/// `--report` may not name the input, a file in the input folder, the output or a file
/// in the output folder: the JSON would replace it.
#[test]
fn report_path_must_not_overwrite_input_or_output() {
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim.safetensors");
    write_st(&victim, &synthetic_model(), &[]);
    let bytes = std::fs::read(&victim).unwrap();
    let q = tmp.path().join("q.safetensors");
    let quant = |report: &Path, out: &Path| {
        adpq(&[
            "quantize",
            p(&victim),
            "-o",
            p(out),
            "--report",
            p(report),
            "-q",
        ])
    };
    fails(&quant(&victim, &q), 2, &["--report", "input"]);
    fails(&quant(&q, &q), 2, &["--report", "output"]);
    // A relative spelling of the same file is caught too.
    let out = Command::new(env!("CARGO_BIN_EXE_adpq"))
        .current_dir(tmp.path())
        .args([
            "quantize",
            "victim.safetensors",
            "-o",
            "q.safetensors",
            "--report",
            "./victim.safetensors",
        ])
        .output()
        .unwrap();
    fails(&out, 2, &["--report", "input"]);
    assert_eq!(std::fs::read(&victim).unwrap(), bytes);
    assert_eq!(names_in(tmp.path()), ["victim.safetensors"]);

    ok(&adpq(&["quantize", p(&victim), "-o", p(&q), "-q"]));
    let qbytes = std::fs::read(&q).unwrap();
    let d = tmp.path().join("d.safetensors");
    let deq = |report: &Path| {
        adpq(&[
            "dequantize",
            p(&q),
            "-o",
            p(&d),
            "--report",
            p(report),
            "-q",
        ])
    };
    fails(&deq(&q), 2, &["--report", "input"]);
    fails(&deq(&d), 2, &["--report", "output"]);
    assert_eq!(std::fs::read(&q).unwrap(), qbytes);
    assert!(!d.exists());

    // Folders: nothing inside the input folder or the output folder.
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    write_st(&src.join("model.safetensors"), &synthetic_model(), &[]);
    std::fs::write(src.join("config.json"), "{}").unwrap();
    let dst = tmp.path().join("dst");
    for (report, what) in [
        (src.join("config.json"), "input"),
        (src.join("new.json"), "input"),
        (dst.join("r.json"), "output"),
    ] {
        if what == "output" {
            std::fs::create_dir_all(&dst).unwrap();
        }
        fails(
            &adpq(&[
                "quantize",
                p(&src),
                "-o",
                p(&dst),
                "--report",
                p(&report),
                "-q",
            ]),
            2,
            &["--report", what],
        );
    }
    assert_eq!(names_in(&src), ["config.json", "model.safetensors"]);
    assert_eq!(
        std::fs::read_to_string(src.join("config.json")).unwrap(),
        "{}"
    );
    // Beside them is fine.
    let r = tmp.path().join("r.json");
    ok(&adpq(&[
        "quantize",
        p(&src),
        "-o",
        p(&dst),
        "--report",
        p(&r),
        "-q",
    ]));
    assert!(r.is_file());
}
