//! `mnist-cnn train`: the tutorial's training run, with a run directory, checkpoints, logs, a
//! progress bar and Ctrl-C handling around it.
//!
//! Unless `--no-save`, every run writes its results into a new run directory (see
//! [`crate::runs`]): the model, the metrics log, the curves, the settings and checkpoints. A
//! checkpoint records where every output goes, so `--resume` keeps writing them.

//! The pieces: [`settings`] (flags, the model's recipe, checkpoint settings and resuming),
//! [`outputs`] (the run directory, files written, checking them before any work) and
//! [`observer`] (progress, logs, checkpoints after each epoch).

mod observer;
mod outputs;
mod settings;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use clap::Args;

use super::{DataArgs, Dataset, dataset_dir, in_pool, load_dataset};
use crate::Error;
use crate::checkpoint::{
    TensorFile, atomic_write, load_state_dict, load_training_checkpoint, position, save_training_checkpoint,
};
use crate::data::DataLoader;
use crate::log::MetricsLog;
use crate::nn::Module;
use crate::ops::simd::Backend;
use crate::optim::{Optimizer, OptimizerKind};
use crate::rng::Rng;
use crate::runs::{program_invocation, shell_quote};
use crate::train::{EpochStats, Evaluation, FitEnd, LOSS_FUNC, Position, evaluate, fit_from};
use observer::{TrainObserver, say, spinner};
use outputs::{Outputs, draw_run_curves, open_run_dir, plan_outputs, save_model, shown};
pub use settings::MAX_BATCH;
use settings::{check_settings, describe_optimizer, metadata, pick_checkpoint};

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Model (each has its own default recipe: see `mnist-cnn models`).
    #[arg(long, default_value = "cnn", value_parser = super::model_names())]
    pub model: String,
    /// Number of passes over the training set [default: the model's; 10 for cnn, as in the
    /// tutorial].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Training batch size (1 to 4096); validation and test batches are twice as large
    /// [default: the model's; 64 for cnn].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Optimizer [default: the model's; sgd for cnn].
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerKind>,
    /// Learning rate, 0 or more (with a schedule: its base or peak) [default: the model's;
    /// 0.1 for cnn, 0.5 for logistic, as in the tutorial].
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f32>,
    /// SGD momentum, or Adam's beta1 [default: the model's; 0.9 for cnn, 0 for logistic].
    #[arg(long, allow_negative_numbers = true)]
    pub momentum: Option<f32>,
    /// Weight decay: L2 added to the gradient (sgd, adam), or decoupled (adamw) [default: the
    /// model's; 0 for cnn].
    #[arg(long, allow_negative_numbers = true)]
    pub weight_decay: Option<f32>,
    /// Learning-rate schedule: constant, step:EPOCHS:GAMMA, cosine, onecycle, onecycle:MAX_LR,
    /// warmup:STEPS, warmup:STEPS+cosine, ... [default: the model's; constant for cnn].
    #[arg(long, value_name = "SPEC")]
    pub schedule: Option<String>,
    /// Seeded random distortions of the training images: none, or
    /// rotate=DEG,scale=FRAC,shift=PX,shear=DEG[,elastic=ALPHA:SIGMA] (each sample's a function
    /// of the seed, epoch and index) [default: the model's; none for cnn].
    #[arg(long, value_name = "SPEC")]
    pub augment: Option<String>,
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
    /// Train on the training and validation splits together (all 60,000 MNIST training
    /// images), once the recipe is fixed. There is then no validation split: each epoch
    /// reports the test split instead (labelled test_), which chooses nothing: the model saved
    /// is the last epoch's.
    #[arg(long)]
    pub train_on_all: bool,
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

pub(crate) fn train(a: TrainArgs) -> crate::Result<()> {
    if let Some(b) = a.simd {
        crate::ops::simd::select(b)?;
    }
    let threads = a.data.threads;
    in_pool(threads, move || train_in_pool(a))?
}

fn train_in_pool(mut a: TrainArgs) -> crate::Result<()> {
    // Resuming: the newest intact checkpoint, whose settings replace the command line's.
    let resume = match a.resume.clone() {
        None => None,
        Some(dir) => Some(pick_checkpoint(&dir, &mut a)?),
    };
    let st = a.settings()?;
    check_settings(&a, &st)?;
    let restored = resume.as_ref().map(|(_, m)| m);
    let mut outputs = plan_outputs(&a, restored)?;
    let dataset = a.dataset.key();
    let dir = dataset_dir(a.data.data_dir.as_ref(), dataset)?;
    let mut data = load_dataset(&dir, a.data.format, dataset)?;
    if a.train_on_all {
        data.train = data.train.concat(&data.valid);
        data.valid = data.test.clone();
    }
    if let Some(n) = a.limit {
        data.train = data.train.subset(0..n.min(data.train.len()));
    }
    // What each epoch is evaluated on.
    let eval_split = if a.train_on_all { "test" } else { "valid" };
    open_run_dir(&a, restored, &mut outputs)?;
    let meta = metadata(&a, &st, &outputs);
    if let Some(d) = &outputs.run_dir
        && resume.is_none()
    {
        let mut s: BTreeMap<String, serde_json::Value> =
            meta.iter().map(|(k, v)| (k.clone(), crate::log::typed(v))).collect();
        s.insert("model".into(), a.model.clone().into());
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
    let model = st.spec.build(&mut Rng::new(a.seed));
    if let Some(init) = &a.init {
        let file = TensorFile::load(init)?;
        let arch = file.architecture().map_err(|e| e.at(init))?;
        if arch != st.spec {
            return Err(Error::architecture(format!("holds a {arch} model, --model is {}", a.model)).at(init));
        }
        load_state_dict(model.as_ref(), &file).map_err(|e| e.at(init))?;
    }
    let mut opt = st
        .optimizer
        .build(model.parameters(), st.lr, st.momentum, st.weight_decay);
    let start = match &resume {
        Some((path, _)) => {
            let meta = load_training_checkpoint(path, model.as_ref(), opt.as_mut())?;
            let pos = position(&meta).map_err(|e| e.at(path))?;
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
    let mut train_dl = DataLoader::new(data.train.clone(), st.batch_size, !a.no_shuffle, a.seed);
    if !st.augment.is_none() {
        train_dl = train_dl.with_augment(st.augment);
    }
    let valid_dl = DataLoader::new(data.valid.clone(), st.batch_size * 2, false, 0);
    let test_dl = DataLoader::new(data.test.clone(), st.batch_size * 2, false, 0);
    let schedule = st.schedule.build(st.lr, st.epochs * train_dl.len(), train_dl.len());
    say(
        a.json,
        format!(
            "model {} ({} parameters), {}, batch {}, seed {}",
            a.model,
            model.num_parameters(),
            describe_optimizer(&st),
            st.batch_size,
            a.seed,
        ),
    );
    say(
        a.json,
        format!(
            "{} train / {} valid / {} test images, {} threads, SIMD {}",
            data.train.len(),
            if a.train_on_all { 0 } else { data.valid.len() },
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
        epochs: st.epochs,
        eval_split,
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
            .map(|d| (d.as_path(), model.as_ref(), a.model.as_str(), &meta)),
    };
    let end = fit_from(
        start,
        st.epochs,
        model.as_ref(),
        LOSS_FUNC,
        opt.as_mut(),
        Some(&schedule),
        &train_dl,
        &valid_dl,
        &mut obs,
    )?;
    drop(obs);
    let history = match end {
        FitEnd::Finished(h) => h,
        FitEnd::Stopped { at, .. } => {
            let resume_cmd = interrupted(&a, st.epochs, model.as_ref(), opt.as_ref(), &outputs, &meta, &at)?;
            eprintln!(
                "interrupted in epoch {}/{} after {} of {} batches\n{resume_cmd}",
                at.epoch + 1,
                st.epochs,
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
    m.insert("epochs_trained".into(), st.epochs.to_string());
    m.insert("data".into(), format!("{} ({:?})", dir.display(), a.data.format));
    if let Some(last) = history.last()
        && !a.train_on_all
    {
        m.insert("valid_loss".into(), last.valid.loss.to_string());
        m.insert("valid_accuracy".into(), last.valid.accuracy.to_string());
    }
    m.insert("test_loss".into(), t.loss.to_string());
    m.insert("test_accuracy".into(), t.accuracy.to_string());
    let models = outputs.models();
    save_model(model.as_ref(), &a.model, &m, &models)?;
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
    epochs: usize,
    model: &dyn Module,
    opt: &dyn Optimizer,
    outputs: &Outputs,
    meta: &BTreeMap<String, String>,
    at: &Position,
) -> crate::Result<String> {
    let Some(d) = outputs.checkpoints() else {
        return Ok(
            "no checkpoint (--no-save and no --checkpoint-dir): run without --no-save, or with \
                   --checkpoint-dir DIR, to be able to resume"
                .into(),
        );
    };
    let path = save_training_checkpoint(&d, model, &a.model, opt, at, meta)?;
    let mut m = meta.clone();
    m.insert(
        "interrupted".into(),
        format!("epoch {} after {} batches", at.epoch + 1, at.batch),
    );
    let models = outputs.models();
    if let Err(e) = save_model(model, &a.model, &m, &models) {
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
        epochs
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
        "model": a.model,
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
