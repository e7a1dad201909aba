//! Weights trained in PyTorch with the tutorial's code run here unchanged.
//!
//! `scripts/torch_interop.py` trained the tutorial's Mnist_CNN for one epoch, saved it with
//! `safetensors.torch.save_file(model.state_dict(), ...)` as tests/fixtures/torch_cnn.safetensors,
//! and wrote the logits PyTorch computes for the first 8 validation images to
//! tests/golden/torch_cnn_logits.rs.

use std::path::PathBuf;

use mnist_cnn::checkpoint::load_model;
use mnist_cnn::data::{Format, load_mnist};
use mnist_cnn::tensor::no_grad;

#[allow(clippy::excessive_precision)]
mod golden {
    include!("golden/torch_cnn_logits.rs");
}

#[test]
fn pytorch_weights_give_pytorchs_logits() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let (arch, model, file) = load_model(&root.join("tests/fixtures/torch_cnn.safetensors")).unwrap();
    // PyTorch's file has no architecture metadata: it is recognised by its tensor names.
    assert_eq!(arch.name, "cnn");
    assert!(!file.metadata.contains_key("architecture"));
    let data = load_mnist(&root.join("data/mnist"), Format::Idx).unwrap();
    let (x, _) = data.valid.batch(&(0..8).collect::<Vec<_>>());
    model.set_training(false);
    let logits = no_grad(|| model.forward(&x)).to_vec();
    assert_eq!(logits.len(), golden::LOGITS.len());
    for (i, (a, b)) in logits.iter().zip(golden::LOGITS).enumerate() {
        assert!((a - b).abs() <= 1e-5, "logit {i}: {a} vs PyTorch {b}");
    }
}
