//! Checkpoints through the command line: a run interrupted after epoch k and resumed ends with
//! exactly the weights of the uninterrupted run; saved weights evaluate and restart training.

use std::path::{Path, PathBuf};
use std::process::Command;

use mnist_cnn::checkpoint::TensorFile;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mnist-cnn"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("MNIST_CNN_RUNS_DIR", std::env::temp_dir().join("mnist-cnn-test-runs"));
    c
}

fn run(args: &[&str]) -> String {
    let out = bin().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mnist-cnn-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The epoch lines without their timing.
fn epochs(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with("epoch"))
        .map(|l| l.split("  time ").next().unwrap().to_string())
        .collect()
}

#[test]
fn resumed_training_equals_uninterrupted_training_bit_for_bit() {
    let d = tmpdir("resume");
    let common = ["train", "--limit", "3000", "--seed", "5", "--batch-size", "32"];
    let whole = d.join("whole.safetensors");
    let a = run(&[&common[..], &["--epochs", "3", "--save", s(&whole)]].concat());
    // Interrupted after epoch 1 (a run of 1 epoch), then resumed to 3 with default flags:
    // the checkpoint's settings (seed 5, batch 32, the limit) must be the ones used.
    let ck = d.join("ck");
    run(&[&common[..], &["--epochs", "1", "--checkpoint-dir", s(&ck)]].concat());
    assert!(ck.join("checkpoint-epoch-0001.safetensors").is_file());
    let resumed = d.join("resumed.safetensors");
    let b = run(&[
        "train",
        "--epochs",
        "3",
        "--resume",
        s(&ck),
        "--checkpoint-dir",
        s(&ck),
        "--save",
        s(&resumed),
    ]);
    assert!(
        b.contains("resuming from") && b.contains("(epoch 1 done, 0 batches of the next)"),
        "{b}"
    );
    assert_eq!(epochs(&a)[1..], epochs(&b)[..], "epochs 2 and 3 print the same figures");
    let (wa, wb) = (TensorFile::load(&whole).unwrap(), TensorFile::load(&resumed).unwrap());
    assert_eq!(wa.tensors.len(), 6);
    for (name, t) in &wa.tensors {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&t.values), bits(&wb.tensors[name].values), "{name} differs");
    }
    assert!(ck.join("checkpoint-epoch-0003.safetensors").is_file());
    let ck3 = TensorFile::load(&ck.join("checkpoint-epoch-0003.safetensors")).unwrap();
    assert!(ck3.tensors.contains_key("optim.momentum_buffer.conv1.weight"));
    assert_eq!(ck3.metadata["epoch"], "3");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn saved_weights_evaluate_and_initialise_a_new_run() {
    let d = tmpdir("save");
    let w = d.join("m.safetensors");
    let out = run(&["train", "--epochs", "1", "--limit", "5000", "--save", s(&w)]);
    let test_line = out.lines().find(|l| l.starts_with("test")).unwrap().to_string();
    let f = TensorFile::load(&w).unwrap();
    assert_eq!(f.metadata["architecture"], "cnn");
    assert_eq!(f.tensors["conv2.weight"].shape, vec![16, 16, 3, 3]);
    for k in [
        "seed",
        "epochs_trained",
        "valid_loss",
        "test_accuracy",
        "program",
        "input_scaling",
        "dataset",
    ] {
        assert!(f.metadata.contains_key(k), "metadata lacks {k}: {:?}", f.metadata);
    }
    // eval on the test split gives the loss and accuracy that training printed.
    let e = run(&["eval", "--model", s(&w), "--batch-size", "128"]);
    let acc: f32 = test_line
        .split("acc")
        .nth(1)
        .unwrap()
        .trim()
        .split('%')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(e.contains(&format!("accuracy {acc:.2}%")), "{e}\nvs {test_line}");
    assert!(e.contains("confusion matrix") && e.contains("precision"), "{e}");
    let j = run(&["eval", "--model", s(&w), "--json", "--split", "valid"]);
    assert!(j.starts_with("{\"loss\":") && j.contains("\"images\":10000"), "{j}");
    // --init starts from the saved weights: with lr 0 they stay as saved, so the validation
    // loss is the saved model's.
    let first = |o: &str| -> f32 {
        o.lines()
            .find(|l| l.starts_with("epoch"))
            .unwrap()
            .split_whitespace()
            .nth(3)
            .unwrap()
            .parse()
            .unwrap()
    };
    let warm = run(&["train", "--epochs", "1", "--limit", "64", "--lr", "0", "--init", s(&w)]);
    let saved: f32 = f.metadata["valid_loss"].parse().unwrap();
    assert!(
        (first(&warm) - saved).abs() < 1e-4,
        "warm start {} vs saved {saved}",
        first(&warm)
    );
    let cold = run(&["train", "--epochs", "1", "--limit", "64", "--lr", "0"]);
    assert!(
        (first(&cold) - saved).abs() > 0.1,
        "a random start differs: {}",
        first(&cold)
    );
    // A logistic file given to the CNN is refused with a clear message.
    let lw = d.join("lin.safetensors");
    run(&[
        "train",
        "--model",
        "logistic",
        "--epochs",
        "1",
        "--limit",
        "100",
        "--save",
        s(&lw),
    ]);
    let out = bin().args(["train", "--init", s(&lw)]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("lin.safetensors: holds a logistic model, --model is cnn"),
        "{err}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}
