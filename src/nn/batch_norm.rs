//! `nn.BatchNorm2d`: per-channel normalisation of (N, C, H, W) activations, with a learned
//! scale (`weight`) and shift (`bias`), and running statistics kept as buffers
//! (`running_mean`, `running_var`, `num_batches_tracked`, PyTorch's state_dict names).
//! Training normalises with the batch's statistics and updates the running ones; evaluation
//! uses the running ones.

use std::cell::Cell;

use super::Module;
use crate::ops::{batch_norm2d, batch_norm2d_relu};
use crate::tensor::Tensor;

/// Configuration of a [`BatchNorm2d`], with PyTorch's defaults.
#[derive(Clone, Debug)]
pub struct BatchNorm2dConfig {
    pub num_features: usize,
    /// Added to the variance; default 1e-5.
    pub eps: f32,
    /// Weight of the newest batch in the running statistics; default Some(0.1). `None` keeps a
    /// cumulative average (1 / num_batches_tracked), as PyTorch's `momentum=None`.
    pub momentum: Option<f32>,
    /// Learned weight and bias; default true.
    pub affine: bool,
    /// Keep running statistics (and use them in evaluation); default true.
    pub track_running_stats: bool,
}

impl BatchNorm2dConfig {
    pub fn new(num_features: usize) -> Self {
        BatchNorm2dConfig {
            num_features,
            eps: 1e-5,
            momentum: Some(0.1),
            affine: true,
            track_running_stats: true,
        }
    }
    pub fn with_eps(self, eps: f32) -> Self {
        BatchNorm2dConfig { eps, ..self }
    }
    pub fn with_momentum(self, momentum: Option<f32>) -> Self {
        BatchNorm2dConfig { momentum, ..self }
    }
    pub fn with_affine(self, affine: bool) -> Self {
        BatchNorm2dConfig { affine, ..self }
    }
    pub fn with_track_running_stats(self, track_running_stats: bool) -> Self {
        BatchNorm2dConfig {
            track_running_stats,
            ..self
        }
    }

    /// The layer as PyTorch initialises it: weight 1, bias 0, running mean 0, running var 1.
    pub fn init(&self) -> BatchNorm2d {
        let c = self.num_features;
        let affine = self.affine;
        let track = self.track_running_stats;
        BatchNorm2d {
            weight: affine.then(|| Tensor::parameter(vec![1.0; c], &[c])),
            bias: affine.then(|| Tensor::parameter(vec![0.0; c], &[c])),
            running_mean: track.then(|| Tensor::zeros(&[c])),
            running_var: track.then(|| Tensor::from_vec(vec![1.0; c], &[c])),
            num_batches_tracked: track.then(|| Tensor::zeros(&[])),
            eps: self.eps,
            momentum: self.momentum,
            training: Cell::new(true),
        }
    }
}

/// A batch-norm layer over C channels.
pub struct BatchNorm2d {
    pub weight: Option<Tensor>,
    pub bias: Option<Tensor>,
    pub running_mean: Option<Tensor>,
    pub running_var: Option<Tensor>,
    /// A 0-d tensor counting the training batches seen (an integer in PyTorch).
    pub num_batches_tracked: Option<Tensor>,
    pub eps: f32,
    pub momentum: Option<f32>,
    training: Cell<bool>,
}

impl BatchNorm2d {
    /// `relu(self.forward(x))` as one op ([`batch_norm2d_relu`]): the same bits, values and
    /// gradients, with one pass fewer over the activations each way.
    pub fn forward_relu(&self, x: &Tensor) -> Tensor {
        self.run(x, true)
    }

    fn run(&self, x: &Tensor, relu: bool) -> Tensor {
        let training = self.training.get();
        let mut momentum = self.momentum.unwrap_or(0.0);
        if training && let Some(n) = &self.num_batches_tracked {
            // A buffer, not a parameter: updated in place, outside the graph.
            let count = {
                let mut v = n.data_mut();
                v[0] += 1.0;
                v[0]
            };
            if self.momentum.is_none() {
                momentum = 1.0 / count;
            }
        }
        // Batch statistics in training, or whenever there are no running ones.
        let use_batch = training || self.running_mean.is_none();
        let op = if relu { batch_norm2d_relu } else { batch_norm2d };
        op(
            x,
            self.running_mean.as_ref(),
            self.running_var.as_ref(),
            self.weight.as_ref(),
            self.bias.as_ref(),
            use_batch,
            momentum,
            self.eps,
        )
    }
}

impl Module for BatchNorm2d {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.run(x, false)
    }
    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        let mut v = Vec::new();
        v.extend(self.weight.iter().map(|w| ("weight".to_string(), w.clone())));
        v.extend(self.bias.iter().map(|b| ("bias".to_string(), b.clone())));
        v
    }
    fn own_buffers(&self) -> Vec<(String, Tensor)> {
        [
            ("running_mean", &self.running_mean),
            ("running_var", &self.running_var),
            ("num_batches_tracked", &self.num_batches_tracked),
        ]
        .into_iter()
        .filter_map(|(n, t)| t.as_ref().map(|t| (n.to_string(), t.clone())))
        .collect()
    }
    fn training_flag(&self) -> Option<&Cell<bool>> {
        Some(&self.training)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn names_and_buffers_follow_pytorch_and_running_stats_move_in_training_only() {
        let bn = BatchNorm2dConfig::new(3).init();
        let names: Vec<String> = bn.named_parameters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["weight", "bias"]);
        let bufs: Vec<(String, Vec<usize>)> = bn
            .named_buffers()
            .into_iter()
            .map(|(n, t)| (n, t.shape().to_vec()))
            .collect();
        assert_eq!(
            bufs,
            [
                ("running_mean".to_string(), vec![3]),
                ("running_var".to_string(), vec![3]),
                ("num_batches_tracked".to_string(), vec![])
            ]
        );
        let x = Tensor::rand(&[4, 3, 2, 2], &mut Rng::new(0));
        bn.forward(&x);
        bn.forward(&x);
        assert_eq!(bn.num_batches_tracked.as_ref().unwrap().to_vec(), [2.0]);
        let mean = bn.running_mean.as_ref().unwrap().to_vec();
        assert!(
            mean.iter().all(|m| *m > 0.05 && *m < 0.5),
            "moved towards ~0.5: {mean:?}"
        );
        bn.eval();
        let before = bn.running_mean.as_ref().unwrap().to_vec();
        bn.forward(&x);
        assert_eq!(bn.running_mean.as_ref().unwrap().to_vec(), before);
        assert_eq!(bn.num_batches_tracked.as_ref().unwrap().to_vec(), [2.0]);
    }

    #[test]
    fn cumulative_average_when_momentum_is_none() {
        let bn = BatchNorm2dConfig::new(1).with_momentum(None).init();
        let batch = |v: f32| Tensor::from_vec(vec![v, v + 1.0], &[2, 1, 1, 1]);
        bn.forward(&batch(1.0)); // mean 1.5
        bn.forward(&batch(3.0)); // mean 3.5
        let m = bn.running_mean.as_ref().unwrap().to_vec()[0];
        assert!((m - 2.5).abs() < 1e-6, "average of 1.5 and 3.5, got {m}");
    }

    #[test]
    fn forward_relu_is_relu_of_forward_bit_for_bit() {
        let x = Tensor::rand(&[5, 3, 4, 4], &mut Rng::new(1));
        let run = |fused: bool| {
            let bn = BatchNorm2dConfig::new(3).init();
            let xp = Tensor::parameter(x.to_vec(), x.shape());
            let mut out = Vec::new();
            for training in [true, false] {
                bn.set_training(training);
                let y = if fused {
                    bn.forward_relu(&xp)
                } else {
                    crate::ops::relu(&bn.forward(&xp))
                };
                crate::ops::sum(&crate::ops::mul(&y, &y), None, false).backward();
                out.push(y.to_vec());
            }
            out.push(xp.grad().unwrap());
            out.push(bn.weight.as_ref().unwrap().grad().unwrap());
            out.extend(bn.named_buffers().into_iter().map(|(_, t)| t.to_vec()));
            out.into_iter()
                .map(|v| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        };
        let (fused, two) = (run(true), run(false));
        assert!(fused[0].contains(&0), "the ReLU cut some values");
        assert_eq!(fused, two);
    }
}
