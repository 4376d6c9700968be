//! Token-by-token decoding with a KV cache: the inference engine of `adpq generate`.
//!
//! The same Llama-architecture block as [`crate::forward`] (RMS norms, rotary
//! embeddings, grouped-query attention, SwiGLU MLP), one position at a time. Each
//! position's keys and values are kept per layer, so a step costs one matrix-vector
//! product per weight matrix plus attention over the positions so far. Packed weights
//! are never expanded: every packed product is the core's fused dot on the packed rows
//! with int8 activations (`CpuKernels::quantize_activations`, rotated first for a v3
//! tensor), over rows repacked at load where the model has them
//! ([`Model::repack_for_decoding`](crate::model::Model::repack_for_decoding): the same
//! bits, read faster). With more than one thread in the rayon pool a step's products and
//! attention are shared by a team that stays awake for the step, or for many steps
//! ([`Decoder::with_team`]; `decode/team.rs`). Dense weights (the embedding and a tied
//! output projection, or a whole unquantized model) use f32 dots.

mod team;

use std::ops::Range;
use std::sync::RwLock;

use adpq_core::kernels::Q8Activations;
use adpq_core::CpuKernels;

use team::{Board, StopOnDrop};

use crate::forward::{add_here, rms_norm_row, swiglu_here, Rope};
use crate::linear::Linear;
use crate::model::Model;
use crate::{EvalError, Result};

/// A decoding session over one model: the KV cache of the positions so far and the
/// buffers of one step.
#[derive(Debug)]
pub struct Decoder<'m, K: CpuKernels> {
    ctx: Context<'m, K>,
    pos: usize,
    buf: Buffers,
}

/// What every thread of a step reads: the model, its kernels and the KV cache.
#[derive(Debug)]
struct Context<'m, K> {
    model: &'m Model<'m>,
    kernels: K,
    rope: Rope,
    max_len: usize,
    /// Per layer: the keys and values of the positions so far. The calling thread writes
    /// a position's between the team's jobs, the team reads them during attention.
    caches: Vec<RwLock<KvCache>>,
    /// Columns of the widest matrix (the int8 activations' room).
    widest: usize,
}

/// One layer's keys and values: `max_len × kv_dim` each, a position's after the last.
#[derive(Debug)]
struct KvCache {
    keys: Vec<f32>,
    values: Vec<f32>,
}

/// The shape of attention: query heads, key/value heads and the head width.
#[derive(Clone, Copy, Debug)]
struct Heads {
    heads: usize,
    kv_heads: usize,
    d: usize,
}

/// The activations of one step.
#[derive(Debug)]
struct Buffers {
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    delta: Vec<f32>,
    logits: Vec<f32>,
    /// One set per activation quantization a step shares between matrices (q, k and v
    /// may differ in group size).
    q8: [Q8Buffers; 3],
}

/// Room for the int8 activations of the widest input.
#[derive(Debug)]
struct Q8Buffers {
    q: Vec<i8>,
    scales: Vec<f32>,
    sums: Vec<i32>,
}

impl Q8Buffers {
    /// Room for inputs of `widest` columns.
    fn for_width(widest: usize) -> Self {
        Q8Buffers {
            q: vec![0i8; widest],
            // Groups have at least 16 columns in every format version.
            scales: vec![0f32; widest.div_ceil(16)],
            sums: vec![0i32; widest.div_ceil(16)],
        }
    }
}

impl<'m, K: CpuKernels> Decoder<'m, K> {
    /// A session of at most `max_len` positions (prompt and generated tokens) over
    /// `model`, its packed products on `kernels`. An error when a weight is neither
    /// dense nor packed (the RTN and llama.cpp baselines of `adpq eval` are not for
    /// decoding).
    pub fn new(model: &'m Model<'m>, kernels: K, max_len: usize) -> Result<Self> {
        let c = &model.config;
        let all = model
            .layers
            .iter()
            .flat_map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down])
            .chain([&model.embed, model.output()]);
        let mut widest = 0;
        for lin in all {
            match lin {
                Linear::Dense { .. }
                | Linear::Packed(_)
                | Linear::Repacked { .. }
                | Linear::Decoded { .. } => {}
                Linear::Rtn { .. } => {
                    return Err(EvalError::Shape(
                        "decoding needs dense or adpq-packed weights, not an RTN baseline".into(),
                    ))
                }
            }
            widest = widest.max(lin.shape().1);
        }
        let (q_dim, kv_dim) = (
            c.num_attention_heads * c.head_dim(),
            c.kv_heads() * c.head_dim(),
        );
        let cache = || {
            RwLock::new(KvCache {
                keys: vec![0f32; max_len * kv_dim],
                values: vec![0f32; max_len * kv_dim],
            })
        };
        Ok(Decoder {
            ctx: Context {
                model,
                kernels,
                rope: Rope::new(max_len, c.head_dim(), c.rope_theta),
                max_len,
                caches: model.layers.iter().map(|_| cache()).collect(),
                widest,
            },
            pos: 0,
            buf: Buffers {
                x: vec![0f32; c.hidden_size],
                h: vec![0f32; c.hidden_size],
                q: vec![0f32; q_dim],
                k: vec![0f32; kv_dim],
                v: vec![0f32; kv_dim],
                att: vec![0f32; q_dim],
                gate: vec![0f32; c.intermediate_size],
                up: vec![0f32; c.intermediate_size],
                delta: vec![0f32; c.hidden_size],
                logits: vec![0f32; model.output().shape().0],
                q8: std::array::from_fn(|_| Q8Buffers::for_width(widest)),
            },
        })
    }

    /// Positions decoded so far (the next token's position).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Feeds `token` at the next position and returns the logits of the token after it
    /// (`vocab` values). An error when the session is full or the token is outside the
    /// vocabulary. Each call starts and ends the step's helper threads: for many steps,
    /// [`with_team`](Self::with_team) keeps them.
    pub fn step(&mut self, token: u32) -> Result<&[f32]> {
        self.with_team(|steps| steps.step(token).map(|_| ()))?;
        Ok(&self.buf.logits)
    }

    /// Runs `f` with [`Steps`] whose helper threads (one per rayon thread but the
    /// calling one) stay for all the steps `f` takes, instead of starting for each:
    /// starting and joining them cost about 3 % of a step on 2 threads. Between steps
    /// they spin, then yield, then sleep.
    pub fn with_team<R>(&mut self, f: impl FnOnce(&mut Steps<'_, 'm, K>) -> R) -> R {
        let helpers = rayon::current_num_threads().saturating_sub(1);
        let (ctx, buf, pos) = (&self.ctx, &mut self.buf, &mut self.pos);
        if helpers == 0 {
            return f(&mut Steps {
                ctx,
                buf,
                pos,
                board: None,
            });
        }
        let board = Board::new(helpers, &ctx.caches);
        let (k, widest) = (ctx.kernels, ctx.widest);
        std::thread::scope(|scope| {
            // First: if a spawn fails, the helpers already started stop too.
            let _stop = StopOnDrop(&board);
            for h in 1..=helpers {
                let board = &board;
                scope.spawn(move || board.help(k, h, widest));
            }
            f(&mut Steps {
                ctx,
                buf,
                pos,
                board: Some(&board),
            })
        })
    }
}

/// Steps of a [`Decoder`] with its helper threads running ([`Decoder::with_team`]).
pub struct Steps<'s, 'm, K: CpuKernels> {
    ctx: &'s Context<'m, K>,
    buf: &'s mut Buffers,
    pos: &'s mut usize,
    board: Option<&'s Board<'s>>,
}

impl<K: CpuKernels> Steps<'_, '_, K> {
    /// [`Decoder::step`], on the team.
    pub fn step(&mut self, token: u32) -> Result<&[f32]> {
        self.ctx.step_at(*self.pos, token, self.buf, self.board)?;
        *self.pos += 1;
        Ok(&self.buf.logits)
    }

    /// Positions decoded so far.
    pub fn position(&self) -> usize {
        *self.pos
    }
}

impl<K: CpuKernels> std::fmt::Debug for Steps<'_, '_, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Steps")
            .field("position", &self.pos)
            .field("helpers", &self.board.map_or(0, |b| b.threads() - 1))
            .finish()
    }
}

impl<'m, K: CpuKernels> Context<'m, K> {
    /// [`Decoder::step`] at position `p`, the products and attention shared with the
    /// helpers of `board`.
    fn step_at<'s>(
        &'s self,
        p: usize,
        token: u32,
        b: &mut Buffers,
        board: Option<&Board<'s>>,
    ) -> Result<()> {
        let c = &self.model.config;
        if p >= self.max_len {
            return Err(EvalError::Text(format!(
                "the session holds at most {} positions",
                self.max_len
            )));
        }
        if token as usize >= c.vocab_size {
            return Err(EvalError::Text(format!(
                "token id {token} is outside the vocabulary"
            )));
        }
        let (k, model) = (self.kernels, self.model);
        embed_row(&model.embed, k, token as usize, &mut b.x)?;
        let eps = c.rms_norm_eps as f32;
        let heads = Heads {
            heads: c.num_attention_heads,
            kv_heads: c.kv_heads(),
            d: c.head_dim(),
        };
        let kv_dim = heads.kv_heads * heads.d;
        for (i, layer) in model.layers.iter().enumerate() {
            rms_norm_row(&b.x, &layer.attn_norm, eps, &mut b.h);
            gemv(
                k,
                &b.h,
                [
                    (&layer.q, &mut b.q),
                    (&layer.k, &mut b.k),
                    (&layer.v, &mut b.v),
                ],
                &mut b.q8,
                board,
            )?;
            self.rope.apply_at(p, &mut b.q);
            self.rope.apply_at(p, &mut b.k);
            {
                let mut cache = write(&self.caches[i]);
                cache.keys[p * kv_dim..][..kv_dim].copy_from_slice(&b.k);
                cache.values[p * kv_dim..][..kv_dim].copy_from_slice(&b.v);
            }
            match board {
                Some(board) => board.attention(i, p + 1, heads, &b.q, &mut b.att)?,
                None => attend(&b.q, &read(&self.caches[i]), p + 1, heads, 0, &mut b.att),
            }
            gemv(k, &b.att, [(&layer.o, &mut b.delta)], &mut b.q8, board)?;
            add_here(&mut b.x, &b.delta);
            rms_norm_row(&b.x, &layer.mlp_norm, eps, &mut b.h);
            gemv(
                k,
                &b.h,
                [(&layer.gate, &mut b.gate), (&layer.up, &mut b.up)],
                &mut b.q8,
                board,
            )?;
            swiglu_here(&mut b.gate, &b.up);
            gemv(k, &b.gate, [(&layer.down, &mut b.delta)], &mut b.q8, board)?;
            add_here(&mut b.x, &b.delta);
        }
        rms_norm_row(&b.x, &model.norm, eps, &mut b.h);
        gemv(k, &b.h, [(model.output(), &mut b.logits)], &mut b.q8, board)?;
        Ok(())
    }
}

/// Causal attention of one query position (`q`: `heads · d`) over the first `positions`
/// of a layer's cache, for the query heads from `first_head` on that `out` has room for
/// (`d` values each); each query head reads key/value head `head / group`. A head's
/// values do not depend on which heads are computed with it.
fn attend(
    q: &[f32],
    cache: &KvCache,
    positions: usize,
    shape: Heads,
    first_head: usize,
    out: &mut [f32],
) {
    let Heads { heads, kv_heads, d } = shape;
    let (kv_dim, group) = (kv_heads * d, heads / kv_heads);
    let scale = 1.0 / (d as f32).sqrt();
    let mut scores = vec![0f32; positions];
    for (o, h) in out.chunks_exact_mut(d).zip(first_head..) {
        let (qh, g) = (&q[h * d..][..d], h / group);
        for (t, s) in scores.iter_mut().enumerate() {
            *s = dot(qh, &cache.keys[t * kv_dim + g * d..][..d]) * scale;
        }
        let m = scores.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut sum = 0f32;
        for s in &mut scores {
            *s = (*s - m).exp();
            sum += *s;
        }
        o.fill(0.0);
        for (t, s) in scores.iter().enumerate() {
            let w = s / sum;
            for (a, &v) in o.iter_mut().zip(&cache.values[t * kv_dim + g * d..][..d]) {
                *a += w * v;
            }
        }
    }
}

/// A read lock that a panicked writer does not poison (the cache is plain numbers).
fn read(cache: &RwLock<KvCache>) -> std::sync::RwLockReadGuard<'_, KvCache> {
    cache.read().unwrap_or_else(|e| e.into_inner())
}

/// The write lock of [`read`].
fn write(cache: &RwLock<KvCache>) -> std::sync::RwLockWriteGuard<'_, KvCache> {
    cache.write().unwrap_or_else(|e| e.into_inner())
}

/// `Σ a·b` in 8 independent sums (so the compiler vectorises it), then added up.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Row `r` of an embedding matrix as f32 into `out`.
fn embed_row<K: CpuKernels>(embed: &Linear<'_>, k: K, r: usize, out: &mut [f32]) -> Result<()> {
    let cols = out.len();
    match embed {
        Linear::Dense { w, .. } | Linear::Decoded { w, .. } => {
            out.copy_from_slice(&w[r * cols..][..cols]);
        }
        Linear::Packed(p) | Linear::Repacked { packed: p, .. } => k.dequantize_rows(p, r, out)?,
        Linear::Rtn { .. } => {
            return Err(EvalError::Shape(
                "decoding needs dense or adpq-packed weights".into(),
            ))
        }
    }
    Ok(())
}

/// `y_i = W_i x` for matrices that share their input `x` (q, k and v; gate and up): on
/// this thread, or shared with the helpers of `board`.
fn gemv<'m, K: CpuKernels, const M: usize>(
    k: K,
    x: &[f32],
    outs: [(&'m Linear<'m>, &mut [f32]); M],
    q8: &mut [Q8Buffers],
    board: Option<&Board<'m>>,
) -> Result<()> {
    for (w, y) in &outs {
        let (rows, cols) = w.shape();
        if x.len() != cols || y.len() != rows {
            return Err(EvalError::Shape(format!(
                "gemv of a {rows}x{cols} weight with {} inputs into {} outputs",
                x.len(),
                y.len()
            )));
        }
    }
    let mut outs = outs;
    match board {
        Some(board) => board.product(k, x, &mut outs, q8),
        None => {
            let mats: Vec<&Linear<'_>> = outs.iter().map(|(w, _)| *w).collect();
            let mut products = RowProducts::new(k, x, &mats, q8);
            if let [(_, y)] = &mut outs[..] {
                return products.rows(0..y.len(), y);
            }
            // One call for all the matrices, so that they share their int8 activations.
            let mut rows = vec![0f32; outs.iter().map(|(_, y)| y.len()).sum()];
            products.rows(0..rows.len(), &mut rows)?;
            scatter(&mut outs, 0, &rows);
            Ok(())
        }
    }
}

/// Copies `rows` (rows `first..` of the matrices of `outs`, one after the other) into
/// the outputs.
fn scatter(outs: &mut [(&Linear<'_>, &mut [f32])], first: usize, rows: &[f32]) {
    let (mut at, mut done) = (0, 0);
    for (_, y) in outs.iter_mut() {
        let span = at..at + y.len();
        let from = first + done;
        if done < rows.len() && span.contains(&from) {
            let n = (span.end - from).min(rows.len() - done);
            y[from - at..from - at + n].copy_from_slice(&rows[done..done + n]);
            done += n;
        }
        at = span.end;
    }
}

/// Rows of the matrices `mats` one after the other (which share their input `x`), a
/// range at a time: f32 dots for dense weights; for adpq weights the core's fused
/// int8-activation dot on the packed rows (or their repacked copy), `x` quantized once
/// per group size and rotation among the matrices the ranges reach, and kept for the
/// next range.
struct RowProducts<'p, 'm, K> {
    k: K,
    x: &'p [f32],
    mats: &'p [&'p Linear<'m>],
    acts: Vec<Q8Activations<'p>>,
    free: std::slice::IterMut<'p, Q8Buffers>,
}

impl<'p, 'm, K: CpuKernels> RowProducts<'p, 'm, K> {
    fn new(k: K, x: &'p [f32], mats: &'p [&'p Linear<'m>], q8: &'p mut [Q8Buffers]) -> Self {
        RowProducts {
            k,
            x,
            mats,
            acts: Vec::with_capacity(q8.len()),
            free: q8.iter_mut(),
        }
    }

    /// Rows `range` into `out` (`range.len()` values).
    fn rows(&mut self, range: Range<usize>, out: &mut [f32]) -> Result<()> {
        let (k, x) = (self.k, self.x);
        let (mut at, mut done) = (0, 0);
        for w in self.mats {
            let (rows, cols) = w.shape();
            let span = at..at + rows;
            at += rows;
            let (lo, hi) = (range.start.max(span.start), range.end.min(span.end));
            if lo >= hi {
                continue;
            }
            let (first, ys) = (lo - span.start, &mut out[done..done + (hi - lo)]);
            done += hi - lo;
            let (p, repacked) = match (w.packed()?, w) {
                (Some(packed), _) => packed,
                (None, Linear::Dense { w, .. } | Linear::Decoded { w, .. }) => {
                    for (r, yv) in ys.iter_mut().enumerate() {
                        *yv = dot(&w[(first + r) * cols..][..cols], x);
                    }
                    continue;
                }
                (None, _) => {
                    return Err(EvalError::Shape(
                        "decoding needs dense or adpq-packed weights".into(),
                    ))
                }
            };
            let (g, rotation) = (p.params().group_size, p.info().rotation);
            let same = |a: &Q8Activations<'_>| a.group_size() == g && a.rotation() == rotation;
            let slot = match self.acts.iter().position(same) {
                Some(j) => j,
                None => {
                    let b = self.free.next().ok_or_else(|| {
                        EvalError::Shape("more activation quantizations than buffers".into())
                    })?;
                    let groups = cols.div_ceil(usize::from(g));
                    self.acts.push(k.quantize_activations(
                        p,
                        x,
                        &mut b.q[..cols],
                        &mut b.scales[..groups],
                        &mut b.sums[..groups],
                    )?);
                    self.acts.len() - 1
                }
            };
            match repacked {
                // The same bits, read from one stream per block of rows.
                Some(r) => k.gemv_q8_repacked(&r, first, &self.acts[slot], ys)?,
                None => k.gemv_q8_rows(p, first, &self.acts[slot], ys)?,
            }
        }
        Ok(())
    }
}
