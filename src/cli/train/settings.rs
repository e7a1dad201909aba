//! `train`'s settings: the command line's, else the model's recipe; as checkpoint metadata,
//! checked, and read back from a checkpoint when resuming.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::TrainArgs;
use super::outputs::{Outputs, absolute};
use crate::Error;
use crate::checkpoint::{TensorFile, checkpoints_newest_first, load_state_dict, position};
use crate::cli::Dataset;
use crate::data::{AugmentConfig, Format};
use crate::nn::models::{self, ModelSpec};
use crate::optim::{OptimizerKind, ScheduleSpec};
use crate::rng::Rng;

/// The settings of a run: the command line's, else the model's recipe.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Settings {
    pub(super) spec: &'static ModelSpec,
    pub(super) epochs: usize,
    pub(super) batch_size: usize,
    pub(super) optimizer: OptimizerKind,
    pub(super) lr: f32,
    pub(super) momentum: f32,
    pub(super) weight_decay: f32,
    pub(super) schedule: ScheduleSpec,
    pub(super) augment: AugmentConfig,
}

impl TrainArgs {
    pub(super) fn settings(&self) -> crate::Result<Settings> {
        let spec = models::find(&self.model)?;
        let r = &spec.recipe;
        let schedule = self.schedule.as_deref().unwrap_or(r.schedule);
        let augment = self.augment.as_deref().unwrap_or(r.augment);
        Ok(Settings {
            spec,
            epochs: self.epochs.unwrap_or(r.epochs),
            batch_size: self.batch_size.unwrap_or(r.batch_size),
            optimizer: self.optimizer.unwrap_or(r.optimizer),
            lr: self.lr.unwrap_or(r.lr),
            momentum: self.momentum.unwrap_or(r.momentum),
            weight_decay: self.weight_decay.unwrap_or(r.weight_decay),
            schedule: schedule
                .parse()
                .map_err(|e: Error| Error::settings(format!("--schedule {schedule}: {e}")))?,
            augment: augment
                .parse()
                .map_err(|e: String| Error::settings(format!("--augment {augment}: {e}")))?,
        })
    }
}

/// The most images in one training batch (validation batches are twice as large). Memory grows
/// with the batch: about 280 MB for the CNN at this size.
pub const MAX_BATCH: usize = 4096;

/// Training settings as checkpoint metadata, with where the outputs go.
pub(super) fn metadata(a: &TrainArgs, s: &Settings, out: &Outputs) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("seed".into(), a.seed.to_string());
    m.insert("batch_size".into(), s.batch_size.to_string());
    m.insert("optimizer".into(), s.optimizer.name().into());
    m.insert("lr".into(), s.lr.to_string());
    m.insert("momentum".into(), s.momentum.to_string());
    m.insert("weight_decay".into(), s.weight_decay.to_string());
    m.insert("schedule".into(), s.schedule.to_string());
    m.insert("augment".into(), s.augment.to_string());
    m.insert("shuffle".into(), (!a.no_shuffle).to_string());
    m.insert("epochs".into(), s.epochs.to_string());
    m.insert("dataset".into(), a.dataset.key().into());
    m.insert("data_format".into(), format!("{:?}", a.data.format).to_lowercase());
    if let Some(n) = a.limit {
        m.insert("limit".into(), n.to_string());
    }
    if a.train_on_all {
        // The per-epoch figures (valid_* in the logs) are then the test split's.
        m.insert("train_on_all".into(), "true".into());
        m.insert("eval_split".into(), "test".into());
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
pub(super) fn check_settings(a: &TrainArgs, s: &Settings) -> crate::Result<()> {
    check(a, s).map_err(Error::settings)
}

fn check(a: &TrainArgs, s: &Settings) -> Result<(), String> {
    if s.batch_size == 0 || s.batch_size > MAX_BATCH {
        return Err(format!(
            "batch size must be from 1 to {MAX_BATCH}, got {}",
            s.batch_size
        ));
    }
    let lr = s.lr;
    if !(lr.is_finite() && lr >= 0.0) {
        return Err(format!("learning rate must be a finite number >= 0, got {lr}"));
    }
    let momentum = s.momentum;
    if !(momentum.is_finite() && momentum >= 0.0) {
        return Err(format!("momentum must be a finite number >= 0, got {momentum}"));
    }
    if s.optimizer != OptimizerKind::Sgd && momentum >= 1.0 {
        return Err(format!(
            "{}'s beta1 (--momentum) must be below 1, got {momentum}",
            s.optimizer
        ));
    }
    let wd = s.weight_decay;
    if !(wd.is_finite() && wd >= 0.0) {
        return Err(format!("weight decay must be a finite number >= 0, got {wd}"));
    }
    if s.epochs == 0 {
        return Err("--epochs 0 trains nothing".into());
    }
    if a.limit == Some(0) {
        return Err("--limit 0 leaves no training images".into());
    }
    Ok(())
}

/// The checkpoints of `dir`, or of `dir/checkpoints` when `dir` is a run directory.
pub(super) fn checkpoint_dir_of(dir: &Path) -> PathBuf {
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
pub(super) fn pick_checkpoint(dir: &Path, a: &mut TrainArgs) -> crate::Result<(PathBuf, BTreeMap<String, String>)> {
    let dir = checkpoint_dir_of(dir);
    let all = checkpoints_newest_first(&dir)?;
    if all.is_empty() {
        return Err(Error::not_found(
            &dir,
            "no checkpoint-epoch-*.safetensors to resume from",
        ));
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
    Err(Error::checkpoint(
        &dir,
        format!(
            "no intact checkpoint to resume from (the oldest: {})",
            last_err.map_or(String::new(), |e| e.to_string())
        ),
    ))
}

/// Reads a checkpoint's settings into `a` (the data's place and format only when the command
/// line does not name a data directory), checking its tensors fit its model.
pub(super) fn read_checkpoint_settings(path: &Path, a: &mut TrainArgs) -> crate::Result<BTreeMap<String, String>> {
    let file = TensorFile::load(path)?;
    let meta = &file.metadata;
    let get = |k: &str| {
        meta.get(k)
            .cloned()
            .ok_or_else(|| Error::checkpoint(path, format!("metadata lacks '{k}'")))
    };
    let bad = |k: &str| Error::checkpoint(path, format!("metadata '{k}' is not valid"));
    let spec = file.architecture().map_err(|e| e.at(path))?;
    a.model = spec.name.to_string();
    load_state_dict(spec.build(&mut Rng::new(0)).as_ref(), &file).map_err(|e| e.at(path))?;
    position(meta).map_err(|e| e.at(path))?;
    a.seed = get("seed")?.parse().map_err(|_| bad("seed"))?;
    a.batch_size = Some(get("batch_size")?.parse().map_err(|_| bad("batch_size"))?);
    a.lr = Some(get("lr")?.parse().map_err(|_| bad("lr"))?);
    a.momentum = Some(get("momentum")?.parse().map_err(|_| bad("momentum"))?);
    // Checkpoints from before optimizers and schedules were settings: SGD, constant.
    let optimizer = meta.get("optimizer").map_or("sgd", String::as_str);
    a.optimizer = Some(<OptimizerKind as clap::ValueEnum>::from_str(optimizer, true).map_err(|_| bad("optimizer"))?);
    a.weight_decay = Some(
        meta.get("weight_decay")
            .map_or(Ok(0.0), |v| v.parse())
            .map_err(|_| bad("weight_decay"))?,
    );
    a.schedule = Some(meta.get("schedule").cloned().unwrap_or_else(|| "constant".into()));
    a.augment = Some(meta.get("augment").cloned().unwrap_or_else(|| "none".into()));
    // The run's planned length (the schedule depends on it), unless the command line extends it.
    if a.epochs.is_none() {
        a.epochs = Some(get("epochs")?.parse().map_err(|_| bad("epochs"))?);
    }
    a.no_shuffle = get("shuffle")? == "false";
    a.train_on_all = meta.get("train_on_all").is_some_and(|v| v == "true");
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
    let invalid = |e: Error| Error::checkpoint(path, format!("settings not valid: {}", e.detail()));
    let s = a.settings().map_err(invalid)?;
    check_settings(a, &s).map_err(invalid)?;
    Ok(file.metadata)
}

/// The optimizer line of the header: "SGD lr 0.1 momentum 0.9" for the tutorial.
pub(super) fn describe_optimizer(s: &Settings) -> String {
    let mut d = match s.optimizer {
        OptimizerKind::Sgd => format!("SGD lr {} momentum {}", s.lr, s.momentum),
        OptimizerKind::Adam => format!("Adam lr {} betas ({}, 0.999)", s.lr, s.momentum),
        OptimizerKind::Adamw => format!("AdamW lr {} betas ({}, 0.999)", s.lr, s.momentum),
    };
    if s.weight_decay != 0.0 {
        d += &format!(" weight_decay {}", s.weight_decay);
    }
    let schedule = s.schedule.to_string();
    if schedule != "constant" {
        d += &format!(", schedule {schedule}");
    }
    if !s.augment.is_none() {
        d += &format!(", augment {}", s.augment);
    }
    d
}
