//! `nn.Linear`: y = x W^T + b.

use std::cell::Cell;

use super::init::{kaiming_uniform_bounds, uniform_parameter};
use super::{Module, weight_and_bias};
use crate::ops::linear;
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Configuration of a [`Linear`], with PyTorch's defaults.
#[derive(Clone, Debug)]
pub struct LinearConfig {
    pub in_features: usize,
    pub out_features: usize,
    /// Default true.
    pub bias: bool,
}

impl LinearConfig {
    pub fn new(in_features: usize, out_features: usize) -> Self {
        LinearConfig {
            in_features,
            out_features,
            bias: true,
        }
    }

    /// Builds the layer, initialised as PyTorch does by default.
    pub fn init(&self, rng: &mut Rng) -> Linear {
        let (wb, bb) = kaiming_uniform_bounds(self.in_features);
        let weight = uniform_parameter(&[self.out_features, self.in_features], wb, rng);
        let bias = self.bias.then(|| uniform_parameter(&[self.out_features], bb, rng));
        Linear {
            weight,
            bias,
            training: Cell::new(true),
        }
    }
}

/// A fully connected layer: weight (OUT, IN), bias (OUT).
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    training: Cell<bool>,
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Tensor {
        linear(x, &self.weight, self.bias.as_ref())
    }
    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        weight_and_bias(&self.weight, self.bias.as_ref())
    }
    fn training_flag(&self) -> Option<&Cell<bool>> {
        Some(&self.training)
    }
}
