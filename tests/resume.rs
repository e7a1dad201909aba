//! A run stopped mid-epoch and resumed from its training checkpoint ends with the same bits as
//! one that was never stopped, with AdamW, a one-cycle schedule, batch norm and dropout: the
//! optimizer's state, the buffers, the dropout generator and the schedule's position all
//! survive the checkpoint.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mnist_cnn::checkpoint::{load_training_checkpoint, position, save_training_checkpoint};
use mnist_cnn::data::{DataLoader, Format, Mnist, load_mnist};
use mnist_cnn::nn::{
    BatchNorm2dConfig, Conv2dConfig, DropoutConfig, Flatten, Lambda, LinearConfig, MaxPool2d, Module, ReLU, Sequential,
};
use mnist_cnn::ops::reshape;
use mnist_cnn::optim::{AdamWConfig, Optimizer, Schedule, ScheduleSpec};
use mnist_cnn::rng::Rng;
use mnist_cnn::train::{EpochStats, FitEnd, LOSS_FUNC, Observer, Position, fit_from};

fn model(seed: u64) -> Sequential {
    let rng = &mut Rng::new(seed);
    Sequential::new()
        .append(Lambda::new(|x| reshape(x, &[None, Some(1), Some(28), Some(28)])))
        .append(Conv2dConfig::new(1, 8, 3).with_stride(2).with_padding(1).init(rng))
        .append(BatchNorm2dConfig::new(8).init())
        .append(ReLU)
        .append(MaxPool2d::new(2))
        .append(Flatten::default())
        .append(DropoutConfig::new(0.3).init(rng))
        .append(LinearConfig::new(8 * 7 * 7, 10).init(rng))
}

/// Stops after `at` batches of the second epoch (or never).
struct StopAt(Option<usize>);

impl Observer for StopAt {
    fn batch_end(&mut self, pos: &Position, _loss: f32) -> bool {
        !(pos.epoch == 1 && Some(pos.batch) == self.0)
    }
    fn epoch_end(&mut self, _: &EpochStats, _: &dyn Optimizer) -> mnist_cnn::Result<()> {
        Ok(())
    }
}

fn setup(data: &Mnist) -> (Sequential, Box<dyn Optimizer>, Schedule, DataLoader, DataLoader) {
    let m = model(5);
    let opt = AdamWConfig::new()
        .with_lr(0.01)
        .with_weight_decay(0.05)
        .init(m.parameters());
    let train = DataLoader::new(data.train.subset(0..1280), 64, true, 5);
    let valid = DataLoader::new(data.valid.subset(0..256), 128, false, 0);
    let schedule = "onecycle"
        .parse::<ScheduleSpec>()
        .unwrap()
        .build(0.01, 3 * train.len(), train.len());
    (m, Box::new(opt), schedule, train, valid)
}

fn state(m: &Sequential) -> Vec<(String, Vec<f32>)> {
    m.named_parameters()
        .into_iter()
        .chain(m.named_buffers())
        .map(|(n, t)| (n, t.to_vec()))
        .collect()
}

#[test]
fn resumed_adamw_onecycle_dropout_batchnorm_run_is_bit_identical() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let data = load_mnist(&root.join("data/mnist"), Format::Idx).unwrap();

    // Uninterrupted: 3 epochs.
    let (m, mut opt, sched, train, valid) = setup(&data);
    let end = fit_from(
        Position::default(),
        3,
        &m,
        LOSS_FUNC,
        opt.as_mut(),
        Some(&sched),
        &train,
        &valid,
        &mut StopAt(None),
    )
    .unwrap();
    assert!(matches!(end, FitEnd::Finished(ref h) if h.len() == 3));
    let want = state(&m);
    let want_lr = opt.lr();

    // Stopped after 7 batches of epoch 2, checkpointed, and resumed in a fresh process's worth
    // of objects (another initial seed, so nothing is shared by accident).
    let (m, mut opt, sched, train, valid) = setup(&data);
    let end = fit_from(
        Position::default(),
        3,
        &m,
        LOSS_FUNC,
        opt.as_mut(),
        Some(&sched),
        &train,
        &valid,
        &mut StopAt(Some(7)),
    )
    .unwrap();
    let FitEnd::Stopped { at, .. } = end else {
        panic!("did not stop")
    };
    assert_eq!((at.epoch, at.batch), (1, 7));
    let dir = std::env::temp_dir().join(format!("mnist-cnn-resume-{}", std::process::id()));
    let path = save_training_checkpoint(&dir, &m, "sequential", opt.as_ref(), &at, &BTreeMap::new()).unwrap();

    let m2 = model(77);
    let mut opt2: Box<dyn Optimizer> = Box::new(
        AdamWConfig::new()
            .with_lr(0.01)
            .with_weight_decay(0.05)
            .init(m2.parameters()),
    );
    let meta = load_training_checkpoint(&path, &m2, opt2.as_mut()).unwrap();
    let pos = position(&meta).unwrap();
    assert_eq!(pos, at);
    assert!(
        meta.keys().any(|k| k.starts_with("rng.")),
        "the dropout generator is saved: {meta:?}"
    );
    fit_from(
        pos,
        3,
        &m2,
        LOSS_FUNC,
        opt2.as_mut(),
        Some(&sched),
        &train,
        &valid,
        &mut StopAt(None),
    )
    .unwrap();
    let got = state(&m2);
    for ((n, a), (_, b)) in want.iter().zip(&got) {
        assert_eq!(a, b, "{n} differs after resuming");
    }
    assert_eq!(opt2.lr(), want_lr);
    std::fs::remove_dir_all(&dir).unwrap();

    // A checkpoint of another optimizer is refused by name.
    let m3 = model(5);
    let mut sgd = mnist_cnn::optim::SgdConfig::new(0.1).init(m3.parameters());
    let _ = std::fs::create_dir_all(&dir);
    let p = save_training_checkpoint(&dir, &m, "sequential", opt.as_ref(), &at, &BTreeMap::new()).unwrap();
    let e = load_training_checkpoint(&p, &m3, &mut sgd).unwrap_err().to_string();
    assert!(e.contains("holds adamw's state, but this run uses sgd"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
