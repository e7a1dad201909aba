//! Hostile and careless input (issue 13): each test reproduces one defect of the review, through
//! the library or the `mnist-cnn` binary, and checks the clear one-line error (naming the file
//! and the problem), the bound on time or memory, and that nothing is lost.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use mnist_cnn::checkpoint::TensorFile;
use mnist_cnn::data::idx::{encode_idx, read_idx};
use mnist_cnn::data::pickle::read_mnist_pickle;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mnist-cnn"));
    c.env("MNIST_CNN_RUNS_DIR", std::env::temp_dir().join("mnist-cnn-test-runs"));
    c
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh temporary directory for one test.
fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mnist-cnn-hardening-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Runs a command to its end, killing it after `limit` (which fails the test).
fn run_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            panic!("still running after {limit:?}: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The process failed with exit status 1 and a one-line error holding every `want`.
fn fails_with(out: &Output, want: &[&str]) -> String {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    let last = err.lines().last().unwrap_or("");
    assert!(last.starts_with("error: "), "{err}");
    for w in want {
        assert!(last.contains(w), "{last:?} should say {w:?}");
    }
    last.to_string()
}

/// A copy of the bundled MNIST's four files with the first `n` training images.
fn small_mnist(dir: &Path, n: usize) {
    let m = read_idx(&root().join("data/mnist/train-images-idx3-ubyte.gz")).unwrap();
    let l = read_idx(&root().join("data/mnist/train-labels-idx1-ubyte.gz")).unwrap();
    std::fs::write(
        dir.join("train-images-idx3-ubyte"),
        encode_idx(&[n, 28, 28], &m.data[..n * 784]),
    )
    .unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), encode_idx(&[n], &l.data[..n])).unwrap();
    for f in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
        std::fs::copy(root().join("data/mnist").join(f), dir.join(f)).unwrap();
    }
}

// Defect 1: deeply nested pickles overflowed the stack when dropped.
#[test]
fn d01_deeply_nested_pickles_are_refused_without_overflowing_the_stack() {
    let d = tmp("pickle");
    // A tuple nested 50,000 deep: TUPLE1 repeated (105 bytes gzipped).
    let mut p = b"\x80\x02K\x01".to_vec();
    p.extend(std::iter::repeat_n(0x85u8, 50_000));
    p.push(b'.');
    let f = d.join("deep_tuple.pkl.gz");
    std::fs::write(&f, gz(&p)).unwrap();
    let e = read_mnist_pickle(&f).unwrap_err().to_string();
    assert!(
        e.contains("deep_tuple.pkl.gz") && e.contains("nested deeper than 100 levels"),
        "{e}"
    );
    // Through the command line too: a clean error, not an abort.
    let out = run_within(
        bin().args(["train", "--format", "pickle", "--data-dir"]).arg(&f),
        Duration::from_secs(30),
    );
    fails_with(&out, &["deep_tuple.pkl.gz", "nested deeper than 100 levels"]);

    // 5 million nested MARKs.
    let mut p = b"\x80\x02".to_vec();
    p.extend(std::iter::repeat_n(b'(', 5_000_000));
    let f = d.join("marks.pkl.gz");
    std::fs::write(&f, gz(&p)).unwrap();
    let e = read_mnist_pickle(&f).unwrap_err().to_string();
    assert!(e.contains("MARKs nested deeper than 100 levels"), "{e}");

    // 300,000 lists chained through the memo (APPEND after MEMO): the depth count cannot see
    // this nesting, and dropping it must still not recurse.
    let n: u32 = 300_000;
    let mut p = b"\x80\x02".to_vec();
    for i in 0..n {
        p.push(b']');
        p.push(b'r');
        p.extend(i.to_le_bytes());
    }
    for i in 0..n - 1 {
        for k in [i, i + 1] {
            p.push(b'j');
            p.extend(k.to_le_bytes());
        }
        p.push(b'a');
    }
    p.push(b'.');
    let f = d.join("chain.pkl");
    std::fs::write(&f, &p).unwrap();
    let e = read_mnist_pickle(&f).unwrap_err().to_string();
    assert!(e.contains("top level: expected a tuple, found list"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// `n` gzip members of 1 MiB of zeros each: n MiB of content in about n KB.
fn zero_members(n: usize) -> Vec<u8> {
    let member = gz(&vec![0u8; 1 << 20]);
    member.repeat(n)
}

/// Runs the binary with its address space limited to `kb` KiB (`ulimit -v`), so a reader that
/// inflates a bomb whole dies instead of finishing.
fn with_memory_limit(kb: u64, args: &[&str], dir: &Path) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -v {kb} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_mnist-cnn"))
        .args(args)
        .current_dir(dir)
        .env("MNIST_CNN_RUNS_DIR", dir.join("runs"));
    run_within(&mut cmd, Duration::from_secs(60))
}

// Defect 3: gzip bombs were inflated whole before any check.
#[test]
fn d03_gzip_bombs_stop_at_the_declared_size() {
    let d = tmp("bomb");
    small_mnist(&d, 600);
    // Valid header and 600 images, then 4 GiB of zeros in further gzip members (4 MB file).
    let m = read_idx(&d.join("train-images-idx3-ubyte")).unwrap();
    let mut bomb = gz(&encode_idx(&[600, 28, 28], &m.data));
    bomb.extend(zero_members(4096));
    std::fs::remove_file(d.join("train-images-idx3-ubyte")).unwrap();
    std::fs::write(d.join("train-images-idx3-ubyte.gz"), &bomb).unwrap();
    let e = read_idx(&d.join("train-images-idx3-ubyte.gz")).unwrap_err().to_string();
    assert!(
        e.contains("need 470400 bytes of data, file has more (trailing bytes)"),
        "{e}"
    );
    // The command line, within 1.5 GiB of address space.
    let out = with_memory_limit(1_500_000, &["train", "--threads", "1", "--data-dir", "."], &d);
    fails_with(&out, &["train-images-idx3-ubyte.gz", "trailing bytes"]);
    // A header that declares more than the limit is refused before inflating anything.
    std::fs::write(d.join("huge.idx"), encode_idx(&[100_000, 200, 100], &[])).unwrap();
    let e = read_idx(&d.join("huge.idx")).unwrap_err().to_string();
    assert!(e.contains("declare more than 1073741824 bytes"), "{e}");
    // The pickle: 4 GiB of zeros stop at the pickle limit.
    std::fs::write(d.join("mnist.pkl.gz"), zero_members(4096)).unwrap();
    let out = with_memory_limit(
        3_000_000,
        &["train", "--threads", "1", "--format", "pickle", "--data-dir", "."],
        &d,
    );
    fails_with(&out, &["mnist.pkl.gz", "content exceeds 536870912 bytes"]);
    std::fs::remove_dir_all(&d).unwrap();
}

// Defect 4: `plot` spun forever on an infinite value; the log reader matched substrings.
#[test]
fn d04_plot_reads_json_and_survives_values_that_are_not_finite() {
    let d = tmp("plot");
    let log = d.join("run.jsonl");
    std::fs::write(
        &log,
        "{\"type\": \"header\", \"settings\": {\"seed\": \"0\"}}\n\
         {\"type\": \"epoch\", \"epoch\": 1, \"train_loss\": 0.9, \"valid_loss\": 0.5, \"valid_accuracy\": 0.8}\n\
         {\"type\": \"epoch\", \"epoch\": 2, \"train_loss\": null, \"valid_loss\": 1e308, \"valid_accuracy\": null}\n\
         {\"type\": \"epoch\", \"epoch\": 3, \"train_loss\": 0.3, \"valid_loss\": 0.2, \"valid_accuracy\": 0.95}\n",
    )
    .unwrap();
    let out = run_within(
        bin().arg("plot").arg(&log).arg("--out").arg(d.join("c.png")),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(std::fs::metadata(d.join("c.png")).unwrap().len() > 1000);
    // What the program wrote before (unquoted inf) is not JSON: a clear error, at once.
    std::fs::write(
        &log,
        "{\"type\":\"epoch\",\"epoch\":1,\"train_loss\":inf,\"valid_loss\":NaN,\"valid_accuracy\":0.1}\n",
    )
    .unwrap();
    let out = run_within(
        bin().arg("plot").arg(&log).arg("--out").arg(d.join("c.png")),
        Duration::from_secs(30),
    );
    fails_with(&out, &["run.jsonl", "line 1: not a JSON record"]);
    std::fs::remove_dir_all(&d).unwrap();
}

/// Trains `epochs` epochs on 600 images with checkpoints in `ck`.
fn train_with_checkpoints(ck: &Path, epochs: &str) -> Output {
    run_within(
        bin()
            .current_dir(root())
            .args(["train", "--limit", "600", "--threads", "1", "--epochs", epochs])
            .arg("--checkpoint-dir")
            .arg(ck),
        Duration::from_secs(120),
    )
}

/// Rewrites one metadata value of a checkpoint.
fn set_meta(path: &Path, key: &str, value: &str) {
    let mut f = TensorFile::load(path).unwrap();
    f.metadata.insert(key.into(), value.into());
    f.save(path).unwrap();
}

// Defect 6: --resume panicked on a checkpoint whose batch_size is 0. Defect 11: a corrupt newest
// checkpoint stopped --resume; a new run overwrote another run's checkpoints silently.
#[test]
fn d06_d11_resume_checks_settings_and_falls_back_to_an_intact_checkpoint() {
    let d = tmp("resume");
    let ck = d.join("ck");
    let out = train_with_checkpoints(&ck, "2");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (e1, e2) = (
        ck.join("checkpoint-epoch-0001.safetensors"),
        ck.join("checkpoint-epoch-0002.safetensors"),
    );
    // A truncated newest checkpoint: resume warns and continues from the one before it.
    let bytes = std::fs::read(&e2).unwrap();
    std::fs::write(&e2, &bytes[..bytes.len() / 2]).unwrap();
    let mut cmd = bin();
    cmd.current_dir(root())
        .args(["train", "--threads", "1", "--epochs", "2", "--resume"])
        .arg(&ck)
        .arg("--checkpoint-dir")
        .arg(&ck);
    let out = run_within(&mut cmd, Duration::from_secs(60));
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: ")
            && err.contains("checkpoint-epoch-0002.safetensors")
            && err.contains("trying the checkpoint before it"),
        "{err}"
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("resuming from")
            && stdout.contains("checkpoint-epoch-0001.safetensors")
            && stdout.contains("epoch  2/2"),
        "{stdout}"
    );
    // batch_size=0 in the only checkpoint: an error, not a panic.
    assert_eq!(
        std::fs::read(&e2).unwrap().len(),
        bytes.len(),
        "epoch 2 written again, whole"
    );
    std::fs::remove_file(&e2).unwrap();
    set_meta(&e1, "batch_size", "0");
    let mut cmd = bin();
    cmd.current_dir(root())
        .args(["train", "--threads", "1", "--epochs", "2", "--resume"])
        .arg(&ck);
    let out = run_within(&mut cmd, Duration::from_secs(60));
    fails_with(
        &out,
        &["no intact checkpoint", "batch size must be from 1 to 4096, got 0"],
    );
    // A new run into a directory holding another run's checkpoints is refused...
    set_meta(&e1, "batch_size", "64");
    let out = train_with_checkpoints(&ck, "1");
    fails_with(&out, &["holds 1 checkpoints of another run", "--overwrite"]);
    assert!(e1.is_file());
    // ... and replaces them with --overwrite.
    let mut cmd = bin();
    cmd.current_dir(root())
        .args([
            "train",
            "--limit",
            "600",
            "--threads",
            "1",
            "--epochs",
            "1",
            "--overwrite",
            "--checkpoint-dir",
        ])
        .arg(&ck);
    let out = run_within(&mut cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("deleted 1 checkpoints of another run"));
    std::fs::remove_dir_all(&d).unwrap();
}

fn train_args(args: &[&str]) -> Output {
    let mut cmd = bin();
    cmd.current_dir(root())
        .args(["train", "--threads", "1", "--limit", "600", "--epochs", "1"])
        .args(args);
    run_within(&mut cmd, Duration::from_secs(60))
}

// Defect 7: non-finite hyperparameters trained to NaN weights; NaN weights loaded silently.
#[test]
fn d07_non_finite_settings_and_weights_are_refused() {
    for (flag, v, want) in [
        ("--lr", "nan", "learning rate must be a finite number >= 0, got NaN"),
        ("--lr", "inf", "learning rate must be a finite number >= 0, got inf"),
        ("--lr", "-1", "learning rate must be a finite number >= 0, got -1"),
        ("--momentum", "nan", "momentum must be a finite number >= 0, got NaN"),
    ] {
        let out = train_args(&[flag, v]);
        fails_with(&out, &[want]);
        assert!(!text(&out.stdout).contains("epoch"), "no training should start");
    }
    let d = tmp("nan");
    let w = d.join("nan.safetensors");
    let mut f = TensorFile::load(&root().join("tests/fixtures/mnist_cnn_seed0.safetensors")).unwrap();
    f.tensors.get_mut("conv2.weight").unwrap().values[3] = f32::NAN;
    f.save(&w).unwrap();
    let mut cmd = bin();
    cmd.current_dir(root())
        .args(["eval", "--threads", "1", "--model"])
        .arg(&w);
    let out = run_within(&mut cmd, Duration::from_secs(60));
    fails_with(&out, &["nan.safetensors", "tensor 'conv2.weight' holds NaN at index 3"]);
    let out = train_args(&["--init", w.to_str().unwrap()]);
    fails_with(&out, &["nan.safetensors", "tensor 'conv2.weight' holds NaN at index 3"]);
    std::fs::remove_dir_all(&d).unwrap();
}

// Defect 9: output paths were checked only after training; a full disk left a 0-byte log.
#[test]
fn d09_outputs_are_checked_before_any_work() {
    let d = tmp("outputs");
    let missing = d.join("no/such/dir/model.safetensors");
    for (args, want) in [
        (vec!["--save", missing.to_str().unwrap()], "does not exist".to_string()),
        (vec!["--save", d.to_str().unwrap()], "is a directory".to_string()),
        (
            vec!["--log", d.join("run.txt").to_str().unwrap()],
            "the log's extension must be .jsonl or .csv".to_string(),
        ),
    ] {
        let out = train_args(&args);
        fails_with(&out, &[&want]);
        assert!(
            !text(&out.stdout).contains("epoch"),
            "no training should start: {}",
            text(&out.stdout)
        );
    }
    // A full disk: the header cannot be written, and training does not start.
    let full = d.join("full.jsonl");
    std::os::unix::fs::symlink("/dev/full", &full).unwrap();
    let out = train_args(&["--log", full.to_str().unwrap()]);
    fails_with(&out, &["full.jsonl", "cannot write"]);
    assert!(!text(&out.stdout).contains("epoch"));
    std::fs::remove_dir_all(&d).unwrap();
}

// Defect 10: empty splits ran and printed valid_loss 0.0000.
#[test]
fn d10_empty_splits_are_refused() {
    let mut cmd = bin();
    cmd.current_dir(root())
        .args(["train", "--threads", "1", "--limit", "0"]);
    let out = run_within(&mut cmd, Duration::from_secs(60));
    fails_with(&out, &["--limit 0 leaves no training images"]);
    let d = tmp("empty");
    small_mnist(&d, 5);
    let mut cmd = bin();
    cmd.args(["train", "--threads", "1", "--data-dir"]).arg(&d);
    let out = run_within(&mut cmd, Duration::from_secs(60));
    fails_with(
        &out,
        &[
            "train-images-idx3-ubyte",
            "holds 5 images: too few to hold out a validation split",
        ],
    );
    std::fs::remove_dir_all(&d).unwrap();
}

/// A valid 8-bit gray PNG of `w` x `h` whose row `y` is `row(y)`, compressed as it goes.
fn gray_png(w: u32, h: u32, row: impl Fn(u32) -> Vec<u8>) -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend(kind);
        c.extend(data);
        c.extend(crc.sum().to_be_bytes());
        c
    };
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), Compression::fast());
    for y in 0..h {
        z.write_all(&[0]).unwrap(); // filter: none
        z.write_all(&row(y)).unwrap();
    }
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]); // 8-bit gray
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(b"IDAT", &z.finish().unwrap()));
    png.extend(chunk(b"IEND", &[]));
    png
}

// Defect 12: a huge image was decoded and copied at full size; any batch size was accepted.
#[test]
fn d12_huge_images_and_batches_are_bounded() {
    let d = tmp("image");
    // 20000 x 20000 gray pixels in a 400 KB PNG: refused before decoding.
    let f = d.join("huge.png");
    std::fs::write(&f, gray_png(20_000, 20_000, |_| vec![0; 20_000])).unwrap();
    let model = root().join("tests/fixtures/mnist_cnn_seed0.safetensors");
    let out = run_within(
        bin().arg("predict").arg("--model").arg(&model).arg(&f),
        Duration::from_secs(30),
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("huge.png") && err.contains("image too large to decode"),
        "{err}"
    );
    // 12000 x 12000 (144 MB of pixels, within the limits) with a dark block on white: predicted
    // within 400 MB of address space, since it is scaled down right after decoding.
    let f = d.join("big.png");
    let (white, ink) = (
        vec![255u8; 12_000],
        [vec![255u8; 5_000], vec![0; 2_000], vec![255; 5_000]].concat(),
    );
    std::fs::write(
        &f,
        gray_png(12_000, 12_000, |y| {
            if (4_000..8_000).contains(&y) {
                ink.clone()
            } else {
                white.clone()
            }
        }),
    )
    .unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -v 400000 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_mnist-cnn"))
        .arg("predict")
        .arg("--model")
        .arg(&model)
        .arg(&f);
    let out = run_within(&mut cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with(&format!("{}: ", f.display())));
    let out = train_args(&["--batch-size", "1000000"]);
    fails_with(&out, &["batch size must be from 1 to 4096, got 1000000"]);
    std::fs::remove_dir_all(&d).unwrap();
}

// Defect 13: `mnist-cnn train | head -1` panicked with exit status 101.
#[test]
fn d13_a_broken_pipe_ends_quietly_with_status_141() {
    let script = format!(
        "\"{}\" train --threads 1 --limit 600 --epochs 3 | head -1; echo \"status ${{PIPESTATUS[0]}}\"",
        env!("CARGO_BIN_EXE_mnist-cnn")
    );
    let mut cmd = Command::new("bash");
    cmd.current_dir(root())
        .env("MNIST_CNN_RUNS_DIR", std::env::temp_dir().join("mnist-cnn-test-runs"))
        .arg("-c")
        .arg(script);
    let out = run_within(&mut cmd, Duration::from_secs(120));
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert!(
        o.starts_with("data mnist from ") && o.trim_end().ends_with("status 141"),
        "{o}"
    );
    assert!(!e.contains("panicked") && !e.contains("Broken pipe"), "{e}");
}
