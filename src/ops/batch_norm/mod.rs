//! Batch normalisation of images, per channel (`F.batch_norm` on a 4-d input, as
//! `nn.BatchNorm2d` calls it), and the fused `relu(batch_norm(x))`.
//!
//! Shapes: x (N, C, H, W) -> y (N, C, H, W); running_mean, running_var, weight, bias (C).
//! With M = N * H * W values per channel:
//! - training: y = (x - mean) / sqrt(var + eps) * weight + bias with the batch's mean and
//!   biased variance (divided by M); the running statistics, when given, are updated in place
//!   (no graph) as PyTorch does: running = (1 - momentum) * running + momentum * batch, with
//!   the unbiased variance (times M / (M - 1)) for running_var. M = 1 panics with PyTorch's
//!   message (a variance of one value is a programming error, not an input error).
//! - evaluation: the same with running_mean and running_var (both required).
//!
//! weight and bias are optional (`affine=False`); gradients flow to x, weight and bias.
//! Works on either memory layout; the result keeps x's layout, and both layouts give the same
//! bits (plain-layout chunks are transposed to channels-last for the kernels).
//!
//! Method: vector kernels on channels-last chunks (`kernels`), channels in vector lanes, so
//! per-channel sums are lane-wise; the passes over the batch (`passes`) split it into chunks of
//! [`CHUNK`](crate::ops::CHUNK) samples and add per-chunk results in chunk order, so results
//! do not depend on the number of threads. Forward (training): statistics (two passes per
//! chunk while it is in cache), then y = (x - m) * scale + shift, one add and one fused
//! multiply-add per value (m = the mean rounded to f32; the rest of the mean is in the shift);
//! evaluation: y = x * scale + shift, one fused multiply-add, as PyTorch computes it (with
//! running statistics of a large mean and a small spread, it keeps less precision than the
//! training form). Backward: one pass for sum(dy)
//! and sum(dy * xhat), one for dx.
//!
//! Numerics: per-value arithmetic is f32; sums are f32 over blocks of
//! [`SUM_BLOCK`] positions, then f64 (see `passes::batch_stats` for the
//! variance); the per-channel coefficients are computed in f64 and rounded once. Subtracting
//! the f32-rounded mean first keeps inputs with a large mean and a small spread accurate.
//! The vector backends give the same bits; the portable one rounds multiply-adds twice.
//!
//! [`batch_norm2d_relu`] applies the ReLU as y is stored and masks dy inside the backward's
//! passes: the same bits as [`batch_norm2d`] followed by [`relu`](crate::ops::relu()), values
//! and gradients, with one pass fewer each way.

mod kernels;
mod passes;
#[cfg(test)]
mod tests;

pub use kernels::SUM_BLOCK;
pub use passes::{Coefficients, Planes, batch_stats, grad_sums, input_grad, normalize};

use crate::profile::{self, Phase};
use crate::simd_dispatch;
use crate::tensor::{BackwardFn, Tensor, pool};

fn as_f64(t: &Tensor) -> Vec<f64> {
    t.data().iter().map(|&v| v as f64).collect()
}

/// `F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)` on
/// x (N, C, H, W), stored either way; see the module header. Panics on shapes that do not fit,
/// on one running statistic without the other, on evaluation without them, and on a training
/// batch with a single value per channel.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm2d(
    x: &Tensor,
    running_mean: Option<&Tensor>,
    running_var: Option<&Tensor>,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    training: bool,
    momentum: f32,
    eps: f32,
) -> Tensor {
    let stats = (running_mean, running_var);
    batch_norm_op(x, stats, (weight, bias), (training, momentum, eps), false)
}

/// `F.relu(F.batch_norm(...))` as one op, bit-identical to [`batch_norm2d`] followed by
/// [`relu`](crate::ops::relu()) (values, gradients and running statistics); the same arguments
/// and panics as [`batch_norm2d`].
#[allow(clippy::too_many_arguments)]
pub fn batch_norm2d_relu(
    x: &Tensor,
    running_mean: Option<&Tensor>,
    running_var: Option<&Tensor>,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    training: bool,
    momentum: f32,
    eps: f32,
) -> Tensor {
    let stats = (running_mean, running_var);
    batch_norm_op(x, stats, (weight, bias), (training, momentum, eps), true)
}

/// Checks the shapes and settings; returns the layout.
fn check_args(
    x: &Tensor,
    (running_mean, running_var): (Option<&Tensor>, Option<&Tensor>),
    (weight, bias): (Option<&Tensor>, Option<&Tensor>),
    training: bool,
) -> Planes {
    let s = x.shape();
    assert_eq!(s.len(), 4, "batch_norm2d: x must be (N, C, H, W), got {s:?}");
    let c = s[1];
    assert!(
        s[1] * s[2] * s[3] > 0,
        "batch_norm2d: C, H and W of x must be non-zero, got {s:?}"
    );
    for (name, t) in [
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("weight", weight),
        ("bias", bias),
    ] {
        if let Some(t) = t {
            assert_eq!(
                t.shape(),
                &[c],
                "batch_norm2d: {name} must have shape [{c}] for x {s:?}"
            );
        }
    }
    assert_eq!(
        running_mean.is_some(),
        running_var.is_some(),
        "batch_norm2d: give both running_mean and running_var, or neither"
    );
    assert!(
        training || running_mean.is_some(),
        "batch_norm2d: running_mean must be defined in evaluation mode"
    );
    let pl = Planes {
        c,
        hw: s[2] * s[3],
        nhwc: x.is_channels_last(),
    };
    assert!(
        !training || s[0] * pl.hw > 1,
        "Expected more than 1 value per channel when training, got input size {s:?}"
    );
    pl
}

/// Updates the running statistics in place: (1 - momentum) * running + momentum * batch,
/// with the unbiased variance.
fn update_running(rm: &Tensor, rv: &Tensor, (mean, var): (&[f64], &[f64]), momentum: f32, m: usize) {
    let mo = momentum as f64;
    let unbiased = m as f64 / (m - 1) as f64;
    for (r, b) in rm.data_mut().iter_mut().zip(mean) {
        *r = ((1.0 - mo) * *r as f64 + mo * b) as f32;
    }
    for (r, v) in rv.data_mut().iter_mut().zip(var) {
        *r = ((1.0 - mo) * *r as f64 + mo * v * unbiased) as f32;
    }
}

fn batch_norm_op(
    x: &Tensor,
    stats: (Option<&Tensor>, Option<&Tensor>),
    (weight, bias): (Option<&Tensor>, Option<&Tensor>),
    (training, momentum, eps): (bool, f32, f32),
    relu: bool,
) -> Tensor {
    let pl = check_args(x, stats, (weight, bias), training);
    let s = x.shape().to_vec();
    let (c, m) = (pl.c, s[0] * pl.hw);
    let weight_v = weight.map_or_else(|| vec![1.0; c], as_f64);
    let bias_v = bias.map_or_else(|| vec![0.0; c], as_f64);
    let name = if relu { "batch_norm2d_relu" } else { "batch_norm2d" };
    let mut y = pool::take(x.numel());
    let (mean, invstd, k) = profile::time(
        || profile::label(name, &s),
        Phase::Forward,
        || {
            let xd = x.data();
            let (mean, var) = if training {
                let (mean, var) = simd_dispatch!(batch_stats(&xd, &pl));
                if let (Some(rm), Some(rv)) = stats {
                    update_running(rm, rv, (&mean, &var), momentum, m);
                }
                (mean, var)
            } else {
                (as_f64(stats.0.expect("checked")), as_f64(stats.1.expect("checked")))
            };
            let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps as f64).sqrt()).collect();
            let k = Coefficients::new(&mean, &invstd, &weight_v, &bias_v, training);
            simd_dispatch!(normalize(&xd, &pl, &k, relu, &mut y));
            (mean, invstd, k)
        },
    );
    let (has_w, has_b) = (weight.is_some(), bias.is_some());
    let mut inputs = vec![x.clone()];
    inputs.extend(weight.cloned());
    inputs.extend(bias.cloned());
    let x_version = x.version();
    let relu_k = relu.then_some(k);
    let backward: BackwardFn = Box::new(move |inp, _out, dy| {
        assert_eq!(
            inp[0].version(),
            x_version,
            "batch_norm2d: the input was modified in place after the forward, which the backward needs"
        );
        let xd = inp[0].data();
        let y = relu_k.as_ref();
        let need_sums = training || has_w || has_b;
        let sums = need_sums.then(|| {
            let mut sums = simd_dispatch!(grad_sums(&xd, dy, y, &pl, &mean));
            // [sum g; sum g * (x - mean)] -> [sum g; sum g * xhat]
            sums[c..].iter_mut().zip(&invstd).for_each(|(v, i)| *v *= i);
            sums
        });
        let dx = inp[0].requires_grad().then(|| {
            let mut dx = pool::take(xd.len());
            let batch = training.then(|| (sums.as_deref().expect("training sums"), m));
            simd_dispatch!(input_grad(&xd, dy, y, &pl, (&mean, &invstd, &weight_v), batch, &mut dx));
            dx
        });
        let mut grads = vec![dx];
        if has_w {
            grads.push(sums.as_ref().map(|v| v[c..].iter().map(|&v| v as f32).collect()));
        }
        if has_b {
            grads.push(sums.as_ref().map(|v| v[..c].iter().map(|&v| v as f32).collect()));
        }
        grads
    });
    Tensor::from_op_in_layout(y, &s, pl.nhwc, name, inputs, backward)
}
