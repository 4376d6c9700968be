//! Fake quantization of format v2 candidates: each weight replaced by what a packed
//! format with the given records would decode it to, plus the bits/weight that format
//! would cost. For ranking candidates only; the core's packed v2 is the real thing.
//!
//! Experimental, not a copy of the core's encoder: this is phase 1's model of the
//! candidates, written before format v2 existed, and docs/FORMAT-v2.md's phase-1 tables
//! are its figures. Even the variants with v2's record layout (`U8Row` steps,
//! `MagnitudeRow` outliers, asymmetric inliers) differ from `adpq_core::affine`'s
//! encoder: the range is the raw `[min, max]` (not anchored at 0), the search runs in f32
//! before the step and minimum are rounded to u8 (signed 7-bit minimum), the row units
//! are f16 of the largest field without the tensor's `2^e`, rounding is half away from
//! zero, the candidate sets are 81/9/5 ranges (v2: 25), and the threshold ignores ties
//! (`select_tensor` splits them). The real format is `Params::V2` through the engine, as
//! `v1 (packed)` is for v1 in `main.rs`.

/// How the inliers of a group are coded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Inlier {
    /// v1: symmetric, `Δ = max|w| / 7`.
    SymMax,
    /// Asymmetric, clipping range searched for the least squared error.
    AsymSearch,
    /// Asymmetric, each end shrunk by one of 1, .92, .84 (9 candidates).
    AsymSearch9,
    /// Asymmetric, min-max start then two least-squares refits of step and minimum
    /// for the current codes (closed form, as k-quants do), the best of the three kept.
    AsymRefit,
    /// `AsymSearch9`, then the least-squares refit of its winner.
    AsymSearch9Refit,
    /// Asymmetric, one shrink factor for both ends searched among 5 (cheap).
    AsymSearch5,
    /// Symmetric, clipping scale searched.
    SymSearch,
    /// IQ4_NL's non-uniform 16-level code book, one scale searched per group.
    CodeBook,
}

/// How outliers are coded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outlier {
    /// v1: symmetric grid over the group's outliers, f16 step per group.
    SymGroup,
    /// Sign + 3-bit offset on `[t, max]`, the step per group.
    MagnitudeGroup,
    /// Sign + 3-bit offset on `[t, max]`, one step per row.
    MagnitudeRow,
}

/// How steps (and minima) are stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Steps {
    /// f16 per group (v1).
    F16,
    /// u8 per group, linear relative to an f16 per-row maximum (k-quants style).
    U8Row,
}

/// One candidate.
#[derive(Debug, Clone)]
pub struct Variant {
    /// Short name.
    pub name: &'static str,
    /// Group size.
    pub group: usize,
    /// Outlier fraction (0: no outliers).
    pub alpha: f64,
    /// Inlier coding.
    pub inlier: Inlier,
    /// Outlier coding.
    pub outlier: Outlier,
    /// Step storage.
    pub steps: Steps,
    /// Bits per code (asymmetric inliers and magnitude outliers only; others are 4-bit).
    pub bits: u8,
    /// Tensors whose name contains the pattern get these bits and α instead (a
    /// per-tensor bit budget); the first match applies.
    pub wide: &'static [(&'static str, u8, f64)],
    /// Only tensors whose name contains this are quantized (a sensitivity probe).
    pub only: Option<&'static str>,
}

/// IQ4_NL's code book (llama.cpp `kvalues_iq4nl`).
const CODE_BOOK: [f32; 16] = [
    -127., -104., -83., -65., -49., -35., -22., -10., 1., 13., 25., 38., 53., 69., 89., 113.,
];

impl Inlier {
    /// Asymmetric (`w ≈ m + c·d`): a minimum stored beside the step.
    fn is_asym(self) -> bool {
        !matches!(self, Inlier::SymMax | Inlier::SymSearch | Inlier::CodeBook)
    }
}

impl Variant {
    /// A candidate with 4-bit codes everywhere, every tensor quantized.
    pub fn new(
        name: &'static str,
        group: usize,
        alpha: f64,
        inlier: Inlier,
        outlier: Outlier,
        steps: Steps,
    ) -> Variant {
        Variant {
            name,
            group,
            alpha,
            inlier,
            outlier,
            steps,
            bits: 4,
            wide: &[],
            only: None,
        }
    }

    /// The same with per-tensor bits and α (see [`Variant::wide`]).
    pub fn wide(self, wide: &'static [(&'static str, u8, f64)]) -> Variant {
        Variant { wide, ..self }
    }

    /// The same quantizing only the tensors whose name contains `pattern`.
    pub fn only(self, pattern: &'static str) -> Variant {
        Variant {
            only: Some(pattern),
            ..self
        }
    }

    /// The variant applied to tensor `name`, `None` to keep it dense.
    pub fn for_tensor(&self, name: &str) -> Option<Variant> {
        if self.only.is_some_and(|o| !name.contains(o)) {
            return None;
        }
        let mut v = self.clone();
        if let Some(&(_, bits, alpha)) = self.wide.iter().find(|(p, ..)| name.contains(p)) {
            v.bits = bits;
            v.alpha = alpha;
        }
        Some(v)
    }

    /// Bits per weight of a `rows × cols` tensor in the packed format this variant models:
    /// 4-bit codes, the group records, outlier positions and counts, per-row fields and a
    /// 64-byte header.
    pub fn bits(&self, rows: usize, cols: usize) -> f64 {
        let g = self.group;
        let groups = cols.div_ceil(g);
        let has_out = self.alpha > 0.0;
        let step_bits = match self.steps {
            Steps::F16 => 16,
            Steps::U8Row => 8,
        };
        let asym = self.inlier.is_asym();
        let mut rec = step_bits; // inlier step
        if asym {
            rec += 8; // zero point (f16 records, as v1's asymmetric grid) or u8 minimum
        }
        let mut row_bits = 0;
        if self.steps == Steps::U8Row {
            row_bits += 16; // row step scale
            if asym {
                row_bits += 16; // row minimum scale
            }
        }
        let pos_bits = (g as f64).log2().ceil();
        if has_out {
            rec += if g < 256 { 8 } else { 16 }; // count
            match self.outlier {
                Outlier::SymGroup | Outlier::MagnitudeGroup => rec += step_bits,
                Outlier::MagnitudeRow => row_bits += 16,
            }
            if self.steps == Steps::U8Row && self.outlier == Outlier::MagnitudeGroup {
                row_bits += 16;
            }
            row_bits += 32; // row outlier offset
        }
        let n = (rows * cols) as f64;
        let k = (self.alpha * n).round();
        (f64::from(self.bits) * n
            + (rows * groups * rec) as f64
            + k * pos_bits
            + (rows * row_bits) as f64
            + 512.0)
            / n
    }

    /// The fake-quantized copy of a row-major tensor of `cols` columns.
    pub fn apply(&self, w: &[f32], cols: usize) -> Vec<f32> {
        let t = threshold(w, self.alpha);
        let mut out = vec![0f32; w.len()];
        use rayon::prelude::*;
        w.par_chunks(cols)
            .zip(out.par_chunks_mut(cols))
            .for_each(|(wr, or)| self.row(wr, or, t));
        out
    }

    fn levels(&self) -> f32 {
        ((1u32 << self.bits) - 1) as f32
    }

    fn out_levels(&self) -> f32 {
        ((1u32 << (self.bits - 1)) - 1) as f32
    }

    fn row(&self, w: &[f32], out: &mut [f32], t: f32) {
        let is_out = |v: f32| v.abs() > t;
        // Pass 1: per-group parameters in f32.
        let mut groups: Vec<GroupFit> = w
            .chunks(self.group)
            .map(|wg| {
                let inl: Vec<f32> = wg.iter().copied().filter(|&v| !is_out(v)).collect();
                let outl: Vec<f32> = wg.iter().copied().filter(|&v| is_out(v)).collect();
                GroupFit {
                    inl: fit_inliers(self.inlier, &inl, self.levels()),
                    out_step: outlier_step(self.outlier, &outl, t, self.out_levels()),
                }
            })
            .collect();
        // Row-level outlier step.
        if self.outlier == Outlier::MagnitudeRow {
            let m = w
                .iter()
                .filter(|v| is_out(**v))
                .fold(0f32, |a, v| a.max(v.abs()));
            let s = f16r((m - t).max(0.0) / self.out_levels());
            groups.iter_mut().for_each(|g| g.out_step = s);
        }
        // Pass 2: store steps (f16 or u8 relative to the row's largest), then code.
        match self.steps {
            Steps::F16 => groups.iter_mut().for_each(|g| {
                g.inl.d = f16r(g.inl.d);
                g.inl.m = f16r(g.inl.m);
                g.out_step = f16r(g.out_step);
            }),
            Steps::U8Row => {
                let dmax = f16r(groups.iter().fold(0f32, |a, g| a.max(g.inl.d)));
                let mmax = f16r(groups.iter().fold(0f32, |a, g| a.max(g.inl.m.abs())));
                let omax = f16r(groups.iter().fold(0f32, |a, g| a.max(g.out_step)));
                for g in &mut groups {
                    g.inl.d = u8q(g.inl.d, dmax);
                    g.inl.m = u8q_signed(g.inl.m, mmax);
                    if self.outlier != Outlier::MagnitudeRow {
                        g.out_step = u8q(g.out_step, omax);
                    }
                }
            }
        }
        for ((wg, og), gf) in w
            .chunks(self.group)
            .zip(out.chunks_mut(self.group))
            .zip(&groups)
        {
            for (o, &v) in og.iter_mut().zip(wg) {
                *o = if is_out(v) {
                    decode_outlier(self.outlier, v, t, gf.out_step, self.out_levels())
                } else {
                    decode_inlier(self.inlier, v, &gf.inl, self.levels())
                };
            }
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct InlierFit {
    /// Step (code book: scale).
    d: f32,
    /// Minimum (asymmetric): `w ≈ m + c·d`; unused otherwise.
    m: f32,
}

#[derive(Debug)]
struct GroupFit {
    inl: InlierFit,
    out_step: f32,
}

/// The magnitude of the `round(α·N)`-th largest `|w|` (outliers are strictly above it).
fn threshold(w: &[f32], alpha: f64) -> f32 {
    let k = (alpha * w.len() as f64).round() as usize;
    if k == 0 {
        return f32::INFINITY;
    }
    let mut a: Vec<f32> = w.iter().map(|v| v.abs()).collect();
    let idx = a.len() - k - 1;
    let (_, t, _) = a.select_nth_unstable_by(idx, f32::total_cmp);
    *t
}

fn f16r(x: f32) -> f32 {
    adpq_core::f16::from_f32(x).to_f32()
}

fn u8q(x: f32, max: f32) -> f32 {
    if max == 0.0 {
        return 0.0;
    }
    // Never round a non-zero step to 0.
    let q = (x / max * 255.0)
        .round()
        .clamp(if x > 0.0 { 1.0 } else { 0.0 }, 255.0);
    q * max / 255.0
}

fn u8q_signed(x: f32, max: f32) -> f32 {
    if max == 0.0 {
        return 0.0;
    }
    // The minimum is ≤ 0 for every group that holds a zero; store its magnitude in u8
    // with a sign (a positive minimum is rare and costs nothing to allow).
    (x / max * 127.0).round().clamp(-127.0, 127.0) * max / 127.0
}

fn sse_asym(w: &[f32], d: f32, m: f32, lv: f32) -> f32 {
    w.iter()
        .map(|&v| {
            let c = ((v - m) / d).round().clamp(0.0, lv);
            let e = v - (m + c * d);
            e * e
        })
        .sum()
}

/// Up to `iters` least-squares refits of `(d, m)` for the codes of the current fit;
/// returns the fit with the least squared error seen.
fn refit(w: &[f32], start: InlierFit, lv: f32, iters: usize) -> InlierFit {
    let mut best = (sse_asym(w, start.d, start.m, lv), start);
    let mut cur = start;
    for _ in 0..iters {
        let (mut n, mut sc, mut scc, mut sw, mut scw) = (0f64, 0f64, 0f64, 0f64, 0f64);
        for &v in w {
            let c = f64::from(((v - cur.m) / cur.d).round().clamp(0.0, lv));
            let v = f64::from(v);
            n += 1.0;
            sc += c;
            scc += c * c;
            sw += v;
            scw += c * v;
        }
        let den = n * scc - sc * sc;
        if den <= 0.0 {
            break;
        }
        let d = (n * scw - sc * sw) / den;
        if d <= 0.0 {
            break;
        }
        cur = InlierFit {
            d: d as f32,
            m: ((sw - d * sc) / n) as f32,
        };
        let e = sse_asym(w, cur.d, cur.m, lv);
        if e < best.0 {
            best = (e, cur);
        }
    }
    best.1
}

fn code_book_index(x: f32) -> usize {
    // Midpoints between neighbours: the nearest entry is the count of midpoints below x.
    let mut i = 0;
    let mut step = 8;
    while step > 0 {
        let j = i + step;
        if j < 16 && x > 0.5 * (CODE_BOOK[j - 1] + CODE_BOOK[j]) {
            i = j;
        }
        step /= 2;
    }
    i
}

fn fit_inliers(kind: Inlier, w: &[f32], lv: f32) -> InlierFit {
    if w.is_empty() {
        return InlierFit::default();
    }
    let amax = w.iter().fold(0f32, |a, v| a.max(v.abs()));
    // The raw range (not anchored at zero as the core's v2 encoder anchors it).
    let (lo, hi) = w
        .iter()
        .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    match kind {
        Inlier::SymMax => InlierFit {
            d: amax / 7.0,
            m: 0.0,
        },
        Inlier::SymSearch => {
            let mut best = (f32::INFINITY, amax / 7.0);
            for i in 0..=16 {
                let d = amax * (1.0 - 0.025 * i as f32) / 7.0;
                if d == 0.0 {
                    break;
                }
                let e: f32 = w
                    .iter()
                    .map(|&v| v - (v / d).round().clamp(-8.0, 7.0) * d)
                    .map(|e| e * e)
                    .sum();
                if e < best.0 {
                    best = (e, d);
                }
            }
            InlierFit { d: best.1, m: 0.0 }
        }
        Inlier::AsymRefit => {
            if hi <= lo {
                return InlierFit { d: 0.0, m: lo };
            }
            let start = InlierFit {
                d: (hi - lo) / lv,
                m: lo,
            };
            refit(w, start, lv, 2)
        }
        Inlier::AsymSearch9Refit => {
            let best = fit_inliers(Inlier::AsymSearch9, w, lv);
            if best.d == 0.0 {
                return best;
            }
            refit(w, best, lv, 1)
        }
        Inlier::AsymSearch | Inlier::AsymSearch9 => {
            let (n, step) = if kind == Inlier::AsymSearch {
                (8, 0.03)
            } else {
                (2, 0.08)
            };
            let mut best = (
                f32::INFINITY,
                InlierFit {
                    d: (hi - lo) / lv,
                    m: lo,
                },
            );
            if hi <= lo {
                return InlierFit { d: 0.0, m: lo };
            }
            for i in 0..=n {
                for j in 0..=n {
                    let l = lo * (1.0 - step * i as f32);
                    let h = hi * (1.0 - step * j as f32);
                    if h <= l {
                        continue;
                    }
                    let d = (h - l) / lv;
                    let e = sse_asym(w, d, l, lv);
                    if e < best.0 {
                        best = (e, InlierFit { d, m: l });
                    }
                }
            }
            best.1
        }
        Inlier::AsymSearch5 => {
            if hi <= lo {
                return InlierFit { d: 0.0, m: lo };
            }
            let mut best = (f32::INFINITY, InlierFit::default());
            for i in 0..5 {
                let s = 1.0 - 0.05 * i as f32;
                let (l, h) = (lo * s, hi * s);
                let d = (h - l) / lv;
                let e = sse_asym(w, d, l, lv);
                if e < best.0 {
                    best = (e, InlierFit { d, m: l });
                }
            }
            best.1
        }
        Inlier::CodeBook => {
            let mut best = (f32::INFINITY, 0f32);
            if amax == 0.0 {
                return InlierFit::default();
            }
            for sign in [1.0f32] {
                for i in 0..=8 {
                    let d = sign * amax / (127.0 - 5.0 * i as f32);
                    let e: f32 = w
                        .iter()
                        .map(|&v| v - CODE_BOOK[code_book_index(v / d)] * d)
                        .map(|e| e * e)
                        .sum();
                    if e < best.0 {
                        best = (e, d);
                    }
                }
            }
            InlierFit { d: best.1, m: 0.0 }
        }
    }
}

fn decode_inlier(kind: Inlier, v: f32, f: &InlierFit, lv: f32) -> f32 {
    if f.d == 0.0 {
        return if kind.is_asym() { f.m } else { 0.0 };
    }
    match kind {
        Inlier::SymMax | Inlier::SymSearch => (v / f.d).round().clamp(-8.0, 7.0) * f.d,
        Inlier::AsymSearch
        | Inlier::AsymSearch5
        | Inlier::AsymSearch9
        | Inlier::AsymRefit
        | Inlier::AsymSearch9Refit => f.m + ((v - f.m) / f.d).round().clamp(0.0, lv) * f.d,
        Inlier::CodeBook => CODE_BOOK[code_book_index(v / f.d)] * f.d,
    }
}

fn outlier_step(kind: Outlier, w: &[f32], t: f32, ol: f32) -> f32 {
    let m = w.iter().fold(0f32, |a, v| a.max(v.abs()));
    match kind {
        Outlier::SymGroup => m / 7.0,
        Outlier::MagnitudeGroup | Outlier::MagnitudeRow => (m - t).max(0.0) / ol,
    }
}

fn decode_outlier(kind: Outlier, v: f32, t: f32, step: f32, ol: f32) -> f32 {
    match kind {
        Outlier::SymGroup => {
            if step == 0.0 {
                0.0
            } else {
                (v / step).round().clamp(-7.0, 7.0) * step
            }
        }
        Outlier::MagnitudeGroup | Outlier::MagnitudeRow => {
            let off = if step == 0.0 {
                0.0
            } else {
                ((v.abs() - t) / step).round().clamp(0.0, ol) * step
            };
            (t + off).copysign(v)
        }
    }
}
