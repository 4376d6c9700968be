//! Why a safetensors header was rejected, in words that name the tensor.
//!
//! The `safetensors` crate validates headers (and we keep it as the validator), but some
//! of its errors do not say which tensor is wrong ("invalid shape, data type, or offset
//! for tensor"). When it rejects a file, [`diagnose`] walks the header again and
//! describes the first problem with the tensor's name and figures.

use safetensors::tensor::TensorInfo;
use serde_json::{Map, Value};

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
