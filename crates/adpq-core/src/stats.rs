//! The arithmetic of the error statistics every report shows: per group, the signal
//! `Σ w²`, AdpQ's error `Σ (w − ŵ)²` and the error of the round-to-nearest (RTN)
//! baseline at the same bits and group size, `Σ (w − rtn(w))²`.
//!
//! RTN here is per-group absmax scaling: `Δ = max|w| / (2^(b−1) − 1)`,
//! `code = round_ties_even(w / Δ)` clamped to `±(2^(b−1) − 1)`, `rtn(w) = code · Δ`, with
//! Δ and the reconstruction in f32 (as a real RTN kernel would). Differences and squares
//! are taken and summed in f64, over 8 independent lanes within a group (element `i` in
//! lane `i % 8`, the lanes then added in order, then the group's tail), so weights near
//! the f32 limit give finite sums; each group's three sums are then added to the running
//! totals in group order. The order depends on the shape only, so the result is
//! deterministic, and plain f64 operations (never fused) make it the same bit for bit
//! whether the compiler runs the lanes in vector registers or not: a SIMD kernel set runs
//! this same code inside its `#[target_feature]` function
//! ([`CpuKernels::add_error_sums`](crate::CpuKernels::add_error_sums)).

use crate::weights::Weights;

/// Lanes of a group's sums.
const LANES: usize = 8;

/// Weights converted to f32 at a time (F16/BF16 input): whole groups of at most this
/// many elements, or one group when a group is longer.
const CONVERT: usize = 1024;

/// Adds to `sums` (`[Σ w², Σ (w − ŵ)², Σ (w − rtn(w))²]`, see the module docs) the sums
/// of consecutive whole groups of one row from a group boundary: `w` the original
/// weights, `deq` their dequantized values, of the same length (the last group may be a
/// row's short one).
#[inline(always)]
pub fn add_error_sums(
    sums: &mut [f64; 3],
    w: Weights<'_>,
    deq: &[f32],
    bits: u8,
    group_size: usize,
) {
    let qmax = ((1i32 << (bits - 1)) - 1) as f32;
    let g = group_size.max(1);
    match w {
        Weights::F32(v) => add_f32(sums, v, deq, qmax, g),
        _ => {
            let mut buf = [0f32; CONVERT];
            let block = if g <= CONVERT { CONVERT / g * g } else { g };
            let mut at = 0;
            while at < w.len() {
                let end = (at + block).min(w.len());
                let Some(piece) = w.get(at, end) else {
                    return;
                };
                if block <= CONVERT {
                    let b = &mut buf[..end - at];
                    convert(piece, b);
                    add_f32(sums, b, &deq[at..end], qmax, g);
                } else {
                    // A group longer than the buffer: one element at a time.
                    let mut one = [0f32; 1];
                    let mut acc = GroupAcc::new(qmax, piece.len(), |i| {
                        convert(piece.get(i, i + 1).expect("in range"), &mut one);
                        one[0]
                    });
                    for (i, &d) in deq[at..end].iter().enumerate() {
                        convert(piece.get(i, i + 1).expect("in range"), &mut one);
                        acc.add(i, one[0], d);
                    }
                    acc.finish(piece.len(), sums);
                }
                at = end;
            }
        }
    }
}

/// F16/BF16 weights to f32 (`out.len() == w.len()`).
#[inline(always)]
fn convert(w: Weights<'_>, out: &mut [f32]) {
    w.to_f32_slice(out);
}

/// The groups of f32 weights `w` (dequantized `deq`) added to `sums`.
#[inline(always)]
fn add_f32(sums: &mut [f64; 3], w: &[f32], deq: &[f32], qmax: f32, g: usize) {
    for (wg, dg) in w.chunks(g).zip(deq.chunks(g)) {
        let g3 = group_sums(wg, dg, qmax);
        sums[0] += g3[0];
        sums[1] += g3[1];
        sums[2] += g3[2];
    }
}

/// `[Σw², Σ(w − ŵ)², Σ(w − rtn(w))²]` of one group.
#[inline(always)]
fn group_sums(wg: &[f32], dg: &[f32], qmax: f32) -> [f64; 3] {
    let n = wg.len() / LANES * LANES;
    let mut m = [0f32; LANES];
    for c in wg[..n].chunks_exact(LANES) {
        for l in 0..LANES {
            m[l] = larger(m[l], c[l].abs());
        }
    }
    let max = wg[n..]
        .iter()
        .fold(m.iter().fold(0f32, |a, &b| larger(a, b)), |a, v| {
            larger(a, v.abs())
        });
    let rtn = Rtn::new(max, qmax);
    let (mut s0, mut s1, mut s2) = ([0f64; LANES], [0f64; LANES], [0f64; LANES]);
    for (wc, dc) in wg[..n].chunks_exact(LANES).zip(dg[..n].chunks_exact(LANES)) {
        let wc: &[f32; LANES] = wc.try_into().expect("8 lanes");
        let dc: &[f32; LANES] = dc.try_into().expect("8 lanes");
        let q = wc.map(|v| rtn.value(v));
        for l in 0..LANES {
            let (v, d, q) = (f64::from(wc[l]), f64::from(dc[l]), f64::from(q[l]));
            s0[l] += v * v;
            s1[l] += (v - d) * (v - d);
            s2[l] += (v - q) * (v - q);
        }
    }
    let acc = [s0, s1, s2];
    let mut out = [0f64; 3];
    for (o, a) in out.iter_mut().zip(&acc) {
        *o = a.iter().sum();
    }
    for (&v, &d) in wg[n..].iter().zip(&dg[n..]) {
        let e = rtn.terms(v, d);
        for k in 0..3 {
            out[k] += e[k];
        }
    }
    out
}

/// `m.max(v)` for an `m` that is never NaN (a running maximum from 0), as one compare:
/// a NaN `v` leaves `m`, as `f32::max` does, without the NaN test that keeps `max` from
/// vectorizing to one instruction.
#[inline(always)]
fn larger(m: f32, v: f32) -> f32 {
    if v > m {
        v
    } else {
        m
    }
}

/// One group's RTN grid.
#[derive(Clone, Copy)]
struct Rtn {
    step: f32,
    inv: f32,
    qmax: f32,
}

impl Rtn {
    #[inline(always)]
    fn new(max: f32, qmax: f32) -> Rtn {
        let (step, inv) = if max > 0.0 {
            (max / qmax, qmax / max)
        } else {
            (0.0, 0.0)
        };
        Rtn { step, inv, qmax }
    }

    /// `rtn(v)`: rounded half to even for `|x| ≤ 2^22` (`x` is clamped to `±qmax`
    /// first), as numpy does.
    #[inline(always)]
    fn value(&self, v: f32) -> f32 {
        const MAGIC: f32 = 12_582_912.0;
        // `f32::clamp(x, -qmax, qmax)` spelled out (the same comparisons), which
        // vectorizes.
        let x = v * self.inv;
        let x = if x < -self.qmax { -self.qmax } else { x };
        let x = if x > self.qmax { self.qmax } else { x };
        ((x + MAGIC) - MAGIC) * self.step
    }

    /// The three terms of weight `v` dequantized to `d`.
    #[inline(always)]
    fn terms(&self, v: f32, d: f32) -> [f64; 3] {
        let q = self.value(v);
        let (v, d, q) = (f64::from(v), f64::from(d), f64::from(q));
        [v * v, (v - d) * (v - d), (v - q) * (v - q)]
    }
}

/// One group fed a weight at a time (a group longer than the conversion buffer): the
/// same sums as [`group_sums`].
struct GroupAcc {
    rtn: Rtn,
    full: usize,
    acc: [[f64; LANES]; 3],
    /// The terms of the weights past the last whole 8, in order.
    tail: [[f64; 3]; LANES],
}

impl GroupAcc {
    /// The group of `len` weights whose `i`-th is `at(i)` (read once for its maximum).
    fn new(qmax: f32, len: usize, mut at: impl FnMut(usize) -> f32) -> GroupAcc {
        let full = len / LANES * LANES;
        let mut m = [0f32; LANES];
        for i in 0..full {
            m[i % LANES] = larger(m[i % LANES], at(i).abs());
        }
        let max = (full..len).fold(m.iter().fold(0f32, |a, &b| larger(a, b)), |a, i| {
            larger(a, at(i).abs())
        });
        GroupAcc {
            rtn: Rtn::new(max, qmax),
            full,
            acc: [[0f64; LANES]; 3],
            tail: [[0f64; 3]; LANES],
        }
    }

    /// Adds weight `i`, `v`, dequantized to `d`.
    fn add(&mut self, i: usize, v: f32, d: f32) {
        let e = self.rtn.terms(v, d);
        if i < self.full {
            for (acc, e) in self.acc.iter_mut().zip(e) {
                acc[i % LANES] += e;
            }
        } else {
            self.tail[i - self.full] = e;
        }
    }

    /// Adds the group's sums to `sums` (the group of `len` weights).
    fn finish(&self, len: usize, sums: &mut [f64; 3]) {
        for k in 0..3 {
            let mut o: f64 = self.acc[k].iter().sum();
            // The tail one term at a time after the lanes, as `group_sums` adds it.
            for t in &self.tail[..len - self.full] {
                o += t[k];
            }
            sums[k] += o;
        }
    }
}
