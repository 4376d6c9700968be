//! The model's hyperparameters, read from a Hugging Face `config.json`.

use std::path::Path;

use serde::Deserialize;

use crate::{EvalError, Result};

/// The hyperparameters of a Llama-architecture causal LM (`LlamaForCausalLM`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LlamaConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Number of transformer blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention; equal to the query heads without it).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Width of one head (default `hidden_size / num_attention_heads`).
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Epsilon of the RMS norms.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Base of the rotary embedding frequencies.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Whether the output projection is the token embedding (no `lm_head.weight`).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Activation of the feed-forward layer (only `silu` is supported).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// `model_type` (`llama`; other Llama-architecture types are accepted as read).
    #[serde(default)]
    pub model_type: Option<String>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_act() -> String {
    "silu".into()
}

impl LlamaConfig {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<LlamaConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
        Self::from_json(&text)
    }

    /// Parses and checks the text of a `config.json`.
    pub fn from_json(text: &str) -> Result<LlamaConfig> {
        let c: LlamaConfig =
            serde_json::from_str(text).map_err(|e| EvalError::Config(e.to_string()))?;
        c.check()?;
        Ok(c)
    }

    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    fn check(&self) -> Result<()> {
        let bad = |m: String| Err(EvalError::Config(m));
        if self.hidden_act != "silu" {
            return bad(format!(
                "hidden_act {:?} is not supported (silu)",
                self.hidden_act
            ));
        }
        let (h, kv, d) = (self.num_attention_heads, self.kv_heads(), self.head_dim());
        if self.hidden_size == 0 || self.intermediate_size == 0 || self.vocab_size == 0 {
            return bad("hidden_size, intermediate_size and vocab_size must be positive".into());
        }
        if h == 0 || kv == 0 || h % kv != 0 {
            return bad(format!(
                "{h} attention heads cannot share {kv} key/value heads"
            ));
        }
        if d == 0 || d % 2 != 0 {
            return bad(format!(
                "head_dim {d} must be even and positive (rotary pairs)"
            ));
        }
        if !(self.rms_norm_eps > 0.0 && self.rope_theta > 1.0) {
            return bad("rms_norm_eps must be > 0 and rope_theta > 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_gqa_config_and_rejects_bad_head_counts() {
        let c = LlamaConfig::from_json(
            r#"{"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
                "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "tie_word_embeddings": true}"#,
        )
        .unwrap();
        assert_eq!((c.kv_heads(), c.head_dim()), (3, 64));
        assert!(c.tie_word_embeddings);
        let e = LlamaConfig::from_json(
            r#"{"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                "num_attention_heads": 9, "num_key_value_heads": 4, "vocab_size": 10}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("cannot share"), "{e}");
        let e = LlamaConfig::from_json(
            r#"{"hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1,
                "num_attention_heads": 1, "vocab_size": 10, "hidden_act": "gelu"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("gelu"), "{e}");
    }
}
