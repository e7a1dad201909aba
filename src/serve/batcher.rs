//! The inference queue of `mnist-cnn serve`: inference workers (threads, each with its own
//! instance of the shared weights, see [`crate::nn::SharedModel`]) take requests from one
//! bounded queue. A worker holds the queue while it gathers up to `max_batch` images or waits at
//! most `max_wait`, then lets it go and runs one batched forward for all of them while the next
//! worker gathers. A full queue is refused at once ([`Submit::Full`]): the server answers 503
//! instead of piling up work.
//!
//! A job holds images ready for the network ([`Input::Pixels`]) or an uploaded image file
//! ([`Input::Upload`]), which the worker that takes it decodes and prepares before the pass.
//! So an upload waits in one queue, in order, where it used to wait twice: for a thread of
//! tokio's blocking pool to prepare it, then for a worker. With the worker's yield before each
//! upload (see [`run_loop`]) and gray files decoded gray, at 64 connections on 2 cores (the
//! pen-drawn 7 as a PNG, alternating 4 s runs against the blocking-pool design): `bncnn`
//! 9,288-9,442 requests/s with p99 8.3-9.3 ms, against 8,232-8,451 with p99 13.9-14.3 ms; cnn
//! 11,992-12,224 with p99 6.5 ms, against 9,914-10,210 with p99 11.4-11.5 ms. At 8 connections
//! 6,685-6,883 against 6,517-6,617 (`bncnn`); JSON requests as before.
//!
//! The first worker takes every batch it can. The others are spares ([`Role::Spare`]): they
//! sleep until a backlog waits ([`QueueStats::spare_at`]: `max_batch` images ready for the
//! network, an upload counting as [`UPLOAD_WEIGHT`] of them), woken by the request that makes
//! it, so that they help when inference (or preparing uploads) is what holds the requests up,
//! and leave the cores to the HTTP handlers otherwise.
//!
//! Shapes: a job holds `rows` images of 784 values (N, 784), flattened; its answer is `rows`
//! rows of class probabilities (N, C).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use image::GrayImage;
use tokio::sync::oneshot;

use crate::serve::api::ApiError;
use crate::serve::metrics::{BATCH_BUCKETS, Histogram};

/// Values per image (28x28).
pub const PIXELS: usize = 784;

/// How much an upload weighs in the backlog that wakes the spares, in images ready for the
/// network: preparing one takes about as long as a forward pass of several. Two waiting
/// uploads wake a spare at the default `--max-batch` of 16.
pub const UPLOAD_WEIGHT: usize = 8;

/// What a job asks to be predicted.
pub enum Input {
    /// Images ready for the network: N x 784 values (N, 784).
    Pixels(Vec<f32>),
    /// One image file's bytes, decoded and prepared (as `predict` prepares it) by the worker.
    Upload(Vec<u8>),
}

impl Input {
    /// The images the job holds.
    fn rows(&self) -> usize {
        match self {
            Input::Pixels(px) => px.len() / PIXELS,
            Input::Upload(_) => 1,
        }
    }

    /// Its weight in the backlog that wakes the spares: its images, an upload [`UPLOAD_WEIGHT`].
    fn weight(&self) -> usize {
        match self {
            Input::Pixels(_) => self.rows(),
            Input::Upload(_) => UPLOAD_WEIGHT,
        }
    }
}

/// A job's answer: class probabilities of each of its images, and for an upload the 28x28
/// image the network saw.
#[derive(Debug)]
pub struct Output {
    pub probs: Vec<Vec<f32>>,
    pub seen: Option<GrayImage>,
}

/// The answer, or why there is none (an upload that cannot be read or holds no digit).
pub type Answer = Result<Output, ApiError>;

/// One request: what to predict and where its answer goes.
pub struct Job {
    pub input: Input,
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
    /// Their weight ([`Input`]'s: images, an upload counting as [`UPLOAD_WEIGHT`]).
    backlog_weight: AtomicUsize,
    /// Inference workers in their loop.
    pub running: AtomicUsize,
    /// The size (images) of each forward pass, as counts per histogram bucket.
    pub batch_sizes: Mutex<Histogram>,
    /// The backlog (the weight of the jobs waiting) at which the spare workers join in.
    pub spare_at: usize,
    /// Forward passes run by spare workers.
    pub spare_passes: AtomicUsize,
    /// Set when every [`Batcher`] is gone: the spares stop waiting for a backlog.
    closed: AtomicBool,
    /// Where the spares sleep until the backlog reaches `spare_at` (or the queue closes).
    backlog: (Mutex<()>, Condvar),
}

impl QueueStats {
    /// Stats of a queue whose spare workers join at a backlog of `spare_at` (its weight, see
    /// [`Input`]).
    pub fn new(spare_at: usize) -> Self {
        QueueStats {
            depth: AtomicUsize::new(0),
            backlog_weight: AtomicUsize::new(0),
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
        while self.backlog_weight.load(Ordering::SeqCst) < self.spare_at && !self.closed.load(Ordering::SeqCst) {
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
    /// Sleeps until a backlog of [`QueueStats::spare_at`] waits, then takes a batch.
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
    /// spare workers join at a backlog of `cfg.max_batch` images (see [`UPLOAD_WEIGHT`]).
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

    /// Queues a job without waiting.
    pub fn submit(&self, input: Input) -> Submit {
        if let Input::Pixels(px) = &input {
            assert!(
                !px.is_empty() && px.len().is_multiple_of(PIXELS),
                "a job holds N x 784 values, N >= 1"
            );
        }
        let weight = input.weight();
        let (reply, rx) = oneshot::channel();
        // Counted before sending, so the thread never takes the depth below zero.
        self.stats.depth.fetch_add(1, Ordering::SeqCst);
        let before = self.stats.backlog_weight.fetch_add(weight, Ordering::SeqCst);
        match self.tx.try_send(Job { input, reply }) {
            Ok(()) => {
                // Only the request that makes the backlog wakes the spares.
                if before < self.stats.spare_at && before + weight >= self.stats.spare_at {
                    self.stats.wake_spares();
                }
                Submit::Queued(rx)
            }
            Err(e) => {
                self.stats.depth.fetch_sub(1, Ordering::SeqCst);
                let after = self.stats.backlog_weight.fetch_sub(weight, Ordering::SeqCst) - weight;
                // Submits made meanwhile saw this one's weight counted and woke no one: the
                // backlog may stand at the threshold without its wake-up.
                if after >= self.stats.spare_at {
                    self.stats.wake_spares();
                }
                match e {
                    TrySendError::Full(_) => Submit::Full,
                    TrySendError::Disconnected(_) => Submit::Stopped,
                }
            }
        }
    }
}

/// A prepared upload as the network takes it: 28x28, else a 500 that says what size it was
/// (a preprocessing bug; the batch's other images are not shifted by it). Both ways an upload
/// is prepared (here, and on the blocking pool in [`crate::serve::api`]) check it.
pub(crate) fn network_sized(img: GrayImage) -> Result<GrayImage, ApiError> {
    if img.dimensions() == (28, 28) {
        return Ok(img);
    }
    let (w, h) = img.dimensions();
    let why = format!("preprocessing failed: a {w}x{h} image, not 28x28");
    Err(ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, why))
}

/// `prepare(bytes)`, with a panic (a bug that some image reaches) made that upload's 500
/// instead of the end of the worker: the other requests, and the next ones, are served.
fn prepare_caught(
    prepare: &mut impl FnMut(&[u8]) -> Result<GrayImage, ApiError>,
    bytes: &[u8],
) -> Result<GrayImage, ApiError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| prepare(bytes))).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Err(ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("preprocessing failed: {why}"),
        ))
    })
}

/// One inference worker's loop: until every [`Batcher`] is dropped, gathers jobs from `rx`
/// into batches of at most `cfg.max_batch` images (waiting at most `cfg.max_wait` after the
/// first), prepares the uploads among them with `prepare` (an error is that job's answer), and
/// answers each job with `forward`'s rows: `forward(x, n)` gets n images (n, 784) and returns n
/// rows of probabilities. Jobs larger than `max_batch` are cut into several passes.
/// Several workers can share `rx`: one gathers while the others compute; a [`Role::Spare`]
/// only once a backlog waits (see the module header). `started` is called once the worker
/// counts as running (`/readyz` says ready).
pub fn run_loop(
    rx: &Mutex<Receiver<Job>>,
    cfg: &BatchConfig,
    stats: &QueueStats,
    role: Role,
    started: impl FnOnce(),
    mut prepare: impl FnMut(&[u8]) -> Result<GrayImage, ApiError>,
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
        stats.backlog_weight.fetch_sub(job.input.weight(), Ordering::SeqCst);
        job
    };
    loop {
        let jobs = {
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
                    // (Or the jobs counted are still being sent: their senders get the core.)
                    Err(TryRecvError::Empty) => {
                        drop(rx);
                        std::thread::yield_now();
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => None,
                },
            };
            let Some(first) = first else { break };
            let mut jobs = vec![take(first)];
            let mut rows = jobs[0].input.rows();
            let deadline = Instant::now() + cfg.max_wait;
            while rows < max_batch {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(job) => {
                        rows += job.input.rows();
                        jobs.push(take(job));
                    }
                    Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            jobs
        };
        // The uploads prepared, in order, outside the queue's lock; one that fails is answered
        // with its error and leaves the batch.
        let mut ready = Vec::with_capacity(jobs.len());
        let mut x = Vec::new();
        for job in jobs {
            let seen = match &job.input {
                Input::Pixels(px) => {
                    x.extend_from_slice(px);
                    None
                }
                // A client that went away no longer waits: its upload is not prepared.
                Input::Upload(_) if job.reply.is_closed() => continue,
                Input::Upload(bytes) => {
                    // Before each upload (a tenth of a millisecond or more), the HTTP threads
                    // get the core if they wait for it: to send the answers of the last pass
                    // (this worker's or another's), to read requests. Without it, the woken
                    // HTTP threads waited for the end of the worker's slice: `bncnn`'s PNG p99
                    // at 64 connections was 10.0-10.5 ms, against 8.1-9.1 ms with it. (A
                    // yield after every pass instead cost JSON at 1,000 connections 2-12%.)
                    std::thread::yield_now();
                    let prepared = prepare_caught(&mut prepare, bytes).and_then(network_sized);
                    match prepared {
                        Ok(img) => {
                            x.extend(crate::predict::network_input(&img));
                            Some(img)
                        }
                        Err(e) => {
                            // A client that went away no longer waits for its answer.
                            let _ = job.reply.send(Err(e));
                            continue;
                        }
                    }
                }
            };
            ready.push((job.input.rows(), seen, job.reply));
        }
        let rows = x.len() / PIXELS;
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
        for (rows, seen, reply) in ready {
            let probs = probs.by_ref().take(rows).collect();
            let _ = reply.send(Ok(Output { probs, seen }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::Sender;

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

    fn image(v: f32, rows: usize) -> Input {
        Input::Pixels(vec![v; rows * PIXELS])
    }

    /// A fake preparation: a 28x28 image of the upload's first byte; an empty upload has no
    /// digit (422).
    fn fill(bytes: &[u8]) -> Result<GrayImage, ApiError> {
        match bytes.first() {
            Some(&b) => Ok(GrayImage::from_pixel(28, 28, image::Luma([b]))),
            None => Err(ApiError::new(axum::http::StatusCode::UNPROCESSABLE_ENTITY, "no digit")),
        }
    }

    /// The probabilities of an answer.
    fn probs(r: oneshot::Receiver<Answer>) -> Vec<Vec<f32>> {
        r.blocking_recv().unwrap().unwrap().probs
    }

    #[test]
    fn full_queue_is_refused_and_counted() {
        let c = cfg(4, 2);
        let (b, rx) = Batcher::new(&c);
        // No thread takes jobs yet: two fit, the third is refused.
        let r1 = b.submit(image(0.1, 1));
        let r2 = b.submit(image(0.2, 1));
        assert!(matches!(r1, Submit::Queued(_)) && matches!(r2, Submit::Queued(_)));
        assert!(matches!(b.submit(image(0.3, 1)), Submit::Full));
        assert_eq!(b.stats.depth.load(Ordering::SeqCst), 2);
        assert_eq!(b.stats.backlog_weight.load(Ordering::SeqCst), 2);
        let stats = b.stats.clone();
        drop(b);
        run_loop(&rx, &c, &stats, Role::First, || {}, fill, echo);
        assert_eq!(stats.depth.load(Ordering::SeqCst), 0);
        for (r, v) in [(r1, 0.1), (r2, 0.2)] {
            let Submit::Queued(rx) = r else { unreachable!() };
            assert_eq!(probs(rx), vec![vec![v; 10]]);
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
        assert!(matches!(b.submit(image(0.0, 1)), Submit::Stopped));
    }

    #[test]
    fn large_jobs_are_cut_into_passes_and_answers_keep_their_order() {
        let c = cfg(3, 4);
        let (b, rx) = Batcher::new(&c);
        let px = (0..7).flat_map(|i| vec![i as f32; PIXELS]).collect();
        let Submit::Queued(r) = b.submit(Input::Pixels(px)) else {
            panic!("queued")
        };
        let stats = b.stats.clone();
        drop(b);
        run_loop(&rx, &c, &stats, Role::First, || {}, fill, echo);
        let rows = probs(r);
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
                            fill,
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
            assert_eq!(probs(r), vec![vec![i as f32; 10]]);
        }
        assert_eq!(stats.running.load(Ordering::SeqCst), 0);
        assert_eq!(stats.depth.load(Ordering::SeqCst), 0);
        assert_eq!(stats.spare_passes.load(Ordering::SeqCst), passes[1]);
    }

    /// Submits a job, returning its answer's receiver.
    fn queued(b: &Batcher, input: Input) -> oneshot::Receiver<Answer> {
        match b.submit(input) {
            Submit::Queued(r) => r,
            _ => panic!("queued"),
        }
    }

    /// Submits one image of value `v`.
    fn queue_one(b: &Batcher, v: f32) -> oneshot::Receiver<Answer> {
        queued(b, image(v, 1))
    }

    /// Queues `inputs` (batches of at most `max_batch` images, a queue that holds them all),
    /// closes the queue and runs a first worker with `prepare` and the fake model until it ends;
    /// each job's answer, in order, and the queue's stats.
    fn run_first(
        max_batch: usize,
        inputs: Vec<Input>,
        prepare: impl FnMut(&[u8]) -> Result<GrayImage, ApiError>,
    ) -> (Vec<oneshot::Receiver<Answer>>, Arc<QueueStats>) {
        let c = cfg(max_batch, inputs.len());
        let (b, rx) = Batcher::new(&c);
        let answers = inputs.into_iter().map(|input| queued(&b, input)).collect();
        let stats = b.stats.clone();
        drop(b);
        run_loop(&rx, &c, &stats, Role::First, || {}, prepare, echo);
        (answers, stats)
    }

    /// A spare worker's loop with the fake preparation and model, telling each pass's size.
    fn spare_loop(rx: &Mutex<Receiver<Job>>, c: &BatchConfig, stats: &QueueStats, passes: Sender<usize>) {
        run_loop(
            rx,
            c,
            stats,
            Role::Spare,
            || {},
            fill,
            |x, n| {
                passes.send(n).unwrap();
                echo(x, n)
            },
        )
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
            let spare = s.spawn(move || spare_loop(rx, &c, stats, passes_tx));
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
                assert_eq!(probs(r), vec![vec![v; 10]]);
            }
            // Closing the queue ends the sleeping spare.
            drop(b);
            spare.join().unwrap();
        });
        assert_eq!(stats.spare_passes.load(Ordering::SeqCst), 1);
        assert_eq!(stats.running.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn uploads_are_prepared_in_their_batch_and_a_failed_one_is_answered_alone() {
        let inputs = vec![
            image(0.25, 1),
            Input::Upload(vec![128]),
            Input::Upload(vec![]),
            image(0.75, 2),
        ];
        let (answers, stats) = run_first(8, inputs, fill);
        let [r1, r2, r3, r4] = answers.try_into().expect("four answers");
        // The upload's pixels are its prepared image's (128 / 256 = 0.5), between its batch
        // mates, and its answer brings that image.
        assert_eq!(r1.blocking_recv().unwrap().unwrap().probs, vec![vec![0.25; 10]]);
        let up = r2.blocking_recv().unwrap().unwrap();
        assert_eq!(up.probs, vec![vec![0.5; 10]]);
        assert_eq!(up.seen.expect("the prepared image").as_raw(), &vec![128u8; PIXELS]);
        let failed = r3.blocking_recv().unwrap().unwrap_err();
        assert_eq!((failed.status.as_u16(), failed.message.as_str()), (422, "no digit"));
        let last = r4.blocking_recv().unwrap().unwrap();
        assert_eq!((last.probs, last.seen.is_none()), (vec![vec![0.75; 10]; 2], true));
        // One pass of the four images that were ready.
        let h = stats.batch_sizes.lock().unwrap();
        assert_eq!((h.count, h.sum), (1, 4.0));
        assert_eq!(stats.backlog_weight.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn two_uploads_wake_a_spare_where_two_images_do_not() {
        // A backlog of 16 images: two ready images are below it, two uploads (8 each) reach it.
        let c = cfg(16, 64);
        let (b, rx) = Batcher::new(&c);
        let stats = b.stats.clone();
        let (passes_tx, passes) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            let (rx, stats) = (&rx, &stats);
            let spare = s.spawn(move || spare_loop(rx, &c, stats, passes_tx));
            let ready = [queue_one(&b, 0.1), queue_one(&b, 0.2)];
            std::thread::sleep(Duration::from_millis(100));
            assert!(passes.try_recv().is_err(), "the spare took two images");
            assert_eq!(stats.backlog_weight.load(Ordering::SeqCst), 2);
            let uploads: Vec<_> = [vec![64u8], vec![192u8]]
                .into_iter()
                .map(|u| queued(&b, Input::Upload(u)))
                .collect();
            // The second upload makes the backlog: all four go in one pass.
            assert_eq!(passes.recv_timeout(Duration::from_secs(10)).unwrap(), 4);
            let got: Vec<f32> = ready.into_iter().chain(uploads).map(|r| probs(r)[0][0]).collect();
            assert_eq!(got, vec![0.1, 0.2, 0.25, 0.75]);
            drop(b);
            spare.join().unwrap();
        });
        assert_eq!(stats.backlog_weight.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_panic_while_preparing_is_that_uploads_500_and_the_worker_goes_on() {
        // A preparation with a bug that an upload starting with byte 7 reaches.
        let buggy = |bytes: &[u8]| {
            assert_ne!(bytes[0], 7, "a bug");
            fill(bytes)
        };
        // One image a pass: the passes after the panic are served by the same worker.
        let uploads = [7, 0, 64].map(|b| Input::Upload(vec![b]));
        let (answers, stats) = run_first(1, uploads.into(), buggy);
        let [r1, r2, r3] = answers.try_into().expect("three answers");
        let failed = r1.blocking_recv().unwrap().unwrap_err();
        assert_eq!(failed.status.as_u16(), 500);
        assert!(
            failed.message.contains("preprocessing failed") && failed.message.contains("a bug"),
            "{}",
            failed.message
        );
        assert_eq!(probs(r2), vec![vec![0.0; 10]]);
        assert_eq!(probs(r3), vec![vec![0.25; 10]]);
        let h = stats.batch_sizes.lock().unwrap();
        assert_eq!((h.count, h.sum), (2, 2.0), "two passes after the panic");
    }

    #[test]
    fn a_prepared_image_that_is_not_28x28_is_that_uploads_500() {
        // A preparation that makes a (first byte) x 28 image.
        let sized = |bytes: &[u8]| Ok(GrayImage::new(u32::from(bytes[0]), 28));
        let uploads = [27, 28].map(|b| Input::Upload(vec![b]));
        let (answers, _) = run_first(4, uploads.into(), sized);
        let [r1, r2] = answers.try_into().expect("two answers");
        let failed = r1.blocking_recv().unwrap().unwrap_err();
        assert_eq!(failed.status.as_u16(), 500);
        assert!(failed.message.contains("a 27x28 image"), "{}", failed.message);
        assert_eq!(probs(r2), vec![vec![0.0; 10]]);
    }
}
