//! Gradient accuracy, end to end: the first batch's gradients, and from PyTorch's initial
//! weights 80 SGD steps (the first 5,120
//! training images in file order, batch 64, lr 0.1, momentum 0.9) on every SIMD backend this
//! machine has, compared with PyTorch's float64 run of the same steps. Momentum at lr 0.1
//! amplifies rounding, so this checks that the kernels' sums are as exact as float32 allows:
//! PyTorch's own float32 run ends 2.1e-7 from its float64 one (the fixture's metadata).
//! Fixture: tests/fixtures/torch_80_steps.safetensors, written by scripts/torch_80_steps.py.

use mnist_cnn::data::{DataLoader, Format, load_mnist};
use mnist_cnn::ops::simd::{Backend, on_each_backend};
use mnist_cnn::train::LOSS_FUNC;
use safetensors::SafeTensors;

#[path = "common/safetensors_f64.rs"]
mod safetensors_f64;
use safetensors_f64::values;
#[path = "common/eighty_steps.rs"]
mod eighty_steps;
use eighty_steps::{STEPS, fixture, model_at_init, root, train};

const TOLERANCE: f64 = 2e-6;

/// The gradients of the first batch from PyTorch's initial weights, on every backend, against
/// PyTorch's float64 ones: each tensor's largest error, relative to its largest gradient, is
/// no larger than PyTorch float32's (0.7e-6 to 3.3e-6, in the fixture's metadata).
#[test]
fn first_batch_gradients_are_as_accurate_as_pytorch_float32() {
    let bytes = fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let data = load_mnist(&root().join("data/mnist"), Format::Idx).unwrap();
    let dl = DataLoader::new(data.train.subset(0..64), 64, false, 0);
    let mut worst = Vec::new();
    on_each_backend("first-batch gradients vs PyTorch float64", |b| {
        let model = model_at_init(&st, |v| v);
        let batch = dl.epoch(0).next().unwrap();
        LOSS_FUNC(&model.forward(&batch.x), &batch.y).backward();
        let mut line = String::new();
        for (name, p) in model.named_parameters() {
            let want = values(&st, &format!("grad64.{name}"));
            let largest = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let err = p
                .grad()
                .unwrap()
                .iter()
                .zip(&want)
                .fold(0.0f64, |m, (&g, w)| m.max((g as f64 - w).abs()));
            let torch32: f64 = meta[&format!("float32_grad_rel_err.{name}")].parse().unwrap();
            line += &format!(" {name} {:.2e} (torch f32 {torch32:.2e})", err / largest);
            worst.push((b, name, err / largest, torch32));
        }
        eprintln!("{b}: gradient error / largest gradient:{line}");
    });
    for (b, name, rel, torch32) in worst {
        assert!(
            rel <= torch32,
            "{b} {name}: {rel:.3e} > PyTorch float32's {torch32:.3e}"
        );
    }
}

/// Trains from the fixture's initial weights on the active backend; after every 10 steps, the
/// largest distance of any weight from PyTorch's float64 weights at that step. Also how far
/// the weights moved in all. (The result is the same for any thread count: tests/training.rs
/// checks that on every backend.)
fn deviations(st: &SafeTensors) -> (Vec<(usize, f64)>, f64) {
    let distance = |model: &dyn mnist_cnn::nn::Module, prefix: &str| -> f64 {
        let mut dev = 0.0f64;
        for (name, p) in model.named_parameters() {
            let want = values(st, &format!("{prefix}.{name}"));
            for (&got, w) in p.to_vec().iter().zip(&want) {
                dev = dev.max((got as f64 - w).abs());
            }
        }
        dev
    };
    let model = model_at_init(st, |v| v);
    let mut out = Vec::new();
    train(model.as_ref(), |steps, model| {
        if steps % 10 == 0 {
            let prefix = if steps == STEPS {
                "f64".to_string()
            } else {
                format!("f64.step{steps}")
            };
            out.push((steps, distance(model, &prefix)));
        }
    });
    let mut moved = 0.0f64;
    for (name, _) in model.named_parameters() {
        let (w, i) = (values(st, &format!("f64.{name}")), values(st, &format!("init.{name}")));
        moved = w.iter().zip(&i).fold(moved, |m, (a, b)| m.max((a - b).abs()));
    }
    (out, moved)
}

/// Up to step 72 every backend stays within 2e-6 of PyTorch's float64 run (here 2.1e-7 at
/// most; PyTorch float32: 2.4e-7). Step 73 passes a ReLU whose input is within float32's
/// reach of zero: in that step's batch, image 51's conv2 channel 15 at pixel (3, 3) has the
/// pre-activation -6.0e-9 with the float64 run's weights, +7.3e-8 with this crate's step-72
/// weights (evaluated in float64) and -5.6e-8 with PyTorch float32's. Both float32 runs have
/// moved it by 5-8e-8 after 72 steps of rounding, ten times its distance from zero; this one
/// ends on the other side, so that unit's gradient joins conv2 channel 15's weights and the
/// momentum carries the difference to 1.07e-5 by step 80. PyTorch float32 itself ends there
/// too for one of six one-ulp nudges of its initial weights. Step 80 is therefore held to
/// 1.2e-5, not 2e-6: no float32 run can be sure of the side.
#[test]
fn eighty_steps_from_pytorch_weights_track_pytorch_float64() {
    let bytes = fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut results = Vec::new();
    let missing = on_each_backend("80 steps vs PyTorch float64", |b| {
        let (devs, moved) = deviations(&st);
        let list: Vec<String> = devs.iter().map(|(s, d)| format!("{s}: {d:.2e}")).collect();
        eprintln!("{b}: max |w - w_torch_f64| after steps {}", list.join(", "));
        // The weights move (the comparison means something).
        assert!(moved > 0.05, "{b}: weights moved {moved}");
        results.push((b, devs));
    });
    eprintln!("not available on this machine: {missing:?}");
    for (b, devs) in &results {
        for &(step, dev) in devs {
            let tolerance = if step < STEPS { TOLERANCE } else { 1.2e-5 };
            assert!(
                dev <= tolerance,
                "{b}: {dev:.3e} > {tolerance:e} from PyTorch float64 after {step} steps"
            );
        }
    }
    assert!(results.iter().any(|(b, _)| *b == Backend::Portable));
}
