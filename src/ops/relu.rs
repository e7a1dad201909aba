//! ReLU, y = max(x, 0), elementwise on any shape and layout (a flat buffer). Backward passes
//! the gradient where y > 0. Vector kernels over 16-lane vectors ([`Simd`]); NaN stays NaN, as
//! in PyTorch (its gradient is 0 here, where PyTorch passes it: a NaN has reached the loss by
//! then, so every gradient of that step is NaN either way).

use rayon::prelude::*;

use crate::ops::simd::{Kernel, LANES, Simd};
use crate::profile::{self, Phase};
use crate::simd_dispatch;
use crate::tensor::{BackwardFn, Tensor, pool};

/// Elementwise work is split into pieces of this many values across threads.
const PIECE: usize = 16 * 1024;

/// y = max(x, 0) on one piece (NaN kept, as `Simd::relu`).
struct Forward<'a> {
    x: &'a [f32],
    y: &'a mut [f32],
}

impl Kernel for Forward<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let Forward { x, y } = self;
        for (yc, xc) in y.chunks_mut(LANES).zip(x.chunks(LANES)) {
            let w = yc.len();
            s.store(yc, w, s.relu(s.load(xc, w)));
        }
    }
}

/// dx = dy where y > 0, else 0, on one piece.
struct Backward<'a> {
    y: &'a [f32],
    dy: &'a [f32],
    dx: &'a mut [f32],
}

impl Kernel for Backward<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let Backward { y, dy, dx } = self;
        for ((dxc, yc), dc) in dx.chunks_mut(LANES).zip(y.chunks(LANES)).zip(dy.chunks(LANES)) {
            let w = dxc.len();
            s.store(dxc, w, s.pass_where_positive(s.load(yc, w), s.load(dc, w)));
        }
    }
}

/// y = max(x, 0) elementwise, in parallel pieces for large buffers.
pub fn relu_forward(x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "relu: sizes");
    // Dispatched here, on the calling thread (a backend forced on it covers the pieces).
    fn all<S: Simd>(s: S, x: &[f32], y: &mut [f32]) {
        if y.len() <= PIECE {
            s.vectorize(Forward { x, y });
        } else {
            y.par_chunks_mut(PIECE)
                .zip(x.par_chunks(PIECE))
                .for_each(|(y, x)| s.vectorize(Forward { x, y }));
        }
    }
    simd_dispatch!(all(x, y))
}

/// dx = dy where y > 0, else 0, elementwise.
pub fn relu_backward(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    assert!(y.len() == dx.len() && dy.len() == dx.len(), "relu backward: sizes");
    fn all<S: Simd>(s: S, y: &[f32], dy: &[f32], dx: &mut [f32]) {
        if dx.len() <= PIECE {
            s.vectorize(Backward { y, dy, dx });
        } else {
            dx.par_chunks_mut(PIECE)
                .zip(y.par_chunks(PIECE))
                .zip(dy.par_chunks(PIECE))
                .for_each(|((dx, y), dy)| s.vectorize(Backward { y, dy, dx }));
        }
    }
    simd_dispatch!(all(y, dy, dx))
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

    /// Every backend, on lengths with a partial last vector and over one piece (the parallel
    /// path): max(x, 0) with NaN kept (as PyTorch) and +0 for -0, and dy passed exactly where
    /// y > 0.
    #[test]
    fn every_backend_computes_relu_and_its_mask() {
        let special = [f32::NAN, -0.0, f32::INFINITY, f32::NEG_INFINITY, 0.0];
        crate::ops::simd::on_each_backend("relu", |b| {
            for len in [5, 37, 2 * PIECE + 3] {
                let x: Vec<f32> = random(len, 6)
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| if i % 7 == 3 { special[i % 5] } else { v })
                    .collect();
                let want: Vec<u32> = x
                    .iter()
                    .map(|&v| if v > 0.0 || v.is_nan() { v } else { 0.0 }.to_bits())
                    .collect();
                let mut y = vec![1.0; len];
                relu_forward(&x, &mut y);
                assert_eq!(y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want, "{b} len {len}");
                let dy = random(len, 7);
                let mut dx = vec![1.0; len];
                relu_backward(&y, &dy, &mut dx);
                for ((&g, &d), &y) in dx.iter().zip(&dy).zip(&y) {
                    assert_eq!(g.to_bits(), if y > 0.0 { d } else { 0.0 }.to_bits(), "{b} len {len}");
                }
            }
        });
    }

    /// A NaN weight (a diverged step) makes the tutorial CNN's loss NaN, as in PyTorch, where a
    /// ReLU that turned NaN into 0 gave a finite loss from a broken model.
    #[test]
    fn a_nan_weight_makes_the_loss_nan_as_in_pytorch() {
        use crate::nn::Module;
        let m = crate::nn::models::MnistCnn::new(&mut crate::rng::Rng::new(0));
        let x = Tensor::from_vec(random(2 * 784, 3).iter().map(|v| v.abs()).collect(), &[2, 784]);
        let y = [3usize, 7];
        let loss = |m: &crate::nn::models::MnistCnn| crate::ops::cross_entropy(&m.forward(&x), &y).item();
        assert!(loss(&m).is_finite());
        m.conv1.weight.data_mut()[0] = f32::NAN;
        assert!(loss(&m).is_nan(), "the NaN reached the loss");
    }
}
