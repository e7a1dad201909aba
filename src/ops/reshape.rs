//! Reshape (`x.view(shape)` / `x.reshape(shape)`): same values, new shape, no copy; one
//! dimension may be -1 (written `None` here) and is inferred. Backward reshapes the gradient back.

use crate::tensor::{Tensor, pool};

/// `x.view(*shape)`, where one entry may be `None` for PyTorch's -1.
pub fn reshape(x: &Tensor, shape: &[Option<usize>]) -> Tensor {
    let known: usize = shape.iter().flatten().product();
    let unknown = shape.iter().filter(|d| d.is_none()).count();
    assert!(unknown <= 1, "reshape: at most one inferred dimension");
    let n = x.numel();
    let dims: Vec<usize> = shape
        .iter()
        .map(|d| {
            d.unwrap_or_else(|| {
                assert!(
                    known > 0 && n.is_multiple_of(known),
                    "reshape: {n} values into {shape:?}"
                );
                n / known
            })
        })
        .collect();
    assert_eq!(
        dims.iter().product::<usize>(),
        n,
        "reshape: {:?} into {dims:?}",
        x.shape()
    );
    // A view shares the values; a channels-last tensor is first made contiguous, unless both
    // layouts hold the values in the same order.
    let x = if x.layouts_coincide() {
        x.clone()
    } else {
        x.contiguous()
    };
    x.view_op(&dims, "reshape", Box::new(|_, _, dy| vec![Some(copy_of(dy))]))
}

/// A pooled copy of `v`.
fn copy_of(v: &[f32]) -> Vec<f32> {
    let mut out = pool::take(v.len());
    out.copy_from_slice(v);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check, input, random};

    #[test]
    fn infers_the_missing_dimension_and_passes_gradients_back() {
        check(
            &[input(random(24, 3), &[2, 12], true)],
            |t| {
                let y = reshape(&t[0], &[None, Some(3), Some(4)]);
                assert_eq!(y.shape(), &[2, 3, 4]);
                y
            },
            |v| v[0].clone(),
            1e-6,
        );
    }

    #[test]
    #[should_panic(expected = "reshape")]
    fn rejects_a_size_that_does_not_divide() {
        reshape(&Tensor::zeros(&[10]), &[None, Some(3)]);
    }
}
