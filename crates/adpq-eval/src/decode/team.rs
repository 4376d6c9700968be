//! The threads of one decoding step when there are several: helper threads that stay
//! awake for the whole step, spinning between products, and each compute their share of
//! every product's rows.
//!
//! A step has about five products per layer, each a few tens of microseconds of work. A
//! thread pool's worker that falls asleep between them costs a wake-up per product, as
//! long as the product itself: with rayon regions two threads ran a step only 1.2×
//! faster than one. Here the calling thread publishes each product on a [`Board`] (its
//! matrices and a copy of its input), computes share 0 of the rows, waits for the helpers
//! and copies their rows out. Each row is computed by the same call whichever thread
//! computes it, so the results are the same bits for any number of threads.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use adpq_core::CpuKernels;

use super::{product_rows, scatter, Q8Buffers};
use crate::linear::Linear;
use crate::{EvalError, Result};

/// Spins before a waiting thread starts yielding its core (a few microseconds).
const SPINS: u32 = 1 << 12;

/// What the calling thread shares with the helpers of one step.
pub(super) struct Board<'m> {
    /// Products published so far (a helper works when it sees a new one).
    published: AtomicUsize,
    /// Helpers done with the last published product.
    done: AtomicUsize,
    job: Mutex<Job<'m>>,
    /// Each helper's rows of the last product.
    rows: Vec<Mutex<Vec<f32>>>,
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

impl<'m> Board<'m> {
    /// A board for `helpers` helper threads.
    pub(super) fn new(helpers: usize) -> Self {
        Board {
            published: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            job: Mutex::new(Job::default()),
            rows: (0..helpers).map(|_| Mutex::new(Vec::new())).collect(),
            failed: Mutex::new(None),
        }
    }

    fn threads(&self) -> usize {
        self.rows.len() + 1
    }

    /// Runs helper `h` (of `1..threads`) until [`stop`](Self::stop): each product's
    /// share `h` of the rows.
    pub(super) fn help<K: CpuKernels>(&self, k: K, h: usize, widest: usize) {
        let mut q8: [Q8Buffers; 3] = std::array::from_fn(|_| Q8Buffers::for_width(widest));
        let (mut seen, mut x, mut mats, mut out) = (0, Vec::new(), Vec::new(), Vec::new());
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
            let share = share(total_rows(&mats), h, self.threads());
            out.resize(share.len(), 0.0);
            let r = catch_unwind(AssertUnwindSafe(|| {
                product_rows(k, &x, &mats, share.clone(), &mut out, &mut q8)
            }))
            .unwrap_or_else(|_| Err(EvalError::Shape("a decoding thread panicked".into())));
            match r {
                Ok(()) => std::mem::swap(&mut *lock(&self.rows[h - 1]), &mut out),
                Err(e) => {
                    lock(&self.failed).get_or_insert(e);
                }
            }
            self.done.fetch_add(1, Ordering::Release);
        }
    }

    /// `y_i = W_i x` for the matrices of `outs` (sharing `x`): share 0 here, the others
    /// by the helpers.
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
        self.published.fetch_add(1, Ordering::Release);
        let mats: Vec<&Linear<'_>> = outs.iter().map(|(w, _)| *w).collect();
        let threads = self.threads();
        let mine = share(total_rows(&mats), 0, threads);
        let mut out = vec![0f32; mine.len()];
        let r = product_rows(k, x, &mats, mine.clone(), &mut out, q8);
        // The helpers finish this product whatever happened here.
        wait_until(|| self.done.load(Ordering::Acquire) == threads - 1);
        r?;
        if let Some(e) = lock(&self.failed).take() {
            return Err(e);
        }
        scatter(outs, mine.start, &out);
        for (h, rows) in self.rows.iter().enumerate() {
            scatter(
                outs,
                share(total_rows(&mats), h + 1, threads).start,
                &lock(rows),
            );
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

/// Share `s` of `threads` of `rows` rows: whole blocks of 4 rows (the kernels' block).
fn share(rows: usize, s: usize, threads: usize) -> std::ops::Range<usize> {
    let per = rows.div_ceil(threads).next_multiple_of(4);
    (s * per).min(rows)..((s + 1) * per).min(rows)
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
