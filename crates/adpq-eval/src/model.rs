//! The weights of a Llama-architecture model, found by their Hugging Face names in a
//! checkpoint: dense tensors borrowed from the memory map (or converted from f16/bf16),
//! packed tensors of an adpq checkpoint parsed in place.

use std::borrow::Cow;

use adpq_core::Weights;
use adpq_io::meta::{is_adpq, packed_of, read_adpq_meta, AdpqMeta};
use adpq_io::{weight_data, Checkpoint, SafetensorsFile, WeightData};

use crate::config::LlamaConfig;
use crate::linear::Linear;
use crate::rtn::RtnSpec;
use crate::{EvalError, Result};

/// One transformer block.
#[derive(Debug)]
pub struct Layer<'a> {
    /// RMS norm before attention.
    pub attn_norm: Cow<'a, [f32]>,
    /// Query projection (`heads · head_dim × hidden`).
    pub q: Linear<'a>,
    /// Key projection (`kv_heads · head_dim × hidden`).
    pub k: Linear<'a>,
    /// Value projection.
    pub v: Linear<'a>,
    /// Attention output projection.
    pub o: Linear<'a>,
    /// RMS norm before the feed-forward layer.
    pub mlp_norm: Cow<'a, [f32]>,
    /// Gate projection.
    pub gate: Linear<'a>,
    /// Up projection.
    pub up: Linear<'a>,
    /// Down projection.
    pub down: Linear<'a>,
}

/// A whole model: configuration and weights.
#[derive(Debug)]
pub struct Model<'a> {
    /// Hyperparameters.
    pub config: LlamaConfig,
    /// Token embedding (`vocab × hidden`).
    pub embed: Linear<'a>,
    /// Transformer blocks.
    pub layers: Vec<Layer<'a>>,
    /// Final RMS norm.
    pub norm: Cow<'a, [f32]>,
    /// Output projection; `None` when tied to the embedding.
    pub lm_head: Option<Linear<'a>>,
}

/// Finds tensors by name across the files of a checkpoint.
struct Lookup<'a> {
    files: Vec<(&'a SafetensorsFile, Option<AdpqMeta>)>,
}

impl<'a> Lookup<'a> {
    fn new(ckpt: &'a Checkpoint) -> Result<Self> {
        let mut files = Vec::new();
        for f in &ckpt.files {
            let meta = f.user_metadata();
            let adpq = if is_adpq(&meta) {
                Some(read_adpq_meta(f, &meta)?)
            } else {
                None
            };
            files.push((f, adpq));
        }
        Ok(Lookup { files })
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Linear<'a>> {
        for (f, adpq) in &self.files {
            let Some(t) = f.tensor(name) else { continue };
            let packed = adpq
                .as_ref()
                .and_then(|m| Some((m.originals.get(name)?, m.params_of(name))));
            let lin = match packed {
                Some((orig, params)) => Linear::Packed(packed_of(f, &t, orig, params, true)?),
                None => {
                    if t.shape.len() != 2 {
                        return Err(shape(name, &[rows, cols], t.shape));
                    }
                    let w = dense(f, name, weight_data(&t))?;
                    Linear::Dense {
                        w,
                        rows: t.shape[0],
                        cols: t.shape[1],
                    }
                }
            };
            if lin.shape() != (rows, cols) {
                let (r, c) = lin.shape();
                return Err(shape(name, &[rows, cols], &[r, c]));
            }
            return Ok(lin);
        }
        Err(EvalError::MissingTensor(name.into()))
    }

    fn vector(&self, name: &str, len: usize) -> Result<Cow<'a, [f32]>> {
        for (f, _) in &self.files {
            let Some(t) = f.tensor(name) else { continue };
            if t.shape != [len] {
                return Err(shape(name, &[len], t.shape));
            }
            return dense(f, name, weight_data(&t));
        }
        Err(EvalError::MissingTensor(name.into()))
    }

    fn contains(&self, name: &str) -> bool {
        self.files.iter().any(|(f, _)| f.contains(name))
    }
}

fn shape(name: &str, expected: &[usize], actual: &[usize]) -> EvalError {
    EvalError::Shape(format!(
        "tensor `{name}`: shape {actual:?}, the config implies {expected:?}"
    ))
}

/// The weights as f32: borrowed when they are aligned f32, converted otherwise.
fn dense<'a>(
    f: &SafetensorsFile,
    name: &str,
    data: Option<WeightData<'a>>,
) -> Result<Cow<'a, [f32]>> {
    let data = data.ok_or_else(|| {
        EvalError::Shape(format!(
            "{}: tensor `{name}` is not F32, F16 or BF16",
            f.path().display()
        ))
    })?;
    Ok(match data {
        WeightData::Borrowed(Weights::F32(s)) => Cow::Borrowed(s),
        WeightData::F32(v) => Cow::Owned(v),
        other => {
            let w = other.weights();
            Cow::Owned((0..w.len()).filter_map(|i| w.value(i)).collect())
        }
    })
}

impl<'a> Model<'a> {
    /// The model in `ckpt` (a dense checkpoint, or an adpq checkpoint whose packed
    /// tensors are used as they are), with the shapes `config` implies.
    pub fn load(config: LlamaConfig, ckpt: &'a Checkpoint) -> Result<Model<'a>> {
        let look = Lookup::new(ckpt)?;
        let c = &config;
        let (hid, ffn, hd) = (c.hidden_size, c.intermediate_size, c.head_dim());
        let (q_rows, kv_rows) = (c.num_attention_heads * hd, c.kv_heads() * hd);
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let n = |s: &str| format!("model.layers.{i}.{s}.weight");
            layers.push(Layer {
                attn_norm: look.vector(&n("input_layernorm"), hid)?,
                q: look.matrix(&n("self_attn.q_proj"), q_rows, hid)?,
                k: look.matrix(&n("self_attn.k_proj"), kv_rows, hid)?,
                v: look.matrix(&n("self_attn.v_proj"), kv_rows, hid)?,
                o: look.matrix(&n("self_attn.o_proj"), hid, q_rows)?,
                mlp_norm: look.vector(&n("post_attention_layernorm"), hid)?,
                gate: look.matrix(&n("mlp.gate_proj"), ffn, hid)?,
                up: look.matrix(&n("mlp.up_proj"), ffn, hid)?,
                down: look.matrix(&n("mlp.down_proj"), hid, ffn)?,
            });
        }
        let lm_head = if c.tie_word_embeddings && !look.contains("lm_head.weight") {
            None
        } else {
            Some(look.matrix("lm_head.weight", c.vocab_size, hid)?)
        };
        Ok(Model {
            embed: look.matrix("model.embed_tokens.weight", c.vocab_size, hid)?,
            norm: look.vector("model.norm.weight", hid)?,
            layers,
            lm_head,
            config,
        })
    }

    /// This model with every projection of every block (the tensors `adpq quantize`
    /// quantizes by default) seen through the RTN grid `spec`; the embedding, norms
    /// and output projection stay as they are. The weights must be dense.
    pub fn with_rtn(&'a self, spec: RtnSpec) -> Result<Model<'a>> {
        self.map_projections(|_, l| match l {
            Linear::Dense { w, rows, cols } => Ok(Linear::Rtn {
                w,
                rows: *rows,
                cols: *cols,
                spec,
            }),
            _ => Err(EvalError::Shape(
                "an RTN baseline needs dense input weights".into(),
            )),
        })
    }

    /// This model with each block projection replaced by `f(name, projection)` (a
    /// variant of the weights: quantized in memory, fake-quantized...); the embedding,
    /// norms and output projection are shared. `name` is the Hugging Face tensor name.
    pub fn map_projections(
        &'a self,
        mut f: impl FnMut(&str, &'a Linear<'a>) -> Result<Linear<'a>>,
    ) -> Result<Model<'a>> {
        let mut layers = Vec::with_capacity(self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            let mut g =
                |s: &str, lin: &'a Linear<'a>| f(&format!("model.layers.{i}.{s}.weight"), lin);
            layers.push(Layer {
                attn_norm: Cow::Borrowed(&l.attn_norm),
                q: g("self_attn.q_proj", &l.q)?,
                k: g("self_attn.k_proj", &l.k)?,
                v: g("self_attn.v_proj", &l.v)?,
                o: g("self_attn.o_proj", &l.o)?,
                mlp_norm: Cow::Borrowed(&l.mlp_norm),
                gate: g("mlp.gate_proj", &l.gate)?,
                up: g("mlp.up_proj", &l.up)?,
                down: g("mlp.down_proj", &l.down)?,
            });
        }
        Ok(Model {
            config: self.config.clone(),
            embed: borrow(&self.embed),
            layers,
            norm: Cow::Borrowed(&self.norm),
            lm_head: self.lm_head.as_ref().map(borrow),
        })
    }

    /// The block projections with their Hugging Face names, in order.
    pub fn projections(&self) -> impl Iterator<Item = (String, &Linear<'a>)> {
        self.layers.iter().enumerate().flat_map(|(i, l)| {
            [
                ("self_attn.q_proj", &l.q),
                ("self_attn.k_proj", &l.k),
                ("self_attn.v_proj", &l.v),
                ("self_attn.o_proj", &l.o),
                ("mlp.gate_proj", &l.gate),
                ("mlp.up_proj", &l.up),
                ("mlp.down_proj", &l.down),
            ]
            .into_iter()
            .map(move |(s, lin)| (format!("model.layers.{i}.{s}.weight"), lin))
        })
    }

    /// Storage bits per weight over the block projections (the quantized tensors).
    pub fn projection_bits_per_weight(&self) -> f64 {
        let (mut bits, mut n) = (0f64, 0f64);
        for (_, lin) in self.projections() {
            let (r, c) = lin.shape();
            bits += lin.bits_per_weight() * (r * c) as f64;
            n += (r * c) as f64;
        }
        if n > 0.0 {
            bits / n
        } else {
            0.0
        }
    }

    /// Repacks the rows of every packed matrix the decoder multiplies by that the core
    /// repacks (format v3 at 4 to 8 bits: [`Repacked`](adpq_core::kernels::Repacked)), so
    /// that its int8 gemv reads one stream per block of rows: a copy of 1.01–1.04× their
    /// packed bytes (7-bit matrices 1.15×; SmolLM2's default file 1.03×), held in memory
    /// beside the mapped file, all in one mapping on huge
    /// pages where the OS has them (`src/repack.rs`). The results are the same bits. The
    /// embedding is repacked only when it is also the output projection (the decoder
    /// reads an untied one a row at a time). On an error no matrix changes.
    pub fn repack_for_decoding(&mut self) -> Result<()> {
        let mut mats: Vec<&mut Linear<'a>> = Vec::with_capacity(self.layers.len() * 7 + 1);
        for l in &mut self.layers {
            mats.extend([
                &mut l.q,
                &mut l.k,
                &mut l.v,
                &mut l.o,
                &mut l.gate,
                &mut l.up,
                &mut l.down,
            ]);
        }
        mats.push(self.lm_head.as_mut().unwrap_or(&mut self.embed));
        crate::repack::repack_all(&mut mats)
    }

    /// The output projection (the embedding when tied).
    pub fn output(&self) -> &Linear<'a> {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }
}

/// A second view of the same weights.
fn borrow<'a>(l: &'a Linear<'a>) -> Linear<'a> {
    match l {
        Linear::Dense { w, rows, cols } => Linear::Dense {
            w: Cow::Borrowed(w),
            rows: *rows,
            cols: *cols,
        },
        Linear::Packed(p) | Linear::Repacked { packed: p, .. } => Linear::Packed(*p),
        Linear::Rtn {
            w,
            rows,
            cols,
            spec,
        } => Linear::Rtn {
            w,
            rows: *rows,
            cols: *cols,
            spec: *spec,
        },
        Linear::Decoded {
            w,
            rows,
            cols,
            bits_per_weight,
        } => Linear::Decoded {
            w: Cow::Borrowed(w),
            rows: *rows,
            cols: *cols,
            bits_per_weight: *bits_per_weight,
        },
    }
}
