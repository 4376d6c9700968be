//! Parity with the Python reference, auto_adpq 0.3.5.
//!
//! The vectors in `tests/data/parity/` were produced by the real reference package
//! (`scripts/parity/run.sh` regenerates them; `--check` verifies the committed copies).
//! Reference-compatible mode must reproduce the reference's λ' bit for bit and its
//! outlier set exactly; exact mode must reconstruct no worse than the reference.

use std::path::PathBuf;

use adpq_core::harness::outlier_mask;
use adpq_core::{
    packed_len, CpuKernels, Grid, PackedTensor, Params, Scalar, SelectionMode, Weights,
};
use serde_json::Value;

struct Case {
    name: String,
    rows: usize,
    cols: usize,
    params: Params,
    n_iters: u32,
    lambda: f64,
    outliers: Vec<usize>,
    ref_mse: Option<f64>,
    weights: Vec<f32>,
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/parity")
}

fn load_cases() -> Vec<Case> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(data_dir())
        .expect("parity data directory is part of the repository")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 5,
        "expected the committed parity vectors, found {}",
        names.len()
    );
    names
        .into_iter()
        .map(|path| {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let name = v["name"].as_str().unwrap().to_string();
            let raw = std::fs::read(data_dir().join(format!("{name}.f32"))).unwrap();
            let weights: Vec<f32> = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let grid = if v["symmetric"].as_bool().unwrap() {
                Grid::Symmetric
            } else {
                Grid::Asymmetric
            };
            let params = Params::new(
                v["bits"].as_u64().unwrap() as u8,
                v["group_size"].as_u64().unwrap() as u16,
                v["alpha"].as_f64().unwrap(),
                grid,
            )
            .unwrap();
            Case {
                rows: v["rows"].as_u64().unwrap() as usize,
                cols: v["cols"].as_u64().unwrap() as usize,
                params,
                n_iters: v["n_iters"].as_u64().unwrap() as u32,
                lambda: v["lambda_prime"].as_f64().unwrap(),
                outliers: v["outliers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as usize)
                    .collect(),
                ref_mse: v["ref_mse"].as_f64(),
                weights,
                name,
            }
        })
        .collect()
}

fn quantize(case: &Case, params: &Params) -> (Vec<u8>, adpq_core::Selection) {
    let w = Weights::F32(&case.weights);
    let sel = adpq_core::select_tensor(&Scalar, w, case.rows, case.cols, params).unwrap();
    let mut buf =
        vec![0u8; packed_len(case.rows, case.cols, params.format(), sel.n_outliers).unwrap()];
    adpq_core::quantize_tensor(&Scalar, w, case.rows, case.cols, params, &sel, &mut buf).unwrap();
    (buf, sel)
}

fn mse(t: &PackedTensor<'_>, w: &[f32]) -> f64 {
    let mut back = vec![0f32; w.len()];
    Scalar.dequantize_rows(t, 0, &mut back).unwrap();
    back.iter()
        .zip(w)
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
        .sum::<f64>()
        / w.len() as f64
}

#[test]
fn reference_mode_reproduces_lambda_and_outlier_set() {
    for case in load_cases() {
        let params = case
            .params
            .with_selection(SelectionMode::Reference {
                n_iters: case.n_iters,
            })
            .unwrap();
        let (buf, sel) = quantize(&case, &params);
        assert_eq!(
            sel.lambda_prime.to_bits(),
            case.lambda.to_bits(),
            "{}: lambda' {} != reference {}",
            case.name,
            sel.lambda_prime,
            case.lambda
        );
        let t = PackedTensor::parse(&buf).unwrap();
        let mask = outlier_mask(&t);
        let ours: Vec<usize> = mask
            .iter()
            .enumerate()
            .filter(|(_, &o)| o)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            ours, case.outliers,
            "{}: outlier set differs from the reference",
            case.name
        );
        assert_eq!(
            sel.n_outliers as usize,
            case.outliers.len(),
            "{}",
            case.name
        );
    }
}

#[test]
fn exact_mode_is_no_worse_than_reference() {
    let mut compared = 0;
    for case in load_cases() {
        let Some(ref_mse) = case.ref_mse else {
            // The reference cannot reconstruct asymmetric tensors (it raises); nothing to compare.
            continue;
        };
        let (buf, sel) = quantize(&case, &case.params);
        let t = PackedTensor::parse(&buf).unwrap();
        let ours = mse(&t, &case.weights);
        eprintln!(
            "{}: exact-mode MSE {ours:.6e} vs reference {ref_mse:.6e} ({} outliers vs {})",
            case.name,
            sel.n_outliers,
            case.outliers.len()
        );
        assert!(
            ours <= ref_mse,
            "{}: exact-mode MSE {ours} > reference {ref_mse}",
            case.name
        );
        compared += 1;
    }
    assert!(compared >= 5);
}
