//! The inference queue of `mnist-cnn serve`: inference workers (threads, each with its own
//! instance of the shared weights, see [`crate::nn::SharedModel`]) take requests from one
//! bounded queue. A worker holds the queue while it gathers up to `max_batch` images or waits at
//! most `max_wait`, then lets it go and runs one batched forward for all of them while the next
//! worker gathers. A full queue is refused at once ([`Submit::Full`]): the server answers 503
//! instead of piling up work.
//!
//! The first worker takes every batch it can. The others are spares ([`Role::Spare`]): they
//! sleep until a backlog of at least `max_batch` jobs waits ([`QueueStats::spare_at`]), woken
//! by the request that makes it, so that they help when inference is what holds the requests
//! up (many small JSON requests) and leave the cores to the HTTP handlers and the image
//! preprocessing when that is the bottleneck (image uploads, whose queue stays short).
//!
//! Shapes: a job holds `rows` images of 784 values (N, 784), flattened; its answer is `rows`
//! rows of class probabilities (N, C).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
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
    /// The backlog (jobs waiting) at which the spare workers join in.
    pub spare_at: usize,
    /// Forward passes run by spare workers.
    pub spare_passes: AtomicUsize,
    /// Set when every [`Batcher`] is gone: the spares stop waiting for a backlog.
    closed: AtomicBool,
    /// Where the spares sleep until the backlog reaches `spare_at` (or the queue closes).
    backlog: (Mutex<()>, Condvar),
}

impl QueueStats {
    /// Stats of a queue whose spare workers join at a backlog of `spare_at` jobs.
    pub fn new(spare_at: usize) -> Self {
        QueueStats {
            depth: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            batch_sizes: Mutex::new(Histogram::new(&BATCH_BUCKETS)),
            spare_at: spare_at.max(1),
            spare_passes: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            backlog: (Mutex::new(()), Condvar::new()),
        }
    }

    /// Wakes the sleeping spares (their condition is checked under the lock, so a wake-up that
    /// comes between a spare's check and its sleep is not lost).
    fn wake_spares(&self) {
        drop(self.backlog.0.lock().unwrap_or_else(|e| e.into_inner()));
        self.backlog.1.notify_all();
    }

    /// Sleeps until the backlog reaches `spare_at` or the queue closes.
    fn wait_for_backlog(&self) {
        let mut g = self.backlog.0.lock().unwrap_or_else(|e| e.into_inner());
        while self.depth.load(Ordering::SeqCst) < self.spare_at && !self.closed.load(Ordering::SeqCst) {
            g = self.backlog.1.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Default for QueueStats {
    fn default() -> Self {
        QueueStats::new(1)
    }
}

/// What a worker of [`run_loop`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Takes every batch it can.
    First,
    /// Sleeps until a backlog of [`QueueStats::spare_at`] jobs waits, then takes a batch.
    Spare,
}

impl Role {
    /// The first worker, then spares.
    pub fn of(worker: usize) -> Role {
        if worker == 0 { Role::First } else { Role::Spare }
    }
}

/// Marks the queue closed for the spares when the last [`Batcher`] goes.
struct CloseOnDrop(Arc<QueueStats>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::SeqCst);
        self.0.wake_spares();
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
    _close: Arc<CloseOnDrop>,
}

impl Batcher {
    /// A queue of `cfg.queue` jobs, and its receiving end for the workers' [`run_loop`]s. The
    /// spare workers join at a backlog of `cfg.max_batch` jobs.
    pub fn new(cfg: &BatchConfig) -> (Batcher, Arc<Mutex<Receiver<Job>>>) {
        assert!(cfg.queue >= 1, "the queue holds at least one job");
        let (tx, rx) = sync_channel(cfg.queue);
        let stats = Arc::new(QueueStats::new(cfg.max_batch));
        let close = Arc::new(CloseOnDrop(stats.clone()));
        (
            Batcher {
                tx,
                stats,
                _close: close,
            },
            Arc::new(Mutex::new(rx)),
        )
    }

    /// Queues `rows` images (N, 784) without waiting.
    pub fn submit(&self, pixels: Vec<f32>, rows: usize) -> Submit {
        assert_eq!(pixels.len(), rows * PIXELS, "a job holds rows x 784 values");
        let (reply, rx) = oneshot::channel();
        // Counted before sending, so the thread never takes the depth below zero.
        let before = self.stats.depth.fetch_add(1, Ordering::SeqCst);
        match self.tx.try_send(Job { pixels, rows, reply }) {
            Ok(()) => {
                // Only the request that makes the backlog wakes the spares.
                if before + 1 == self.stats.spare_at {
                    self.stats.wake_spares();
                }
                Submit::Queued(rx)
            }
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
/// Several workers can share `rx`: one gathers while the others compute; a [`Role::Spare`]
/// only once a backlog waits (see the module header). `started` is called once the worker
/// counts as running (`/readyz` says ready).
pub fn run_loop(
    rx: &Mutex<Receiver<Job>>,
    cfg: &BatchConfig,
    stats: &QueueStats,
    role: Role,
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
            if role == Role::Spare {
                stats.wait_for_backlog();
            }
            // A worker that panicked while holding the queue left it whole: the jobs it took
            // are its own, so the others can go on.
            let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
            let first = match role {
                Role::First => rx.recv().ok(),
                // The backlog may be gone by now: a spare never waits on an empty queue.
                Role::Spare => match rx.try_recv() {
                    Ok(job) => Some(job),
                    Err(TryRecvError::Empty) => continue,
                    Err(TryRecvError::Disconnected) => None,
                },
            };
            let Some(first) = first else { break };
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
            if role == Role::Spare {
                stats.spare_passes.fetch_add(1, Ordering::Relaxed);
            }
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
        run_loop(&rx, &c, &stats, Role::First, || {}, echo);
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
        run_loop(&rx, &c, &stats, Role::First, || {}, echo);
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
        let replies: Vec<_> = (0..48).map(|i| queue_one(&b, i as f32)).collect();
        let stats = b.stats.clone();
        drop(b);
        // The first worker and a spare; each pass waits a little, so both get work while the
        // backlog (48 jobs, the spares join at 4) lasts.
        let passes: Vec<usize> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..2)
                .map(|i| {
                    let (rx, stats) = (&rx, &stats);
                    s.spawn(move || {
                        let mut passes = 0;
                        run_loop(
                            rx,
                            &c,
                            stats,
                            Role::of(i),
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
        assert_eq!(stats.spare_passes.load(Ordering::SeqCst), passes[1]);
    }

    /// Submits one image, returning its answer's receiver.
    fn queue_one(b: &Batcher, v: f32) -> oneshot::Receiver<Answer> {
        match b.submit(image(v, 1), 1) {
            Submit::Queued(r) => r,
            _ => panic!("queued"),
        }
    }

    #[test]
    fn a_spare_sleeps_below_the_backlog_joins_at_it_and_ends_with_the_queue() {
        let c = cfg(3, 64);
        let (b, rx) = Batcher::new(&c);
        assert_eq!(b.stats.spare_at, 3);
        let stats = b.stats.clone();
        let (passes_tx, passes) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            let (rx, stats) = (&rx, &stats);
            let spare = s.spawn(move || {
                run_loop(
                    rx,
                    &c,
                    stats,
                    Role::Spare,
                    || {},
                    |x, n| {
                        passes_tx.send(n).unwrap();
                        echo(x, n)
                    },
                )
            });
            // Two jobs are below the backlog of 3: the spare leaves them alone.
            let r1 = queue_one(&b, 0.1);
            let r2 = queue_one(&b, 0.2);
            std::thread::sleep(Duration::from_millis(100));
            assert!(passes.try_recv().is_err(), "the spare took jobs below the backlog");
            assert_eq!(stats.depth.load(Ordering::SeqCst), 2);
            // The third makes the backlog: the spare wakes and takes all three in one pass.
            let r3 = queue_one(&b, 0.3);
            assert_eq!(passes.recv_timeout(Duration::from_secs(10)).unwrap(), 3);
            for (r, v) in [(r1, 0.1), (r2, 0.2), (r3, 0.3)] {
                assert_eq!(r.blocking_recv().unwrap().unwrap(), vec![vec![v; 10]]);
            }
            // Closing the queue ends the sleeping spare.
            drop(b);
            spare.join().unwrap();
        });
        assert_eq!(stats.spare_passes.load(Ordering::SeqCst), 1);
        assert_eq!(stats.running.load(Ordering::SeqCst), 0);
    }
}
