//! Entry points for fuzz targets and tests: every reader of this crate over arbitrary
//! bytes, held in memory (no file is written).
//!
//! Each function panics only when an invariant is broken, which is what a fuzzer reports;
//! any input the readers reject must be rejected with an error value.

use std::path::Path;

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
    for (name, orig) in &adpq.originals {
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
        for (name, orig) in &meta.originals {
            let t = f.tensor(name).unwrap();
            let p = packed_of(&f, &t, orig, meta.params_of(name), true).unwrap();
            let bits = if name == "layers.1.weight" { 6 } else { 4 };
            assert_eq!(p.params().bits, bits, "{name}");
        }
    }
}
