//! Replays every committed seed (`fuzz/corpus/<target>/`), every committed crash input
//! (`fuzz/regressions/<target>/`) and any crash input a local fuzzing run left
//! (`fuzz/artifacts/<target>/`) through the fuzz targets' own code ([`mnist_cnn::fuzzing`]), on
//! stable Rust: each must end without a panic, in bounded time, in `Ok` or a non-empty error.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mnist_cnn::fuzzing::{TARGETS, Target};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Runs one target on one file; a panic, an empty error or more than 10 s is a failure.
fn replay(target: &str, f: Target, path: &Path) -> Result<Result<(), String>, String> {
    let data = std::fs::read(path).unwrap();
    let t0 = Instant::now();
    let out =
        catch_unwind(AssertUnwindSafe(|| f(&data))).map_err(|_| format!("{target}: {} panicked", path.display()))?;
    let took = t0.elapsed();
    if took > Duration::from_secs(10) {
        return Err(format!("{target}: {} took {took:?}", path.display()));
    }
    if let Err(e) = &out
        && e.trim().is_empty()
    {
        return Err(format!("{target}: {} gave an empty error", path.display()));
    }
    Ok(out)
}

#[test]
fn every_corpus_and_crash_input_replays_cleanly() {
    let mut failures = Vec::new();
    let mut count = 0;
    for (name, f) in TARGETS {
        let seeds = files(&fuzz_dir().join("corpus").join(name));
        assert!(!seeds.is_empty(), "fuzz/corpus/{name} holds no seeds");
        let crashes = [
            fuzz_dir().join("regressions").join(name),
            fuzz_dir().join("artifacts").join(name),
        ];
        for path in seeds
            .iter()
            .chain(crashes.iter().flat_map(|d| files(d)).collect::<Vec<_>>().iter())
        {
            count += 1;
            if let Err(e) = replay(name, f, path) {
                failures.push(e);
            }
        }
    }
    eprintln!("replayed {count} inputs");
    mnist_cnn::fuzzing::remove_temp_files();
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The seeds reach the readers' success paths too (a target that rejected everything would
/// fuzz nothing but its first check).
#[test]
fn valid_seeds_are_accepted_and_broken_ones_refused() {
    let cases = [
        ("idx", "labels10", true),
        ("idx", "images2", true),
        ("idx", "huge_dims", false),
        ("gzip", "two_members.gz", true),
        ("gzip", "t10k-labels.gz", true),
        ("pickle", "mnist_py2.pkl", true),
        ("pickle", "mnist_py3_p4.pkl", true),
        ("pickle", "global.pkl", false),
        ("safetensors", "mnist_cnn_seed0.safetensors", true),
        ("safetensors", "torch_cnn.safetensors", true),
        ("image", "font_1.png", true),
        ("image", "broken.png", false),
        ("metrics_log", "big_epoch.csv", false),
        ("http_response", "ok", true),
        ("http_response", "chunked", true),
        ("http_response", "redirect", false),
        ("http_response", "long_length", false),
    ];
    for (target, file, ok) in cases {
        let f = TARGETS.iter().find(|(n, _)| *n == target).unwrap().1;
        let out = replay(target, f, &fuzz_dir().join("corpus").join(target).join(file)).unwrap();
        assert_eq!(out.is_ok(), ok, "{target}/{file}: {out:?}");
    }
    mnist_cnn::fuzzing::remove_temp_files();
}
