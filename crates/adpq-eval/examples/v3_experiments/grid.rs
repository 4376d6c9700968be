//! The v2 row encoder as fake quantization, built from the core's public pieces
//! (`select_tensor`, `OutlierRule`, `scale_exponent`, `RowUnits::for_row`,
//! `search_group`), with two points of variation: the inlier code book (`codebook.rs`,
//! through the core's `GroupPasses`) and the outlier grid (idea 3). With the uniform
//! book and [`Out::Row`] it is v2 (checked against the packed v2 by the `fake` variant).

use adpq_core::affine::{search_group, AffineGrid, GroupPasses, LaneSums, RefitSums, RowUnits};
use adpq_core::f16;
use adpq_core::quant::scale_exponent;
use adpq_core::select::OutlierRule;
use adpq_core::{packed_len, select_tensor, AnyKernels, ParamFields, Params, Weights};

use crate::codebook::Levels;

/// How the outliers of a row are coded (idea 3).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Out {
    /// v2: sign + `k` on `[t, row max]`, one f16 step per row.
    Row,
    /// The step per group: a u8 multiple of a per-row unit (+8 bits per group).
    Group,
    /// Log-spaced: `|ŵ| = t · r^k`, one ratio `r = (row max / t)^(1/K)` per row (f16).
    Log,
    /// The `n` largest `|w|` of each row kept as f16 with a 16-bit position (+32 bits
    /// each); the other outliers as [`Out::Row`] on `[t, max of the rest]`.
    Exact(usize),
}

/// One fake-quantization setting for a tensor.
#[derive(Clone, Debug)]
pub struct Spec {
    pub bits: u8,
    pub group: u16,
    pub alpha: f64,
    /// The 4-bit code book (`None`: uniform, v2).
    pub levels: Option<Levels>,
    pub out: Out,
    /// Bits of a group's step and minimum fields: 8 (v2) or 6 (k-quant-like sub-scales:
    /// the row units are 255/63 times coarser, the fields clamped to 0..=63).
    pub field_bits: u8,
    /// No per-group outlier count byte (a layout for α = 0).
    pub no_count: bool,
}

struct Passes<'a> {
    vals: &'a [f32],
    skip: &'a [bool],
    levels: Option<&'a Levels>,
    code_max: f32,
}

impl Passes<'_> {
    /// The level value (in steps) of `x` on `grid`.
    #[inline]
    fn level(&self, grid: &AffineGrid, x: f32) -> f32 {
        match self.levels {
            None => grid.encode(x, self.code_max),
            Some(l) => l.0[l.nearest((x - grid.min) * grid.inv)],
        }
    }
}

impl GroupPasses for Passes<'_> {
    fn error(&mut self, grid: &AffineGrid) -> f32 {
        let mut s = LaneSums::default();
        for (i, (&x, &o)) in self.vals.iter().zip(self.skip).enumerate() {
            if !o {
                let e = (self.level(grid, x) * grid.step + grid.min) - x;
                s.add(i, e * e);
            }
        }
        s.total()
    }

    fn refit_sums(&mut self, grid: &AffineGrid) -> RefitSums {
        let mut s = RefitSums::default();
        for (i, (&x, &o)) in self.vals.iter().zip(self.skip).enumerate() {
            if !o {
                let c = self.level(grid, x);
                s.n += 1;
                s.c.add(i, c);
                s.cc.add(i, c * c);
                s.w.add(i, x);
                s.cw.add(i, c * x);
            }
        }
        s
    }
}

fn f16_up(x: f32) -> f32 {
    let mut h = f16::from_f32(x);
    if h.to_f32() < x {
        h = f16::from_bits(h.to_bits() + 1);
    }
    h.to_f32()
}

/// The `n` largest `|w|` of a row, by index.
fn largest(row: &[f32], n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].abs().total_cmp(&row[a].abs()));
    idx.truncate(n);
    idx
}

/// Fake-quantizes a `rows × cols` tensor: the values the format would decode, and its
/// size in bits (everything counted).
pub fn fake(spec: &Spec, w: &[f32], rows: usize, cols: usize) -> (Vec<f32>, f64) {
    let params = ParamFields {
        bits: spec.bits,
        group_size: spec.group,
        alpha: spec.alpha,
        ..Params::V2.fields()
    }
    .validate()
    .unwrap();
    let fp = params.format();
    let levels = if spec.bits == 4 {
        spec.levels.as_ref()
    } else {
        None
    };
    let sel = select_tensor(&AnyKernels::detect(), Weights::F32(w), rows, cols, &params).unwrap();
    let mut rule = OutlierRule {
        threshold_bits: sel.threshold_bits,
        equal_budget: sel.take_equal,
    };
    let mut is_out: Vec<bool> = w.iter().map(|x| rule.take(x.abs().to_bits())).collect();
    let t = sel.threshold();
    let scale_exp = scale_exponent(sel.max_abs(), &fp);
    let g = usize::from(spec.group);
    let mag_max = fp.magnitude_max() as f32;
    let mut q = vec![0f32; w.len()];
    let mut exact = vec![false; w.len()];
    let mut extra_bits = 0.0;
    for r in 0..rows {
        let row = &w[r * cols..(r + 1) * cols];
        let base = r * cols;
        if let Out::Exact(n) = spec.out {
            for i in largest(row, n) {
                exact[base + i] = true;
                is_out[base + i] = false;
                q[base + i] = f16::from_f32(row[i]).to_f32();
            }
            extra_bits += 32.0 * n as f64;
        }
        // Inliers: everything neither an outlier nor kept exactly.
        let skip: Vec<bool> = (0..cols)
            .map(|i| is_out[base + i] || exact[base + i])
            .collect();
        let (mut span_max, mut neg_max, mut out_max) = (0f32, 0f32, 0f32);
        let mut group_out_max = Vec::new();
        for (gi, chunk) in row.chunks(g).enumerate() {
            let (mut lo, mut hi, mut om) = (0f32, 0f32, 0f32);
            for (i, &x) in chunk.iter().enumerate() {
                if is_out[base + gi * g + i] {
                    om = om.max(x.abs());
                } else if !skip[gi * g + i] {
                    (lo, hi) = (lo.min(x), hi.max(x));
                }
            }
            span_max = span_max.max(hi - lo);
            neg_max = neg_max.max(-lo);
            out_max = out_max.max(om);
            group_out_max.push(om);
        }
        // 6-bit fields: the same units computed for a range 255/63 times wider.
        let widen = if spec.field_bits == 6 {
            255.0 / 63.0
        } else {
            1.0
        };
        let units = RowUnits::for_row(
            span_max * widen,
            neg_max * widen,
            out_max,
            t,
            &fp,
            scale_exp,
        );
        let groups = row.chunks(g).count() as f64;
        extra_bits -= groups * 2.0 * f64::from(8 - spec.field_bits);
        if spec.no_count {
            extra_bits -= groups * 8.0;
        }
        let out_unit = f16_up(((out_max - t) / mag_max / 255.0).max(0.0));
        let log_ratio = if out_max > t {
            f16::from_f32((out_max / t).powf(1.0 / mag_max)).to_f32()
        } else {
            1.0
        };
        if spec.out == Out::Group {
            extra_bits += 8.0 * row.chunks(g).count() as f64;
        }
        for (gi, chunk) in row.chunks(g).enumerate() {
            let sk = &skip[gi * g..gi * g + chunk.len()];
            let (mut lo, mut hi) = (0f32, 0f32);
            for (&x, &s) in chunk.iter().zip(sk) {
                if !s {
                    (lo, hi) = (lo.min(x), hi.max(x));
                }
            }
            let mut passes = Passes {
                vals: chunk,
                skip: sk,
                levels,
                code_max: fp.code_max() as f32,
            };
            let mut grid = search_group(&mut passes, lo, hi, &units, &fp);
            let field_max = (1u16 << spec.field_bits) - 1;
            if u16::from(grid.q_step.max(grid.q_min)) > field_max {
                let f = field_max as u8;
                grid = AffineGrid::new(grid.q_step.min(f), grid.q_min.min(f), &units);
            }
            let group_step = if out_unit > 0.0 {
                let q = ((group_out_max[gi] - t) / mag_max / out_unit)
                    .ceil()
                    .clamp(1.0, 255.0);
                q * out_unit
            } else {
                0.0
            };
            for (i, &x) in chunk.iter().enumerate() {
                let at = base + gi * g + i;
                if exact[at] {
                    continue;
                }
                q[at] = if !is_out[at] {
                    passes.level(&grid, x) * grid.step + grid.min
                } else {
                    let m = match spec.out {
                        Out::Row | Out::Exact(_) => {
                            units.outlier(units.encode_outlier(x, &fp), fp.bits).abs()
                        }
                        Out::Group => {
                            let k = if group_step > 0.0 {
                                ((x.abs() - t) / group_step).round().clamp(0.0, mag_max)
                            } else {
                                0.0
                            };
                            t + k * group_step
                        }
                        Out::Log => {
                            let k = if log_ratio > 1.0 {
                                ((x.abs() / t).ln() / log_ratio.ln())
                                    .round()
                                    .clamp(0.0, mag_max)
                            } else {
                                0.0
                            };
                            t * log_ratio.powf(k)
                        }
                    };
                    if x < 0.0 {
                        -m
                    } else {
                        m
                    }
                };
            }
        }
    }
    let n_out = is_out.iter().filter(|&&o| o).count() as u64;
    let bytes = packed_len(rows, cols, fp, n_out).unwrap();
    (q, 8.0 * bytes as f64 + extra_bits)
}
