//! Per-op timing of the best-accuracy model's blocks (issue 11) on random data: conv 3x3 (no
//! bias) + BatchNorm2d + ReLU at 1->16 @28, 16->32 @14, 32->64 @7, 64->64 stride 2, with 2x2
//! max pooling after the first two and global average pooling + linear at the end. Prints the
//! profiler's forward and backward ms per training step of each op.
//!
//! `MNIST_CNN_SIMD=avx512 cargo run --release --example bn_pool_timing -- [steps] [--fused]`
//! (`--fused`: `BatchNorm2d::forward_relu` instead of `relu(bn.forward(..))`). Batch 128.

use mnist_cnn::Tensor;
use mnist_cnn::nn::{BatchNorm2d, BatchNorm2dConfig, Conv2d, Conv2dConfig, Linear, LinearConfig, Module};
use mnist_cnn::ops::{adaptive_avg_pool2d, cross_entropy, flatten, max_pool2d, relu};
use mnist_cnn::profile;
use mnist_cnn::rng::Rng;

struct Net {
    convs: Vec<(Conv2d, BatchNorm2d)>,
    fc: Linear,
}

impl Net {
    fn new(rng: &mut Rng) -> Net {
        let spec = [(1, 16, 1), (16, 32, 1), (32, 64, 1), (64, 64, 2)];
        let convs = spec
            .iter()
            .map(|&(i, o, s)| {
                let conv = Conv2dConfig::new(i, o, 3)
                    .with_padding(1)
                    .with_stride(s)
                    .with_bias(false)
                    .init(rng);
                (conv, BatchNorm2dConfig::new(o).init())
            })
            .collect();
        Net {
            convs,
            fc: LinearConfig::new(64, 10).init(rng),
        }
    }

    fn forward(&self, x: &Tensor, fused: bool) -> Tensor {
        let mut x = x.clone();
        for (k, (conv, bn)) in self.convs.iter().enumerate() {
            let c = conv.forward(&x);
            x = if fused {
                bn.forward_relu(&c)
            } else {
                relu(&bn.forward(&c))
            };
            if k < 2 {
                x = max_pool2d(&x, 2, 2, 0);
            }
        }
        self.fc.forward(&flatten(&adaptive_avg_pool2d(&x, (1, 1)), 1, -1))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let steps: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(30);
    let fused = args.iter().any(|a| a == "--fused");
    let bs = 128;
    let mut rng = Rng::new(0);
    let net = Net::new(&mut rng);
    let x = Tensor::randn(&[bs, 1, 28, 28], &mut rng);
    let y: Vec<usize> = (0..bs).map(|i| i % 10).collect();
    let step = || {
        let loss = cross_entropy(&net.forward(&x, fused), &y);
        loss.backward();
    };
    for _ in 0..5 {
        step(); // warm-up
    }
    profile::enable();
    let t0 = std::time::Instant::now();
    for _ in 0..steps {
        step();
    }
    let total = t0.elapsed().as_secs_f64() * 1e3 / steps as f64;
    println!(
        "backend {}, {} threads, batch {bs}, {steps} steps, fused={fused}: {total:.2} ms per step",
        mnist_cnn::ops::simd::backend_name(),
        rayon::current_num_threads()
    );
    println!("| op | forward ms | backward ms |\n|---|---|---|");
    for t in profile::take() {
        let per = |d: std::time::Duration| d.as_secs_f64() * 1e3 / steps as f64;
        println!("| {} | {:.3} | {:.3} |", t.name, per(t.forward), per(t.backward));
    }
}
