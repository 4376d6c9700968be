//! `adpq inspect` and `adpq verify`, and the checks that `dequantize` shares with them:
//! corrupt packed tensors and untrustworthy `adpq.tensors` metadata.

use std::collections::BTreeMap;

use serde_json::Value;

mod common;
use common::*;

#[test]
fn corrupt_packed_tensor_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("m.safetensors");
    write_st(&input, &synthetic_model(), &[]);
    let q = tmp.path().join("q.safetensors");
    ok(&adpq(&["quantize", p(&input), "-o", p(&q), "-q"]));
    // Flip one bit in the codes of a packed tensor.
    let mut bytes = std::fs::read(&q).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let name = "model.layers.0.mlp.up_proj.weight";
    let start = header[name]["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[8 + n + start + 2000] ^= 0x10;
    let bad = tmp.path().join("bad.safetensors");
    std::fs::write(&bad, &bytes).unwrap();
    fails(
        &adpq(&["verify", p(&bad)]),
        1,
        &["bad.safetensors", name, "checksum"],
    );
    let d = tmp.path().join("d.safetensors");
    fails(
        &adpq(&["dequantize", p(&bad), "-o", p(&d)]),
        1,
        &[name, "checksum"],
    );
    assert!(!d.exists());
    // inspect checks the CRC too: it lists the tensor as INVALID (and still exits 0).
    let out = adpq(&["inspect", p(&bad)]);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains(name)).unwrap();
    assert!(
        line.contains("INVALID") && line.contains("checksum"),
        "{text}"
    );
    assert!(text.contains(", 1 INVALID"), "{text}");
    let out = adpq(&["inspect", "--json", p(&bad)]);
    ok(&out);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["errors"], 1);
    let t = json["files"][0]["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap();
    assert!(t["error"].as_str().unwrap().contains("checksum"), "{t}");
}

/// Output that cannot be written to stdout is an error (exit 1, naming stdout), for every
/// command that prints; a closed pipe ends the command quietly with 141 (128 + SIGPIPE,
/// what a shell shows for a tool that SIGPIPE killed), without a panic or a message.
#[test]
fn stdout_failures_are_reported() {
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("m.safetensors");
    write_st(&input, &synthetic_model(), &[]);
    let q = tmp.path().join("q.safetensors");
    let d = tmp.path().join("d.safetensors");
    let runs: [Vec<&str>; 5] = [
        vec!["inspect", p(&input)],
        vec!["inspect", "--json", p(&input)],
        vec!["verify", p(&q)],
        vec!["quantize", p(&input), "-o", p(&q), "-q"],
        vec!["dequantize", p(&q), "-o", p(&d), "-q"],
    ];
    ok(&adpq(&["quantize", p(&input), "-o", p(&q), "-q"]));
    for args in &runs {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_adpq"))
            .args(args)
            .stdout(full)
            .output()
            .unwrap();
        fails(&out, 1, &["stdout", "No space left on device"]);

        // The reader is gone before the command starts (closing it after the spawn would
        // race with a fast command whose output fits the pipe's buffer).
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_adpq"))
            .args(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}

/// `verify`, `dequantize` and `inspect` do not trust `adpq.tensors`: a missing or invalid
/// key, or a packed tensor it does not list, is an error (never "ok: 0 tensors", never
/// packed bytes in a "standard" checkpoint).
#[test]
fn adpq_tensors_metadata_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("m.safetensors");
    write_st(&input, &synthetic_model(), &[]);
    let q = tmp.path().join("q.safetensors");
    ok(&adpq(&["quantize", p(&input), "-o", p(&q), "-q"]));
    let d = tmp.path().join("d.safetensors");
    let bad = tmp.path().join("bad.safetensors");
    let one = QUANTIZED[1];
    type Edit = Box<dyn FnOnce(&mut BTreeMap<String, String>)>;
    let cases: [(&str, Edit, &str); 4] = [
        (
            "missing",
            Box::new(|m| {
                m.remove("adpq.tensors");
            }),
            "adpq.tensors",
        ),
        (
            "not json",
            Box::new(|m| {
                m.insert("adpq.tensors".into(), "{oops".into());
            }),
            "adpq.tensors",
        ),
        (
            "empty",
            Box::new(|m| {
                m.insert("adpq.tensors".into(), "{}".into());
            }),
            "not listed in adpq.tensors",
        ),
        (
            "one missing",
            Box::new(|m| {
                let mut t: BTreeMap<String, Value> =
                    serde_json::from_str(&m["adpq.tensors"]).unwrap();
                t.remove(one);
                m.insert("adpq.tensors".into(), serde_json::to_string(&t).unwrap());
            }),
            one,
        ),
    ];
    for (what, edit, needle) in cases {
        eprintln!("case: {what}");
        rewrite_meta(&q, &bad, edit);
        fails(&adpq(&["verify", p(&bad)]), 1, &["bad.safetensors", needle]);
        fails(
            &adpq(&["dequantize", p(&bad), "-o", p(&d), "-q"]),
            1,
            &["bad.safetensors", needle],
        );
        assert!(!d.exists());
        let out = adpq(&["inspect", p(&bad)]);
        ok(&out);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("INVALID"), "{what}:\n{text}");
        let out = adpq(&["inspect", "--json", p(&bad)]);
        ok(&out);
        let j: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(j["errors"].as_u64().unwrap() > 0, "{what}: {j}");
    }
    // The good file still verifies; a plain checkpoint is "not an adpq checkpoint".
    ok(&adpq(&["verify", p(&q)]));
    let j: Value = serde_json::from_slice(&adpq(&["inspect", "--json", p(&q)]).stdout).unwrap();
    assert_eq!(j["errors"], 0);
    fails(
        &adpq(&["verify", p(&input)]),
        1,
        &["not an adpq checkpoint"],
    );
    fails(
        &adpq(&["dequantize", p(&input), "-o", p(&d)]),
        1,
        &["not an adpq checkpoint"],
    );
    assert!(!d.exists());
}

/// `verify` checks everything `dequantize` checks before restoring: the parameters in
/// `adpq.params` (present, valid, equal to every packed header's) and every record of
/// `adpq.tensors` (a known dtype, a 2-D shape). Both refuse the same files, with the
/// same message; `inspect` marks them INVALID.
#[test]
fn verify_checks_what_dequantize_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("m.safetensors");
    write_st(&input, &synthetic_model(), &[]);
    let q = tmp.path().join("q.safetensors");
    ok(&adpq(&["quantize", p(&input), "-o", p(&q), "-q"]));
    let d = tmp.path().join("d.safetensors");
    let bad = tmp.path().join("bad.safetensors");
    let one = QUANTIZED[0];
    let edit_record = |f: fn(&mut Value)| {
        move |m: &mut BTreeMap<String, String>| {
            let mut t: BTreeMap<String, Value> = serde_json::from_str(&m["adpq.tensors"]).unwrap();
            f(t.get_mut(QUANTIZED[0]).unwrap());
            m.insert("adpq.tensors".into(), serde_json::to_string(&t).unwrap());
        }
    };
    let set_params = |json: &'static str| {
        move |m: &mut BTreeMap<String, String>| {
            m.insert("adpq.params".into(), json.into());
        }
    };
    type Edit = Box<dyn Fn(&mut BTreeMap<String, String>)>;
    let cases: Vec<(&str, Edit, Vec<&str>)> = vec![
        (
            "unknown original dtype",
            Box::new(edit_record(|r| r["dtype"] = "F64".into())),
            vec![one, "unknown original dtype \"F64\""],
        ),
        (
            "1-D original shape",
            Box::new(edit_record(|r| r["shape"] = serde_json::json!([13824]))),
            vec![one, "is not 2-D"],
        ),
        (
            // JSON allows a key twice; a map would keep the last record silently.
            "a record listed twice",
            Box::new(|m: &mut BTreeMap<String, String>| {
                let text = &m["adpq.tensors"];
                let records: BTreeMap<String, Value> = serde_json::from_str(text).unwrap();
                let (name, record) = records.iter().next().unwrap();
                let first = format!("{}:{record}", Value::from(name.as_str()));
                let twice = format!("{{{first},{}", &text[1..]);
                m.insert("adpq.tensors".into(), twice);
            }),
            vec!["listed twice in adpq.tensors"],
        ),
        (
            "records not an object",
            Box::new(|m: &mut BTreeMap<String, String>| {
                m.insert("adpq.tensors".into(), "[1]".into());
            }),
            vec!["bad adpq.tensors metadata"],
        ),
        (
            "params missing",
            Box::new(|m: &mut BTreeMap<String, String>| {
                m.remove("adpq.params");
            }),
            vec!["without the adpq.params metadata key"],
        ),
        (
            "params not json",
            Box::new(set_params("{bits")),
            vec!["bad adpq.params metadata"],
        ),
        (
            "params out of range",
            Box::new(set_params(
                r#"{"bits":99,"group_size":128,"alpha":0.06,"grid":"symmetric","selection":"exact"}"#,
            )),
            vec!["bad adpq.params metadata"],
        ),
        (
            "unknown grid",
            Box::new(set_params(
                r#"{"bits":4,"group_size":128,"alpha":0.06,"grid":"round","selection":"exact"}"#,
            )),
            vec!["bad adpq.params metadata", "unknown grid"],
        ),
        (
            "params disagree with the headers",
            Box::new(set_params(
                r#"{"bits":3,"group_size":128,"alpha":0.06,"grid":"symmetric","selection":"exact"}"#,
            )),
            vec!["disagrees with adpq.params"],
        ),
        (
            "alpha disagrees",
            Box::new(set_params(
                r#"{"bits":4,"group_size":128,"alpha":0.05,"grid":"symmetric","selection":"exact"}"#,
            )),
            vec!["disagrees with adpq.params"],
        ),
    ];
    for (what, edit, needles) in cases {
        eprintln!("case: {what}");
        rewrite_meta(&q, &bad, edit);
        let mut needles = needles;
        needles.push("bad.safetensors");
        let v = fails(&adpq(&["verify", p(&bad)]), 1, &needles);
        let dq = fails(
            &adpq(&["dequantize", p(&bad), "-o", p(&d), "-q"]),
            1,
            &needles,
        );
        assert!(!d.exists());
        // With an F32 output forced, dequantize refuses the same files.
        fails(
            &adpq(&["dequantize", p(&bad), "-o", p(&d), "--dtype", "f32", "-q"]),
            1,
            &needles,
        );
        eprintln!("verify: {v}dequantize: {dq}");
        let j: Value =
            serde_json::from_slice(&adpq(&["inspect", "--json", p(&bad)]).stdout).unwrap();
        assert!(j["errors"].as_u64().unwrap() > 0, "{what}: {j}");
    }
}

/// A plain U8 tensor whose bytes start with the packed magic is passed through by
/// quantize and recorded in `adpq.not_packed`, so its output reads back (verify,
/// dequantize, inspect); without that record it would be taken for a packed tensor the
/// metadata lost, which stays an error.
#[test]
fn plain_u8_with_the_magic_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("m.safetensors");
    let mut model = synthetic_model();
    let blob: Vec<u8> = b"ADPQ\x01\x00\x40\x00 not a packed tensor".to_vec();
    model.push((
        "extra.blob".into(),
        safetensors::Dtype::U8,
        vec![blob.len()],
        blob.clone(),
    ));
    write_st(&input, &model, &[]);
    let q = tmp.path().join("q.safetensors");
    ok(&adpq(&["quantize", p(&input), "-o", p(&q), "-q"]));
    let (tensors, meta) = read_st(&q);
    assert_eq!(meta["adpq.not_packed"], r#"["extra.blob"]"#);
    assert_eq!(tensors["extra.blob"].2, blob);
    ok(&adpq(&["verify", p(&q)]));
    let j: Value = serde_json::from_slice(&adpq(&["inspect", "--json", p(&q)]).stdout).unwrap();
    assert_eq!(j["errors"], 0, "{j}");
    let d = tmp.path().join("d.safetensors");
    ok(&adpq(&["dequantize", p(&q), "-o", p(&d), "-q"]));
    let (restored, meta) = read_st(&d);
    assert_eq!(restored["extra.blob"].2, blob);
    assert!(!meta.contains_key("adpq.not_packed"));
    // Quantized again, the restored file reads back too.
    let q2 = tmp.path().join("q2.safetensors");
    ok(&adpq(&["quantize", p(&d), "-o", p(&q2), "-q"]));
    ok(&adpq(&["verify", p(&q2)]));
    // Without its record the tensor is a packed tensor the metadata lost: an error.
    let bad = tmp.path().join("bad.safetensors");
    rewrite_meta(&q, &bad, |m| {
        m.remove("adpq.not_packed");
    });
    fails(
        &adpq(&["verify", p(&bad)]),
        1,
        &["extra.blob", "not listed in adpq.tensors"],
    );
    // A record naming a missing or a quantized tensor is refused.
    for (list, needle) in [
        (r#"["nope"]"#, "nope"),
        (&*format!(r#"["{}"]"#, QUANTIZED[0]), "also quantized"),
    ] {
        let list = list.to_string();
        rewrite_meta(&q, &bad, move |m| {
            m.insert("adpq.not_packed".into(), list);
        });
        fails(&adpq(&["verify", p(&bad)]), 1, &[needle]);
    }
}

/// An input carrying `adpq.*` keys of its own (but no `format=adpq`) quantizes into a
/// file that reads back: the stale keys are dropped, not taken for ours.
#[test]
fn input_adpq_keys_do_not_survive() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("m.safetensors");
    write_st(
        &input,
        &synthetic_model(),
        &[
            ("adpq.not_packed", r#"["nope"]"#),
            ("adpq.params", "junk"),
            ("note", "kept"),
        ],
    );
    let q = tmp.path().join("q.safetensors");
    ok(&adpq(&["quantize", p(&input), "-o", p(&q), "-q"]));
    ok(&adpq(&["verify", p(&q)]));
    let (_, meta) = read_st(&q);
    assert!(!meta.contains_key("adpq.not_packed"));
    assert_eq!(meta["note"], "kept");
    let d = tmp.path().join("d.safetensors");
    ok(&adpq(&["dequantize", p(&q), "-o", p(&d), "-q"]));
}
