//! The threads of one decoding step when there are several: helper threads that stay
//! awake for the whole step, spinning between jobs, and each take chunks of every job
//! until none are left. A job is a product (chunks of its matrices' rows) or a layer's
//! attention (a query head at a time).
//!
//! A step has about five jobs per layer, each a few tens of microseconds of work. A
//! thread pool's worker that falls asleep between them costs a wake-up per job, as
//! long as the job itself: with rayon regions two threads ran a step only 1.2×
//! faster than one. Here the calling thread publishes each job on a [`Board`] (its
//! matrices or layer, and a copy of its input), takes chunks as the helpers do
//! (a helper starts a little after the caller, so equal fixed shares left the caller
//! waiting), waits for the helpers and copies their values out. Each value does not
//! depend on the chunk or the thread that computes it, so the results are the same bits
//! for any number of threads.

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};

use adpq_core::CpuKernels;

use super::{attend, read, scatter, Heads, KvCache, Q8Buffers, RowProducts};
use crate::linear::Linear;
use crate::{EvalError, Result};

/// Spins before a waiting thread starts yielding its core (a few microseconds).
const SPINS: u32 = 1 << 12;

/// Rows a thread takes of a product at a time (a multiple of the kernels' block of 4):
/// SmolLM2's products are 576 to 49152 rows, so a few to a few hundred chunks.
const CHUNK: usize = 128;

/// What the calling thread shares with the helpers of one step.
pub(super) struct Board<'m> {
    /// Jobs published so far (a helper works when it sees a new one).
    published: AtomicUsize,
    /// Helpers done with the last published job.
    done: AtomicUsize,
    /// The next chunk of the published job to take.
    next: AtomicUsize,
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
    /// Takes chunks of `size` of `total` values from `next` until none are left,
    /// computing each with `compute`.
    fn take(
        &mut self,
        next: &AtomicUsize,
        total: usize,
        size: usize,
        mut compute: impl FnMut(Range<usize>, &mut [f32]) -> Result<()>,
    ) -> Result<()> {
        self.chunks.clear();
        self.values.clear();
        loop {
            let start = next.fetch_add(1, Ordering::Relaxed) * size;
            if start >= total {
                return Ok(());
            }
            let chunk = start..(start + size).min(total);
            let at = self.values.len();
            self.values.resize(at + chunk.len(), 0.0);
            compute(chunk.clone(), &mut self.values[at..])?;
            self.chunks.push(chunk);
        }
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
            next: AtomicUsize::new(0),
            job: Mutex::new(Job::default()),
            caches,
            rows: (0..helpers).map(|_| Mutex::new(Taken::default())).collect(),
            failed: Mutex::new(None),
        }
    }

    fn threads(&self) -> usize {
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
                    taken.take(&self.next, x.len(), a.heads.d, |chunk, out| {
                        a.heads(&x, &cache, chunk, out);
                        Ok(())
                    })
                }
                None => {
                    let mut products = RowProducts::new(k, &x, &mats, &mut q8);
                    taken.take(&self.next, total_rows(&mats), CHUNK, |chunk, out| {
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
            CHUNK,
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
            heads.d,
            |chunk, values| {
                a.heads(q, &cache, chunk, values);
                Ok(())
            },
            |first, values| out[first..first + values.len()].copy_from_slice(values),
        )
    }

    /// Publishes a job (`set` describes it, `x` its input), takes chunks of `size` of its
    /// `total` values as the helpers do (`compute` computes one here), waits for them and
    /// hands every chunk's values to `place`.
    fn run(
        &self,
        set: impl FnOnce(&mut Job<'m>),
        x: &[f32],
        total: usize,
        size: usize,
        compute: impl FnMut(Range<usize>, &mut [f32]) -> Result<()>,
        mut place: impl FnMut(usize, &[f32]),
    ) -> Result<()> {
        {
            let mut job = lock(&self.job);
            set(&mut job);
            job.x.clear();
            job.x.extend_from_slice(x);
        }
        self.done.store(0, Ordering::Relaxed);
        self.next.store(0, Ordering::Relaxed);
        self.published.fetch_add(1, Ordering::Release);
        let mut mine = Taken::default();
        let r = mine.take(&self.next, total, size, compute);
        // The helpers finish this job whatever happened here.
        wait_until(|| self.done.load(Ordering::Acquire) == self.threads() - 1);
        r?;
        if let Some(e) = lock(&self.failed).take() {
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

/// Stops a board's helpers when dropped: after the step, whether it returned or
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

/// Spins, then yields, until `ready`.
fn wait_until(ready: impl Fn() -> bool) {
    let mut spins = 0u32;
    while !ready() {
        if spins < SPINS {
            std::hint::spin_loop();
            spins += 1;
        } else {
            std::thread::yield_now();
        }
    }
}

/// A lock that a panicked holder does not poison for the others (the data is plain
/// numbers, rewritten by every product).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
