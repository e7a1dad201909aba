//! Saving and loading models (the tutorial's `torch.save(model.state_dict())`, as safetensors).
//!
//! Weights files hold each parameter and buffer under PyTorch's state_dict name and shape
//! (`conv1.weight` (16, 1, 3, 3), ..., `bn1.running_mean`) as little-endian f32, plus string
//! metadata (the registry name of the model as `architecture`, input scaling, training settings
//! and metrics, program version). Reading also takes f64 and integer tensors (PyTorch writes
//! `num_batches_tracked` as int64) and converts them to f32. A file that
//! `safetensors.torch.save_file(model.state_dict(), path)` wrote for the tutorial's model loads
//! here, and one written here loads in PyTorch with `model.load_state_dict(load_file(path))`.
//!
//! Training checkpoints add the optimizer's state, whatever the optimizer: each per-parameter
//! tensor as `optim.<key>.<parameter name>` (`optim.momentum_buffer.conv1.weight`,
//! `optim.exp_avg.fc.bias`), its name as metadata `optim` and its scalars as `optim.<key>`; the
//! state of each module's random generator (dropout) as metadata `rng.<module path>`; and the
//! position (epochs done, batches done of the next one, its running loss sums), the seed and the
//! settings. `checkpoint-epoch-NNNN.safetensors` follows a finished epoch,
//! `checkpoint-epoch-NNNN-batch-BBBBB.safetensors` an interrupted one. The data order of an
//! epoch is derived from (seed, epoch), and learning-rate schedules are functions of the
//! position, so that is all the state there is.
//!
//! Every write goes to a temporary file in the same directory, is fsynced, and is renamed over
//! the target, so a crash leaves either the old file or the new one.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};

use crate::Error;
use crate::nn::Module;
use crate::nn::models::{self, ModelSpec};
use crate::optim::{Optimizer, OptimizerState, StateTensor};
use crate::rng::Rng;
use crate::train::Position;

/// Metadata key naming the model (its registry name: `cnn`, `logistic`, ...).
pub const ARCH_KEY: &str = "architecture";
/// Prefix of the optimizer's tensors (and metadata) in a training checkpoint.
pub const OPTIM_PREFIX: &str = "optim.";
/// Prefix of the random generators' states in a training checkpoint's metadata.
pub const RNG_PREFIX: &str = "rng.";

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the directory.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> crate::Result<()> {
    let err = |what: &str, e: std::io::Error| Error::io(path, what, e);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::settings("not a file name").at(path))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(err("cannot write", e));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err("cannot rename the temporary file into place", e));
    }
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Whether `path` can be written as a file, checked before any work starts: not a directory,
/// its directory exists, and a file can be created there (a probe file, removed at once).
pub fn check_writable(path: &Path) -> crate::Result<()> {
    if path.is_dir() {
        return Err(Error::settings("is a directory, not a file name").at(path));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(Error::not_found(
            path,
            format!("cannot write: directory {} does not exist", dir.display()),
        ));
    }
    probe_dir(&dir).map_err(|e| Error::io(path, format!("cannot write in {}", dir.display()), e))
}

/// Creates `dir` if needed and checks a file can be written in it.
pub fn check_writable_dir(dir: &Path) -> crate::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "cannot create the directory", e))?;
    probe_dir(dir).map_err(|e| Error::io(dir, "cannot write in the directory", e))
}

fn probe_dir(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".mnist-cnn-probe-{}", std::process::id()));
    std::fs::File::create(&probe)?;
    std::fs::remove_file(&probe)
}

/// An error naming the first value of a tensor that is not finite: NaN or infinite weights
/// (a diverged run) would load and predict nonsense without complaint. The error is an
/// [`Error::Checkpoint`] without a path.
pub fn check_finite(name: &str, values: &[f32]) -> crate::Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::checkpoint_problem(format!(
            "tensor '{name}' holds {} at index {i} ({} of its {} values are not finite)",
            values[i],
            values.iter().filter(|v| !v.is_finite()).count(),
            values.len()
        ))),
    }
}

/// A named f32 tensor read from a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// The contents of a safetensors file: tensors by name, and metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorFile {
    pub tensors: BTreeMap<String, Entry>,
    pub metadata: BTreeMap<String, String>,
}

impl TensorFile {
    /// Serialises to safetensors bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(n, e)| {
                (
                    n.clone(),
                    e.shape.clone(),
                    e.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
            })
            .collect();
        let views: Vec<(String, TensorView)> = bytes
            .iter()
            .map(|(n, s, b)| {
                (
                    n.clone(),
                    TensorView::new(Dtype::F32, s.clone(), b).expect("shape matches bytes"),
                )
            })
            .collect();
        let meta: HashMap<String, String> = self.metadata.clone().into_iter().collect();
        safetensors::serialize(views, Some(meta)).expect("serialising f32 tensors")
    }

    /// Writes the file atomically.
    pub fn save(&self, path: &Path) -> crate::Result<()> {
        atomic_write(path, &self.to_bytes())
    }

    /// Reads a safetensors file of f32 tensors. Another dtype is an error naming the tensor.
    pub fn load(path: &Path) -> crate::Result<TensorFile> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, "cannot read", e))?;
        TensorFile::parse(&bytes).map_err(|e| e.at(path))
    }

    /// Parses safetensors bytes; what is wrong is an [`Error::Format`] without a path.
    pub fn parse(bytes: &[u8]) -> crate::Result<TensorFile> {
        let bad = |m: String| Error::format_problem(m);
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("bad header: {e}")))?;
        let mut out = TensorFile::default();
        if let Some(m) = meta.metadata() {
            out.metadata = m.clone().into_iter().collect();
        }
        for (name, view) in st.tensors() {
            let values = to_f32(view.dtype(), view.data()).map_err(|e| bad(format!("tensor '{name}' {e}")))?;
            out.tensors.insert(
                name,
                Entry {
                    shape: view.shape().to_vec(),
                    values,
                },
            );
        }
        Ok(out)
    }

    /// The model: named by the `architecture` metadata, or, in a file without it (one PyTorch
    /// wrote), the first registered model whose state_dict has exactly the file's names and
    /// shapes. The error is an [`Error::Architecture`] without a path.
    pub fn architecture(&self) -> crate::Result<&'static ModelSpec> {
        if let Some(a) = self.metadata.get(ARCH_KEY) {
            return models::find(a);
        }
        let sig: Vec<(String, Vec<usize>)> = self
            .tensors
            .iter()
            .filter(|(n, _)| !n.starts_with(OPTIM_PREFIX))
            .map(|(n, e)| (n.clone(), e.shape.clone()))
            .collect();
        // Models with the same tensors (cnn and cnn-norelu) resolve to the first registered:
        // a PyTorch Mnist_CNN file is the tutorial's cnn.
        models::matching(&sig).first().copied().ok_or_else(|| {
            Error::architecture(format!(
                "no 'architecture' metadata, and its tensors are not those of any known model ({})",
                models::names().join(", ")
            ))
        })
    }
}

/// Little-endian values of a safetensors dtype as f32 (integers and f64 converted; f32 as is).
fn to_f32(dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>, String> {
    fn le<const N: usize>(b: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
        b.chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunk of N bytes")))
            .collect()
    }
    Ok(match dtype {
        Dtype::F32 => le(bytes, f32::from_le_bytes),
        Dtype::F64 => le(bytes, |b| f64::from_le_bytes(b) as f32),
        Dtype::I64 => le(bytes, |b| i64::from_le_bytes(b) as f32),
        Dtype::I32 => le(bytes, |b| i32::from_le_bytes(b) as f32),
        Dtype::U8 => bytes.iter().map(|&b| b as f32).collect(),
        d => return Err(format!("has dtype {d:?}; expected F32 (or F64, I64, I32, U8)")),
    })
}

/// A parameter or buffer of `model` by state_dict name: parameters, then buffers.
fn named_state(model: &dyn Module) -> Vec<(String, crate::Tensor)> {
    let mut v = model.named_parameters();
    v.extend(model.named_buffers());
    v
}

/// The model's parameters and buffers as a file, with metadata (the architecture is added).
pub fn state_dict(model: &dyn Module, arch: &str, metadata: &BTreeMap<String, String>) -> TensorFile {
    let mut f = TensorFile {
        metadata: metadata.clone(),
        ..Default::default()
    };
    f.metadata.insert(ARCH_KEY.into(), arch.to_string());
    f.metadata.insert("format".into(), "pt".into());
    f.metadata
        .entry("program".into())
        .or_insert_with(|| format!("mnist-cnn {}", env!("CARGO_PKG_VERSION")));
    f.metadata
        .entry("input_scaling".into())
        .or_insert_with(|| "pixel/256, (N, 784) or (N, 1, 28, 28)".into());
    for (name, p) in named_state(model) {
        f.tensors.insert(
            name,
            Entry {
                shape: p.shape().to_vec(),
                values: p.to_vec(),
            },
        );
    }
    f
}

/// Copies the file's tensors into the model's parameters and buffers (`load_state_dict`,
/// strict): every one must be there with the same shape; extra tensors other than the
/// optimizer's are an error too. The error has no path: [`Error::Architecture`] for a missing
/// or extra tensor, [`Error::Shape`] for a tensor of another shape, [`Error::Checkpoint`] for
/// values that are not finite.
pub fn load_state_dict(model: &dyn Module, file: &TensorFile) -> crate::Result<()> {
    let params = named_state(model);
    for (name, p) in &params {
        let e = file
            .tensors
            .get(name)
            .ok_or_else(|| Error::architecture(format!("missing tensor '{name}' (shape {:?})", p.shape())))?;
        if e.shape != p.shape() {
            return Err(Error::shape(format!(
                "tensor '{name}' has shape {:?}, the model expects {:?}",
                e.shape,
                p.shape()
            )));
        }
    }
    for (name, e) in &file.tensors {
        check_finite(name, &e.values)?;
    }
    if let Some(extra) = file
        .tensors
        .keys()
        .find(|k| !k.starts_with(OPTIM_PREFIX) && !params.iter().any(|(n, _)| n == *k))
    {
        return Err(Error::architecture(format!(
            "unexpected tensor '{extra}' (not a parameter or buffer of this model)"
        )));
    }
    for (name, p) in &params {
        p.data_mut().copy_from_slice(&file.tensors[name].values);
    }
    Ok(())
}

/// Builds the model a weights file describes, with its weights.
pub fn load_model(path: &Path) -> crate::Result<(&'static ModelSpec, Box<dyn Module>, TensorFile)> {
    let file = TensorFile::load(path)?;
    let arch = file.architecture().map_err(|e| e.at(path))?;
    let model = arch.build(&mut Rng::new(0));
    load_state_dict(model.as_ref(), &file).map_err(|e| e.at(path).note(&format!(" (architecture {arch})")))?;
    Ok((arch, model, file))
}

/// A training checkpoint's file name for a position.
pub fn checkpoint_name(pos: &Position) -> String {
    if pos.batch == 0 {
        format!("checkpoint-epoch-{:04}.safetensors", pos.epoch)
    } else {
        format!("checkpoint-epoch-{:04}-batch-{:05}.safetensors", pos.epoch, pos.batch)
    }
}

/// Writes a training checkpoint: weights, buffers, the optimizer's state, the modules' random
/// generators, the position and `metadata`. The optimizer's parameters are the model's, in
/// `named_parameters` order.
pub fn save_training_checkpoint(
    dir: &Path,
    model: &dyn Module,
    arch: &str,
    opt: &dyn Optimizer,
    pos: &Position,
    metadata: &BTreeMap<String, String>,
) -> crate::Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "cannot create the directory", e))?;
    let mut f = state_dict(model, arch, metadata);
    f.metadata.insert("kind".into(), "training-checkpoint".into());
    f.metadata.insert("epoch".into(), pos.epoch.to_string());
    f.metadata.insert("batch".into(), pos.batch.to_string());
    // Rust prints f64 in its shortest form that reads back exactly.
    f.metadata.insert("loss_sum".into(), pos.loss_sum.to_string());
    f.metadata.insert("samples".into(), pos.samples.to_string());
    f.metadata.insert("correct".into(), pos.correct.to_string());
    let params = model.named_parameters();
    let state = opt.state();
    f.metadata.insert("optim".into(), opt.name().into());
    for (k, v) in &state.scalars {
        f.metadata.insert(format!("{OPTIM_PREFIX}{k}"), v.clone());
    }
    for t in state.tensors {
        let (name, p) = &params[t.param];
        f.tensors.insert(
            format!("{OPTIM_PREFIX}{}.{name}", t.key),
            Entry {
                shape: p.shape().to_vec(),
                values: t.values,
            },
        );
    }
    for (name, rng) in model.named_rngs() {
        let s = rng.borrow().state();
        let hex: Vec<String> = s.iter().map(|w| format!("{w:016x}")).collect();
        f.metadata.insert(format!("{RNG_PREFIX}{name}"), hex.join(" "));
    }
    let path = dir.join(checkpoint_name(pos));
    f.save(&path)?;
    Ok(path)
}

/// The position a checkpoint's metadata records; the error is an [`Error::Checkpoint`]
/// without a path.
pub fn position(meta: &BTreeMap<String, String>) -> crate::Result<Position> {
    let get = |k: &str| {
        meta.get(k)
            .ok_or_else(|| Error::checkpoint_problem(format!("metadata lacks '{k}'")))
    };
    let bad = |k: &str| Error::checkpoint_problem(format!("metadata '{k}' is not valid"));
    Ok(Position {
        epoch: get("epoch")?.parse().map_err(|_| bad("epoch"))?,
        batch: meta
            .get("batch")
            .map_or(Ok(0), |v| v.parse())
            .map_err(|_| bad("batch"))?,
        loss_sum: meta
            .get("loss_sum")
            .map_or(Ok(0.0), |v| v.parse())
            .map_err(|_| bad("loss_sum"))?,
        samples: meta
            .get("samples")
            .map_or(Ok(0), |v| v.parse())
            .map_err(|_| bad("samples"))?,
        correct: meta
            .get("correct")
            .map_or(Ok(0), |v| v.parse())
            .map_err(|_| bad("correct"))?,
    })
}

/// The newest training checkpoint in `dir` (furthest position), if any: (epochs done, batches
/// done of the next, path).
pub fn latest_checkpoint(dir: &Path) -> crate::Result<Option<(usize, usize, PathBuf)>> {
    Ok(checkpoints_newest_first(dir)?.into_iter().next())
}

/// The training checkpoints in `dir`, furthest position first: (epochs done, batches done of
/// the next, path).
pub fn checkpoints_newest_first(dir: &Path) -> crate::Result<Vec<(usize, usize, PathBuf)>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, "cannot list", e))?;
    let mut all: Vec<(usize, usize, PathBuf)> = Vec::new();
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = name
            .strip_prefix("checkpoint-epoch-")
            .and_then(|r| r.strip_suffix(".safetensors"))
        else {
            continue;
        };
        let (e, b) = match rest.split_once("-batch-") {
            Some((e, b)) => (e.parse::<usize>(), b.parse::<usize>()),
            None => (rest.parse::<usize>(), Ok(0)),
        };
        if let (Ok(e), Ok(b)) = (e, b) {
            all.push((e, b, entry.path()));
        }
    }
    all.sort_by_key(|x| std::cmp::Reverse((x.0, x.1)));
    Ok(all)
}

/// Restores weights, buffers, the optimizer's state and the random generators from a training
/// checkpoint; returns its metadata. A checkpoint of another optimizer is an error.
pub fn load_training_checkpoint(
    path: &Path,
    model: &dyn Module,
    opt: &mut dyn Optimizer,
) -> crate::Result<BTreeMap<String, String>> {
    let file = TensorFile::load(path)?;
    let bad = |problem: String| Error::checkpoint(path, problem);
    load_state_dict(model, &file).map_err(|e| e.at(path))?;
    // Checkpoints from before the optimizer was named hold SGD's momentum buffers.
    let saved = file.metadata.get("optim").map_or("sgd", String::as_str);
    if saved != opt.name() {
        return Err(bad(format!(
            "the checkpoint holds {saved}'s state, but this run uses {}",
            opt.name()
        )));
    }
    let params = model.named_parameters();
    let mut state = OptimizerState::default();
    for (name, e) in &file.tensors {
        let Some(rest) = name.strip_prefix(OPTIM_PREFIX) else {
            continue;
        };
        // `<key>.<parameter name>`: the keys (`exp_avg`, `momentum_buffer`) have no dots, the
        // names may (`0.1.weight`), so the key ends at the first dot.
        let found = rest.split_once('.').and_then(|(key, pname)| {
            let i = params.iter().position(|(p, _)| p == pname)?;
            Some((i, key, &params[i].1))
        });
        let Some((param, key, t)) = found else {
            return Err(bad(format!(
                "optimizer tensor '{name}' names no parameter of the model"
            )));
        };
        if e.shape != t.shape() {
            return Err(bad(format!(
                "optimizer tensor '{name}' has shape {:?}, expected {:?}",
                e.shape,
                t.shape()
            )));
        }
        state.tensors.push(StateTensor {
            key: key.to_string(),
            param,
            values: e.values.clone(),
        });
    }
    for (k, v) in &file.metadata {
        if let Some(key) = k.strip_prefix(OPTIM_PREFIX) {
            state.scalars.insert(key.to_string(), v.clone());
        }
    }
    opt.load_state(&state)
        .map_err(|e| bad(format!("optimizer state: {}", e.detail())))?;
    for (name, rng) in model.named_rngs() {
        let key = format!("{RNG_PREFIX}{name}");
        let v = file
            .metadata
            .get(&key)
            .ok_or_else(|| bad(format!("metadata lacks '{key}'")))?;
        let words: Vec<u64> = v.split(' ').filter_map(|w| u64::from_str_radix(w, 16).ok()).collect();
        let words: [u64; 4] = words
            .try_into()
            .map_err(|_| bad(format!("metadata '{key}' is not a generator state")))?;
        *rng.borrow_mut() = Rng::from_state(words);
    }
    Ok(file.metadata)
}

#[cfg(test)]
mod tests;
