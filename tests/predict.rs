//! `mnist-cnn predict` on images people make: hand-made digits (fonts, colours, formats, from
//! scripts/make_digit_images.py), MNIST digits blown up, inverted and moved on a canvas, and
//! broken or blank files. The model is tests/fixtures/mnist_cnn_seed0.safetensors, written by
//! `mnist-cnn train --save` (seed 0, 10 epochs, test accuracy 95.59%).

use std::path::PathBuf;
use std::process::Command;

use image::{GrayImage, Luma, imageops};
use mnist_cnn::checkpoint::load_model;
use mnist_cnn::data::{Format, load_mnist};
use mnist_cnn::ops::argmax_rows;
use mnist_cnn::tensor::no_grad;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model_path() -> String {
    root()
        .join("tests/fixtures/mnist_cnn_seed0.safetensors")
        .to_str()
        .unwrap()
        .to_string()
}

fn predict(args: &[String]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mnist-cnn"))
        .env("MNIST_CNN_RUNS_DIR", std::env::temp_dir().join("mnist-cnn-test-runs"))
        .arg("predict")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// "file: digit ..." lines -> (file name, digit).
fn digits(stdout: &str) -> Vec<(String, usize)> {
    stdout
        .lines()
        .map(|l| {
            let (f, rest) = l.split_once(": ").unwrap();
            (
                f.rsplit('/').next().unwrap().to_string(),
                rest.split_whitespace().next().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn hand_made_digits_are_mostly_recognised_and_bad_files_are_named() {
    let dir = root().join("tests/fixtures/digits");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path().to_str().unwrap().to_string())
        .collect();
    files.sort();
    let mut args = vec!["--model".to_string(), model_path(), "--top".into(), "1".into()];
    args.extend(files.iter().cloned());
    let (ok, out, err) = predict(&args);
    assert!(!ok, "a run with failed images exits non-zero");
    assert!(err.contains("blank.png: no digit found"), "{err}");
    assert!(err.contains("broken.png: not a readable image"), "{err}");
    assert!(err.contains("2 of 52 images could not be predicted"), "{err}");
    let got = digits(&out);
    assert_eq!(got.len(), 50, "every readable image is predicted");
    // The name says the digit: font_7.png, inv_3.jpg, ...
    let right = got
        .iter()
        .filter(|(f, d)| f.split(['_', '.']).nth(1).unwrap().parse::<usize>().unwrap() == *d)
        .count();
    // Typeset digits are not handwriting; this model gets 43 of 50 (86%).
    assert!(right >= 40, "{right} of 50 right:\n{out}");
    for fmt in ["png", "jpg", "bmp", "gif", "pgm"] {
        assert!(got.iter().any(|(f, _)| f.ends_with(fmt)), "{fmt} decoded");
    }
}

#[test]
fn mnist_digits_drawn_large_dark_on_light_and_off_centre_keep_their_prediction() {
    let root = root();
    let data = load_mnist(&root.join("data/mnist"), Format::Idx).unwrap();
    let (_, model, _) = load_model(std::path::Path::new(&model_path())).unwrap();
    let n = 40;
    let (x, labels) = data.test.batch(&(0..n).collect::<Vec<_>>());
    model.set_training(false);
    let direct = argmax_rows(&no_grad(|| model.forward(&x)).to_vec(), 10);
    let tmp = std::env::temp_dir().join(format!("mnist-cnn-predict-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut args = vec![
        "--model".to_string(),
        model_path(),
        "--json".into(),
        "--save-preprocessed".into(),
    ];
    args.push(tmp.join("seen").to_str().unwrap().to_string());
    for i in 0..n {
        let (px, _) = data.test.get(i);
        let small = GrayImage::from_fn(28, 28, |x, y| Luma([255 - px[(y * 28 + x) as usize]]));
        let big = imageops::resize(&small, 112, 112, imageops::FilterType::Triangle);
        let mut canvas = GrayImage::from_pixel(260, 170, Luma([250]));
        imageops::overlay(&mut canvas, &big, 20 + (i as i64 * 7) % 120, 10 + (i as i64 * 5) % 40);
        let p = tmp.join(format!("d{i:02}.png"));
        canvas.save(&p).unwrap();
        args.push(p.to_str().unwrap().to_string());
    }
    let (ok, out, err) = predict(&args);
    assert!(ok, "{err}");
    assert!(out.starts_with("[{\"file\":") && out.trim_end().ends_with("]"), "{out}");
    let got: Vec<usize> = out
        .split("\"digit\":")
        .skip(1)
        .map(|s| s.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(got.len(), n);
    let same = got.iter().zip(&direct).filter(|(a, b)| a == b).count();
    let right = got.iter().zip(&labels).filter(|(a, b)| a == b).count();
    assert!(
        same >= 36,
        "{same} of {n} as on the original 28x28 ({got:?} vs {direct:?})"
    );
    assert!(right >= 36, "{right} of {n} right");
    assert!(tmp.join("seen/d00.png").is_file(), "what the network saw is saved");
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn no_preprocess_takes_a_28x28_image_as_it_is() {
    let data = load_mnist(&root().join("data/mnist"), Format::Idx).unwrap();
    let (px, label) = data.test.get(0);
    let tmp = std::env::temp_dir().join(format!("mnist-cnn-asis-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let p = tmp.join("seven.pgm");
    GrayImage::from_raw(28, 28, px.to_vec()).unwrap().save(&p).unwrap();
    let big = tmp.join("big.png");
    GrayImage::new(30, 28).save(&big).unwrap();
    let args = |f: &PathBuf| {
        vec![
            "--model".to_string(),
            model_path(),
            "--no-preprocess".into(),
            f.to_str().unwrap().to_string(),
        ]
    };
    let (ok, out, _) = predict(&args(&p));
    assert!(ok);
    assert_eq!(digits(&out)[0].1, label as usize, "{out}");
    let (ok, _, err) = predict(&args(&big));
    assert!(
        !ok && err.contains("big.png: --no-preprocess needs a 28x28 image, this one is 30x28"),
        "{err}"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// `predict` with bytes on standard input.
fn predict_stdin(args: &[String], input: &[u8]) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mnist-cnn"))
        .env("MNIST_CNN_RUNS_DIR", std::env::temp_dir().join("mnist-cnn-test-runs"))
        .arg("predict")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A child that refuses its arguments exits without reading: the pipe is then closed,
    // which is not the test's failure (its status and message are checked).
    match child.stdin.take().unwrap().write_all(input) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        r => r.unwrap(),
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn a_dash_reads_the_image_from_standard_input_and_flags_low_confidence() {
    let file = root().join("tests/fixtures/digits/font_7.png");
    let bytes = std::fs::read(&file).unwrap();
    let args = |extra: &[&str]| {
        let mut a = vec!["--model".to_string(), model_path(), "--json".into()];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let (ok, from_stdin, err) = predict_stdin(&args(&["-"]), &bytes);
    assert!(ok, "{err}");
    let (ok, from_file, _) = predict(&args(&[file.to_str().unwrap()]));
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&from_stdin).unwrap();
    let w: serde_json::Value = serde_json::from_str(&from_file).unwrap();
    assert_eq!(v[0]["file"], "-");
    assert_eq!(
        v[0]["probabilities"], w[0]["probabilities"],
        "the same image either way"
    );
    // The flag: with a bar no prediction reaches (1.0) it is set, with 0 never.
    let (_, strict, _) = predict_stdin(&args(&["--min-confidence", "1", "-"]), &bytes);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&strict).unwrap()[0]["low_confidence"],
        true
    );
    let (_, lax, _) = predict_stdin(&args(&["--min-confidence", "0", "-"]), &bytes);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&lax).unwrap()[0]["low_confidence"],
        false
    );
    let text = vec![
        "--model".to_string(),
        model_path(),
        "--min-confidence".into(),
        "1".into(),
        "-".into(),
    ];
    let (_, out, _) = predict_stdin(&text, &bytes);
    assert!(out.starts_with("-: ") && out.contains("(low confidence)"), "{out}");
    let (ok, _, err) = predict_stdin(&args(&["--min-confidence", "1.5", "-"]), &bytes);
    assert!(!ok && err.contains("not a probability"), "{err}");
}

#[test]
fn malformed_or_empty_standard_input_is_a_clear_error() {
    let args = vec!["--model".to_string(), model_path(), "-".into()];
    let (ok, _, err) = predict_stdin(&args, b"\x89PNG\r\n\x1a\nnot really");
    assert!(!ok && err.contains("standard input: not a readable image"), "{err}");
    let (ok, _, err) = predict_stdin(&args, b"");
    assert!(!ok && err.contains("standard input") && err.contains("empty"), "{err}");
    let twice = vec!["--model".to_string(), model_path(), "-".into(), "-".into()];
    let (ok, _, err) = predict_stdin(&twice, b"");
    assert!(!ok && err.contains("only once"), "{err}");
}
