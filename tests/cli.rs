//! The `mnist-cnn` binary: a short training run, the pickle path giving the same numbers as the
//! IDX path, and clear errors for bad input.

use std::path::PathBuf;
use std::process::Command;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mnist-cnn"));
    c.env("MNIST_CNN_RUNS_DIR", std::env::temp_dir().join("mnist-cnn-test-runs"));
    c
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// stdout without the timing columns, which differ between runs, and the data's location.
fn without_times(out: &str) -> String {
    out.lines()
        .filter(|l| !l.starts_with("data mnist from "))
        .map(|l| l.split("  time ").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn help_lists_every_flag_with_its_default() {
    let out = bin().args(["train", "--help"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--model",
        "--epochs",
        "--batch-size",
        "--optimizer",
        "--lr",
        "--momentum",
        "--weight-decay",
        "--schedule",
        "--seed",
        "--no-shuffle",
        "--threads",
        "--data-dir",
        "--format",
        "--train-on-all",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
    for default in [
        "10 for cnn",
        "64 for cnn",
        "sgd for cnn",
        "0.1 for cnn",
        "0.9 for cnn",
        "constant for cnn",
    ] {
        assert!(text.contains(default), "--help lacks the default {default}:\n{text}");
    }
    // Every registered model is listed with its description.
    assert!(
        text.contains("cnn:") && text.contains("logistic:") && text.contains("bncnn:"),
        "{text}"
    );
}

#[test]
fn train_on_all_uses_the_validation_images_too_and_reports_the_test_split_each_epoch() {
    let out = bin()
        .current_dir(root())
        .args([
            "train",
            "--train-on-all",
            "--epochs",
            "1",
            "--limit",
            "800",
            "--threads",
            "1",
        ])
        .args(["--no-save", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("800 train / 0 valid / 10000 test images"), "{err}");
    assert!(err.contains("epoch  1/1  test_loss "), "{err}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The epoch's evaluation is of the test split: the same model on the same images as the
    // final test.
    assert_eq!(summary["epochs"][0]["valid_accuracy"], summary["test"]["accuracy"]);
    assert_eq!(summary["epochs"][0]["valid_loss"], summary["test"]["loss"]);
}

#[test]
fn short_run_prints_epochs_and_test_metrics() {
    let out = bin()
        .current_dir(root())
        .args(["train", "--epochs", "2", "--limit", "3000", "--threads", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("epoch  1/2  valid_loss") && text.contains("epoch  2/2"),
        "{text}"
    );
    assert!(text.contains("test  loss"), "{text}");
}

#[test]
fn pickle_and_idx_give_the_same_output_for_the_same_seed() {
    let pkl = root().join("../shared/data/mnist.pkl.gz");
    if !pkl.is_file() {
        eprintln!("skipped: {} not present", pkl.display());
        return;
    }
    let run = |extra: &[&str]| {
        let mut args = vec!["train", "--epochs", "1", "--limit", "2000", "--seed", "4", "--no-save"];
        args.extend_from_slice(extra);
        let out = bin().current_dir(root()).args(&args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        without_times(&String::from_utf8(out.stdout).unwrap())
    };
    let idx = run(&[]);
    let pickle = run(&[
        "--format",
        "pickle",
        "--data-dir",
        pkl.parent().unwrap().to_str().unwrap(),
    ]);
    assert_eq!(idx, pickle);
}

#[test]
fn bad_data_dir_is_a_clear_error_not_a_panic() {
    let out = bin().args(["train", "--data-dir", "/no/such/dir"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("error: /no/such/dir/train-images-idx3-ubyte: not found"),
        "{err}"
    );
    let out = bin().args(["train", "--model", "mlp"]).output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("invalid value 'mlp'")
            && err.contains("[possible values: cnn, logistic, cnn-norelu, lenet5, bncnn]"),
        "{err}"
    );
}

/// A dataset that is not there: one line naming the file, with the command that fetches it.
#[test]
fn a_missing_dataset_is_one_line_naming_the_file_and_how_to_get_it() {
    let line = |args: &[&str], home: &std::path::Path| {
        let out = bin().env("XDG_DATA_HOME", home).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    // An empty download cache: Fashion-MNIST was never fetched.
    let home = std::env::temp_dir().join(format!("mnist-cnn-cli-nodata-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let file = home.join("mnist-cnn/fashion-mnist/train-images-idx3-ubyte");
    assert_eq!(
        line(&["train", "--dataset", "fashion-mnist", "--no-save"], &home),
        format!(
            "error: {}: not found (nor with .gz) (run `mnist-cnn download fashion-mnist` first, or pass \
             --data-dir)\n",
            file.display()
        )
    );
    // A directory given for another dataset than MNIST gets the hint too ...
    assert_eq!(
        line(&["train", "--dataset", "kmnist", "--data-dir", "/no/such/dir"], &home),
        "error: /no/such/dir/train-images-idx3-ubyte: not found (nor with .gz) (run `mnist-cnn download \
         kmnist` first, or pass --data-dir)\n"
    );
    // ... and MNIST's does not (its hint comes when no directory is given and none is found).
    assert_eq!(
        line(&["train", "--data-dir", "/no/such/dir"], &home),
        "error: /no/such/dir/train-images-idx3-ubyte: not found (nor with .gz)\n"
    );
    std::fs::remove_dir_all(&home).unwrap();
}

/// `bench` runs every workload and reports each figure, the per-layer rows among them, in text
/// and in JSON.
#[test]
fn bench_reports_throughput_latency_and_the_step_breakdown() {
    let args = [
        "bench",
        "--threads",
        "2",
        "--repeats",
        "1",
        "--profile-batches",
        "3",
        "--latency-images",
        "10",
    ];
    let out = bin().args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    for row in [
        "training",
        "inference b1000",
        "inference b1 ",
        "GFLOP/s",
        "peak RSS",
        "data: batch 64",
        "conv2d_relu 16x14x14",
        "sgd: step + zero_grad",
        "whole step (wall)",
    ] {
        assert!(text.contains(row), "bench output lacks {row:?}:\n{text}");
    }
    let out = bin().args(args).arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json = String::from_utf8(out.stdout).unwrap();
    let number = |key: &str| -> f64 {
        let at = json
            .find(&format!("\"{key}\":"))
            .unwrap_or_else(|| panic!("{key} missing: {json}"));
        let rest = &json[at + key.len() + 3..];
        rest[..rest.find([',', '}']).unwrap()].parse().unwrap()
    };
    for key in [
        "train_samples_per_sec",
        "infer_batch1000_images_per_sec",
        "infer_batch1_us_median",
        "step_ms",
    ] {
        assert!(number(key) > 0.0, "{key} in {json}");
    }
    assert_eq!(number("threads"), 2.0);
}

/// `train --json` prints one JSON summary on stdout (progress on stderr), the run directory holds
/// every result, and `eval` without `--model` takes that run's model.
#[test]
fn json_summary_run_directory_and_eval_of_the_newest_run() {
    let runs = std::env::temp_dir().join(format!("mnist-cnn-cli-runs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&runs);
    let out = bin()
        .current_dir(root())
        .env("MNIST_CNN_RUNS_DIR", &runs)
        .args(["train", "--epochs", "1", "--limit", "1000", "--threads", "1", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON value");
    assert_eq!(v["model"], "cnn");
    assert_eq!(v["epochs"][0]["epoch"], 1);
    let acc = v["test"]["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc) && v["test"]["images"] == 10000, "{v}");
    let run_dir = PathBuf::from(v["run_dir"].as_str().unwrap());
    for f in [
        "model.safetensors",
        "metrics.jsonl",
        "curves.png",
        "settings.json",
        "checkpoints/checkpoint-epoch-0001.safetensors",
    ] {
        assert!(run_dir.join(f).is_file(), "{f} missing in {}", run_dir.display());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("epoch  1/1  valid_loss"), "progress goes to stderr: {err}");
    let settings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("settings.json")).unwrap()).unwrap();
    assert_eq!(
        (settings["seed"].clone(), settings["limit"].clone()),
        (0.into(), 1000.into())
    );
    let log = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert!(
        log.contains("\"type\":\"batch\"") && log.contains("\"train_accuracy\":"),
        "{log}"
    );

    let out = bin()
        .current_dir(root())
        .env("MNIST_CNN_RUNS_DIR", &runs)
        .args(["eval", "--json", "--threads", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("using the newest run's model") && err.contains("model.safetensors"),
        "{err}"
    );
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!((e["accuracy"].as_f64().unwrap() - acc).abs() < 1e-6, "{e} vs {v}");
    std::fs::remove_dir_all(&runs).unwrap();
}

/// `--simd` and `MNIST_CNN_SIMD` choose the backend, which `train` and `bench` name; a backend
/// this CPU lacks, or an unknown name, is a one-line error (exit 1), not a panic.
#[test]
fn simd_override_is_named_and_a_missing_backend_is_a_clear_error() {
    let train = ["train", "--epochs", "1", "--limit", "200", "--threads", "1", "--quiet"];
    let out = bin()
        .current_dir(root())
        .args(train)
        .args(["--simd", "portable"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().any(|l| l.ends_with("SIMD portable")), "{text}");
    let out = bin()
        .current_dir(root())
        .args(train)
        .env("MNIST_CNN_SIMD", "portable")
        .output()
        .unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().contains("SIMD portable"));
    // One backend this machine cannot have.
    let missing = if cfg!(target_arch = "x86_64") { "neon" } else { "avx2" };
    let check_error = |out: std::process::Output, what: &str| {
        assert_eq!(out.status.code(), Some(1), "{what}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.starts_with("error: ") && err.contains(what) && err.lines().count() == 1 && !err.contains("panicked"),
            "{err}"
        );
    };
    let out = bin().args(["bench", "--simd", missing]).output().unwrap();
    check_error(out, &format!("SIMD backend {missing} is not supported by this CPU"));
    let out = bin().args(train).env("MNIST_CNN_SIMD", missing).output().unwrap();
    check_error(
        out,
        &format!("MNIST_CNN_SIMD={missing}: SIMD backend {missing} is not supported"),
    );
    let out = bin().args(train).env("MNIST_CNN_SIMD", "sse9").output().unwrap();
    check_error(out, "MNIST_CNN_SIMD=sse9 is not a SIMD backend");
    let out = bin()
        .args([
            "bench",
            "--json",
            "--simd",
            "portable",
            "--repeats",
            "1",
            "--profile-batches",
            "1",
        ])
        .args(["--latency-images", "1", "--threads", "1"])
        .output()
        .unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().contains("\"simd\":\"portable\""));
}

#[test]
fn optimizer_schedule_and_model_flags_reach_the_run_and_bad_ones_are_refused() {
    let out = bin()
        .current_dir(root())
        .args([
            "train",
            "--model",
            "cnn-norelu",
            "--optimizer",
            "adamw",
            "--lr",
            "0.003",
        ])
        .args(["--weight-decay", "0.01", "--schedule", "onecycle", "--epochs", "1"])
        .args(["--augment", "rotate=5,shift=1"])
        .args(["--limit", "1000", "--threads", "1", "--no-save", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("model cnn-norelu (3930 parameters), AdamW lr 0.003 betas (0.9, 0.999) weight_decay 0.01, schedule onecycle, augment rotate=5,shift=1, batch 64"),
        "{err}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["model"], "cnn-norelu");
    for (args, what) in [
        (vec!["--schedule", "sometimes"], "--schedule sometimes:"),
        (
            vec!["--augment", "wobble=3"],
            "--augment wobble=3: bad augmentation 'wobble=3': unknown term 'wobble'",
        ),
        (
            vec!["--optimizer", "adam", "--momentum", "1"],
            "adam's beta1 (--momentum) must be below 1, got 1",
        ),
        (
            vec!["--weight-decay", "-1"],
            "weight decay must be a finite number >= 0, got -1",
        ),
        (
            vec!["--model", "resnet"],
            "invalid value 'resnet' for '--model <MODEL>'",
        ),
    ] {
        let out = bin()
            .current_dir(root())
            .arg("train")
            .args(&args)
            .args(["--no-save"])
            .output()
            .unwrap();
        let e = String::from_utf8(out.stderr).unwrap();
        assert!(!out.status.success() && e.contains(what), "{args:?}: {e}");
    }
    let out = bin().arg("models").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for name in ["cnn ", "logistic ", "cnn-norelu ", "lenet5 "] {
        assert!(text.contains(name), "{text}");
    }
}
