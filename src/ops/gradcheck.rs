//! Test helper: checks an op against a plain f64 reference implementation.
//!
//! Forward: the f32 kernel's output matches the f64 reference within `tol`.
//! Backward: with L = sum(y * r) for a fixed random r, the gradient the op's backward gives
//! each input matches the central finite difference of L computed in f64 on the reference.

use crate::rng::Rng;
use crate::tensor::Tensor;

pub struct Input {
    pub data: Vec<f32>,
    pub shape: Vec<usize>,
    pub needs_grad: bool,
}

pub fn input(data: Vec<f32>, shape: &[usize], needs_grad: bool) -> Input {
    Input {
        data,
        shape: shape.to_vec(),
        needs_grad,
    }
}

/// Uniform values in [-1, 1) from a seed.
pub fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.uniform(-1.0, 1.0)).collect()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

pub fn check(
    inputs: &[Input],
    op: impl Fn(&[Tensor]) -> Tensor,
    reference: impl Fn(&[Vec<f64>]) -> Vec<f64>,
    tol: f64,
) {
    let tensors: Vec<Tensor> = inputs
        .iter()
        .map(|i| {
            if i.needs_grad {
                Tensor::parameter(i.data.clone(), &i.shape)
            } else {
                Tensor::from_vec(i.data.clone(), &i.shape)
            }
        })
        .collect();
    let as_f64: Vec<Vec<f64>> = inputs
        .iter()
        .map(|i| i.data.iter().map(|&v| v as f64).collect())
        .collect();
    // Compare in logical order whatever layout the op stores its result in.
    let y = op(&tensors).contiguous();
    let want = reference(&as_f64);
    assert_eq!(y.numel(), want.len(), "output size vs reference");
    for (k, (&got, &w)) in y.data().iter().zip(&want).enumerate() {
        assert!(close(got as f64, w, tol), "forward[{k}]: kernel {got} vs reference {w}");
    }
    let r: Vec<f64> = random(want.len(), 99).into_iter().map(|v| v as f64).collect();
    y.backward_with(r.iter().map(|&v| v as f32).collect());
    let loss = |xs: &[Vec<f64>]| -> f64 { reference(xs).iter().zip(&r).map(|(a, b)| a * b).sum() };
    let eps = 1e-6;
    for (i, inp) in inputs.iter().enumerate() {
        if !inp.needs_grad {
            assert!(tensors[i].grad().is_none(), "input {i} needs no grad but got one");
            continue;
        }
        let grad = tensors[i].grad().unwrap_or_else(|| panic!("input {i}: no gradient"));
        for j in 0..inp.data.len() {
            let mut xs = as_f64.clone();
            xs[i][j] += eps;
            let up = loss(&xs);
            xs[i][j] -= 2.0 * eps;
            let down = loss(&xs);
            let fd = (up - down) / (2.0 * eps);
            assert!(
                close(grad[j] as f64, fd, tol),
                "d/d input{i}[{j}]: backward {} vs finite difference {fd}",
                grad[j]
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// y = 2x with a backward that wrongly returns 3g: the check must catch it.
    #[test]
    #[should_panic(expected = "finite difference")]
    fn a_wrong_backward_is_caught() {
        check(
            &[input(vec![0.5, -0.25], &[2], true)],
            |t| {
                let out = t[0].data().iter().map(|v| 2.0 * v).collect();
                Tensor::from_op(
                    out,
                    &[2],
                    "double",
                    vec![t[0].clone()],
                    Box::new(|_, _, g| vec![Some(g.iter().map(|v| 3.0 * v).collect())]),
                )
            },
            |x| x[0].iter().map(|v| 2.0 * v).collect(),
            1e-4,
        );
    }
}
