//! Time to read the JSON body of one prepared image as `serve` reads it
//! (`serve::api::parse_pixels`), in microseconds, best of 5 rounds: the body the load test
//! sends, `{"pixels": [...]}` of MNIST's first test image as serde_json writes it (3,870 bytes,
//! mostly `0.0`).
//!
//! `cargo run --release --example json_timing -- [COUNT]` (default 20,000 reads a round). One
//! thread; needs data/mnist.

use std::time::Instant;

#[path = "common/pixels_body.rs"]
mod pixels_body;

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000)
        .max(1);
    let body = pixels_body::mnist_pixels_json();
    let best = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..count {
                std::hint::black_box(mnist_cnn::serve::api::parse_pixels(&body).expect("valid pixels"));
            }
            t.elapsed().as_secs_f64() / count as f64
        })
        .fold(f64::MAX, f64::min);
    println!(
        "parse_pixels of a {}-byte body: {:.2} us (best of 5 rounds of {count})",
        body.len(),
        best * 1e6
    );
}
