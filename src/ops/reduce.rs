//! Reductions over axes: `sum`, `mean`, `max`, `var` (PyTorch's `x.sum(dim, keepdim)` and
//! friends; `None` reduces every axis to a scalar), and `argmax`.
//!
//! Sums are taken in f64 and rounded once, so a reduction of many values is as exact as a float
//! result can be and does not depend on the order of the work. `max`'s gradient goes to the
//! first largest value along the axes (as `max(dim)` does through its index); `var` uses
//! PyTorch's default correction of 1 (unbiased). Inputs are read in logical order (a
//! channels-last input is made contiguous first); results are row-major.

use crate::tensor::{BackwardFn, Tensor, pool};

/// The output shape and, for each input element (row-major), the output element it reduces into.
fn plan(shape: &[usize], axes: Option<&[usize]>, keepdim: bool) -> (Vec<usize>, Vec<usize>) {
    let n = shape.len();
    let reduced: Vec<bool> = match axes {
        None => vec![true; n],
        Some(ax) => {
            let mut r = vec![false; n];
            for &a in ax {
                assert!(a < n, "reduction axis {a} of a {n}-d tensor");
                r[a] = true;
            }
            r
        }
    };
    let kept: Vec<usize> = (0..n).map(|i| if reduced[i] { 1 } else { shape[i] }).collect();
    let out_shape: Vec<usize> = if keepdim {
        kept.clone()
    } else {
        (0..n).filter(|&i| !reduced[i]).map(|i| shape[i]).collect()
    };
    // Strides of the kept dimensions in the output.
    let mut strides = vec![0usize; n];
    let mut st = 1;
    for i in (0..n).rev() {
        if !reduced[i] {
            strides[i] = st;
            st *= kept[i];
        }
    }
    let target = crate::ops::elementwise::strided_indices(shape, &strides);
    (out_shape, target)
}

/// Sums of `x` into each output element, in f64, and how many inputs each one has.
fn sums(x: &[f32], target: &[usize], outputs: usize) -> (Vec<f64>, usize) {
    let mut s = vec![0f64; outputs];
    for (&v, &t) in x.iter().zip(target) {
        s[t] += v as f64;
    }
    (s, x.len() / outputs.max(1))
}

/// `x.sum(axes, keepdim)`; `None` sums everything.
pub fn sum(x: &Tensor, axes: Option<&[usize]>, keepdim: bool) -> Tensor {
    scaled_sum(x, axes, keepdim, "sum", |_| 1.0)
}

/// `x.mean(axes, keepdim)`; `None` averages everything.
pub fn mean(x: &Tensor, axes: Option<&[usize]>, keepdim: bool) -> Tensor {
    scaled_sum(x, axes, keepdim, "mean", |count| 1.0 / count as f64)
}

/// A sum times `scale(count of the summed values)`.
fn scaled_sum(
    x: &Tensor,
    axes: Option<&[usize]>,
    keepdim: bool,
    name: &'static str,
    scale: fn(usize) -> f64,
) -> Tensor {
    let x = x.contiguous();
    let (out_shape, target) = plan(x.shape(), axes, keepdim);
    let outputs: usize = out_shape.iter().product();
    let (s, count) = sums(&x.data(), &target, outputs);
    let k = scale(count);
    let y: Vec<f32> = s.iter().map(|v| (v * k) as f32).collect();
    let backward: BackwardFn =
        Box::new(move |_, _, dy| vec![Some(target.iter().map(|&t| (dy[t] as f64 * k) as f32).collect())]);
    Tensor::from_op(y, &out_shape, name, vec![x], backward)
}

/// `x.var(axes, keepdim)` with correction 1 (the unbiased estimate, PyTorch's default).
pub fn var(x: &Tensor, axes: Option<&[usize]>, keepdim: bool) -> Tensor {
    let x = x.contiguous();
    let (out_shape, target) = plan(x.shape(), axes, keepdim);
    let outputs: usize = out_shape.iter().product();
    let (s, count) = sums(&x.data(), &target, outputs);
    let means: Vec<f64> = s.iter().map(|v| v / count as f64).collect();
    let mut sq = vec![0f64; outputs];
    for (&v, &t) in x.data().iter().zip(&target) {
        sq[t] += (v as f64 - means[t]).powi(2);
    }
    let dof = count as f64 - 1.0;
    let y: Vec<f32> = sq.iter().map(|v| (v / dof) as f32).collect();
    let backward: BackwardFn = Box::new(move |inputs, _, dy| {
        let xv = inputs[0].data();
        let g = xv
            .iter()
            .zip(&target)
            .map(|(&v, &t)| (dy[t] as f64 * 2.0 * (v as f64 - means[t]) / dof) as f32)
            .collect();
        vec![Some(g)]
    });
    Tensor::from_op(y, &out_shape, "var", vec![x], backward)
}

/// `x.amax(axes, keepdim)`: the largest value (NaN if any value is NaN, as in PyTorch); its
/// gradient goes to the first largest.
pub fn max(x: &Tensor, axes: Option<&[usize]>, keepdim: bool) -> Tensor {
    let x = x.contiguous();
    let (out_shape, target) = plan(x.shape(), axes, keepdim);
    let outputs: usize = out_shape.iter().product();
    let mut best: Vec<Option<usize>> = vec![None; outputs];
    {
        let xv = x.data();
        for (i, (&v, &t)) in xv.iter().zip(&target).enumerate() {
            if best[t].is_none_or(|b| v > xv[b] || (v.is_nan() && !xv[b].is_nan())) {
                best[t] = Some(i);
            }
        }
    }
    let arg: Vec<usize> = best.into_iter().map(|b| b.expect("no empty reductions")).collect();
    let mut y = pool::take(outputs);
    {
        let xv = x.data();
        for (y, &i) in y.iter_mut().zip(&arg) {
            *y = xv[i];
        }
    }
    let n = x.numel();
    let backward: BackwardFn = Box::new(move |_, _, dy| {
        let mut g = vec![0.0f32; n];
        for (t, &i) in arg.iter().enumerate() {
            g[i] += dy[t];
        }
        vec![Some(g)]
    });
    Tensor::from_op(y, &out_shape, "max", vec![x], backward)
}

/// `x.argmax(dim)`: for each position of the other axes (row-major), the index along `axis` of
/// the first largest value.
pub fn argmax(x: &Tensor, axis: usize) -> Vec<usize> {
    let x = x.contiguous();
    let s = x.shape().to_vec();
    assert!(axis < s.len(), "argmax axis {axis} of a {}-d tensor", s.len());
    let (outer, len, inner) = (
        s[..axis].iter().product::<usize>(),
        s[axis],
        s[axis + 1..].iter().product::<usize>(),
    );
    let xv = x.data();
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| xv[(o * len + k) * inner + i];
            out.push((0..len).fold(0, |b, k| if at(k) > at(b) { k } else { b }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check, input, random};

    /// The f64 reference: reduce `v` of `shape` with `f` over the planned groups.
    fn reference(v: &[f64], shape: &[usize], axes: Option<&[usize]>, f: fn(&[f64]) -> f64) -> Vec<f64> {
        let (out, target) = plan(shape, axes, false);
        let mut groups = vec![Vec::new(); out.iter().product()];
        for (&x, &t) in v.iter().zip(&target) {
            groups[t].push(x);
        }
        groups.iter().map(|g| f(g)).collect()
    }

    fn mean64(g: &[f64]) -> f64 {
        g.iter().sum::<f64>() / g.len() as f64
    }

    #[test]
    fn reductions_and_their_gradients_over_any_axes() {
        let shape = [2, 3, 4];
        let x = random(24, 31);
        let axes_cases: [Option<&[usize]>; 5] = [None, Some(&[0]), Some(&[1]), Some(&[2]), Some(&[0, 2])];
        type Case = (fn(&Tensor, Option<&[usize]>, bool) -> Tensor, fn(&[f64]) -> f64);
        let cases: [Case; 4] = [
            (sum, |g| g.iter().sum()),
            (mean, mean64),
            (var, |g| {
                let m = mean64(g);
                g.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (g.len() as f64 - 1.0)
            }),
            (max, |g| g.iter().cloned().fold(f64::MIN, f64::max)),
        ];
        for (op, f) in cases {
            for axes in axes_cases {
                let ax: Option<Vec<usize>> = axes.map(|a| a.to_vec());
                check(
                    &[input(x.clone(), &shape, true)],
                    |t| op(&t[0], ax.as_deref(), false),
                    |v| reference(&v[0], &shape, ax.as_deref(), f),
                    1e-4,
                );
            }
        }
    }

    #[test]
    fn shapes_keepdim_and_argmax() {
        let x = Tensor::from_vec((0..24).map(|v| v as f32).collect(), &[2, 3, 4]);
        assert_eq!(sum(&x, Some(&[1]), false).shape(), &[2, 4]);
        assert_eq!(sum(&x, Some(&[1]), true).shape(), &[2, 1, 4]);
        assert_eq!(sum(&x, None, false).shape(), &[] as &[usize]);
        assert_eq!(sum(&x, None, false).item(), 276.0);
        assert_eq!(
            mean(&x, Some(&[2]), false).to_vec(),
            vec![1.5, 5.5, 9.5, 13.5, 17.5, 21.5]
        );
        let logits = Tensor::from_vec(vec![0.1, 0.7, 0.2, 0.9, 0.05, 0.05], &[2, 3]);
        assert_eq!(argmax(&logits, 1), vec![1, 0]);
        assert_eq!(argmax(&logits, 0), vec![1, 0, 0]);
        // Ties: the first largest, for the value and for the gradient.
        let t = Tensor::parameter(vec![3.0, 1.0, 3.0], &[3]);
        max(&t, None, false).backward();
        assert_eq!(t.grad().unwrap(), vec![1.0, 0.0, 0.0]);
    }

    #[test]
    fn channels_last_input_reduces_in_logical_order() {
        let xs = random(2 * 3 * 2 * 2, 41);
        let x = Tensor::parameter(xs.clone(), &[2, 3, 2, 2]);
        let cl = crate::ops::gradcheck::to_channels_last(&x);
        // Per-channel means, as batch norm takes them: axes (N, H, W).
        let a = mean(&x, Some(&[0, 2, 3]), false).to_vec();
        let b = mean(&cl, Some(&[0, 2, 3]), false).to_vec();
        assert_eq!(a, b);
        var(&cl, Some(&[0, 2, 3]), false).backward_with(vec![1.0; 3]);
        let g_cl = x.grad().unwrap();
        x.zero_grad();
        var(&x, Some(&[0, 2, 3]), false).backward_with(vec![1.0; 3]);
        assert_eq!(g_cl, x.grad().unwrap());
    }

    /// PyTorch's float64 values and gradients (scripts/torch_golden_ops.py) for sum, mean, var
    /// and amax over one, two or all axes, with and without keepdim.
    #[test]
    fn matches_pytorch_golden_values() {
        use crate::ops::gradcheck::{assert_close, torch_golden};
        type Reduce = fn(&Tensor, Option<&[usize]>, bool) -> Tensor;
        let cases: [(&str, Reduce, Option<&[usize]>, bool); 9] = [
            ("sum_1", sum, Some(&[1]), false),
            ("sum_02_keep", sum, Some(&[0, 2]), true),
            ("sum_all", sum, None, false),
            ("mean_2", mean, Some(&[2]), false),
            ("mean_01_keep", mean, Some(&[0, 1]), true),
            ("var_1", var, Some(&[1]), false),
            ("var_02_keep", var, Some(&[0, 2]), true),
            ("amax_1", max, Some(&[1]), false),
            ("amax_2_keep", max, Some(&[2]), true),
        ];
        for (name, f, axes, keepdim) in cases {
            let g = |what: &str| torch_golden(&format!("reduce/{name}/{what}"));
            let (xs, xv) = g("x");
            let x = Tensor::parameter(xv, &xs);
            let y = f(&x, axes, keepdim);
            let (ys, yv) = g("y");
            assert_eq!(
                y.numel(),
                ys.iter().product::<usize>(),
                "{name}: shape {:?} vs {ys:?}",
                y.shape()
            );
            if keepdim {
                assert_eq!(y.shape(), ys.as_slice(), "{name}");
            }
            assert_close(&y.to_vec(), &yv, 1e-6, name);
            y.backward_with(g("dy").1);
            assert_close(&x.grad().unwrap(), &g("dx").1, 1e-6, name);
        }
    }
}
