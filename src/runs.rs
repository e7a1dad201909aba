//! Where a run's results go and where they are found again: run directories
//! (`runs/<date>-<model>-seed<N>/`), the newest run's model, the model bundled in the binary, the
//! MNIST files, and how to call this program again (for the resume command it prints).
//!
//! A run directory holds `model.safetensors`, `metrics.jsonl`, `curves.png`, `settings.json` and
//! `checkpoints/`. The root is `$MNIST_CNN_RUNS_DIR`, else `runs` in the working directory.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::Error;
use crate::checkpoint::{TensorFile, load_state_dict};
use crate::nn::Module;

/// The environment variable naming the directory that holds run directories.
pub const RUNS_DIR_VAR: &str = "MNIST_CNN_RUNS_DIR";

/// The model built into the binary: `bncnn` trained by its recipe on all 60,000 MNIST training
/// images with seed 0 (`bench/best_model.sh` with `SAVE_DIR`, or `train --model bncnn
/// --train-on-all --seed 0 --save FILE`: the vector backends give the same bits), used when no
/// run has saved one. Its metadata holds its test accuracy.
pub const BUNDLED_MODEL: &[u8] = include_bytes!("../assets/models/bncnn_seed0.safetensors");

/// Where run directories go.
pub fn runs_root() -> PathBuf {
    std::env::var_os(RUNS_DIR_VAR)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("runs"), PathBuf::from)
}

/// `YYYYmmdd-HHMMSS` in UTC for a time since the epoch.
fn utc_stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Creates a new run directory `<root>/<YYYYmmdd-HHMMSS>-<model>-seed<N>` (UTC), with a
/// suffix `-2`, `-3`, ... when that name is taken.
pub fn new_run_dir(model: &str, seed: u64) -> crate::Result<PathBuf> {
    let root = runs_root();
    std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, "cannot create the directory", e))?;
    let base = format!("{}-{model}-seed{seed}", utc_stamp(SystemTime::now()));
    for k in 1.. {
        let dir = root.join(if k == 1 { base.clone() } else { format!("{base}-{k}") });
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&dir, "cannot create the run directory", e)),
        }
    }
    unreachable!("some suffix is free")
}

/// The model of the newest run under [`runs_root`] (by the file's modification time).
pub fn newest_run_model() -> Option<PathBuf> {
    std::fs::read_dir(runs_root())
        .ok()?
        .flatten()
        .map(|e| e.path().join("model.safetensors"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
}

/// A loaded model and where it came from.
pub struct LoadedModel {
    pub arch: &'static crate::nn::models::ModelSpec,
    pub model: Box<dyn Module>,
    pub file: TensorFile,
    /// The file, or "the bundled model".
    pub source: String,
}

/// "bncnn, seed 0, 99.50% test accuracy": the bundled model's architecture, seed and test
/// accuracy, from its metadata.
pub fn bundled_description() -> String {
    TensorFile::parse(BUNDLED_MODEL).map_or_else(|_| "unreadable".into(), |f| describe(&f))
}

/// A weights file's architecture, seed and test accuracy, from its metadata.
fn describe(file: &TensorFile) -> String {
    let get = |k: &str| file.metadata.get(k).cloned().unwrap_or_else(|| "?".into());
    let acc = file
        .metadata
        .get("test_accuracy")
        .and_then(|a| a.parse::<f64>().ok())
        .map_or("?".into(), |a| format!("{:.2}%", 100.0 * a));
    format!("{}, seed {}, {acc} test accuracy", get("architecture"), get("seed"))
}

/// The model of `--model FILE`; without it the newest run's model, else the bundled one. Says
/// which on standard error when it was not given.
pub fn resolve_model(given: Option<&Path>) -> crate::Result<LoadedModel> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => match newest_run_model() {
            Some(p) => {
                eprintln!("using the newest run's model {} (choose with --model)", p.display());
                p
            }
            None => return load_bundled(),
        },
    };
    let (arch, model, file) = crate::checkpoint::load_model(&path)?;
    Ok(LoadedModel {
        arch,
        model,
        file,
        source: path.display().to_string(),
    })
}

/// The model built into the binary, parsed once; says so on standard error.
fn load_bundled() -> crate::Result<LoadedModel> {
    let here = Path::new("<bundled model>");
    let file = TensorFile::parse(BUNDLED_MODEL).map_err(|e| e.at(here))?;
    eprintln!(
        "using the bundled model ({}): no run in {} has saved one",
        describe(&file),
        runs_root().display()
    );
    let arch = file.architecture().map_err(|e| e.at(here))?;
    let model = arch.build(&mut crate::rng::Rng::new(0));
    load_state_dict(model.as_ref(), &file).map_err(|e| e.at(here))?;
    Ok(LoadedModel {
        arch,
        model,
        file,
        source: "the bundled model".into(),
    })
}

/// How to call this program again from the same working directory: `cargo run --release --`
/// when it was started by `cargo run`, `mnist-cnn` when that name on PATH is this program,
/// else its full path.
pub fn program_invocation() -> String {
    let exe = std::env::current_exe().ok();
    let by_cargo = std::env::var_os("CARGO").is_some()
        && std::env::var("CARGO_PKG_NAME").is_ok_and(|n| n == env!("CARGO_PKG_NAME"));
    if by_cargo {
        let release = exe
            .as_ref()
            .is_some_and(|e| e.parent().is_some_and(|d| d.ends_with("release")));
        return if release {
            "cargo run --release --"
        } else {
            "cargo run --"
        }
        .into();
    }
    let Some(exe) = exe else {
        return env!("CARGO_PKG_NAME").into();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            d.join(env!("CARGO_PKG_NAME"))
                .canonicalize()
                .ok()
                .zip(exe.canonicalize().ok())
                .is_some_and(|(a, b)| a == b)
        })
    });
    if on_path {
        env!("CARGO_PKG_NAME").into()
    } else {
        exe.display().to_string()
    }
}

/// Quotes a path for a shell command line when it needs it.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Whether `dir` holds the four MNIST IDX files (gzipped or not).
fn has_mnist(dir: &Path) -> bool {
    [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]
    .iter()
    .all(|f| dir.join(f).is_file() || dir.join(format!("{f}.gz")).is_file())
}

/// The places MNIST is looked for, in order: `data/mnist` in the working directory (a checkout),
/// beside the program (`<bin>/data/mnist`, `<bin>/../share/mnist-cnn/data/mnist`), the checkout
/// when the program runs under `cargo run` or `cargo test` (which set `CARGO_MANIFEST_DIR`), and
/// the download cache. An installed program never depends on the checkout it was built from.
pub fn mnist_candidates() -> Vec<PathBuf> {
    let mut c = vec![PathBuf::from("data/mnist")];
    if let Some(bin) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        c.push(bin.join("data/mnist"));
        c.push(bin.join("../share/mnist-cnn/data/mnist"));
    }
    if let Some(m) = std::env::var_os("CARGO_MANIFEST_DIR") {
        c.push(PathBuf::from(m).join("data/mnist"));
    }
    c.push(crate::data::download::cache_dir(None).join("mnist"));
    c
}

/// The first place in [`mnist_candidates`] that holds MNIST; an error listing them, with the
/// command that fetches it, when none does (an [`Error::NotFound`] without a path: it was
/// looked for in several).
pub fn find_mnist() -> crate::Result<PathBuf> {
    let c = mnist_candidates();
    if let Some(d) = c.iter().find(|d| has_mnist(d)) {
        return Ok(d.clone());
    }
    let looked: Vec<String> = c.iter().map(|d| d.display().to_string()).collect();
    Err(Error::NotFound {
        path: None,
        what: format!(
            "MNIST not found (looked in {}); fetch it (11 MB) with `{} download mnist`, or pass --data-dir DIR",
            looked.join(", "),
            program_invocation()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps_are_civil_dates() {
        let at = |s: u64| utc_stamp(UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(at(0), "19700101-000000");
        assert_eq!(at(951_782_400), "20000229-000000"); // a leap day
        assert_eq!(at(1_796_083_199), "20261130-235959");
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("runs/a-b_1/ck"), "runs/a-b_1/ck");
        assert_eq!(shell_quote("my dir/it's"), "'my dir/it'\\''s'");
    }

    #[test]
    fn the_bundled_model_loads() {
        let f = TensorFile::parse(BUNDLED_MODEL).unwrap();
        assert_eq!(f.architecture().unwrap().name, "bncnn");
        // Trained on all 60,000 images, so its metrics are the test split's only.
        assert_eq!(f.metadata["train_on_all"], "true");
        assert!(!f.metadata.contains_key("valid_accuracy"));
        let acc: f64 = f.metadata["test_accuracy"].parse().unwrap();
        assert!(acc >= 0.994, "{acc}");
        assert!(
            bundled_description().starts_with("bncnn, seed 0, 99."),
            "{}",
            bundled_description()
        );
    }
}
