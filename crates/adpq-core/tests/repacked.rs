//! Format v3 rows repacked at load (`kernels::Repacked`): on every kernel set the int8
//! gemv over them gives the scalar oracle's `gemv_q8_rows` on the packed tensor bit for
//! bit, at every repacked width, group and row range; what is not repacked is refused
//! with an error, never read wrong.

use adpq_core::kernels::{Q8Activations, Repacked};
use adpq_core::{
    packed_len, AnyKernels, CpuKernels, Error, PackedTensor, ParamFields, Params, Scalar, Weights,
};

/// Heavy-tailed weights with a hot column (what hurts a grid): a fixed LCG, a cube of a
/// uniform for the tails.
fn weights(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..rows * cols)
        .map(|i| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
            let hot = if i % cols == 5 { 30.0 } else { 1.0 };
            hot * u * u * u * 4.0 + u * 0.1
        })
        .collect()
}

fn quantize(w: &[f32], rows: usize, cols: usize, p: &Params) -> Vec<u8> {
    let sel = adpq_core::select_tensor(&Scalar, Weights::F32(w), rows, cols, p).unwrap();
    let mut buf = vec![0u8; packed_len(rows, cols, p.format(), sel.n_outliers).unwrap()];
    adpq_core::quantize_tensor(&Scalar, Weights::F32(w), rows, cols, p, &sel, &mut buf).unwrap();
    buf
}

fn v3(bits: u8, group_size: u16) -> Params {
    ParamFields {
        bits,
        group_size,
        ..Params::V3.fields()
    }
    .validate()
    .unwrap()
}

fn bits_of(y: &[f32]) -> Vec<u32> {
    y.iter().map(|v| v.to_bits()).collect()
}

/// Every repacked width (the code book's 4 bits, 5 to 8), groups of 32 to 512 with and
/// without a partial last group (576 columns in groups of 128, as SmolLM2's k and v
/// projections), rows past the last whole block, and row ranges starting and ending
/// inside blocks, inside the tail, and empty.
#[test]
fn repacked_gemv_is_the_oracles_bits() {
    // Five blocks of 8 and one row past them.
    let rows = 41;
    for bits in 4..=8u8 {
        // Whole groups, and a partial last one of 32 (608 in 64s), 64 (576 in 128s), 96
        // (608 in 128s: chunks that do not pair) or 64 columns (576 in 512s).
        let shapes = [
            (32u16, 96),
            (64, 576),
            (64, 608),
            (128, 576),
            (128, 608),
            (512, 1536),
            (512, 576),
        ];
        for (g, cols) in shapes {
            let w = weights(rows, cols, u64::from(bits) * 1000 + u64::from(g));
            let buf = quantize(&w, rows, cols, &v3(bits, g));
            let t = PackedTensor::parse(&buf).unwrap();
            let len = Repacked::len_for(&t).expect("repacked");
            let mut rp = vec![0u8; len];
            Repacked::repack(&t, &mut rp).unwrap();
            let r = Repacked::new(t, &rp).unwrap();
            let x: Vec<f32> = (0..cols)
                .map(|i| ((i * 7 % 31) as f32 - 15.0) / 4.0)
                .collect();
            let groups = cols.div_ceil(usize::from(g));
            let (mut q, mut sc, mut su) = (vec![0i8; cols], vec![0f32; groups], vec![0i32; groups]);
            let a = Q8Activations::quantize_for(&t, &x, &mut q, &mut sc, &mut su).unwrap();
            let mut want = vec![0f32; rows];
            Scalar.gemv_q8_rows(&t, 0, &a, &mut want).unwrap();
            let want = bits_of(&want);
            for k in AnyKernels::available() {
                let ctx = format!("{}: {bits} bits, g {g}, {cols} columns", k.name());
                let ranges = [
                    (0, rows),
                    (0, 4),
                    (1, 9),
                    (3, 1),
                    (4, 8),
                    (8, 8),
                    (5, 2),
                    (6, 17),
                    (10, 30),
                    (16, 24),
                    (39, 2),
                    (40, 1),
                    (rows, 0),
                ];
                for (first, n) in ranges {
                    let mut y = vec![f32::NAN; n];
                    k.gemv_q8_repacked(&r, first, &a, &mut y).unwrap();
                    assert_eq!(
                        bits_of(&y),
                        want[first..first + n],
                        "{ctx}: rows {first}+{n}"
                    );
                }
                let mut y = vec![0f32; 2];
                assert_eq!(
                    k.gemv_q8_repacked(&r, rows - 1, &a, &mut y),
                    Err(Error::RowOutOfRange {
                        row: rows as u64,
                        rows: rows as u64
                    }),
                    "{ctx}"
                );
            }
        }
    }
}

/// What the block kernel does not read in byte lanes is not repacked (its gemv stays on
/// the packed rows), and a buffer of another length is refused.
#[test]
fn what_is_not_repacked_is_refused() {
    let cases = [
        (Params::V2, 8, 128),
        (Params::V1, 8, 128),
        (v3(2, 64), 8, 128),
        (v3(3, 64), 8, 128),
        (v3(4, 64), 8, 80),  // columns not whole chunks of 32
        (v3(4, 64), 7, 128), // fewer rows than a block
        (v3(4, 16), 8, 128), // groups below 32 columns
    ];
    for (p, rows, cols) in cases {
        let buf = quantize(&weights(rows, cols, 7), rows, cols, &p);
        let t = PackedTensor::parse(&buf).unwrap();
        assert_eq!(Repacked::len_for(&t), None, "{p:?} {rows}x{cols}");
        assert!(matches!(
            Repacked::repack(&t, &mut [0u8; 64]),
            Err(Error::Unsupported(_))
        ));
        assert!(matches!(Repacked::new(t, &[]), Err(Error::Unsupported(_))));
    }
    let buf = quantize(&weights(8, 128, 9), 8, 128, &v3(4, 64));
    let t = PackedTensor::parse(&buf).unwrap();
    let len = Repacked::len_for(&t).unwrap();
    let wrong = vec![0u8; len + 1];
    let err = Error::BufferSize {
        needed: len as u64,
        actual: len as u64 + 1,
    };
    assert_eq!(Repacked::new(t, &wrong).unwrap_err(), err);
    assert_eq!(Repacked::repack(&t, &mut wrong.clone()).unwrap_err(), err);
}
