//! Which optimizer a run uses (`train --optimizer`), and how to build it.

use super::{AdamConfig, AdamWConfig, Optimizer, SgdConfig};
use crate::tensor::Tensor;

/// The optimizers `train` offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OptimizerKind {
    /// torch.optim.SGD (momentum; --weight-decay adds L2 to the gradient)
    Sgd,
    /// torch.optim.Adam (--momentum sets beta1; --weight-decay is L2 in the gradient)
    Adam,
    /// torch.optim.AdamW (--momentum sets beta1; --weight-decay is decoupled)
    Adamw,
}

impl OptimizerKind {
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
            OptimizerKind::Adamw => "adamw",
        }
    }

    /// The optimizer over `params`: `momentum` is SGD's momentum or Adam's beta1 (beta2 and
    /// eps keep PyTorch's defaults).
    pub fn build(self, params: Vec<Tensor>, lr: f32, momentum: f32, weight_decay: f32) -> Box<dyn Optimizer> {
        match self {
            OptimizerKind::Sgd => Box::new(
                SgdConfig::new(lr)
                    .with_momentum(momentum)
                    .with_weight_decay(weight_decay)
                    .init(params),
            ),
            OptimizerKind::Adam => Box::new(
                AdamConfig::new()
                    .with_lr(lr)
                    .with_betas(momentum, 0.999)
                    .with_weight_decay(weight_decay)
                    .init(params),
            ),
            OptimizerKind::Adamw => Box::new(
                AdamWConfig::new()
                    .with_lr(lr)
                    .with_betas(momentum, 0.999)
                    .with_weight_decay(weight_decay)
                    .init(params),
            ),
        }
    }
}

impl std::fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
