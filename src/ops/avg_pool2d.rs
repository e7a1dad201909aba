//! Average pooling with a KxK window and stride K, no padding (`F.avg_pool2d(x, K)`).
//!
//! Shapes: x (N, C, H, W) -> y (N, C, H/K, W/K) (rounded down, as PyTorch does). Works on
//! either memory layout (plain, or channels-last as the conv2d outputs are).

use crate::profile::{self, Phase};
use crate::tensor::{BackwardFn, Tensor, pool};

/// (H, W, K) -> (OH, OW).
fn out_hw(h: usize, w: usize, k: usize) -> (usize, usize) {
    (h / k, w / k)
}

/// x (planes, H, W) -> y (planes, OH, OW)
pub fn avg_pool2d_forward(x: &[f32], h: usize, w: usize, k: usize, y: &mut [f32]) {
    let (oh, ow) = out_hw(h, w, k);
    let scale = 1.0 / (k * k) as f32;
    for (plane, out) in x.chunks(h * w).zip(y.chunks_mut(oh * ow)) {
        for i in 0..oh {
            for j in 0..ow {
                let mut acc = 0.0;
                for ki in 0..k {
                    let row = &plane[(i * k + ki) * w + j * k..][..k];
                    acc += row.iter().sum::<f32>();
                }
                out[i * ow + j] = acc * scale;
            }
        }
    }
}

/// dy (planes, OH, OW) -> dx (planes, H, W): each input in a window gets dy / K^2.
pub fn avg_pool2d_backward(dy: &[f32], h: usize, w: usize, k: usize, dx: &mut [f32]) {
    let (oh, ow) = out_hw(h, w, k);
    let scale = 1.0 / (k * k) as f32;
    dx.fill(0.0);
    for (plane, g) in dx.chunks_mut(h * w).zip(dy.chunks(oh * ow)) {
        for i in 0..oh {
            for j in 0..ow {
                let v = g[i * ow + j] * scale;
                for ki in 0..k {
                    plane[(i * k + ki) * w + j * k..][..k].iter_mut().for_each(|d| *d = v);
                }
            }
        }
    }
}

/// x stored (N, H, W, C) -> y stored (N, OH, OW, C).
pub fn avg_pool2d_forward_nhwc(x: &[f32], (h, w, c): (usize, usize, usize), k: usize, y: &mut [f32]) {
    let (oh, ow) = out_hw(h, w, k);
    let scale = 1.0 / (k * k) as f32;
    for (xs, ys) in x.chunks(h * w * c).zip(y.chunks_mut(oh * ow * c)) {
        for i in 0..oh {
            for j in 0..ow {
                let out = &mut ys[(i * ow + j) * c..][..c];
                out.fill(0.0);
                for a in 0..k {
                    for b in 0..k {
                        let px = &xs[((i * k + a) * w + j * k + b) * c..][..c];
                        out.iter_mut().zip(px).for_each(|(o, v)| *o += v);
                    }
                }
                out.iter_mut().for_each(|o| *o *= scale);
            }
        }
    }
}

/// dy stored (N, OH, OW, C) -> dx stored (N, H, W, C).
pub fn avg_pool2d_backward_nhwc(dy: &[f32], (h, w, c): (usize, usize, usize), k: usize, dx: &mut [f32]) {
    let (oh, ow) = out_hw(h, w, k);
    let scale = 1.0 / (k * k) as f32;
    dx.fill(0.0);
    for (dxs, dys) in dx.chunks_mut(h * w * c).zip(dy.chunks(oh * ow * c)) {
        for i in 0..oh {
            for j in 0..ow {
                let g = &dys[(i * ow + j) * c..][..c];
                for a in 0..k {
                    for b in 0..k {
                        let px = &mut dxs[((i * k + a) * w + j * k + b) * c..][..c];
                        px.iter_mut().zip(g).for_each(|(d, v)| *d = v * scale);
                    }
                }
            }
        }
    }
}

/// `F.avg_pool2d(x, k)` on x (N, C, H, W), stored either way; the result keeps x's layout.
pub fn avg_pool2d(x: &Tensor, k: usize) -> Tensor {
    let s = x.shape().to_vec();
    assert_eq!(s.len(), 4, "avg_pool2d: x must be (N, C, H, W), got {s:?}");
    assert!(k > 0 && s[2] >= k && s[3] >= k, "avg_pool2d: window {k} vs input {s:?}");
    let (c, h, w) = (s[1], s[2], s[3]);
    let (oh, ow) = out_hw(h, w, k);
    let nhwc = x.is_channels_last();
    let mut y = pool::take(s[0] * c * oh * ow);
    profile::time(
        || profile::label("avg_pool2d", &s),
        Phase::Forward,
        || {
            if nhwc {
                avg_pool2d_forward_nhwc(&x.data(), (h, w, c), k, &mut y)
            } else {
                avg_pool2d_forward(&x.data(), h, w, k, &mut y)
            }
        },
    );
    let backward: BackwardFn = Box::new(move |inp, _out, dy| {
        let mut dx = pool::take(inp[0].numel());
        if nhwc {
            avg_pool2d_backward_nhwc(dy, (h, w, c), k, &mut dx);
        } else {
            avg_pool2d_backward(dy, h, w, k, &mut dx);
        }
        vec![Some(dx)]
    });
    let shape = [s[0], c, oh, ow];
    Tensor::from_op_in_layout(y, &shape, nhwc, "avg_pool2d", vec![x.clone()], backward)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check, input, random};

    fn naive(x: &[f64], planes: usize, h: usize, w: usize, k: usize) -> Vec<f64> {
        let (oh, ow) = (h / k, w / k);
        let mut y = vec![0.0; planes * oh * ow];
        for p in 0..planes {
            for i in 0..oh {
                for j in 0..ow {
                    let mut acc = 0.0;
                    for a in 0..k {
                        for b in 0..k {
                            acc += x[(p * h + i * k + a) * w + j * k + b];
                        }
                    }
                    y[(p * oh + i) * ow + j] = acc / (k * k) as f64;
                }
            }
        }
        y
    }

    #[test]
    fn gradient_matches_finite_differences() {
        // 4x4 -> 1x1 as in the tutorial, and 9x10 with k=2 (rows and a column left over).
        for (n, c, h, w, k) in [(3, 2, 4, 4, 4), (2, 3, 9, 10, 2)] {
            check(
                &[input(random(n * c * h * w, 7), &[n, c, h, w], true)],
                |t| avg_pool2d(&t[0], k),
                |v| naive(&v[0], n * c, h, w, k),
                1e-4,
            );
        }
    }

    #[test]
    fn channels_last_input_gives_the_same_values_and_gradients() {
        // Make a channels-last x with a conv2d (identity 1x1 kernel), then pool it.
        let (n, c, h, w, k) = (2, 3, 8, 6, 2);
        let mut eye = vec![0.0; c * c];
        (0..c).for_each(|i| eye[i * c + i] = 1.0);
        check(
            &[input(random(n * c * h * w, 8), &[n, c, h, w], true)],
            |t| {
                let x = crate::ops::conv2d(&t[0], &Tensor::from_vec(eye.clone(), &[c, c, 1, 1]), None, 1, 0);
                assert!(x.is_channels_last());
                let y = avg_pool2d(&x, k);
                assert!(y.is_channels_last());
                y
            },
            |v| naive(&v[0], n * c, h, w, k),
            1e-4,
        );
    }
}
