//! The command line (`mnist-cnn train ...`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::data::{DataLoader, Format, load_mnist};
use crate::nn::Architecture;
use crate::optim::SgdConfig;
use crate::rng::Rng;
use crate::train::{LOSS_FUNC, evaluate, fit};

#[derive(Parser, Debug)]
#[command(
    name = "mnist-cnn",
    version,
    about = "Train the PyTorch tutorial's MNIST CNN, in Rust"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a model on MNIST with the tutorial's settings and report validation and test metrics.
    Train(TrainArgs),
    /// Measure training and inference speed, per-layer times, GFLOP/s and peak memory.
    Bench(BenchArgs),
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Model: `cnn` or `logistic`.
    #[arg(long, default_value = "cnn")]
    pub model: Architecture,
    /// Worker threads [default: one per core].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Training batch size.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Timed training epochs (each from a fresh model); the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Training batches run with the per-layer profiler on.
    #[arg(long, default_value_t = 200)]
    pub profile_batches: usize,
    /// Single-image forwards timed for the batch-1 latency.
    #[arg(long, default_value_t = 2000)]
    pub latency_images: usize,
    /// Directory with the MNIST IDX files [default: the bundled data/mnist].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Model: `cnn` (the tutorial's Mnist_CNN) or `logistic` (its first model, one 784->10 layer).
    #[arg(long, default_value = "cnn")]
    pub model: Architecture,
    /// Number of passes over the training set.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Training batch size; validation and test batches are twice as large.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Learning rate [default: 0.1 for cnn, 0.5 for logistic, as in the tutorial].
    #[arg(long)]
    pub lr: Option<f32>,
    /// SGD momentum [default: 0.9 for cnn, 0 for logistic, as in the tutorial].
    #[arg(long)]
    pub momentum: Option<f32>,
    /// Seed of the weight initialisation and of the shuffling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Serve training batches in file order instead of shuffling them each epoch.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Worker threads [default: one per core]. Results are identical for any count.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Directory with the four MNIST IDX files (gzipped or not), or with `--format pickle` the
    /// directory holding `mnist.pkl.gz` (or the pickle file itself) [default: the bundled data/mnist].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Data format: `idx` (the four standard files) or `pickle` (the tutorial's mnist.pkl.gz).
    #[arg(long, default_value = "idx")]
    pub format: Format,
    /// Train on only the first N training images (for quick runs).
    #[arg(long)]
    pub limit: Option<usize>,
}

/// The bundled `data/mnist`: relative to the working directory when it is there (a checkout),
/// else where the crate was built.
fn default_data_dir() -> PathBuf {
    let rel = PathBuf::from("data/mnist");
    if rel.is_dir() {
        rel
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist")
    }
}

pub fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Train(args) => train(args),
        Command::Bench(args) => bench(args),
    }
}

fn bench(a: BenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    let data = load_mnist(&a.data_dir.clone().unwrap_or_else(default_data_dir), Format::Idx)?;
    if a.batch_size == 0 {
        return Err("--batch-size must be at least 1".into());
    }
    let cfg = crate::bench::BenchConfig {
        model: a.model,
        batch_size: a.batch_size,
        repeats: a.repeats,
        profile_batches: a.profile_batches,
        latency_images: a.latency_images,
    };
    let report = in_pool(a.threads, || crate::bench::run(&cfg, &data))?;
    if a.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

/// Runs `f` on a worker of a pool of `threads` threads (default: one per core), so the
/// kernels' parallel loops start from inside the pool instead of waking it from outside.
pub fn in_pool<R: Send>(threads: Option<usize>, f: impl FnOnce() -> R + Send) -> Result<R, String> {
    let mut b = rayon::ThreadPoolBuilder::new();
    if let Some(t) = threads {
        if t == 0 {
            return Err("--threads must be at least 1".into());
        }
        b = b.num_threads(t);
    }
    let pool = b
        .build()
        .map_err(|e| format!("cannot start {threads:?} threads: {e}"))?;
    Ok(pool.install(f))
}

fn train(a: TrainArgs) -> Result<(), Box<dyn std::error::Error>> {
    let threads = a.threads;
    in_pool(threads, move || train_in_pool(a).map_err(|e| e.to_string()))??;
    Ok(())
}

fn train_in_pool(a: TrainArgs) -> Result<(), Box<dyn std::error::Error>> {
    if a.batch_size == 0 {
        return Err("--batch-size must be at least 1".into());
    }
    let dir = a.data_dir.clone().unwrap_or_else(default_data_dir);
    let mut data = load_mnist(&dir, a.format)?;
    if let Some(n) = a.limit {
        data.train = data.train.subset(0..n.min(data.train.len()));
    }
    let (lr, momentum) = match a.model {
        Architecture::Cnn => (a.lr.unwrap_or(0.1), a.momentum.unwrap_or(0.9)),
        Architecture::Logistic => (a.lr.unwrap_or(0.5), a.momentum.unwrap_or(0.0)),
    };
    let model = a.model.build(&mut Rng::new(a.seed));
    let mut opt = SgdConfig::new(lr).with_momentum(momentum).init(model.parameters());
    let train_dl = DataLoader::new(data.train.clone(), a.batch_size, !a.no_shuffle, a.seed);
    let valid_dl = DataLoader::new(data.valid.clone(), a.batch_size * 2, false, 0);
    let test_dl = DataLoader::new(data.test.clone(), a.batch_size * 2, false, 0);
    println!(
        "model {} ({} parameters), {} train / {} valid / {} test images, batch {}, SGD lr {lr} momentum {momentum}, seed {}, {} threads",
        a.model,
        model.num_parameters(),
        data.train.len(),
        data.valid.len(),
        data.test.len(),
        a.batch_size,
        a.seed,
        rayon::current_num_threads()
    );
    let epochs = a.epochs;
    fit(
        0..epochs,
        model.as_ref(),
        LOSS_FUNC,
        &mut opt,
        &train_dl,
        &valid_dl,
        |s| {
            println!(
                "epoch {:>2}/{epochs}  valid_loss {:.4}  valid_acc {:6.2}%  train_loss {:.4}  time {:.2}s",
                s.epoch,
                s.valid.loss,
                100.0 * s.valid.accuracy,
                s.train_loss,
                s.seconds
            );
        },
    );
    let t = evaluate(model.as_ref(), LOSS_FUNC, &test_dl);
    println!(
        "test  loss {:.4}  acc {:6.2}%  ({} images)",
        t.loss,
        100.0 * t.accuracy,
        t.samples
    );
    Ok(())
}
