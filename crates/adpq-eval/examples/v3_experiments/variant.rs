//! A variant by name: parts joined by `+`, applied to one tensor.
//!
//! | part | meaning |
//! |---|---|
//! | `v1` | packed v1 (`Params::V1`) through the engine; `v1ref`: with the reference (Python-like) selection, 10 iterations |
//! | `v2` | packed v2 through the engine (the core's encoder) |
//! | (neither) | `grid.rs`'s fake v2 driver, which takes the two parts below |
//! | `lm`, `lmg`, `nf4`, `iq4` | 4-bit code book: Lloyd–Max Gaussian, Lloyd on Gaussian groups of 64, NF4, IQ4_NL |
//! | `ogrp`, `olog`, `exN` | outliers: per-group u8 step, log-spaced, the N largest per row kept exactly |
//! | `rotN` | randomized Hadamard, blocks of at most N columns, before; inverse after |
//! | `p` | the v2-vproj6 preset: `v_proj` 6-bit α .05 (α 0 with `a0`) |
//! | `a.04`, `a0` | α of the other tensors (default .04) |
//! | `gN` | group size (default 64) |
//! | `bN` | bits of the other tensors (default 4) |
//! | `dN`, `uN` | bits of `down_proj`, `up_proj` (per-tensor allocation) |
//! | `q6` | 6-bit group step and minimum (super-block-like: row units 4× coarser) |
//! | `nc` | no outlier count byte per group in tensors at α 0 (a v3 layout without outliers) |

use adpq_core::{
    packed_len, AnyKernels, PackedTensor, ParamFields, Params, SelectionMode, Weights,
};
use adpq_engine::{CpuEngine, Engine};
use adpq_eval::Linear;

use crate::codebook::Levels;
use crate::grid::{fake, Out, Spec};
use crate::rotate::Rht;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Encoder {
    V1,
    V1Ref,
    V2,
    Fake,
}

#[derive(Clone, Debug)]
pub struct Variant {
    pub name: String,
    encoder: Encoder,
    rot: Option<usize>,
    levels: Option<Levels>,
    out: Out,
    preset: bool,
    alpha: f64,
    group: u16,
    bits: u8,
    field_bits: u8,
    no_count: bool,
    down_bits: Option<u8>,
    up_bits: Option<u8>,
}

impl Variant {
    pub fn parse(name: &str) -> Variant {
        let mut v = Variant {
            name: name.into(),
            encoder: Encoder::Fake,
            rot: None,
            levels: None,
            out: Out::Row,
            preset: false,
            alpha: 0.04,
            group: 64,
            bits: 4,
            field_bits: 8,
            no_count: false,
            down_bits: None,
            up_bits: None,
        };
        for part in name.split('+') {
            match part {
                "v1" => v.encoder = Encoder::V1,
                "v1ref" => v.encoder = Encoder::V1Ref,
                "v2" => v.encoder = Encoder::V2,
                "fake" => v.encoder = Encoder::Fake,
                "lm" => v.levels = Some(Levels::lloyd_max_gaussian()),
                "lmg" => v.levels = Some(Levels::lloyd_groups(64)),
                "nf4" => v.levels = Some(Levels::nf4()),
                "iq4" => v.levels = Some(Levels::iq4_nl()),
                "ogrp" => v.out = Out::Group,
                "olog" => v.out = Out::Log,
                "p" => v.preset = true,
                "a0" => v.alpha = 0.0,
                "q6" => v.field_bits = 6,
                "nc" => v.no_count = true,
                p if p.starts_with('u') => v.up_bits = Some(p[1..].parse().unwrap()),
                p if p.starts_with('d') => v.down_bits = Some(p[1..].parse().unwrap()),
                p if p.starts_with("ex") => v.out = Out::Exact(p[2..].parse().unwrap()),
                p if p.starts_with("rot") => v.rot = Some(p[3..].parse().unwrap()),
                p if p.starts_with('a') => v.alpha = p[1..].parse().unwrap(),
                p if p.starts_with('g') => v.group = p[1..].parse().unwrap(),
                p if p.starts_with('b') => v.bits = p[1..].parse().unwrap(),
                p => panic!("unknown variant part `{p}` in `{name}`"),
            }
        }
        v
    }

    /// `(bits, α)` of the tensor named `name`.
    fn setting(&self, name: &str) -> (u8, f64) {
        if self.preset && name.contains("v_proj") {
            (6, if self.alpha == 0.0 { 0.0 } else { 0.05 })
        } else if let (Some(b), true) = (self.down_bits, name.contains("down_proj")) {
            (b, self.alpha)
        } else if let (Some(b), true) = (self.up_bits, name.contains("up_proj")) {
            (b, self.alpha)
        } else {
            (self.bits, self.alpha)
        }
    }

    /// What the variant decodes tensor `name` to, and its size in bits.
    pub fn apply(&self, name: &str, w: &[f32], rows: usize, cols: usize) -> (Vec<f32>, f64) {
        let rht = self
            .rot
            .map(|b| Rht::new(cols, b, 0x00ad_b9e3 ^ cols as u64));
        let mut src = w.to_vec();
        if let Some(h) = &rht {
            src.chunks_mut(cols).for_each(|r| h.forward(r));
        }
        let (bits, alpha) = self.setting(name);
        let (mut q, size) = match self.encoder {
            Encoder::Fake => fake(
                &Spec {
                    bits,
                    group: self.group,
                    alpha,
                    levels: self.levels.clone(),
                    out: self.out,
                    field_bits: self.field_bits,
                    no_count: self.no_count && alpha == 0.0,
                },
                &src,
                rows,
                cols,
            ),
            Encoder::V2 => packed(
                &src,
                rows,
                cols,
                &ParamFields {
                    bits,
                    group_size: self.group,
                    alpha,
                    ..Params::V2.fields()
                }
                .validate()
                .unwrap(),
            ),
            Encoder::V1 | Encoder::V1Ref => {
                let mut f = Params::V1.fields();
                if self.encoder == Encoder::V1Ref {
                    f.selection = SelectionMode::Reference { n_iters: 10 };
                }
                packed(&src, rows, cols, &f.validate().unwrap())
            }
        };
        if let Some(h) = &rht {
            q.chunks_mut(cols).for_each(|r| h.inverse(r));
        }
        (q, size + if rht.is_some() { 64.0 } else { 0.0 })
    }
}

/// Quantizes through the engine (the core's encoder, the bytes `adpq quantize` writes)
/// and dequantizes: the decoded values and the buffer's size in bits.
pub fn packed(w: &[f32], rows: usize, cols: usize, p: &Params) -> (Vec<f32>, f64) {
    let engine = CpuEngine::new(AnyKernels::detect());
    let t = engine.load(Weights::F32(w), rows, cols).unwrap();
    let sel = engine.select(&t, p).unwrap();
    let mut buf = vec![0u8; packed_len(rows, cols, p.format(), sel.n_outliers).unwrap()];
    engine.quantize(&t, p, &sel, &mut buf).unwrap();
    let lin = Linear::Packed(PackedTensor::parse(&buf).unwrap());
    let mut out = vec![0f32; w.len()];
    lin.rows_into(&engine, 0, &mut out).unwrap();
    (out, 8.0 * buf.len() as f64)
}
