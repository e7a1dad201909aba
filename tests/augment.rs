//! `bench --augment`: the augmentation's time and share of the training step in the report, and
//! a clear error for a bad spec.

use std::process::Command;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mnist-cnn"));
    c.env("MNIST_CNN_RUNS_DIR", std::env::temp_dir().join("mnist-cnn-test-runs"));
    c
}

#[test]
fn bench_reports_the_augmentation_share_in_text_and_json() {
    let spec = "rotate=10,scale=0.1,shift=2,shear=5,elastic=34:4";
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
        "--augment",
        spec,
    ];
    let out = bin().args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("augmentation"))
        .unwrap_or_else(|| panic!("no augmentation line:\n{text}"));
    assert!(
        line.contains("ms/batch") && line.contains("% of the training step") && line.contains(spec),
        "{line}"
    );
    assert!(text.contains("whole step (wall)"), "{text}");

    let out = bin().args(args).arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["augment"], spec);
    let ms = json["augment_ms_per_batch"].as_f64().unwrap();
    let share = json["augment_share_of_step"].as_f64().unwrap();
    let step = json["step_ms"].as_f64().unwrap();
    assert!(ms > 0.0 && share > 0.0 && share < 1.0, "{json}");
    assert!((ms / step - share).abs() < 1e-3, "share {share} vs {ms} / {step}");
}

#[test]
fn bad_augment_spec_is_refused_with_the_reason() {
    let out = bin().args(["bench", "--augment", "rotate=10,zoom=2"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("--augment") && err.contains("unknown term 'zoom'") && err.contains("rotate=DEG"),
        "{err}"
    );
}
