//! The command line: `mnist-cnn train | eval | predict | plot | download | bench | models | serve`, one file per
//! command, and what they share (the thread pool, where the data is).

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::Error;
use crate::data::{Format, load_mnist};

/// `println!` for command output. When standard output is closed (`mnist-cnn train | head -1`)
/// the program ends quietly with status 141 (128 + SIGPIPE), as a program killed by a broken
/// pipe does, instead of panicking; another write error ends it with a one-line error.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_line(format_args!($($arg)*))
    };
}

mod bench;
mod download;
mod eval;
mod eval_images;
mod predict;
mod serve;
mod train;

pub use bench::BenchArgs;
pub use download::{DownloadArgs, PlotArgs};
pub use eval::EvalArgs;
pub use predict::PredictArgs;
pub use serve::ServeArgs;
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
    /// List the models `train --model` builds, with their default recipes and sizes.
    Models,
    /// Serve predictions over HTTP (a JSON API and a page to draw digits on).
    Serve(ServeArgs),
}

/// `--model`'s values: the registry's names, each with its one-line description.
pub(crate) fn model_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        crate::nn::models::registry()
            .iter()
            .map(|m| clap::builder::PossibleValue::new(m.name).help(m.about)),
    )
}

/// `mnist-cnn models`: a table of the registry.
fn list_models() {
    out!(
        "{:<10} {:>7} {:>10}  {:<9} {:>7} {:>6} {:>7} {:>5} {:>6}  about",
        "model",
        "params",
        "MFLOP/img",
        "optimizer",
        "lr",
        "mom.",
        "wd",
        "batch",
        "epochs"
    );
    for m in crate::nn::models::registry() {
        let r = &m.recipe;
        let params = m.build(&mut crate::rng::Rng::new(0)).num_parameters();
        out!(
            "{:<10} {:>7} {:>10.3}  {:<9} {:>7} {:>6} {:>7} {:>5} {:>6}  {} (schedule {}, augment {})",
            m.name,
            params,
            m.flops as f64 / 1e6,
            r.optimizer.name(),
            r.lr,
            r.momentum,
            r.weight_decay,
            r.batch_size,
            r.epochs,
            m.about,
            r.schedule,
            r.augment
        );
    }
}

/// Where the images come from, and on how many threads (shared by `train` and `eval`).
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Worker threads [default: one per core]. Results are identical for any count.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Directory with the four IDX files (gzipped or not), or with `--format pickle` the
    /// directory holding `mnist.pkl.gz` (or the file itself) [default: MNIST from data/mnist
    /// here, beside the program, in the checkout under `cargo run`, or in the download cache;
    /// other datasets from the download cache].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Data format.
    #[arg(long, value_enum, default_value_t = Format::Idx)]
    pub format: Format,
}

/// The datasets `train` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Dataset {
    /// MNIST's handwritten digits (bundled in a checkout, else `download mnist`).
    Mnist,
    /// Zalando's Fashion-MNIST (`download fashion-mnist` first).
    FashionMnist,
    /// Kuzushiji-MNIST, cursive Japanese (`download kmnist` first).
    Kmnist,
}

impl Dataset {
    /// The dataset's key: its name in the cache, in metadata and on the command line.
    pub fn key(self) -> &'static str {
        match self {
            Dataset::Mnist => "mnist",
            Dataset::FashionMnist => "fashion-mnist",
            Dataset::Kmnist => "kmnist",
        }
    }
}

/// MNIST's directory (see [`crate::runs::find_mnist`]). When it is nowhere and this is a
/// terminal, offers to download it into the cache.
pub(crate) fn default_data_dir() -> crate::Result<PathBuf> {
    use std::io::IsTerminal;
    let err = match crate::runs::find_mnist() {
        Ok(d) => return Ok(d),
        Err(e) => e,
    };
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(err);
    }
    let cache = crate::data::download::cache_dir(None);
    eprint!("{err}\nDownload MNIST (11 MB) into {} now? [y/N] ", cache.display());
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    if !answer.trim().eq_ignore_ascii_case("y") {
        return Err(Error::NotFound {
            path: None,
            what: "MNIST not found and not downloaded".into(),
        });
    }
    let spec = crate::data::download::spec("mnist").expect("MNIST is a known dataset");
    let (dir, _) = crate::data::download::download(&spec, &cache, None, true, |m| eprintln!("{m}"))?;
    Ok(dir)
}

/// Runs a command. Its error is one line (the program prints it as `error: ...`).
pub fn run(cli: Cli) -> crate::Result<()> {
    // A bad MNIST_CNN_SIMD is an error message here, not a panic in the first kernel.
    crate::ops::simd::init_from_env()?;
    match cli.command {
        Command::Train(args) => train::train(args),
        Command::Bench(args) => bench::bench(args),
        Command::Predict(args) => predict::predict(args),
        Command::Download(args) => download::download(args),
        Command::Serve(args) => serve::serve(args),
        Command::Models => {
            list_models();
            Ok(())
        }
        Command::Plot(args) => {
            let curves = args
                .logs
                .iter()
                .map(|l| crate::plot::read_log(l))
                .collect::<Result<Vec<_>, _>>()?;
            let opt = crate::plot::PlotOptions {
                batches: args.batches,
                smooth: args.smooth,
            };
            crate::plot::plot_curves_with(&curves, &opt, &args.out)?;
            out!("wrote {} ({} runs)", args.out.display(), curves.len());
            Ok(())
        }
        Command::Eval(args) => {
            let threads = args.data.threads;
            in_pool(threads, move || eval::eval(args))?
        }
    }
}

/// Writes one line to standard output; see [`out!`].
pub(crate) fn write_line(args: std::fmt::Arguments) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let r = o
        .write_fmt(args)
        .and_then(|_| o.write_all(b"\n"))
        .and_then(|_| o.flush());
    match r {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(141),
        Err(e) => {
            eprintln!("error: cannot write to standard output: {e}");
            std::process::exit(1);
        }
    }
}

/// Runs `f` on a worker of a pool of `threads` threads (default: one per core), so the
/// kernels' parallel loops start from inside the pool instead of waking it from outside. A
/// thread count of 0, or a pool that cannot start, is an [`Error::Settings`].
pub fn in_pool<R: Send>(threads: Option<usize>, f: impl FnOnce() -> R + Send) -> crate::Result<R> {
    let mut b = rayon::ThreadPoolBuilder::new();
    if let Some(t) = threads {
        if t == 0 {
            return Err(Error::settings("--threads must be at least 1"));
        }
        b = b.num_threads(t);
    }
    let pool = b
        .build()
        .map_err(|e| Error::settings(format!("cannot start {threads:?} threads: {e}")))?;
    Ok(pool.install(f))
}

/// The data directory for a dataset: the given one, MNIST where it is found, or the download
/// cache.
pub(crate) fn dataset_dir(data_dir: Option<&PathBuf>, dataset: &str) -> crate::Result<PathBuf> {
    match (data_dir, dataset) {
        (Some(d), _) => Ok(d.clone()),
        (None, "mnist") | (None, "") => default_data_dir(),
        (None, other) => Ok(crate::data::download::cache_dir(None).join(other)),
    }
}

/// Loads a dataset, with a hint to download it when its files are missing (MNIST's own hint
/// comes from [`default_data_dir`]).
pub(crate) fn load_dataset(dir: &Path, format: Format, dataset: &str) -> crate::Result<crate::data::Mnist> {
    load_mnist(dir, format).map_err(|e| match e {
        Error::NotFound { .. } if dataset != "mnist" => e.note(&format!(
            " (run `mnist-cnn download {dataset}` first, or pass --data-dir)"
        )),
        e => e,
    })
}
