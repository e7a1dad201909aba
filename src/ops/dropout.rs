//! Dropout (`F.dropout(x, p, training)`), elementwise on any shape.
//!
//! In training each value is zeroed with probability p and the others are scaled by
//! 1 / (1 - p), as y = x * m with m = 0 or 1 / (1 - p) (so, as in PyTorch, a dropped inf or NaN
//! gives NaN). The mask takes one `rng.next_f32()` u per value, in logical row-major order
//! ((N, C, H, W) for images whatever the layout), drawn serially: a value is dropped when
//! u < p. So a seed gives the same mask on any number of threads and in either layout.
//! p = 1 gives zeros (x * 0) and p = 0 (or evaluation) returns x itself; neither draws numbers.
//! Backward: dx = dy * m. The result keeps x's memory layout.

use crate::profile::{self, Phase};
use crate::rng::Rng;
use crate::tensor::{BackwardFn, Tensor, pool};

/// Draws the multipliers m (0 or `scale`, one `rng.next_f32()` per value in logical order),
/// stores them in x's layout and writes y = x * m. `dims` (N, C, H, W) when x is stored
/// channels-last, else `None` (stored in logical order).
pub fn dropout_forward(
    x: &[f32],
    channels_last: Option<(usize, usize, usize, usize)>,
    p: f32,
    rng: &mut Rng,
    m: &mut [f32],
    y: &mut [f32],
) {
    let scale = (1.0 / (1.0 - p as f64)) as f32;
    let mut draw = || if rng.next_f32() < p { 0.0 } else { scale };
    match channels_last {
        None => m.iter_mut().for_each(|v| *v = draw()),
        Some((n, c, h, w)) => {
            // Logical (s, ch, r, q) is stored at ((s * H + r) * W + q) * C + ch.
            for s in 0..n {
                for ch in 0..c {
                    for pos in 0..h * w {
                        m[(s * h * w + pos) * c + ch] = draw();
                    }
                }
            }
        }
    }
    y.iter_mut().zip(x).zip(&*m).for_each(|((y, x), m)| *y = x * m);
}

/// dx = dy * m.
pub fn dropout_backward(dy: &[f32], m: &[f32], dx: &mut [f32]) {
    dx.iter_mut().zip(dy).zip(m).for_each(|((d, g), m)| *d = g * m);
}

/// `F.dropout(x, p, training)` with the mask drawn from `rng`; see the module header. Panics
/// when p is not in [0, 1].
pub fn dropout(x: &Tensor, p: f32, training: bool, rng: &mut Rng) -> Tensor {
    assert!(
        (0.0..=1.0).contains(&p),
        "dropout probability has to be between 0 and 1, but got {p}"
    );
    if !training || p == 0.0 {
        return x.clone();
    }
    let n = x.numel();
    let s = x.shape().to_vec();
    let nhwc = x.is_channels_last();
    let mut y = pool::take(n);
    let mut m = pool::take(n);
    profile::time(
        || profile::label("dropout", &s),
        Phase::Forward,
        || {
            if p == 1.0 {
                m.fill(0.0);
                y.iter_mut().zip(x.data().iter()).for_each(|(y, x)| *y = x * 0.0);
            } else {
                let dims = nhwc.then(|| (s[0], s[1], s[2], s[3]));
                dropout_forward(&x.data(), dims, p, rng, &mut m, &mut y);
            }
        },
    );
    let needs_graph = crate::tensor::is_grad_enabled() && x.requires_grad();
    let backward: BackwardFn = if needs_graph {
        let m = pool::Pooled(m);
        Box::new(move |_, _, dy| {
            let mut dx = pool::take(dy.len());
            dropout_backward(dy, &m, &mut dx);
            vec![Some(dx)]
        })
    } else {
        pool::recycle(m);
        Box::new(|_, _, _| unreachable!("dropout: no graph was recorded"))
    };
    Tensor::from_op_in_layout(y, &s, nhwc, "dropout", vec![x.clone()], backward)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check, input, random, to_channels_last};

    /// The multipliers the module header promises, in logical order, from a copy of the rng.
    fn expected_mask(n: usize, p: f32, rng: &Rng) -> Vec<f64> {
        let mut r = rng.clone();
        let scale = (1.0 / (1.0 - p as f64)) as f32 as f64;
        (0..n).map(|_| if r.next_f32() < p { 0.0 } else { scale }).collect()
    }

    #[test]
    fn forward_and_gradient_match_the_reference_mask_in_both_layouts() {
        let (n, c, h, w) = (3, 4, 3, 5);
        let numel = n * c * h * w;
        for cl in [false, true] {
            let rng = Rng::new(40);
            let mask = expected_mask(numel, 0.4, &rng);
            check(
                &[input(random(numel, 41), &[n, c, h, w], true)],
                |t| {
                    let x = if cl { to_channels_last(&t[0]) } else { t[0].clone() };
                    let y = dropout(&x, 0.4, true, &mut rng.clone());
                    assert_eq!(y.is_channels_last(), cl);
                    y
                },
                |v| v[0].iter().zip(&mask).map(|(x, m)| x * m).collect(),
                1e-6,
            );
        }
    }

    #[test]
    fn keeps_about_one_minus_p_and_scales_the_kept_values() {
        let n = 200_000;
        let x: Vec<f32> = random(n, 42).iter().map(|v| v + 2.0).collect(); // no zeros
        for p in [0.1f32, 0.5, 0.8] {
            let y = dropout(&Tensor::from_vec(x.clone(), &[n]), p, true, &mut Rng::new(43)).to_vec();
            let scale = (1.0 / (1.0 - p as f64)) as f32;
            let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
            // The standard deviation of the fraction is sqrt(p (1 - p) / n) < 0.0012.
            assert!((kept - (1.0 - p as f64)).abs() < 0.006, "p={p}: kept {kept}");
            for (a, b) in y.iter().zip(&x) {
                assert!(*a == 0.0 || *a == b * scale, "p={p}: {a} from {b}");
                assert!(*a == 0.0 || (*a as f64 - *b as f64 / (1.0 - p as f64)).abs() < 1e-5 * b.abs() as f64);
            }
        }
    }

    #[test]
    fn gradient_is_the_mask_times_the_scale() {
        let n = 5000;
        let x = Tensor::parameter(random(n, 44).iter().map(|v| v + 2.0).collect(), &[50, 100]);
        let y = dropout(&x, 0.25, true, &mut Rng::new(45));
        let dy = random(n, 46);
        y.backward_with(dy.clone());
        let (yv, g) = (y.to_vec(), x.grad().unwrap());
        for i in 0..n {
            let want = if yv[i] == 0.0 {
                0.0
            } else {
                dy[i] * (1.0 / 0.75f64) as f32
            };
            assert_eq!(g[i], want, "[{i}]");
        }
        assert!(g.contains(&0.0) && g.iter().any(|&v| v != 0.0));
    }

    #[test]
    fn the_mask_does_not_depend_on_threads_or_layout() {
        let shape = [2 * crate::ops::CHUNK, 8, 12, 12];
        let x = random(shape.iter().product(), 47);
        let run = |threads: usize, cl: bool| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut rng = Rng::new(48);
                let xt = Tensor::parameter(x.clone(), &shape);
                let xin = if cl { to_channels_last(&xt) } else { xt.clone() };
                let y = dropout(&xin, 0.5, true, &mut rng);
                y.contiguous().backward_with(random(y.numel(), 49));
                (y.to_vec(), xt.grad().unwrap(), rng.state())
            })
        };
        let base = run(1, false);
        assert_eq!(base, run(2, false));
        assert_eq!(base, run(1, true));
        assert_eq!(base, run(2, true));
    }

    #[test]
    fn evaluation_and_p_zero_return_x_and_draw_nothing() {
        let x = Tensor::parameter(vec![1.0, -2.0, 3.0], &[3]);
        let mut rng = Rng::new(50);
        let state = rng.state();
        for (p, training) in [(0.5, false), (0.0, true), (1.0, false)] {
            let y = dropout(&x, p, training, &mut rng);
            assert_eq!(y.to_vec(), x.to_vec());
            assert!(y.is_leaf() && y.requires_grad(), "the same tensor, not a new op");
        }
        assert_eq!(rng.state(), state);
    }

    #[test]
    fn p_one_gives_zeros_and_no_gradient() {
        let x = Tensor::parameter(vec![1.0, -2.0, 3.0, 4.0], &[1, 1, 2, 2]);
        let y = dropout(&x, 1.0, true, &mut Rng::new(51));
        assert_eq!(y.to_vec(), vec![0.0; 4]);
        y.backward_with(vec![1.0; 4]);
        assert_eq!(x.grad().unwrap(), vec![0.0; 4]);
    }

    #[test]
    fn rejects_p_outside_zero_to_one() {
        for p in [-0.1, 1.5, f32::NAN] {
            let r = std::panic::catch_unwind(|| dropout(&Tensor::zeros(&[2]), p, true, &mut Rng::new(52)));
            assert!(r.is_err(), "p={p} accepted");
        }
    }
}
