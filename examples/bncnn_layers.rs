//! Per-block inference times of the accuracy model `bncnn` (evaluation mode without gradients,
//! so each batch norm is folded into its convolution, and blocks 1 and 2 run with their max
//! pooling in one op, blocks 2-4 by Winograd, as `serve` runs them), on random input and
//! fresh weights: microseconds per image, the median and the minimum over the repeats. For the
//! kernels' serving work (issue 12: the forward pass is most of a JSON request's CPU).
//!
//! `MNIST_CNN_SIMD=avx2 RAYON_NUM_THREADS=1 cargo run --release --example bncnn_layers -- [batch] [repeats]`
//! (defaults: batch 16, `serve`'s largest micro-batch, and 2,000 repeats).
use mnist_cnn::nn::Module;
use mnist_cnn::nn::models::BnCnn;
use mnist_cnn::ops::{adaptive_avg_pool2d, flatten, reshape};
use mnist_cnn::rng::Rng;
use mnist_cnn::{Tensor, no_grad};
use std::time::Instant;

fn main() {
    let arg = |i: usize, default: usize| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (n, reps) = (arg(1, 16), arg(2, 2000));
    let mut rng = Rng::new(0);
    let m = BnCnn::new(&mut rng);
    // Evaluation mode: the running statistics (from init) are folded into the convolutions.
    m.set_training(false);
    let x = Tensor::rand(&[n, 784], &mut rng);
    let names = ["block1+pool", "block2+pool", "block3", "block4", "head", "whole"];
    let mut times = vec![Vec::new(); names.len()];
    no_grad(|| {
        for _ in 0..reps {
            let t0 = Instant::now();
            let x0 = reshape(&x, &[None, Some(1), Some(28), Some(28)]);
            let a = m.block1.forward_max_pool(&x0);
            let t1 = Instant::now();
            let b = m.block2.forward_max_pool(&a);
            let t2 = Instant::now();
            let c = m.block3.forward(&b);
            let t3 = Instant::now();
            let d = m.block4.forward(&c);
            let t4 = Instant::now();
            let y = m.fc.forward(&flatten(&adaptive_avg_pool2d(&d, (1, 1)), 1, -1));
            let t5 = Instant::now();
            std::hint::black_box(y);
            let w = Instant::now();
            std::hint::black_box(m.forward(&x));
            let w1 = Instant::now();
            for (i, (a, b)) in [(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (w, w1)]
                .iter()
                .enumerate()
            {
                times[i].push((*b - *a).as_secs_f64() * 1e6 / n as f64);
            }
        }
    });
    for (name, mut t) in names.iter().zip(times) {
        t.sort_by(f64::total_cmp);
        println!("{name:>12}: median {:.2} us/image, min {:.2}", t[t.len() / 2], t[0]);
    }
}
