//! Ctrl-C during training: it stops after the current batch, keeps the log, saves a checkpoint,
//! exits non-zero saying how to resume, and the resumed run ends with exactly the weights of an
//! uninterrupted one.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use mnist_cnn::checkpoint::TensorFile;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mnist-cnn"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("MNIST_CNN_RUNS_DIR", std::env::temp_dir().join("mnist-cnn-test-runs"));
    c
}

#[test]
fn ctrl_c_stops_saves_and_resumes_bit_for_bit() {
    interrupt_and_resume("sgd", &[]);
}

/// The same with AdamW's state, a one-cycle schedule (its position comes from the checkpoint's
/// position) and augmented batches (a function of the seed, epoch and sample).
#[test]
fn ctrl_c_and_resume_with_adamw_onecycle_and_augmentation() {
    interrupt_and_resume(
        "adamw",
        &[
            "--model",
            "cnn-norelu",
            "--optimizer",
            "adamw",
            "--lr",
            "0.003",
            "--weight-decay",
            "0.01",
            "--schedule",
            "onecycle",
            "--augment",
            "rotate=10,scale=0.1,shift=2",
        ],
    );
}

fn interrupt_and_resume(tag: &str, extra: &[&str]) {
    let d = std::env::temp_dir().join(format!("mnist-cnn-int-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let p = |n: &str| -> String { d.join(n).to_str().unwrap().to_string() };
    let settings = ["train", "--epochs", "2", "--seed", "7", "--limit", "30000"];
    let whole = bin()
        .args(settings)
        .args(extra)
        .args(["--save", &p("whole.safetensors")])
        .output()
        .unwrap();
    assert!(whole.status.success(), "{}", String::from_utf8_lossy(&whole.stderr));

    // The interrupted run names every output; the resume command must bring them all back.
    let mut child = bin()
        .args(settings)
        .args(extra)
        .args([
            "--checkpoint-dir",
            &p("ck"),
            "--log",
            &p("m.jsonl"),
            "--save",
            &p("resumed.safetensors"),
        ])
        .env_remove("CARGO")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the header is printed the handler is installed; interrupt during the first epoch.
    let mut reader = BufReader::new(child.stdout.as_mut().unwrap());
    let mut header = String::new();
    while !header.starts_with("model cnn") {
        header.clear();
        assert!(reader.read_line(&mut header).unwrap() > 0, "no header line");
    }
    std::thread::sleep(Duration::from_millis(150));
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted in epoch"), "{err}");
    let saved: Vec<String> = std::fs::read_dir(d.join("ck"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        saved.iter().any(|n| n.contains("-batch-")),
        "a mid-epoch checkpoint: {saved:?}"
    );
    assert!(
        std::fs::read_to_string(d.join("m.jsonl"))
            .unwrap()
            .starts_with("{\"type\":\"header\"")
    );
    // Ctrl-C saved the model as trained so far.
    assert!(err.contains("resumed.safetensors (as trained so far)"), "{err}");
    let partial = TensorFile::load(&PathBuf::from(p("resumed.safetensors"))).unwrap();
    assert!(
        partial.metadata["interrupted"].starts_with("epoch 1 after"),
        "{:?}",
        partial.metadata
    );

    // Run the printed command itself: the program's own path (not on PATH here), no other flags.
    let cmd = err
        .split("resume with: ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim();
    assert!(
        cmd.starts_with(env!("CARGO_BIN_EXE_mnist-cnn")) && cmd.ends_with(" --epochs 2"),
        "{cmd}"
    );
    let resumed = Command::new("sh")
        .args(["-c", cmd])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("MNIST_CNN_RUNS_DIR", std::env::temp_dir().join("mnist-cnn-test-runs"))
        .output()
        .unwrap();
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    let (a, b) = (
        TensorFile::load(&PathBuf::from(p("whole.safetensors"))).unwrap(),
        TensorFile::load(&PathBuf::from(p("resumed.safetensors"))).unwrap(),
    );
    for (name, t) in &a.tensors {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&t.values), bits(&b.tensors[name].values), "{name}");
    }
    assert!(
        !b.metadata.contains_key("interrupted"),
        "the final model replaced the partial one"
    );
    // The log continues: a header per run, then epochs 1 and 2 from the resumed run; the
    // checkpoints continue too.
    let log = std::fs::read_to_string(d.join("m.jsonl")).unwrap();
    assert_eq!(log.matches("\"type\":\"header\"").count(), 2, "{log}");
    assert!(
        log.contains("\"type\":\"epoch\",\"epoch\":1,") && log.contains("\"type\":\"epoch\",\"epoch\":2,"),
        "{log}"
    );
    assert!(d.join("ck/checkpoint-epoch-0002.safetensors").is_file());
    std::fs::remove_dir_all(&d).unwrap();
}
