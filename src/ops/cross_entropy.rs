//! Cross-entropy loss = nll_loss(log_softmax(logits)), as `F.cross_entropy` (mean reduction).
//!
//! Shapes: logits (N, C), target N class indices, loss a scalar.

use super::{log_softmax, nll_loss};
use crate::tensor::Tensor;

/// `F.cross_entropy(logits, target)`.
pub fn cross_entropy(logits: &Tensor, target: &[usize]) -> Tensor {
    nll_loss(&log_softmax(logits), target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check, input, random};

    #[test]
    fn gradient_matches_finite_differences() {
        let target = [1, 3, 0];
        check(
            &[input(random(12, 21), &[3, 4], true)],
            |t| cross_entropy(&t[0], &target),
            |v| {
                let loss: f64 = v[0]
                    .chunks(4)
                    .zip(target)
                    .map(|(r, t)| r.iter().map(|x| x.exp()).sum::<f64>().ln() - r[t])
                    .sum();
                vec![loss / 3.0]
            },
            1e-4,
        );
    }

    /// Golden values written by `scripts/torch_golden.py` (PyTorch 2.15, float32):
    /// z = sin(arange(40)) * 30 as (4, 10), z[1, 3] = 200, target = [3, 0, 9, 5];
    /// loss = F.cross_entropy(z, target); loss.backward().
    #[test]
    fn matches_pytorch_golden_values_with_large_logits() {
        let mut z: Vec<f32> = (0..40).map(|i| (i as f32).sin() * 30.0).collect();
        z[13] = 200.0;
        let zt = Tensor::parameter(z, &[4, 10]);
        let loss = cross_entropy(&zt, &[3, 0, 9, 5]);
        let l = loss.item();
        assert!(
            (l - golden::LOSS).abs() <= 1e-5 * golden::LOSS.abs(),
            "loss {l} vs torch {}",
            golden::LOSS
        );
        loss.backward();
        for (k, (a, b)) in zt.grad().unwrap().iter().zip(golden::DZ).enumerate() {
            assert!((a - b).abs() <= 1e-6, "dz[{k}]: {a} vs torch {b}");
        }
    }

    #[allow(clippy::excessive_precision)]
    mod golden {
        include!("../../tests/golden/cross_entropy.rs");
    }
}
