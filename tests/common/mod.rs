//! Helpers shared by the end-to-end tests of the `adpq` binary: running it, checking
//! clean failures, and writing and reading synthetic safetensors checkpoints.
// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

pub fn adpq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adpq"))
        .args(args)
        .output()
        .expect("run adpq")
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

pub fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "adpq failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A clean failure: the exit code, a one-line `adpq: error:` message containing every
/// `needle`, and no panic.
pub fn fails(out: &Output, code: i32, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "stderr:\n{err}");
    assert!(!err.contains("panicked"), "panic:\n{err}");
    if code == 1 {
        assert!(err.contains("adpq: error:"), "{err}");
    }
    for n in needles {
        assert!(err.contains(n), "stderr lacks `{n}`:\n{err}");
    }
    err
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let u = ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
        // Roughly Laplacian-ish tails, like real weights.
        if (self.0 >> 16).is_multiple_of(53) {
            u * 8.0 * 0.02
        } else {
            u * 0.02
        }
    }
}

pub type Tensor = (String, Dtype, Vec<usize>, Vec<u8>);

pub fn floats(name: &str, dtype: Dtype, shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut g = Lcg(seed);
    let vals: Vec<f32> = (0..n).map(|_| g.next()).collect();
    let bytes = match dtype {
        Dtype::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F16 => vals
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        Dtype::BF16 => vals
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
        _ => unreachable!(),
    };
    (name.into(), dtype, shape.to_vec(), bytes)
}

pub fn write_st(path: &Path, tensors: &[Tensor], meta: &[(&str, &str)]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let meta: Option<std::collections::HashMap<String, String>> = (!meta.is_empty()).then(|| {
        meta.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    });
    safetensors::serialize_to_file(views, meta, path).unwrap();
}

/// Copies a safetensors file with its `__metadata__` changed by `edit`.
pub fn rewrite_meta(src: &Path, dst: &Path, edit: impl FnOnce(&mut BTreeMap<String, String>)) {
    let (tensors, mut meta) = read_st(src);
    edit(&mut meta);
    let tensors: Vec<Tensor> = tensors
        .into_iter()
        .map(|(n, (d, s, b))| (n, d, s, b))
        .collect();
    let meta: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    write_st(dst, &tensors, &meta);
}

pub type Loaded = (
    BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
    BTreeMap<String, String>,
);

pub fn read_st(path: &Path) -> Loaded {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, (t.dtype(), t.shape().to_vec(), t.data().to_vec())))
        .collect();
    let meta = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    (tensors, meta)
}

pub fn to_f32(dtype: Dtype, b: &[u8]) -> Vec<f32> {
    match dtype {
        Dtype::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => panic!("not float"),
    }
}

pub fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The synthetic model: odd row lengths (576, 1000), three float dtypes, and tensors that
/// must pass through (1-D, I64, embeddings, LM head).
pub fn synthetic_model() -> Vec<Tensor> {
    let ids: Vec<u8> = (0..16i64).flat_map(|i| i.to_le_bytes()).collect();
    vec![
        floats(
            "model.layers.0.self_attn.q_proj.weight",
            Dtype::F32,
            &[24, 576],
            1,
        ),
        floats(
            "model.layers.0.mlp.up_proj.weight",
            Dtype::F16,
            &[10, 1000],
            2,
        ),
        floats(
            "model.layers.0.mlp.down_proj.weight",
            Dtype::BF16,
            &[16, 256],
            3,
        ),
        floats(
            "model.layers.0.input_layernorm.weight",
            Dtype::F32,
            &[576],
            4,
        ),
        floats("model.embed_tokens.weight", Dtype::F32, &[10, 64], 5),
        floats("lm_head.weight", Dtype::F32, &[10, 64], 6),
        ("position_ids".into(), Dtype::I64, vec![1, 16], ids),
    ]
}

pub const QUANTIZED: [&str; 3] = [
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.mlp.up_proj.weight",
    "model.layers.0.mlp.down_proj.weight",
];

pub fn sharded(dir: &Path) -> Vec<Tensor> {
    let model = synthetic_model();
    let (a, b) = model.split_at(3);
    write_st(
        &dir.join("model-00001-of-00002.safetensors"),
        a,
        &[("format", "pt")],
    );
    write_st(
        &dir.join("model-00002-of-00002.safetensors"),
        b,
        &[("format", "pt")],
    );
    let mut map = serde_json::Map::new();
    for (i, part) in [a, b].iter().enumerate() {
        for t in part.iter() {
            map.insert(
                t.0.clone(),
                format!("model-0000{}-of-00002.safetensors", i + 1).into(),
            );
        }
    }
    let total: usize = model.iter().map(|t| t.3.len()).sum();
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("config.json"), "{\"hidden_size\": 576}").unwrap();
    model
}
