//! The differentiable ops, one module each (forward kernel, backward kernel, the [`Tensor`]
//! op that records them, and their tests), plus the GEMM helpers they share.
//!
//! Determinism: kernels split the batch into fixed chunks of [`CHUNK`] samples, whatever the
//! number of threads; a reduction over the batch (a weight gradient) sums one partial per
//! chunk, in chunk order. So results are bit-identical with 1 or many threads.
//!
//! [`Tensor`]: crate::tensor::Tensor

pub mod adaptive_avg_pool2d;
pub mod avg_pool2d;
pub mod batch_norm;
pub mod conv2d;
pub mod cross_entropy;
pub mod dropout;
pub mod elementwise;
pub mod flatten;
pub mod linear;
pub mod log_softmax;
pub mod max_pool2d;
pub mod nll;
pub mod reduce;
pub mod relu;
pub mod reshape;
pub mod simd;

#[cfg(test)]
pub(crate) mod gradcheck;

pub use adaptive_avg_pool2d::adaptive_avg_pool2d;
pub use avg_pool2d::avg_pool2d;
pub use batch_norm::{batch_norm2d, batch_norm2d_relu};
pub use conv2d::{conv2d, conv2d_relu, conv2d_relu_max_pool2d, conv2d_relu_winograd};
pub use cross_entropy::cross_entropy;
pub use dropout::dropout;
pub use elementwise::{add, div, exp, log, mul, neg, pow, sqrt, sub};
pub use flatten::flatten;
pub use linear::{linear, matmul};
pub use log_softmax::log_softmax;
pub use max_pool2d::max_pool2d;
pub use nll::nll_loss;
pub use reduce::{argmax, max, mean, sum, var};
pub use relu::relu;

pub use reshape::reshape;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Samples per work item in batched kernels. Fixed, so reductions do not depend on threads.
pub const CHUNK: usize = 8;

/// Runs `f` on every work item (chunk j of a batch), in parallel when there is more than one.
/// Chunk j runs on thread j mod T of the pool, in every op and in the batch loader, so the
/// activations of a chunk's samples stay in the caches of the core that made them; a thread
/// that has run its own chunks then takes those another thread has not started (last first),
/// so a late or descheduled thread delays the op by at most the chunk it is running. Which
/// thread runs a chunk never changes its result.
/// A single item runs on the calling thread, which keeps batch-1 latency low.
pub fn for_each_chunk<T: Send>(items: Vec<T>, f: impl Fn(T) + Sync + Send) {
    let threads = rayon::current_num_threads();
    if items.len() == 1 || threads == 1 {
        items.into_iter().for_each(f);
        return;
    }
    let n = items.len();
    // A slot is claimed by taking its item: each item runs exactly once, on whichever thread
    // takes it first.
    let slots: Vec<std::sync::Mutex<Option<T>>> = items.into_iter().map(|t| std::sync::Mutex::new(Some(t))).collect();
    let done = AtomicUsize::new(0);
    let run_slot = |slot: &std::sync::Mutex<Option<T>>| {
        let item = slot.lock().map(|mut s| s.take()).unwrap_or(None);
        if let Some(item) = item {
            f(item);
            done.fetch_add(1, Ordering::Release);
        }
    };
    // One thread's part: its own chunks in order, then the unstarted chunks of the others, then
    // a short spin until the chunks others are running are done, so that the region ends on
    // both threads at once instead of one of them going to sleep (and being woken for the
    // next region, tens of microseconds on a VM): see [`END_SPIN`].
    let lane = || {
        let me = rayon::current_thread_index().unwrap_or(0) % threads;
        slots.iter().skip(me).step_by(threads).for_each(run_slot);
        slots.iter().rev().for_each(run_slot);
        let t0 = Instant::now();
        while done.load(Ordering::Acquire) < n && t0.elapsed() < END_SPIN {
            for _ in 0..16 {
                std::hint::spin_loop();
            }
        }
    };
    REGION.fetch_add(1, Ordering::Relaxed);
    // The other lanes are spawned onto this thread's deque: an idle (or warm-spinning) worker
    // steals one at once, and one nobody has stolen when this thread is done is run here,
    // finding nothing left to do (so no thread waits for a worker that is not running).
    rayon::scope(|s| {
        for _ in 1..threads.min(n) {
            s.spawn(|_| lane());
        }
        lane();
    });
    keep_workers_warm(threads);
}

/// Counts parallel regions; a warm-keeping spinner stops when it changes.
static REGION: AtomicU64 = AtomicU64::new(0);

/// How long idle workers spin waiting for the next parallel region.
const SPIN: Duration = Duration::from_micros(300);

/// The longest a thread spins at the end of a region for the chunks other threads are
/// finishing (about one chunk of the largest layer) before it waits in rayon, which lets it
/// sleep: on a busy machine the thread it waits for may have been preempted, and a core that
/// goes idle is where the scheduler can move that thread to.
const END_SPIN: Duration = Duration::from_micros(100);

/// Keeps the other workers busy-waiting for a short while after a parallel region, so the
/// next region (usually a few microseconds of serial work away: the next layer) starts at once
/// instead of waiting for a sleeping thread to be woken, like OpenMP's active wait policy.
/// A spinner ends as soon as the next region starts, or after [`SPIN`].
fn keep_workers_warm(threads: usize) {
    let region = REGION.load(Ordering::Relaxed);
    for _ in 1..threads {
        rayon::spawn(move || {
            let t0 = Instant::now();
            while REGION.load(Ordering::Relaxed) == region {
                for _ in 0..16 {
                    std::hint::spin_loop();
                }
                if t0.elapsed() > SPIN {
                    break;
                }
            }
        });
    }
}

/// C (m x n) = A (m x k) * B (k x n) + beta * C, all row-major, any strides through the
/// `t` flags: `ta` reads A as its transpose (A stored k x m), `tb` likewise for B.
#[allow(clippy::too_many_arguments)]
pub fn gemm(m: usize, k: usize, n: usize, a: &[f32], ta: bool, b: &[f32], tb: bool, beta: f32, c: &mut [f32]) {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "gemm: buffer sizes"
    );
    if m == 0 || n == 0 {
        return;
    }
    let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
    // SAFETY: the asserts above bound every index matrixmultiply reads or writes: A spans
    // m*k values, B k*n and C m*n, with the strides derived from those same dimensions.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// Index of the largest value of each row of a row-major (rows x cols) matrix.
pub fn argmax_rows(data: &[f32], cols: usize) -> Vec<usize> {
    data.chunks(cols)
        .map(|row| {
            let mut best = 0;
            for (j, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = j;
                }
            }
            best
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_matches_naive_for_every_transpose_flag() {
        let (m, k, n) = (3, 4, 5);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let at = |i: usize, p: usize| a[i * k + p];
        let bt = |p: usize, j: usize| b[p * n + j];
        let mut want = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                want[i * n + j] = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
            }
        }
        // transposed copies
        let a_t: Vec<f32> = (0..k * m).map(|q| at(q % m, q / m)).collect();
        let b_t: Vec<f32> = (0..n * k).map(|q| bt(q % k, q / k)).collect();
        for (aa, ta) in [(&a, false), (&a_t, true)] {
            for (bb, tb) in [(&b, false), (&b_t, true)] {
                let mut c = vec![1.0f32; m * n];
                gemm(m, k, n, aa, ta, bb, tb, 0.0, &mut c);
                for (x, y) in c.iter().zip(&want) {
                    assert!((x - y).abs() < 1e-5, "ta={ta} tb={tb}: {x} vs {y}");
                }
            }
        }
        let mut c = want.clone();
        gemm(m, k, n, &a, false, &b, false, 1.0, &mut c);
        for (x, y) in c.iter().zip(&want) {
            assert!((x - 2.0 * y).abs() < 1e-5, "beta=1 accumulates");
        }
    }

    #[test]
    fn every_chunk_runs_exactly_once_for_any_threads_and_items() {
        for threads in 1..=4 {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            for n in 1..=17 {
                let runs: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.install(|| {
                    for_each_chunk((0..n).collect(), |i: usize| {
                        runs[i].fetch_add(1, Ordering::Relaxed);
                    })
                });
                let counts: Vec<usize> = runs.iter().map(|r| r.load(Ordering::Relaxed)).collect();
                assert_eq!(counts, vec![1; n], "{threads} threads, {n} items");
            }
        }
    }

    #[test]
    fn a_stalled_thread_does_not_hold_up_the_chunks_it_has_not_started() {
        // Chunk 1 (thread 1's first) waits until all the others are done: they must be run by
        // the other thread, including thread 1's own chunks 3, 5 and 7.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let n = 8;
        let finished = AtomicUsize::new(0);
        let waited_out = std::sync::atomic::AtomicBool::new(false);
        pool.install(|| {
            for_each_chunk((0..n).collect(), |i: usize| {
                if i == 1 {
                    let t0 = Instant::now();
                    while finished.load(Ordering::Acquire) < n - 1 {
                        if t0.elapsed() > Duration::from_secs(10) {
                            waited_out.store(true, Ordering::Relaxed);
                            break;
                        }
                        std::thread::yield_now();
                    }
                }
                finished.fetch_add(1, Ordering::Release);
            })
        });
        assert!(
            !waited_out.load(Ordering::Relaxed),
            "the other chunks waited for the stalled one"
        );
        assert_eq!(finished.load(Ordering::Relaxed), n);
    }

    #[test]
    fn argmax_takes_the_first_of_ties() {
        assert_eq!(argmax_rows(&[1.0, 3.0, 3.0, 0.0, -1.0, -2.0], 3), vec![1, 0]);
    }
}
