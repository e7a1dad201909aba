//! `mnist-cnn train`: the tutorial's training run, with checkpoints, logs, a progress bar and
//! Ctrl-C handling around it.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::{DataArgs, dataset_dir, in_pool, load_dataset};
use crate::checkpoint::{
    TensorFile, latest_checkpoint, load_state_dict, load_training_checkpoint, position, save_training_checkpoint,
    state_dict,
};
use crate::data::{DataError, DataLoader};
use crate::log::MetricsLog;
use crate::nn::Architecture;
use crate::ops::simd::Backend;
use crate::optim::SgdConfig;
use crate::rng::Rng;
use crate::train::{EpochStats, FitEnd, LOSS_FUNC, Observer, Position, evaluate, fit_from};

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
    #[command(flatten)]
    pub data: DataArgs,
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
    /// Kernel backend [default: the best this CPU has, or $MNIST_CNN_SIMD]. Results are
    /// bit-identical between avx512, avx2 and neon; portable rounds differently.
    #[arg(long)]
    pub simd: Option<Backend>,
}

pub(crate) fn train(a: TrainArgs) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(b) = a.simd {
        crate::ops::simd::select(b)?;
    }
    let threads = a.data.threads;
    in_pool(threads, move || train_in_pool(a).map_err(|e| e.to_string()))??;
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
    let dir = dataset_dir(a.data.data_dir.as_ref(), &a.dataset);
    let mut data = load_dataset(&dir, a.data.format, &a.dataset)?;
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
        "model {} ({} parameters), {} train / {} valid / {} test images, batch {}, SGD lr {lr} momentum {momentum}, seed {}, {} threads, SIMD {}",
        a.model,
        model.num_parameters(),
        data.train.len(),
        data.valid.len(),
        data.test.len(),
        a.batch_size,
        a.seed,
        rayon::current_num_threads(),
        crate::ops::simd::backend_name()
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
        m.insert("data".into(), format!("{} ({:?})", dir.display(), a.data.format));
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
    fn epoch_start(&mut self, start: &Position, batches: usize) {
        let (epoch, first) = (start.epoch, start.batch);
        self.epoch_started = Instant::now();
        self.samples_at_start = start.samples;
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
