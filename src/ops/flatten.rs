//! Flatten (`torch.flatten(x, start_dim, end_dim)`): dimensions start_dim..=end_dim merged into
//! one, the values unchanged in logical row-major order. end_dim may be negative, counting
//! from the end (-1 is the last), as in PyTorch.
//!
//! A view (no copy) when the values are stored row-major; a channels-last input is made
//! contiguous first (as [`reshape()`] does), unless both layouts order its values the same way,
//! so the result is always row-major. start_dim == end_dim returns x itself, as PyTorch does;
//! a 0-d x becomes shape `[1]`.

use crate::ops::reshape;
use crate::tensor::Tensor;

/// The shape of `torch.flatten` on `shape`; panics on dimensions out of range or in the
/// wrong order (programming errors).
pub fn flattened_shape(shape: &[usize], start_dim: usize, end_dim: isize) -> Vec<usize> {
    if shape.is_empty() {
        // PyTorch treats a 0-d tensor as 1-d here: dims 0 and -1 are both fine.
        assert!(
            start_dim == 0 && (end_dim == 0 || end_dim == -1),
            "flatten: dimensions {start_dim}..{end_dim} of a 0-d tensor"
        );
        return vec![1];
    }
    let nd = shape.len() as isize;
    assert!(
        (-nd..nd).contains(&end_dim),
        "flatten: end_dim {end_dim} out of range for a {nd}-d tensor"
    );
    let end = if end_dim < 0 { end_dim + nd } else { end_dim } as usize;
    assert!(
        start_dim < shape.len(),
        "flatten: start_dim {start_dim} out of range for a {nd}-d tensor"
    );
    assert!(
        start_dim <= end,
        "flatten() has invalid args: start_dim {start_dim} cannot come after end_dim {end_dim}"
    );
    let mut out = shape[..start_dim].to_vec();
    out.push(shape[start_dim..=end].iter().product());
    out.extend_from_slice(&shape[end + 1..]);
    out
}

/// `torch.flatten(x, start_dim, end_dim)`; see the module header.
pub fn flatten(x: &Tensor, start_dim: usize, end_dim: isize) -> Tensor {
    let shape = flattened_shape(x.shape(), start_dim, end_dim);
    // As many dimensions as before: start_dim == end_dim.
    if !x.shape().is_empty() && shape.len() == x.shape().len() {
        return x.clone();
    }
    let dims: Vec<Option<usize>> = shape.into_iter().map(Some).collect();
    reshape(x, &dims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{assert_close, check, input, random, to_channels_last, torch_golden};

    #[test]
    fn shapes_follow_pytorch() {
        let s = [2, 3, 4, 5];
        assert_eq!(flattened_shape(&s, 1, -1), [2, 60]);
        assert_eq!(flattened_shape(&s, 0, -1), [120]);
        assert_eq!(flattened_shape(&s, 0, 1), [6, 4, 5]);
        assert_eq!(flattened_shape(&s, 1, 2), [2, 12, 5]);
        assert_eq!(flattened_shape(&s, 2, 3), [2, 3, 20]);
        assert_eq!(flattened_shape(&s, 3, -1), [2, 3, 4, 5]);
        assert_eq!(flattened_shape(&s, 1, -3), [2, 3, 4, 5], "end_dim -3 is dim 1");
        assert_eq!(flattened_shape(&[], 0, -1), [1]);
    }

    #[test]
    #[should_panic(expected = "cannot come after end_dim")]
    fn rejects_start_after_end() {
        flatten(&Tensor::zeros(&[2, 3, 4]), 2, 1);
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn rejects_end_dim_out_of_range() {
        flatten(&Tensor::zeros(&[2, 3]), 0, -3);
    }

    #[test]
    fn is_a_view_of_a_row_major_input_and_passes_gradients_back() {
        let x = Tensor::parameter(random(24, 60), &[2, 3, 4]);
        let y = flatten(&x, 1, -1);
        assert_eq!(y.shape(), &[2, 12]);
        assert!(std::ptr::eq(y.data().as_ptr(), x.data().as_ptr()), "shares the values");
        check(
            &[input(random(24, 61), &[2, 3, 4], true)],
            |t| flatten(&t[0], 0, 1),
            |v| v[0].clone(),
            1e-6,
        );
        let same = flatten(&x, 1, 1);
        assert!(
            same.is_leaf() && same.shape() == x.shape(),
            "start == end returns x itself"
        );
    }

    #[test]
    fn channels_last_input_flattens_in_logical_order() {
        let (n, c, h, w) = (2, 3, 4, 5);
        for (start, end) in [(1, -1), (0, 1), (1, 2), (2, 3), (0, -1)] {
            check(
                &[input(random(n * c * h * w, 62), &[n, c, h, w], true)],
                |t| {
                    let y = flatten(&to_channels_last(&t[0]), start, end);
                    assert!(!y.is_channels_last());
                    y
                },
                |v| v[0].clone(),
                1e-6,
            );
        }
        // A channels-last (N, C, 1, 1) tensor stores its values in logical order: a view.
        let x = to_channels_last(&Tensor::parameter(random(6, 63), &[2, 3, 1, 1]));
        let y = flatten(&x, 1, -1);
        assert_eq!(y.to_vec(), x.to_vec());
        assert!(std::ptr::eq(y.data().as_ptr(), x.data().as_ptr()));
    }

    #[test]
    fn matches_pytorch_golden_values() {
        let cases = [
            ("1_m1", 1, -1),
            ("0_1", 0, 1),
            ("1_2", 1, 2),
            ("2_3", 2, 3),
            ("0_m1", 0, -1),
            ("2_2", 2, 2),
        ];
        for (name, start, end) in cases {
            for (layout, cl) in [("", false), ("_cl", true)] {
                let get = |what: &str| torch_golden(&format!("flatten/{name}{layout}/{what}"));
                let (xs, xv) = get("x");
                let (ys, yv) = get("y");
                let (_, dy) = get("dy");
                let (_, dx) = get("dx");
                let x = Tensor::parameter(xv, &xs);
                let xin = if cl { to_channels_last(&x) } else { x.clone() };
                let y = flatten(&xin, start, end);
                assert_eq!(y.shape(), &ys[..], "{name}{layout}");
                y.contiguous().backward_with(dy);
                assert_close(&y.to_vec(), &yv, 0.0, &format!("{name}{layout} y"));
                assert_close(&x.grad().unwrap(), &dx, 0.0, &format!("{name}{layout} dx"));
            }
        }
    }
}
