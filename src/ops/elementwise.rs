//! Elementwise arithmetic with PyTorch's broadcasting: `a + b`, `a - b`, `a * b`, `a / b`
//! (tensors or a tensor and a scalar), `-a`, `exp`, `log`, `sqrt`, `pow` (scalar exponent).
//!
//! Broadcasting, as in PyTorch and NumPy: shapes are aligned at their last dimension; each pair of
//! sizes must be equal or one of them 1 (or missing), and the result takes the larger. In the
//! backward, a broadcast input's gradient is the output gradient summed over the dimensions it
//! was stretched along (in f64, then rounded once).
//!
//! Layouts: binary ops read their inputs in logical order (a channels-last input is made
//! contiguous first) and give a row-major result; unary ops keep their input's layout.

use crate::tensor::{BackwardFn, Tensor, pool};

/// The shape two shapes broadcast to, or `None` when they do not.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| if i < n - s.len() { 1 } else { s[i - (n - s.len())] };
    (0..n)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// For each element of a tensor of shape `out` (row-major), the index of the element of a
/// tensor of shape `s` broadcast to it.
fn source_indices(s: &[usize], out: &[usize]) -> Vec<usize> {
    let n = out.len();
    let pad = n - s.len();
    // The stride of each output dimension in the source (0 where it is stretched or missing).
    let mut strides = vec![0usize; n];
    let mut st = 1;
    for i in (0..n).rev() {
        if i >= pad {
            let d = s[i - pad];
            strides[i] = if d == 1 { 0 } else { st };
            st *= d;
        }
    }
    strided_indices(out, &strides)
}

/// For each element of a row-major tensor of shape `shape`, the sum of its coordinates times
/// `strides` (the index of the element it reads from, or writes to, in another tensor).
pub(crate) fn strided_indices(shape: &[usize], strides: &[usize]) -> Vec<usize> {
    let n = shape.len();
    let total: usize = shape.iter().product();
    let mut idx = Vec::with_capacity(total);
    let mut pos = vec![0usize; n];
    let mut at = 0usize;
    for _ in 0..total {
        idx.push(at);
        // Advance the multi-index like an odometer.
        for d in (0..n).rev() {
            pos[d] += 1;
            at += strides[d];
            if pos[d] < shape[d] {
                break;
            }
            at -= strides[d] * pos[d];
            pos[d] = 0;
        }
    }
    idx
}

/// Sums `g` (shape `out`) into a gradient of the broadcast input's shape `s`.
fn unbroadcast(g: &[f64], s: &[usize], out: &[usize]) -> Vec<f32> {
    if s == out {
        return g.iter().map(|&v| v as f32).collect();
    }
    let mut acc = vec![0f64; s.iter().product()];
    for (k, i) in source_indices(s, out).into_iter().enumerate() {
        acc[i] += g[k];
    }
    acc.into_iter().map(|v| v as f32).collect()
}

/// A binary op `f(a, b)` with partial derivatives `dfa(a, b, y)` and `dfb(a, b, y)`, evaluated
/// in f64 for the backward.
fn binary(
    a: &Tensor,
    b: &Tensor,
    name: &'static str,
    f: fn(f32, f32) -> f32,
    dfa: fn(f64, f64, f64) -> f64,
    dfb: fn(f64, f64, f64) -> f64,
) -> Tensor {
    let (a, b) = (a.contiguous(), b.contiguous());
    let out = broadcast_shape(a.shape(), b.shape())
        .unwrap_or_else(|| panic!("{name}: shapes {:?} and {:?} do not broadcast", a.shape(), b.shape()));
    let (ia, ib) = (source_indices(a.shape(), &out), source_indices(b.shape(), &out));
    let mut y = pool::take(ia.len());
    {
        let (da, db) = (a.data(), b.data());
        for ((y, &i), &j) in y.iter_mut().zip(&ia).zip(&ib) {
            *y = f(da[i], db[j]);
        }
    }
    let shape = out.clone();
    let backward: BackwardFn = Box::new(move |inputs, output, dy| {
        let (ta, tb) = (&inputs[0], &inputs[1]);
        let (da, db, yv) = (ta.data(), tb.data(), output.data());
        let grad = |df: fn(f64, f64, f64) -> f64, s: &[usize]| {
            let g: Vec<f64> = (0..dy.len())
                .map(|k| dy[k] as f64 * df(da[ia[k]] as f64, db[ib[k]] as f64, yv[k] as f64))
                .collect();
            unbroadcast(&g, s, &shape)
        };
        vec![
            ta.requires_grad().then(|| grad(dfa, ta.shape())),
            tb.requires_grad().then(|| grad(dfb, tb.shape())),
        ]
    });
    Tensor::from_op(y, &out, name, vec![a, b], backward)
}

/// `a + b`, broadcasting.
pub fn add(a: &Tensor, b: &Tensor) -> Tensor {
    binary(a, b, "add", |a, b| a + b, |_, _, _| 1.0, |_, _, _| 1.0)
}

/// `a - b`, broadcasting.
pub fn sub(a: &Tensor, b: &Tensor) -> Tensor {
    binary(a, b, "sub", |a, b| a - b, |_, _, _| 1.0, |_, _, _| -1.0)
}

/// `a * b`, broadcasting.
pub fn mul(a: &Tensor, b: &Tensor) -> Tensor {
    binary(a, b, "mul", |a, b| a * b, |_, b, _| b, |a, _, _| a)
}

/// `a / b`, broadcasting.
pub fn div(a: &Tensor, b: &Tensor) -> Tensor {
    binary(a, b, "div", |a, b| a / b, |_, b, _| 1.0 / b, |a, b, _| -a / (b * b))
}

/// An elementwise op `f(x)` with derivative `df(x, y)` (in f64); the result keeps x's layout.
fn unary(x: &Tensor, name: &'static str, f: impl Fn(f32) -> f32, df: impl Fn(f64, f64) -> f64 + 'static) -> Tensor {
    let mut y = pool::take(x.numel());
    for (y, &v) in y.iter_mut().zip(x.data().iter()) {
        *y = f(v);
    }
    let backward: BackwardFn = Box::new(move |inputs, output, dy| {
        let (xv, yv) = (inputs[0].data(), output.data());
        let mut dx = pool::take(dy.len());
        for (k, d) in dx.iter_mut().enumerate() {
            *d = (dy[k] as f64 * df(xv[k] as f64, yv[k] as f64)) as f32;
        }
        vec![Some(dx)]
    });
    Tensor::from_op_in_layout(y, x.shape(), x.is_channels_last(), name, vec![x.clone()], backward)
}

/// `-x`.
pub fn neg(x: &Tensor) -> Tensor {
    unary(x, "neg", |v| -v, |_, _| -1.0)
}

/// `x + s` for a scalar s.
pub fn add_scalar(x: &Tensor, s: f32) -> Tensor {
    unary(x, "add_scalar", move |v| v + s, |_, _| 1.0)
}

/// `x * s` for a scalar s.
pub fn mul_scalar(x: &Tensor, s: f32) -> Tensor {
    unary(x, "mul_scalar", move |v| v * s, move |_, _| s as f64)
}

/// `e^x`.
pub fn exp(x: &Tensor) -> Tensor {
    unary(x, "exp", f32::exp, |_, y| y)
}

/// The natural logarithm.
pub fn log(x: &Tensor) -> Tensor {
    unary(x, "log", f32::ln, |x, _| 1.0 / x)
}

/// The square root.
pub fn sqrt(x: &Tensor) -> Tensor {
    unary(x, "sqrt", f32::sqrt, |_, y| 0.5 / y)
}

/// `x^p` for a scalar exponent p.
pub fn pow(x: &Tensor, p: f32) -> Tensor {
    unary(
        x,
        "pow",
        move |v| v.powf(p),
        move |x, _| p as f64 * x.powf(p as f64 - 1.0),
    )
}

macro_rules! operators {
    ($($tr:ident $m:ident $f:ident $fs:expr;)*) => {$(
        impl std::ops::$tr<&Tensor> for &Tensor {
            type Output = Tensor;
            fn $m(self, rhs: &Tensor) -> Tensor {
                $f(self, rhs)
            }
        }
        impl std::ops::$tr<f32> for &Tensor {
            type Output = Tensor;
            fn $m(self, rhs: f32) -> Tensor {
                ($fs)(self, rhs)
            }
        }
    )*};
}

operators! {
    Add add add add_scalar;
    Sub sub sub |x: &Tensor, s: f32| add_scalar(x, -s);
    Mul mul mul mul_scalar;
    Div div div |x: &Tensor, s: f32| mul_scalar(x, 1.0 / s);
}

impl std::ops::Neg for &Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        neg(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check, input, random, to_channels_last};

    /// The f64 reference of a broadcasting binary op.
    fn reference(a: &[f64], sa: &[usize], b: &[f64], sb: &[usize], f: fn(f64, f64) -> f64) -> Vec<f64> {
        let out = broadcast_shape(sa, sb).unwrap();
        let (ia, ib) = (source_indices(sa, &out), source_indices(sb, &out));
        ia.iter().zip(&ib).map(|(&i, &j)| f(a[i], b[j])).collect()
    }

    #[test]
    fn broadcast_shapes_follow_pytorch() {
        assert_eq!(broadcast_shape(&[5, 1, 4], &[3, 1]), Some(vec![5, 3, 4]));
        assert_eq!(broadcast_shape(&[10], &[64, 10]), Some(vec![64, 10]));
        assert_eq!(broadcast_shape(&[], &[2, 3]), Some(vec![2, 3]));
        assert_eq!(broadcast_shape(&[2, 3], &[3, 2]), None);
        // x: (2, 1, 3) against (4, 1): element (i, j, k) reads x[i, 0, k].
        assert_eq!(source_indices(&[2, 1, 3], &[2, 4, 3])[..7], [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn binary_ops_and_their_gradients_with_broadcasting() {
        type Binary = (&'static str, fn(&Tensor, &Tensor) -> Tensor, fn(f64, f64) -> f64);
        let cases: [Binary; 4] = [
            ("add", add, |a, b| a + b),
            ("sub", sub, |a, b| a - b),
            ("mul", mul, |a, b| a * b),
            ("div", div, |a, b| a / b),
        ];
        let shapes: [(&[usize], &[usize]); 4] = [
            (&[2, 3], &[2, 3]),
            (&[4, 3], &[3]),
            (&[2, 1, 3], &[4, 1]),
            (&[], &[2, 2]),
        ];
        for (name, op, f) in cases {
            for (k, (sa, sb)) in shapes.iter().enumerate() {
                let na: usize = sa.iter().product();
                let nb: usize = sb.iter().product();
                // Keep divisors away from 0.
                let b: Vec<f32> = random(nb, 7 + k as u64).iter().map(|v| v + 2.0 * v.signum()).collect();
                let (sa, sb) = (sa.to_vec(), sb.to_vec());
                let (sa2, sb2) = (sa.clone(), sb.clone());
                eprintln!("{name} {sa:?} {sb:?}");
                check(
                    &[input(random(na, 3 + k as u64), &sa, true), input(b, &sb, true)],
                    |t| op(&t[0], &t[1]),
                    move |v| reference(&v[0], &sa2, &v[1], &sb2, f),
                    1e-4,
                );
            }
        }
    }

    #[test]
    fn unary_ops_and_their_gradients() {
        let x: Vec<f32> = random(12, 11).iter().map(|v| 0.5 + v.abs()).collect();
        type Unary = (fn(&Tensor) -> Tensor, fn(f64) -> f64);
        let cases: [Unary; 6] = [
            (exp, f64::exp),
            (log, f64::ln),
            (sqrt, f64::sqrt),
            (neg, |v| -v),
            (|t| pow(t, 3.0), |v| v.powi(3)),
            (|t| &(t * 2.5) - 1.0, |v| v * 2.5 - 1.0),
        ];
        for (op, f) in cases {
            check(
                &[input(x.clone(), &[3, 4], true)],
                |t| op(&t[0]),
                move |v| v[0].iter().map(|&x| f(x)).collect(),
                1e-4,
            );
        }
    }

    #[test]
    fn channels_last_inputs_give_the_same_values_and_gradients() {
        let (xs, ys) = (random(2 * 3 * 2 * 2, 21), random(3, 22));
        let grads = |cl: bool| {
            let x = Tensor::parameter(xs.clone(), &[2, 3, 2, 2]);
            let b = Tensor::parameter(ys.clone(), &[3, 1, 1]);
            let xin = if cl { to_channels_last(&x) } else { x.clone() };
            assert_eq!(xin.is_channels_last(), cl);
            let e = exp(&xin);
            assert_eq!(e.is_channels_last(), cl, "unary ops keep the layout");
            let y = &mul(&e, &b) + &xin;
            let w = Tensor::from_vec(random(24, 23), &[2, 3, 2, 2]);
            crate::ops::reduce::sum(&mul(&y, &w), None, false).backward();
            (y.to_vec(), x.grad().unwrap(), b.grad().unwrap())
        };
        assert_eq!(grads(false), grads(true));
    }

    #[test]
    fn operators_read_like_the_tutorial() {
        let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]);
        let bias = Tensor::from_vec(vec![10.0, 20.0], &[2]);
        assert_eq!((&x + &bias).to_vec(), vec![11.0, 22.0, 13.0, 24.0]);
        assert_eq!((&(&x * 2.0) - 1.0).to_vec(), vec![1.0, 3.0, 5.0, 7.0]);
        assert_eq!((&x / &bias).to_vec(), vec![0.1, 0.1, 0.3, 0.2]);
        assert_eq!((-&x).to_vec(), vec![-1.0, -2.0, -3.0, -4.0]);
    }

    /// PyTorch's float64 values and gradients (scripts/torch_golden_ops.py), for broadcasting
    /// against a (3, 4), (3, 1), (4,) and (1,) operand and for each unary op.
    #[test]
    fn matches_pytorch_golden_values() {
        use crate::ops::gradcheck::{assert_close, torch_golden};
        use crate::ops::sum;
        // L = sum(y * dy), so the gradients are PyTorch's for that upstream gradient.
        let backward = |y: &Tensor, case: &str| {
            let (ds, dv) = torch_golden(&format!("{case}/dy"));
            sum(&mul(y, &Tensor::from_vec(dv, &ds)), None, false).backward();
        };
        let param = |name: String| {
            let (s, v) = torch_golden(&name);
            Tensor::parameter(v, &s)
        };
        type Binary = fn(&Tensor, &Tensor) -> Tensor;
        type Unary = fn(&Tensor) -> Tensor;
        let binary: [(&str, Binary, &[&str]); 4] = [
            ("add", add, &["b34", "b31", "b4", "b1"]),
            ("sub", sub, &["b34", "b31", "b4", "b1"]),
            ("mul", mul, &["b34", "b31", "b4", "b1"]),
            ("div", div, &["b31", "b4"]),
        ];
        for (op, f, others) in binary {
            for b in others {
                let case = format!("{op}/{b}");
                let (x, o) = (param(format!("{case}/x")), param(format!("{case}/other")));
                let y = f(&x, &o);
                assert_close(&y.to_vec(), &torch_golden(&format!("{case}/y")).1, 1e-6, &case);
                backward(&y, &case);
                assert_close(&x.grad().unwrap(), &torch_golden(&format!("{case}/dx")).1, 1e-6, &case);
                assert_close(
                    &o.grad().unwrap(),
                    &torch_golden(&format!("{case}/dother")).1,
                    1e-5,
                    &case,
                );
            }
        }
        let unary: [(&str, Unary); 5] = [
            ("exp", exp),
            ("log", log),
            ("sqrt", sqrt),
            ("pow2.5", |x| pow(x, 2.5)),
            ("neg", neg),
        ];
        for (case, f) in unary {
            let x = param(format!("{case}/x"));
            let y = f(&x);
            assert_close(&y.to_vec(), &torch_golden(&format!("{case}/y")).1, 1e-6, case);
            backward(&y, case);
            assert_close(&x.grad().unwrap(), &torch_golden(&format!("{case}/dx")).1, 1e-6, case);
        }
    }
}
