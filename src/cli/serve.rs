//! `mnist-cnn serve`: the prediction API and the drawing page (see [`crate::serve`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// The weights to use (safetensors) [default: the newest run's model.safetensors under
    /// runs/ (or $MNIST_CNN_RUNS_DIR), else the model built into the program].
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// The address to listen on; port 0 picks a free port (the URL printed says which).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Inference workers: threads that each prepare uploaded images and run batches with their
    /// own instance of the one shared copy of the weights [default: one per core. The first
    /// takes every batch; the others join only when a backlog of --max-batch images waits (an
    /// upload counts as 8), so that the HTTP handlers keep a core otherwise].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub workers: Option<u64>,
    /// Kernel threads of each inference worker [default: 1. On 2 cores, 1 worker with 1
    /// kernel thread gave 11,000-11,900 JSON requests/s at 64 connections against
    /// 9,000-10,300 with 2].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub threads: Option<u64>,
    /// The most images in one forward pass: requests that arrive together are predicted together.
    /// Small passes keep the tail latency down without costing throughput: at 64 connections on
    /// 2 cores (`bncnn`, JSON), 16 gave 13,000-13,600 requests/s with p99 8.0-8.8 ms, 64 gave
    /// 11,600-13,700 with p99 10.4-15.8 ms.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_batch: u64,
    /// How long (microseconds, at most 10 s) an inference worker waits for more requests to
    /// join a batch. With 0, a pass takes the requests that queued while the previous one ran:
    /// under load batches form anyway, and a lone request does not wait (1 connection: 2,856
    /// JSON requests/s against 901 with 500 us; 64 connections: 6,607 against 5,136).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    pub max_wait_us: u64,
    /// Requests that can wait for an inference worker; past that the server answers 503.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub queue: u64,
    /// The largest request body in bytes (413 past it) [default: 8 MiB].
    #[arg(long, default_value_t = 8 << 20, value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    pub max_body_bytes: u64,
}

pub(crate) fn serve(a: ServeArgs) -> crate::Result<()> {
    let cfg = crate::serve::ServeConfig {
        model: a.model,
        addr: a.addr,
        workers: a.workers.map(|t| t as usize),
        threads: a.threads.map(|t| t as usize),
        batch: crate::serve::batcher::BatchConfig {
            max_batch: a.max_batch as usize,
            max_wait: Duration::from_micros(a.max_wait_us),
            queue: a.queue as usize,
        },
        max_body_bytes: a.max_body_bytes as usize,
    };
    let (max_batch, queue) = (cfg.batch.max_batch, cfg.batch.queue);
    let (workers, threads) = (cfg.workers(), cfg.kernel_threads());
    crate::serve::run(cfg, |addr, model| {
        out!("serving on http://{addr}");
        eprintln!(
            "model {} ({} parameters, {}); {workers} inference worker(s) of {threads} kernel \
             thread(s) sharing one copy of the weights; batches of up to {max_batch} images, \
             queue of {queue}; SIGTERM or Ctrl-C stops",
            model.architecture, model.parameters, model.source
        );
    })
}
