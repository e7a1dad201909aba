//! max_pool2d tests: the f64 reference with finite differences, both layouts bit for bit,
//! PyTorch's tie, padding and NaN rules, golden values, and every backend.
//!
//! Shapes: x (N, C, H, W) -> y (N, C, OH, OW).

use super::*;
use crate::ops::gradcheck::{check, check_golden_both_layouts, input, random, to_channels_last};

/// Plain f64 max pooling over the in-bounds part of each window (padding never wins).
fn naive(x: &[f64], planes: usize, (h, w): (usize, usize), k: usize, s: usize, p: usize) -> Vec<f64> {
    let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
    let mut y = vec![f64::NEG_INFINITY; planes * oh * ow];
    for pl in 0..planes {
        for i in 0..oh {
            for j in 0..ow {
                for a in 0..k {
                    for b in 0..k {
                        let (r, q) = ((i * s + a) as isize - p as isize, (j * s + b) as isize - p as isize);
                        if r < 0 || q < 0 || r >= h as isize || q >= w as isize {
                            continue;
                        }
                        let v = x[(pl * h + r as usize) * w + q as usize];
                        let o = &mut y[(pl * oh + i) * ow + j];
                        *o = o.max(v);
                    }
                }
            }
        }
    }
    y
}

const SETTINGS: [(usize, usize, usize, usize, usize, usize, usize); 4] = [
    // (n, c, h, w, k, stride, padding)
    (2, 3, 7, 7, 2, 2, 0),
    (2, 3, 7, 6, 3, 2, 1),
    (3, 2, 5, 8, 3, 1, 1),
    (CHUNK + 3, 2, 4, 4, 2, 2, 1),
];

#[test]
fn forward_and_gradient_match_the_f64_reference() {
    for (n, c, h, w, k, s, p) in SETTINGS {
        check(
            &[input(random(n * c * h * w, 11), &[n, c, h, w], true)],
            |t| max_pool2d(&t[0], k, s, p),
            |v| naive(&v[0], n * c, (h, w), k, s, p),
            1e-5,
        );
    }
}

#[test]
fn channels_last_matches_the_reference_and_the_plain_layout_bit_for_bit() {
    for (n, c, h, w, k, s, p) in SETTINGS {
        let x = random(n * c * h * w, 12);
        check(
            &[input(x.clone(), &[n, c, h, w], true)],
            |t| {
                let y = max_pool2d(&to_channels_last(&t[0]), k, s, p);
                assert!(y.is_channels_last());
                y
            },
            |v| naive(&v[0], n * c, (h, w), k, s, p),
            1e-5,
        );
        let run = |cl: bool| {
            let xt = Tensor::parameter(x.clone(), &[n, c, h, w]);
            let xin = if cl { to_channels_last(&xt) } else { xt.clone() };
            let y = max_pool2d(&xin, k, s, p);
            y.contiguous().backward_with(random(y.numel(), 13));
            (y.to_vec(), xt.grad().unwrap())
        };
        assert_eq!(run(true), run(false), "settings {:?}", (n, c, h, w, k, s, p));
    }
}

/// Ties go to the first position in the window, -inf padding never wins, and a window of
/// nothing but -inf gives -inf with its gradient at the first in-bounds position.
#[test]
fn ties_go_to_the_first_and_padding_never_wins() {
    for cl in [false, true] {
        #[rustfmt::skip]
        let x = Tensor::parameter(vec![
            -5.0, -5.0, 1.0,
            -5.0, -5.0, 1.0,
            2.0, 1.0, f32::NEG_INFINITY,
        ], &[1, 1, 3, 3]);
        let xin = if cl { to_channels_last(&x) } else { x.clone() };
        // k=2, s=2, p=1: windows over rows (and columns) {-1, 0} and {1, 2}, so the in-bounds
        // parts are {0} and {1, 2}. The last window holds -5, 1 / 1, -inf: a tie of 1s.
        let y = max_pool2d(&xin, 2, 2, 1);
        assert_eq!(y.to_vec(), vec![-5.0, 1.0, 2.0, 1.0]);
        y.contiguous().backward_with(vec![1.0, 10.0, 100.0, 1000.0]);
        let g = x.grad().unwrap();
        #[rustfmt::skip]
        assert_eq!(g, vec![
            1.0, 0.0, 10.0,
            0.0, 0.0, 1000.0,
            100.0, 0.0, 0.0,
        ], "layout channels_last={cl}");
    }
    let x = Tensor::parameter(vec![f32::NEG_INFINITY; 4], &[1, 1, 2, 2]);
    let y = max_pool2d(&x, 3, 2, 1);
    assert_eq!(y.to_vec(), vec![f32::NEG_INFINITY]);
    y.backward_with(vec![1.0]);
    assert_eq!(x.grad().unwrap(), vec![1.0, 0.0, 0.0, 0.0]);
}

#[test]
fn nan_propagates_and_takes_the_gradient() {
    let x = Tensor::parameter(vec![1.0, f32::NAN, 7.0, f32::NAN], &[1, 1, 2, 2]);
    let y = max_pool2d(&x, 2, 2, 0);
    assert!(y.item().is_nan());
    y.backward_with(vec![1.0]);
    assert_eq!(x.grad().unwrap(), vec![0.0, 0.0, 0.0, 1.0], "the last NaN, as PyTorch");
}

#[test]
fn an_empty_batch_gives_an_empty_result() {
    let y = max_pool2d(&Tensor::zeros(&[0, 2, 5, 5]), 3, 2, 1);
    assert_eq!(y.shape(), &[0, 2, 3, 3]);
}

#[test]
#[should_panic(expected = "pad should be at most half")]
fn rejects_padding_over_half_the_window() {
    max_pool2d(&Tensor::zeros(&[1, 1, 4, 4]), 2, 2, 2);
}

#[test]
fn matches_pytorch_golden_values() {
    let cases = [
        ("k2s2p0_7", 2, 2, 0),
        ("k3s2p1_7", 3, 2, 1),
        ("k2s2p0_6", 2, 2, 0),
        ("k3s2p1_6", 3, 2, 1),
        ("k3s1p1_6", 3, 1, 1),
        ("ties_k3s2p1", 3, 2, 1),
        ("ties_k2s1p1", 2, 1, 1),
    ];
    for (name, k, s, p) in cases {
        // Max pooling picks values: exact, NaN and -inf included.
        check_golden_both_layouts(&format!("max_pool2d/{name}"), |x| max_pool2d(x, k, s, p), 0.0);
    }
}

/// `len` random values rounded to a grid of 1/`steps` (so that there are ties), with
/// `special[i % 3]` at each index i where i % every == at.
fn with_specials(len: usize, seed: u64, steps: f32, (every, at): (usize, usize), special: [f32; 3]) -> Vec<f32> {
    random(len, seed)
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if i % every == at {
                special[i % 3]
            } else {
                (v * steps).round() / steps
            }
        })
        .collect()
}

/// max_pool2d of x (N, C, H, W) stored plainly, or channels-last with `cl`, and its gradient
/// for a random dy (seed `dy_seed`): (y, dx) as bits.
fn pooled_bits(
    x: &[f32],
    (n, c, h, w): (usize, usize, usize, usize),
    (k, s, p): (usize, usize, usize),
    cl: bool,
    dy_seed: u64,
) -> (Vec<u32>, Vec<u32>) {
    let xt = Tensor::parameter(x.to_vec(), &[n, c, h, w]);
    let xin = if cl { to_channels_last(&xt) } else { xt.clone() };
    let y = max_pool2d(&xin, k, s, p);
    y.contiguous().backward_with(random(y.numel(), dy_seed));
    let bits = |v: Vec<f32>| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    (bits(y.to_vec()), bits(xt.grad().unwrap()))
}

/// The vector kernels (channels-last) on every backend give the bits of the plain layout's
/// scalar kernels, values and gradients, with ties (values on a coarse grid), NaN, +inf and
/// -inf in the windows; C = 20 fills vectors partly. Settings: 2x2 stride 2 covering the input
/// and not (odd sizes), padded, gaps between windows (stride 3), and overlapping windows.
#[test]
fn every_backend_matches_the_plain_layout_with_ties_nan_and_inf() {
    let settings = [
        (2, 2, 0, 8, 8),
        (2, 2, 0, 7, 9),
        (2, 2, 1, 5, 6),
        (2, 3, 0, 8, 7),
        (3, 2, 1, 7, 7),
        (3, 3, 1, 6, 6),
    ];
    let special = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
    crate::ops::simd::on_each_backend("max_pool2d", |b| {
        for (k, s, p, h, w) in settings {
            let (n, c) = (CHUNK + 1, 20);
            let x = with_specials(n * c * h * w, 14, 4.0, (37, 5), special);
            let run = |cl: bool| pooled_bits(&x, (n, c, h, w), (k, s, p), cl, 15);
            let (plain, cl) = (run(false), run(true));
            assert!(
                plain.0.iter().any(|&v| f32::from_bits(v).is_nan()),
                "NaN reached an output"
            );
            assert_eq!(cl, plain, "{b} k={k} s={s} p={p} {h}x{w}");
        }
    });
}

/// The vector kernels' scan without NaN's rule (a compare and a select, and the 2x2 windows'
/// own loop), which they take when no value of a chunk is NaN, gives the plain layout's bits:
/// with ties, -0 against +0 (the first taken) and -inf, and with a NaN in the second chunk only
/// (the first chunk then keeps the quick scan's results, the second runs PyTorch's); with and
/// without the indices; 2x2 windows apart, overlapping (stride 1) and with gaps (stride 3).
#[test]
fn the_scan_without_nan_gives_the_same_bits() {
    let settings = [
        (2, 2, 0, 8, 8),
        (2, 2, 0, 7, 9),
        (2, 3, 0, 8, 7),
        (2, 1, 0, 6, 5),
        (3, 2, 1, 7, 7),
    ];
    let special = [-0.0, 0.0, f32::NEG_INFINITY];
    crate::ops::simd::on_each_backend("max_pool2d", |b| {
        for (k, s, p, h, w) in settings {
            for nan_in_last in [false, true] {
                let (n, c) = (CHUNK + 1, 20);
                let mut x = with_specials(n * c * h * w, 16, 2.0, (7, 3), special);
                if nan_in_last {
                    // Pixel (1, 1) of the last sample's last channel: in its first window, not
                    // first there (so the scan without NaN's rule would not take it).
                    x[(n * c - 1) * h * w + w + 1] = f32::NAN;
                }
                let run = |cl: bool| pooled_bits(&x, (n, c, h, w), (k, s, p), cl, 17);
                let (plain, cl) = (run(false), run(true));
                // Without gradients (no indices kept: inference's kernels), the same values.
                let xt = to_channels_last(&Tensor::from_vec(x.clone(), &[n, c, h, w]));
                let y = crate::tensor::no_grad(|| max_pool2d(&xt, k, s, p));
                let bits = y.to_vec().iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits, plain.0, "{b} k={k} s={s} p={p} {h}x{w} without gradients");
                let zeros = |v: &[u32], z: f32| v.iter().filter(|&&u| u == z.to_bits()).count();
                assert!(
                    zeros(&plain.0, -0.0) > 0 && zeros(&plain.0, 0.0) > 0,
                    "both zeros reach the outputs"
                );
                let nans = plain.0.iter().filter(|&&v| f32::from_bits(v).is_nan()).count();
                assert_eq!(nans > 0, nan_in_last, "NaN reaches an output only when there is one");
                assert_eq!(
                    cl, plain,
                    "{b} k={k} s={s} p={p} {h}x{w} NaN in the last chunk: {nan_in_last}"
                );
            }
        }
    });
}
