//! `nn.Conv2d`: a square-kernel 2-D convolution layer with its parameters.

use std::cell::Cell;

use super::init::{kaiming_uniform_bounds, uniform_parameter};
use super::{Module, weight_and_bias};
use crate::ops::{conv2d, conv2d_relu};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Configuration of a [`Conv2d`], with PyTorch's defaults.
#[derive(Clone, Debug)]
pub struct Conv2dConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel_size: usize,
    /// Default 1.
    pub stride: usize,
    /// Zero padding on each side; default 0.
    pub padding: usize,
    /// Default true.
    pub bias: bool,
}

impl Conv2dConfig {
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: usize) -> Self {
        Conv2dConfig {
            in_channels,
            out_channels,
            kernel_size,
            stride: 1,
            padding: 0,
            bias: true,
        }
    }
    pub fn with_stride(self, stride: usize) -> Self {
        Conv2dConfig { stride, ..self }
    }
    pub fn with_padding(self, padding: usize) -> Self {
        Conv2dConfig { padding, ..self }
    }
    pub fn with_bias(self, bias: bool) -> Self {
        Conv2dConfig { bias, ..self }
    }

    /// Builds the layer, initialised as PyTorch does by default.
    pub fn init(&self, rng: &mut Rng) -> Conv2d {
        let k = self.kernel_size;
        let (wb, bb) = kaiming_uniform_bounds(self.in_channels * k * k);
        let weight = uniform_parameter(&[self.out_channels, self.in_channels, k, k], wb, rng);
        let bias = self.bias.then(|| uniform_parameter(&[self.out_channels], bb, rng));
        Conv2d {
            weight,
            bias,
            stride: self.stride,
            padding: self.padding,
            training: Cell::new(true),
        }
    }
}

/// A 2-D convolution layer: weight (OC, C, K, K), bias (OC).
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub stride: usize,
    pub padding: usize,
    training: Cell<bool>,
}

impl Conv2d {
    /// `F.relu(self.forward(x))`, fused into one op (same values and gradients, faster).
    pub fn forward_relu(&self, x: &Tensor) -> Tensor {
        conv2d_relu(x, &self.weight, self.bias.as_ref(), self.stride, self.padding)
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Tensor {
        conv2d(x, &self.weight, self.bias.as_ref(), self.stride, self.padding)
    }
    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        weight_and_bias(&self.weight, self.bias.as_ref())
    }
    fn training_flag(&self) -> Option<&Cell<bool>> {
        Some(&self.training)
    }
}
