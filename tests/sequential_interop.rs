//! A batch-norm `Sequential` model moves between PyTorch and here with its weights, running
//! statistics and `num_batches_tracked`, and gives the same logits.
//!
//! `scripts/torch_sequential_interop.py` trained the model below in PyTorch (30 SGD steps on
//! MNIST), saved `model.state_dict()` with `safetensors.torch.save_file` as
//! tests/fixtures/torch_seq_bn.safetensors, and PyTorch's eval-mode logits for 16 validation
//! images as tests/fixtures/torch_seq_bn_io.safetensors. The other direction: this test trains
//! the model here and writes it to target/seq_bn_interop/, where
//! `python3 scripts/torch_sequential_interop.py --check target/seq_bn_interop` loads it into
//! PyTorch (strict) and compares the logits.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mnist_cnn::checkpoint::{Entry, TensorFile, load_state_dict, state_dict};
use mnist_cnn::data::{DataLoader, Format, load_mnist};
use mnist_cnn::nn::{
    AdaptiveAvgPool2d, BatchNorm2dConfig, Conv2dConfig, DropoutConfig, Flatten, LinearConfig, MaxPool2d, Module, ReLU,
    Sequential,
};
use mnist_cnn::ops::{cross_entropy, reshape};
use mnist_cnn::optim::SgdConfig;
use mnist_cnn::rng::Rng;
use mnist_cnn::{Tensor, no_grad};

/// The same layers as the script's `nn.Sequential`, so the same state_dict names (`0.weight`,
/// `1.running_mean`, ..., `10.bias`).
fn model(rng: &mut Rng) -> Sequential {
    Sequential::new()
        .append(Conv2dConfig::new(1, 8, 3).with_padding(1).init(rng))
        .append(BatchNorm2dConfig::new(8).init())
        .append(ReLU)
        .append(MaxPool2d::new(2))
        .append(Conv2dConfig::new(8, 16, 3).with_stride(2).with_padding(1).init(rng))
        .append(BatchNorm2dConfig::new(16).init())
        .append(ReLU)
        .append(AdaptiveAvgPool2d { output_size: (3, 3) })
        .append(DropoutConfig::new(0.25).init(rng))
        .append(Flatten::default())
        .append(LinearConfig::new(144, 10).init(rng))
}

fn fixture(name: &str) -> TensorFile {
    TensorFile::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn pytorch_sequential_with_batch_norm_gives_pytorchs_logits_here() {
    let m = model(&mut Rng::new(0));
    let file = fixture("torch_seq_bn.safetensors");
    // PyTorch wrote num_batches_tracked as int64; it reads as a count.
    assert_eq!(file.tensors["1.num_batches_tracked"].values, [30.0]);
    load_state_dict(&m, &file).unwrap();
    let io = fixture("torch_seq_bn_io.safetensors");
    let x = Tensor::from_vec(io.tensors["x"].values.clone(), &io.tensors["x"].shape);
    m.eval();
    let logits = no_grad(|| m.forward(&x));
    assert_eq!(logits.shape(), &[16, 10]);
    let d = max_diff(&logits.to_vec(), &io.tensors["logits"].values);
    assert!(d <= 1e-5, "largest difference from PyTorch's logits: {d}");
    // In training mode the batch's own statistics are used (and dropout): different logits.
    m.train();
    let train_logits = no_grad(|| m.forward(&x)).to_vec();
    assert!(max_diff(&train_logits, &io.tensors["logits"].values) > 1e-3);
}

#[test]
fn a_sequential_trained_here_round_trips_with_its_buffers() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let data = load_mnist(&root.join("data/mnist"), Format::Idx).unwrap();
    let m = model(&mut Rng::new(1));
    let mut opt = SgdConfig::new(0.05).with_momentum(0.9).init(m.parameters());
    for b in DataLoader::new(data.train.subset(0..640), 64, true, 1).epoch(0) {
        let x = reshape(&b.x, &[None, Some(1), Some(28), Some(28)]);
        cross_entropy(&m.forward(&x), &b.y).backward();
        opt.step();
        opt.zero_grad();
    }
    let f = state_dict(&m, "sequential", &BTreeMap::new());
    let names: Vec<&str> = f.tensors.keys().map(String::as_str).collect();
    for want in [
        "0.weight",
        "1.running_var",
        "1.num_batches_tracked",
        "5.running_mean",
        "10.bias",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert_eq!(f.tensors["5.num_batches_tracked"].values, [10.0]);
    // Into a fresh model: the same eval-mode logits.
    let (x, _) = data.valid.batch(&(0..16).collect::<Vec<_>>());
    let x = reshape(&x, &[None, Some(1), Some(28), Some(28)]);
    let fresh = model(&mut Rng::new(99));
    load_state_dict(&fresh, &TensorFile::parse(&f.to_bytes()).unwrap()).unwrap();
    m.eval();
    fresh.eval();
    let (a, b) = no_grad(|| (m.forward(&x).to_vec(), fresh.forward(&x).to_vec()));
    assert_eq!(a, b);
    // For the PyTorch side (scripts/torch_sequential_interop.py --check target/seq_bn_interop).
    let out = root.join("target/seq_bn_interop");
    std::fs::create_dir_all(&out).unwrap();
    let mut plain = f.clone();
    plain.metadata = BTreeMap::new();
    plain.save(&out.join("seq_bn_rust.safetensors")).unwrap();
    let mut io = TensorFile::default();
    io.tensors.insert(
        "x".into(),
        Entry {
            shape: x.shape().to_vec(),
            values: x.to_vec(),
        },
    );
    io.tensors.insert(
        "logits".into(),
        Entry {
            shape: vec![16, 10],
            values: a,
        },
    );
    io.save(&out.join("seq_bn_rust_io.safetensors")).unwrap();
}
