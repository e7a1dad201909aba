//! Linear layer and matrix product (`F.linear`, `torch.matmul` on 2-d tensors).
//!
//! Shapes: x (N, IN), weight (OUT, IN), bias (OUT), y (N, OUT) = x W^T + b.
//! Backward: dx = dy W, dW = dy^T x, db = column sums of dy. Each is one GEMM over the whole
//! batch, single-threaded, so its summation order never depends on the thread count.

use super::gemm;
use crate::tensor::Tensor;

/// y (N, OUT) = x (N, IN) W^T (+ b).
pub fn linear_forward(x: &[f32], w: &[f32], b: Option<&[f32]>, n: usize, inp: usize, out: usize, y: &mut [f32]) {
    match b {
        Some(b) => {
            y.chunks_mut(out).for_each(|row| row.copy_from_slice(b));
            gemm(n, inp, out, x, false, w, true, 1.0, y);
        }
        None => gemm(n, inp, out, x, false, w, true, 0.0, y),
    }
}

/// `F.linear(x, weight, bias)`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    let (xs, ws) = (x.shape(), weight.shape());
    assert!(
        xs.len() == 2 && ws.len() == 2 && xs[1] == ws[1],
        "linear: x {xs:?} vs weight {ws:?}"
    );
    let (n, inp, out) = (xs[0], xs[1], ws[0]);
    if let Some(b) = bias {
        assert_eq!(b.shape(), &[out], "linear: bias shape");
    }
    let mut y = vec![0.0; n * out];
    {
        let bd = bias.map(|b| b.data());
        linear_forward(&x.data(), &weight.data(), bd.as_deref(), n, inp, out, &mut y);
    }
    let mut inputs = vec![x.clone(), weight.clone()];
    inputs.extend(bias.cloned());
    Tensor::from_op(
        y,
        &[n, out],
        "linear",
        inputs,
        Box::new(move |inputs, _out, dy| {
            let dx = inputs[0].requires_grad().then(|| {
                let mut dx = vec![0.0; n * inp];
                gemm(n, out, inp, dy, false, &inputs[1].data(), false, 0.0, &mut dx);
                dx
            });
            let mut dw = vec![0.0; out * inp];
            gemm(out, n, inp, dy, true, &inputs[0].data(), false, 0.0, &mut dw);
            let mut grads = vec![dx, Some(dw)];
            if inputs.len() == 3 {
                let mut db = vec![0.0; out];
                for row in dy.chunks(out) {
                    db.iter_mut().zip(row).for_each(|(a, b)| *a += b);
                }
                grads.push(Some(db));
            }
            grads
        }),
    )
}

/// `a @ b` for a (M, K) and b (K, N).
pub fn matmul(a: &Tensor, b: &Tensor) -> Tensor {
    let (sa, sb) = (a.shape(), b.shape());
    assert!(
        sa.len() == 2 && sb.len() == 2 && sa[1] == sb[0],
        "matmul: {sa:?} @ {sb:?}"
    );
    let (m, k, n) = (sa[0], sa[1], sb[1]);
    let mut y = vec![0.0; m * n];
    gemm(m, k, n, &a.data(), false, &b.data(), false, 0.0, &mut y);
    Tensor::from_op(
        y,
        &[m, n],
        "matmul",
        vec![a.clone(), b.clone()],
        Box::new(move |inputs, _out, dy| {
            let da = inputs[0].requires_grad().then(|| {
                let mut da = vec![0.0; m * k];
                gemm(m, n, k, dy, false, &inputs[1].data(), true, 0.0, &mut da);
                da
            });
            let db = inputs[1].requires_grad().then(|| {
                let mut db = vec![0.0; k * n];
                gemm(k, m, n, &inputs[0].data(), true, dy, false, 0.0, &mut db);
                db
            });
            vec![da, db]
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check, input, random};

    fn naive_linear(x: &[f64], w: &[f64], b: Option<&[f64]>, n: usize, inp: usize, out: usize) -> Vec<f64> {
        let mut y = vec![0.0; n * out];
        for i in 0..n {
            for o in 0..out {
                y[i * out + o] =
                    b.map_or(0.0, |b| b[o]) + (0..inp).map(|k| x[i * inp + k] * w[o * inp + k]).sum::<f64>();
            }
        }
        y
    }

    #[test]
    fn linear_gradients_match_finite_differences() {
        let (n, inp, out) = (5, 7, 3);
        check(
            &[
                input(random(n * inp, 1), &[n, inp], true),
                input(random(out * inp, 2), &[out, inp], true),
                input(random(out, 3), &[out], true),
            ],
            |t| linear(&t[0], &t[1], t.get(2)),
            |v| naive_linear(&v[0], &v[1], Some(&v[2]), n, inp, out),
            1e-4,
        );
        check(
            &[
                input(random(n * inp, 4), &[n, inp], false),
                input(random(out * inp, 5), &[out, inp], true),
            ],
            |t| linear(&t[0], &t[1], None),
            |v| naive_linear(&v[0], &v[1], None, n, inp, out),
            1e-4,
        );
    }

    #[test]
    fn matmul_gradients_match_finite_differences() {
        let (m, k, n) = (4, 3, 5);
        check(
            &[
                input(random(m * k, 8), &[m, k], true),
                input(random(k * n, 9), &[k, n], true),
            ],
            |t| matmul(&t[0], &t[1]),
            |v| {
                let mut y = vec![0.0; m * n];
                for i in 0..m {
                    for j in 0..n {
                        y[i * n + j] = (0..k).map(|p| v[0][i * k + p] * v[1][p * n + j]).sum();
                    }
                }
                y
            },
            1e-4,
        );
    }
}
