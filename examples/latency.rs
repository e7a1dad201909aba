// Temporary: single-image inference loop for profiling.
use mnist_cnn::nn::{Architecture, Module};
use mnist_cnn::rng::Rng;
use mnist_cnn::tensor::{Tensor, no_grad};
use std::time::Instant;
fn main() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    pool.install(|| {
        let m = Architecture::Cnn.build(&mut Rng::new(0));
        m.set_training(false);
        let x: Vec<f32> = (0..784).map(|i| (i % 7) as f32 / 7.0).collect();
        let mut t = vec![];
        no_grad(|| {
            for _ in 0..50000 {
                let xb = Tensor::from_vec(x.clone(), &[1, 784]);
                let t0 = Instant::now();
                std::hint::black_box(m.forward(&xb));
                t.push(t0.elapsed().as_secs_f64() * 1e6);
            }
        });
        t.sort_by(f64::total_cmp);
        println!("median {:.2} us", t[t.len() / 2]);
    });
}
