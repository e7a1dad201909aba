//! `bncnn`: the accuracy model, designed for accuracy per second on a CPU. Four 3x3
//! convolution blocks (convolution without bias, BatchNorm2d, ReLU); the image is halved
//! early, so that only the cheap first layer (one input channel) runs at full resolution, and
//! the wide layers run at 7x7 and 4x4. Global average pooling and one linear layer.
//!
//! x (N, 784) -> view (N, 1, 28, 28)
//! -> block1 1->16 (28x28) -> max pool 2 (14x14)
//! -> block2 16->32 (14x14) -> max pool 2 (7x7)
//! -> block3 32->64 (7x7)
//! -> block4 64->64 stride 2 (4x4)
//! -> adaptive avg pool (1x1) -> flatten (N, 64) -> fc 64->10.
//!
//! Each block is `conv` (no bias: the batch norm's shift replaces it) then `bn` then ReLU;
//! the state_dict names are PyTorch's for the same `nn.Module` (`block1.conv.weight`,
//! `block1.bn.running_mean`, ..., `fc.weight`), as `bench/best_model.py` defines it.
//! About 2.5 M multiply-adds per image, 61,050 parameters.

use crate::nn::{BatchNorm2d, BatchNorm2dConfig, Conv2d, Conv2dConfig, Linear, LinearConfig, Module};
use crate::ops::{adaptive_avg_pool2d, flatten, max_pool2d, reshape};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Convolution (3x3, padding 1, no bias), batch norm, ReLU.
pub struct ConvBn {
    pub conv: Conv2d,
    pub bn: BatchNorm2d,
}

impl ConvBn {
    pub fn new(c: usize, oc: usize, stride: usize, rng: &mut Rng) -> Self {
        ConvBn {
            conv: Conv2dConfig::new(c, oc, 3)
                .with_stride(stride)
                .with_padding(1)
                .with_bias(false)
                .init(rng),
            bn: BatchNorm2dConfig::new(oc).init(),
        }
    }
}

impl Module for ConvBn {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.bn.forward_relu(&self.conv.forward(x))
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("conv".into(), &self.conv), ("bn".into(), &self.bn)]
    }
}

/// The `bncnn` model.
pub struct BnCnn {
    pub block1: ConvBn,
    pub block2: ConvBn,
    pub block3: ConvBn,
    pub block4: ConvBn,
    pub fc: Linear,
}

impl BnCnn {
    pub fn new(rng: &mut Rng) -> Self {
        BnCnn {
            block1: ConvBn::new(1, 16, 1, rng),
            block2: ConvBn::new(16, 32, 1, rng),
            block3: ConvBn::new(32, 64, 1, rng),
            block4: ConvBn::new(64, 64, 2, rng),
            fc: LinearConfig::new(64, 10).init(rng),
        }
    }
}

impl Module for BnCnn {
    fn forward(&self, xb: &Tensor) -> Tensor {
        let x = reshape(xb, &[None, Some(1), Some(28), Some(28)]);
        let x = max_pool2d(&self.block1.forward(&x), 2, 2, 0);
        let x = max_pool2d(&self.block2.forward(&x), 2, 2, 0);
        let x = self.block4.forward(&self.block3.forward(&x));
        let x = flatten(&adaptive_avg_pool2d(&x, (1, 1)), 1, -1);
        self.fc.forward(&x)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("block1".into(), &self.block1),
            ("block2".into(), &self.block2),
            ("block3".into(), &self.block3),
            ("block4".into(), &self.block4),
            ("fc".into(), &self.fc),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_names_parameters_and_gradients() {
        let m = BnCnn::new(&mut Rng::new(0));
        // 16*9 + 32*144 + 64*288 + 64*576 convolution weights, 2*(16+32+64+64) batch-norm
        // weights and biases, 64*10 + 10 linear.
        assert_eq!(m.num_parameters(), 144 + 4608 + 18432 + 36864 + 352 + 650);
        let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names[..3], ["block1.conv.weight", "block1.bn.weight", "block1.bn.bias"]);
        assert_eq!(names.last().unwrap(), "fc.bias");
        let bufs: Vec<String> = m.named_buffers().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            bufs[..3],
            [
                "block1.bn.running_mean",
                "block1.bn.running_var",
                "block1.bn.num_batches_tracked"
            ]
        );
        let y = m.forward(&Tensor::rand(&[3, 784], &mut Rng::new(1)));
        assert_eq!(y.shape(), &[3, 10]);
        crate::ops::cross_entropy(&y, &[0, 1, 2]).backward();
        assert!(m.parameters().iter().all(|p| p.grad().is_some()));
    }
}
