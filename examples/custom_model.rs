//! A model defined in user code, trained with AdamW and a one-cycle schedule.
//!
//! `SmallNet` is a struct of layers, as a PyTorch user writes an `nn.Module` subclass: it
//! implements [`Module::forward`] and names its children; parameters, buffers (batch-norm
//! running statistics), `train()` / `eval()` and the state_dict names come from the trait. It
//! trains with the library's `fit_from` loop, an `AdamW` optimizer and `OneCycleLR`.
//!
//! `cargo run --release --example custom_model` (about 40 s on 2 cores).

use std::collections::BTreeMap;

use mnist_cnn::Tensor;
use mnist_cnn::checkpoint::state_dict;
use mnist_cnn::data::{DataLoader, Format, load_mnist};
use mnist_cnn::nn::{
    BatchNorm2d, BatchNorm2dConfig, Conv2d, Conv2dConfig, Dropout, DropoutConfig, Linear, LinearConfig, Module,
};
use mnist_cnn::ops::{flatten, max_pool2d, relu, reshape};
use mnist_cnn::optim::{AdamWConfig, Optimizer, ScheduleSpec};
use mnist_cnn::rng::Rng;
use mnist_cnn::train::{EpochStats, FitEnd, LOSS_FUNC, Observer, Position, evaluate, fit_from};

/// conv 1->16 (3x3, pad 1) + BN + ReLU + 2x2 max pool (14x14), conv 16->32 + BN + ReLU + max
/// pool (7x7), dropout, linear 32*7*7 -> 10.
struct SmallNet {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    drop: Dropout,
    fc: Linear,
}

impl SmallNet {
    fn new(rng: &mut Rng) -> Self {
        SmallNet {
            conv1: Conv2dConfig::new(1, 16, 3).with_padding(1).with_bias(false).init(rng),
            bn1: BatchNorm2dConfig::new(16).init(),
            conv2: Conv2dConfig::new(16, 32, 3).with_padding(1).with_bias(false).init(rng),
            bn2: BatchNorm2dConfig::new(32).init(),
            drop: DropoutConfig::new(0.2).init(rng),
            fc: LinearConfig::new(32 * 7 * 7, 10).init(rng),
        }
    }
}

impl Module for SmallNet {
    fn forward(&self, xb: &Tensor) -> Tensor {
        let x = reshape(xb, &[None, Some(1), Some(28), Some(28)]);
        let x = max_pool2d(&relu(&self.bn1.forward(&self.conv1.forward(&x))), 2, 2, 0);
        let x = max_pool2d(&relu(&self.bn2.forward(&self.conv2.forward(&x))), 2, 2, 0);
        self.fc.forward(&self.drop.forward(&flatten(&x, 1, -1)))
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("conv1".into(), &self.conv1),
            ("bn1".into(), &self.bn1),
            ("conv2".into(), &self.conv2),
            ("bn2".into(), &self.bn2),
            ("drop".into(), &self.drop),
            ("fc".into(), &self.fc),
        ]
    }
}

/// Prints each epoch.
struct Print;

impl Observer for Print {
    fn epoch_end(&mut self, s: &EpochStats, opt: &dyn Optimizer) -> mnist_cnn::Result<()> {
        println!(
            "epoch {}  valid_loss {:.4}  valid_acc {:.2}%  train_loss {:.4}  lr now {:.2e}  {:.1}s",
            s.epoch,
            s.valid.loss,
            100.0 * s.valid.accuracy,
            s.train_loss,
            opt.lr(),
            s.seconds
        );
        Ok(())
    }
}

fn main() -> mnist_cnn::Result<()> {
    let data = load_mnist(&mnist_cnn::runs::find_mnist()?, Format::Idx)?;
    let model = SmallNet::new(&mut Rng::new(0));
    println!("SmallNet: {} parameters", model.num_parameters());
    for (name, t) in model.named_parameters().iter().chain(&model.named_buffers()) {
        println!("  {name:<24} {:?}", t.shape());
    }
    let (epochs, bs) = (2, 128);
    let train_dl = DataLoader::new(data.train.clone(), bs, true, 0);
    let valid_dl = DataLoader::new(data.valid.clone(), bs * 2, false, 0);
    let mut opt = AdamWConfig::new()
        .with_lr(0.01)
        .with_weight_decay(0.01)
        .init(model.parameters());
    // torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=epochs * len(train_dl))
    let schedule = "onecycle"
        .parse::<ScheduleSpec>()?
        .build(0.01, epochs * train_dl.len(), train_dl.len());
    let end = fit_from(
        Position::default(),
        epochs,
        &model,
        LOSS_FUNC,
        &mut opt,
        Some(&schedule),
        &train_dl,
        &valid_dl,
        &mut Print,
    )?;
    assert!(matches!(end, FitEnd::Finished(_)));
    let test = evaluate(&model, LOSS_FUNC, &DataLoader::new(data.test.clone(), bs * 2, false, 0));
    println!("test loss {:.4}  accuracy {:.2}%", test.loss, 100.0 * test.accuracy);
    let out = std::env::temp_dir().join("small_net.safetensors");
    state_dict(&model, "small_net", &BTreeMap::new()).save(&out)?;
    println!("saved {} (PyTorch state_dict names, buffers included)", out.display());
    Ok(())
}
