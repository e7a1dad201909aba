//! PyTorch's default initialisation for `nn.Linear` and `nn.Conv2d`.
//!
//! weight: kaiming_uniform_(a = sqrt(5)): gain = sqrt(2 / (1 + a^2)) = sqrt(1/3),
//! bound = gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in). bias: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)).
//! fan_in = in_features, or in_channels * KH * KW for a convolution.

use crate::rng::Rng;
use crate::tensor::Tensor;

/// (weight bound, bias bound) for a layer with this fan-in.
pub fn kaiming_uniform_bounds(fan_in: usize) -> (f32, f32) {
    let a = 5.0f64.sqrt();
    let gain = (2.0 / (1.0 + a * a)).sqrt();
    let w = gain * (3.0 / fan_in as f64).sqrt();
    let b = 1.0 / (fan_in as f64).sqrt();
    (w as f32, b as f32)
}

/// A parameter of `shape` filled from U(-bound, bound).
pub(crate) fn uniform_parameter(shape: &[usize], bound: f32, rng: &mut Rng) -> Tensor {
    let n = shape.iter().product();
    Tensor::parameter((0..n).map(|_| rng.uniform(-bound, bound)).collect(), shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_one_over_sqrt_fan_in() {
        let (w, b) = kaiming_uniform_bounds(144);
        assert!((w - 1.0 / 12.0).abs() < 1e-7 && (b - 1.0 / 12.0).abs() < 1e-7);
    }

    #[test]
    fn values_fill_the_range_and_stay_inside() {
        let mut rng = Rng::new(0);
        let p = uniform_parameter(&[100, 100], 0.25, &mut rng);
        let d = p.data();
        assert!(d.iter().all(|v| v.abs() <= 0.25));
        let max = d.iter().copied().fold(0.0f32, f32::max);
        let mean = d.iter().sum::<f32>() / d.len() as f32;
        assert!(max > 0.24 && mean.abs() < 0.01, "max {max} mean {mean}");
        assert!(p.requires_grad());
    }
}
