//! Writes the seed corpus of the `parse_packed` target: a few small, valid packed buffers
//! covering both grids, 2/4/8 bits, 1- and 2-byte outlier counts, short last groups,
//! reference-mode headers, no outliers and an all-zero tensor. Random bytes almost never
//! get past the magic, the length and the CRC; these let the fuzzer start from the inside.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds [DIR]`
//! (default `fuzz/seeds/parse_packed`). The output is deterministic.

use adpq_core::{packed_len, CpuKernels, Grid, Params, Scalar, SelectionMode, Weights};

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/seeds/parse_packed").to_string());
    std::fs::create_dir_all(&dir).unwrap();
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
    for &(name, rows, cols, bits, group, alpha, grid, reference, zeros) in cases {
        let mut params = Params::new(bits, group, alpha, grid).unwrap();
        if reference {
            params = params.with_selection(SelectionMode::Reference { n_iters: 100 });
        }
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| {
                if zeros {
                    return 0.0;
                }
                // Deterministic, roughly bell-shaped, with a few large values.
                let x = ((i as u64 * 2_654_435_761) % 10_007) as f32 / 10_007.0 - 0.5;
                let spike = if i % 17 == 5 { 8.0 } else { 1.0 };
                x * x * x * 4.0 * spike + x * 0.1
            })
            .collect();
        let sel = Scalar
            .select(Weights::F32(&w), rows, cols, &params)
            .unwrap();
        let mut buf = vec![0u8; packed_len(rows, cols, params.format(), sel.n_outliers).unwrap()];
        Scalar
            .quantize(Weights::F32(&w), rows, cols, &params, &sel, &mut buf)
            .unwrap();
        adpq_core::PackedTensor::parse(&buf).unwrap();
        let path = format!("{dir}/{name}.adpq");
        std::fs::write(&path, &buf).unwrap();
        println!("{path}: {} bytes, {} outliers", buf.len(), sel.n_outliers);
    }
}
