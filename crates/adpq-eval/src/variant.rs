//! Weight variants made in memory, for sweeps: the block projections of a dense model
//! quantized with any adpq parameters through an [`Engine`], without writing a file.

use adpq_core::{packed_len, PackedTensor, Params, Weights};
use adpq_engine::{Engine, EngineError};

use crate::linear::Linear;
use crate::model::Model;
use crate::{EvalError, Result};

/// The packed buffers of every block projection of a model (what `adpq quantize` would
/// store for them), owned; [`PackedProjections::model`] views them as a [`Model`].
#[derive(Debug)]
pub struct PackedProjections {
    params: Params,
    buffers: Vec<(String, Vec<u8>)>,
}

impl PackedProjections {
    /// Quantizes the projections of `model` (which must be dense) with `params` on
    /// `engine`: the bytes `adpq quantize` writes for the same parameters.
    pub fn quantize<E: Engine>(model: &Model<'_>, engine: &E, params: &Params) -> Result<Self> {
        let mut p = Self::quantize_with(model, engine, |_| *params)?;
        p.params = *params;
        Ok(p)
    }

    /// Quantizes each projection of `model` (which must be dense) with the parameters
    /// `params_of` gives for its name (a per-tensor policy): the bytes `adpq quantize`
    /// writes with the same rules. [`params`](Self::params) is then the first tensor's.
    pub fn quantize_with<E: Engine>(
        model: &Model<'_>,
        engine: &E,
        params_of: impl Fn(&str) -> Params,
    ) -> Result<Self> {
        let engine_err = |name: &str| {
            let name = name.to_string();
            move |e: EngineError| match e {
                EngineError::Core(e) => EvalError::Core(e),
                other => EvalError::Shape(format!("tensor `{name}`: {other}")),
            }
        };
        let mut buffers = Vec::new();
        let mut first = None;
        for (name, lin) in model.projections() {
            let params = &params_of(&name);
            first.get_or_insert(*params);
            let Linear::Dense { w, rows, cols } = lin else {
                return Err(EvalError::Shape(format!(
                    "tensor `{name}`: not dense, cannot quantize it"
                )));
            };
            let t = engine
                .load(Weights::F32(w), *rows, *cols)
                .map_err(engine_err(&name))?;
            let sel = engine.select(&t, params).map_err(engine_err(&name))?;
            let mut buf = vec![0u8; packed_len(*rows, *cols, params.format(), sel.n_outliers)?];
            engine
                .quantize(&t, params, &sel, &mut buf)
                .map_err(engine_err(&name))?;
            buffers.push((name, buf));
        }
        Ok(PackedProjections {
            params: first.unwrap_or_default(),
            buffers,
        })
    }

    /// The parameters the buffers were quantized with (with per-tensor parameters, the
    /// first tensor's; each buffer's header records its own).
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Total packed bytes.
    pub fn packed_bytes(&self) -> usize {
        self.buffers.iter().map(|(_, b)| b.len()).sum()
    }

    /// `base` with its projections replaced by these packed tensors (`base` must be the
    /// model they were quantized from, or one with the same tensor names and shapes).
    pub fn model<'a>(&'a self, base: &'a Model<'a>) -> Result<Model<'a>> {
        let mut next = self.buffers.iter();
        base.map_projections(|name, lin| {
            let (n, buf) = next
                .next()
                .filter(|(n, _)| n == name)
                .ok_or_else(|| EvalError::MissingTensor(name.into()))?;
            let p = PackedTensor::parse(buf)?;
            if (p.rows(), p.cols()) != lin.shape() {
                return Err(EvalError::Shape(format!(
                    "tensor `{n}`: packed shape differs from the model's"
                )));
            }
            Ok(Linear::Packed(p))
        })
    }
}
