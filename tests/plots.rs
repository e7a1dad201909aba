//! `mnist-cnn plot` and `eval --confusion-png` write real pictures (checked by decoding them).

use std::path::PathBuf;
use std::process::Command;

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mnist-cnn"))
        .env("MNIST_CNN_RUNS_DIR", std::env::temp_dir().join("mnist-cnn-test-runs"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn training_logs_plot_and_the_confusion_matrix_draws() {
    let d = std::env::temp_dir().join(format!("mnist-cnn-plots-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let p = |n: &str| -> PathBuf { d.join(n) };
    let s = |b: &PathBuf| b.to_str().unwrap().to_string();
    run(&[
        "train",
        "--epochs",
        "2",
        "--limit",
        "2000",
        "--log",
        &s(&p("a.jsonl")),
        "--save",
        &s(&p("m.safetensors")),
    ]);
    run(&[
        "train",
        "--epochs",
        "2",
        "--limit",
        "2000",
        "--seed",
        "1",
        "--log",
        &s(&p("b.csv")),
    ]);
    let out = run(&[
        "plot",
        &s(&p("a.jsonl")),
        &s(&p("b.csv")),
        "--out",
        &s(&p("curves.png")),
    ]);
    assert!(out.contains("(2 runs)"), "{out}");
    let img = image::open(p("curves.png")).unwrap();
    assert_eq!((img.width(), img.height()), (900, 800));
    run(&["plot", &s(&p("a.jsonl")), "--out", &s(&p("curves.svg"))]);
    let svg = std::fs::read_to_string(p("curves.svg")).unwrap();
    assert!(
        svg.lines().any(|l| l == "a") && svg.contains("validation accuracy"),
        "labelled by file"
    );
    run(&[
        "eval",
        "--model",
        &s(&p("m.safetensors")),
        "--confusion-png",
        &s(&p("cm.png")),
    ]);
    let cm = image::open(p("cm.png")).unwrap().to_rgb8();
    // Some cells are strongly blue (the diagonal).
    assert!(cm.pixels().filter(|px| px[2] == 255 && px[0] < 80).count() > 1000);
    std::fs::remove_dir_all(&d).unwrap();
}
