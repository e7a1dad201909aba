//! Time to decode and prepare one uploaded image as `serve` and `predict` do (decode, then the
//! preprocessing of `predict::preprocess`), in microseconds: the best of 5 rounds, and the
//! decode alone. For the preparation's speed (issue 12's PNG uploads); run it under `perf` to
//! see which step costs what.
//!
//! `cargo run --release --example prep_timing -- [IMAGE] [COUNT]` (defaults: the load test's
//! pen-drawn 7, tests/fixtures/user_style/pen_7_07.png, and 20,000 preparations in all). One
//! thread. The preparation is plain Rust, compiled for the target's baseline (SSE2 on x86-64):
//! no SIMD backend applies to it, so `MNIST_CNN_SIMD` changes nothing here.
//!
//! Before timing, a 16 MiB buffer is allocated and freed, as a long-running `serve` has done by
//! then (its model file, its batches): glibc's malloc then raises its thresholds for handing
//! memory back to the kernel, so the preparations reuse the heap. Without it, a fresh process
//! returns its freed planes to the kernel after every preparation and faults them back in on
//! the next (for the larger images, a third of the time), which `serve` does not pay.

use mnist_cnn::predict::{PreprocessConfig, decode_image, preprocess_decoded};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or("tests/fixtures/user_style/pen_7_07.png".into());
    let count: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(20_000).max(5);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let cfg = PreprocessConfig::default();
    drop(std::hint::black_box(vec![1u8; 16 << 20]));
    let round = count / 5;
    // Seconds per image of `f`, the best of 5 rounds.
    let best = |f: &dyn Fn()| {
        (0..5)
            .map(|_| {
                let t = Instant::now();
                (0..round).for_each(|_| f());
                t.elapsed().as_secs_f64() / round as f64
            })
            .fold(f64::MAX, f64::min)
    };
    let prepare = best(&|| {
        let img = decode_image(&bytes).expect("a readable image");
        std::hint::black_box(preprocess_decoded(&img, cfg).expect("a digit"));
    });
    let decode = best(&|| {
        std::hint::black_box(decode_image(&bytes).expect("a readable image"));
    });
    println!(
        "{path}: decode + prepare {:.1} us, decode {:.1} us (best of 5 rounds of {round})",
        prepare * 1e6,
        decode * 1e6
    );
}
