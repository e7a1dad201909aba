//! Layers without parameters: `nn.ReLU`, `nn.Flatten`, `nn.MaxPool2d`, `nn.AvgPool2d`,
//! `nn.AdaptiveAvgPool2d`, each a thin module over its op in [`crate::ops`].

use super::Module;
use crate::ops::{adaptive_avg_pool2d, avg_pool2d, flatten, max_pool2d, relu};
use crate::tensor::Tensor;

/// `nn.ReLU()`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReLU;

impl Module for ReLU {
    fn forward(&self, x: &Tensor) -> Tensor {
        relu(x)
    }
}

/// `nn.Flatten(start_dim, end_dim)`; the default flattens all but the batch dimension.
#[derive(Clone, Copy, Debug)]
pub struct Flatten {
    pub start_dim: usize,
    /// Negative counts from the end, as in PyTorch: -1 is the last dimension.
    pub end_dim: isize,
}

impl Default for Flatten {
    fn default() -> Self {
        Flatten {
            start_dim: 1,
            end_dim: -1,
        }
    }
}

impl Module for Flatten {
    fn forward(&self, x: &Tensor) -> Tensor {
        flatten(x, self.start_dim, self.end_dim)
    }
}

/// `nn.MaxPool2d(kernel_size, stride, padding)`.
#[derive(Clone, Copy, Debug)]
pub struct MaxPool2d {
    pub kernel_size: usize,
    pub stride: usize,
    pub padding: usize,
}

impl MaxPool2d {
    /// Stride equal to the kernel size and no padding, PyTorch's defaults.
    pub fn new(kernel_size: usize) -> Self {
        MaxPool2d {
            kernel_size,
            stride: kernel_size,
            padding: 0,
        }
    }
    pub fn with_stride(self, stride: usize) -> Self {
        MaxPool2d { stride, ..self }
    }
    pub fn with_padding(self, padding: usize) -> Self {
        MaxPool2d { padding, ..self }
    }
}

impl Module for MaxPool2d {
    fn forward(&self, x: &Tensor) -> Tensor {
        max_pool2d(x, self.kernel_size, self.stride, self.padding)
    }
}

/// `nn.AvgPool2d(kernel_size)` (stride = kernel size, no padding).
#[derive(Clone, Copy, Debug)]
pub struct AvgPool2d {
    pub kernel_size: usize,
}

impl Module for AvgPool2d {
    fn forward(&self, x: &Tensor) -> Tensor {
        avg_pool2d(x, self.kernel_size)
    }
}

/// `nn.AdaptiveAvgPool2d((oh, ow))`.
#[derive(Clone, Copy, Debug)]
pub struct AdaptiveAvgPool2d {
    pub output_size: (usize, usize),
}

impl Module for AdaptiveAvgPool2d {
    fn forward(&self, x: &Tensor) -> Tensor {
        adaptive_avg_pool2d(x, self.output_size)
    }
}
