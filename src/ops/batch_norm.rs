//! Batch normalisation of images, per channel (`F.batch_norm` on a 4-d input, as
//! `nn.BatchNorm2d` calls it).
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
//! bits (each channel's values are summed in the same order).
//!
//! Numerics and determinism: per-channel statistics are f64 sums, two passes (mean, then
//! squared deviations); each chunk of [`CHUNK`] samples sums its own partial, and the partials
//! are added in chunk order, so results do not depend on the number of threads. The per-value
//! arithmetic is done in f64 and rounded once.

use crate::ops::{CHUNK, for_each_chunk};
use crate::profile::{self, Phase};
use crate::tensor::{BackwardFn, Tensor, pool};

/// How x is stored: channels C, values per channel per sample HW, and the layout.
#[derive(Clone, Copy, Debug)]
pub struct Planes {
    pub c: usize,
    pub hw: usize,
    pub nhwc: bool,
}

impl Planes {
    fn sample(&self) -> usize {
        self.c * self.hw
    }

    /// Calls `f(channel, index)` for every value of a chunk of samples; per channel, in the
    /// order (sample, position) whatever the layout.
    #[inline]
    fn visit(&self, len: usize, mut f: impl FnMut(usize, usize)) {
        for s in 0..len / self.sample() {
            let base = s * self.sample();
            if self.nhwc {
                for p in 0..self.hw {
                    for ch in 0..self.c {
                        f(ch, base + p * self.c + ch);
                    }
                }
            } else {
                for ch in 0..self.c {
                    for p in 0..self.hw {
                        f(ch, base + ch * self.hw + p);
                    }
                }
            }
        }
    }
}

/// One chunk's per-channel sums: of x when `mean` is `None`, else of (x - mean)^2.
pub fn stats_partial(x: &[f32], pl: &Planes, mean: Option<&[f64]>, out: &mut [f64]) {
    out.fill(0.0);
    match mean {
        None => pl.visit(x.len(), |ch, i| out[ch] += x[i] as f64),
        Some(m) => pl.visit(x.len(), |ch, i| {
            let d = x[i] as f64 - m[ch];
            out[ch] += d * d
        }),
    }
}

/// One chunk's per-channel sums of dy (into `out[..C]`) and of dy * xhat (into `out[C..]`),
/// xhat = (x - mean) * invstd.
pub fn grad_partial(x: &[f32], dy: &[f32], pl: &Planes, (mean, invstd): (&[f64], &[f64]), out: &mut [f64]) {
    out.fill(0.0);
    let (sdy, sdyx) = out.split_at_mut(pl.c);
    pl.visit(x.len(), |ch, i| {
        let d = dy[i] as f64;
        sdy[ch] += d;
        sdyx[ch] += d * (x[i] as f64 - mean[ch]) * invstd[ch];
    });
}

/// Per-channel sums over the whole batch: `partial` on each chunk of [`CHUNK`] samples (in
/// parallel), then the partials added in chunk order. `width` values per channel-sum set.
fn reduce_chunks(
    x: &[f32],
    dy: Option<&[f32]>,
    pl: &Planes,
    width: usize,
    partial: impl Fn(&[f32], Option<&[f32]>, &mut [f64]) + Sync + Send,
) -> Vec<f64> {
    let step = CHUNK * pl.sample();
    let chunks = x.len().div_ceil(step);
    let mut parts = vec![0f64; chunks * width];
    let dys: Vec<Option<&[f32]>> = match dy {
        Some(d) => d.chunks(step).map(Some).collect(),
        None => vec![None; chunks],
    };
    let work: Vec<_> = x.chunks(step).zip(dys).zip(parts.chunks_mut(width)).collect();
    for_each_chunk(work, |((xc, dc), out)| partial(xc, dc, out));
    let mut total = vec![0f64; width];
    for p in parts.chunks(width) {
        total.iter_mut().zip(p).for_each(|(t, v)| *t += v);
    }
    total
}

/// y = (x - mean) * scale + shift per channel, in f64 (scale = invstd * weight, shift = bias).
pub fn batch_norm_apply(x: &[f32], pl: &Planes, (mean, scale, shift): (&[f64], &[f64], &[f64]), y: &mut [f32]) {
    pl.visit(x.len(), |ch, i| {
        y[i] = ((x[i] as f64 - mean[ch]) * scale[ch] + shift[ch]) as f32
    });
}

/// Training-mode dx = weight * invstd / M * (M * dy - sum(dy) - xhat * sum(dy * xhat)), from
/// the per-channel sums [sum(dy); sum(dy * xhat)] of the whole batch.
pub fn batch_norm_backward_train(
    x: &[f32],
    dy: &[f32],
    pl: &Planes,
    (mean, invstd, weight): (&[f64], &[f64], &[f64]),
    sums: &[f64],
    m: usize,
    dx: &mut [f32],
) {
    let (sdy, sdyx) = sums.split_at(pl.c);
    let mf = m as f64;
    pl.visit(x.len(), |ch, i| {
        let xhat = (x[i] as f64 - mean[ch]) * invstd[ch];
        let k = weight[ch] * invstd[ch] / mf;
        dx[i] = (k * (mf * dy[i] as f64 - sdy[ch] - xhat * sdyx[ch])) as f32;
    });
}

/// Evaluation-mode dx = dy * weight * invstd (the statistics are constants).
pub fn batch_norm_backward_eval(dy: &[f32], pl: &Planes, scale: &[f64], dx: &mut [f32]) {
    pl.visit(dy.len(), |ch, i| dx[i] = (dy[i] as f64 * scale[ch]) as f32);
}

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
    let s = x.shape().to_vec();
    assert_eq!(s.len(), 4, "batch_norm2d: x must be (N, C, H, W), got {s:?}");
    let (n, c) = (s[0], s[1]);
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
    let m = n * pl.hw;
    assert!(
        !training || m > 1,
        "Expected more than 1 value per channel when training, got input size {s:?}"
    );
    let weight_v = weight.map_or_else(|| vec![1.0; c], as_f64);
    let bias_v = bias.map_or_else(|| vec![0.0; c], as_f64);
    let mut y = pool::take(x.numel());
    let (mean, invstd) = profile::time(
        || profile::label("batch_norm2d", &s),
        Phase::Forward,
        || {
            let xd = x.data();
            let (mean, var) = if training {
                let sums = reduce_chunks(&xd, None, &pl, c, |xc, _, out| stats_partial(xc, &pl, None, out));
                let mean: Vec<f64> = sums.iter().map(|v| v / m as f64).collect();
                let sq = reduce_chunks(&xd, None, &pl, c, |xc, _, out| stats_partial(xc, &pl, Some(&mean), out));
                let var: Vec<f64> = sq.iter().map(|v| v / m as f64).collect();
                if let (Some(rm), Some(rv)) = (running_mean, running_var) {
                    let mo = momentum as f64;
                    let unbiased = m as f64 / (m - 1) as f64;
                    for (r, b) in rm.data_mut().iter_mut().zip(&mean) {
                        *r = ((1.0 - mo) * *r as f64 + mo * b) as f32;
                    }
                    for (r, v) in rv.data_mut().iter_mut().zip(&var) {
                        *r = ((1.0 - mo) * *r as f64 + mo * v * unbiased) as f32;
                    }
                }
                (mean, var)
            } else {
                let rm = running_mean.expect("checked above");
                let rv = running_var.expect("checked above");
                (as_f64(rm), as_f64(rv))
            };
            let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps as f64).sqrt()).collect();
            let scale: Vec<f64> = invstd.iter().zip(&weight_v).map(|(i, w)| i * w).collect();
            let work: Vec<_> = xd
                .chunks(CHUNK * pl.sample())
                .zip(y.chunks_mut(CHUNK * pl.sample()))
                .collect();
            for_each_chunk(work, |(xc, yc)| batch_norm_apply(xc, &pl, (&mean, &scale, &bias_v), yc));
            (mean, invstd)
        },
    );
    let (has_w, has_b) = (weight.is_some(), bias.is_some());
    let mut inputs = vec![x.clone()];
    inputs.extend(weight.cloned());
    inputs.extend(bias.cloned());
    let x_version = x.version();
    let backward: BackwardFn = Box::new(move |inp, _out, dy| {
        assert_eq!(
            inp[0].version(),
            x_version,
            "batch_norm2d: the input was modified in place after the forward, which the backward needs"
        );
        let xd = inp[0].data();
        let step = CHUNK * pl.sample();
        let sums = reduce_chunks(&xd, Some(dy), &pl, 2 * c, |xc, dc, out| {
            grad_partial(xc, dc.expect("dy chunk"), &pl, (&mean, &invstd), out)
        });
        let dx = inp[0].requires_grad().then(|| {
            let mut dx = pool::take(xd.len());
            let work: Vec<_> = xd.chunks(step).zip(dy.chunks(step)).zip(dx.chunks_mut(step)).collect();
            if training {
                for_each_chunk(work, |((xc, dc), dxc)| {
                    batch_norm_backward_train(xc, dc, &pl, (&mean, &invstd, &weight_v), &sums, m, dxc)
                });
            } else {
                let scale: Vec<f64> = invstd.iter().zip(&weight_v).map(|(i, w)| i * w).collect();
                for_each_chunk(work, |((_, dc), dxc)| batch_norm_backward_eval(dc, &pl, &scale, dxc));
            }
            dx
        });
        let mut grads = vec![dx];
        if has_w {
            grads.push(Some(sums[c..].iter().map(|&v| v as f32).collect()));
        }
        if has_b {
            grads.push(Some(sums[..c].iter().map(|&v| v as f32).collect()));
        }
        grads
    });
    Tensor::from_op_in_layout(y, &s, pl.nhwc, "batch_norm2d", inputs, backward)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{assert_close, check, input, random, to_channels_last, torch_golden};

    /// Plain f64 batch norm of x (N, C, H, W) row-major. `stats`: the running (mean, var) for
    /// evaluation, `None` for training (batch statistics).
    fn naive(
        x: &[f64],
        (n, c, hw): (usize, usize, usize),
        weight: Option<&[f64]>,
        bias: Option<&[f64]>,
        stats: Option<(&[f64], &[f64])>,
        eps: f64,
    ) -> Vec<f64> {
        let at = |s: usize, ch: usize, p: usize| x[(s * c + ch) * hw + p];
        let mut y = vec![0.0; x.len()];
        for ch in 0..c {
            let (mean, var) = match stats {
                Some((m, v)) => (m[ch], v[ch]),
                None => {
                    let vals: Vec<f64> = (0..n)
                        .flat_map(|s| (0..hw).map(move |p| (s, p)))
                        .map(|(s, p)| at(s, ch, p))
                        .collect();
                    let mean = vals.iter().sum::<f64>() / vals.len() as f64;
                    let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
                    (mean, var)
                }
            };
            let (w, b) = (weight.map_or(1.0, |w| w[ch]), bias.map_or(0.0, |b| b[ch]));
            for s in 0..n {
                for p in 0..hw {
                    y[(s * c + ch) * hw + p] = (at(s, ch, p) - mean) / (var + eps).sqrt() * w + b;
                }
            }
        }
        y
    }

    const SHAPES: [(usize, usize, usize, usize); 3] = [(4, 3, 3, 2), (CHUNK + 3, 2, 2, 2), (2, 2, 1, 1)];
    const RM: [f32; 3] = [0.1, -0.2, 0.3];
    const RV: [f32; 3] = [0.9, 1.2, 0.5];

    /// Training and evaluation, affine, weight only and plain, both layouts: values and the
    /// gradients of x, weight and bias against finite differences of the reference.
    #[test]
    fn forward_and_gradients_match_the_f64_reference() {
        for (n, c, h, w) in SHAPES {
            let hw = h * w;
            let (rm, rv) = (RM[..c].to_vec(), RV[..c].to_vec());
            let (rm64, rv64): (Vec<f64>, Vec<f64>) = (
                rm.iter().map(|&v| v as f64).collect(),
                rv.iter().map(|&v| v as f64).collect(),
            );
            for training in [true, false] {
                for (affine, with_bias) in [(true, true), (true, false), (false, false)] {
                    for cl in [false, true] {
                        let mut inputs = vec![input(random(n * c * hw, 31), &[n, c, h, w], true)];
                        if affine {
                            inputs.push(input(random(c, 32).iter().map(|v| v + 1.5).collect(), &[c], true));
                        }
                        if with_bias {
                            inputs.push(input(random(c, 33), &[c], true));
                        }
                        let eps = 1e-3;
                        check(
                            &inputs,
                            |t| {
                                let x = if cl { to_channels_last(&t[0]) } else { t[0].clone() };
                                let (rmt, rvt) =
                                    (Tensor::from_vec(rm.clone(), &[c]), Tensor::from_vec(rv.clone(), &[c]));
                                let y =
                                    batch_norm2d(&x, Some(&rmt), Some(&rvt), t.get(1), t.get(2), training, 0.1, eps);
                                assert_eq!(y.is_channels_last(), cl);
                                y
                            },
                            |v| {
                                let stats = (!training).then_some((&rm64[..], &rv64[..]));
                                let (wv, bv) = (v.get(1).map(|w| &w[..]), v.get(2).map(|b| &b[..]));
                                naive(&v[0], (n, c, hw), wv, bv, stats, eps as f64)
                            },
                            1e-4,
                        );
                    }
                }
            }
        }
    }

    /// Running statistics: (1 - momentum) * old + momentum * batch, unbiased variance.
    #[test]
    fn training_updates_running_statistics_like_pytorch() {
        let (n, c, hw) = (3, 2, 5);
        let x = random(n * c * hw, 34);
        let (rm, rv) = (
            Tensor::from_vec(vec![0.5, -1.0], &[c]),
            Tensor::from_vec(vec![2.0, 0.25], &[c]),
        );
        let momentum = 0.3f32;
        batch_norm2d(
            &Tensor::from_vec(x.clone(), &[n, c, 1, hw]),
            Some(&rm),
            Some(&rv),
            None,
            None,
            true,
            momentum,
            1e-5,
        );
        let mo = momentum as f64;
        for ch in 0..c {
            let vals: Vec<f64> = (0..n)
                .flat_map(|s| x[(s * c + ch) * hw..][..hw].to_vec())
                .map(|v| v as f64)
                .collect();
            let mean = vals.iter().sum::<f64>() / 15.0;
            let unbiased = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 14.0;
            let old_m = [0.5, -1.0][ch];
            let old_v = [2.0, 0.25][ch];
            let want_m = (1.0 - mo) * old_m + mo * mean;
            let want_v = (1.0 - mo) * old_v + mo * unbiased;
            assert!((rm.data()[ch] as f64 - want_m).abs() < 1e-6, "running_mean[{ch}]");
            assert!((rv.data()[ch] as f64 - want_v).abs() < 1e-6, "running_var[{ch}]");
        }
        // Evaluation reads them and leaves them alone.
        let before = (rm.to_vec(), rv.to_vec());
        batch_norm2d(
            &Tensor::from_vec(x, &[n, c, 1, hw]),
            Some(&rm),
            Some(&rv),
            None,
            None,
            false,
            momentum,
            1e-5,
        );
        assert_eq!((rm.to_vec(), rv.to_vec()), before);
    }

    /// Runs a training forward and backward: (y, dx, dw, db, running mean, running var).
    fn run(x: &[f32], shape: &[usize], cl: bool) -> [Vec<f32>; 6] {
        let c = shape[1];
        let xt = Tensor::parameter(x.to_vec(), shape);
        let wt = Tensor::parameter(random(c, 35), &[c]);
        let bt = Tensor::parameter(random(c, 36), &[c]);
        let (rm, rv) = (Tensor::zeros(&[c]), Tensor::from_vec(vec![1.0; c], &[c]));
        let xin = if cl { to_channels_last(&xt) } else { xt.clone() };
        let y = batch_norm2d(&xin, Some(&rm), Some(&rv), Some(&wt), Some(&bt), true, 0.1, 1e-5);
        y.contiguous().backward_with(random(y.numel(), 37));
        [
            y.to_vec(),
            xt.grad().unwrap(),
            wt.grad().unwrap(),
            bt.grad().unwrap(),
            rm.to_vec(),
            rv.to_vec(),
        ]
    }

    #[test]
    fn channels_last_gives_the_same_bits_as_the_plain_layout() {
        let shape = [2 * CHUNK + 1, 3, 4, 5];
        let x = random(shape.iter().product(), 38);
        assert_eq!(run(&x, &shape, true), run(&x, &shape, false));
    }

    #[test]
    fn results_do_not_depend_on_the_number_of_threads() {
        let shape = [3 * CHUNK + 5, 4, 3, 3];
        let x = random(shape.iter().product(), 39);
        let on = |threads: usize, cl: bool| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| run(&x, &shape, cl))
        };
        for cl in [false, true] {
            assert_eq!(on(1, cl), on(2, cl), "channels_last={cl}");
        }
    }

    #[test]
    #[should_panic(expected = "Expected more than 1 value per channel when training")]
    fn training_on_one_value_per_channel_panics_as_pytorch_raises() {
        batch_norm2d(&Tensor::zeros(&[1, 3, 1, 1]), None, None, None, None, true, 0.1, 1e-5);
    }

    #[test]
    fn one_value_per_channel_is_fine_in_evaluation() {
        let (rm, rv) = (Tensor::from_vec(vec![1.0], &[1]), Tensor::from_vec(vec![4.0], &[1]));
        let y = batch_norm2d(
            &Tensor::from_vec(vec![5.0], &[1, 1, 1, 1]),
            Some(&rm),
            Some(&rv),
            None,
            None,
            false,
            0.1,
            0.0,
        );
        assert_eq!(y.item(), 2.0);
    }

    #[test]
    #[should_panic(expected = "running_mean must be defined in evaluation mode")]
    fn evaluation_needs_running_statistics() {
        batch_norm2d(&Tensor::zeros(&[2, 3, 1, 1]), None, None, None, None, false, 0.1, 1e-5);
    }

    #[test]
    fn matches_pytorch_golden_values() {
        // (case, training, affine, running stats, momentum, eps), as scripts/torch_golden_ops.py.
        let cases = [
            ("train_affine", true, true, true, 0.1, 1e-5),
            ("train_plain", true, false, true, 0.3, 1e-5),
            ("train_nostats", true, true, false, 0.1, 1e-5),
            ("train_offset", true, true, true, 0.1, 1e-3),
            ("train_tiny", true, true, true, 0.1, 1e-5),
            ("eval_affine", false, true, true, 0.1, 1e-5),
            ("eval_plain", false, false, true, 0.1, 1e-3),
        ];
        for (name, training, affine, stats, momentum, eps) in cases {
            let get = |what: &str| torch_golden(&format!("batch_norm/{name}/{what}"));
            let (xs, xv) = get("x");
            let (_, yv) = get("y");
            let (_, dy) = get("dy");
            let (_, dx) = get("dx");
            for cl in [false, true] {
                let what = format!("{name} channels_last={cl}");
                let x = Tensor::parameter(xv.clone(), &xs);
                let wb = affine.then(|| {
                    (
                        Tensor::parameter(get("weight").1, &[3]),
                        Tensor::parameter(get("bias").1, &[3]),
                    )
                });
                let rs = stats.then(|| {
                    (
                        Tensor::from_vec(get("running_mean").1, &[3]),
                        Tensor::from_vec(get("running_var").1, &[3]),
                    )
                });
                let xin = if cl { to_channels_last(&x) } else { x.clone() };
                let y = batch_norm2d(
                    &xin,
                    rs.as_ref().map(|r| &r.0),
                    rs.as_ref().map(|r| &r.1),
                    wb.as_ref().map(|w| &w.0),
                    wb.as_ref().map(|w| &w.1),
                    training,
                    momentum,
                    eps,
                );
                y.contiguous().backward_with(dy.clone());
                assert_close(&y.to_vec(), &yv, 1e-6, &format!("{what} y"));
                assert_close(&x.grad().unwrap(), &dx, 1e-6, &format!("{what} dx"));
                if let Some((w, b)) = &wb {
                    assert_close(&w.grad().unwrap(), &get("dw").1, 1e-6, &format!("{what} dw"));
                    assert_close(&b.grad().unwrap(), &get("db").1, 1e-6, &format!("{what} db"));
                }
                if let Some((rm, rv)) = &rs {
                    assert_close(
                        &rm.to_vec(),
                        &get("running_mean_after").1,
                        1e-6,
                        &format!("{what} running_mean"),
                    );
                    assert_close(
                        &rv.to_vec(),
                        &get("running_var_after").1,
                        1e-6,
                        &format!("{what} running_var"),
                    );
                }
            }
        }
    }
}
