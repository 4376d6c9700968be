//! Writes the seed corpora of the fuzz targets under `fuzz/seeds/` (or DIR):
//! - `parse_packed`: a few small, valid packed buffers covering both grids, 2/4/8 bits,
//!   1- and 2-byte outlier counts, short last groups, reference-mode headers, no outliers
//!   and an all-zero tensor. Random bytes almost never get past the magic, the length and
//!   the CRC; these let the fuzzer start from the inside.
//! - `decode_finite`: the same buffers, plus ones at the edges of the range (weights near
//!   2^124, ±65504 from f16, the smallest accepted magnitude 2^-100), whose grids sit near
//!   the reader's 2^126 bound.
//! - `selection`: inputs in the target's byte format (type, shape, α, values): ties,
//!   specials, subnormals, f16 extremes, rejected values, and two that replicate to
//!   1024 × 1024 weights (the sampled path).
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds [DIR]`. The output is
//! deterministic.

use adpq_core::{f16, packed_len, Grid, ParamFields, Params, Scalar, SelectionMode, Weights};

fn main() {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/seeds").to_string());
    let packed = packed_seeds();
    for (target, extra) in [
        ("parse_packed", Vec::new()),
        ("decode_finite", edge_seeds()),
    ] {
        let dir = format!("{root}/{target}");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, buf) in packed.iter().chain(&extra) {
            adpq_core::PackedTensor::parse(buf).unwrap();
            let path = format!("{dir}/{name}.adpq");
            std::fs::write(&path, buf).unwrap();
            println!("{path}: {} bytes", buf.len());
        }
    }
    let dir = format!("{root}/selection");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in selection_seeds() {
        let path = format!("{dir}/{name}.bin");
        std::fs::write(&path, &bytes).unwrap();
        println!("{path}: {} bytes", bytes.len());
    }
}

/// Quantizes `w` with the scalar kernels.
fn pack(w: Weights<'_>, rows: usize, cols: usize, params: &Params) -> Vec<u8> {
    let sel = adpq_core::select_tensor(&Scalar, w, rows, cols, params).unwrap();
    let mut buf = vec![0u8; packed_len(rows, cols, params.format(), sel.n_outliers).unwrap()];
    adpq_core::quantize_tensor(&Scalar, w, rows, cols, params, &sel, &mut buf).unwrap();
    buf
}

/// Deterministic, roughly bell-shaped, with a few large values.
fn bell(i: usize) -> f32 {
    let x = ((i as u64 * 2_654_435_761) % 10_007) as f32 / 10_007.0 - 0.5;
    let spike = if i % 17 == 5 { 8.0 } else { 1.0 };
    x * x * x * 4.0 * spike + x * 0.1
}

/// Buffers at the edges of the numeric range.
fn edge_seeds() -> Vec<(String, Vec<u8>)> {
    let top = f32::from_bits((251 << 23) - 1); // the largest accepted |w|
    let tiny = f32::from_bits(27 << 23); // 2^-100
    let mut out = Vec::new();
    for (name, bits, grid, scale) in [
        ("top_asym8_g32_2x70", 8, Grid::Asymmetric, top),
        ("top_sym2_g16_2x40", 2, Grid::Symmetric, top),
        ("top_sym8_g64_1x64", 8, Grid::Symmetric, top),
        ("tiny_sym4_g16_2x40", 4, Grid::Symmetric, tiny * 4.0),
    ] {
        let (rows, cols) = if bits == 8 && grid == Grid::Asymmetric {
            (2, 70)
        } else if bits == 8 {
            (1, 64)
        } else {
            (2, 40)
        };
        let g = if cols == 70 {
            32
        } else if cols == 64 {
            64
        } else {
            16
        };
        let params = Params::new(bits, g, 0.1, grid).unwrap();
        let mut w: Vec<f32> = (0..rows * cols).map(|i| bell(i) / 4.0 * scale).collect();
        w[1] = scale;
        w[2] = -scale;
        out.push((
            name.to_string(),
            pack(Weights::F32(&w), rows, cols, &params),
        ));
    }
    for (name, bits, scale) in [
        ("v2_top_8_g32_2x70", 8, top),
        ("v2_top_2_g16_2x40", 2, top),
        ("v2_tiny_4_g16_2x40", 4, tiny * 4.0),
    ] {
        let cols = if bits == 8 { 70 } else { 40 };
        let params = ParamFields {
            bits,
            group_size: if bits == 8 { 32 } else { 16 },
            alpha: 0.1,
            ..Params::V2.fields()
        }
        .validate()
        .unwrap();
        let mut w: Vec<f32> = (0..2 * cols).map(|i| bell(i) / 4.0 * scale).collect();
        w[1] = scale;
        w[2] = -scale;
        out.push((name.to_string(), pack(Weights::F32(&w), 2, cols, &params)));
    }
    // Version 3 at the largest weights its rotation accepts (2^116) and near 2^-100.
    for (name, bits, scale) in [
        ("v3_top_8_g32_2x70", 8, f32::from_bits((127 + 116) << 23)),
        ("v3_top_4_g16_2x40", 4, f32::from_bits((127 + 116) << 23)),
        ("v3_tiny_4_g16_2x40", 4, tiny * 4.0),
    ] {
        let cols = if bits == 8 { 70 } else { 40 };
        let params = ParamFields {
            bits,
            group_size: if bits == 8 { 32 } else { 16 },
            ..Params::V3.fields()
        }
        .validate()
        .unwrap();
        let mut w: Vec<f32> = (0..2 * cols).map(|i| bell(i) / 4.0 * scale).collect();
        w[1] = scale;
        w[2] = -scale;
        out.push((name.to_string(), pack(Weights::F32(&w), 2, cols, &params)));
    }
    let w: Vec<f16> = (0..2 * 128)
        .map(|i| match i % 5 {
            0 => f16::MAX,
            1 => f16::MIN,
            _ => f16::from_f32(bell(i) * 1000.0),
        })
        .collect();
    let params = Params::V1;
    out.push((
        "f16max_sym4_g128_2x128".to_string(),
        pack(Weights::F16(&w), 2, 128, &params),
    ));
    out
}

/// Inputs of the `selection` target: `[type, big, rows, cols, alpha]`, then tagged values
/// (see `fuzz_targets/selection.rs`).
fn selection_seeds() -> Vec<(&'static str, Vec<u8>)> {
    // Tags: 0 small integer over a power of two, 4 a signed zero, 5 a special, 6 a repeat.
    let small = |m: i8, e: u8| vec![0, m as u8, e];
    let special = |i: u8| vec![5, i];
    let repeat = |neg: bool| vec![6, u8::from(neg)];
    let zero = |neg: bool| vec![4, u8::from(neg)];
    let ties: Vec<u8> = (0..40)
        .flat_map(|i: i32| {
            if i % 3 == 2 {
                repeat(i % 2 == 0)
            } else {
                small((i % 7 - 3) as i8, (i % 3) as u8)
            }
        })
        .collect();
    // ±(i + 1) · 2^-7: 500 distinct magnitudes, so the sampled path's bracket holds few.
    let distinct: Vec<u8> = (0..500i16)
        .flat_map(|i| {
            let m = if i % 2 == 0 { i + 1 } else { -(i + 1) };
            let [a, b] = m.to_le_bytes();
            [2, a, b, (-7i8) as u8]
        })
        .collect();
    let specials: Vec<u8> = (0..16u8).flat_map(special).collect();
    let zeros: Vec<u8> = (0..12)
        .flat_map(|i| {
            if i % 4 == 0 {
                small(1, 3)
            } else {
                zero(i % 2 == 0)
            }
        })
        .collect();
    let edges: Vec<u8> = [9u8, 10, 10, 9].into_iter().flat_map(special).collect();
    let subnormal: Vec<u8> = [6u8, 6, 5, 4].into_iter().flat_map(special).collect();
    let with = |head: [u8; 5], body: &[u8]| {
        let mut bytes = [&head[..], body].concat();
        if head[1] == 0xFF {
            // A last ±0 value whose sign byte salts the hash past the target's gate.
            bytes.extend([4, 0]);
            let last = bytes.len() - 1;
            while fnv1a(&bytes) % 8 != 0 {
                bytes[last] = bytes[last].wrapping_add(1);
            }
        }
        bytes
    };
    vec![
        ("f32_ties_3x20", with([0, 0, 2, 19, 2], &ties)),
        ("f16_ties_8x64_half", with([1, 0, 7, 63, 1], &ties)),
        ("bf16_ties_1x5", with([2, 0, 0, 4, 100], &ties)),
        ("f32_specials_4x16", with([0, 0, 3, 15, 30], &specials)),
        ("f16_specials_2x16", with([1, 0, 1, 15, 2], &specials)),
        ("bf16_specials_2x16", with([2, 0, 1, 15, 2], &specials)),
        ("f32_zeros_2x12", with([0, 0, 1, 11, 60], &zeros)),
        ("f32_edges_2x2", with([0, 0, 1, 1, 1], &edges)),
        ("bf16_subnormal_1x4", with([2, 0, 0, 3, 2], &subnormal)),
        ("f32_big_ties", with([0, 0xFF, 0, 0, 2], &ties)),
        ("f32_big_distinct", with([0, 0xFF, 0, 0, 2], &distinct)),
        ("f16_big_ties_half", with([1, 0xFF, 0, 7, 1], &ties)),
    ]
}

/// The `selection` target's gate hash (FNV-1a, 32 bits).
fn fnv1a(data: &[u8]) -> u32 {
    data.iter().fold(0x811C_9DC5, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Small valid packed buffers (the `parse_packed` seeds).
fn packed_seeds() -> Vec<(String, Vec<u8>)> {
    // (name, rows, cols, bits, group, alpha, grid, reference mode, all zero)
    let cases: &[(&str, usize, usize, u8, u16, f64, Grid, bool, bool)] = &[
        (
            "sym4_g128_3x200",
            3,
            200,
            4,
            128,
            0.06,
            Grid::Symmetric,
            false,
            false,
        ),
        (
            "asym4_g64_2x100",
            2,
            100,
            4,
            64,
            0.06,
            Grid::Asymmetric,
            false,
            false,
        ),
        (
            "sym2_g16_4x40",
            4,
            40,
            2,
            16,
            0.25,
            Grid::Symmetric,
            false,
            false,
        ),
        (
            "asym8_g32_2x70",
            2,
            70,
            8,
            32,
            0.1,
            Grid::Asymmetric,
            false,
            false,
        ),
        (
            "sym3_g256_1x300",
            1,
            300,
            3,
            256,
            0.06,
            Grid::Symmetric,
            false,
            false,
        ),
        (
            "asym4_g1024_1x1030",
            1,
            1030,
            4,
            1024,
            0.02,
            Grid::Asymmetric,
            false,
            false,
        ),
        (
            "sym4_g128_ref_2x256",
            2,
            256,
            4,
            128,
            0.06,
            Grid::Symmetric,
            true,
            false,
        ),
        (
            "sym4_g16_alpha0_2x48",
            2,
            48,
            4,
            16,
            0.0,
            Grid::Symmetric,
            false,
            false,
        ),
        (
            "asym4_g16_alpha05_1x33",
            1,
            33,
            4,
            16,
            0.5,
            Grid::Asymmetric,
            false,
            false,
        ),
        (
            "sym4_g16_zeros_2x20",
            2,
            20,
            4,
            16,
            0.06,
            Grid::Symmetric,
            false,
            true,
        ),
        (
            "sym4_g16_1x1",
            1,
            1,
            4,
            16,
            0.5,
            Grid::Symmetric,
            false,
            false,
        ),
    ];
    let mut out = Vec::new();
    for &(name, rows, cols, bits, group, alpha, grid, reference, zeros) in cases {
        let mut params = Params::new(bits, group, alpha, grid).unwrap();
        if reference {
            params = params
                .with_selection(SelectionMode::Reference { n_iters: 100 })
                .unwrap();
        }
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| if zeros { 0.0 } else { bell(i) })
            .collect();
        out.push((
            name.to_string(),
            pack(Weights::F32(&w), rows, cols, &params),
        ));
    }
    out.extend(v2_seeds());
    out.extend(v3_seeds());
    out
}

/// Format v3 buffers: the code book (4 bits) and uniform widths, groups from 16 to 512,
/// short last segments and groups, 576- and 1536-wide rows (a 512 + 64 segment split),
/// an all-zero tensor, and a hot column.
fn v3_seeds() -> Vec<(String, Vec<u8>)> {
    // (name, rows, cols, bits, group, all zero, hot column)
    let cases: &[(&str, usize, usize, u8, u16, bool, bool)] = &[
        ("v3_4_g64_2x576", 2, 576, 4, 64, false, false),
        ("v3_5_g32_1x1536", 1, 1536, 5, 32, false, false),
        ("v3_6_g64_2x100", 2, 100, 6, 64, false, false),
        ("v3_2_g16_3x40", 3, 40, 2, 16, false, false),
        ("v3_8_g512_1x600", 1, 600, 8, 512, false, false),
        ("v3_4_g16_1x7", 1, 7, 4, 16, false, false),
        ("v3_4_g64_zeros_2x20", 2, 20, 4, 64, true, false),
        ("v3_4_g64_hotcol_2x576", 2, 576, 4, 64, false, true),
    ];
    let mut out = Vec::new();
    for &(name, rows, cols, bits, group, zeros, hot) in cases {
        let params = ParamFields {
            bits,
            group_size: group,
            ..Params::V3.fields()
        }
        .validate()
        .unwrap();
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| match (zeros, hot && i % cols == 17) {
                (true, _) => 0.0,
                (false, true) => bell(i) * 40.0,
                (false, false) => bell(i),
            })
            .collect();
        out.push((
            name.to_string(),
            pack(Weights::F32(&w), rows, cols, &params),
        ));
    }
    out
}

/// Format v2 buffers: 2..8 bits, groups from 16 to 255, short last groups, no outliers,
/// half of the weights outliers, an all-zero tensor, a reference-mode header.
fn v2_seeds() -> Vec<(String, Vec<u8>)> {
    // (name, rows, cols, bits, group, alpha, reference mode, all zero)
    let cases: &[(&str, usize, usize, u8, u16, f64, bool, bool)] = &[
        ("v2_4_g64_3x200", 3, 200, 4, 64, 0.05, false, false),
        ("v2_6_g64_2x100", 2, 100, 6, 64, 0.05, false, false),
        ("v2_2_g16_4x40", 4, 40, 2, 16, 0.25, false, false),
        ("v2_8_g255_1x300", 1, 300, 8, 255, 0.06, false, false),
        ("v2_3_g17_2x50", 2, 50, 3, 17, 0.1, false, false),
        ("v2_4_g64_alpha0_2x48", 2, 48, 4, 64, 0.0, false, false),
        ("v2_4_g16_alpha05_1x33", 1, 33, 4, 16, 0.5, false, false),
        ("v2_4_g64_zeros_2x20", 2, 20, 4, 64, 0.05, false, true),
        ("v2_4_g64_ref_2x256", 2, 256, 4, 64, 0.06, true, false),
    ];
    let mut out = Vec::new();
    for &(name, rows, cols, bits, group, alpha, reference, zeros) in cases {
        let mut fields = ParamFields {
            bits,
            group_size: group,
            alpha,
            ..Params::V2.fields()
        };
        if reference {
            fields.selection = SelectionMode::Reference { n_iters: 100 };
        }
        let params = fields.validate().unwrap();
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| if zeros { 0.0 } else { bell(i) })
            .collect();
        out.push((
            name.to_string(),
            pack(Weights::F32(&w), rows, cols, &params),
        ));
    }
    out
}
