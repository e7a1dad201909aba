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
                            let (rmt, rvt) = (Tensor::from_vec(rm.clone(), &[c]), Tensor::from_vec(rv.clone(), &[c]));
                            let y = batch_norm2d(&x, Some(&rmt), Some(&rvt), t.get(1), t.get(2), training, 0.1, eps);
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

/// How [`run`] computes relu(batch norm) or batch norm alone.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    /// batch_norm2d.
    Plain,
    /// relu(batch_norm2d(x)) as two ops.
    TwoOps,
    /// batch_norm2d_relu.
    Fused,
}

/// Runs a forward and backward (training or evaluation): the bits of (y, dx, dw, db, running
/// mean, running var).
fn run(x: &[f32], shape: &[usize], cl: bool, training: bool, op: Op) -> Vec<Vec<u32>> {
    let c = shape[1];
    let xt = Tensor::parameter(x.to_vec(), shape);
    // Weights of both signs and a bias, so that the ReLU cuts a good share of the values.
    let wt = Tensor::parameter(random(c, 35).iter().map(|v| 2.0 * v).collect(), &[c]);
    let bt = Tensor::parameter(random(c, 36).iter().map(|v| 0.3 * v).collect(), &[c]);
    let (rm, rv) = (
        Tensor::from_vec(random(c, 40), &[c]),
        Tensor::from_vec(random(c, 41).iter().map(|v| v + 1.5).collect(), &[c]),
    );
    let xin = if cl { to_channels_last(&xt) } else { xt.clone() };
    let args = (Some(&rm), Some(&rv), Some(&wt), Some(&bt));
    let y = match op {
        Op::Plain => batch_norm2d(&xin, args.0, args.1, args.2, args.3, training, 0.1, 1e-5),
        Op::TwoOps => crate::ops::relu(&batch_norm2d(&xin, args.0, args.1, args.2, args.3, training, 0.1, 1e-5)),
        Op::Fused => batch_norm2d_relu(&xin, args.0, args.1, args.2, args.3, training, 0.1, 1e-5),
    };
    assert_eq!(y.is_channels_last(), cl);
    y.contiguous().backward_with(random(y.numel(), 37));
    let bits = |v: Vec<f32>| v.iter().map(|f| f.to_bits()).collect();
    vec![
        bits(y.to_vec()),
        bits(xt.grad().unwrap()),
        bits(wt.grad().unwrap()),
        bits(bt.grad().unwrap()),
        bits(rm.to_vec()),
        bits(rv.to_vec()),
    ]
}

/// (N, C, H, W): C = 3 and 20 fill vectors partly, 16 exactly, 33 in three groups; N covers
/// partial chunks, HW = 130 more than one sum block per sample.
const BIT_SHAPES: [[usize; 4]; 4] = [
    [2 * CHUNK + 1, 3, 4, 5],
    [CHUNK + 2, 20, 3, 3],
    [3, 16, 10, 13],
    [2, 33, 2, 3],
];

#[test]
fn channels_last_gives_the_same_bits_as_the_plain_layout() {
    for shape in BIT_SHAPES {
        let x = random(shape.iter().product(), 38);
        for training in [true, false] {
            for op in [Op::Plain, Op::Fused] {
                let what = format!("{shape:?} training={training} {op:?}");
                assert_eq!(
                    run(&x, &shape, true, training, op),
                    run(&x, &shape, false, training, op),
                    "{what}"
                );
            }
        }
    }
}

#[test]
fn results_do_not_depend_on_the_number_of_threads() {
    let shape = [3 * CHUNK + 5, 20, 3, 3];
    let x = random(shape.iter().product(), 39);
    let on = |threads: usize, cl: bool, op: Op| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| run(&x, &shape, cl, true, op))
    };
    for cl in [false, true] {
        for op in [Op::Plain, Op::Fused] {
            assert_eq!(on(1, cl, op), on(2, cl, op), "channels_last={cl} {op:?}");
        }
    }
}

/// The fused op gives the bits of batch_norm2d then relu: values, all gradients, running
/// statistics; both layouts, training and evaluation, on every backend this machine has.
#[test]
fn fused_relu_is_bit_identical_to_batch_norm_then_relu() {
    crate::ops::simd::on_each_backend("batch_norm2d_relu", |b| {
        for shape in BIT_SHAPES {
            let x = random(shape.iter().product(), 42);
            for training in [true, false] {
                for cl in [false, true] {
                    let (fused, two) = (
                        run(&x, &shape, cl, training, Op::Fused),
                        run(&x, &shape, cl, training, Op::TwoOps),
                    );
                    let what = format!("{b} {shape:?} training={training} channels_last={cl}");
                    for (k, (f, t)) in fused.iter().zip(&two).enumerate() {
                        let bad = f.iter().zip(t).position(|(a, b)| a != b);
                        assert!(
                            bad.is_none(),
                            "{what}: result {k} differs at {bad:?}: {:?} vs {:?}",
                            bad.map(|i| f32::from_bits(f[i])),
                            bad.map(|i| f32::from_bits(t[i]))
                        );
                    }
                    // The ReLU did cut values: the test can tell a missing mask.
                    let y = &fused[0];
                    let zeros = y.iter().filter(|&&v| v == 0).count();
                    assert!(zeros > 0 && zeros < y.len(), "{what}: {zeros} zeros of {}", y.len());
                }
            }
        }
    });
}

/// The vector backends give the same bits as each other (the same operations in the same
/// order, multiply-adds fused); the portable one is within rounding of them.
#[test]
fn vector_backends_give_the_same_bits() {
    use crate::ops::simd::Backend;
    let shape = [CHUNK + 3, 20, 5, 6];
    let x = random(shape.iter().product(), 43);
    let mut results = Vec::new();
    crate::ops::simd::on_each_backend("batch_norm2d backends", |b| {
        for training in [true, false] {
            results.push((b, training, run(&x, &shape, true, training, Op::Fused)));
        }
    });
    let vector: Vec<_> = results.iter().filter(|r| r.0 != Backend::Portable).collect();
    for r in &vector {
        let first = vector.iter().find(|q| q.1 == r.1).expect("itself");
        assert_eq!(r.2, first.2, "{} vs {} (training={})", r.0, first.0, r.1);
    }
    for (b, training, got) in results.iter().filter(|r| r.0 == Backend::Portable) {
        let Some(v) = vector.iter().find(|q| q.1 == *training) else {
            continue;
        };
        for (k, (a, w)) in got.iter().zip(&v.2).enumerate() {
            let a: Vec<f32> = a.iter().map(|&u| f32::from_bits(u)).collect();
            let w: Vec<f32> = w.iter().map(|&u| f32::from_bits(u)).collect();
            assert_close(&a, &w, 1e-5, &format!("{b} vs {} result {k} training={training}", v.0));
        }
    }
}

/// relu(batch norm) against finite differences of the f64 reference: training and
/// evaluation, both layouts (inputs are kept away from the kink at 0 by the seed: the check
/// fails if a value sits within the finite-difference step of it).
#[test]
fn fused_forward_and_gradients_match_the_f64_reference() {
    let (n, c, h, w) = (CHUNK + 2, 3, 2, 3);
    let hw = h * w;
    let (rm, rv) = (RM.to_vec(), RV.to_vec());
    let (rm64, rv64): (Vec<f64>, Vec<f64>) = (
        rm.iter().map(|&v| v as f64).collect(),
        rv.iter().map(|&v| v as f64).collect(),
    );
    for training in [true, false] {
        for cl in [false, true] {
            let inputs = [
                input(random(n * c * hw, 44), &[n, c, h, w], true),
                input(random(c, 45).iter().map(|v| v + 1.5).collect(), &[c], true),
                input(random(c, 46), &[c], true),
            ];
            let eps = 1e-3;
            check(
                &inputs,
                |t| {
                    let x = if cl { to_channels_last(&t[0]) } else { t[0].clone() };
                    let (rmt, rvt) = (Tensor::from_vec(rm.clone(), &[c]), Tensor::from_vec(rv.clone(), &[c]));
                    batch_norm2d_relu(&x, Some(&rmt), Some(&rvt), t.get(1), t.get(2), training, 0.1, eps)
                },
                |v| {
                    let stats = (!training).then_some((&rm64[..], &rv64[..]));
                    let y = naive(&v[0], (n, c, hw), Some(&v[1]), Some(&v[2]), stats, eps as f64);
                    y.into_iter().map(|v| v.max(0.0)).collect()
                },
                1e-4,
            );
        }
    }
}

/// A large mean and a small spread (mean 1000, spread 0.01: the f32 mean's rounding error is
/// near a hundredth of the spread) stay accurate: y within 1e-4 of the f64 reference (the form
/// x * scale + shift, shift = bias - mean * scale, would be off by about 1e-2), and dx within 1e-3
/// (its terms, about invstd = 170 times dy, cancel to values near 1, so f32 rounding of them
/// leaves about 1e-4; an uncentered x * q + k form would leave far more).
#[test]
fn a_large_mean_with_a_small_spread_stays_accurate() {
    let (n, c, hw) = (CHUNK + 1, 2, 9);
    let x: Vec<f32> = random(n * c * hw, 47).iter().map(|v| 1000.0 + 0.01 * v).collect();
    let inputs = [input(x.clone(), &[n, c, 3, 3], true)];
    let y = batch_norm2d(
        &Tensor::from_vec(x.clone(), &[n, c, 3, 3]),
        None,
        None,
        None,
        None,
        true,
        0.1,
        0.0,
    );
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let want: Vec<f32> = naive(&x64, (n, c, hw), None, None, None, 0.0)
        .iter()
        .map(|&v| v as f32)
        .collect();
    assert_close(&y.to_vec(), &want, 1e-4, "y");
    check(
        &inputs,
        |t| batch_norm2d(&to_channels_last(&t[0]), None, None, None, None, true, 0.1, 0.0),
        |v| naive(&v[0], (n, c, hw), None, None, None, 0.0),
        1e-3,
    );
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
