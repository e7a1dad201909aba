// Temporary experiment: back-to-back conv2d_relu forward+backward, 1 vs 2 threads.
use mnist_cnn::ops::conv2d_relu;
use mnist_cnn::tensor::Tensor;
use std::time::Instant;

fn main() {
    for threads in [1, 2, 1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            for (c, h, oc) in [(1usize, 28usize, 16usize), (16, 14, 16), (16, 7, 10)] {
                let x = Tensor::from_op_channels_last(vec![0.5; 64 * c * h * h], &[64, c, h, h], "x", vec![Tensor::parameter(vec![0.0], &[1])], Box::new(|_, _, _| vec![None]));
                let w = Tensor::parameter((0..oc * c * 9).map(|i| (i as f32).sin()).collect(), &[oc, c, 3, 3]);
                let b = Tensor::parameter(vec![0.1; oc], &[oc]);
                let mut fwd = vec![];
                let mut bwd = vec![];
                for _ in 0..300 {
                    let t0 = Instant::now();
                    let y = conv2d_relu(&x, &w, Some(&b), 2, 1);
                    let t1 = Instant::now();
                    y.backward_with(vec![1.0; y.numel()]);
                    let t2 = Instant::now();
                    fwd.push((t1 - t0).as_secs_f64() * 1e6);
                    bwd.push((t2 - t1).as_secs_f64() * 1e6);
                    w.zero_grad();
                    b.zero_grad();
                }
                fwd.sort_by(f64::total_cmp);
                bwd.sort_by(f64::total_cmp);
                println!("threads {threads} conv {c}x{h}->{oc}: fwd median {:.1} us, bwd median {:.1} us", fwd[150], bwd[150]);
            }
        });
    }
}
