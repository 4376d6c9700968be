//! Which tensors get quantized.
//!
//! Default rule: a tensor is quantized when it is 2-D, its dtype is F32, F16 or BF16, its
//! name ends in `.weight` (or is `weight`), and the name contains neither `embed` nor
//! `lm_head` (embeddings and the LM head are the most sensitive matrices and are usually
//! kept in full precision). `--include REGEX` replaces the name rule (any 2-D float tensor
//! whose name matches is taken); `--exclude REGEX` then removes matches. Everything else is
//! passed through byte for byte.

use regex::Regex;

use crate::error::{Error, Result};
use adpq_io::Dtype;

/// The tensor-selection rule.
#[derive(Debug, Clone, Default)]
pub struct TensorFilter {
    include: Option<Regex>,
    exclude: Option<Regex>,
}

/// Why a tensor is or is not quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Quantize it.
    Quantize,
    /// Pass it through: its dtype is not F32/F16/BF16.
    NotFloat,
    /// Pass it through: not 2-D (or an empty dimension).
    NotMatrix,
    /// Pass it through: the name rule (default or `--include`/`--exclude`) says so.
    ByName,
}

impl TensorFilter {
    /// A filter from optional include/exclude regular expressions.
    pub fn new(include: Option<&str>, exclude: Option<&str>) -> Result<TensorFilter> {
        let compile = |flag: &str, s: Option<&str>| -> Result<Option<Regex>> {
            s.map(|s| Regex::new(s).map_err(|e| Error::Usage(format!("invalid {flag} regex: {e}"))))
                .transpose()
        };
        Ok(TensorFilter {
            include: compile("--include", include)?,
            exclude: compile("--exclude", exclude)?,
        })
    }

    /// The default name rule (see the module docs).
    pub fn default_name_rule(name: &str) -> bool {
        (name.ends_with(".weight") || name == "weight")
            && !name.contains("embed")
            && !name.contains("lm_head")
    }

    /// Decides for one tensor.
    pub fn decide(&self, name: &str, dtype: Dtype, shape: &[usize]) -> Decision {
        if !matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Decision::NotFloat;
        }
        if shape.len() != 2 || shape.contains(&0) {
            return Decision::NotMatrix;
        }
        let by_name = match &self.include {
            Some(re) => re.is_match(name),
            None => Self::default_name_rule(name),
        };
        let excluded = self.exclude.as_ref().is_some_and(|re| re.is_match(name));
        if by_name && !excluded {
            Decision::Quantize
        } else {
            Decision::ByName
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rule() {
        let f = TensorFilter::default();
        let m = [64, 128];
        assert_eq!(
            f.decide("model.layers.0.mlp.up_proj.weight", Dtype::BF16, &m),
            Decision::Quantize
        );
        assert_eq!(
            f.decide("model.embed_tokens.weight", Dtype::F32, &m),
            Decision::ByName
        );
        assert_eq!(f.decide("lm_head.weight", Dtype::F32, &m), Decision::ByName);
        assert_eq!(f.decide("x.bias", Dtype::F32, &m), Decision::ByName);
        assert_eq!(f.decide("x.weight", Dtype::F32, &[64]), Decision::NotMatrix);
        assert_eq!(
            f.decide("x.weight", Dtype::F32, &[0, 4]),
            Decision::NotMatrix
        );
        assert_eq!(f.decide("x.weight", Dtype::I64, &m), Decision::NotFloat);
    }

    #[test]
    fn include_exclude() {
        let f = TensorFilter::new(Some("embed|proj"), Some("v_proj")).unwrap();
        let m = [64, 128];
        assert_eq!(
            f.decide("model.embed_tokens.weight", Dtype::F32, &m),
            Decision::Quantize
        );
        assert_eq!(
            f.decide("a.q_proj.weight", Dtype::F32, &m),
            Decision::Quantize
        );
        assert_eq!(
            f.decide("a.v_proj.weight", Dtype::F32, &m),
            Decision::ByName
        );
        assert_eq!(f.decide("a.norm.weight", Dtype::F32, &m), Decision::ByName);
        assert!(matches!(
            TensorFilter::new(Some("("), None),
            Err(Error::Usage(_))
        ));
    }
}
