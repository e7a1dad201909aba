//! Per-layer inference times of the tutorial's CNN (no gradient tracking) on random input:
//! each conv + ReLU, the average pool, then the whole forward, in microseconds per image
//! (median and minimum over the repeats). For the kernels' inference work (issue 9).
//!
//! `MNIST_CNN_SIMD=avx2 RAYON_NUM_THREADS=1 cargo run --release --example infer_layers -- [batch] [repeats]`
//! (defaults: batch 1000, 40 repeats; the threads are rayon's, one per core unless set).

use mnist_cnn::nn::Module;
use mnist_cnn::nn::models::MnistCnn;
use mnist_cnn::ops::avg_pool2d;
use mnist_cnn::rng::Rng;
use mnist_cnn::{Tensor, no_grad};
use std::time::Instant;

fn main() {
    let arg = |i: usize, default: usize| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (n, reps) = (arg(1, 1000), arg(2, 40).max(1));
    let mut rng = Rng::new(0);
    let m = MnistCnn::new(&mut rng);
    let x = Tensor::randn(&[n, 1, 28, 28], &mut rng);
    let names = ["conv1+relu", "conv2+relu", "conv3+relu", "avg_pool", "whole"];
    let mut times = vec![Vec::with_capacity(reps); names.len()];
    no_grad(|| {
        for _ in 0..reps {
            let t = Instant::now();
            let a = m.conv1.forward_relu(&x);
            let t1 = Instant::now();
            let b = m.conv2.forward_relu(&a);
            let t2 = Instant::now();
            let c = m.conv3.forward_relu(&b);
            let t3 = Instant::now();
            std::hint::black_box(avg_pool2d(&c, 4));
            let t4 = Instant::now();
            std::hint::black_box(m.forward(&x));
            let t5 = Instant::now();
            for (v, (p, q)) in times.iter_mut().zip([(t, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)]) {
                v.push((q - p).as_secs_f64() * 1e6 / n as f64);
            }
        }
    });
    println!(
        "batch {n}, {reps} repeats, SIMD {}, {} thread(s); us per image",
        mnist_cnn::ops::simd::backend_name(),
        rayon::current_num_threads()
    );
    for (name, v) in names.iter().zip(&mut times) {
        v.sort_by(f64::total_cmp);
        println!("{name:12} median {:7.3}  min {:7.3}", v[v.len() / 2], v[0]);
    }
}
