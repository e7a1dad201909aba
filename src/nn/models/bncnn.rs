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

use std::cell::RefCell;

use crate::nn::{BatchNorm2d, BatchNorm2dConfig, Conv2d, Conv2dConfig, Linear, LinearConfig, Module};
use crate::ops::{adaptive_avg_pool2d, conv2d_relu_winograd, flatten, max_pool2d, reshape};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Convolution (3x3, padding 1, no bias), batch norm, ReLU.
pub struct ConvBn {
    pub conv: Conv2d,
    pub bn: BatchNorm2d,
    /// The folded weight and bias (see [`ConvBn::folded`]), with the tensors and versions
    /// they were made from.
    fold_cache: RefCell<Option<Folded>>,
}

/// A folded weight and bias, and the tensors (with their versions) they were made from.
type Folded = (Vec<(Tensor, u64)>, Tensor, Tensor);

impl ConvBn {
    pub fn new(c: usize, oc: usize, stride: usize, rng: &mut Rng) -> Self {
        ConvBn {
            conv: Conv2dConfig::new(c, oc, 3)
                .with_stride(stride)
                .with_padding(1)
                .with_bias(false)
                .init(rng),
            bn: BatchNorm2dConfig::new(oc).init(),
            fold_cache: RefCell::new(None),
        }
    }

    /// In evaluation without gradients, the batch norm folded into the convolution (as
    /// inference engines do): scale = weight / sqrt(running_var + eps) per output channel,
    /// conv weight x scale, bias = bias - running_mean x scale. One pass over the activations
    /// fewer; the same values up to rounding (f32 products taken in another order).
    fn folded(&self) -> Option<(Tensor, Tensor)> {
        let bn = &self.bn;
        if bn.is_training() || crate::tensor::is_grad_enabled() || self.conv.bias.is_some() {
            return None;
        }
        let (rm, rv) = (bn.running_mean.as_ref()?, bn.running_var.as_ref()?);
        // Made again only when one of its inputs changed (an optimizer step, a loaded state).
        let from: Vec<&Tensor> = [
            Some(&self.conv.weight),
            bn.weight.as_ref(),
            bn.bias.as_ref(),
            Some(rm),
            Some(rv),
        ]
        .into_iter()
        .flatten()
        .collect();
        if let Some((made_from, w, b)) = &*self.fold_cache.borrow()
            && made_from.len() == from.len()
            && made_from
                .iter()
                .zip(&from)
                .all(|((t, v), now)| t.is(now) && *v == now.version())
        {
            return Some((w.clone(), b.clone()));
        }
        let (mean, var) = (rm.data(), rv.data());
        let c = mean.len();
        let gamma = bn.weight.as_ref().map(|w| w.to_vec()).unwrap_or_else(|| vec![1.0; c]);
        let beta = bn.bias.as_ref().map(|b| b.to_vec()).unwrap_or_else(|| vec![0.0; c]);
        let scale: Vec<f64> = (0..c)
            .map(|i| gamma[i] as f64 / (var[i] as f64 + bn.eps as f64).sqrt())
            .collect();
        let w = self.conv.weight.data();
        let per = w.len() / c;
        let wf = w
            .iter()
            .enumerate()
            .map(|(j, &v)| (v as f64 * scale[j / per]) as f32)
            .collect();
        let bf = (0..c)
            .map(|i| (beta[i] as f64 - mean[i] as f64 * scale[i]) as f32)
            .collect();
        let shape = self.conv.weight.shape().to_vec();
        let (w, b) = (Tensor::from_vec(wf, &shape), Tensor::from_vec(bf, &[c]));
        let made_from = from.into_iter().map(|t| (t.clone(), t.version())).collect();
        *self.fold_cache.borrow_mut() = Some((made_from, w.clone(), b.clone()));
        Some((w, b))
    }

    /// The block then a 2x2 max pooling: in one op when the batch norm is folded (inference),
    /// by Winograd where it applies (see [`conv2d_relu_winograd`]; on AVX2, blocks 2 and 3 of a
    /// batch of 16 took 24.5 and 22.2 us an image directly, 17.1 and 18.3 by F(2x2, 3x3) on a
    /// Zen 3; on a Xeon, 15.4 and 15.9 by F(2x2, 3x3), 12.6 and 11.2 by F(4x4, 3x3)), else the
    /// direct `conv2d_relu_max_pool2d`, with the same bits as the ops one after the other.
    pub fn forward_max_pool(&self, x: &Tensor) -> Tensor {
        if let Some((w, b)) = self.folded() {
            return conv2d_relu_winograd(x, &w, Some(&b), (self.conv.stride, self.conv.padding), true);
        }
        max_pool2d(&self.forward(x), 2, 2, 0)
    }
}

impl Module for ConvBn {
    fn forward(&self, x: &Tensor) -> Tensor {
        // Folded (inference): by Winograd, block 3 at stride 1 and block 4 at stride 2 (a batch
        // of 16 on a Xeon, one thread: block 4 took 15.1-15.5 us an image directly on AVX2 and
        // 11.4-11.7 by Winograd; 9.3-9.5 and 7.5-7.6 on AVX-512).
        if let Some((w, b)) = self.folded() {
            return conv2d_relu_winograd(x, &w, Some(&b), (self.conv.stride, self.conv.padding), false);
        }
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
        let x = self.block1.forward_max_pool(&x);
        let x = self.block2.forward_max_pool(&x);
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

    #[test]
    fn evaluation_without_gradients_folds_the_batch_norm_with_the_same_values() {
        let m = BnCnn::new(&mut Rng::new(0));
        let x = Tensor::rand(&[6, 784], &mut Rng::new(1));
        // A few training steps' worth of running statistics, and non-trivial affine weights.
        for _ in 0..3 {
            m.forward(&x);
        }
        for b in [&m.block1, &m.block2, &m.block3, &m.block4] {
            let c = b.bn.running_mean.as_ref().unwrap().numel();
            let w: Vec<f32> = (0..c).map(|i| 0.5 + i as f32 / c as f32).collect();
            b.bn.weight.as_ref().unwrap().data_mut().copy_from_slice(&w);
            b.bn.bias.as_ref().unwrap().data_mut().fill(0.1);
        }
        m.set_training(false);
        assert!(
            m.block1.folded().is_none(),
            "gradients on: the two ops, so BN's gradients flow"
        );
        let plain = m.forward(&x).to_vec();
        let folded = crate::tensor::no_grad(|| {
            assert!(m.block1.folded().is_some());
            m.forward(&x).to_vec()
        });
        let scale = plain.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        for (a, b) in plain.iter().zip(&folded) {
            assert!((a - b).abs() <= 1e-5 * scale, "{a} vs {b} (scale {scale})");
        }
        // Made once, then reused until a weight or statistic changes.
        crate::tensor::no_grad(|| {
            let (w1, _) = m.block1.folded().unwrap();
            assert!(m.block1.folded().unwrap().0.is(&w1), "reused");
            m.block1.bn.running_var.as_ref().unwrap().data_mut()[0] *= 4.0;
            let (w2, _) = m.block1.folded().unwrap();
            assert!(!w2.is(&w1), "made again after running_var changed");
            let (a, b) = (w2.to_vec()[0], w1.to_vec()[0] / 2.0);
            assert!(
                (a - b).abs() <= 1e-3 * b.abs(),
                "channel 0 scaled by about 1/sqrt(4): {a} vs {b}"
            );
        });
        m.set_training(true);
        crate::tensor::no_grad(|| assert!(m.block1.folded().is_none(), "training: batch statistics"));
    }
}
