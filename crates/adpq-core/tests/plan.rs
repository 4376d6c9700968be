//! The row-block plan: any block size, blocks run in any order, gives the bytes of
//! `CpuKernels::quantize` (one block), partial ties at the threshold included.

use adpq_core::{packed_len, CpuKernels, Error, Params, QuantizePlan, Scalar, Weights};

fn quantize_in_blocks(
    w: &[f32],
    rows: usize,
    cols: usize,
    p: &Params,
    block_rows: usize,
) -> Vec<u8> {
    let ww = Weights::F32(w);
    let sel = Scalar.select(ww, rows, cols, p).unwrap();
    let plan = QuantizePlan::new(rows, cols, p, &sel, block_rows).unwrap();
    let ties: Vec<u64> = if plan.needs_tie_counts() {
        (0..plan.block_count())
            .map(|b| plan.count_ties(&Scalar, ww, b).unwrap())
            .collect()
    } else {
        Vec::new()
    };
    let mut out = vec![0x5Au8; plan.packed_len()];
    let mut blocks: Vec<_> = plan.split(&mut out, &ties).unwrap().collect();
    assert_eq!(blocks.len(), rows.div_ceil(block_rows.clamp(1, rows)));
    assert_eq!(blocks[0].scratch_len(), 0, "block 0 writes in place");
    // Run the blocks last first: each depends only on its own inputs.
    let mut done = Vec::new();
    while let Some(block) = blocks.pop() {
        let mut scratch = vec![0xFFu8; block.scratch_len()];
        let d = plan
            .quantize_block(&Scalar, ww, block, &mut scratch)
            .unwrap();
        scratch.truncate(d.position_bytes());
        done.push((d, scratch));
    }
    done.reverse();
    let q = plan
        .stitch(&mut out, done.iter().map(|(d, s)| (*d, s.as_slice())))
        .unwrap();
    assert_eq!(q.bytes, out.len());
    out
}

fn reference(w: &[f32], rows: usize, cols: usize, p: &Params) -> Vec<u8> {
    let ww = Weights::F32(w);
    let sel = Scalar.select(ww, rows, cols, p).unwrap();
    let mut out = vec![0u8; packed_len(rows, cols, p.format(), sel.n_outliers).unwrap()];
    Scalar.quantize(ww, rows, cols, p, &sel, &mut out).unwrap();
    out
}

#[test]
fn any_block_size_gives_the_same_bytes() {
    let (rows, cols) = (13, 300);
    let smooth: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919 % 1009) as f32 - 504.0) / 97.0)
        .collect();
    // Many equal magnitudes: only some of those at the threshold are outliers.
    let ties: Vec<f32> = (0..rows * cols)
        .map(|i| match i % 10 {
            0 => 1.0,
            1 => -1.0,
            _ => (i % 7) as f32 * 0.01,
        })
        .collect();
    let p = Params::DEFAULT;
    let sel = Scalar.select(Weights::F32(&ties), rows, cols, &p).unwrap();
    assert!(!sel.is_row_independent(), "the test needs a partial tie");
    for w in [&smooth, &ties] {
        let expected = reference(w, rows, cols, &p);
        for block_rows in [0, 1, 2, 5, 12, 13, 100] {
            assert!(
                quantize_in_blocks(w, rows, cols, &p, block_rows) == expected,
                "block_rows {block_rows}"
            );
        }
    }
}

#[test]
fn stitch_rejects_missing_or_misordered_blocks() {
    let (rows, cols) = (4, 128);
    let w: Vec<f32> = (0..rows * cols).map(|i| (i % 17) as f32 - 8.0).collect();
    let ww = Weights::F32(&w);
    let p = Params::DEFAULT;
    let sel = Scalar.select(ww, rows, cols, &p).unwrap();
    let plan = QuantizePlan::new(rows, cols, &p, &sel, 1).unwrap();
    let ties: Vec<u64> = (0..plan.block_count())
        .map(|b| plan.count_ties(&Scalar, ww, b).unwrap())
        .collect();
    let mut out = vec![0u8; plan.packed_len()];
    let mut done = Vec::new();
    for block in plan.split(&mut out, &ties).unwrap() {
        let mut scratch = vec![0u8; block.scratch_len()];
        done.push((
            plan.quantize_block(&Scalar, ww, block, &mut scratch)
                .unwrap(),
            scratch,
        ));
    }
    let missing = plan.stitch(&mut out, done[..3].iter().map(|(d, s)| (*d, s.as_slice())));
    assert!(
        matches!(
            missing,
            Err(Error::BufferSize {
                needed: 4,
                actual: 3
            })
        ),
        "{missing:?}"
    );
    let swapped = [1, 0, 2, 3].map(|i| (done[i].0, done[i].1.as_slice()));
    assert!(plan.stitch(&mut out, swapped).is_err());
    assert!(
        plan.split(&mut out, &ties[..2]).is_err(),
        "tie counts for every block"
    );
    let mut short = vec![0u8; plan.packed_len() - 1];
    assert!(plan.split(&mut short, &ties).is_err());
}
