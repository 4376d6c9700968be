//! The row-block plan: any block size, blocks run in any order, gives the bytes of
//! `quantize_tensor` (one block), partial ties at the threshold included.

use adpq_core::{packed_len, Error, Params, QuantizePlan, Scalar, Weights};

fn quantize_in_blocks(
    w: &[f32],
    rows: usize,
    cols: usize,
    p: &Params,
    block_rows: usize,
) -> Vec<u8> {
    let ww = Weights::F32(w);
    let sel = adpq_core::select_tensor(&Scalar, ww, rows, cols, p).unwrap();
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
    let sel = adpq_core::select_tensor(&Scalar, ww, rows, cols, p).unwrap();
    let mut out = vec![0u8; packed_len(rows, cols, p.format(), sel.n_outliers).unwrap()];
    adpq_core::quantize_tensor(&Scalar, ww, rows, cols, p, &sel, &mut out).unwrap();
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
    let p = Params::V1;
    let sel = adpq_core::select_tensor(&Scalar, Weights::F32(&ties), rows, cols, &p).unwrap();
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
    let p = Params::V1;
    let sel = adpq_core::select_tensor(&Scalar, ww, rows, cols, &p).unwrap();
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

/// Bit `i` of an LSB-first stream.
fn bit(stream: &[u8], i: usize) -> bool {
    stream[i / 8] >> (i % 8) & 1 == 1
}

/// An encoder outside the crate's kernels (as a device engine is) fills every block
/// from what it computed, here the oracle's buffer read through the public layout
/// accessors only; `stitch` of the accepted blocks gives the oracle's bytes.
/// `corrupt` damages the filled sections first.
fn fill_externally(
    reference: &[u8],
    rows: usize,
    cols: usize,
    p: &Params,
    block_rows: usize,
    corrupt: impl Fn(usize, &mut adpq_core::BlockSections<'_>),
) -> (Result<adpq_core::Quantized, Error>, Vec<u8>) {
    let parsed = adpq_core::PackedTensor::parse(reference).unwrap();
    let l = *parsed.layout();
    let offset = |r: usize| {
        let at = l.offsets_at() + 4 * r;
        u32::from_le_bytes(reference[at..at + 4].try_into().unwrap()) as usize
    };
    let w = external_weights(rows, cols);
    let selection = adpq_core::select_tensor(&Scalar, Weights::F32(&w), rows, cols, p).unwrap();
    let plan = QuantizePlan::new(rows, cols, p, &selection, block_rows).unwrap();
    // Partial ties at the threshold: an external encoder needs each block's rule too.
    let ties: Vec<u64> = if plan.needs_tie_counts() {
        (0..plan.block_count())
            .map(|b| plan.count_ties(&Scalar, Weights::F32(&w), b).unwrap())
            .collect()
    } else {
        Vec::new()
    };
    let mut out = vec![0u8; plan.packed_len()];
    let mut done = Vec::new();
    for mut block in plan.split(&mut out, &ties).unwrap() {
        let rule = plan.rule_for(&block);
        assert_eq!(rule.threshold_bits, selection.threshold_bits);
        let (rs, index) = (block.rows(), block.index());
        let mut scratch = vec![0u8; block.scratch_len()];
        {
            let mut s = block.sections(&mut scratch).unwrap();
            for (i, r) in rs.clone().enumerate() {
                let n = (offset(r + 1) - offset(r)) as u32;
                s.counts[4 * i..4 * i + 4].copy_from_slice(&n.to_le_bytes());
            }
            let (rb, cb) = (l.row_record_bytes(), l.row_code_bytes());
            let rec = l.records_at() + rs.start * rb;
            s.records
                .copy_from_slice(&reference[rec..rec + rs.len() * rb]);
            let code = l.codes_at() + rs.start * cb;
            s.codes
                .copy_from_slice(&reference[code..code + rs.len() * cb]);
            let bits = l.position_bits() as usize;
            let stream = &reference[l.positions_at()..];
            for (j, i) in (offset(rs.start) * bits..offset(rs.end) * bits).enumerate() {
                if bit(stream, i) {
                    s.positions[j / 8] |= 1 << (j % 8);
                }
            }
            corrupt(index, &mut s);
        }
        let d = plan.accept_filled(block);
        match d {
            Ok(d) => done.push((d, scratch)),
            Err(e) => return (Err(e), out),
        }
    }
    let q = plan.stitch(&mut out, done.iter().map(|(d, s)| (*d, s.as_slice())));
    (q, out)
}

fn external_weights(rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols)
        .map(|i| {
            let x = ((i * 7919 % 1009) as f32 - 504.0) / 97.0;
            if i % 41 == 0 {
                x * 9.0
            } else {
                x
            }
        })
        .collect()
}

#[test]
fn blocks_filled_outside_the_kernels_stitch_to_the_oracle_bytes() {
    let (rows, cols) = (11, 300);
    let w = external_weights(rows, cols);
    for p in [Params::V1, Params::V2] {
        let reference = reference(&w, rows, cols, &p);
        for block_rows in [1, 3, rows] {
            let (q, out) = fill_externally(&reference, rows, cols, &p, block_rows, |_, _| {});
            q.unwrap();
            assert!(
                out == reference,
                "{:?}, blocks of {block_rows}",
                p.version()
            );
        }
    }
}

#[test]
fn a_wrong_external_block_is_an_error_not_a_corrupt_tensor() {
    let (rows, cols) = (11, 300);
    let w = external_weights(rows, cols);
    for p in [Params::V1, Params::V2] {
        let reference = reference(&w, rows, cols, &p);
        // A row count that disagrees with its groups' records.
        let (q, out) = fill_externally(&reference, rows, cols, &p, 3, |b, s| {
            if b == 1 {
                s.counts[0] = s.counts[0].wrapping_add(1);
                s.counts[4] = s.counts[4].wrapping_sub(1);
            }
        });
        assert!(q.is_err(), "{:?}", p.version());
        assert_ne!(&out[..4], b"ADPQ", "a refused buffer keeps no magic");
        // More outliers than the selection has.
        let (q, _) = fill_externally(&reference, rows, cols, &p, 3, |b, s| {
            if b == 2 {
                s.counts[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
            }
        });
        assert!(matches!(q, Err(Error::OutlierCount { .. })), "{q:?}");
        // Positions of a group not increasing.
        let (q, _) = fill_externally(&reference, rows, cols, &p, rows, |_, s| {
            s.positions.iter_mut().for_each(|b| *b = !*b);
        });
        assert!(q.is_err(), "{:?}", p.version());
    }
}
