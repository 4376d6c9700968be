//! The forward pass of a Llama-architecture causal LM over one window of tokens, all
//! positions at once (no KV cache: each window is scored independently).
//!
//! Per block: `x += o(attention(rope(q(n₁(x))), rope(k(n₁(x))), v(n₁(x))))`, then
//! `x += down(silu(gate(n₂(x))) · up(n₂(x)))`; `n` are RMS norms. Rotary embeddings use
//! the Hugging Face "rotate half" layout (dimension `i` pairs with `i + head_dim / 2`).
//! Attention is causal with grouped key/value heads. Activations are row-major
//! `tokens × features` f32.

use adpq_engine::Engine;
use ndarray::{linalg::general_mat_mul, s, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

use crate::model::Model;
use crate::{EvalError, Result};

/// The logits (`tokens.len() × vocab`, row-major) of every position of `tokens`.
pub fn logits<E: Engine + Sync>(model: &Model<'_>, engine: &E, tokens: &[u32]) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    logits_into(model, engine, tokens, &mut out)?;
    Ok(out)
}

/// [`logits`] into `out`, resized to `tokens.len() × vocab`: a caller scoring many
/// windows keeps one buffer (49 152 × 512 f32 are 96 MiB for SmolLM2, which a fresh
/// vector would fault in page by page each window).
pub fn logits_into<E: Engine + Sync>(
    model: &Model<'_>,
    engine: &E,
    tokens: &[u32],
    out: &mut Vec<f32>,
) -> Result<()> {
    let c = &model.config;
    let (t, hid) = (tokens.len(), c.hidden_size);
    let mut x = vec![0f32; t * hid];
    for (row, &tok) in x.chunks_exact_mut(hid).zip(tokens) {
        if tok as usize >= c.vocab_size {
            return Err(EvalError::Text(format!(
                "token id {tok} is outside the vocabulary"
            )));
        }
        model.embed.rows_into(engine, tok as usize, row)?;
    }
    let rope = Rope::new(t, c.head_dim(), c.rope_theta);
    let eps = c.rms_norm_eps as f32;
    let (q_dim, kv_dim) = (
        c.num_attention_heads * c.head_dim(),
        c.kv_heads() * c.head_dim(),
    );
    let mut h = vec![0f32; t * hid];
    let (mut q, mut k, mut v) = (
        vec![0f32; t * q_dim],
        vec![0f32; t * kv_dim],
        vec![0f32; t * kv_dim],
    );
    let mut att = vec![0f32; t * q_dim];
    let (mut gate, mut up) = (
        vec![0f32; t * c.intermediate_size],
        vec![0f32; t * c.intermediate_size],
    );
    let mut delta = vec![0f32; t * hid];
    for layer in &model.layers {
        rms_norm(&x, &layer.attn_norm, eps, &mut h);
        layer.q.matmul(engine, &h, t, &mut q)?;
        layer.k.matmul(engine, &h, t, &mut k)?;
        layer.v.matmul(engine, &h, t, &mut v)?;
        rope.apply(&mut q, c.num_attention_heads);
        rope.apply(&mut k, c.kv_heads());
        attention(
            &q,
            &k,
            &v,
            t,
            c.num_attention_heads,
            c.kv_heads(),
            c.head_dim(),
            &mut att,
        )?;
        layer.o.matmul(engine, &att, t, &mut delta)?;
        add(&mut x, &delta);
        rms_norm(&x, &layer.mlp_norm, eps, &mut h);
        layer.gate.matmul(engine, &h, t, &mut gate)?;
        layer.up.matmul(engine, &h, t, &mut up)?;
        swiglu(&mut gate, &up);
        layer.down.matmul(engine, &gate, t, &mut delta)?;
        add(&mut x, &delta);
    }
    rms_norm(&x, &model.norm, eps, &mut h);
    out.resize(t * c.vocab_size, 0.0);
    model.output().matmul(engine, &h, t, out)
}

/// `gate = silu(gate) · up`, element by element.
pub(crate) fn swiglu(gate: &mut [f32], up: &[f32]) {
    gate.par_iter_mut()
        .zip(up)
        .for_each(|(g, &u)| *g = silu_times(*g, u));
}

/// [`swiglu`] on this thread: for one position (a decoding step), where a parallel
/// region costs more than it saves and wakes pool threads beside the decoding team.
pub(crate) fn swiglu_here(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu_times(*g, u);
    }
}

/// `silu(g) · u`.
fn silu_times(g: f32, u: f32) -> f32 {
    g / (1.0 + (-g).exp()) * u
}

pub(crate) fn add(x: &mut [f32], d: &[f32]) {
    x.par_iter_mut().zip(d).for_each(|(a, b)| *a += b);
}

/// [`add`] on this thread (see [`swiglu_here`]).
pub(crate) fn add_here(x: &mut [f32], d: &[f32]) {
    for (a, b) in x.iter_mut().zip(d) {
        *a += b;
    }
}

/// `out = x / rms(x) · w`, row by row (the mean of squares taken in f64).
pub(crate) fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = w.len();
    out.par_chunks_mut(n)
        .zip(x.par_chunks(n))
        .for_each(|(o, r)| rms_norm_row(r, w, eps, o));
}

/// One row of [`rms_norm`], on this thread.
pub(crate) fn rms_norm_row(r: &[f32], w: &[f32], eps: f32, o: &mut [f32]) {
    let n = w.len();
    let ms = r.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / n as f64;
    let inv = 1.0 / (ms as f32 + eps).sqrt();
    for ((o, &v), &g) in o.iter_mut().zip(r).zip(w) {
        *o = v * inv * g;
    }
}

/// Rotary position embedding tables: `cos`/`sin` of `pos · θ^(−2i/d)`.
#[derive(Debug)]
pub(crate) struct Rope {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Rope {
    pub(crate) fn new(t: usize, head_dim: usize, theta: f64) -> Rope {
        let half = head_dim / 2;
        let (mut cos, mut sin) = (Vec::with_capacity(t * half), Vec::with_capacity(t * half));
        for p in 0..t {
            for i in 0..half {
                let a = p as f64 * theta.powf(-((2 * i) as f64) / head_dim as f64);
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        Rope { half, cos, sin }
    }

    /// Rotates every head of every position of `x` (`t × heads · head_dim`).
    fn apply(&self, x: &mut [f32], heads: usize) {
        let width = heads * 2 * self.half;
        x.par_chunks_mut(width)
            .enumerate()
            .for_each(|(p, row)| self.apply_at(p, row));
    }

    /// Rotates every head of one position's `row` (`heads · head_dim`) as position `p`.
    pub(crate) fn apply_at(&self, p: usize, row: &mut [f32]) {
        let (cos, sin) = (
            &self.cos[p * self.half..][..self.half],
            &self.sin[p * self.half..][..self.half],
        );
        for head in row.chunks_exact_mut(2 * self.half) {
            let (a, b) = head.split_at_mut(self.half);
            for i in 0..self.half {
                let (x1, x2) = (a[i], b[i]);
                a[i] = x1 * cos[i] - x2 * sin[i];
                b[i] = x2 * cos[i] + x1 * sin[i];
            }
        }
    }
}

/// Queries per attention task: a task reads the keys and values up to its last query,
/// so tasks of (head, 64 queries) share 512 positions among 2 threads evenly where one
/// task per head (9 for SmolLM2) could not, and skip the masked half of the scores.
const QUERY_BLOCK: usize = 64;

/// Causal softmax attention, each query head reading key/value head `head / group`.
/// Parallel over (head, block of [`QUERY_BLOCK`] queries); each output is computed the
/// same way whatever the thread count.
#[allow(clippy::too_many_arguments)]
fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    t: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
    out: &mut [f32],
) -> Result<()> {
    let shape_err = |e: ndarray::ShapeError| EvalError::Shape(e.to_string());
    let qv = ArrayView2::from_shape((t, heads * d), q).map_err(shape_err)?;
    let kv = ArrayView2::from_shape((t, kv_heads * d), k).map_err(shape_err)?;
    let vv = ArrayView2::from_shape((t, kv_heads * d), v).map_err(shape_err)?;
    let mut ov = ArrayViewMut2::from_shape((t, heads * d), out).map_err(shape_err)?;
    let group = heads / kv_heads;
    let scale = 1.0 / (d as f32).sqrt();
    // Each task's (first query, head, output block): disjoint views of `out`.
    let mut tasks = Vec::with_capacity(heads * t.div_ceil(QUERY_BLOCK));
    for (b, mut rows) in ov.axis_chunks_iter_mut(Axis(0), QUERY_BLOCK).enumerate() {
        for h in 0..heads {
            let (o, rest) = rows.split_at(Axis(1), d);
            tasks.push((b * QUERY_BLOCK, h, o));
            rows = rest;
        }
    }
    tasks
        .into_par_iter()
        .try_for_each_init(Vec::new, |scores: &mut Vec<f32>, (first, h, mut o)| {
            // Queries first..end see keys 0..end.
            let (n, g) = (o.nrows(), h / group);
            let end = first + n;
            let qh = qv.slice(s![first..end, h * d..(h + 1) * d]);
            let kh = kv.slice(s![..end, g * d..(g + 1) * d]);
            let vh = vv.slice(s![..end, g * d..(g + 1) * d]);
            scores.resize(n * end, 0.0);
            let mut sv = ArrayViewMut2::from_shape((n, end), &mut scores[..]).map_err(shape_err)?;
            general_mat_mul(scale, &qh, &kh.t(), 0.0, &mut sv);
            for (r, row) in scores.chunks_exact_mut(end).enumerate() {
                let i = first + r;
                let m = row[..=i].iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let mut sum = 0f32;
                for s in &mut row[..=i] {
                    *s = (*s - m).exp();
                    sum += *s;
                }
                let inv = 1.0 / sum;
                row[..=i].iter_mut().for_each(|s| *s *= inv);
                row[i + 1..].fill(0.0);
            }
            let sv = ArrayView2::from_shape((n, end), &scores[..]).map_err(shape_err)?;
            general_mat_mul(1.0, &sv, &vh, 0.0, &mut o);
            Ok(())
        })
}
