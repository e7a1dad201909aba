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

/// The same values as `t` (N, C, H, W) stored channels-last, as a differentiable op (its
/// backward turns the gradient back into `t`'s row-major order), to run an op on that layout.
pub fn to_channels_last(t: &Tensor) -> Tensor {
    let s = t.shape().to_vec();
    assert_eq!(s.len(), 4, "to_channels_last: a 4-d tensor, got {s:?}");
    assert!(!t.is_channels_last(), "to_channels_last: already channels-last");
    let dims = (s[0], s[1], s[2], s[3]);
    let mut out = vec![0.0; t.numel()];
    crate::tensor::nchw_to_nhwc(&t.data(), dims, &mut out);
    Tensor::from_op_in_layout(
        out,
        &s,
        true,
        "to_channels_last",
        vec![t.clone()],
        Box::new(move |_, _, dy| {
            let mut dx = vec![0.0; dy.len()];
            crate::tensor::nhwc_to_nchw(dy, dims, &mut dx);
            vec![Some(dx)]
        }),
    )
}

/// One tensor of `tests/fixtures/torch_golden.safetensors` (written by
/// `scripts/torch_golden_ops.py`): its shape and values. Panics if it is missing.
pub fn torch_golden(name: &str) -> (Vec<usize>, Vec<f32>) {
    use std::sync::OnceLock;
    static FILE: OnceLock<crate::checkpoint::TensorFile> = OnceLock::new();
    let file = FILE.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_golden.safetensors");
        crate::checkpoint::TensorFile::load(&path).unwrap_or_else(|e| panic!("torch golden fixture: {e}"))
    });
    let e = file
        .tensors
        .get(name)
        .unwrap_or_else(|| panic!("torch golden fixture has no tensor '{name}'"));
    (e.shape.clone(), e.values.clone())
}

/// Asserts `got` matches PyTorch's `want` value by value: |got - want| <= tol * (1 + |want|);
/// NaN must meet NaN and infinities must be equal.
pub fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} values vs {} from torch",
        got.len(),
        want.len()
    );
    for (k, (&a, &b)) in got.iter().zip(want).enumerate() {
        let ok = if b.is_nan() || !b.is_finite() {
            a == b || (a.is_nan() && b.is_nan())
        } else {
            (a - b).abs() <= tol * (1.0 + b.abs())
        };
        assert!(ok, "{what}[{k}]: {a} vs torch {b}");
    }
}

/// Checks a one-input op against PyTorch's golden case `case` of the fixture (`<case>/x`, `/y`,
/// `/dy`, `/dx`) on both layouts: the output's shape, its values within `y_tol`, and the input
/// gradient for the upstream gradient `dy` within 1e-6.
pub fn check_golden_both_layouts(case: &str, op: impl Fn(&Tensor) -> Tensor, y_tol: f32) {
    let get = |what: &str| torch_golden(&format!("{case}/{what}"));
    let (xs, xv) = get("x");
    let (ys, yv) = get("y");
    let (_, dy) = get("dy");
    let (_, dx) = get("dx");
    for cl in [false, true] {
        let x = Tensor::parameter(xv.clone(), &xs);
        let xin = if cl { to_channels_last(&x) } else { x.clone() };
        let y = op(&xin);
        assert_eq!(y.shape(), &ys[..], "{case}");
        y.contiguous().backward_with(dy.clone());
        let what = format!("{case} channels_last={cl}");
        assert_close(&y.to_vec(), &yv, y_tol, &format!("{what} y"));
        assert_close(&x.grad().unwrap(), &dx, 1e-6, &format!("{what} dx"));
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
