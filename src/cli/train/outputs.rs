//! Where a `train` run writes (the run directory, --save, --log, checkpoints), checked before
//! any work; saving the model and drawing the curves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::TrainArgs;
use super::settings::checkpoint_dir_of;
use crate::Error;
use crate::checkpoint::{check_finite, check_writable, check_writable_dir, checkpoints_newest_first, state_dict};
use crate::nn::Module;
use crate::runs::new_run_dir;

/// Where a run writes its results.
#[derive(Clone, Debug, Default)]
pub(super) struct Outputs {
    pub(super) run_dir: Option<PathBuf>,
    /// Given by --save (or restored from the checkpoint).
    pub(super) save: Option<PathBuf>,
    /// Given by --log (or restored).
    pub(super) log: Option<PathBuf>,
    /// Given by --checkpoint-dir (or restored); else the run directory's.
    pub(super) checkpoint_dir: Option<PathBuf>,
}

impl Outputs {
    pub(super) fn models(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.run_dir.iter().map(|d| d.join("model.safetensors")).collect();
        v.extend(self.save.clone());
        v
    }
    pub(super) fn logs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.run_dir.iter().map(|d| d.join("metrics.jsonl")).collect();
        v.extend(self.log.clone());
        v
    }
    pub(super) fn checkpoints(&self) -> Option<PathBuf> {
        self.checkpoint_dir
            .clone()
            .or_else(|| self.run_dir.as_ref().map(|d| d.join("checkpoints")))
    }
}

/// An absolute form of a path, for metadata that a run from another directory reads back.
pub(super) fn absolute(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// Where this run writes: what the command line names, else what the resumed checkpoint
/// recorded; checked before any work. The run directory comes later ([`open_run_dir`]).
pub(super) fn plan_outputs(a: &TrainArgs, restored: Option<&BTreeMap<String, String>>) -> crate::Result<Outputs> {
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
pub(super) fn open_run_dir(
    a: &TrainArgs,
    restored: Option<&BTreeMap<String, String>>,
    out: &mut Outputs,
) -> crate::Result<()> {
    if !a.no_save {
        out.run_dir = match restored {
            Some(m) => m.get("run_dir").map(PathBuf::from),
            None => Some(new_run_dir(&a.model, a.seed)?),
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
pub(super) fn check_outputs(a: &TrainArgs, out: &Outputs) -> crate::Result<()> {
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
                    return Err(Error::checkpoint(
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
                    std::fs::remove_file(p).map_err(|e| Error::io(p, "cannot delete", e))?;
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
pub(super) fn save_model(
    model: &dyn Module,
    arch: &str,
    meta: &BTreeMap<String, String>,
    paths: &[PathBuf],
) -> crate::Result<()> {
    for path in paths {
        for (name, p) in model.named_parameters() {
            check_finite(&name, &p.data()).map_err(|e| {
                Error::checkpoint(
                    path,
                    format!("not saved: training diverged, {} (try a smaller --lr)", e.detail()),
                )
            })?;
        }
        state_dict(model, arch, meta).save(path)?;
    }
    Ok(())
}

/// Draws the run directory's curves from its log; a failure is a warning only.
pub(super) fn draw_run_curves(run_dir: &Path) {
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
pub(super) fn shown(p: &Path) -> &Path {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| p.strip_prefix(cwd).ok())
        .filter(|r| !r.as_os_str().is_empty())
        .unwrap_or(p)
}
