//! The command line: `mnist-cnn train | eval | predict | plot | download | bench`, one file per
//! command, and what they share (the thread pool, where the data is).

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::data::{Format, load_mnist};

mod bench;
mod download;
mod eval;
mod predict;
mod train;

pub use bench::BenchArgs;
pub use download::{DownloadArgs, PlotArgs};
pub use eval::EvalArgs;
pub use predict::PredictArgs;
pub use train::TrainArgs;

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
    /// Evaluate saved weights: loss, accuracy, confusion matrix, precision and recall per class.
    Eval(EvalArgs),
    /// Predict the digit in each image (PNG, JPEG, BMP, GIF, PGM; any size and colour).
    Predict(PredictArgs),
    /// Fetch a dataset's four IDX files (or the tutorial's pickle), checked, into the cache.
    Download(DownloadArgs),
    /// Draw training curves from `train --log` files (several logs: one chart, labelled by file).
    Plot(PlotArgs),
    /// Measure training and inference speed, per-layer times, GFLOP/s and peak memory.
    Bench(BenchArgs),
}

/// Where the images come from, and on how many threads (shared by `train` and `eval`).
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Worker threads [default: one per core]. Results are identical for any count.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Directory with the four MNIST IDX files (gzipped or not), or with `--format pickle` the
    /// directory holding `mnist.pkl.gz` (or the pickle file itself) [default: the bundled
    /// data/mnist, or the download cache for --dataset fashion-mnist / kmnist].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Data format: `idx` (the four standard files) or `pickle` (the tutorial's mnist.pkl.gz).
    #[arg(long, default_value = "idx")]
    pub format: Format,
}

/// The bundled `data/mnist`: relative to the working directory when it is there (a checkout),
/// else where the crate was built.
pub(crate) fn default_data_dir() -> PathBuf {
    let rel = PathBuf::from("data/mnist");
    if rel.is_dir() {
        rel
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist")
    }
}

pub fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    // A bad MNIST_CNN_SIMD is an error message here, not a panic in the first kernel.
    crate::ops::simd::init_from_env()?;
    match cli.command {
        Command::Train(args) => train::train(args),
        Command::Bench(args) => bench::bench(args),
        Command::Predict(args) => predict::predict(args),
        Command::Download(args) => download::download(args),
        Command::Plot(args) => {
            let curves = args
                .logs
                .iter()
                .map(|l| crate::plot::read_log(l))
                .collect::<Result<Vec<_>, _>>()?;
            crate::plot::plot_curves(&curves, &args.out)?;
            println!("wrote {} ({} runs)", args.out.display(), curves.len());
            Ok(())
        }
        Command::Eval(args) => {
            let threads = args.data.threads;
            in_pool(threads, move || eval::eval(args).map_err(|e| e.to_string()))??;
            Ok(())
        }
    }
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

/// The data directory for a dataset: the given one, the bundled MNIST, or the download cache.
pub(crate) fn dataset_dir(data_dir: Option<&PathBuf>, dataset: &str) -> PathBuf {
    match (data_dir, dataset) {
        (Some(d), _) => d.clone(),
        (None, "mnist") | (None, "") => default_data_dir(),
        (None, other) => crate::data::download::cache_dir(None).join(other),
    }
}

/// Loads a dataset, with a hint to download it when its files are missing.
pub(crate) fn load_dataset(
    dir: &Path,
    format: Format,
    dataset: &str,
) -> Result<crate::data::Mnist, Box<dyn std::error::Error>> {
    load_mnist(dir, format).map_err(|e| {
        if dataset != "mnist" && e.problem.contains("not found") {
            format!("{e} (run `mnist-cnn download {dataset}` first, or pass --data-dir)").into()
        } else {
            e.into()
        }
    })
}
