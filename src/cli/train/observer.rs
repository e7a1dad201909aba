//! What `train` does around the loop: progress bars and lines, metrics logs, a checkpoint
//! after each epoch, and stopping on Ctrl-C.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::checkpoint::save_training_checkpoint;
use crate::log::MetricsLog;
use crate::optim::Optimizer;
use crate::train::{EpochStats, Observer, Position};

/// A line of progress: standard output, or standard error when stdout carries the JSON summary.
pub(super) fn say(json: bool, line: String) {
    if json {
        eprintln!("{line}");
    } else {
        out!("{line}");
    }
}

/// A spinner on standard error for a step without batches to count (validation, test).
pub(super) fn spinner(show: bool, what: &'static str) -> Option<ProgressBar> {
    show.then(|| {
        let s = ProgressBar::new_spinner();
        s.set_message(what);
        s.enable_steady_tick(Duration::from_millis(100));
        s
    })
}

/// Where and what to checkpoint after each epoch: directory, model, architecture, settings.
pub(super) type CheckpointTo<'a> = (
    &'a Path,
    &'a dyn crate::nn::Module,
    &'a str,
    &'a BTreeMap<String, String>,
);

/// Batches per batch record in the logs.
pub(super) const BATCH_RECORD_EVERY: usize = 10;

/// What `train` does around the loop: the progress bar, the summary lines, the metrics logs,
/// checkpoints, and stopping on Ctrl-C.
pub(super) struct TrainObserver<'a> {
    pub(super) epochs: usize,
    /// The split each epoch is evaluated on: "valid", or "test" with `--train-on-all`.
    pub(super) eval_split: &'static str,
    pub(super) json: bool,
    pub(super) bar: Option<ProgressBar>,
    pub(super) show_bar: bool,
    pub(super) epoch_started: Instant,
    pub(super) samples_at_start: usize,
    pub(super) logs: Vec<MetricsLog>,
    /// Sum of batch losses and batches since the last batch record.
    pub(super) recent: (f64, usize),
    pub(super) stop: Arc<AtomicBool>,
    pub(super) checkpoint: Option<CheckpointTo<'a>>,
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
        self.bar = spinner(
            self.show_bar,
            if self.eval_split == "test" {
                "testing"
            } else {
                "validating"
            },
        );
    }

    fn epoch_end(&mut self, s: &EpochStats, opt: &dyn Optimizer) -> crate::Result<()> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        say(
            self.json,
            format!(
                "epoch {:>2}/{}  {split}_loss {:.4}  {split}_acc {:6.2}%  train_loss {:.4}  time {:.2}s",
                s.epoch,
                self.epochs,
                s.valid.loss,
                100.0 * s.valid.accuracy,
                s.train_loss,
                s.seconds,
                split = self.eval_split,
            ),
        );
        for log in &mut self.logs {
            log.epoch(s, opt.lr())?;
        }
        if let Some((dir, model, arch, meta)) = self.checkpoint {
            let pos = Position {
                epoch: s.epoch,
                ..Position::default()
            };
            save_training_checkpoint(dir, model, arch, opt, &pos, meta)?;
        }
        Ok(())
    }
}
