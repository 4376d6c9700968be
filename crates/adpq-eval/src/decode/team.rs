//! The threads of one decoding step when there are several: helper threads that stay
//! awake for the whole step, spinning between products, and each take chunks of every
//! product's rows until none are left.
//!
//! A step has about five products per layer, each a few tens of microseconds of work. A
//! thread pool's worker that falls asleep between them costs a wake-up per product, as
//! long as the product itself: with rayon regions two threads ran a step only 1.2×
//! faster than one. Here the calling thread publishes each product on a [`Board`] (its
//! matrices and a copy of its input), takes chunks of [`CHUNK`] rows as the helpers do
//! (a helper starts a little after the caller, so equal fixed shares left the caller
//! waiting), waits for the helpers and copies their rows out. Each row's value does not
//! depend on the chunk or the thread that computes it, so the results are the same bits
//! for any number of threads.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use adpq_core::CpuKernels;

use super::{scatter, Q8Buffers, RowProducts};
use crate::linear::Linear;
use crate::{EvalError, Result};

/// Spins before a waiting thread starts yielding its core (a few microseconds).
const SPINS: u32 = 1 << 12;

/// Rows a thread takes of a product at a time (a multiple of the kernels' block of 4):
/// SmolLM2's products are 576 to 49152 rows, so a few to a few hundred chunks.
const CHUNK: usize = 128;

/// What the calling thread shares with the helpers of one step.
pub(super) struct Board<'m> {
    /// Products published so far (a helper works when it sees a new one).
    published: AtomicUsize,
    /// Helpers done with the last published product.
    done: AtomicUsize,
    /// The next chunk of the published product's rows to take.
    next: AtomicUsize,
    job: Mutex<Job<'m>>,
    /// Each helper's rows of the last product.
    rows: Vec<Mutex<Taken>>,
    /// The first helper error (or panic) of the last product.
    failed: Mutex<Option<EvalError>>,
}

/// One product: the matrices (sharing their input) and the input.
#[derive(Default)]
struct Job<'m> {
    mats: Vec<&'m Linear<'m>>,
    x: Vec<f32>,
    stop: bool,
}

/// The chunks of a product's rows one thread took, and their values one after the other.
#[derive(Default)]
struct Taken {
    chunks: Vec<std::ops::Range<usize>>,
    values: Vec<f32>,
}

impl Taken {
    /// Takes chunks of `total` rows from `next` until none are left, computing them.
    fn take(
        &mut self,
        next: &AtomicUsize,
        total: usize,
        products: &mut RowProducts<'_, '_, impl CpuKernels>,
    ) -> Result<()> {
        self.chunks.clear();
        self.values.clear();
        loop {
            let start = next.fetch_add(1, Ordering::Relaxed) * CHUNK;
            if start >= total {
                return Ok(());
            }
            let chunk = start..(start + CHUNK).min(total);
            let at = self.values.len();
            self.values.resize(at + chunk.len(), 0.0);
            products.rows(chunk.clone(), &mut self.values[at..])?;
            self.chunks.push(chunk);
        }
    }

    /// Copies the chunks' values into the outputs.
    fn scatter(&self, outs: &mut [(&Linear<'_>, &mut [f32])]) {
        let mut at = 0;
        for chunk in &self.chunks {
            scatter(outs, chunk.start, &self.values[at..at + chunk.len()]);
            at += chunk.len();
        }
    }
}

impl<'m> Board<'m> {
    /// A board for `helpers` helper threads.
    pub(super) fn new(helpers: usize) -> Self {
        Board {
            published: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            job: Mutex::new(Job::default()),
            rows: (0..helpers).map(|_| Mutex::new(Taken::default())).collect(),
            failed: Mutex::new(None),
        }
    }

    fn threads(&self) -> usize {
        self.rows.len() + 1
    }

    /// Runs helper `h` (of `1..threads`) until [`stop`](Self::stop): chunks of each
    /// product's rows.
    pub(super) fn help<K: CpuKernels>(&self, k: K, h: usize, widest: usize) {
        let mut q8: [Q8Buffers; 3] = std::array::from_fn(|_| Q8Buffers::for_width(widest));
        let (mut seen, mut x, mut mats, mut taken) = (0, Vec::new(), Vec::new(), Taken::default());
        loop {
            wait_until(|| self.published.load(Ordering::Acquire) != seen);
            seen = self.published.load(Ordering::Acquire);
            {
                let job = lock(&self.job);
                if job.stop {
                    return;
                }
                x.clone_from(&job.x);
                mats.clone_from(&job.mats);
            }
            let r = catch_unwind(AssertUnwindSafe(|| {
                let mut products = RowProducts::new(k, &x, &mats, &mut q8);
                taken.take(&self.next, total_rows(&mats), &mut products)
            }))
            .unwrap_or_else(|_| Err(EvalError::Shape("a decoding thread panicked".into())));
            match r {
                Ok(()) => std::mem::swap(&mut *lock(&self.rows[h - 1]), &mut taken),
                Err(e) => {
                    // No rows of an earlier product may be scattered later.
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
        {
            let mut job = lock(&self.job);
            job.mats.clear();
            job.mats.extend(outs.iter().map(|(w, _)| *w));
            job.x.clear();
            job.x.extend_from_slice(x);
        }
        self.done.store(0, Ordering::Relaxed);
        self.next.store(0, Ordering::Relaxed);
        self.published.fetch_add(1, Ordering::Release);
        let mats: Vec<&Linear<'_>> = outs.iter().map(|(w, _)| *w).collect();
        let mut mine = Taken::default();
        let r = mine.take(
            &self.next,
            total_rows(&mats),
            &mut RowProducts::new(k, x, &mats, q8),
        );
        // The helpers finish this product whatever happened here.
        wait_until(|| self.done.load(Ordering::Acquire) == self.threads() - 1);
        r?;
        if let Some(e) = lock(&self.failed).take() {
            return Err(e);
        }
        mine.scatter(outs);
        for rows in &self.rows {
            lock(rows).scatter(outs);
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
