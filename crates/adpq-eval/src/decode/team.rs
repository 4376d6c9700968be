//! The threads of decoding steps when there are several: helper threads that stay awake
//! for a step, or for many ([`Decoder::with_team`](super::Decoder::with_team)), spinning
//! between jobs (yielding, then sleeping, when the caller is away longer), and each take
//! chunks of every job until none are left. A job is a product (chunks of its matrices'
//! rows) or a layer's attention (a query head at a time).
//!
//! A step has about five jobs per layer, each a few tens of microseconds of work. A
//! thread pool's worker that falls asleep between them costs a wake-up per job, as
//! long as the job itself: with rayon regions two threads ran a step only 1.2×
//! faster than one. Here the calling thread publishes each job on a [`Board`] (its
//! matrices or layer, and a copy of its input), takes chunks as the helpers do (each
//! thread from the front of its own segment of the job, then from the back of the
//! others': a helper starts a little after the caller, so fixed shares alone left the
//! caller waiting), waits for the helpers and copies their values out. Each value does not
//! depend on the chunk or the thread that computes it, so the results are the same bits
//! for any number of threads.

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};

use adpq_core::CpuKernels;

use super::{attend, read, scatter, Heads, KvCache, Q8Buffers, RowProducts};
use crate::linear::Linear;
use crate::{EvalError, Result};

/// Spins before a waiting thread starts yielding its core (a few microseconds).
const SPINS: u32 = 1 << 12;

/// Yields before a waiting thread starts sleeping (about a millisecond).
const YIELDS: u32 = 1 << 10;

/// The chunks of a product's rows: 128 rows at a time, fewer toward a segment's end
/// (so that the threads finish together), down to 16 (two of the repacked kernel's
/// blocks of 8 rows). SmolLM2's products are 576 to 49152 rows.
const ROWS: Chunking = Chunking {
    grain: 16,
    most: 128,
};

/// How a job's values are taken: chunks of at most `most` values, in multiples of
/// `grain` (but for a job's last values).
#[derive(Clone, Copy)]
struct Chunking {
    grain: usize,
    most: usize,
}

impl Chunking {
    /// The size of the next chunk of a segment with `left` values left: about half of
    /// them, within `grain..=most`.
    fn size(self, left: usize) -> usize {
        (left / 2).clamp(self.grain, self.most) / self.grain * self.grain
    }
}

/// A job's values split into one contiguous segment per thread, each a range packed in
/// one atomic (`start | end << 32`). A thread takes chunks from the front of its own
/// segment, so that it reads its rows as one stream (which the hardware prefetchers
/// follow; with chunks dealt in turn from one counter, two threads decoded 4 % slower);
/// with its segment done, it takes chunks from the back of the others' until none are
/// left.
struct Segments(Vec<AtomicU64>);

impl Segments {
    fn new(threads: usize) -> Self {
        Segments((0..threads).map(|_| AtomicU64::new(0)).collect())
    }

    /// Splits `0..total` into the segments, each starting on a multiple of `grain`. An
    /// error past `u32::MAX` values (the packing's).
    fn split(&self, total: usize, grain: usize) -> Result<()> {
        if u32::try_from(total).is_err() {
            return Err(EvalError::Shape(format!(
                "a decoding job of {total} values is too large to share"
            )));
        }
        let n = self.0.len();
        let bound = |i: usize| (total / n * i).next_multiple_of(grain).min(total);
        for (i, segment) in self.0.iter().enumerate() {
            let end = if i + 1 == n { total } else { bound(i + 1) };
            segment.store(pack(bound(i)..end), Ordering::Relaxed);
        }
        Ok(())
    }

    /// The next chunk for thread `me`: from the front of its segment, else from the back
    /// of the next segment with values left; `None` when none are.
    fn next(&self, me: usize, chunking: Chunking) -> Option<Range<usize>> {
        let n = self.0.len();
        self.take(me, chunking, true)
            .or_else(|| (1..n).find_map(|k| self.take((me + k) % n, chunking, false)))
    }

    /// A chunk of segment `i`, from its front or its back.
    fn take(&self, i: usize, chunking: Chunking, front: bool) -> Option<Range<usize>> {
        let segment = &self.0[i];
        let mut packed = segment.load(Ordering::Relaxed);
        loop {
            let left = unpack(packed);
            if left.is_empty() {
                return None;
            }
            let size = chunking.size(left.len()).min(left.len());
            let (chunk, rest) = if front {
                (left.start..left.start + size, left.start + size..left.end)
            } else {
                // On the grain, as the segments start (the job's end may not be).
                let start = ((left.end - size) / chunking.grain * chunking.grain).max(left.start);
                (start..left.end, left.start..start)
            };
            match segment.compare_exchange_weak(
                packed,
                pack(rest),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(chunk),
                Err(now) => packed = now,
            }
        }
    }
}

/// A range of values below `u32::MAX` in one `u64`.
fn pack(r: Range<usize>) -> u64 {
    r.start as u64 | (r.end as u64) << 32
}

/// The range of [`pack`].
fn unpack(p: u64) -> Range<usize> {
    (p & u64::from(u32::MAX)) as usize..(p >> 32) as usize
}

/// What the calling thread shares with its helpers, for one step or many.
pub(super) struct Board<'m> {
    /// Jobs published so far (a helper works when it sees a new one).
    published: AtomicUsize,
    /// Helpers done with the last published job.
    done: AtomicUsize,
    /// The published job's values left to take.
    segments: Segments,
    job: Mutex<Job<'m>>,
    /// The layers' KV caches, which attention reads.
    caches: &'m [RwLock<KvCache>],
    /// Each helper's values of the last job.
    rows: Vec<Mutex<Taken>>,
    /// The first helper error (or panic) of the last job.
    failed: Mutex<Option<EvalError>>,
}

/// One job: a product of the matrices `mats` (sharing their input `x`), or the
/// attention of query `x` over a layer's cache.
#[derive(Default)]
struct Job<'m> {
    mats: Vec<&'m Linear<'m>>,
    attention: Option<Attention>,
    x: Vec<f32>,
    stop: bool,
}

/// Attention over the first `positions` of layer `layer`'s cache.
#[derive(Clone, Copy)]
struct Attention {
    layer: usize,
    positions: usize,
    heads: Heads,
}

impl Attention {
    /// A query head at a time.
    fn chunking(&self) -> Chunking {
        Chunking {
            grain: self.heads.d,
            most: self.heads.d,
        }
    }

    /// The heads of `chunk` (whole heads of `d` values) into `out`.
    fn heads(&self, q: &[f32], cache: &KvCache, chunk: Range<usize>, out: &mut [f32]) {
        attend(
            q,
            cache,
            self.positions,
            self.heads,
            chunk.start / self.heads.d,
            out,
        );
    }
}

/// The chunks of a product's rows one thread took, and their values one after the other.
#[derive(Default)]
struct Taken {
    chunks: Vec<std::ops::Range<usize>>,
    values: Vec<f32>,
}

impl Taken {
    /// Takes chunks of the published job from `segments` as thread `me` until none are
    /// left, computing each with `compute`.
    fn take(
        &mut self,
        segments: &Segments,
        me: usize,
        chunking: Chunking,
        mut compute: impl FnMut(Range<usize>, &mut [f32]) -> Result<()>,
    ) -> Result<()> {
        self.chunks.clear();
        self.values.clear();
        while let Some(chunk) = segments.next(me, chunking) {
            let at = self.values.len();
            self.values.resize(at + chunk.len(), 0.0);
            compute(chunk.clone(), &mut self.values[at..])?;
            self.chunks.push(chunk);
        }
        Ok(())
    }

    /// Hands each chunk's first index and values to `place`.
    fn place(&self, mut place: impl FnMut(usize, &[f32])) {
        let mut at = 0;
        for chunk in &self.chunks {
            place(chunk.start, &self.values[at..at + chunk.len()]);
            at += chunk.len();
        }
    }
}

impl<'m> Board<'m> {
    /// A board for `helpers` helper threads over the layers' KV caches `caches`.
    pub(super) fn new(helpers: usize, caches: &'m [RwLock<KvCache>]) -> Self {
        Board {
            published: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            segments: Segments::new(helpers + 1),
            job: Mutex::new(Job::default()),
            caches,
            rows: (0..helpers).map(|_| Mutex::new(Taken::default())).collect(),
            failed: Mutex::new(None),
        }
    }

    pub(super) fn threads(&self) -> usize {
        self.rows.len() + 1
    }

    /// Runs helper `h` (of `1..threads`) until [`stop`](Self::stop): chunks of each job.
    pub(super) fn help<K: CpuKernels>(&self, k: K, h: usize, widest: usize) {
        let mut q8: [Q8Buffers; 3] = std::array::from_fn(|_| Q8Buffers::for_width(widest));
        let (mut seen, mut x, mut mats, mut taken) = (0, Vec::new(), Vec::new(), Taken::default());
        loop {
            wait_until(|| self.published.load(Ordering::Acquire) != seen);
            seen = self.published.load(Ordering::Acquire);
            let attention = {
                let job = lock(&self.job);
                if job.stop {
                    return;
                }
                x.clone_from(&job.x);
                mats.clone_from(&job.mats);
                job.attention
            };
            let r = catch_unwind(AssertUnwindSafe(|| match attention {
                Some(a) => {
                    let cache = read(&self.caches[a.layer]);
                    taken.take(&self.segments, h, a.chunking(), |chunk, out| {
                        a.heads(&x, &cache, chunk, out);
                        Ok(())
                    })
                }
                None => {
                    let mut products = RowProducts::new(k, &x, &mats, &mut q8);
                    taken.take(&self.segments, h, ROWS, |chunk, out| {
                        products.rows(chunk, out)
                    })
                }
            }))
            .unwrap_or_else(|_| Err(EvalError::Shape("a decoding thread panicked".into())));
            match r {
                Ok(()) => std::mem::swap(&mut *lock(&self.rows[h - 1]), &mut taken),
                Err(e) => {
                    // No values of an earlier job may be placed later.
                    lock(&self.rows[h - 1]).chunks.clear();
                    lock(&self.failed).get_or_insert(e);
                }
            }
            self.done.fetch_add(1, Ordering::Release);
        }
    }

    /// `y_i = W_i x` for the matrices of `outs` (sharing `x`): chunks of the rows taken
    /// here and by the helpers.
    pub(super) fn product<K: CpuKernels>(
        &self,
        k: K,
        x: &[f32],
        outs: &mut [(&'m Linear<'m>, &mut [f32])],
        q8: &mut [Q8Buffers],
    ) -> Result<()> {
        let mats: Vec<&'m Linear<'m>> = outs.iter().map(|(w, _)| *w).collect();
        let mut products = RowProducts::new(k, x, &mats, q8);
        self.run(
            |job| {
                job.mats.clone_from(&mats);
                job.attention = None;
            },
            x,
            total_rows(&mats),
            ROWS,
            |chunk, out| products.rows(chunk, out),
            |first, values| scatter(outs, first, values),
        )
    }

    /// Attention of query `q` (`heads · d`) over the first `positions` of layer
    /// `layer`'s cache into `out`: a query head at a time, here and on the helpers.
    pub(super) fn attention(
        &self,
        layer: usize,
        positions: usize,
        heads: Heads,
        q: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        let a = Attention {
            layer,
            positions,
            heads,
        };
        let cache = read(&self.caches[layer]);
        self.run(
            |job| {
                job.mats.clear();
                job.attention = Some(a);
            },
            q,
            q.len(),
            a.chunking(),
            |chunk, values| {
                a.heads(q, &cache, chunk, values);
                Ok(())
            },
            |first, values| out[first..first + values.len()].copy_from_slice(values),
        )
    }

    /// Publishes a job (`set` describes it, `x` its input), takes chunks of its `total`
    /// values as the helpers do (`compute` computes one here), waits for them and
    /// hands every chunk's values to `place`.
    fn run(
        &self,
        set: impl FnOnce(&mut Job<'m>),
        x: &[f32],
        total: usize,
        chunking: Chunking,
        compute: impl FnMut(Range<usize>, &mut [f32]) -> Result<()>,
        mut place: impl FnMut(usize, &[f32]),
    ) -> Result<()> {
        self.segments.split(total, chunking.grain)?;
        {
            let mut job = lock(&self.job);
            set(&mut job);
            job.x.clear();
            job.x.extend_from_slice(x);
        }
        // An earlier job's helper error was returned or went with an error of its own.
        lock(&self.failed).take();
        self.done.store(0, Ordering::Relaxed);
        self.published.fetch_add(1, Ordering::Release);
        let mut mine = Taken::default();
        let r = {
            // The helpers finish this job whatever happens here, unwinding included, so
            // that none of them counts toward the next job.
            let _finish = AwaitHelpers(self);
            mine.take(&self.segments, 0, chunking, compute)
        };
        let helper_failed = lock(&self.failed).take();
        r?;
        if let Some(e) = helper_failed {
            return Err(e);
        }
        mine.place(&mut place);
        for rows in &self.rows {
            lock(rows).place(&mut place);
        }
        Ok(())
    }

    /// Ends the helpers' loops.
    fn stop(&self) {
        lock(&self.job).stop = true;
        self.published.fetch_add(1, Ordering::Release);
    }
}

/// Waits until the helpers are done with the published job, when dropped.
struct AwaitHelpers<'b, 'm>(&'b Board<'m>);

impl Drop for AwaitHelpers<'_, '_> {
    fn drop(&mut self) {
        let board = self.0;
        wait_until(|| board.done.load(Ordering::Acquire) == board.threads() - 1);
    }
}

/// Stops a board's helpers when dropped: after the steps, whether they returned or
/// unwound (else the helpers would spin on, and the scope that joins them never end).
pub(super) struct StopOnDrop<'b, 'm>(pub(super) &'b Board<'m>);

impl Drop for StopOnDrop<'_, '_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Rows of all of `mats`, one after the other.
fn total_rows(mats: &[&Linear<'_>]) -> usize {
    mats.iter().map(|w| w.shape().0).sum()
}

/// Spins, then yields, then sleeps (a helper between the steps of a team that the
/// caller keeps while it waits on something else), until `ready`.
fn wait_until(ready: impl Fn() -> bool) {
    let mut spins = 0u32;
    while !ready() {
        if spins < SPINS {
            std::hint::spin_loop();
        } else if spins < SPINS + YIELDS {
            std::thread::yield_now();
        } else {
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
        spins = spins.saturating_add(1);
    }
}

/// A lock that a panicked holder does not poison for the others (the data is plain
/// numbers, rewritten by every product).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value of a job is taken exactly once, the threads taking in turn (and
    /// some finishing their own segment before the others start).
    #[test]
    fn segments_hand_out_every_value_once() {
        for (threads, total, chunking) in [
            (2, 576, ROWS),
            (2, 49_152, ROWS),
            (3, 1000, ROWS),
            (4, 7, ROWS),
            (
                2,
                9 * 64,
                Chunking {
                    grain: 64,
                    most: 64,
                },
            ),
            (3, 0, ROWS),
        ] {
            let segments = Segments::new(threads);
            segments.split(total, chunking.grain).unwrap();
            let mut seen = vec![0u8; total];
            let mut turn = 0;
            let mut done = vec![false; threads];
            while done.iter().any(|d| !d) {
                // Thread 0 alone for a while, then all in turn.
                let me = if turn < 5 { 0 } else { turn % threads };
                turn += 1;
                if done[me] {
                    continue;
                }
                match segments.next(me, chunking) {
                    Some(chunk) => {
                        assert!(chunk.len() <= chunking.most.max(chunking.grain));
                        for v in &mut seen[chunk] {
                            *v += 1;
                        }
                    }
                    None => done[me] = true,
                }
            }
            assert!(
                seen.iter().all(|&v| v == 1),
                "{threads} threads, {total} values"
            );
        }
    }

    /// Real threads racing on the segments: every value once; chunks taken from the back
    /// start on the grain.
    #[test]
    fn segments_under_real_threads() {
        for total in [0usize, 7, 100, 960, 1000, 4099, 49_152] {
            for threads in 2..=4 {
                for _ in 0..10 {
                    let segments = Segments::new(threads);
                    segments.split(total, ROWS.grain).unwrap();
                    let seen: Vec<AtomicUsize> = (0..total).map(|_| AtomicUsize::new(0)).collect();
                    std::thread::scope(|s| {
                        for me in 0..threads {
                            let (segments, seen) = (&segments, &seen);
                            s.spawn(move || {
                                while let Some(chunk) = segments.next(me, ROWS) {
                                    assert!(chunk.start % ROWS.grain == 0, "{chunk:?}");
                                    for v in &seen[chunk] {
                                        v.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            });
                        }
                    });
                    assert!(
                        seen.iter().all(|v| v.load(Ordering::Relaxed) == 1),
                        "{total} values, {threads} threads"
                    );
                }
            }
        }
    }

    /// A job whose helper failed leaves nothing behind: the next job succeeds.
    #[test]
    fn a_failed_job_does_not_fail_the_next() {
        use crate::rtn::RtnSpec;
        let k = adpq_core::Scalar;
        let w = vec![0.5f32; 64 * 32];
        let rtn = Linear::Rtn {
            w: &w,
            rows: 64,
            cols: 32,
            spec: RtnSpec {
                bits: 4,
                group_size: 32,
                asymmetric: false,
            },
        };
        let dense = Linear::Dense {
            w: std::borrow::Cow::Borrowed(&w),
            rows: 64,
            cols: 32,
        };
        let caches: Vec<RwLock<KvCache>> = Vec::new();
        let board = Board::new(1, &caches);
        let x = vec![1f32; 32];
        let mut q8: [Q8Buffers; 3] = std::array::from_fn(|_| Q8Buffers::for_width(32));
        std::thread::scope(|scope| {
            let b = &board;
            let _stop = StopOnDrop(b);
            scope.spawn(move || b.help(k, 1, 32));
            let mut y = vec![0f32; 64];
            // Decoding refuses RTN weights, on the caller and the helper alike.
            assert!(board
                .product(k, &x, &mut [(&rtn, &mut y[..])], &mut q8)
                .is_err());
            board
                .product(k, &x, &mut [(&dense, &mut y[..])], &mut q8)
                .unwrap();
            assert!(y.iter().all(|&v| v == 16.0), "{y:?}");
        });
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_job_past_u32_is_an_error() {
        let segments = Segments::new(2);
        assert!(segments.split(1 << 33, 16).is_err());
    }
}
