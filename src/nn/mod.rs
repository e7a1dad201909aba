//! `torch.nn`: the [`Module`] trait, the layers ([`Conv2d`], [`Linear`], [`BatchNorm2d`], ...),
//! the containers [`Sequential`] and [`Lambda`], and the model registry ([`models`]).
//!
//! A module declares only what it owns: its own parameters, buffers, training flag and random
//! generator, and its direct children by name. The provided methods walk the tree, so
//! `named_parameters` gives PyTorch's dotted state_dict names (`features.0.weight`), and
//! `train()` / `eval()` reach every descendant, as in PyTorch.

use std::cell::{Cell, RefCell};

mod batch_norm;
mod conv;
mod dropout;
mod init;
mod layers;
mod linear;
pub mod models;
mod sequential;
mod shared;

pub use batch_norm::{BatchNorm2d, BatchNorm2dConfig};
pub use conv::{Conv2d, Conv2dConfig};
pub use dropout::{Dropout, DropoutConfig};
pub use init::kaiming_uniform_bounds;
pub use layers::{AdaptiveAvgPool2d, AvgPool2d, Flatten, MaxPool2d, ReLU};
pub use linear::{Linear, LinearConfig};
pub use models::{LeNet5, MnistCnn, MnistLogistic, ModelSpec};
pub use sequential::{Lambda, Sequential};
pub use shared::SharedModel;

use crate::rng::Rng;
use crate::tensor::Tensor;

/// A network layer or model, as `torch.nn.Module`.
///
/// Implement [`Module::forward`] and whichever of the `own_*` / `children` methods apply; the
/// rest is provided.
pub trait Module {
    /// The forward pass.
    fn forward(&self, x: &Tensor) -> Tensor;

    /// This module's own parameters (not its children's), by local name (`weight`, `bias`).
    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// This module's own buffers: state saved in the state_dict but not trained
    /// (`running_mean`, `num_batches_tracked`).
    fn own_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// Direct children, by name, in registration order.
    fn children(&self) -> Vec<(String, &dyn Module)> {
        Vec::new()
    }

    /// The module's own training flag, where it has one.
    fn training_flag(&self) -> Option<&Cell<bool>> {
        None
    }

    /// The module's own random generator (dropout), saved in training checkpoints so a resumed
    /// run draws the same numbers.
    fn own_rng(&self) -> Option<&RefCell<Rng>> {
        None
    }

    /// Parameters with PyTorch's state_dict names (`conv1.weight`, `0.bias`, ...), in
    /// registration order: the module's own, then each child's.
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut v = self.own_parameters();
        for (name, child) in self.children() {
            v.extend(prefixed(&name, child.named_parameters()));
        }
        v
    }

    /// Buffers with their state_dict names (`bn1.running_mean`, ...).
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        let mut v = self.own_buffers();
        for (name, child) in self.children() {
            v.extend(prefixed(&name, child.named_buffers()));
        }
        v
    }

    /// Random generators by module path (`""` for the module itself, `drop1`, `features.3`).
    fn named_rngs(&self) -> Vec<(String, &RefCell<Rng>)> {
        let mut v: Vec<(String, &RefCell<Rng>)> = self.own_rng().map(|r| (String::new(), r)).into_iter().collect();
        for (name, child) in self.children() {
            v.extend(child.named_rngs().into_iter().map(|(n, r)| (join(&name, &n), r)));
        }
        v
    }

    /// Training mode (true) or evaluation mode (false) for this module and every descendant.
    fn set_training(&self, training: bool) {
        if let Some(flag) = self.training_flag() {
            flag.set(training);
        }
        for (_, child) in self.children() {
            child.set_training(training);
        }
    }

    /// The module's own flag, else its first child's; a module with neither is always in
    /// training mode (it behaves the same in both).
    fn is_training(&self) -> bool {
        match self.training_flag() {
            Some(flag) => flag.get(),
            None => self.children().first().is_none_or(|(_, c)| c.is_training()),
        }
    }

    /// `model.train()`.
    fn train(&self) {
        self.set_training(true);
    }

    /// `model.eval()`.
    fn eval(&self) {
        self.set_training(false);
    }

    fn parameters(&self) -> Vec<Tensor> {
        self.named_parameters().into_iter().map(|(_, p)| p).collect()
    }

    /// Clears every parameter's gradient (to `None`, as PyTorch does by default).
    fn zero_grad(&self) {
        self.parameters().iter().for_each(Tensor::zero_grad);
    }

    /// Number of scalar parameters.
    fn num_parameters(&self) -> usize {
        self.parameters().iter().map(Tensor::numel).sum()
    }
}

/// `weight` and, if present, `bias`: the parameters of a layer.
pub(crate) fn weight_and_bias(weight: &Tensor, bias: Option<&Tensor>) -> Vec<(String, Tensor)> {
    let mut v = vec![("weight".to_string(), weight.clone())];
    v.extend(bias.map(|b| ("bias".to_string(), b.clone())));
    v
}

/// Prefixes a child's names (`weight` -> `conv1.weight`).
pub fn prefixed(prefix: &str, named: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    named.into_iter().map(|(n, t)| (join(prefix, &n), t)).collect()
}

/// `a.b`, or whichever is not empty.
fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}.{b}"),
    }
}
