//! ReLU, y = max(x, 0), elementwise on any shape. Backward passes the gradient where y > 0.

use rayon::prelude::*;

use crate::profile::{self, Phase};
use crate::tensor::{BackwardFn, Tensor, pool};

/// Elementwise work is split into pieces of this many values across threads.
const PIECE: usize = 16 * 1024;

pub fn relu_forward(x: &[f32], y: &mut [f32]) {
    let f = |(y, x): (&mut [f32], &[f32])| y.iter_mut().zip(x).for_each(|(y, &x)| *y = x.max(0.0));
    if y.len() <= PIECE {
        f((y, x));
    } else {
        y.par_chunks_mut(PIECE).zip(x.par_chunks(PIECE)).for_each(f);
    }
}

pub fn relu_backward(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    let f = |((dx, y), dy): ((&mut [f32], &[f32]), &[f32])| {
        for ((dx, &y), &dy) in dx.iter_mut().zip(y).zip(dy) {
            *dx = if y > 0.0 { dy } else { 0.0 };
        }
    };
    if dx.len() <= PIECE {
        f(((dx, y), dy));
    } else {
        dx.par_chunks_mut(PIECE)
            .zip(y.par_chunks(PIECE))
            .zip(dy.par_chunks(PIECE))
            .for_each(f);
    }
}

/// `F.relu(x)`. The result keeps x's memory layout.
pub fn relu(x: &Tensor) -> Tensor {
    let mut y = pool::take(x.numel());
    profile::time(
        || profile::label("relu", x.shape()),
        Phase::Forward,
        || relu_forward(&x.data(), &mut y),
    );
    let backward: BackwardFn = Box::new(|_inp, out, dy| {
        let mut dx = pool::take(dy.len());
        relu_backward(&out.data(), dy, &mut dx);
        vec![Some(dx)]
    });
    Tensor::from_op_in_layout(y, x.shape(), x.is_channels_last(), "relu", vec![x.clone()], backward)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check, input, random};

    #[test]
    fn gradient_matches_finite_differences() {
        // Keep values away from the kink at 0, where the derivative is undefined.
        let x: Vec<f32> = random(24, 5)
            .into_iter()
            .map(|v| if v.abs() < 0.05 { 0.5 } else { v })
            .collect();
        check(
            &[input(x, &[2, 3, 4], true)],
            |t| relu(&t[0]),
            |v| v[0].iter().map(|x| x.max(0.0)).collect(),
            1e-4,
        );
    }

    #[test]
    fn output_is_exact() {
        let y = relu(&Tensor::from_vec(vec![-1.0, 0.0, 2.5], &[3]));
        assert_eq!(y.to_vec(), vec![0.0, 0.0, 2.5]);
    }
}
