//! Average pooling with a KxK window and stride K, no padding (`F.avg_pool2d(x, K)`).
//!
//! Shapes: x (N, C, H, W) -> y (N, C, H/K, W/K) (rounded down, as PyTorch does).

use crate::tensor::Tensor;

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
                    plane[(i * k + ki) * w + j * k..][..k]
                        .iter_mut()
                        .for_each(|d| *d = v);
                }
            }
        }
    }
}

/// `F.avg_pool2d(x, k)` on x (N, C, H, W).
pub fn avg_pool2d(x: &Tensor, k: usize) -> Tensor {
    let s = x.shape().to_vec();
    assert_eq!(s.len(), 4, "avg_pool2d: x must be (N, C, H, W), got {s:?}");
    assert!(
        k > 0 && s[2] >= k && s[3] >= k,
        "avg_pool2d: window {k} vs input {s:?}"
    );
    let (h, w) = (s[2], s[3]);
    let (oh, ow) = out_hw(h, w, k);
    let mut y = vec![0.0; s[0] * s[1] * oh * ow];
    avg_pool2d_forward(&x.data(), h, w, k, &mut y);
    Tensor::from_op(
        y,
        &[s[0], s[1], oh, ow],
        "avg_pool2d",
        vec![x.clone()],
        Box::new(move |inp, _out, dy| {
            let mut dx = vec![0.0; inp[0].numel()];
            avg_pool2d_backward(dy, h, w, k, &mut dx);
            vec![Some(dx)]
        }),
    )
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
}
