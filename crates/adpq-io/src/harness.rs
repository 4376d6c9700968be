//! Entry points for fuzz targets and tests: every reader of this crate over arbitrary
//! bytes, held in memory (no file is written).
//!
//! Each function panics only when an invariant is broken, which is what a fuzzer reports;
//! any input the readers reject must be rejected with an error value.

use std::path::Path;

use crate::checkpoint::{check_index, index_output, is_plain_file_name, parse_index};
use crate::file::{weight_data, SafetensorsFile};
use crate::meta::{dequantized_metadata, is_adpq, packed_of, read_adpq_meta, unlisted_packed};

/// Reads `data` as a whole safetensors file, then as an adpq checkpoint (metadata and
/// every packed tensor, with and without the checksum).
pub fn checkpoint(data: &[u8]) {
    let Ok(f) = SafetensorsFile::from_bytes(Path::new("fuzz.safetensors"), data.to_vec()) else {
        return;
    };
    let tensors = f.tensors();
    assert_eq!(
        tensors.len(),
        f.names().len(),
        "every listed tensor has a view"
    );
    for t in &tensors {
        let bits = t
            .shape
            .iter()
            .try_fold(t.dtype.bitsize(), |a, &d| a.checked_mul(d));
        assert_eq!(bits, Some(t.data.len() * 8), "`{}`: size checked", t.name);
        assert!(f.contains(t.name) && f.tensor(t.name).is_some());
        if let Some(w) = weight_data(t) {
            assert_eq!(w.weights().len(), t.numel());
        }
    }
    let meta = f.user_metadata();
    let restored = dequantized_metadata(&meta);
    assert!(!is_adpq(&restored));
    let Ok(adpq) = read_adpq_meta(&f, &meta) else {
        return;
    };
    let _ = unlisted_packed(&f, &adpq);
    for (name, orig) in adpq.originals.iter() {
        let t = f
            .tensor(name)
            .expect("read_adpq_meta checks every record's tensor");
        for crc in [true, false] {
            let params = adpq.params_of(name);
            if let Ok(p) = packed_of(&f, &t, orig, params, crc) {
                assert_eq!(orig.shape, [p.rows(), p.cols()]);
                assert_eq!(p.params(), params.format());
            }
        }
    }
}

/// Reads a safetensors file given as its header JSON and its data section (the 8-byte
/// length is computed), through [`checkpoint`]. Mutating such an input keeps the
/// length consistent, so a fuzzer explores the header and the adpq metadata instead.
pub fn checkpoint_parts(header_json: &[u8], data: &[u8]) {
    let mut file = (header_json.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header_json);
    file.extend_from_slice(data);
    checkpoint(&file);
}

/// The shards [`index`] knows: name and tensor names (each F32 `[1]`).
const INDEX_SHARDS: [(&str, &[&str]); 2] = [
    ("model-00001-of-00002.safetensors", &["a", "b.weight"]),
    ("model-00002-of-00002.safetensors", &["c", ""]),
];

/// An in-memory shard holding `names` (F32 `[1]` each).
fn shard(name: &str, names: &[&str]) -> SafetensorsFile {
    let mut json = String::from("{");
    for (i, n) in names.iter().enumerate() {
        let key = serde_json::to_string(n).unwrap_or_default();
        json.push_str(&format!(
            "{}{key}:{{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[{},{}]}}",
            if i > 0 { "," } else { "" },
            4 * i,
            4 * i + 4
        ));
    }
    json.push('}');
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(json.as_bytes());
    bytes.resize(bytes.len() + 4 * names.len(), 0);
    SafetensorsFile::from_bytes(Path::new(name), bytes).expect("a valid shard")
}

/// Reads `data` as a sharded folder's `model.safetensors.index.json`, in memory, as
/// `Checkpoint::open` does: the shard names it lists, then (when it lists only shards
/// this harness holds, `INDEX_SHARDS`) the check that index and shards agree, and
/// the output index with the written size.
///
/// Invariants: the shard names are sorted, unique and plain file names (none can
/// leave the folder); an index accepted against the shards lists exactly their tensors,
/// each under its own shard; the output index reads back to the same shards and holds
/// the total size.
pub fn index(data: &[u8]) {
    let path = Path::new("model.safetensors.index.json");
    let Ok((shards, json)) = parse_index(path, data) else {
        return;
    };
    assert!(shards.windows(2).all(|w| w[0] < w[1]), "sorted, unique");
    for s in &shards {
        assert!(is_plain_file_name(s), "{s:?} leaves the folder");
        assert!(!s.contains(['/', '\\', '\0']) && s != "." && s != "..");
    }
    let map = json.get("weight_map").and_then(|m| m.as_object());
    let listed = map.map_or(0, |m| m.len());
    assert!(shards.len() <= listed, "a shard per listed tensor at most");

    let out = index_output(&json, 12_345).expect("a JSON value prints");
    let (again, back) = parse_index(path, &out).expect("the output index reads back");
    assert_eq!(again, shards);
    assert_eq!(back["metadata"]["total_size"], 12_345);
    assert_eq!(back["weight_map"], json["weight_map"]);

    let known: Vec<&(&str, &[&str])> = shards
        .iter()
        .filter_map(|s| INDEX_SHARDS.iter().find(|(n, _)| n == s))
        .collect();
    if known.len() != shards.len() {
        return;
    }
    let files: Vec<SafetensorsFile> = known.iter().map(|(n, t)| shard(n, t)).collect();
    if check_index(path, &json, &shards, &files).is_ok() {
        let map = map.expect("an accepted index has a weight_map");
        let mut total = 0;
        for (f, s) in files.iter().zip(&shards) {
            for n in f.names() {
                assert_eq!(map.get(n).and_then(|v| v.as_str()), Some(s.as_str()), "{n}");
                total += 1;
            }
        }
        assert_eq!(map.len(), total, "every listed tensor is in its shard");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Findings of the `checkpoint` fuzz target and hand-made hostile headers: each is
    /// rejected or read without a panic.
    #[test]
    fn hostile_inputs_are_errors() {
        checkpoint(b"");
        checkpoint(&[0xff; 8]);
        checkpoint(&u64::MAX.to_le_bytes());
        checkpoint_parts(b"{}", b"");
        checkpoint_parts(b"{\"__metadata__\":{\"format\":\"adpq\"}}", b"");
        checkpoint_parts(
            br#"{"__metadata__":{"format":"adpq","adpq.version":"1","adpq.params":"{\"bits\":4,\"group_size\":128,\"alpha\":0.06,\"grid\":\"symmetric\",\"selection\":\"exact\"}","adpq.tensors":"{\"w\":{\"dtype\":\"F32\",\"shape\":[1,16]}}"},"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#,
            b"ADPQ",
        );
        checkpoint_parts(
            br#"{"__metadata__":{"format":"adpq","adpq.version":"1","adpq.params":"{\"bits\":99,\"group_size\":0,\"alpha\":-1,\"grid\":\"x\",\"selection\":\"exact\"}","adpq.tensors":"{}"}}"#,
            b"",
        );
        checkpoint_parts(
            br#"{"t":{"dtype":"F32","shape":[18446744073709551615,2],"data_offsets":[0,0]}}"#,
            b"",
        );
        // A fuzzer finding: an original format of `adpq` was restored by dequantize, so
        // the dequantized metadata read as packed.
        checkpoint_parts(
            br#"{"__metadata__":{"adpq.original_format":"adpq"},"n":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            &[0; 4],
        );
    }

    /// The index harness on hand-made indexes (hostile names, mismatches) and the seeds.
    #[test]
    fn index_inputs() {
        let good = br#"{"metadata":{"total_size":16},"weight_map":{"a":"model-00001-of-00002.safetensors","b.weight":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors","":"model-00002-of-00002.safetensors"}}"#;
        index(good);
        let (shards, json) = parse_index(Path::new("i"), good).unwrap();
        let files: Vec<_> = INDEX_SHARDS.iter().map(|(n, t)| shard(n, t)).collect();
        assert!(check_index(Path::new("i"), &json, &shards, &files).is_ok());
        for bad in [
            &br#"{"weight_map":{"a":"../x.safetensors"}}"#[..],
            br#"{"weight_map":{"a":"/etc/passwd"}}"#,
            br#"{"weight_map":{"a":"."}}"#,
            br#"{"weight_map":{"a":"a\u0000b"}}"#,
            br#"{"weight_map":{"a":1}}"#,
            br#"{"weight_map":[]}"#,
            br#"[]"#,
            b"\xff\xfe",
        ] {
            index(bad);
            assert!(parse_index(Path::new("i"), bad).is_err(), "{bad:?}");
        }
        // Listed under the wrong shard, or missing one tensor: refused.
        for wrong in [
            &br#"{"weight_map":{"a":"model-00002-of-00002.safetensors","b.weight":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors","":"model-00002-of-00002.safetensors"}}"#[..],
            br#"{"weight_map":{"a":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors","":"model-00002-of-00002.safetensors"}}"#,
        ] {
            index(wrong);
            let (shards, json) = parse_index(Path::new("i"), wrong).unwrap();
            assert!(check_index(Path::new("i"), &json, &shards, &files).is_err());
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/index");
        for e in std::fs::read_dir(dir).unwrap() {
            index(&std::fs::read(e.unwrap().path()).unwrap());
        }
    }

    /// The fuzz seeds read through the harness, the format v2 one (per-tensor 6 bits)
    /// with its metadata and both packed tensors accepted.
    #[test]
    fn fuzz_seeds_read() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/checkpoint");
        for name in [
            "tiny.safetensors",
            "tiny.adpq.safetensors",
            "tiny.v2.adpq.safetensors",
        ] {
            checkpoint(&std::fs::read(dir.join(name)).unwrap());
        }
        let bytes = std::fs::read(dir.join("tiny.v2.adpq.safetensors")).unwrap();
        let f = SafetensorsFile::from_bytes(Path::new("seed"), bytes).unwrap();
        let meta = read_adpq_meta(&f, &f.user_metadata()).unwrap();
        assert_eq!(meta.version, 2);
        for (name, orig) in meta.originals.iter() {
            let t = f.tensor(name).unwrap();
            let p = packed_of(&f, &t, orig, meta.params_of(name), true).unwrap();
            let bits = if name == "layers.1.weight" { 6 } else { 4 };
            assert_eq!(p.params().bits, bits, "{name}");
        }
    }
}
