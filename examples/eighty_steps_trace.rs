//! The 80-step accuracy test's run (tests/accuracy.rs: PyTorch's initial weights, 80 SGD steps,
//! lr 0.1, momentum 0.9, the first 5,120 training images in file order), traced step by step
//! against PyTorch's float64 and float32 runs, to find where step 80's distance comes from.
//!
//! 1. `python3 scripts/torch_80_steps_trace.py trace DIR` (PyTorch's weights after every step)
//! 2. `cargo run --release --example eighty_steps_trace -- DIR [NUDGES]`: prints this crate's
//!    distance from float64 (and PyTorch float32's) after every step, with the parameters
//!    furthest off at the first step past 1e-6; writes DIR/ours72.bin (the weights after 72
//!    steps) for `torch_80_steps_trace.py unit DIR`; then NUDGES runs (default 0) from the
//!    initial weights nudged by one ulp (each weight up with probability 1/2), step 80 only.
//!
//! The backend is the best this CPU has, or `MNIST_CNN_SIMD`.

use mnist_cnn::nn::Module;
use mnist_cnn::rng::Rng;
use safetensors::SafeTensors;
use std::path::PathBuf;

#[path = "../tests/common/eighty_steps.rs"]
mod eighty_steps;
#[path = "../tests/common/safetensors_f64.rs"]
mod safetensors_f64;
use eighty_steps::{STEPS, fixture, model_at_init, train};

fn read_f64(path: &PathBuf) -> Vec<f64> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e} (run the trace script first)", path.display()));
    bytes
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// All parameters, flattened in `named_parameters` order, as f64.
fn flat(model: &dyn Module) -> Vec<f64> {
    model
        .parameters()
        .iter()
        .flat_map(|p| p.to_vec())
        .map(f64::from)
        .collect()
}

/// The largest |a - b| over the values.
fn max_distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Trains from the fixture's initial weights (each nudged one ulp up with probability 1/2 when
/// `nudge` has a seed), calling `each(step, weights)` after every step.
fn run(st: &SafeTensors, nudge: Option<u64>, each: impl FnMut(usize, &dyn Module)) {
    let mut rng = Rng::new(nudge.unwrap_or(0));
    let model = model_at_init(st, |v| {
        if nudge.is_some() && rng.next_f32() < 0.5 {
            v.next_up()
        } else {
            v
        }
    });
    train(model.as_ref(), each);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(args.first().expect("usage: eighty_steps_trace DIR [NUDGES]"));
    let nudges: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(0);
    let bytes = fixture();
    let st = SafeTensors::deserialize(&bytes).expect("the fixture");
    let (r64, r32) = (
        read_f64(&dir.join("steps_f64.bin")),
        read_f64(&dir.join("steps_f32.bin")),
    );
    let np = r64.len() / STEPS;
    println!(
        "SIMD {}; max |w - w_f64| after each step",
        mnist_cnn::ops::simd::backend_name()
    );
    let mut shown = false;
    run(&st, None, |step, model| {
        let ours = flat(model);
        let (f64s, f32s) = (&r64[(step - 1) * np..step * np], &r32[(step - 1) * np..step * np]);
        let d = max_distance(&ours, f64s);
        println!(
            "step {step:2}: this crate {d:.3e}, PyTorch float32 {:.3e}",
            max_distance(f32s, f64s)
        );
        if d > 1e-6 && !shown {
            shown = true;
            let mut off: Vec<(f64, usize)> = ours.iter().zip(f64s).map(|(x, y)| (x - y).abs()).zip(0..).collect();
            off.sort_by(|a, b| b.0.total_cmp(&a.0));
            for (d, j) in &off[..8] {
                println!(
                    "    parameter {j}: this crate {:.9e}, float64 {:.9e} ({d:.3e})",
                    ours[*j], f64s[*j]
                );
            }
        }
        if step == 72 {
            let b: Vec<u8> = ours.iter().flat_map(|v| v.to_le_bytes()).collect();
            std::fs::write(dir.join("ours72.bin"), b).expect("write ours72.bin");
        }
    });
    for seed in 1..=nudges {
        let mut last = 0.0;
        run(&st, Some(seed), |step, model| {
            if step == STEPS {
                last = max_distance(&flat(model), &r64[(STEPS - 1) * np..]);
            }
        });
        println!("nudge {seed}: step 80, max |w - w_f64| = {last:.3e}");
    }
}
