//! The parallel driver: selection, quantization, error statistics and dequantization of
//! one tensor, split into chunks and row blocks that run on the current rayon pool.
//!
//! Determinism: the split depends only on the tensor's shape (never on the thread count),
//! histograms are integer sums, the first rejected weight is the one with the smallest
//! index, and row blocks are stitched in row order. The packed output is therefore
//! byte-identical to the single-threaded [`adpq_core::quantize_tensor`] whatever the pool size
//! (tested below), and so are the error sums.

use adpq_core::kernels::dequantize_row_pieces;
use adpq_core::select::{BadValue, HistogramPass, RangeScan, TensorScan, HIST_BINS};
use adpq_core::{
    narrow, select_outliers, BlockDone, CpuKernels, Error as CoreError, KernelScan, OutDtype,
    PackedTensor, Params, QuantizePlan, Quantized, Selection, Weights,
};
use rayon::prelude::*;

use crate::rtn::{add_sums, ErrorSums};

/// Elements per histogram/count chunk of the selection passes.
pub(crate) const CHUNK_ELEMS: usize = 1 << 16;
/// Target elements per row block of quantization and dequantization (a block holds at
/// least one row).
pub(crate) const BLOCK_ELEMS: usize = 1 << 16;

/// The parallel driver over a backend `B`. Cheap to copy into closures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Driver<B> {
    backend: B,
    block_elems: usize,
    chunk_elems: usize,
}

impl<B: CpuKernels> Driver<B> {
    /// A driver with the default block and chunk sizes.
    pub(crate) fn new(backend: B) -> Self {
        Driver {
            backend,
            block_elems: BLOCK_ELEMS,
            chunk_elems: CHUNK_ELEMS,
        }
    }

    #[cfg(test)]
    /// Overrides the row-block and chunk sizes (in elements, at least 1). The output does
    /// not depend on them; tests use tiny ones to exercise the stitching.
    pub(crate) fn with_sizes(mut self, block_elems: usize, chunk_elems: usize) -> Self {
        self.block_elems = block_elems.max(1);
        self.chunk_elems = chunk_elems.max(1);
        self
    }

    /// The backend.
    pub(crate) fn backend(&self) -> B {
        self.backend
    }

    /// Rows per block for a tensor of `cols` columns.
    fn block_rows(&self, cols: usize) -> usize {
        (self.block_elems / cols.max(1)).max(1)
    }

    /// Selects the outliers of a `rows × cols` tensor; the same result as
    /// [`adpq_core::select_tensor`], computed over chunks in parallel.
    pub(crate) fn select(
        &self,
        w: Weights<'_>,
        rows: usize,
        cols: usize,
        params: &Params,
    ) -> Result<Selection, CoreError> {
        adpq_core::select::check_shape(w.len(), rows, cols)?;
        select_outliers(&ParScan { driver: self, w }, rows, cols, params)
    }

    fn chunk<'w>(&self, w: Weights<'w>, i: usize) -> Option<(usize, Weights<'w>)> {
        let start = i * self.chunk_elems;
        let end = (start + self.chunk_elems).min(w.len());
        w.get(start, end).map(|c| (start, c))
    }

    fn par_histogram(
        &self,
        w: Weights<'_>,
        pass: &HistogramPass,
        bins: &mut [u32; HIST_BINS],
    ) -> Result<u32, BadValue> {
        struct Acc {
            bins: Box<[u32; HIST_BINS]>,
            max: u32,
            err: Option<BadValue>,
        }
        let new = || Acc {
            bins: Box::new([0u32; HIST_BINS]),
            max: 0,
            err: None,
        };
        let acc = (0..w.len().div_ceil(self.chunk_elems))
            .into_par_iter()
            .fold(new, |mut acc, i| {
                // Items of one fold come in increasing order: after an error, later chunks
                // cannot hold an earlier bad weight, so they are skipped.
                if acc.err.is_none() {
                    if let Some((start, chunk)) = self.chunk(w, i) {
                        match self.backend.histogram(chunk, pass, &mut acc.bins) {
                            Ok(m) => acc.max = acc.max.max(m),
                            Err(e) => {
                                acc.err = Some(BadValue {
                                    index: start as u64 + e.index,
                                    value: e.value,
                                })
                            }
                        }
                    }
                }
                acc
            })
            .reduce(new, |mut a, b| {
                for (x, y) in a.bins.iter_mut().zip(b.bins.iter()) {
                    *x += *y;
                }
                a.max = a.max.max(b.max);
                a.err = match (a.err, b.err) {
                    (Some(x), Some(y)) => Some(if x.index <= y.index { x } else { y }),
                    (x, y) => x.or(y),
                };
                a
            });
        if let Some(e) = acc.err {
            return Err(e);
        }
        for (x, y) in bins.iter_mut().zip(acc.bins.iter()) {
            *x += *y;
        }
        Ok(acc.max)
    }

    /// [`CpuKernels::scan_range`] over chunks in parallel: candidates concatenated in chunk
    /// order (so in row-major order), the first bad weight by index.
    fn par_scan_range(
        &self,
        w: Weights<'_>,
        lo: u32,
        hi: u32,
        out: &mut [u32],
    ) -> Result<RangeScan, BadValue> {
        let per_chunk: Vec<Result<(RangeScan, Vec<u32>), BadValue>> =
            (0..w.len().div_ceil(self.chunk_elems))
                .into_par_iter()
                .map(|i| {
                    let Some((start, chunk)) = self.chunk(w, i) else {
                        return Ok((RangeScan::default(), Vec::new()));
                    };
                    let at = |e: BadValue| BadValue {
                        index: start as u64 + e.index,
                        value: e.value,
                    };
                    // Candidates are a few percent of the weights: guess, rescan if it was short.
                    let mut buf = vec![0u32; chunk.len() / 16 + 64];
                    let mut scan = self
                        .backend
                        .scan_range(chunk, lo, hi, &mut buf)
                        .map_err(at)?;
                    if scan.in_range as usize > buf.len() {
                        buf = vec![0u32; scan.in_range as usize];
                        scan = self
                            .backend
                            .scan_range(chunk, lo, hi, &mut buf)
                            .map_err(at)?;
                    }
                    buf.truncate(scan.in_range as usize);
                    Ok((scan, buf))
                })
                .collect();
        let mut total = RangeScan::default();
        for part in per_chunk {
            let (scan, candidates) = part?;
            let at = total.in_range as usize;
            if let Some(dst) = out.get_mut(at..) {
                let n = dst.len().min(candidates.len());
                dst[..n].copy_from_slice(&candidates[..n]);
            }
            total.at_least_hi += scan.at_least_hi;
            total.in_range += scan.in_range;
            total.max_abs_bits = total.max_abs_bits.max(scan.max_abs_bits);
        }
        Ok(total)
    }

    fn par_count_at_least(&self, w: Weights<'_>, threshold_bits: u32) -> u64 {
        (0..w.len().div_ceil(self.chunk_elems))
            .into_par_iter()
            .map(|i| {
                self.chunk(w, i)
                    .map_or(0, |(_, c)| self.backend.count_at_least(c, threshold_bits))
            })
            .sum()
    }

    /// Quantizes a tensor with a selection made by [`Driver::select`] (or
    /// [`adpq_core::select_tensor`]) into `out`, exactly [`adpq_core::packed_len`] bytes. Row blocks
    /// run in parallel; the bytes equal those of [`adpq_core::quantize_tensor`].
    pub(crate) fn quantize(
        &self,
        w: Weights<'_>,
        rows: usize,
        cols: usize,
        params: &Params,
        sel: &Selection,
        out: &mut [u8],
    ) -> Result<Quantized, CoreError> {
        adpq_core::select::check_shape(w.len(), rows, cols)?;
        let plan = QuantizePlan::new(rows, cols, params, sel, self.block_rows(cols))?;
        if out.len() != plan.packed_len() {
            return Err(CoreError::BufferSize {
                needed: plan.packed_len() as u64,
                actual: out.len() as u64,
            });
        }
        // Weights equal to the threshold in each block: only needed on a partial tie.
        let ties: Vec<u64> = if plan.needs_tie_counts() {
            (0..plan.block_count())
                .into_par_iter()
                .map(|b| plan.count_ties(&self.backend, w, b))
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        let blocks: Vec<_> = plan.split(out, &ties)?.collect();
        let done: Vec<(BlockDone, Vec<u8>)> = blocks
            .into_par_iter()
            .map(|block| {
                let mut scratch = vec![0u8; block.scratch_len()];
                let done = plan.quantize_block(&self.backend, w, block, &mut scratch)?;
                // Keep only what was written: the scratch length is a worst case.
                scratch.truncate(done.position_bytes());
                scratch.shrink_to_fit();
                Ok((done, scratch))
            })
            .collect::<Result<_, CoreError>>()?;
        plan.stitch(out, done.iter().map(|(d, s)| (*d, s.as_slice())))
    }

    /// Error sums of a packed tensor against the weights it came from (AdpQ and the RTN
    /// baseline at the same bits and group size), over row blocks in parallel.
    pub(crate) fn error_sums(
        &self,
        w: Weights<'_>,
        packed: &PackedTensor<'_>,
    ) -> Result<ErrorSums, CoreError> {
        let (rows, cols) = (packed.rows(), packed.cols());
        if w.len() != rows * cols {
            return Err(CoreError::ShapeMismatch {
                expected: (rows * cols) as u64,
                actual: w.len() as u64,
            });
        }
        let fp = packed.params();
        let (bits, g) = (fp.bits, usize::from(fp.group_size));
        let block_rows = self.block_rows(cols);
        let piece = self.piece_len(cols, packed.piece_unit());
        let sums: Vec<Result<ErrorSums, CoreError>> = (0..rows.div_ceil(block_rows))
            .into_par_iter()
            .map(|b| {
                let r0 = b * block_rows;
                let r1 = (r0 + block_rows).min(rows);
                let mut s = ErrorSums::default();
                let mut deq = vec![0f32; piece];
                for r in r0..r1 {
                    // A long row in pieces of whole groups: the sums are added in the
                    // same order, so they equal the whole row's.
                    dequantize_row_pieces(&self.backend, packed, r, &mut deq, |c, v| {
                        let at = r * cols + c;
                        let wp = w.get(at, at + v.len()).ok_or(CoreError::EmptyTensor)?;
                        add_sums(&mut s, &self.backend, wp, v, bits, g);
                        Ok(())
                    })?;
                }
                Ok(s)
            })
            .collect();
        sums.into_iter()
            .try_fold(ErrorSums::default(), |acc, s| Ok(acc.merge(s?)))
    }

    /// Values decoded at once from one row of `cols` columns in groups of `g`: the whole
    /// row, or whole groups of about a block's elements, so a row of any length is
    /// decoded in bounded memory.
    fn piece_len(&self, cols: usize, g: usize) -> usize {
        cols.min(self.block_elems.max(g))
    }
}

impl<B: CpuKernels> Driver<B> {
    /// Dequantizes a whole packed tensor into little-endian `dtype` elements in `out`
    /// (`rows · cols · dtype.size()` bytes) over row blocks in parallel, saturating or
    /// refusing values the dtype cannot hold by the core's rule ([`adpq_core::narrow`]).
    pub(crate) fn dequantize(
        &self,
        packed: &PackedTensor<'_>,
        dtype: OutDtype,
        out: &mut [u8],
    ) -> Result<(), CoreError> {
        let (rows, cols) = (packed.rows(), packed.cols());
        let es = dtype.size();
        let needed = rows
            .checked_mul(cols)
            .and_then(|n| n.checked_mul(es))
            .unwrap_or(usize::MAX);
        if out.len() != needed {
            return Err(CoreError::BufferSize {
                needed: needed as u64,
                actual: out.len() as u64,
            });
        }
        if out.is_empty() {
            return Ok(());
        }
        let block_rows = self.block_rows(cols);
        let piece = self.piece_len(cols, packed.piece_unit());
        let results: Vec<Result<(), CoreError>> = out
            .par_chunks_mut((block_rows * cols * es).max(1))
            .enumerate()
            .map(|(b, chunk)| {
                let first_row = b * block_rows;
                let mut deq = vec![0f32; piece];
                for (i, row_out) in chunk.chunks_mut(cols * es).enumerate() {
                    let r = first_row + i;
                    // A long row in pieces of whole groups (bounded memory).
                    dequantize_row_pieces(&self.backend, packed, r, &mut deq, |c, v| {
                        let bytes = &mut row_out[c * es..(c + v.len()) * es];
                        narrow::write_part(packed, (r, c), v, dtype, bytes)
                    })?;
                }
                Ok(())
            })
            .collect();
        // The first refused value in row order, whatever the threads did first.
        results.into_iter().collect()
    }
}

/// The selection passes of a [`Driver`] over chunks of `w` in parallel.
struct ParScan<'d, 'w, B> {
    driver: &'d Driver<B>,
    w: Weights<'w>,
}

impl<B: CpuKernels> TensorScan for ParScan<'_, '_, B> {
    fn weight_count(&self) -> usize {
        self.w.len()
    }

    fn histogram(
        &self,
        pass: &HistogramPass,
        bins: &mut [u32; HIST_BINS],
    ) -> Result<u32, BadValue> {
        self.driver.par_histogram(self.w, pass, bins)
    }

    fn count_at_least(&self, threshold_bits: u32) -> u64 {
        self.driver.par_count_at_least(self.w, threshold_bits)
    }

    fn sample(&self, start: usize, out: &mut [u32]) -> bool {
        KernelScan::new(self.driver.backend, self.w).sample(start, out)
    }

    fn scan_range(&self, lo: u32, hi: u32, out: &mut [u32]) -> Option<Result<RangeScan, BadValue>> {
        Some(self.driver.par_scan_range(self.w, lo, hi, out))
    }
}

/// The histogram passes (or the reference search) over two closures, never the sampled
/// path: what the tests compare the parallel selection with.
#[cfg(test)]
fn select_with<H, C>(
    n: u64,
    cols: usize,
    params: &Params,
    histogram: H,
    count_at_least: C,
) -> Result<Selection, CoreError>
where
    H: Fn(&HistogramPass, &mut [u32; HIST_BINS]) -> Result<u32, BadValue>,
    C: Fn(u32) -> u64,
{
    struct Passes<H, C>(usize, H, C);
    impl<H, C> TensorScan for Passes<H, C>
    where
        H: Fn(&HistogramPass, &mut [u32; HIST_BINS]) -> Result<u32, BadValue>,
        C: Fn(u32) -> u64,
    {
        fn weight_count(&self) -> usize {
            self.0
        }
        fn histogram(
            &self,
            pass: &HistogramPass,
            bins: &mut [u32; HIST_BINS],
        ) -> Result<u32, BadValue> {
            (self.1)(pass, bins)
        }
        fn count_at_least(&self, threshold_bits: u32) -> u64 {
            (self.2)(threshold_bits)
        }
    }
    let scan = Passes(n as usize, histogram, count_at_least);
    adpq_core::select::select_by_passes(&scan, n as usize / cols, cols, params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use adpq_core::{bf16, f16, packed_len, Grid, Scalar, SelectionMode};

    fn pool(n: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    }

    fn weights(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = ((x >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
                // Heavy-ish tails: a few large values.
                if (x >> 20).is_multiple_of(97) {
                    u * 20.0
                } else {
                    u
                }
            })
            .collect()
    }

    fn reference(
        w: Weights<'_>,
        rows: usize,
        cols: usize,
        params: &Params,
    ) -> (Selection, Vec<u8>) {
        let sel = adpq_core::select_tensor(&Scalar, w, rows, cols, params).unwrap();
        let mut buf = vec![0u8; packed_len(rows, cols, params.format(), sel.n_outliers).unwrap()];
        adpq_core::quantize_tensor(&Scalar, w, rows, cols, params, &sel, &mut buf).unwrap();
        (sel, buf)
    }

    fn check_identical(w: Weights<'_>, rows: usize, cols: usize, params: &Params) {
        let (sel_ref, buf_ref) = reference(w, rows, cols, params);
        for threads in [1, 2, 3, 5] {
            for (block, chunk) in [
                (BLOCK_ELEMS, CHUNK_ELEMS),
                (1, 7),
                (cols * 3, 1000),
                (cols * 2 + 1, 64),
            ] {
                let d = Driver::new(Scalar).with_sizes(block, chunk);
                let (sel, buf) = pool(threads).install(|| {
                    let sel = d.select(w, rows, cols, params).unwrap();
                    let mut buf = vec![
                        0xAAu8;
                        packed_len(rows, cols, params.format(), sel.n_outliers)
                            .unwrap()
                    ];
                    d.quantize(w, rows, cols, params, &sel, &mut buf).unwrap();
                    (sel, buf)
                });
                assert_eq!(sel, sel_ref, "selection, threads {threads}, block {block}");
                assert!(
                    buf == buf_ref,
                    "bytes differ: threads {threads}, block {block}, chunk {chunk}"
                );
            }
        }
    }

    /// Large tensors take the sampled one-pass selection; in parallel it must still equal
    /// the histogram passes exactly, ties included, for any thread count and chunk size.
    #[test]
    fn parallel_sampled_selection_equals_histogram_passes() {
        let (rows, cols) = (1024, 1100);
        let mut x = 99u64;
        let mut next = move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        let smooth: Vec<f32> = (0..rows * cols).map(|_| next()).collect();
        let ties: Vec<f32> = smooth.iter().map(|v| (v * 16.0).round() / 8.0).collect();
        // With heavy ties the bracket holds more candidates than the scratch allows and the
        // selection falls back to the histogram passes: both must agree all the same.
        for (w, sampled) in [(&smooth, true), (&ties, false)] {
            let ww = Weights::F32(w);
            let params = Params::V1;
            let expected = select_with(
                w.len() as u64,
                cols,
                &params,
                |pass, bins| Scalar.histogram(ww, pass, bins),
                |t| Scalar.count_at_least(ww, t),
            )
            .unwrap();
            let key =
                |s: &Selection| (s.threshold_bits, s.take_equal, s.n_outliers, s.max_abs_bits);
            for threads in [1, 2, 3] {
                for chunk in [CHUNK_ELEMS, 1000, 77_777] {
                    let d = Driver::new(Scalar).with_sizes(BLOCK_ELEMS, chunk);
                    let sel = pool(threads).install(|| d.select(ww, rows, cols, &params).unwrap());
                    assert_eq!(
                        key(&sel),
                        key(&expected),
                        "threads {threads}, chunk {chunk}"
                    );
                    assert_eq!(sel.passes == 1, sampled, "threads {threads}, chunk {chunk}");
                }
            }
        }
    }

    #[test]
    fn parallel_is_byte_identical_f32_odd_shapes() {
        for (rows, cols) in [(37, 576), (19, 1000), (1, 200), (64, 128)] {
            let w = weights(rows * cols, cols as u64);
            check_identical(Weights::F32(&w), rows, cols, &Params::V1);
            let asym = adpq_core::ParamFields {
                grid: Grid::Asymmetric,
                bits: 3,
                group_size: 64,
                ..Params::V1.fields()
            }
            .validate()
            .unwrap();
            check_identical(Weights::F32(&w), rows, cols, &asym);
        }
    }

    #[test]
    fn parallel_is_byte_identical_with_partial_ties() {
        // Many equal magnitudes at the threshold: only some of them are outliers, so
        // blocks depend on the ties taken before them.
        let (rows, cols) = (40, 300);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| match i % 10 {
                0 => 1.0,
                1 => -1.0,
                _ => (i % 7) as f32 * 0.01,
            })
            .collect();
        let sel =
            adpq_core::select_tensor(&Scalar, Weights::F32(&w), rows, cols, &Params::V1).unwrap();
        assert!(!sel.is_row_independent(), "the test needs a partial tie");
        check_identical(Weights::F32(&w), rows, cols, &Params::V1);
    }

    #[test]
    fn parallel_is_byte_identical_half_types_and_reference_mode() {
        let (rows, cols) = (23, 576);
        let w = weights(rows * cols, 3);
        let h: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let b: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        check_identical(Weights::F16(&h), rows, cols, &Params::V1);
        check_identical(Weights::Bf16(&b), rows, cols, &Params::V1);
        let reference_mode = Params::V1
            .with_selection(SelectionMode::Reference { n_iters: 100 })
            .unwrap();
        check_identical(Weights::F32(&w), rows, cols, &reference_mode);
    }

    #[test]
    fn first_bad_weight_is_reported_whatever_the_split() {
        let (rows, cols) = (50, 100);
        let mut w = weights(rows * cols, 9);
        w[4321] = f32::NAN;
        w[4900] = f32::INFINITY;
        for threads in [1, 3] {
            for chunk in [7, 100, 1 << 18] {
                let d = Driver::new(Scalar).with_sizes(BLOCK_ELEMS, chunk);
                let e = pool(threads)
                    .install(|| d.select(Weights::F32(&w), rows, cols, &Params::V1))
                    .unwrap_err();
                assert!(
                    matches!(
                        e,
                        CoreError::NonFinite {
                            row: 43,
                            col: 21,
                            ..
                        }
                    ),
                    "{e:?}"
                );
            }
        }
    }

    #[test]
    fn error_sums_are_thread_independent() {
        // (Dequantization's thread independence is tested in `narrow`.)
        let (rows, cols) = (33, 1000);
        let w = weights(rows * cols, 5);
        let (_, buf) = reference(Weights::F32(&w), rows, cols, &Params::V1);
        let t = PackedTensor::parse(&buf).unwrap();
        let s1 = pool(1).install(|| {
            Driver::new(Scalar)
                .with_sizes(1, 1)
                .error_sums(Weights::F32(&w), &t)
                .unwrap()
        });
        for threads in [2, 3] {
            let d = Driver::new(Scalar).with_sizes(1, 1);
            let s = pool(threads).install(|| d.error_sums(Weights::F32(&w), &t).unwrap());
            assert_eq!(s, s1);
        }
        assert!(
            s1.rel_mse() > 0.0 && s1.rel_mse() < s1.rtn_rel_mse(),
            "{s1:?}"
        );
        // Blocks of one row decoded in pieces of one group: the sums of whole rows.
        let mut deq = vec![0f32; rows * cols];
        Scalar.dequantize_rows(&t, 0, &mut deq).unwrap();
        let by_rows = (0..rows).fold(ErrorSums::default(), |acc, r| {
            let wr = Weights::F32(&w[r * cols..(r + 1) * cols]);
            let dr = &deq[r * cols..(r + 1) * cols];
            acc.merge(crate::rtn::row_error_sums(wr, dr, cols, 4, 128))
        });
        assert_eq!(s1, by_rows);
    }

    /// The dequantized bytes, and the first refused value, do not depend on the thread
    /// count or the block size.
    #[test]
    fn dequantize_is_thread_and_block_independent() {
        let (rows, cols) = (300, 700);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| match i % 1013 {
                0 => 65504.0,
                5 => -65504.0,
                7 if i > 150_000 => 1.0e6,
                _ => ((i as f32) * 0.61).sin() * 20000.0,
            })
            .collect();
        for params in [Params::V1, Params::V2] {
            let (_, buf) = reference(Weights::F32(&w), rows, cols, &params);
            let p = PackedTensor::parse(&buf).unwrap();
            let run = |threads: usize, block: usize, dtype: OutDtype| {
                let d = Driver::new(Scalar).with_sizes(block, CHUNK_ELEMS);
                let mut out = vec![0u8; rows * cols * dtype.size()];
                pool(threads)
                    .install(|| d.dequantize(&p, dtype, &mut out))
                    .map(|()| out)
            };
            for dtype in [OutDtype::F32, OutDtype::F16, OutDtype::Bf16] {
                let one = run(1, BLOCK_ELEMS, dtype);
                assert!(one == run(3, cols * 7 + 1, dtype), "{dtype}");
                // Blocks of one row, decoded in pieces of one group.
                assert!(one == run(2, 1, dtype), "{dtype} in pieces");
                assert_eq!(one.is_err(), dtype == OutDtype::F16, "{dtype}");
            }
        }
    }
}
