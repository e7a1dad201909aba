//! `mnist-cnn train`: the tutorial's training run, with a run directory, checkpoints, logs, a
//! progress bar and Ctrl-C handling around it.
//!
//! Unless `--no-save`, every run writes its results into a new run directory (see
//! [`crate::runs`]): the model, the metrics log, the curves, the settings and checkpoints. A
//! checkpoint records where every output goes, so `--resume` keeps writing them.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::{DataArgs, Dataset, dataset_dir, in_pool, load_dataset};
use crate::checkpoint::{
    TensorFile, atomic_write, check_finite, check_writable, check_writable_dir, checkpoints_newest_first,
    load_state_dict, load_training_checkpoint, position, save_training_checkpoint, state_dict,
};
use crate::data::{DataError, DataLoader, Format};
use crate::log::MetricsLog;
use crate::nn::{Architecture, Module};
use crate::ops::simd::Backend;
use crate::optim::{Sgd, SgdConfig};
use crate::rng::Rng;
use crate::runs::{new_run_dir, program_invocation, shell_quote};
use crate::train::{EpochStats, Evaluation, FitEnd, LOSS_FUNC, Observer, Position, evaluate, fit_from};

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Model.
    #[arg(long, value_enum, default_value_t = Architecture::Cnn)]
    pub model: Architecture,
    /// Number of passes over the training set.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Training batch size (1 to 4096); validation and test batches are twice as large.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Learning rate, 0 or more [default: 0.1 for cnn, 0.5 for logistic, as in the tutorial].
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f32>,
    /// SGD momentum, 0 or more [default: 0.9 for cnn, 0 for logistic, as in the tutorial].
    #[arg(long, allow_negative_numbers = true)]
    pub momentum: Option<f32>,
    /// Seed of the weight initialisation and of the shuffling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Serve training batches in file order instead of shuffling them each epoch.
    #[arg(long)]
    pub no_shuffle: bool,
    #[command(flatten)]
    pub data: DataArgs,
    /// Dataset.
    #[arg(long, value_enum, default_value_t = Dataset::Mnist)]
    pub dataset: Dataset,
    /// Train on only the first N training images (for quick runs).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Also write the trained weights here (safetensors, PyTorch state_dict names).
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    /// No run directory (`runs/<date>-<model>-seed<N>/` with the model, log, curves, settings
    /// and checkpoints); only what --save, --log and --checkpoint-dir name is written.
    #[arg(long)]
    pub no_save: bool,
    /// Start from these weights (a safetensors file, from here or from PyTorch) instead of a
    /// random initialisation.
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,
    /// Write a training checkpoint after every epoch (and on Ctrl-C) to this directory
    /// [default: the run directory's checkpoints/]. A directory holding another run's
    /// checkpoints is refused (resume it with --resume, or replace them with --overwrite).
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Delete the checkpoints already in --checkpoint-dir (another run's) before training.
    #[arg(long)]
    pub overwrite: bool,
    /// Also append the metrics to this file: JSON lines (.jsonl) or CSV (.csv), after a header
    /// record with the run's settings.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// No progress bars (they are shown only when the output is a terminal anyway).
    #[arg(long)]
    pub quiet: bool,
    /// Print a JSON summary of the run on standard output; the progress lines go to standard
    /// error.
    #[arg(long)]
    pub json: bool,
    /// Continue from the newest intact checkpoint in this directory (or run directory), with its
    /// settings and outputs, up to --epochs. The result is bit-identical to an uninterrupted run.
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

/// The most images in one training batch (validation batches are twice as large). Memory grows
/// with the batch: about 280 MB for the CNN at this size.
pub const MAX_BATCH: usize = 4096;

/// Where a run writes its results.
#[derive(Clone, Debug, Default)]
struct Outputs {
    run_dir: Option<PathBuf>,
    /// Given by --save (or restored from the checkpoint).
    save: Option<PathBuf>,
    /// Given by --log (or restored).
    log: Option<PathBuf>,
    /// Given by --checkpoint-dir (or restored); else the run directory's.
    checkpoint_dir: Option<PathBuf>,
}

impl Outputs {
    fn models(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.run_dir.iter().map(|d| d.join("model.safetensors")).collect();
        v.extend(self.save.clone());
        v
    }
    fn logs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.run_dir.iter().map(|d| d.join("metrics.jsonl")).collect();
        v.extend(self.log.clone());
        v
    }
    fn checkpoints(&self) -> Option<PathBuf> {
        self.checkpoint_dir
            .clone()
            .or_else(|| self.run_dir.as_ref().map(|d| d.join("checkpoints")))
    }
}

/// An absolute form of a path, for metadata that a run from another directory reads back.
fn absolute(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// Training settings as checkpoint metadata, with where the outputs go.
fn settings(a: &TrainArgs, lr: f32, momentum: f32, out: &Outputs) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("seed".into(), a.seed.to_string());
    m.insert("batch_size".into(), a.batch_size.to_string());
    m.insert("lr".into(), lr.to_string());
    m.insert("momentum".into(), momentum.to_string());
    m.insert("shuffle".into(), (!a.no_shuffle).to_string());
    m.insert("epochs".into(), a.epochs.to_string());
    m.insert("dataset".into(), a.dataset.key().into());
    m.insert("data_format".into(), format!("{:?}", a.data.format).to_lowercase());
    if let Some(n) = a.limit {
        m.insert("limit".into(), n.to_string());
    }
    if let Some(d) = &a.data.data_dir {
        m.insert("data_dir".into(), absolute(d));
    }
    for (key, p) in [
        ("run_dir", &out.run_dir),
        ("save", &out.save),
        ("log", &out.log),
        ("checkpoint_dir", &out.checkpoint_dir),
    ] {
        if let Some(p) = p {
            m.insert(key.into(), absolute(p));
        }
    }
    m
}

/// Checks the run's settings, wherever they came from (flags or a checkpoint).
fn check_settings(a: &TrainArgs, lr: f32, momentum: f32) -> Result<(), String> {
    if a.batch_size == 0 || a.batch_size > MAX_BATCH {
        return Err(format!(
            "batch size must be from 1 to {MAX_BATCH}, got {}",
            a.batch_size
        ));
    }
    if !(lr.is_finite() && lr >= 0.0) {
        return Err(format!("learning rate must be a finite number >= 0, got {lr}"));
    }
    if !(momentum.is_finite() && momentum >= 0.0) {
        return Err(format!("momentum must be a finite number >= 0, got {momentum}"));
    }
    if a.limit == Some(0) {
        return Err("--limit 0 leaves no training images".into());
    }
    Ok(())
}

/// The learning rate and momentum: given, or the model's defaults (the tutorial's).
fn lr_momentum(a: &TrainArgs) -> (f32, f32) {
    match a.model {
        Architecture::Cnn => (a.lr.unwrap_or(0.1), a.momentum.unwrap_or(0.9)),
        Architecture::Logistic => (a.lr.unwrap_or(0.5), a.momentum.unwrap_or(0.0)),
    }
}

/// The checkpoints of `dir`, or of `dir/checkpoints` when `dir` is a run directory.
fn checkpoint_dir_of(dir: &Path) -> PathBuf {
    let inner = dir.join("checkpoints");
    let here = checkpoints_newest_first(dir).map(|v| v.is_empty()).unwrap_or(true);
    if here && inner.is_dir() {
        inner
    } else {
        dir.to_path_buf()
    }
}

/// The newest intact checkpoint in `dir`, with its settings put into `a`. A checkpoint that
/// cannot be read, does not fit its model, or holds settings that are not valid is skipped with
/// a warning, for the one before it. Returns its path and metadata.
fn pick_checkpoint(dir: &Path, a: &mut TrainArgs) -> Result<(PathBuf, BTreeMap<String, String>), DataError> {
    let dir = checkpoint_dir_of(dir);
    let all = checkpoints_newest_first(&dir)?;
    if all.is_empty() {
        return Err(DataError::new(&dir, "no checkpoint-epoch-*.safetensors to resume from"));
    }
    let mut last_err = None;
    for (_, _, path) in all {
        let mut b = a.clone();
        match read_checkpoint_settings(&path, &mut b) {
            Ok(meta) => {
                *a = b;
                return Ok((path, meta));
            }
            Err(e) => {
                eprintln!("warning: {e}; trying the checkpoint before it");
                last_err = Some(e);
            }
        }
    }
    Err(DataError::new(
        &dir,
        format!(
            "no intact checkpoint to resume from (the oldest: {})",
            last_err.map_or(String::new(), |e| e.to_string())
        ),
    ))
}

/// Reads a checkpoint's settings into `a` (the data's place and format only when the command
/// line does not name a data directory), checking its tensors fit its model.
fn read_checkpoint_settings(path: &Path, a: &mut TrainArgs) -> Result<BTreeMap<String, String>, DataError> {
    let file = TensorFile::load(path)?;
    let meta = &file.metadata;
    let get = |k: &str| {
        meta.get(k)
            .cloned()
            .ok_or_else(|| DataError::new(path, format!("metadata lacks '{k}'")))
    };
    let bad = |k: &str| DataError::new(path, format!("metadata '{k}' is not valid"));
    a.model = file.architecture().map_err(|e| DataError::new(path, e))?;
    load_state_dict(a.model.build(&mut Rng::new(0)).as_ref(), &file).map_err(|e| DataError::new(path, e))?;
    position(meta).map_err(|e| DataError::new(path, e))?;
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
    if let Some(d) = meta.get("dataset") {
        a.dataset = <Dataset as clap::ValueEnum>::from_str(d, true).map_err(|_| bad("dataset"))?;
    }
    if a.data.data_dir.is_none() {
        a.data.data_dir = meta.get("data_dir").map(PathBuf::from);
        if let Some(f) = meta.get("data_format") {
            a.data.format = <Format as clap::ValueEnum>::from_str(f, true).map_err(|_| bad("data_format"))?;
        }
    }
    let (lr, momentum) = lr_momentum(a);
    check_settings(a, lr, momentum).map_err(|e| DataError::new(path, format!("settings not valid: {e}")))?;
    Ok(file.metadata)
}

/// Where this run writes: what the command line names, else what the resumed checkpoint
/// recorded; checked before any work. The run directory comes later ([`open_run_dir`]).
fn plan_outputs(a: &TrainArgs, restored: Option<&BTreeMap<String, String>>) -> Result<Outputs, DataError> {
    let old = |k: &str| restored.and_then(|m| m.get(k)).map(PathBuf::from);
    let out = Outputs {
        run_dir: None,
        save: a.save.clone().or_else(|| old("save")),
        log: a.log.clone().or_else(|| old("log")),
        checkpoint_dir: a.checkpoint_dir.clone().or_else(|| old("checkpoint_dir")),
    };
    check_outputs(a, &out)?;
    Ok(out)
}

/// The run directory (unless --no-save): the resumed run's, or a new one.
fn open_run_dir(
    a: &TrainArgs,
    restored: Option<&BTreeMap<String, String>>,
    out: &mut Outputs,
) -> Result<(), DataError> {
    if !a.no_save {
        out.run_dir = match restored {
            Some(m) => m.get("run_dir").map(PathBuf::from),
            None => Some(new_run_dir(a.model.name(), a.seed)?),
        };
    }
    for d in out.run_dir.iter().chain(out.checkpoints().iter()) {
        check_writable_dir(d)?;
    }
    Ok(())
}

/// Checks the outputs named on the command line (or restored) before any work starts: the
/// weights file, the log, and the checkpoint directory (which must not hold another run's
/// checkpoints unless --overwrite).
fn check_outputs(a: &TrainArgs, out: &Outputs) -> Result<(), DataError> {
    if let Some(p) = &out.save {
        check_writable(p)?;
    }
    if let Some(p) = &out.log {
        crate::log::check_log_path(p)?;
        check_writable(p)?;
    }
    if let Some(d) = &out.checkpoint_dir {
        let same = |x: &Path| {
            x.canonicalize()
                .ok()
                .zip(d.canonicalize().ok())
                .is_some_and(|(x, y)| x == y)
        };
        let resuming_here = a.resume.as_deref().is_some_and(|r| same(&checkpoint_dir_of(r)));
        if d.is_dir() && !resuming_here {
            let old = checkpoints_newest_first(d)?;
            if let Some((_, _, newest)) = old.first() {
                if !a.overwrite {
                    return Err(DataError::new(
                        d,
                        format!(
                            "holds {} checkpoints of another run (newest {}): continue it with \
                             --resume {}, replace them with --overwrite, or choose another directory",
                            old.len(),
                            newest.display(),
                            d.display()
                        ),
                    ));
                }
                for (_, _, p) in &old {
                    std::fs::remove_file(p).map_err(|e| DataError::new(p, format!("cannot delete: {e}")))?;
                }
                eprintln!("deleted {} checkpoints of another run from {}", old.len(), d.display());
            }
        }
        check_writable_dir(d)?;
    }
    Ok(())
}

/// Writes the model to every path in `paths`; refuses weights that are not finite (a diverged
/// run) with the tensor and a hint.
fn save_model(
    model: &dyn Module,
    arch: Architecture,
    meta: &BTreeMap<String, String>,
    paths: &[PathBuf],
) -> Result<(), DataError> {
    for path in paths {
        for (name, p) in model.named_parameters() {
            check_finite(&name, &p.data())
                .map_err(|e| DataError::new(path, format!("not saved: training diverged, {e} (try a smaller --lr)")))?;
        }
        state_dict(model, arch, meta).save(path)?;
    }
    Ok(())
}

/// Draws the run directory's curves from its log; a failure is a warning only.
fn draw_run_curves(run_dir: &Path) {
    let r = crate::plot::read_log(&run_dir.join("metrics.jsonl")).and_then(|mut c| {
        c.label = run_dir
            .file_name()
            .map_or(c.label, |n| n.to_string_lossy().into_owned());
        crate::plot::plot_curves(&[c], &run_dir.join("curves.png"))
    });
    if let Err(e) = r {
        eprintln!("warning: no curves drawn: {e}");
    }
}

/// A path as the user would type it: relative to the working directory when inside it (paths
/// restored from a checkpoint are absolute).
fn shown(p: &Path) -> &Path {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| p.strip_prefix(cwd).ok())
        .filter(|r| !r.as_os_str().is_empty())
        .unwrap_or(p)
}

/// A line of progress: standard output, or standard error when stdout carries the JSON summary.
fn say(json: bool, line: String) {
    if json {
        eprintln!("{line}");
    } else {
        out!("{line}");
    }
}

/// A spinner on standard error for a step without batches to count (validation, test).
fn spinner(show: bool, what: &'static str) -> Option<ProgressBar> {
    show.then(|| {
        let s = ProgressBar::new_spinner();
        s.set_message(what);
        s.enable_steady_tick(Duration::from_millis(100));
        s
    })
}

fn train_in_pool(mut a: TrainArgs) -> Result<(), Box<dyn std::error::Error>> {
    // Resuming: the newest intact checkpoint, whose settings replace the command line's.
    let resume = match a.resume.clone() {
        None => None,
        Some(dir) => Some(pick_checkpoint(&dir, &mut a)?),
    };
    let (lr, momentum) = lr_momentum(&a);
    check_settings(&a, lr, momentum)?;
    let restored = resume.as_ref().map(|(_, m)| m);
    let mut outputs = plan_outputs(&a, restored)?;
    let dataset = a.dataset.key();
    let dir = dataset_dir(a.data.data_dir.as_ref(), dataset)?;
    let mut data = load_dataset(&dir, a.data.format, dataset)?;
    if let Some(n) = a.limit {
        data.train = data.train.subset(0..n.min(data.train.len()));
    }
    open_run_dir(&a, restored, &mut outputs)?;
    let meta = settings(&a, lr, momentum, &outputs);
    if let Some(d) = &outputs.run_dir
        && resume.is_none()
    {
        let mut s: BTreeMap<String, serde_json::Value> =
            meta.iter().map(|(k, v)| (k.clone(), crate::log::typed(v))).collect();
        s.insert("model".into(), a.model.name().into());
        s.insert("command".into(), std::env::args().collect::<Vec<_>>().join(" ").into());
        let text = serde_json::to_string_pretty(&s).expect("strings and numbers serialise");
        atomic_write(&d.join("settings.json"), format!("{text}\n").as_bytes())?;
    }
    let logs = outputs
        .logs()
        .iter()
        .map(|p| MetricsLog::open(p, &meta))
        .collect::<Result<Vec<_>, _>>()?;
    let names = crate::data::download::class_names(dataset);
    if names.is_empty() {
        say(a.json, format!("data {dataset} from {}", dir.display()));
    } else {
        say(
            a.json,
            format!("dataset {dataset} ({}), classes: {}", dir.display(), names.join(", ")),
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
        Some((path, _)) => {
            let meta = load_training_checkpoint(path, model.as_ref(), &mut opt)?;
            let pos = position(&meta).map_err(|e| DataError::new(path, e))?;
            say(
                a.json,
                format!(
                    "resuming from {} (epoch {} done, {} batches of the next)",
                    path.display(),
                    pos.epoch,
                    pos.batch
                ),
            );
            pos
        }
        None => Position::default(),
    };
    let train_dl = DataLoader::new(data.train.clone(), a.batch_size, !a.no_shuffle, a.seed);
    let valid_dl = DataLoader::new(data.valid.clone(), a.batch_size * 2, false, 0);
    let test_dl = DataLoader::new(data.test.clone(), a.batch_size * 2, false, 0);
    say(
        a.json,
        format!(
            "model {} ({} parameters), SGD lr {lr} momentum {momentum}, batch {}, seed {}",
            a.model,
            model.num_parameters(),
            a.batch_size,
            a.seed,
        ),
    );
    say(
        a.json,
        format!(
            "{} train / {} valid / {} test images, {} threads, SIMD {}",
            data.train.len(),
            data.valid.len(),
            data.test.len(),
            rayon::current_num_threads(),
            crate::ops::simd::backend_name()
        ),
    );
    if let Some(d) = &outputs.run_dir {
        say(a.json, format!("run directory {}", shown(d).display()));
    }
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
    let show_bar = !a.quiet && std::io::stderr().is_terminal();
    let checkpoint_dir = outputs.checkpoints();
    let mut obs = TrainObserver {
        epochs: a.epochs,
        lr,
        json: a.json,
        bar: None,
        show_bar,
        epoch_started: Instant::now(),
        samples_at_start: 0,
        logs,
        recent: (0.0, 0),
        stop: stop.clone(),
        checkpoint: checkpoint_dir
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
    drop(obs);
    let history = match end {
        FitEnd::Finished(h) => h,
        FitEnd::Stopped { at, .. } => {
            let resume_cmd = interrupted(&a, model.as_ref(), &opt, &outputs, &meta, &at)?;
            eprintln!(
                "interrupted in epoch {}/{} after {} of {} batches\n{resume_cmd}",
                at.epoch + 1,
                a.epochs,
                at.batch,
                train_dl.len()
            );
            std::process::exit(130);
        }
    };
    let show = spinner(show_bar, "testing");
    let t = evaluate(model.as_ref(), LOSS_FUNC, &test_dl);
    drop(show);
    say(
        a.json,
        format!(
            "test  loss {:.4}  acc {:6.2}%  ({} images)",
            t.loss,
            100.0 * t.accuracy,
            t.samples
        ),
    );
    let mut m = meta.clone();
    m.insert("epochs_trained".into(), a.epochs.to_string());
    m.insert("data".into(), format!("{} ({:?})", dir.display(), a.data.format));
    if let Some(last) = history.last() {
        m.insert("valid_loss".into(), last.valid.loss.to_string());
        m.insert("valid_accuracy".into(), last.valid.accuracy.to_string());
    }
    m.insert("test_loss".into(), t.loss.to_string());
    m.insert("test_accuracy".into(), t.accuracy.to_string());
    let models = outputs.models();
    save_model(model.as_ref(), a.model, &m, &models)?;
    if let Some(d) = &outputs.run_dir {
        draw_run_curves(d);
    }
    for p in &models {
        say(a.json, format!("saved {}", shown(p).display()));
    }
    if !models.is_empty() {
        say(a.json, format!("predict with: {} predict IMAGE", program_invocation()));
    }
    if a.json {
        out!("{}", summary(&a, &history, &t, &outputs));
    }
    Ok(())
}

/// After Ctrl-C: a checkpoint and the model as they are, the curves so far, and the command that
/// resumes.
fn interrupted(
    a: &TrainArgs,
    model: &dyn Module,
    opt: &Sgd,
    outputs: &Outputs,
    meta: &BTreeMap<String, String>,
    at: &Position,
) -> Result<String, Box<dyn std::error::Error>> {
    let Some(d) = outputs.checkpoints() else {
        return Ok(
            "no checkpoint (--no-save and no --checkpoint-dir): run without --no-save, or with \
                   --checkpoint-dir DIR, to be able to resume"
                .into(),
        );
    };
    let path = save_training_checkpoint(&d, model, a.model, opt, at, meta)?;
    let mut m = meta.clone();
    m.insert(
        "interrupted".into(),
        format!("epoch {} after {} batches", at.epoch + 1, at.batch),
    );
    let models = outputs.models();
    if let Err(e) = save_model(model, a.model, &m, &models) {
        eprintln!("warning: {e}");
    } else {
        for p in &models {
            eprintln!("saved {} (as trained so far)", shown(p).display());
        }
    }
    if let Some(r) = &outputs.run_dir {
        draw_run_curves(r);
    }
    // The run directory when its checkpoints/ holds them (resume finds them there).
    let from = match &outputs.run_dir {
        Some(r) if outputs.checkpoint_dir.is_none() => r.clone(),
        _ => d,
    };
    Ok(format!(
        "checkpoint saved to {}\nresume with: {} train --resume {} --epochs {}",
        shown(&path).display(),
        program_invocation(),
        shell_quote(&shown(&from).display().to_string()),
        a.epochs
    ))
}

/// The JSON summary of `train --json`.
fn summary(a: &TrainArgs, history: &[EpochStats], test: &Evaluation, out: &Outputs) -> serde_json::Value {
    let n = |v: f32| crate::log::finite(v as f64, 6);
    let epochs: Vec<_> = history
        .iter()
        .map(|s| {
            serde_json::json!({
                "epoch": s.epoch,
                "train_loss": n(s.train_loss),
                "train_accuracy": n(s.train_accuracy),
                "valid_loss": n(s.valid.loss),
                "valid_accuracy": n(s.valid.accuracy),
                "seconds": crate::log::finite(s.seconds, 4),
                "samples_per_sec": crate::log::finite(s.train_samples_per_sec, 1),
            })
        })
        .collect();
    serde_json::json!({
        "model": a.model.name(),
        "dataset": a.dataset.key(),
        "seed": a.seed,
        "epochs": epochs,
        "test": {"loss": n(test.loss), "accuracy": n(test.accuracy), "images": test.samples},
        "run_dir": out.run_dir.as_ref().map(|d| d.display().to_string()),
        "saved": out.models().iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "threads": rayon::current_num_threads(),
        "simd": crate::ops::simd::backend_name(),
    })
}

/// Where and what to checkpoint after each epoch: directory, model, architecture, settings.
type CheckpointTo<'a> = (
    &'a Path,
    &'a dyn crate::nn::Module,
    Architecture,
    &'a BTreeMap<String, String>,
);

/// Batches per batch record in the logs.
const BATCH_RECORD_EVERY: usize = 10;

/// What `train` does around the loop: the progress bar, the summary lines, the metrics logs,
/// checkpoints, and stopping on Ctrl-C.
struct TrainObserver<'a> {
    epochs: usize,
    lr: f32,
    json: bool,
    bar: Option<ProgressBar>,
    show_bar: bool,
    epoch_started: Instant,
    samples_at_start: usize,
    logs: Vec<MetricsLog>,
    /// Sum of batch losses and batches since the last batch record.
    recent: (f64, usize),
    stop: Arc<AtomicBool>,
    checkpoint: Option<CheckpointTo<'a>>,
}

impl Drop for TrainObserver<'_> {
    /// A bar still drawn (Ctrl-C mid-epoch) is cleared, so the messages after it read cleanly.
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Observer for TrainObserver<'_> {
    fn epoch_start(&mut self, start: &Position, batches: usize) {
        let (epoch, first) = (start.epoch, start.batch);
        self.epoch_started = Instant::now();
        self.samples_at_start = start.samples;
        self.recent = (0.0, 0);
        if self.show_bar {
            // At most 80 columns: "epoch 10/10 [====================] 782/782 108000/s
            // loss 0.1389 ETA 0s".
            let bar = ProgressBar::new(batches as u64);
            let style = ProgressStyle::with_template("epoch {prefix} [{bar:20}] {pos}/{len} {msg} ETA {eta}")
                .expect("a valid template")
                .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(format!("{}/{}", epoch + 1, self.epochs));
            bar.set_position(first as u64);
            self.bar = Some(bar);
        }
    }

    fn batch_end(&mut self, pos: &Position, loss: f32) -> bool {
        if let Some(bar) = &self.bar {
            bar.set_position(pos.batch as u64);
            if pos.batch.is_multiple_of(10) {
                let rate = (pos.samples - self.samples_at_start) as f64 / self.epoch_started.elapsed().as_secs_f64();
                bar.set_message(format!(
                    "{rate:.0}/s loss {:.4}",
                    pos.loss_sum / pos.samples.max(1) as f64
                ));
            }
        }
        self.recent.0 += loss as f64;
        self.recent.1 += 1;
        if self.recent.1 == BATCH_RECORD_EVERY {
            let mean = self.recent.0 / self.recent.1 as f64;
            for log in &mut self.logs {
                if let Err(e) = log.batches(pos.epoch + 1, pos.batch, pos.samples, mean) {
                    eprintln!("warning: {e}");
                }
            }
            self.recent = (0.0, 0);
        }
        !self.stop.load(Ordering::SeqCst)
    }

    fn validation_start(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.bar = spinner(self.show_bar, "validating");
    }

    fn epoch_end(&mut self, s: &EpochStats, opt: &Sgd) -> Result<(), String> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        say(
            self.json,
            format!(
                "epoch {:>2}/{}  valid_loss {:.4}  valid_acc {:6.2}%  train_loss {:.4}  time {:.2}s",
                s.epoch,
                self.epochs,
                s.valid.loss,
                100.0 * s.valid.accuracy,
                s.train_loss,
                s.seconds
            ),
        );
        for log in &mut self.logs {
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
