//! The inference queue of `mnist-cnn serve`: inference workers (threads, each with its own
//! instance of the shared weights, see [`crate::nn::SharedModel`]) take requests from one
//! bounded queue. A worker holds the queue while it gathers up to `max_batch` images or waits at
//! most `max_wait`, then lets it go and runs one batched forward for all of them while the next
//! worker gathers. A full queue is refused at once ([`Submit::Full`]): the server answers 503
//! instead of piling up work.
//!
//! Shapes: a job holds `rows` images of 784 values (N, 784), flattened; its answer is `rows`
//! rows of class probabilities (N, C).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::serve::metrics::{BATCH_BUCKETS, Histogram};

/// Values per image (28x28).
pub const PIXELS: usize = 784;

/// Class probabilities of each row of a job, or why they could not be computed.
pub type Answer = Result<Vec<Vec<f32>>, String>;

/// One request: `rows` images (N, 784) and where its answer goes.
pub struct Job {
    pub pixels: Vec<f32>,
    pub rows: usize,
    pub reply: oneshot::Sender<Answer>,
}

/// How the inference workers batch.
#[derive(Clone, Copy, Debug)]
pub struct BatchConfig {
    /// The most images in one forward pass (a larger job is cut into passes of this size).
    pub max_batch: usize,
    /// How long the thread waits for more requests after the first one of a batch.
    pub max_wait: Duration,
    /// Jobs that can wait in the queue.
    pub queue: usize,
}

/// What the queue reports: its depth, the sizes of the forward passes run, how many inference
/// workers are running.
pub struct QueueStats {
    /// Jobs waiting in the queue.
    pub depth: AtomicUsize,
    /// Inference workers in their loop.
    pub running: AtomicUsize,
    /// The size (images) of each forward pass, as counts per histogram bucket.
    pub batch_sizes: Mutex<Histogram>,
}

impl Default for QueueStats {
    fn default() -> Self {
        QueueStats {
            depth: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            batch_sizes: Mutex::new(Histogram::new(&BATCH_BUCKETS)),
        }
    }
}

/// The result of [`Batcher::submit`].
pub enum Submit {
    /// Queued: the answer comes on the receiver.
    Queued(oneshot::Receiver<Answer>),
    /// The queue is full: try again later.
    Full,
    /// Every inference worker has stopped.
    Stopped,
}

/// The requests' end of the queue (cheap to clone).
#[derive(Clone)]
pub struct Batcher {
    tx: SyncSender<Job>,
    pub stats: Arc<QueueStats>,
}

impl Batcher {
    /// A queue of `cfg.queue` jobs, and its receiving end for the workers' [`run_loop`]s.
    pub fn new(cfg: &BatchConfig) -> (Batcher, Arc<Mutex<Receiver<Job>>>) {
        assert!(cfg.queue >= 1, "the queue holds at least one job");
        let (tx, rx) = sync_channel(cfg.queue);
        let stats = Arc::new(QueueStats::default());
        (Batcher { tx, stats }, Arc::new(Mutex::new(rx)))
    }

    /// Queues `rows` images (N, 784) without waiting.
    pub fn submit(&self, pixels: Vec<f32>, rows: usize) -> Submit {
        assert_eq!(pixels.len(), rows * PIXELS, "a job holds rows x 784 values");
        let (reply, rx) = oneshot::channel();
        // Counted before sending, so the thread never takes the depth below zero.
        self.stats.depth.fetch_add(1, Ordering::SeqCst);
        match self.tx.try_send(Job { pixels, rows, reply }) {
            Ok(()) => Submit::Queued(rx),
            Err(e) => {
                self.stats.depth.fetch_sub(1, Ordering::SeqCst);
                match e {
                    TrySendError::Full(_) => Submit::Full,
                    TrySendError::Disconnected(_) => Submit::Stopped,
                }
            }
        }
    }
}

/// One inference worker's loop: until every [`Batcher`] is dropped, gathers jobs from `rx`
/// into batches of at most `cfg.max_batch` images (waiting at most `cfg.max_wait` after the
/// first) and answers each with `forward`'s rows: `forward(x, n)` gets n images (n, 784) and
/// returns n rows of probabilities. Jobs larger than `max_batch` are cut into several passes.
/// Several workers can share `rx`: one gathers while the others compute. `started` is called
/// once the worker counts as running (`/readyz` says ready).
pub fn run_loop(
    rx: &Mutex<Receiver<Job>>,
    cfg: &BatchConfig,
    stats: &QueueStats,
    started: impl FnOnce(),
    mut forward: impl FnMut(&[f32], usize) -> Vec<Vec<f32>>,
) {
    let max_batch = cfg.max_batch.max(1);
    /// Counts the worker out when the loop ends, by return or by panic.
    struct Running<'a>(&'a AtomicUsize);
    impl Drop for Running<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    stats.running.fetch_add(1, Ordering::SeqCst);
    let _running = Running(&stats.running);
    started();
    let take = |job: Job| {
        stats.depth.fetch_sub(1, Ordering::SeqCst);
        job
    };
    loop {
        let (jobs, rows) = {
            // A worker that panicked while holding the queue left it whole: the jobs it took
            // are its own, so the others can go on.
            let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
            let Ok(first) = rx.recv() else { break };
            let mut jobs = vec![take(first)];
            let mut rows = jobs[0].rows;
            let deadline = Instant::now() + cfg.max_wait;
            while rows < max_batch {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(job) => {
                        rows += job.rows;
                        jobs.push(take(job));
                    }
                    Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            (jobs, rows)
        };
        let x: Vec<f32> = jobs.iter().flat_map(|j| j.pixels.iter().copied()).collect();
        let mut probs = Vec::with_capacity(rows);
        for chunk in x.chunks(max_batch * PIXELS) {
            let n = chunk.len() / PIXELS;
            stats
                .batch_sizes
                .lock()
                .expect("the histogram lock is never poisoned")
                .observe(n as f64);
            probs.extend(forward(chunk, n));
        }
        assert_eq!(probs.len(), rows, "one row of probabilities per image");
        let mut probs = probs.into_iter();
        for job in jobs {
            let mine: Vec<Vec<f32>> = probs.by_ref().take(job.rows).collect();
            // A client that went away no longer waits for its answer.
            let _ = job.reply.send(Ok(mine));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max_batch: usize, queue: usize) -> BatchConfig {
        BatchConfig {
            max_batch,
            max_wait: Duration::from_millis(50),
            queue,
        }
    }

    /// A fake model: each image's probabilities are its first pixel, ten times.
    fn echo(x: &[f32], n: usize) -> Vec<Vec<f32>> {
        (0..n).map(|i| vec![x[i * PIXELS]; 10]).collect()
    }

    fn image(v: f32, rows: usize) -> Vec<f32> {
        vec![v; rows * PIXELS]
    }

    #[test]
    fn full_queue_is_refused_and_counted() {
        let c = cfg(4, 2);
        let (b, rx) = Batcher::new(&c);
        // No thread takes jobs yet: two fit, the third is refused.
        let r1 = b.submit(image(0.1, 1), 1);
        let r2 = b.submit(image(0.2, 1), 1);
        assert!(matches!(r1, Submit::Queued(_)) && matches!(r2, Submit::Queued(_)));
        assert!(matches!(b.submit(image(0.3, 1), 1), Submit::Full));
        assert_eq!(b.stats.depth.load(Ordering::SeqCst), 2);
        let stats = b.stats.clone();
        drop(b);
        run_loop(&rx, &c, &stats, || {}, echo);
        assert_eq!(stats.depth.load(Ordering::SeqCst), 0);
        for (r, v) in [(r1, 0.1), (r2, 0.2)] {
            let Submit::Queued(rx) = r else { unreachable!() };
            assert_eq!(rx.blocking_recv().unwrap().unwrap(), vec![vec![v; 10]]);
        }
        // Both waiting jobs went through one forward pass of two images.
        let h = stats.batch_sizes.lock().unwrap();
        assert_eq!((h.count, h.sum), (1, 2.0));
    }

    #[test]
    fn stopped_thread_is_reported() {
        let c = cfg(4, 1);
        let (b, rx) = Batcher::new(&c);
        drop(rx);
        assert!(matches!(b.submit(image(0.0, 1), 1), Submit::Stopped));
    }

    #[test]
    fn large_jobs_are_cut_into_passes_and_answers_keep_their_order() {
        let c = cfg(3, 4);
        let (b, rx) = Batcher::new(&c);
        let mut px = Vec::new();
        for i in 0..7 {
            px.extend(image(i as f32, 1));
        }
        let Submit::Queued(r) = b.submit(px, 7) else {
            panic!("queued")
        };
        let stats = b.stats.clone();
        drop(b);
        run_loop(&rx, &c, &stats, || {}, echo);
        let rows = r.blocking_recv().unwrap().unwrap();
        let firsts: Vec<f32> = rows.iter().map(|r| r[0]).collect();
        assert_eq!(firsts, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let h = stats.batch_sizes.lock().unwrap();
        // Passes of 3, 3 and 1 images.
        assert_eq!((h.count, h.sum), (3, 7.0));
        assert_eq!(stats.running.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn workers_share_the_queue_and_every_job_gets_its_own_answer() {
        let c = BatchConfig {
            max_batch: 4,
            max_wait: Duration::ZERO,
            queue: 64,
        };
        let (b, rx) = Batcher::new(&c);
        let replies: Vec<_> = (0..48)
            .map(|i| match b.submit(image(i as f32, 1), 1) {
                Submit::Queued(r) => r,
                _ => panic!("queued"),
            })
            .collect();
        let stats = b.stats.clone();
        drop(b);
        // Two workers; each pass waits a little, so both get work while the queue is full.
        let passes: Vec<usize> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let (rx, stats) = (&rx, &stats);
                    s.spawn(move || {
                        let mut passes = 0;
                        run_loop(
                            rx,
                            &c,
                            stats,
                            || {},
                            |x, n| {
                                passes += 1;
                                std::thread::sleep(Duration::from_millis(2));
                                echo(x, n)
                            },
                        );
                        passes
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert!(passes.iter().all(|&p| p > 0), "both workers ran passes: {passes:?}");
        assert_eq!(passes.iter().sum::<usize>(), 12, "48 images in passes of 4");
        for (i, r) in replies.into_iter().enumerate() {
            assert_eq!(r.blocking_recv().unwrap().unwrap(), vec![vec![i as f32; 10]]);
        }
        assert_eq!(stats.running.load(Ordering::SeqCst), 0);
        assert_eq!(stats.depth.load(Ordering::SeqCst), 0);
    }
}
