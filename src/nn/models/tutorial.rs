//! The tutorial's two models: `Mnist_Logistic` (one linear layer) and `Mnist_CNN`.
//!
//! Mnist_CNN: x (N, 784) -> view (N, 1, 28, 28) -> conv1 1->16 (14x14) -> relu
//! -> conv2 16->16 (7x7) -> relu -> conv3 16->10 (4x4) -> relu -> avg_pool2d(4) (1x1)
//! -> view (N, 10). Each conv is 3x3, stride 2, padding 1.
//!
//! `MnistCnn::without_final_relu` leaves out the ReLU after conv3: the logits are then an
//! average of conv3's outputs, which can be negative. With the ReLU, a class whose 16 conv3
//! outputs all turn negative gets logit 0 and no gradient (a "dead" class), which is how one
//! seed in three gets stuck near 85%.

use crate::nn::{Conv2d, Conv2dConfig, Linear, LinearConfig, Module};
use crate::ops::{avg_pool2d, reshape};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// The tutorial's CNN.
pub struct MnistCnn {
    pub conv1: Conv2d,
    pub conv2: Conv2d,
    pub conv3: Conv2d,
    /// The tutorial's ReLU after conv3, before the pool (true in `new`).
    pub final_relu: bool,
}

impl MnistCnn {
    pub fn new(rng: &mut Rng) -> Self {
        let conv = |i, o| Conv2dConfig::new(i, o, 3).with_stride(2).with_padding(1);
        MnistCnn {
            conv1: conv(1, 16).init(rng),
            conv2: conv(16, 16).init(rng),
            conv3: conv(16, 10).init(rng),
            final_relu: true,
        }
    }

    /// The same network and initialisation without the ReLU before the pool.
    pub fn without_final_relu(rng: &mut Rng) -> Self {
        MnistCnn {
            final_relu: false,
            ..MnistCnn::new(rng)
        }
    }
    fn layers(&self) -> [(&'static str, &Conv2d); 3] {
        [("conv1", &self.conv1), ("conv2", &self.conv2), ("conv3", &self.conv3)]
    }
}

impl Module for MnistCnn {
    fn forward(&self, xb: &Tensor) -> Tensor {
        let mut x = reshape(xb, &[None, Some(1), Some(28), Some(28)]);
        // The tutorial's F.relu(self.convN(xb)), each pair fused into one op.
        for (name, conv) in self.layers() {
            x = if name == "conv3" && !self.final_relu {
                conv.forward(&x)
            } else {
                conv.forward_relu(&x)
            };
        }
        let x = avg_pool2d(&x, 4);
        let c = x.shape()[1];
        reshape(&x, &[None, Some(c)])
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        self.layers()
            .into_iter()
            .map(|(n, l)| (n.to_string(), l as &dyn Module))
            .collect()
    }
}

/// The tutorial's first model: one linear layer, 784 -> 10.
pub struct MnistLogistic {
    pub lin: Linear,
}

impl MnistLogistic {
    pub fn new(rng: &mut Rng) -> Self {
        MnistLogistic {
            lin: LinearConfig::new(784, 10).init(rng),
        }
    }
}

impl Module for MnistLogistic {
    fn forward(&self, xb: &Tensor) -> Tensor {
        self.lin.forward(xb)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("lin".to_string(), &self.lin as &dyn Module)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cnn_has_pytorch_names_and_shapes() {
        let m = MnistCnn::new(&mut Rng::new(0));
        let got: Vec<(String, Vec<usize>)> = m
            .named_parameters()
            .into_iter()
            .map(|(n, t)| (n, t.shape().to_vec()))
            .collect();
        let want = [
            ("conv1.weight", vec![16, 1, 3, 3]),
            ("conv1.bias", vec![16]),
            ("conv2.weight", vec![16, 16, 3, 3]),
            ("conv2.bias", vec![16]),
            ("conv3.weight", vec![10, 16, 3, 3]),
            ("conv3.bias", vec![10]),
        ];
        assert_eq!(got.len(), want.len());
        for ((n, s), (wn, ws)) in got.iter().zip(want) {
            assert_eq!((n.as_str(), s), (wn, &ws));
        }
        assert_eq!(m.num_parameters(), 160 + 2320 + 1450);
    }

    #[test]
    fn cnn_maps_a_batch_to_ten_non_negative_logits_and_every_parameter_gets_a_gradient() {
        let m = MnistCnn::new(&mut Rng::new(1));
        let x = Tensor::from_vec((0..3 * 784).map(|i| (i % 256) as f32 / 256.0).collect(), &[3, 784]);
        let y = m.forward(&x);
        assert_eq!(y.shape(), &[3, 10]);
        assert!(y.data().iter().all(|&v| v >= 0.0), "ReLU before the pool");
        crate::ops::cross_entropy(&y, &[1, 2, 3]).backward();
        for (n, p) in m.named_parameters() {
            assert!(p.grad().is_some(), "{n} has no gradient");
        }
    }

    #[test]
    fn without_the_final_relu_logits_can_be_negative_and_the_weights_are_the_same() {
        let (a, b) = (
            MnistCnn::new(&mut Rng::new(2)),
            MnistCnn::without_final_relu(&mut Rng::new(2)),
        );
        assert_eq!(a.conv3.weight.to_vec(), b.conv3.weight.to_vec());
        let x = Tensor::from_vec(
            (0..4 * 784).map(|i| ((i * 7) % 256) as f32 / 256.0).collect(),
            &[4, 784],
        );
        let (ya, yb) = (a.forward(&x).to_vec(), b.forward(&x).to_vec());
        assert!(ya.iter().all(|v| *v >= 0.0));
        assert!(yb.iter().any(|v| *v < 0.0), "{yb:?}");
        // Where conv3's average is positive the two agree up to the pool's rounding.
        assert!(ya.iter().zip(&yb).any(|(p, q)| *q > 0.0 && (p - q).abs() < 1e-6));
    }

    #[test]
    fn logistic_names_and_mode_switch() {
        let m = MnistLogistic::new(&mut Rng::new(0));
        let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["lin.weight", "lin.bias"]);
        assert!(m.is_training());
        m.set_training(false);
        assert!(!m.is_training());
        assert!(!m.lin.is_training(), "the child follows");
    }

    #[test]
    fn same_seed_same_weights() {
        let a = MnistCnn::new(&mut Rng::new(5)).conv2.weight.to_vec();
        let b = MnistCnn::new(&mut Rng::new(5)).conv2.weight.to_vec();
        let c = MnistCnn::new(&mut Rng::new(6)).conv2.weight.to_vec();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
