//! The device arithmetic, built for the host, against the core's scalar oracle: the same
//! records, codes, per-row counts and positions, the same decoded values and dot
//! products, on random tensors (ties, hot channels, heavy tails, f16/bf16) and real
//! checkpoints, in formats v1, v2 and v3 (and v3's rotation and code book on their own).

use adpq_core::kernels::dot_row_q8_ref;
use adpq_core::quant::scale_exponent;
use adpq_core::rotate::Rotation;
use adpq_core::{
    bf16, f16, packed_len, quantize_tensor, select_tensor, CpuKernels, FormatVersion, Grid,
    PackedTensor, Params, Q8Activations, Scalar, Weights,
};
use adpq_cuda::host::{self, HostJob};
use adpq_engine::rtn::row_error_sums;
use proptest::prelude::*;

#[derive(Debug, Clone, Copy)]
enum Dtype {
    F32,
    F16,
    Bf16,
}

/// A tensor in one storage type.
enum Input {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
}

impl Input {
    fn new(v: &[f32], d: Dtype) -> Input {
        match d {
            Dtype::F32 => Input::F32(v.to_vec()),
            // Kept finite: a hot channel at scale 1e3 is beyond f16's range.
            Dtype::F16 => Input::F16(
                v.iter()
                    .map(|&x| f16::from_f32(x.clamp(-6e4, 6e4)))
                    .collect(),
            ),
            Dtype::Bf16 => Input::Bf16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
        }
    }
    fn weights(&self) -> Weights<'_> {
        match self {
            Input::F32(v) => Weights::F32(v),
            Input::F16(v) => Weights::F16(v),
            Input::Bf16(v) => Weights::Bf16(v),
        }
    }
}

/// Quantizes with the oracle and with the host build of the device arithmetic and
/// asserts identical sections, decoded rows and dot products. Returns false when the
/// oracle refuses the tensor as too small to quantize (every weight below 2^-100); any
/// other refusal fails.
fn check(w: Weights<'_>, rows: usize, cols: usize, params: &Params) -> bool {
    let sel = match select_tensor(&Scalar, w, rows, cols, params) {
        Ok(sel) => sel,
        Err(adpq_core::Error::TooSmall { .. }) => return false,
        Err(e) => panic!("the oracle refused the tensor: {e}"),
    };
    let fp = params.format();
    let mut buf = vec![0u8; packed_len(rows, cols, fp, sel.n_outliers).unwrap()];
    quantize_tensor(&Scalar, w, rows, cols, params, &sel, &mut buf).unwrap();
    let t = PackedTensor::parse(&buf).unwrap();
    let job = HostJob {
        format: fp,
        scale_exp: scale_exponent(sel.max_abs(), &fp),
        threshold_bits: sel.threshold_bits,
        take_equal: sel.take_equal,
    };
    assert_eq!(job.scale_exp, t.info().scale_exp, "scale exponent");
    let got = host::quantize(w, rows, cols, &job, sel.n_outliers).unwrap();

    // The oracle's sections.
    let l = t.layout();
    let (records_at, codes_at, positions_at) = (l.records_at(), l.codes_at(), l.positions_at());
    let offsets: Vec<u32> = buf[l.offsets_at()..records_at]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let counts: Vec<u32> = offsets.windows(2).map(|o| o[1] - o[0]).collect();
    assert_eq!(got.n_outliers(), sel.n_outliers, "outliers");
    assert_eq!(got.row_counts, counts, "row counts");
    assert_eq!(got.records, &buf[records_at..codes_at], "records");
    assert_eq!(got.codes, &buf[codes_at..positions_at], "codes");
    assert_eq!(got.positions, &buf[positions_at..], "positions");
    // Through the core's write path, the same buffer.
    let mut written = vec![0u8; buf.len()];
    got.write(rows, cols, params, &sel, &mut written).unwrap();
    assert!(written == buf, "the written buffer differs");

    let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
    let groups = cols.div_ceil(usize::from(fp.group_size));
    let (mut q, mut scales, mut sums) = (vec![0i8; cols], vec![0f32; groups], vec![0i32; groups]);
    // In the tensor's basis (v3: rotated), as an inference engine makes them.
    let a = Q8Activations::quantize_for(&t, &x, &mut q, &mut scales, &mut sums).unwrap();
    let mut want = vec![0f32; cols];
    for r in 0..rows {
        Scalar.dequantize_rows(&t, r, &mut want).unwrap();
        let back = host::dequantize_row(&t, r);
        let same = back
            .iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "row {r} decodes differently");
        let dot = host::dot_row(&t, r, &x);
        assert_eq!(
            dot.to_bits(),
            Scalar.dot_row(&t, r, &x).unwrap().to_bits(),
            "dot row {r}"
        );
        let q8 = host::dot_row_q8(&t, r, &a);
        let want = dot_row_q8_ref(&t, r, &a).unwrap();
        assert_eq!(q8.to_bits(), want.to_bits(), "q8 dot row {r}");
    }
    // Error sums: the error kernel's per-group sums, added in order, equal the engine's
    // row_error_sums bit for bit.
    let mut deq = vec![0f32; rows * cols];
    Scalar.dequantize_rows(&t, 0, &mut deq).unwrap();
    let want = row_error_sums(w, &deq, cols, fp.bits, usize::from(fp.group_size));
    let got = host::error_sums(w, &deq, cols, fp.bits, usize::from(fp.group_size));
    assert_eq!(
        got.map(f64::to_bits),
        [want.signal, want.adpq, want.rtn].map(f64::to_bits),
        "error sums"
    );
    true
}

/// xorshift64: deterministic test data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// About N(0, 1) (a sum of four uniforms).
    fn gauss(&mut self) -> f32 {
        (self.unit() + self.unit() + self.unit() + self.unit() - 2.0) * 1.7
    }
}

/// How a random tensor is drawn.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// Values from a small pool: ties at the threshold, zero groups.
    Pool,
    /// Near-Gaussian.
    Gauss,
    /// Student-t-like: a Gaussian over the square root of a small chi-square, heavy tails.
    HeavyTail,
    /// Gaussian with a few columns 30-100 times larger (LLM hot channels).
    HotChannels,
}

fn tensor(shape: Shape, rows: usize, cols: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = Rng(seed | 1);
    let pool: Vec<f32> = (0..1 + rng.next() % 12)
        .map(|_| [0.0f32, 0.5, -0.5, 0.25, 1.0, -1.0, -0.0, 1e-40][(rng.next() % 8) as usize])
        .collect();
    let hot: Vec<usize> = (0..1 + rng.next() % 3)
        .map(|_| (rng.next() as usize) % cols)
        .collect();
    let mut v = Vec::with_capacity(rows * cols);
    for _ in 0..rows {
        for c in 0..cols {
            let x = match shape {
                Shape::Pool => pool[(rng.next() % pool.len() as u64) as usize],
                Shape::Gauss => rng.gauss(),
                Shape::HeavyTail => {
                    // t with 3 degrees of freedom: z / sqrt(chi2_3 / 3).
                    let chi2: f32 = (0..3).map(|_| rng.gauss().powi(2)).sum::<f32>() / 3.0;
                    rng.gauss() / chi2.max(1e-4).sqrt()
                }
                Shape::HotChannels => {
                    let g = rng.gauss();
                    if hot.contains(&c) {
                        g * (30.0 + 70.0 * rng.unit())
                    } else {
                        g
                    }
                }
            };
            v.push(x * scale);
        }
    }
    v
}

fn v1_params() -> impl Strategy<Value = Params> {
    (
        2u8..=8,
        prop_oneof![
            prop::sample::select(vec![16u16, 20, 32, 64, 100, 128, 255, 256, 300, 1024]),
            16u16..=1024,
        ],
        prop_oneof![Just(0.0f64), Just(0.06), 0.0f64..=0.5],
        any::<bool>(),
    )
        .prop_map(|(bits, g, alpha, asym)| {
            let grid = if asym {
                Grid::Asymmetric
            } else {
                Grid::Symmetric
            };
            Params::new(bits, g, alpha, grid).unwrap()
        })
}

fn v2_params() -> impl Strategy<Value = Params> {
    (
        2u8..=8,
        prop_oneof![
            prop::sample::select(vec![16u16, 17, 32, 63, 64, 100, 128, 255]),
            16u16..=255,
        ],
        prop_oneof![Just(0.0f64), Just(0.05), 0.0f64..=0.5],
    )
        .prop_map(|(bits, g, alpha)| {
            Params::new(bits, g, alpha, Grid::Asymmetric)
                .unwrap()
                .with_version(FormatVersion::V2)
                .unwrap()
        })
}

fn v3_params() -> impl Strategy<Value = Params> {
    (
        2u8..=8,
        prop::sample::select(vec![16u16, 32, 64, 128, 256, 512]),
    )
        .prop_map(|(bits, g)| {
            Params::new(bits, g, 0.0, Grid::Asymmetric)
                .unwrap()
                .with_version(FormatVersion::V3)
                .unwrap()
        })
}

fn draw() -> impl Strategy<Value = (usize, usize, Shape, Dtype, f32, u64)> {
    (
        1usize..=4,
        prop_oneof![
            prop::sample::select(vec![1usize, 16, 17, 200, 576, 1031]),
            1usize..=1100
        ],
        prop::sample::select(vec![
            Shape::Pool,
            Shape::Gauss,
            Shape::HeavyTail,
            Shape::HotChannels,
        ]),
        prop::sample::select(vec![Dtype::F32, Dtype::F16, Dtype::Bf16]),
        prop::sample::select(vec![1.0f32, 1e-3, 1e3, 1e-28]),
        any::<u64>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96),
        ..ProptestConfig::default()
    })]

    #[test]
    fn v1_matches_the_oracle(params in v1_params(), (rows, cols, shape, dtype, scale, seed) in draw()) {
        let v = tensor(shape, rows, cols, seed, scale);
        let input = Input::new(&v, dtype);
        // A tensor of only subnormals is refused by the oracle: drawn again.
        prop_assume!(check(input.weights(), rows, cols, &params));
    }

    #[test]
    fn v2_matches_the_oracle(params in v2_params(), (rows, cols, shape, dtype, scale, seed) in draw()) {
        let v = tensor(shape, rows, cols, seed, scale);
        let input = Input::new(&v, dtype);
        // A tensor of only subnormals is refused by the oracle: drawn again.
        prop_assume!(check(input.weights(), rows, cols, &params));
    }

    #[test]
    fn v3_matches_the_oracle(params in v3_params(), (rows, cols, shape, dtype, scale, seed) in draw()) {
        let v = tensor(shape, rows, cols, seed, scale);
        let input = Input::new(&v, dtype);
        // A tensor of only subnormals is refused by the oracle: drawn again.
        prop_assume!(check(input.weights(), rows, cols, &params));
    }

    /// The device rotation, forward and inverse, equals the core's bit for bit: any seed,
    /// segment, length (short last segments, odd blocks) and segment-aligned start.
    #[test]
    fn rotation_matches_the_core(
        seed in any::<u32>(),
        log2 in 1u8..=9,
        n in prop_oneof![1usize..=1100, prop::sample::select(vec![1usize, 88, 512, 576, 1031])],
        first in 0usize..4,
        scale in prop::sample::select(vec![1.0f32, 1e-30, 1e30]),
        data in any::<u64>(),
    ) {
        let rot = Rotation::new(seed, log2).unwrap();
        let start = first * rot.segment();
        let mut rng = Rng(data | 1);
        let x: Vec<f32> = (0..n).map(|_| rng.gauss() * scale).collect();
        for inverse in [false, true] {
            let (mut want, mut got) = (x.clone(), x.clone());
            if inverse {
                rot.inverse_at(start, &mut want);
            } else {
                rot.forward_at(start, &mut want);
            }
            host::rotate(rot, start, &mut got, inverse);
            prop_assert!(
                got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{rot:?} start {start} n {n} inverse {inverse}"
            );
        }
    }

    #[test]
    fn f16_conversions_match_half(bits in any::<u32>(), h in any::<u16>()) {
        let x = f32::from_bits(bits);
        if !x.is_nan() {
            prop_assert_eq!(host::f16_from_f32(x), f16::from_f32(x).to_bits());
            prop_assert_eq!(host::bf16_from_f32(x), bf16::from_f32(x).to_bits());
        }
        let wide = f16::from_bits(h).to_f32();
        if !wide.is_nan() {
            prop_assert_eq!(host::f16_to_f32(h).to_bits(), wide.to_bits());
        }
    }
}

/// The kernels' levels are the core's: the 4-bit code book and the uniform widths.
#[test]
fn v3_levels_match_the_core() {
    for bits in 2u8..=8 {
        let fp = Params::new(bits, 64, 0.0, Grid::Asymmetric)
            .unwrap()
            .with_version(FormatVersion::V3)
            .unwrap()
            .format();
        for code in 0..=fp.code_max() as u8 {
            assert_eq!(
                host::v3_level(bits, code).to_bits(),
                fp.level(code).to_bits(),
                "{bits} bits, code {code}"
            );
        }
    }
}

/// Codes at and around the decision points, where rounding rules show: a level encodes to
/// itself; the code book's midpoint `(T[k] + T[k+1]) / 16` goes to the lower level and the
/// next f32 above it to the upper (scalar_v3's rule, ties low); uniform widths round
/// half to even. Grid `d = 1`, `m = 0`, so `u = w`.
#[test]
fn v3_encoding_at_the_decision_points() {
    use adpq_core::params::CODEBOOK_4BIT;
    let one = [0x3c00u16, 0x3c00];
    let up = |x: f32| f32::from_bits(x.to_bits() + 1);
    for k in 0..16u8 {
        assert_eq!(
            host::v3_encode(4, one, 1, 0, f32::from(CODEBOOK_4BIT[usize::from(k)]) / 8.0),
            k
        );
        if k < 15 {
            let i = usize::from(k);
            let mid = (u32::from(CODEBOOK_4BIT[i]) + u32::from(CODEBOOK_4BIT[i + 1])) as f32 / 16.0;
            assert_eq!(host::v3_encode(4, one, 1, 0, mid), k, "midpoint {k}");
            assert_eq!(
                host::v3_encode(4, one, 1, 0, up(mid)),
                k + 1,
                "above midpoint {k}"
            );
        }
    }
    for bits in [2u8, 3, 5, 8] {
        let max = (1u16 << bits) - 1;
        for k in 0..max {
            let half = f32::from(k) + 0.5;
            let even = if k % 2 == 0 { k } else { k + 1 };
            assert_eq!(
                u16::from(host::v3_encode(bits, one, 1, 0, half)),
                even,
                "{bits}: {half}"
            );
            assert_eq!(u16::from(host::v3_encode(bits, one, 1, 0, up(half))), k + 1);
        }
        // Clamped at both ends.
        assert_eq!(host::v3_encode(bits, one, 1, 0, -3.0), 0);
        assert_eq!(u16::from(host::v3_encode(bits, one, 1, 0, 1e9)), max);
    }
}

/// Rounding boundaries of f32 -> f16 (ties, subnormals, overflow) on every f16 step.
#[test]
fn f16_rounding_boundaries_match_half() {
    for h in 0u16..0x7C00 {
        let lo = f16::from_bits(h).to_f32();
        for d in -2i32..=2 {
            for x in [lo, -lo] {
                let y = f32::from_bits(x.to_bits().wrapping_add_signed(d));
                if let Some(mid) = (h < 0x7BFF).then(|| (lo + f16::from_bits(h + 1).to_f32()) / 2.0)
                {
                    assert_eq!(
                        host::f16_from_f32(mid),
                        f16::from_f32(mid).to_bits(),
                        "{mid:e}"
                    );
                }
                assert_eq!(host::f16_from_f32(y), f16::from_f32(y).to_bits(), "{y:e}");
            }
        }
    }
}

/// A partial tie at the threshold crossing rows and groups: the tie budget per group comes
/// from the scan of the ties before it, as on the device.
#[test]
fn partial_ties_cross_groups_and_rows() {
    let (rows, cols) = (5, 70);
    let v: Vec<f32> = (0..rows * cols)
        .map(|i| {
            if i % 3 == 0 {
                0.5
            } else {
                ((i * 37 % 101) as f32 - 50.0) / 200.0
            }
        })
        .collect();
    for params in [
        Params::new(4, 16, 0.2, Grid::Symmetric).unwrap(),
        Params::new(3, 32, 0.1, Grid::Asymmetric).unwrap(),
        Params::V2,
        Params::new(5, 16, 0.25, Grid::Asymmetric)
            .unwrap()
            .with_version(FormatVersion::V2)
            .unwrap(),
    ] {
        let sel = select_tensor(&Scalar, Weights::F32(&v), rows, cols, &params).unwrap();
        assert!(!sel.is_row_independent(), "the data must split the ties");
        assert!(check(Weights::F32(&v), rows, cols, &params));
    }
}

/// All-zero tensors, all-zero rows and a rejected weight.
#[test]
fn zeros_and_rejected_weights() {
    for params in [Params::V1, Params::V2, Params::V3] {
        assert!(check(Weights::F32(&[0.0; 300]), 3, 100, &params));
        let mut v = tensor(Shape::Gauss, 3, 100, 7, 1.0);
        v[100..200].fill(0.0);
        assert!(check(Weights::F32(&v), 3, 100, &params));
        v[150] = f32::NAN;
        let job = HostJob {
            format: params.format(),
            scale_exp: 0,
            threshold_bits: 0x3F00_0000,
            take_equal: u64::MAX,
        };
        assert_eq!(
            host::quantize(Weights::F32(&v), 3, 100, &job, 300).unwrap_err(),
            host::HostError::Rejected(150)
        );
    }
}

/// The checkpoint at `target/data/<rel>`, or `None` with a printed reason (a failure when
/// `ADPQ_REQUIRE_DATA=1`).
fn real_data(rel: &str) -> Option<adpq_io::SafetensorsFile> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/data")
        .join(rel);
    if !path.exists() {
        let msg = format!("{} missing (run `cargo xtask fetch`)", path.display());
        if std::env::var_os("ADPQ_REQUIRE_DATA").is_some_and(|v| v == "1") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return None;
    }
    Some(adpq_io::SafetensorsFile::open(&path).unwrap())
}

/// The first `max_rows` rows of every 2-D tensor whose name passes `keep`, under v1, v2
/// and v3 defaults (and another width each; v3: the preset's 4, 5 and 6 bits): the device
/// arithmetic writes the oracle's bytes.
fn real_tensors(rel: &str, keep: impl Fn(&str) -> bool, max_rows: usize) -> usize {
    let Some(file) = real_data(rel) else {
        return 0;
    };
    let mut checked = 0;
    for t in file.tensors() {
        if t.shape.len() != 2 || !keep(t.name) {
            continue;
        }
        let Some(data) = adpq_io::weight_data(&t) else {
            continue;
        };
        let (rows, cols) = (t.shape[0].min(max_rows), t.shape[1]);
        let w = data.weights().get(0, rows * cols).unwrap();
        for params in [
            Params::V1,
            Params::V2,
            Params::new(3, 64, 0.03, Grid::Asymmetric).unwrap(),
            Params::new(5, 32, 0.05, Grid::Asymmetric)
                .unwrap()
                .with_version(FormatVersion::V2)
                .unwrap(),
            Params::V3,
            Params::v3_for("down_proj"),
            Params::v3_for("v_proj"),
        ] {
            assert!(check(w, rows, cols, &params), "{} refused", t.name);
        }
        checked += 1;
    }
    checked
}

#[test]
fn real_minilm_tensors() {
    let n = real_tensors("minilm/model.safetensors", |_| true, 24);
    if n > 0 {
        eprintln!("checked {n} MiniLM tensors");
        assert!(n >= 30, "only {n} 2-D tensors");
    }
}

#[test]
fn real_smollm2_tensors() {
    // Layer 0's projections (576- and 1536-wide rows) and the embedding's first rows.
    let keep = |name: &str| name.contains("layers.0.") || name.contains("embed_tokens");
    let n = real_tensors("smollm2/model.safetensors", keep, 16);
    if n > 0 {
        eprintln!("checked {n} SmolLM2 tensors");
        assert!(n >= 7, "only {n} 2-D tensors");
    }
}

/// The core's write path refuses sections that are wrong: a position out of order, a
/// section of the wrong size.
#[test]
fn wrong_sections_are_refused_by_the_write_path() {
    let (rows, cols) = (4, 100);
    let v = tensor(Shape::HotChannels, rows, cols, 11, 1.0);
    let w = Weights::F32(&v);
    let params = Params::V1;
    let sel = select_tensor(&Scalar, w, rows, cols, &params).unwrap();
    let job = HostJob {
        format: params.format(),
        scale_exp: scale_exponent(sel.max_abs(), &params.format()),
        threshold_bits: sel.threshold_bits,
        take_equal: sel.take_equal,
    };
    let good = host::quantize(w, rows, cols, &job, sel.n_outliers).unwrap();
    let mut out = vec![0u8; packed_len(rows, cols, params.format(), sel.n_outliers).unwrap()];
    good.write(rows, cols, &params, &sel, &mut out).unwrap();
    assert!(PackedTensor::parse(&out).is_ok());

    let mut bad = good.clone();
    bad.positions.iter_mut().for_each(|b| *b = 0xFF);
    assert!(bad.write(rows, cols, &params, &sel, &mut out).is_err());
    assert!(
        PackedTensor::parse(&out).is_err(),
        "a refused buffer must not parse"
    );

    let mut short = good.clone();
    short.codes.pop();
    assert!(short.write(rows, cols, &params, &sel, &mut out).is_err());
}
