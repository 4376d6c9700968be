//! Why a safetensors header was rejected, in words that name the tensor.
//!
//! The `safetensors` crate validates headers (and we keep it as the validator), but some
//! of its errors do not say which tensor is wrong ("invalid shape, data type, or offset
//! for tensor"). When it rejects a file, [`diagnose`] walks the header again and
//! describes the first problem with the tensor's name and figures.

use std::collections::HashMap;

use safetensors::tensor::TensorInfo;
use safetensors::{SafeTensorError, SafeTensors};
use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::index::TensorIndex;

/// The largest header the `safetensors` crate reads (bytes of JSON).
const MAX_HEADER: usize = 100_000_000;

/// Reads the header of `bytes` (a whole safetensors file) into a [`TensorIndex`]: the
/// result of `SafeTensors::read_metadata`, without the crate's `Metadata` (about 250
/// bytes per tiny tensor) or its transient copy of the whole header (it deserializes
/// through `#[serde(flatten)]`, which first buffers the header as a tree of generic
/// values, about 750 bytes per tiny tensor: 10⁶ tensors, most of a gigabyte). Here the
/// entries are deserialized one at a time straight into the table, which is then
/// checked by the crate's own rules ([`TensorIndex::tiled_len`]). Whatever this path
/// does not accept (an error, a repeated name) goes through the crate's own parser, so
/// errors and edge cases stay exactly the crate's.
pub(crate) fn read_metadata(bytes: &[u8]) -> Result<Header, SafeTensorError> {
    if let Some(read) = read_streamed(bytes) {
        return Ok(read);
    }
    let (header_len, metadata) = SafeTensors::read_metadata(bytes)?;
    // The crate accepted it: the same facts fit the table.
    let index = TensorIndex::from_metadata(&metadata).ok_or(SafeTensorError::HeaderTooLarge)?;
    Ok(Header {
        header_len,
        index,
        user: metadata.metadata().clone().unwrap_or_default(),
    })
}

/// What [`read_metadata`] returns.
pub(crate) struct Header {
    /// Bytes of the header's JSON.
    pub header_len: usize,
    /// The tensors, in data order.
    pub index: TensorIndex,
    /// The `__metadata__` map (empty when absent).
    pub user: HashMap<String, String>,
}

/// [`read_metadata`] entry by entry; `None` where the crate must decide.
fn read_streamed(bytes: &[u8]) -> Option<Header> {
    let n = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    if n > MAX_HEADER {
        return None;
    }
    let header = bytes.get(8..8usize.checked_add(n)?)?;
    let Entries { metadata, index } =
        serde_json::from_str(std::str::from_utf8(header).ok()?).ok()?;
    // A repeated name, offsets that do not tile the data: the crate's parser decides.
    let index = index?.finish()?;
    let complete = index.tiled_len()?.checked_add(8 + n)? == bytes.len();
    complete.then(|| Header {
        header_len: n,
        index,
        user: metadata.unwrap_or_default(),
    })
}

/// A header's entries: its `__metadata__` and its tensors in a table (`None` when the
/// table would overflow).
struct Entries {
    metadata: Option<HashMap<String, String>>,
    index: Option<TensorIndex>,
}

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a safetensors header (a JSON object)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut metadata = None;
                let mut index = Some(TensorIndex::default());
                let mut seen_metadata = false;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "__metadata__" {
                        if seen_metadata {
                            return Err(A::Error::custom("__metadata__ twice"));
                        }
                        seen_metadata = true;
                        metadata = map.next_value()?;
                    } else {
                        let info: TensorInfo = map.next_value()?;
                        index = index.and_then(|mut i| {
                            i.push(&key, info.dtype, &info.shape, info.data_offsets)?;
                            Some(i)
                        });
                    }
                }
                Ok(Entries { metadata, index })
            }
        }
        d.deserialize_map(EntriesVisitor)
    }
}

/// The first problem of the header of `bytes` (a whole safetensors file), named and
/// explained; `None` when it finds none the `safetensors` crate's own message would not
/// already say as well (the header length, UTF-8 or JSON syntax).
pub(crate) fn diagnose(bytes: &[u8]) -> Option<String> {
    let n = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header = bytes.get(8..8usize.checked_add(n)?)?;
    let map: Map<String, Value> = serde_json::from_slice(header).ok()?;
    let mut tensors = Vec::with_capacity(map.len());
    for (name, value) in map {
        if name == "__metadata__" {
            if let Err(e) = serde_json::from_value::<Map<String, Value>>(value.clone())
                .and_then(|m| m.into_iter().try_for_each(|(k, v)| check_string(&k, &v)))
            {
                return Some(format!("__metadata__: {e}"));
            }
            continue;
        }
        match serde_json::from_value::<TensorInfo>(value) {
            Ok(info) => tensors.push((name, info)),
            Err(e) => return Some(format!("tensor `{name}`: {e}")),
        }
    }
    tensors.sort_by_key(|(_, info)| info.data_offsets);
    let mut end = 0usize;
    for (name, info) in &tensors {
        let (s, e) = info.data_offsets;
        if s != end {
            return Some(format!(
                "tensor `{name}`: its data starts at byte {s} of the data section, expected {end} \
                 (tensors must tile the data section without gaps or overlaps)"
            ));
        }
        if e < s {
            return Some(format!(
                "tensor `{name}`: data_offsets [{s}, {e}] end before they start"
            ));
        }
        let needed = info
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(info.dtype.bitsize()));
        match needed {
            None => {
                return Some(format!(
                    "tensor `{name}`: shape {:?} of {} overflows the size computation",
                    info.shape, info.dtype
                ))
            }
            Some(bits) if bits % 8 != 0 => {
                return Some(format!(
                    "tensor `{name}`: shape {:?} of {} is not a whole number of bytes",
                    info.shape, info.dtype
                ))
            }
            Some(bits) if bits / 8 != e - s => {
                return Some(format!(
                    "tensor `{name}`: shape {:?} of {} needs {} bytes, but data_offsets [{s}, {e}] hold {}",
                    info.shape,
                    info.dtype,
                    bits / 8,
                    e - s
                ))
            }
            Some(_) => {}
        }
        end = e;
    }
    let data = bytes.len() - 8 - n;
    if end != data {
        return Some(format!(
            "the tensors' data ends at byte {end} of the data section, but the file holds {data} \
             bytes of data ({})",
            if end > data {
                "truncated?"
            } else {
                "trailing bytes"
            }
        ));
    }
    None
}

fn check_string(key: &str, v: &Value) -> Result<(), serde_json::Error> {
    match v {
        Value::String(_) => Ok(()),
        _ => Err(serde::de::Error::custom(format!(
            "the value of `{key}` is not a string"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: usize) -> Vec<u8> {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.resize(b.len() + data, 0);
        b
    }

    /// The streamed reader gives the crate's result: the same header length, names and
    /// tensor infos, metadata, and (through the fallback) the same errors.
    #[test]
    fn streamed_read_equals_the_crates() {
        let t = |name: &str, s: usize, e: usize| {
            format!(
                r#""{name}":{{"dtype":"U8","shape":[{}],"data_offsets":[{s},{e}]}}"#,
                e - s
            )
        };
        let cases = [
            (format!("{{{},{}}}", t("b", 0, 4), t("a", 4, 6)), 6),
            (
                format!(
                    r#"{{"__metadata__":{{"k":"v"}},{},{}}}"#,
                    t("x", 0, 2),
                    t("e", 2, 2)
                ),
                2,
            ),
            (
                format!(r#"{{"__metadata__":null,{}}}"#, t(r"x\u00e9", 0, 3)),
                3,
            ),
            ("{}".to_string(), 0),
            // Errors: a gap, a short buffer, a repeated name, a bad dtype, bad JSON,
            // metadata twice, trailing bytes.
            (format!("{{{},{}}}", t("b", 0, 4), t("a", 5, 6)), 6),
            (format!("{{{}}}", t("b", 0, 4)), 3),
            (format!("{{{},{}}}", t("a", 0, 4), t("a", 4, 6)), 6),
            (
                r#"{"a":{"dtype":"Q9","shape":[1],"data_offsets":[0,1]}}"#.to_string(),
                1,
            ),
            (r#"{"a":"#.to_string(), 0),
            (r#"{"__metadata__":{},"__metadata__":{}}"#.to_string(), 0),
            ("{} x".to_string(), 0),
            // A size that disagrees with the shape, overlapping and reversed offsets, a
            // part of a byte, a shape whose size overflows.
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#.to_string(),
                4,
            ),
            (format!("{{{},{}}}", t("a", 0, 4), t("b", 2, 6)), 6),
            (
                r#"{"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}"#.to_string(),
                4,
            ),
            (
                r#"{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#.to_string(),
                2,
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#
                    .to_string(),
                0,
            ),
        ];
        for (header, data) in cases {
            let bytes = file(&header, data);
            let ours = read_metadata(&bytes);
            let theirs = SafeTensors::read_metadata(&bytes);
            // Whatever the crate accepts (none of these repeats a name), the streamed
            // path accepts itself, and the reverse: its checks are the crate's.
            assert_eq!(read_streamed(&bytes).is_some(), theirs.is_ok(), "{header}");
            match (ours, theirs) {
                (
                    Ok(Header {
                        header_len: n,
                        index,
                        user,
                    }),
                    Ok((tn, tm)),
                ) => {
                    assert_eq!(n, tn, "{header}");
                    let mut want = tm.offset_keys();
                    let mut got: Vec<String> = (0..index.len())
                        .map(|i| index.name(i).to_string())
                        .collect();
                    want.sort();
                    got.sort();
                    assert_eq!(got, want, "{header}");
                    for i in 0..index.len() {
                        let b = tm.info(index.name(i)).unwrap();
                        assert_eq!(index.dtype(i), b.dtype, "{header}");
                        assert_eq!(index.shape(i), b.shape, "{header}");
                        assert_eq!(index.offsets(i), b.data_offsets, "{header}");
                        assert_eq!(index.find(index.name(i)), Some(i), "{header}");
                    }
                    assert_eq!(user, tm.metadata().clone().unwrap_or_default(), "{header}");
                }
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{header}"),
                (a, b) => panic!("{header}: {:?} vs {:?}", a.is_ok(), b.is_ok()),
            }
        }
    }

    #[test]
    fn names_the_tensor_and_the_problem() {
        let cases = [
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"bad":{"dtype":"F32","shape":[3],"data_offsets":[8,16]}}"#,
                16,
                "tensor `bad`: shape [3] of F32 needs 12 bytes, but data_offsets [8, 16] hold 8",
            ),
            (
                r#"{"gap":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}}"#,
                6,
                "tensor `gap`: its data starts at byte 4",
            ),
            (
                r#"{"t":{"dtype":"F99","shape":[2],"data_offsets":[0,2]}}"#,
                2,
                "tensor `t`: unknown variant `F99`",
            ),
            (
                r#"{"big":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,2]}}"#,
                2,
                "tensor `big`: shape [4294967296, 4294967296] of F32 overflows",
            ),
            (
                r#"{"t":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#,
                5,
                "data ends at byte 2 of the data section, but the file holds 5 bytes of data (trailing bytes)",
            ),
            (
                r#"{"__metadata__":{"k":1},"t":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#,
                2,
                "__metadata__: the value of `k` is not a string",
            ),
        ];
        for (header, data, expect) in cases {
            let bytes = file(header, data);
            let got = diagnose(&bytes).unwrap_or_default();
            assert!(got.contains(expect), "{header}: {got}");
            // The crate rejects each of these too.
            assert!(safetensors::SafeTensors::read_metadata(&bytes).is_err());
        }
        let fine = file(
            r#"{"t":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#,
            2,
        );
        assert_eq!(diagnose(&fine), None);
        assert_eq!(diagnose(b"short"), None);
    }
}
