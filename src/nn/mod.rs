//! `torch.nn`: the [`Module`] trait, the layers ([`Conv2d`], [`Linear`]) and the tutorial's two
//! models ([`MnistCnn`], [`MnistLogistic`]).

mod conv;
mod init;
mod linear;
mod models;

pub use conv::{Conv2d, Conv2dConfig};
pub use init::kaiming_uniform_bounds;
pub use linear::{Linear, LinearConfig};
pub use models::{Architecture, MnistCnn, MnistLogistic};

use crate::tensor::Tensor;

/// A network layer or model, as `torch.nn.Module`.
pub trait Module {
    /// The forward pass.
    fn forward(&self, x: &Tensor) -> Tensor;

    /// Parameters with PyTorch's state_dict names (`conv1.weight`, `lin.bias`, ...), in
    /// registration order.
    fn named_parameters(&self) -> Vec<(String, Tensor)>;

    /// Training mode (true) or evaluation mode (false), as `.train()` / `.eval()`.
    fn set_training(&self, training: bool);

    fn is_training(&self) -> bool;

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

/// Prefixes names of a child's parameters (`weight` -> `conv1.weight`).
pub(crate) fn prefixed(prefix: &str, params: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    params.into_iter().map(|(n, t)| (format!("{prefix}.{n}"), t)).collect()
}
