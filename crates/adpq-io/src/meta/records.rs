//! The record of each quantized tensor ([`META_TENSORS`]): its serde form
//! ([`OriginalTensor`]), written entry by entry ([`OriginalsJson`]), and read back entry
//! by entry into checked records ([`Originals`]).

use std::collections::BTreeMap;

use adpq_core::{OutDtype, Params};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::{json_string, ParamsRecord};
#[cfg(doc)]
use super::{AdpqMeta, META_PARAMS, META_TENSORS, META_VERSION};
use crate::error::{Error, Result};

/// The original dtype and shape of a quantized tensor, as recorded in the metadata, and
/// its own parameters when they differ from the file's [`META_PARAMS`] (a per-tensor
/// policy, e.g. more bits for some projections).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OriginalTensor {
    /// The input dtype (`F32`, `F16` or `BF16`).
    pub dtype: String,
    /// The input shape `[rows, cols]`.
    pub shape: Vec<usize>,
    /// The tensor's parameters when they are not the file's (absent: the file's). Boxed:
    /// most tensors have none, and a file may list millions.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub params: Option<Box<ParamsRecord>>,
}

/// The version [`META_VERSION`] records for a file written with `params` whose quantized
/// tensors are `originals`: the newest of the file's and the tensors' own (so a file of
/// version 1 tensors says `1`, as it did before version 2 existed).
pub fn written_version(params: &Params, originals: &BTreeMap<String, OriginalTensor>) -> u16 {
    originals
        .values()
        .filter_map(own_version)
        .fold(params.version().number(), u16::max)
}

/// The format version of a tensor's own parameters, if it has valid ones.
fn own_version(o: &OriginalTensor) -> Option<u16> {
    Some(o.params.as_ref()?.to_params().ok()?.version().number())
}

/// The [`META_TENSORS`] value of a file, written tensor by tensor in name order instead
/// of built from a map of every tensor: for many tiny tensors the map cost a few hundred
/// bytes each, this costs their JSON. The bytes are those of the JSON of the
/// `BTreeMap<String, OriginalTensor>` of the same entries.
#[derive(Debug, Clone)]
pub struct OriginalsJson {
    /// The JSON object so far, without its closing brace.
    json: String,
    /// The newest format version among the tensors' own parameters.
    pub(super) newest: u16,
    /// The last name pushed (names must increase).
    last: String,
}

impl Default for OriginalsJson {
    fn default() -> Self {
        OriginalsJson {
            json: String::from("{"),
            newest: 0,
            last: String::new(),
        }
    }
}

impl OriginalsJson {
    /// No tensors yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The entries of `map`.
    pub fn from_map(map: &BTreeMap<String, OriginalTensor>) -> Self {
        let mut j = Self::new();
        for (name, o) in map {
            j.push(name, o);
        }
        j
    }

    /// Adds tensor `name`, whose name must come after the last one pushed (as a map
    /// orders them); an entry out of order is left out and `false` returned.
    pub fn push(&mut self, name: &str, o: &OriginalTensor) -> bool {
        if self.json.len() > 1 && name <= self.last.as_str() {
            return false;
        }
        if self.json.len() > 1 {
            self.json.push(',');
        }
        self.json.push_str(&json_string(&name));
        self.json.push(':');
        self.json.push_str(&json_string(o));
        self.newest = self.newest.max(own_version(o).unwrap_or(0));
        self.last.clear();
        self.last.push_str(name);
        true
    }

    /// The JSON object.
    pub(super) fn finish(mut self) -> String {
        self.json.push('}');
        // Kept while the file is written: without the growth's slack (up to half).
        self.json.shrink_to_fit();
        self.json
    }
}

/// A quantized tensor's record as read back and checked: the dtype it is restored to and
/// its 2-D shape (its parameters are [`AdpqMeta::params_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Original {
    /// The input dtype.
    pub dtype: OutDtype,
    /// The input shape, `[rows, cols]`.
    pub shape: [usize; 2],
}

/// The quantized tensors of a file ([`META_TENSORS`], checked), sorted by name for
/// lookups in O(log n). A sorted list rather than a map: a file may list millions, and
/// an entry costs its name plus 40 bytes.
#[derive(Debug, Clone, Default)]
pub struct Originals {
    entries: Vec<(Box<str>, Original)>,
}

impl Originals {
    /// The checked records of a file, in any order; the name listed twice, if one is.
    pub(super) fn new(
        mut entries: Vec<(Box<str>, Original)>,
    ) -> std::result::Result<Originals, Box<str>> {
        // Our files list the names in order; a hand-made one may not.
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = entries.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(w[0].0.clone());
        }
        entries.shrink_to_fit();
        Ok(Originals { entries })
    }

    /// The record of tensor `name`, if it is quantized.
    pub fn get(&self, name: &str) -> Option<&Original> {
        let i = self
            .entries
            .binary_search_by(|(n, _)| n.as_ref().cmp(name))
            .ok()?;
        Some(&self.entries[i].1)
    }

    /// Whether tensor `name` is quantized.
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The records in name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Original)> {
        self.entries.iter().map(|(n, o)| (n.as_ref(), o))
    }

    /// How many tensors are quantized.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no tensor is quantized.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Parses a [`META_TENSORS`] object entry by entry, handing each to `each` as it comes:
/// the object is never held whole (with millions of tensors its tree would cost a few
/// hundred bytes each). Stops at the first error: `each`'s own, or the JSON's as
/// `json_error` words it.
pub(super) fn each_record(
    text: &str,
    each: &mut dyn FnMut(String, OriginalTensor) -> Result<()>,
    json_error: impl FnOnce(serde_json::Error) -> Error,
) -> Result<()> {
    let mut failed = None;
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = de
        .deserialize_map(Records {
            each,
            failed: &mut failed,
        })
        .and_then(|()| de.end());
    match (parsed, failed) {
        (_, Some(e)) => Err(e),
        (Err(e), None) => Err(json_error(e)),
        (Ok(()), None) => Ok(()),
    }
}

/// The visitor of [`each_record`].
struct Records<'a> {
    each: &'a mut dyn FnMut(String, OriginalTensor) -> Result<()>,
    failed: &'a mut Option<Error>,
}

impl<'de> Visitor<'de> for Records<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object of tensor records")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        while let Some((name, record)) = map.next_entry::<String, OriginalTensor>()? {
            if let Err(e) = (self.each)(name, record) {
                *self.failed = Some(e);
                return Err(serde::de::Error::custom("record refused"));
            }
        }
        Ok(())
    }
}
