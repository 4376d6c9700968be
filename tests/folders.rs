//! Folder inputs: sharded checkpoints with an index, a single file in a folder, hub-cache
//! symlinks, and what is (not) copied to the output.

use safetensors::Dtype;
use serde_json::Value;

mod common;
use common::*;

#[test]
fn sharded_checkpoint_roundtrip() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let model = sharded(&src);
    let q = tmp.path().join("q");
    ok(&adpq(&["quantize", p(&src), "-o", p(&q), "-q"]));
    assert_eq!(
        names_in(&q),
        [
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json"
        ]
    );
    let index: Value =
        serde_json::from_slice(&std::fs::read(q.join("model.safetensors.index.json")).unwrap())
            .unwrap();
    let mut total = 0u64;
    for shard in [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        let (t, meta) = read_st(&q.join(shard));
        assert_eq!(meta["format"], "adpq");
        total += t.values().map(|x| x.2.len() as u64).sum::<u64>();
        for name in t.keys() {
            assert_eq!(index["weight_map"][name], shard);
        }
    }
    assert_eq!(index["metadata"]["total_size"], total);
    ok(&adpq(&["verify", p(&q)]));
    // The index file works as an input too.
    ok(&adpq(&[
        "inspect",
        p(&q.join("model.safetensors.index.json")),
    ]));

    // An existing non-empty output folder needs --force.
    let out = adpq(&["quantize", p(&src), "-o", p(&q), "-q"]);
    fails(&out, 2, &["--force"]);
    ok(&adpq(&["quantize", p(&src), "-o", p(&q), "-q", "--force"]));

    let d = tmp.path().join("d");
    ok(&adpq(&["dequantize", p(&q), "-o", p(&d), "-q"]));
    let mut seen = 0;
    for shard in [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        let (t, meta) = read_st(&d.join(shard));
        assert_eq!(meta["format"], "pt");
        for (name, (dt, s, b)) in &t {
            let orig = model.iter().find(|m| &m.0 == name).unwrap();
            assert_eq!((dt, s), (&orig.1, &orig.2));
            if !QUANTIZED.contains(&name.as_str()) {
                assert_eq!(b, &orig.3, "{name}");
            }
            seen += 1;
        }
    }
    assert_eq!(seen, model.len());
    assert_eq!(names_in(tmp.path()), ["d", "q", "src"]);
}

/// A writer that does not pad its header leaves the data misaligned for f32: the weights
/// are then copied, and the result is the same as for an aligned file.
#[test]
fn misaligned_data_and_folder_without_index() {
    let tmp = tempfile::tempdir().unwrap();
    let (name, _, shape, data) = floats("blk.weight", Dtype::F32, &[4, 160], 11);
    let mut header = format!(
        r#"{{"blk.weight":{{"dtype":"F32","shape":[{},{}],"data_offsets":[0,{}]}}}}"#,
        shape[0],
        shape[1],
        data.len()
    );
    while (8 + header.len()) % 4 != 2 {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&data);
    let odd = tmp.path().join("odd.safetensors");
    std::fs::write(&odd, &bytes).unwrap();
    let aligned = tmp.path().join("aligned.safetensors");
    write_st(&aligned, &[(name.clone(), Dtype::F32, shape, data)], &[]);
    let (q1, q2) = (
        tmp.path().join("q1.safetensors"),
        tmp.path().join("q2.safetensors"),
    );
    ok(&adpq(&["quantize", p(&odd), "-o", p(&q1), "-q"]));
    ok(&adpq(&["quantize", p(&aligned), "-o", p(&q2), "-q"]));
    assert!(read_st(&q1).0[&name] == read_st(&q2).0[&name]);

    // A folder with one unsharded file and a config: same layout out.
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    write_st(&src.join("model.safetensors"), &synthetic_model(), &[]);
    std::fs::write(src.join("config.json"), "{}").unwrap();
    let out = tmp.path().join("out");
    ok(&adpq(&["quantize", p(&src), "-o", p(&out), "-q"]));
    assert_eq!(names_in(&out), ["config.json", "model.safetensors"]);
    // Output inside the input folder is refused.
    fails(
        &adpq(&["quantize", p(&src), "-o", p(&src.join("q"))]),
        2,
        &["is the input"],
    );
}

/// A Hugging Face hub snapshot: a folder whose files are symlinks into a blob folder.
/// The links are followed (the output holds copies), and the blob folder is not a valid
/// output (it holds the input's files).
#[cfg(unix)]
#[test]
fn folder_of_symlinks_like_the_hub_cache() {
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().unwrap();
    let blobs = tmp.path().join("blobs");
    let snap = tmp.path().join("snapshots/abc123");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    write_st(&blobs.join("1111"), &synthetic_model(), &[]);
    std::fs::write(blobs.join("2222"), r#"{"model_type":"llama"}"#).unwrap();
    std::fs::write(blobs.join("3333"), "tokens").unwrap();
    symlink("../../blobs/1111", snap.join("model.safetensors")).unwrap();
    symlink("../../blobs/2222", snap.join("config.json")).unwrap();
    symlink(blobs.join("3333"), snap.join("tokenizer.json")).unwrap();

    let out = tmp.path().join("out");
    ok(&adpq(&["quantize", p(&snap), "-o", p(&out), "-q"]));
    assert_eq!(
        names_in(&out),
        ["config.json", "model.safetensors", "tokenizer.json"]
    );
    for n in names_in(&out) {
        let m = std::fs::symlink_metadata(out.join(&n)).unwrap();
        assert!(m.file_type().is_file(), "{n} is not a regular file");
    }
    assert_eq!(
        std::fs::read_to_string(out.join("config.json")).unwrap(),
        r#"{"model_type":"llama"}"#
    );
    assert_eq!(read_st(&out.join("model.safetensors")).1["format"], "adpq");
    ok(&adpq(&["verify", p(&out)]));
    ok(&adpq(&["inspect", p(&snap)]));

    // Replacing the blob folder (or the cache root) would delete the input's data.
    for target in [&blobs, tmp.path()] {
        fails(
            &adpq(&["quantize", p(&snap), "-o", p(target), "--force", "-q"]),
            2,
            &["is the input"],
        );
    }
    assert_eq!(names_in(&blobs), ["1111", "2222", "3333"]);
}

/// What a folder input holds beyond its checkpoint and regular files (subfolders,
/// `.safetensors` files the index does not list) is not copied, and a warning says so
/// (also with `-q`, and in the JSON report).
#[test]
fn entries_not_copied_are_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    sharded(&src);
    std::fs::write(src.join("config.json"), "{}").unwrap();
    std::fs::create_dir(src.join("onnx")).unwrap();
    std::fs::write(src.join("onnx/model.onnx"), "x").unwrap();
    write_st(
        &src.join("consolidated.safetensors"),
        &[floats("w.weight", Dtype::F32, &[4, 64], 3)],
        &[],
    );
    let out = tmp.path().join("out");
    let rep = tmp.path().join("r.json");
    let run = adpq(&[
        "quantize",
        p(&src),
        "-o",
        p(&out),
        "-q",
        "--report",
        p(&rep),
    ]);
    ok(&run);
    let err = String::from_utf8_lossy(&run.stderr);
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("adpq: warning:"))
        .collect();
    assert_eq!(warnings.len(), 2, "{err}");
    assert!(warnings[0].contains("consolidated.safetensors"), "{err}");
    assert!(
        warnings[0].contains("model.safetensors.index.json"),
        "{err}"
    );
    assert!(warnings[1].contains("onnx/"), "{err}");
    assert!(!names_in(&out).contains(&"onnx".to_string()));
    assert!(!names_in(&out).contains(&"consolidated.safetensors".to_string()));
    assert!(names_in(&out).contains(&"config.json".to_string()));
    let r: Value = serde_json::from_slice(&std::fs::read(&rep).unwrap()).unwrap();
    assert_eq!(r["warnings"].as_array().unwrap().len(), 2, "{r}");

    // dequantize warns about what the quantized folder holds beyond its checkpoint.
    std::fs::create_dir(out.join("extra")).unwrap();
    let d = tmp.path().join("d");
    let run = adpq(&["dequantize", p(&out), "-o", p(&d), "-q"]);
    ok(&run);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.lines()
            .any(|l| l.starts_with("adpq: warning:") && l.contains("extra/")),
        "{err}"
    );

    // A clean folder: no warning.
    let clean = tmp.path().join("clean");
    std::fs::create_dir(&clean).unwrap();
    sharded(&clean);
    let run = adpq(&["quantize", p(&clean), "-o", p(&tmp.path().join("o2")), "-q"]);
    ok(&run);
    assert!(
        run.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}
