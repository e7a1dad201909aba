//! log_softmax over the last dimension of x (N, C) (`F.log_softmax(x, dim=-1)`).
//!
//! Stable: y = x - max - log(sum(exp(x - max))), so no exp overflows.
//! Backward: dx = dy - softmax(x) * sum(dy) per row.

use crate::tensor::Tensor;

pub fn log_softmax_forward(x: &[f32], c: usize, y: &mut [f32]) {
    for (row, out) in x.chunks(c).zip(y.chunks_mut(c)) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
        let lse = max + sum.ln();
        out.iter_mut().zip(row).for_each(|(o, v)| *o = v - lse);
    }
}

pub fn log_softmax_backward(y: &[f32], dy: &[f32], c: usize, dx: &mut [f32]) {
    for ((yr, gr), dr) in y.chunks(c).zip(dy.chunks(c)).zip(dx.chunks_mut(c)) {
        let gsum: f32 = gr.iter().sum();
        for ((d, &yv), &g) in dr.iter_mut().zip(yr).zip(gr) {
            *d = g - yv.exp() * gsum;
        }
    }
}

/// `F.log_softmax(x, dim=-1)` for x (N, C).
pub fn log_softmax(x: &Tensor) -> Tensor {
    let c = *x.shape().last().expect("log_softmax of a 0-d tensor");
    let mut y = vec![0.0; x.numel()];
    log_softmax_forward(&x.data(), c, &mut y);
    Tensor::from_op(
        y,
        x.shape(),
        "log_softmax",
        vec![x.clone()],
        Box::new(move |_inp, out, dy| {
            let mut dx = vec![0.0; dy.len()];
            log_softmax_backward(&out.data(), dy, c, &mut dx);
            vec![Some(dx)]
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check, input, random};

    fn naive(x: &[f64], c: usize) -> Vec<f64> {
        x.chunks(c)
            .flat_map(|r| {
                let lse = r.iter().map(|v| v.exp()).sum::<f64>().ln();
                r.iter().map(move |v| v - lse).collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let x: Vec<f32> = random(30, 11).into_iter().map(|v| 3.0 * v).collect();
        check(
            &[input(x, &[3, 10], true)],
            |t| log_softmax(&t[0]),
            |v| naive(&v[0], 10),
            1e-4,
        );
    }

    #[test]
    fn large_logits_stay_finite() {
        let y = log_softmax(&Tensor::from_vec(vec![1000.0, 0.0, -1000.0, 1e30], &[2, 2]));
        let y = y.to_vec();
        assert!(y.iter().all(|v| v.is_finite()), "{y:?}");
        assert_eq!(y[0], 0.0);
        assert_eq!(y[1], -1000.0);
        assert_eq!(y[3], 0.0);
    }
}
