//! LeNet-5 (LeCun et al. 1998) as it is usually written today: ReLU and max pooling in place of
//! the scaled tanh and trainable subsampling, the first convolution padded so 28x28 MNIST
//! images keep the original's 32x32 geometry.
//!
//! x (N, 784) -> view (N, 1, 28, 28) -> conv1 1->6 5x5 pad 2 (28x28) -> relu -> max pool 2
//! (14x14) -> conv2 6->16 5x5 (10x10) -> relu -> max pool 2 (5x5) -> flatten (N, 400)
//! -> fc1 400->120 -> relu -> fc2 120->84 -> relu -> fc3 84->10. 61,706 parameters.

use crate::nn::{Conv2d, Conv2dConfig, Linear, LinearConfig, Module};
use crate::ops::{flatten, max_pool2d, relu, reshape};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// LeNet-5.
pub struct LeNet5 {
    pub conv1: Conv2d,
    pub conv2: Conv2d,
    pub fc1: Linear,
    pub fc2: Linear,
    pub fc3: Linear,
}

impl LeNet5 {
    pub fn new(rng: &mut Rng) -> Self {
        LeNet5 {
            conv1: Conv2dConfig::new(1, 6, 5).with_padding(2).init(rng),
            conv2: Conv2dConfig::new(6, 16, 5).init(rng),
            fc1: LinearConfig::new(400, 120).init(rng),
            fc2: LinearConfig::new(120, 84).init(rng),
            fc3: LinearConfig::new(84, 10).init(rng),
        }
    }
}

impl Module for LeNet5 {
    fn forward(&self, xb: &Tensor) -> Tensor {
        let x = reshape(xb, &[None, Some(1), Some(28), Some(28)]);
        let x = max_pool2d(&self.conv1.forward_relu(&x), 2, 2, 0);
        let x = max_pool2d(&self.conv2.forward_relu(&x), 2, 2, 0);
        let x = relu(&self.fc1.forward(&flatten(&x, 1, -1)));
        let x = relu(&self.fc2.forward(&x));
        self.fc3.forward(&x)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("conv1".into(), &self.conv1),
            ("conv2".into(), &self.conv2),
            ("fc1".into(), &self.fc1),
            ("fc2".into(), &self.fc2),
            ("fc3".into(), &self.fc3),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_names_and_parameter_count() {
        let m = LeNet5::new(&mut Rng::new(0));
        assert_eq!(m.num_parameters(), 61_706);
        let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names[0], "conv1.weight");
        assert_eq!(names[9], "fc3.bias");
        let y = m.forward(&Tensor::zeros(&[3, 784]));
        assert_eq!(y.shape(), &[3, 10]);
        crate::ops::cross_entropy(&y, &[0, 1, 2]).backward();
        assert!(m.parameters().iter().all(|p| p.grad().is_some()));
    }
}
