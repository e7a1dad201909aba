//! The program installed on its own (as `cargo install` leaves it: one file in a `bin/`
//! directory), run from another directory with no checkout in sight: it finds MNIST in the
//! download cache, says exactly how to get it when it is missing, and predicts with no flags.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mnist-cnn-install-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The installed program, run in `work` with `home` as its data home and `bin` on PATH, and no
/// trace of cargo in its environment.
fn installed(bin: &Path, work: &Path, home: &Path, args: &[&str]) -> Output {
    Command::new(bin.join("mnist-cnn"))
        .args(args)
        .current_dir(work)
        .env_remove("CARGO")
        .env_remove("CARGO_MANIFEST_DIR")
        .env_remove("CARGO_PKG_NAME")
        .env_remove("MNIST_CNN_RUNS_DIR")
        .env("XDG_DATA_HOME", home)
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .output()
        .unwrap()
}

#[test]
fn installed_binary_trains_from_the_cache_and_says_how_to_get_mnist() {
    let root = tmp("root");
    let (bin, work, home) = (root.join("bin"), root.join("work"), root.join("home"));
    for d in [&bin, &work, &home] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::copy(env!("CARGO_BIN_EXE_mnist-cnn"), bin.join("mnist-cnn")).unwrap();

    // No MNIST anywhere: one line with the exact command (the program is on PATH here).
    let out = installed(&bin, &work, &home, &["train", "--epochs", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("MNIST not found") && err.contains("`mnist-cnn download mnist`"),
        "{err}"
    );

    // MNIST in the download cache (where `download mnist` puts it): training finds it there.
    let cache = home.join("mnist-cnn/mnist");
    std::fs::create_dir_all(&cache).unwrap();
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    for f in std::fs::read_dir(&data).unwrap().flatten() {
        std::fs::copy(f.path(), cache.join(f.file_name())).unwrap();
    }
    let out = installed(
        &bin,
        &work,
        &home,
        &["train", "--epochs", "1", "--limit", "2000", "--threads", "1"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("data mnist from {}", cache.display())), "{text}");
    assert!(
        text.contains("run directory runs/") && text.contains("predict with: mnist-cnn predict IMAGE"),
        "{text}"
    );

    // predict with no flags uses that run's model.
    let digit = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/digits/font_7.png");
    let out = installed(&bin, &work, &home, &["predict", digit.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("using the newest run's model runs/"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}
