//! Training end to end on a subset of the bundled MNIST: the loss falls below what an
//! untrained model can reach, and the numbers are bit-identical with 1 and 2 threads.

use std::path::PathBuf;

use mnist_cnn::data::{DataLoader, Format, Mnist, load_mnist};
use mnist_cnn::nn::models;
use mnist_cnn::ops::simd::{on_each_backend, with_backend};
use mnist_cnn::optim::SgdConfig;
use mnist_cnn::rng::Rng;
use mnist_cnn::train::{EpochStats, LOSS_FUNC, evaluate, fit};

fn mnist() -> Mnist {
    load_mnist(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist"),
        Format::Idx,
    )
    .unwrap()
}

/// Trains `arch` on the first `n` training images for `epochs`, validating on 1,000 images.
/// Returns the per-epoch stats and the final parameters.
fn run(
    data: &Mnist,
    arch: &str,
    lr: f32,
    momentum: f32,
    n: usize,
    epochs: usize,
    seed: u64,
) -> (Vec<EpochStats>, Vec<Vec<f32>>) {
    let model = models::find(arch).unwrap().build(&mut Rng::new(seed));
    let mut opt = SgdConfig::new(lr).with_momentum(momentum).init(model.parameters());
    let train = DataLoader::new(data.train.subset(0..n), 64, true, seed);
    let valid = DataLoader::new(data.valid.subset(0..1000), 128, false, 0);
    let hist = fit(
        0..epochs,
        model.as_ref(),
        LOSS_FUNC,
        &mut opt,
        &train,
        &valid,
        |_, _| Ok(()),
    )
    .unwrap();
    (hist, model.parameters().iter().map(|p| p.to_vec()).collect())
}

#[test]
fn cnn_learns_on_a_subset() {
    let data = mnist();
    let model = models::find("cnn").unwrap().build(&mut Rng::new(3));
    let before = evaluate(
        model.as_ref(),
        LOSS_FUNC,
        &DataLoader::new(data.valid.subset(0..1000), 128, false, 0),
    );
    // An untrained model is near log(10) = 2.30; chance accuracy is about 10%.
    assert!(before.loss > 2.0, "untrained loss {}", before.loss);
    let (hist, _) = run(&data, "cnn", 0.1, 0.9, 10_000, 2, 3);
    let last = hist.last().unwrap();
    assert!(
        last.valid.loss < 1.0,
        "validation loss after training: {}",
        last.valid.loss
    );
    assert!(
        last.valid.accuracy > 0.6,
        "validation accuracy after training: {}",
        last.valid.accuracy
    );
    assert!(last.train_loss < hist[0].train_loss, "training loss fell: {hist:?}");
}

#[test]
fn logistic_model_learns_with_plain_sgd() {
    let data = mnist();
    let (hist, _) = run(&data, "logistic", 0.5, 0.0, 50_000, 1, 0);
    assert!(hist[0].valid.loss < 0.6, "validation loss {}", hist[0].valid.loss);
    assert!(
        hist[0].valid.accuracy > 0.8,
        "validation accuracy {}",
        hist[0].valid.accuracy
    );
}

#[test]
fn same_seed_gives_bit_identical_results_with_1_and_2_threads() {
    let data = mnist();
    on_each_backend("1 vs 2 threads", |b| {
        let on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            // The backend is forced per thread: again on the pool's thread that runs this.
            pool.install(|| with_backend(b, || run(&data, "cnn", 0.1, 0.9, 2000, 2, 11)).unwrap())
        };
        let (h1, p1) = on(1);
        let (h2, p2) = on(2);
        let bits = |p: &[Vec<f32>]| p.iter().flatten().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&p1), bits(&p2), "{b}: weights differ between 1 and 2 threads");
        for (a, c) in h1.iter().zip(&h2) {
            assert_eq!(a.train_loss.to_bits(), c.train_loss.to_bits(), "{b}");
            assert_eq!(a.valid.loss.to_bits(), c.valid.loss.to_bits(), "{b}");
        }
        // And a different seed gives different weights (the test can fail).
        let (_, p3) = run(&data, "cnn", 0.1, 0.9, 2000, 1, 12);
        assert_ne!(bits(&p1), bits(&p3));
    });
}
