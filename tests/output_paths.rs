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

/// Whether `path` is (still) a character device.
fn is_char_device(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_char_device())
}

/// `-o` and `--report` naming a symbolic link, a FIFO or a device node are refused (exit
/// 1, nothing created): replacing them by a rename would destroy the link or the node
/// (as root, `-o /dev/null` would replace the system's). Folder outputs likewise.
#[test]
fn special_outputs_are_never_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("m.safetensors");
    write_st(&input, &synthetic_model(), &[]);
    let target = tmp.path().join("target.safetensors");
    std::fs::write(&target, b"keep me").unwrap();
    let link = tmp.path().join("link.safetensors");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let fifo = tmp.path().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let q = tmp.path().join("q.safetensors");
    ok(&adpq(&["quantize", p(&input), "-o", p(&q), "-q"]));
    let listing = names_in(tmp.path());
    let dev_null = Path::new("/dev/null");
    assert!(is_char_device(dev_null));
    for (what, out) in [
        ("a symbolic link", link.as_path()),
        ("a FIFO", fifo.as_path()),
        ("a character device", dev_null),
    ] {
        let runs = [
            adpq(&["quantize", p(&input), "-o", p(out), "-q"]),
            adpq(&["dequantize", p(&q), "-o", p(out), "-q"]),
            adpq(&["quantize", p(&input), "--dry-run", "--report", p(out), "-q"]),
            adpq(&[
                "quantize",
                p(&input),
                "-o",
                p(&tmp.path().join("r.safetensors")),
                "--report",
                p(out),
                "-q",
            ]),
        ];
        for run in &runs {
            fails(run, 1, &[p(out), what, "not a regular file or folder"]);
        }
        assert_eq!(
            names_in(tmp.path()),
            listing,
            "{what}: something was created"
        );
    }
    assert!(is_char_device(dev_null), "/dev/null was replaced");
    assert_eq!(std::fs::read_link(&link).unwrap(), target);
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());

    // Folder outputs: a link to a folder is refused too, even with --force.
    let dir = tmp.path().join("model");
    std::fs::create_dir(&dir).unwrap();
    write_st(&dir.join("model.safetensors"), &synthetic_model(), &[]);
    let real_out = tmp.path().join("real_out");
    std::fs::create_dir(&real_out).unwrap();
    std::fs::write(real_out.join("keep.txt"), b"x").unwrap();
    let dir_link = tmp.path().join("out_link");
    std::os::unix::fs::symlink(&real_out, &dir_link).unwrap();
    fails(
        &adpq(&["quantize", p(&dir), "-o", p(&dir_link), "--force", "-q"]),
        1,
        &["a symbolic link"],
    );
    assert_eq!(std::fs::read_link(&dir_link).unwrap(), real_out);
    assert_eq!(names_in(&real_out), ["keep.txt"]);
}

/// A `--report` that cannot be created fails the run before the checkpoint is written
/// (it used to fail after, with the checkpoint already in place and exit 1).
#[test]
fn report_is_created_before_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("m.safetensors");
    write_st(&input, &synthetic_model(), &[]);
    // A folder where nothing can be created; as root, permissions do not bind: /proc.
    let ro = tmp.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let mut perms = std::fs::metadata(&ro).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&ro, perms).unwrap();
    let probe = ro.join("probe");
    let report = if std::fs::write(&probe, b"x").is_ok() {
        std::fs::remove_file(&probe).unwrap();
        std::path::PathBuf::from("/proc/adpq-test-report.json")
    } else {
        ro.join("report.json")
    };
    let q = tmp.path().join("q.safetensors");
    fails(
        &adpq(&[
            "quantize",
            p(&input),
            "-o",
            p(&q),
            "--report",
            p(&report),
            "-q",
        ]),
        1,
        &[],
    );
    assert!(
        !q.exists(),
        "the checkpoint was written although the report cannot be"
    );
    ok(&adpq(&["quantize", p(&input), "-o", p(&q), "-q"]));
    let d = tmp.path().join("d.safetensors");
    fails(
        &adpq(&[
            "dequantize",
            p(&q),
            "-o",
            p(&d),
            "--report",
            p(&report),
            "-q",
        ]),
        1,
        &[],
    );
    assert!(!d.exists());
    assert!(!report.exists());
    assert_eq!(
        names_in(tmp.path()),
        ["m.safetensors", "q.safetensors", "ro"]
    );
}
