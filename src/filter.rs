//! Which tensors get quantized.
//!
//! Default rule: a tensor is quantized when it is 2-D, its dtype is F32, F16 or BF16, its
//! name ends in `.weight` (or is `weight`), and the name contains neither `embed` nor
//! `lm_head` (embeddings and the LM head are the most sensitive matrices and are usually
//! kept in full precision). One exception, with the default preset (`v3`, which codes it
//! at 7 bits): a *tied* token embedding, `embed_tokens.weight` in a checkpoint without an
//! `lm_head.weight`, is also the output projection, read whole for every generated token,
//! and llama.cpp quantizes it too (Q6_K in its Q4_0 and K-quant files); it is taken.
//! `--include REGEX` replaces the name rule (any 2-D float tensor whose name matches is
//! taken); `--exclude REGEX` then removes matches. Everything else is passed through byte
//! for byte.

use regex::Regex;

use crate::error::{Error, Result};
use adpq_io::Dtype;

/// The tensor-selection rule.
#[derive(Debug, Clone, Default)]
pub struct TensorFilter {
    include: Option<Regex>,
    exclude: Option<Regex>,
    /// Whether the name rule takes a tied token embedding (see the module docs): asked
    /// for by the preset, then kept only for a checkpoint without an LM head
    /// ([`TensorFilter::for_checkpoint`]).
    tied_embedding: bool,
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
            tied_embedding: false,
        })
    }

    /// The filter with the name rule also taking a tied token embedding, when `take` (the
    /// default preset's choice; without `--include`, which replaces the name rule).
    pub fn taking_tied_embedding(self, take: bool) -> TensorFilter {
        TensorFilter {
            tied_embedding: take,
            ..self
        }
    }

    /// The filter for a checkpoint with these tensor names: a token embedding is tied
    /// only when no tensor is an LM head.
    pub fn for_checkpoint<'n>(&self, mut names: impl Iterator<Item = &'n str>) -> TensorFilter {
        let mut f = self.clone();
        f.tied_embedding &= !names.any(is_lm_head);
        f
    }

    /// The default name rule (see the module docs), a tied embedding not taken.
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
            None => {
                Self::default_name_rule(name)
                    || (self.tied_embedding && is_component_path(name, "embed_tokens.weight"))
            }
        };
        let excluded = self.exclude.as_ref().is_some_and(|re| re.is_match(name));
        if by_name && !excluded {
            Decision::Quantize
        } else {
            Decision::ByName
        }
    }
}

/// Whether `name` is `suffix` or ends in `.suffix` (whole dot-separated components).
fn is_component_path(name: &str, suffix: &str) -> bool {
    name.strip_suffix(suffix)
        .is_some_and(|head| head.is_empty() || head.ends_with('.'))
}

/// Whether `name` is an LM head's weight (`lm_head.weight`, any prefix).
fn is_lm_head(name: &str) -> bool {
    is_component_path(name, "lm_head.weight")
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
    fn tied_embedding_only_without_an_lm_head() {
        let m = [64, 128];
        let embed = "model.embed_tokens.weight";
        let taking = TensorFilter::default().taking_tied_embedding(true);
        let tied = taking.for_checkpoint([embed, "model.norm.weight"].into_iter());
        assert_eq!(tied.decide(embed, Dtype::BF16, &m), Decision::Quantize);
        assert_eq!(
            tied.decide("embed_tokens.weight", Dtype::F32, &m),
            Decision::Quantize
        );
        // Other embeddings (BERT's word, position and type tables) and look-alike names
        // stay dense.
        for name in [
            "embeddings.word_embeddings.weight",
            "model.my_embed_tokens.weight",
            "model.embed_tokens.bias",
        ] {
            assert_eq!(
                tied.decide(name, Dtype::F32, &m),
                Decision::ByName,
                "{name}"
            );
        }
        let untied = taking.for_checkpoint([embed, "lm_head.weight"].into_iter());
        assert_eq!(untied.decide(embed, Dtype::F32, &m), Decision::ByName);
        assert_eq!(
            untied.decide("lm_head.weight", Dtype::F32, &m),
            Decision::ByName
        );
        // Not asked for (every preset but v3): dense, tied or not.
        let plain = TensorFilter::default().for_checkpoint([embed].into_iter());
        assert_eq!(plain.decide(embed, Dtype::F32, &m), Decision::ByName);
        // --exclude still removes it.
        let excluded = TensorFilter::new(None, Some("embed_tokens"))
            .unwrap()
            .taking_tied_embedding(true)
            .for_checkpoint([embed].into_iter());
        assert_eq!(excluded.decide(embed, Dtype::F32, &m), Decision::ByName);
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
