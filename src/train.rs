//! The tutorial's training loop: `loss_batch`, `fit`, and `evaluate`.

use std::time::Instant;

use crate::data::DataLoader;
use crate::nn::Module;
use crate::ops::{argmax_rows, cross_entropy};
use crate::optim::{Optimizer, Schedule, schedule};
use crate::profile::{self, Phase};
use crate::tensor::{Tensor, no_grad};

/// A loss function: logits (N, C) and targets -> scalar loss (the tutorial's `loss_func`).
pub type LossFn = fn(&Tensor, &[usize]) -> Tensor;

/// The tutorial's `loss_func = F.cross_entropy`.
pub const LOSS_FUNC: LossFn = cross_entropy;

/// The tutorial's `loss_batch`: forward, loss, and, when an optimizer is given, backward, step
/// and zero_grad. Returns the batch's mean loss and its number of samples.
pub fn loss_batch(
    model: &dyn Module,
    loss_func: LossFn,
    xb: &Tensor,
    yb: &[usize],
    opt: Option<&mut dyn Optimizer>,
) -> (f32, usize) {
    let (loss, n, _) = loss_batch_counted(model, loss_func, xb, yb, opt);
    (loss, n)
}

/// [`loss_batch`] that also counts the batch's correct predictions (for training accuracy,
/// measured on the fly from the logits the step computes anyway).
pub fn loss_batch_counted(
    model: &dyn Module,
    loss_func: LossFn,
    xb: &Tensor,
    yb: &[usize],
    opt: Option<&mut dyn Optimizer>,
) -> (f32, usize, usize) {
    let logits = model.forward(xb);
    let correct = argmax_rows(&logits.data(), logits.shape()[1])
        .iter()
        .zip(yb)
        .filter(|(p, y)| p == y)
        .count();
    let loss = loss_func(&logits, yb);
    if let Some(opt) = opt {
        loss.backward();
        // Timed as a row of its own when `bench` profiles the step.
        let name = opt.name();
        profile::time(
            || format!("{name}: step + zero_grad"),
            Phase::Backward,
            || {
                opt.step();
                opt.zero_grad();
            },
        );
    }
    (loss.item(), yb.len(), correct)
}

/// Loss and accuracy of a model on a dataset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Count-weighted mean of the batch losses (the tutorial's `val_loss`).
    pub loss: f32,
    pub accuracy: f32,
    pub correct: usize,
    pub samples: usize,
}

/// Evaluates in eval mode without recording a graph (`model.eval()` + `torch.no_grad()`).
pub fn evaluate(model: &dyn Module, loss_func: LossFn, dl: &DataLoader) -> Evaluation {
    let was_training = model.is_training();
    model.set_training(false);
    let (mut weighted, mut correct, mut samples) = (0.0f64, 0usize, 0usize);
    no_grad(|| {
        for b in dl.epoch(0) {
            let logits = model.forward(&b.x);
            let loss = loss_func(&logits, &b.y).item();
            let classes = logits.shape()[1];
            correct += argmax_rows(&logits.data(), classes)
                .iter()
                .zip(&b.y)
                .filter(|(p, y)| p == y)
                .count();
            weighted += loss as f64 * b.y.len() as f64;
            samples += b.y.len();
        }
    });
    model.set_training(was_training);
    Evaluation {
        loss: (weighted / samples.max(1) as f64) as f32,
        accuracy: correct as f32 / samples.max(1) as f32,
        correct,
        samples,
    }
}

/// What one epoch of [`fit`] measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochStats {
    /// 1-based.
    pub epoch: usize,
    /// Count-weighted mean of the training batch losses during the epoch.
    pub train_loss: f32,
    /// Share of the training samples the model got right during the epoch (each counted with
    /// the weights it had when its batch was seen, in training mode).
    pub train_accuracy: f32,
    pub valid: Evaluation,
    /// Wall time of the epoch, training and validation.
    pub seconds: f64,
    /// Training samples per second (training part only).
    pub train_samples_per_sec: f64,
}

/// Where a run is: `batch` batches of epoch `epoch` (0-based) are done, with the running sums of
/// that epoch's training loss. A finished epoch k is `Position { epoch: k, batch: 0, .. }`.
/// Checkpoints store it, and [`fit_from`] continues from it with bit-identical results.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Position {
    pub epoch: usize,
    pub batch: usize,
    /// Sum of loss x batch size over the epoch's batches so far.
    pub loss_sum: f64,
    pub samples: usize,
    /// Correct predictions among those samples.
    pub correct: usize,
}

/// Hooks around the training loop: progress, logs, checkpoints, stopping.
pub trait Observer {
    /// Before an epoch's batches: `start` is where it begins (batch 0, or further when resumed
    /// mid-epoch), of `batches` in all.
    fn epoch_start(&mut self, _start: &Position, _batches: usize) {}
    /// After each training batch, with the position after it and the batch's loss. Returning
    /// false stops training here.
    fn batch_end(&mut self, _pos: &Position, _loss: f32) -> bool {
        true
    }
    /// After an epoch's training batches, before its validation.
    fn validation_start(&mut self) {}
    /// After each epoch, training and validation done. An error stops training.
    fn epoch_end(&mut self, stats: &EpochStats, opt: &dyn Optimizer) -> crate::Result<()>;
}

/// How [`fit_from`] ended.
#[derive(Clone, Debug, PartialEq)]
pub enum FitEnd {
    /// All epochs ran.
    Finished(Vec<EpochStats>),
    /// An observer asked to stop; `at` is where training can continue from.
    Stopped { history: Vec<EpochStats>, at: Position },
}

/// The tutorial's `fit` from a given position: for each epoch up to `epochs`, train on every
/// batch of `train_dl` (skipping the batches already done in a resumed epoch), then evaluate on
/// `valid_dl`, telling `obs` as it goes. With a `schedule`, the learning rate (and momentum,
/// where the schedule sets it) of each step is the schedule's value at that step's position,
/// so a resumed run takes the same steps.
#[allow(clippy::too_many_arguments)]
pub fn fit_from(
    start: Position,
    epochs: usize,
    model: &dyn Module,
    loss_func: LossFn,
    opt: &mut dyn Optimizer,
    schedule: Option<&Schedule>,
    train_dl: &DataLoader,
    valid_dl: &DataLoader,
    obs: &mut dyn Observer,
) -> crate::Result<FitEnd> {
    let mut history = Vec::new();
    let mut pos = start;
    while pos.epoch < epochs {
        let t0 = Instant::now();
        let (first, samples_before) = (pos.batch, pos.samples);
        obs.epoch_start(&pos, train_dl.len());
        model.set_training(true);
        for b in train_dl.epoch(pos.epoch).skip(first) {
            if let Some(s) = schedule {
                schedule::apply(s, opt, pos.epoch * train_dl.len() + pos.batch);
            }
            let (loss, n, correct) = loss_batch_counted(model, loss_func, &b.x, &b.y, Some(&mut *opt));
            pos.loss_sum += loss as f64 * n as f64;
            pos.samples += n;
            pos.correct += correct;
            pos.batch += 1;
            if !obs.batch_end(&pos, loss) && pos.batch < train_dl.len() {
                return Ok(FitEnd::Stopped { history, at: pos });
            }
        }
        let train_secs = t0.elapsed().as_secs_f64();
        obs.validation_start();
        let valid = evaluate(model, loss_func, valid_dl);
        let stats = EpochStats {
            epoch: pos.epoch + 1,
            train_loss: (pos.loss_sum / pos.samples.max(1) as f64) as f32,
            train_accuracy: pos.correct as f32 / pos.samples.max(1) as f32,
            valid,
            seconds: t0.elapsed().as_secs_f64(),
            train_samples_per_sec: (pos.samples - samples_before) as f64 / train_secs,
        };
        obs.epoch_end(&stats, &*opt)?;
        history.push(stats);
        pos = Position {
            epoch: pos.epoch + 1,
            ..Position::default()
        };
    }
    Ok(FitEnd::Finished(history))
}

/// The tutorial's `fit`: for each epoch, train on every batch of `train_dl`, then evaluate on
/// `valid_dl`. Runs epochs `start..epochs` (0-based; start > 0 resumes) and calls `on_epoch` after
/// each with the epoch's figures and the optimizer (for checkpoints); an error from it stops
/// training and is returned.
pub fn fit(
    epochs: std::ops::Range<usize>,
    model: &dyn Module,
    loss_func: LossFn,
    opt: &mut dyn Optimizer,
    train_dl: &DataLoader,
    valid_dl: &DataLoader,
    on_epoch: impl FnMut(&EpochStats, &dyn Optimizer) -> crate::Result<()>,
) -> crate::Result<Vec<EpochStats>> {
    struct OnEpoch<F>(F);
    impl<F: FnMut(&EpochStats, &dyn Optimizer) -> crate::Result<()>> Observer for OnEpoch<F> {
        fn epoch_end(&mut self, stats: &EpochStats, opt: &dyn Optimizer) -> crate::Result<()> {
            (self.0)(stats, opt)
        }
    }
    let start = Position {
        epoch: epochs.start,
        ..Position::default()
    };
    match fit_from(
        start,
        epochs.end,
        model,
        loss_func,
        opt,
        None,
        train_dl,
        valid_dl,
        &mut OnEpoch(on_epoch),
    )? {
        FitEnd::Finished(h) | FitEnd::Stopped { history: h, .. } => Ok(h),
    }
}
