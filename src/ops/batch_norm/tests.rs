//! batch_norm2d and batch_norm2d_relu tests: the f64 reference with finite differences,
//! PyTorch's golden values, running statistics, both layouts, thread counts and backends.
//!
//! Shapes: x (N, C, H, W); weight, bias, running statistics (C).

use super::*;
use crate::ops::CHUNK;
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
