//! The 80-step accuracy run, shared by tests/accuracy.rs and examples/eighty_steps_trace.rs
//! (`#[path]`-included beside `safetensors_f64`): PyTorch's initial weights from
//! tests/fixtures/torch_80_steps.safetensors (written by scripts/torch_80_steps.py), then 80
//! SGD steps (lr 0.1, momentum 0.9, batch 64) over the first 5,120 training images of
//! data/mnist in file order, as the script takes them.

use std::path::PathBuf;

use mnist_cnn::data::{DataLoader, Format, load_mnist};
use mnist_cnn::nn::{Module, models};
use mnist_cnn::optim::SgdConfig;
use mnist_cnn::rng::Rng;
use mnist_cnn::train::{LOSS_FUNC, loss_batch};
use safetensors::SafeTensors;

use crate::safetensors_f64::values;

pub const STEPS: usize = 80;
pub const BATCH: usize = 64;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The fixture's bytes.
pub fn fixture() -> Vec<u8> {
    let path = root().join("tests/fixtures/torch_80_steps.safetensors");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fresh tutorial CNN holding the fixture's initial weights, each passed through `adjust`.
pub fn model_at_init(st: &SafeTensors, mut adjust: impl FnMut(f32) -> f32) -> Box<dyn Module> {
    let model = models::find("cnn").unwrap().build(&mut Rng::new(0));
    for (name, p) in model.named_parameters() {
        let init: Vec<f32> = values(st, &format!("init.{name}"))
            .iter()
            .map(|&v| adjust(v as f32))
            .collect();
        assert_eq!(init.len(), p.numel(), "{name}");
        p.data_mut().copy_from_slice(&init);
    }
    model
}

/// The 80 steps on `model`, with `each(step, model)` after every one (steps from 1).
pub fn train(model: &dyn Module, mut each: impl FnMut(usize, &dyn Module)) {
    let data = load_mnist(&root().join("data/mnist"), Format::Idx).unwrap();
    let mut opt = SgdConfig::new(0.1).with_momentum(0.9).init(model.parameters());
    let dl = DataLoader::new(data.train.subset(0..STEPS * BATCH), BATCH, false, 0);
    let mut steps = 0;
    for b in dl.epoch(0) {
        loss_batch(model, LOSS_FUNC, &b.x, &b.y, Some(&mut opt));
        steps += 1;
        each(steps, model);
    }
    assert_eq!(steps, STEPS);
}
