//! The command line (`mnist-cnn train ...`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use std::collections::BTreeMap;

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use crate::checkpoint::{
    TensorFile, atomic_write, latest_checkpoint, load_model, load_state_dict, load_training_checkpoint, position,
    save_training_checkpoint, state_dict,
};
use crate::data::{DataError, DataLoader, Format, load_mnist};
use crate::log::{MetricsLog, json_str};
use crate::metrics::Confusion;
use crate::nn::Architecture;
use crate::optim::SgdConfig;
use crate::rng::Rng;
use crate::train::{EpochStats, FitEnd, LOSS_FUNC, Observer, Position, evaluate, fit_from};

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
    /// Dataset: `mnist` (bundled), or `fashion-mnist` / `kmnist` from the download cache
    /// (`mnist-cnn download NAME` first).
    #[arg(long, default_value = "mnist", value_parser = ["mnist", "fashion-mnist", "kmnist"])]
    pub dataset: String,
    /// Train on only the first N training images (for quick runs).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Write the trained weights here (safetensors, PyTorch state_dict names), with metadata.
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    /// Start from these weights (a safetensors file, from here or from PyTorch) instead of a
    /// random initialisation.
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,
    /// After every epoch, write a training checkpoint (weights, momentum buffers, epoch, seed)
    /// to this directory.
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Append one record per epoch to this file: JSON lines (.jsonl) or CSV (.csv), after a
    /// header record with the run's settings.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// No progress bar (it is shown only when the output is a terminal anyway).
    #[arg(long)]
    pub quiet: bool,
    /// Continue from the newest checkpoint in this directory, with its settings (seed, batch
    /// size, learning rate, momentum, shuffling), up to --epochs. The result is bit-identical to
    /// an uninterrupted run.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct PlotArgs {
    /// Metrics logs written by `train --log` (.jsonl or .csv).
    #[arg(required = true, value_name = "LOG")]
    pub logs: Vec<PathBuf>,
    /// The picture to write: PNG or SVG by extension.
    #[arg(long, value_name = "FILE", default_value = "curves.png")]
    pub out: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct DownloadArgs {
    /// Which: `mnist`, `fashion-mnist`, `kmnist`, or `tutorial-pickle` (the tutorial's mnist.pkl.gz).
    #[arg(value_parser = ["mnist", "fashion-mnist", "kmnist", "tutorial-pickle"])]
    pub dataset: String,
    /// Cache directory [default: the platform's data directory, e.g. ~/.local/share/mnist-cnn].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// A mirror to try first (a URL prefix to which the file names are appended); also read
    /// from the MNIST_CNN_MIRROR environment variable.
    #[arg(long)]
    pub mirror: Option<String>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug, Clone)]
pub struct PredictArgs {
    /// The weights to use (safetensors).
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Images to classify.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// Print one JSON array instead of lines.
    #[arg(long)]
    pub json: bool,
    /// Show the K most likely digits instead of all ten probabilities.
    #[arg(long, value_name = "K")]
    pub top: Option<usize>,
    /// Take 28x28 images as they are (light digit on black, as MNIST) instead of preparing them
    /// the way MNIST was made (grayscale, inverted if the background is light, cropped, scaled
    /// into 20x20, centred by mass in 28x28).
    #[arg(long)]
    pub no_preprocess: bool,
    /// Write what the network saw (28x28 PNG per image) into this directory.
    #[arg(long, value_name = "DIR")]
    pub save_preprocessed: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// The weights to evaluate (safetensors).
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Which images: `test` (t10k) or `valid` (the last 10,000 training images).
    #[arg(long, default_value = "test", value_parser = ["test", "valid"])]
    pub split: String,
    /// Print one JSON object instead of the tables.
    #[arg(long)]
    pub json: bool,
    /// Also draw the confusion matrix as a heat map with counts (PNG or SVG by extension).
    #[arg(long, value_name = "FILE")]
    pub confusion_png: Option<PathBuf>,
    /// Batch size of the evaluation.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Worker threads [default: one per core].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Data directory, as for `train` [default: the bundled data/mnist].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Data format: `idx` or `pickle`.
    #[arg(long, default_value = "idx")]
    pub format: Format,
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
        Command::Predict(args) => predict(args),
        Command::Download(args) => download(args),
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
            let threads = args.threads;
            in_pool(threads, move || eval(args).map_err(|e| e.to_string()))??;
            Ok(())
        }
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

fn download(a: DownloadArgs) -> Result<(), Box<dyn std::error::Error>> {
    let spec = crate::data::download::spec(&a.dataset).ok_or("unknown dataset")?;
    let dir = crate::data::download::cache_dir(a.dir.as_deref());
    let mirror = a
        .mirror
        .clone()
        .or_else(|| std::env::var("MNIST_CNN_MIRROR").ok().filter(|m| !m.is_empty()));
    let progress = !a.quiet && std::io::stderr().is_terminal();
    let (target, outcomes) =
        crate::data::download::download(&spec, &dir, mirror.as_deref(), progress, |m| eprintln!("{m}"))?;
    let fetched = outcomes
        .iter()
        .filter(|o| matches!(o, crate::data::download::Outcome::Fetched { .. }))
        .count();
    println!(
        "{}: {} files in {} ({fetched} fetched, {} already there)",
        a.dataset,
        outcomes.len(),
        target.display(),
        outcomes.len() - fetched
    );
    Ok(())
}

/// The data directory for a dataset: the given one, the bundled MNIST, or the download cache.
fn dataset_dir(data_dir: Option<&PathBuf>, dataset: &str) -> PathBuf {
    match (data_dir, dataset) {
        (Some(d), _) => d.clone(),
        (None, "mnist") | (None, "") => default_data_dir(),
        (None, other) => crate::data::download::cache_dir(None).join(other),
    }
}

/// Loads a dataset, with a hint to download it when its files are missing.
fn load_dataset(dir: &Path, format: Format, dataset: &str) -> Result<crate::data::Mnist, Box<dyn std::error::Error>> {
    load_mnist(dir, format).map_err(|e| {
        if dataset != "mnist" && e.problem.contains("not found") {
            format!("{e} (run `mnist-cnn download {dataset}` first, or pass --data-dir)").into()
        } else {
            e.into()
        }
    })
}

fn eval(a: EvalArgs) -> Result<(), Box<dyn std::error::Error>> {
    if a.batch_size == 0 {
        return Err("--batch-size must be at least 1".into());
    }
    let (arch, model, file) = load_model(&a.model)?;
    let dataset = file
        .metadata
        .get("dataset")
        .map_or("mnist".to_string(), |d| d.to_lowercase());
    let data = load_dataset(&dataset_dir(a.data_dir.as_ref(), &dataset), a.format, &dataset)?;
    let split = if a.split == "valid" { data.valid } else { data.test };
    let dl = DataLoader::new(split, a.batch_size, false, 0);
    let c = Confusion::of(model.as_ref(), LOSS_FUNC, &dl, 10);
    if let Some(out) = &a.confusion_png {
        crate::plot::plot_confusion(&c, &crate::data::download::class_names(&dataset), out)?;
    }
    if a.json {
        println!("{}", c.to_json());
    } else {
        println!("model {} ({arch}), {} split", a.model.display(), a.split);
        print!("{}", c.to_text(&crate::data::download::class_names(&dataset)));
    }
    Ok(())
}

fn predict(a: PredictArgs) -> Result<(), Box<dyn std::error::Error>> {
    let (_, model, file) = load_model(&a.model)?;
    let names =
        crate::data::download::class_names(&file.metadata.get("dataset").map_or(String::new(), |d| d.to_lowercase()));
    let name = |d: usize| names.get(d).map_or(String::new(), |n| format!(" {n}"));
    if let Some(dir) = &a.save_preprocessed {
        std::fs::create_dir_all(dir).map_err(|e| DataError::new(dir, format!("cannot create the directory: {e}")))?;
    }
    // Each image: what the network sees, or why it could not be read.
    let prepared: Vec<Result<image::GrayImage, String>> = a
        .images
        .iter()
        .map(|path| {
            let img = crate::predict::load_gray(path).map_err(|e| e.to_string())?;
            let ready = if a.no_preprocess {
                crate::predict::as_is(&img)
            } else {
                crate::predict::preprocess(&img)
            };
            let ready = ready.map_err(|e| format!("{}: {e}", path.display()))?;
            if let Some(dir) = &a.save_preprocessed {
                let stem = path
                    .file_stem()
                    .map_or("image".into(), |s| s.to_string_lossy().to_string());
                atomic_write(&dir.join(format!("{stem}.png")), &crate::predict::png_bytes(&ready))
                    .map_err(|e| e.to_string())?;
            }
            Ok(ready)
        })
        .collect();
    let ok: Vec<&image::GrayImage> = prepared.iter().filter_map(|r| r.as_ref().ok()).collect();
    let x: Vec<f32> = ok
        .iter()
        .flat_map(|img| img.as_raw().iter().map(|&p| crate::data::pixel_to_f32(p)))
        .collect();
    model.set_training(false);
    let probs = if ok.is_empty() {
        Vec::new()
    } else {
        let logits = crate::tensor::no_grad(|| model.forward(&crate::tensor::Tensor::from_vec(x, &[ok.len(), 784])));
        crate::predict::softmax_rows(&logits.to_vec(), 10)
    };
    let mut probs = probs.into_iter();
    let mut failed = 0;
    let mut json = Vec::new();
    for (path, r) in a.images.iter().zip(&prepared) {
        let file = path.display().to_string();
        let p = match r {
            Err(e) => {
                failed += 1;
                if a.json {
                    json.push(format!("{{\"file\":{},\"error\":{}}}", json_str(&file), json_str(e)));
                } else {
                    eprintln!("error: {e}");
                }
                continue;
            }
            Ok(_) => probs.next().expect("one result per image"),
        };
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&i, &j| p[j].total_cmp(&p[i]));
        let top = a.top.unwrap_or(p.len()).min(p.len());
        if a.json {
            let ps: Vec<String> = p.iter().map(|v| format!("{v:.6}")).collect();
            let tops: Vec<String> = order[..top].iter().map(|&d| format!("[{d},{:.6}]", p[d])).collect();
            json.push(format!(
                "{{\"file\":{},\"digit\":{},\"probabilities\":[{}],\"top\":[{}]}}",
                json_str(&file),
                order[0],
                ps.join(","),
                tops.join(",")
            ));
        } else if a.top.is_some() {
            let tops: Vec<String> = order[..top]
                .iter()
                .map(|&d| format!("{d} {:.1}%", 100.0 * p[d]))
                .collect();
            println!("{file}: {}", tops.join(", "));
        } else {
            let all: Vec<String> = p.iter().enumerate().map(|(d, v)| format!("{d}:{v:.3}")).collect();
            println!(
                "{file}: {}{} ({:.1}%)  {}",
                order[0],
                name(order[0]),
                100.0 * p[order[0]],
                all.join(" ")
            );
        }
    }
    if a.json {
        println!("[{}]", json.join(","));
    }
    if failed > 0 {
        return Err(format!("{failed} of {} images could not be predicted", a.images.len()).into());
    }
    Ok(())
}

/// Training settings as checkpoint metadata.
fn settings(a: &TrainArgs, lr: f32, momentum: f32) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("seed".into(), a.seed.to_string());
    m.insert("batch_size".into(), a.batch_size.to_string());
    m.insert("lr".into(), lr.to_string());
    m.insert("momentum".into(), momentum.to_string());
    m.insert("shuffle".into(), (!a.no_shuffle).to_string());
    m.insert("epochs".into(), a.epochs.to_string());
    m.insert("dataset".into(), a.dataset.clone());
    if let Some(n) = a.limit {
        m.insert("limit".into(), n.to_string());
    }
    m
}

fn train_in_pool(mut a: TrainArgs) -> Result<(), Box<dyn std::error::Error>> {
    if a.batch_size == 0 {
        return Err("--batch-size must be at least 1".into());
    }
    // Resuming: the newest checkpoint, whose settings replace the command line's.
    let resume = match &a.resume {
        None => None,
        Some(dir) => {
            let (_, _, path) = latest_checkpoint(dir)?
                .ok_or_else(|| DataError::new(dir, "no checkpoint-epoch-*.safetensors to resume from"))?;
            let file = TensorFile::load(&path)?;
            let meta = &file.metadata;
            let get = |k: &str| {
                meta.get(k)
                    .cloned()
                    .ok_or_else(|| DataError::new(&path, format!("metadata lacks '{k}'")))
            };
            let bad = |k: &str| DataError::new(&path, format!("metadata '{k}' is not valid"));
            a.model = file.architecture().map_err(|e| DataError::new(&path, e))?;
            a.seed = get("seed")?.parse().map_err(|_| bad("seed"))?;
            a.batch_size = get("batch_size")?.parse().map_err(|_| bad("batch_size"))?;
            a.lr = Some(get("lr")?.parse().map_err(|_| bad("lr"))?);
            a.momentum = Some(get("momentum")?.parse().map_err(|_| bad("momentum"))?);
            a.no_shuffle = get("shuffle")? == "false";
            a.limit = meta
                .get("limit")
                .map(|v| v.parse())
                .transpose()
                .map_err(|_| bad("limit"))?;
            Some(path)
        }
    };
    let dir = dataset_dir(a.data_dir.as_ref(), &a.dataset);
    let mut data = load_dataset(&dir, a.format, &a.dataset)?;
    if let Some(n) = a.limit {
        data.train = data.train.subset(0..n.min(data.train.len()));
    }
    let (lr, momentum) = match a.model {
        Architecture::Cnn => (a.lr.unwrap_or(0.1), a.momentum.unwrap_or(0.9)),
        Architecture::Logistic => (a.lr.unwrap_or(0.5), a.momentum.unwrap_or(0.0)),
    };
    let names = crate::data::download::class_names(&a.dataset);
    if !names.is_empty() {
        println!(
            "dataset {} ({}), classes: {}",
            a.dataset,
            dir.display(),
            names.join(", ")
        );
    }
    let model = a.model.build(&mut Rng::new(a.seed));
    if let Some(init) = &a.init {
        let file = TensorFile::load(init)?;
        let arch = file.architecture().map_err(|e| DataError::new(init, e))?;
        if arch != a.model {
            return Err(DataError::new(init, format!("holds a {arch} model, --model is {}", a.model)).into());
        }
        load_state_dict(model.as_ref(), &file).map_err(|e| DataError::new(init, e))?;
    }
    let mut opt = SgdConfig::new(lr).with_momentum(momentum).init(model.parameters());
    let start = match &resume {
        Some(path) => {
            let meta = load_training_checkpoint(path, model.as_ref(), &mut opt)?;
            let pos = position(&meta).map_err(|e| DataError::new(path, e))?;
            println!(
                "resuming from {} (epoch {} done, {} batches of the next)",
                path.display(),
                pos.epoch,
                pos.batch
            );
            pos
        }
        None => Position::default(),
    };
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
    let meta = settings(&a, lr, momentum);
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // A second Ctrl-C while stopping exits at once.
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        });
    }
    let log = match &a.log {
        Some(path) => Some(MetricsLog::open(path, &meta)?),
        None => None,
    };
    let show_bar = !a.quiet && std::io::stderr().is_terminal();
    let mut obs = TrainObserver {
        epochs: a.epochs,
        lr,
        bar: None,
        show_bar,
        epoch_started: Instant::now(),
        samples_at_start: 0,
        log,
        stop: stop.clone(),
        checkpoint: a
            .checkpoint_dir
            .as_ref()
            .map(|d| (d.as_path(), model.as_ref(), a.model, &meta)),
    };
    let end = fit_from(
        start,
        a.epochs,
        model.as_ref(),
        LOSS_FUNC,
        &mut opt,
        &train_dl,
        &valid_dl,
        &mut obs,
    )?;
    let history = match end {
        FitEnd::Finished(h) => h,
        FitEnd::Stopped { at, .. } => {
            let how = match &a.checkpoint_dir {
                Some(d) => {
                    let path = save_training_checkpoint(d, model.as_ref(), a.model, &opt, &at, &meta)?;
                    format!(
                        "checkpoint saved to {}; resume with: mnist-cnn train --resume {} --epochs {}",
                        path.display(),
                        d.display(),
                        a.epochs
                    )
                }
                None => {
                    "no checkpoint (no --checkpoint-dir): run with --checkpoint-dir DIR to be able to resume".into()
                }
            };
            eprintln!(
                "interrupted in epoch {}/{} after {} of {} batches; {how}",
                at.epoch + 1,
                a.epochs,
                at.batch,
                train_dl.len()
            );
            std::process::exit(130);
        }
    };
    let t = evaluate(model.as_ref(), LOSS_FUNC, &test_dl);
    println!(
        "test  loss {:.4}  acc {:6.2}%  ({} images)",
        t.loss,
        100.0 * t.accuracy,
        t.samples
    );
    if let Some(path) = &a.save {
        let mut m = meta.clone();
        m.insert("epochs_trained".into(), a.epochs.to_string());
        m.insert("data".into(), format!("{} ({:?})", dir.display(), a.format));
        if let Some(last) = history.last() {
            m.insert("valid_loss".into(), last.valid.loss.to_string());
            m.insert("valid_accuracy".into(), last.valid.accuracy.to_string());
        }
        m.insert("test_loss".into(), t.loss.to_string());
        m.insert("test_accuracy".into(), t.accuracy.to_string());
        state_dict(model.as_ref(), a.model, &m).save(path)?;
        println!("saved {}", path.display());
    }
    Ok(())
}

/// Where and what to checkpoint after each epoch: directory, model, architecture, settings.
type CheckpointTo<'a> = (
    &'a Path,
    &'a dyn crate::nn::Module,
    Architecture,
    &'a BTreeMap<String, String>,
);

/// What `train` does around the loop: the progress bar, the summary lines, the metrics log,
/// checkpoints, and stopping on Ctrl-C.
struct TrainObserver<'a> {
    epochs: usize,
    lr: f32,
    bar: Option<ProgressBar>,
    show_bar: bool,
    epoch_started: Instant,
    samples_at_start: usize,
    log: Option<MetricsLog>,
    stop: Arc<AtomicBool>,
    checkpoint: Option<CheckpointTo<'a>>,
}

impl Observer for TrainObserver<'_> {
    fn epoch_start(&mut self, epoch: usize, batches: usize, first: usize) {
        self.epoch_started = Instant::now();
        self.samples_at_start = 0;
        if self.show_bar {
            let bar = ProgressBar::new(batches as u64);
            let style = ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} batches  {msg}  ETA {eta}")
                .expect("a valid template")
                .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(format!("{}/{}", epoch + 1, self.epochs));
            bar.set_position(first as u64);
            self.bar = Some(bar);
        }
    }

    fn batch_end(&mut self, pos: &Position, _loss: f32) -> bool {
        if self.samples_at_start == 0 {
            self.samples_at_start = pos.samples.saturating_sub(1).max(1);
        }
        if let Some(bar) = &self.bar {
            bar.set_position(pos.batch as u64);
            if pos.batch.is_multiple_of(10) {
                let rate = (pos.samples - self.samples_at_start) as f64 / self.epoch_started.elapsed().as_secs_f64();
                bar.set_message(format!(
                    "{rate:>7.0} samples/s  loss {:.4}",
                    pos.loss_sum / pos.samples.max(1) as f64
                ));
            }
        }
        !self.stop.load(Ordering::SeqCst)
    }

    fn epoch_end(&mut self, s: &EpochStats, opt: &crate::optim::Sgd) -> Result<(), String> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        println!(
            "epoch {:>2}/{}  valid_loss {:.4}  valid_acc {:6.2}%  train_loss {:.4}  time {:.2}s",
            s.epoch,
            self.epochs,
            s.valid.loss,
            100.0 * s.valid.accuracy,
            s.train_loss,
            s.seconds
        );
        if let Some(log) = &mut self.log {
            log.epoch(s, self.lr).map_err(|e| e.to_string())?;
        }
        if let Some((dir, model, arch, meta)) = self.checkpoint {
            let pos = Position {
                epoch: s.epoch,
                ..Position::default()
            };
            save_training_checkpoint(dir, model, arch, opt, &pos, meta).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
