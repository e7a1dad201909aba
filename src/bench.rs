//! `mnist-cnn bench`: training and inference speed of a model, per-layer times, achieved
//! GFLOP/s and peak memory, measured on the real MNIST data with the tutorial's settings.

use std::time::Instant;

use crate::data::{AugmentConfig, DataLoader, Mnist};
use crate::nn::Module;
use crate::nn::models::ModelSpec;
use crate::optim::Optimizer;
use crate::profile::{self, OpTime, Phase};
use crate::rng::Rng;
use crate::tensor::no_grad;
use crate::train::{LOSS_FUNC, evaluate, loss_batch};

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub model: &'static ModelSpec,
    pub batch_size: usize,
    /// Timed training epochs (each from a fresh model); the median is reported.
    pub repeats: usize,
    /// Batches run with the profiler on, for the per-layer table.
    pub profile_batches: usize,
    /// Single-image forwards timed for the batch-1 latency.
    pub latency_images: usize,
    /// Augmentation of the training batches (timed epochs and profiled steps), if any.
    pub augment: Option<AugmentConfig>,
}

/// Time of one op per training batch, in milliseconds.
#[derive(Clone, Debug)]
pub struct LayerTime {
    pub name: String,
    pub forward_ms: f64,
    pub backward_ms: f64,
}

/// Everything `bench` measures.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub model: String,
    pub threads: usize,
    pub simd: &'static str,
    pub batch_size: usize,
    pub train_samples: usize,
    /// Median over the repeats; also each repeat's value.
    pub train_samples_per_sec: f64,
    pub train_samples_per_sec_all: Vec<f64>,
    /// Training plus validation, median.
    pub epoch_seconds: f64,
    pub infer_batch1000_images_per_sec: f64,
    pub infer_batch1_us_median: f64,
    pub train_flop_per_sample: f64,
    pub infer_flop_per_sample: f64,
    pub train_gflops: f64,
    pub peak_rss_mb: f64,
    /// Per-op times of the profiled training steps, with the batch loading (forward column) and
    /// the optimizer step (backward column) as rows of their own.
    pub layers: Vec<LayerTime>,
    /// Wall time of a whole profiled training step (ms per batch); what the rows above leave
    /// out of it is graph bookkeeping and allocation.
    pub step_ms: f64,
    /// The training batches' augmentation, if any.
    pub augment: Option<AugmentConfig>,
    /// With augmentation: wall time of making an augmented training batch in the profiled steps
    /// (ms per batch; it replaces the plain u8-to-f32 conversion, which it includes).
    pub augment_ms_per_batch: Option<f64>,
    /// With augmentation: that time as a fraction of the whole step ([`step_ms`](Self::step_ms)).
    pub augment_share_of_step: Option<f64>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Peak resident memory of this process (VmHWM), in MB; NaN where /proc is unavailable.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// (forward, training step) floating-point operations per image: the model's forward FLOPs
/// (2 per multiply-add, from the registry), and three times that for a training step (the
/// backward computes both dW and dx, each about one forward).
pub fn flops_per_sample(model: &ModelSpec) -> (f64, f64) {
    let fwd = model.flops as f64;
    (fwd, 3.0 * fwd)
}

/// A fresh model and its recipe's optimizer (the schedule is left out: it does not change the
/// speed).
fn new_model(cfg: &BenchConfig) -> (Box<dyn Module>, Box<dyn Optimizer>) {
    let model = cfg.model.build(&mut Rng::new(0));
    let r = &cfg.model.recipe;
    let opt = r.optimizer.build(model.parameters(), r.lr, r.momentum, r.weight_decay);
    (model, opt)
}

/// Runs the benchmark on the current rayon pool.
pub fn run(cfg: &BenchConfig, data: &Mnist) -> BenchReport {
    let mut train_dl = DataLoader::new(data.train.clone(), cfg.batch_size, true, 0);
    if let Some(a) = cfg.augment {
        train_dl = train_dl.with_augment(a);
    }
    let valid_dl = DataLoader::new(data.valid.clone(), cfg.batch_size * 2, false, 0);
    let mut rates = Vec::new();
    let mut epochs = Vec::new();
    let mut trained = None;
    for _ in 0..cfg.repeats.max(1) {
        let (model, mut opt) = new_model(cfg);
        let t0 = Instant::now();
        for b in train_dl.epoch(0) {
            loss_batch(model.as_ref(), LOSS_FUNC, &b.x, &b.y, Some(opt.as_mut()));
        }
        let train_s = t0.elapsed().as_secs_f64();
        evaluate(model.as_ref(), LOSS_FUNC, &valid_dl);
        epochs.push(t0.elapsed().as_secs_f64());
        rates.push(data.train.len() as f64 / train_s);
        trained = Some(model);
    }
    let model = trained.expect("at least one repeat");

    // Per-layer profile, on a fresh model so the numbers are those of training.
    // The batch loading is timed here; loss_batch times the optimizer step.
    let (layers, step_ms, load_ms) = {
        let (pmodel, mut popt) = new_model(cfg);
        profile::enable();
        let mut n = 0;
        let mut batches = train_dl.epoch(1);
        let mut load_time = std::time::Duration::ZERO;
        let t0 = Instant::now();
        while n < cfg.profile_batches.max(1) {
            let load = || {
                let t = Instant::now();
                let b = batches.next();
                load_time += t.elapsed();
                b
            };
            let Some(b) = profile::time(|| format!("data: batch {}", cfg.batch_size), Phase::Forward, load) else {
                break;
            };
            loss_batch(pmodel.as_ref(), LOSS_FUNC, &b.x, &b.y, Some(popt.as_mut()));
            n += 1;
        }
        let step_ms = t0.elapsed().as_secs_f64() * 1e3 / n.max(1) as f64;
        let per = |d: std::time::Duration| d.as_secs_f64() * 1e3 / n.max(1) as f64;
        let layers = profile::take()
            .into_iter()
            .map(
                |OpTime {
                     name,
                     forward,
                     backward,
                     ..
                 }| LayerTime {
                    name,
                    forward_ms: per(forward),
                    backward_ms: per(backward),
                },
            )
            .collect::<Vec<_>>();
        (layers, step_ms, per(load_time))
    };

    // Inference, batch 1000, over the validation images.
    model.set_training(false);
    // Each batch is assembled outside the timed region, one at a time (holding all ten would
    // add 31 MB to the peak memory this command reports).
    let dl1000 = DataLoader::new(data.valid.clone(), 1000, false, 0);
    let mut inf = Vec::new();
    no_grad(|| {
        for _ in 0..3 {
            let mut elapsed = std::time::Duration::ZERO;
            for b in dl1000.epoch(0) {
                let t0 = Instant::now();
                model.forward(&b.x);
                elapsed += t0.elapsed();
            }
            inf.push(data.valid.len() as f64 / elapsed.as_secs_f64());
        }
    });

    // Batch-1 latency: each single-image forward timed on its own.
    let singles: Vec<_> = DataLoader::new(
        data.valid.subset(0..cfg.latency_images.min(data.valid.len())),
        1,
        false,
        0,
    )
    .epoch(0)
    .collect();
    let mut lat = Vec::with_capacity(singles.len());
    no_grad(|| {
        for b in singles.iter().take(20) {
            model.forward(&b.x); // warm-up
        }
        for b in &singles {
            let t0 = Instant::now();
            model.forward(&b.x);
            lat.push(t0.elapsed().as_secs_f64() * 1e6);
        }
    });

    let (infer_flop, train_flop) = flops_per_sample(cfg.model);
    let train_rate = median(&mut rates.clone());
    BenchReport {
        model: cfg.model.to_string(),
        threads: rayon::current_num_threads(),
        simd: crate::ops::simd::backend_name(),
        batch_size: cfg.batch_size,
        train_samples: data.train.len(),
        train_samples_per_sec: train_rate,
        train_samples_per_sec_all: rates,
        epoch_seconds: median(&mut epochs),
        infer_batch1000_images_per_sec: median(&mut inf),
        infer_batch1_us_median: median(&mut lat),
        train_flop_per_sample: train_flop,
        infer_flop_per_sample: infer_flop,
        train_gflops: train_flop * train_rate / 1e9,
        peak_rss_mb: peak_rss_mb(),
        layers,
        step_ms,
        augment: cfg.augment,
        augment_ms_per_batch: cfg.augment.map(|_| load_ms),
        augment_share_of_step: cfg.augment.map(|_| load_ms / step_ms),
    }
}

impl BenchReport {
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "bench: model {}, batch {}, {} threads, SIMD {}\n\
             training        {:>10.0} samples/s  (median of {}: {})\n\
             epoch           {:>10.3} s          ({} training images + validation)\n\
             inference b1000 {:>10.0} images/s\n\
             inference b1    {:>10.1} us/image   (median)\n\
             training        {:>10.2} GFLOP/s    ({:.3} MFLOP per sample)\n\
             peak RSS        {:>10.1} MB\n",
            self.model,
            self.batch_size,
            self.threads,
            self.simd,
            self.train_samples_per_sec,
            self.train_samples_per_sec_all.len(),
            self.train_samples_per_sec_all
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.epoch_seconds,
            self.train_samples,
            self.infer_batch1000_images_per_sec,
            self.infer_batch1_us_median,
            self.train_gflops,
            self.train_flop_per_sample / 1e6,
            self.peak_rss_mb,
        );
        if let (Some(a), Some(ms), Some(share)) = (self.augment, self.augment_ms_per_batch, self.augment_share_of_step)
        {
            s.push_str(&format!(
                "augmentation    {ms:>10.3} ms/batch   ({:.1}% of the training step; {a})\n",
                100.0 * share
            ));
        }
        s.push_str("per layer, ms per training batch:\n");
        s.push_str(&format!("  {:<28} {:>9} {:>9}\n", "op", "forward", "backward"));
        for l in &self.layers {
            s.push_str(&format!(
                "  {:<28} {:>9.3} {:>9.3}\n",
                l.name, l.forward_ms, l.backward_ms
            ));
        }
        let (f, b): (f64, f64) = self
            .layers
            .iter()
            .fold((0.0, 0.0), |(f, b), l| (f + l.forward_ms, b + l.backward_ms));
        s.push_str(&format!("  {:<28} {:>9.3} {:>9.3}\n", "total of the rows", f, b));
        s.push_str(&format!(
            "  {:<28} {:>9.3}   (graph bookkeeping and allocation: {:.3})\n",
            "whole step (wall)",
            self.step_ms,
            self.step_ms - f - b
        ));
        s
    }

    pub fn to_json(&self) -> String {
        let n = |v: f64, d: i32| crate::log::finite(v, d);
        let layers: Vec<_> = self
            .layers
            .iter()
            .map(|l| serde_json::json!({"name": l.name, "forward_ms": n(l.forward_ms, 4), "backward_ms": n(l.backward_ms, 4)}))
            .collect();
        let mut v = serde_json::json!({
            "impl": "mnist-cnn",
            "model": self.model,
            "threads": self.threads,
            "simd": self.simd,
            "batch_size": self.batch_size,
            "train_samples": self.train_samples,
            "train_samples_per_sec": n(self.train_samples_per_sec, 1),
            "train_samples_per_sec_all": self.train_samples_per_sec_all.iter().map(|&r| n(r, 1)).collect::<Vec<_>>(),
            "epoch_seconds": n(self.epoch_seconds, 4),
            "infer_batch1000_images_per_sec": n(self.infer_batch1000_images_per_sec, 1),
            "infer_batch1_us_median": n(self.infer_batch1_us_median, 2),
            "train_flop_per_sample": n(self.train_flop_per_sample, 0),
            "infer_flop_per_sample": n(self.infer_flop_per_sample, 0),
            "train_gflops": n(self.train_gflops, 3),
            "peak_rss_mb": n(self.peak_rss_mb, 1),
            "layers": layers,
            "step_ms": n(self.step_ms, 4),
        });
        if let (Some(a), Some(ms), Some(share)) = (self.augment, self.augment_ms_per_batch, self.augment_share_of_step)
        {
            v["augment"] = a.to_string().into();
            v["augment_ms_per_batch"] = serde_json::json!(n(ms, 4));
            v["augment_share_of_step"] = serde_json::json!(n(share, 4));
        }
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flop_counts_of_the_tutorial_cnn() {
        // 164,160 multiply-adds and 4,080 bias additions forward; a training step three times
        // that (the exact count, without the first layer's unneeded dx, is 0.93 MFLOP).
        let (f, t) = flops_per_sample(crate::nn::models::find("cnn").unwrap());
        assert_eq!(f, 2.0 * 164_160.0 + 4_080.0);
        assert_eq!(t, 3.0 * f);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    fn report(augment: Option<AugmentConfig>) -> BenchReport {
        BenchReport {
            model: "cnn".into(),
            threads: 2,
            simd: "scalar",
            batch_size: 64,
            train_samples: 100,
            train_samples_per_sec: 1000.0,
            train_samples_per_sec_all: vec![1000.0],
            epoch_seconds: 0.2,
            infer_batch1000_images_per_sec: 5000.0,
            infer_batch1_us_median: 50.0,
            train_flop_per_sample: 1e6,
            infer_flop_per_sample: 3e5,
            train_gflops: 1.0,
            peak_rss_mb: 100.0,
            layers: vec![LayerTime {
                name: "data: batch 64".into(),
                forward_ms: 0.5,
                backward_ms: 0.0,
            }],
            step_ms: 4.0,
            augment,
            augment_ms_per_batch: augment.map(|_| 0.5),
            augment_share_of_step: augment.map(|_| 0.125),
        }
    }

    #[test]
    fn augmentation_share_is_reported_only_when_augmenting() {
        let plain = report(None);
        assert!(!plain.to_text().contains("augment"), "{}", plain.to_text());
        assert!(!plain.to_json().contains("augment"), "{}", plain.to_json());
        let cfg: AugmentConfig = "rotate=10,shift=2".parse().unwrap();
        let aug = report(Some(cfg));
        let text = aug.to_text();
        assert!(
            text.contains("augmentation         0.500 ms/batch   (12.5% of the training step; rotate=10,shift=2)"),
            "{text}"
        );
        // The rest of the table is the plain one, with the line added.
        assert_eq!(
            text.lines()
                .filter(|l| !l.starts_with("augmentation"))
                .collect::<Vec<_>>(),
            plain.to_text().lines().collect::<Vec<_>>()
        );
        let json: serde_json::Value = serde_json::from_str(&aug.to_json()).unwrap();
        assert_eq!(json["augment"], "rotate=10,shift=2");
        assert_eq!(json["augment_ms_per_batch"], 0.5);
        assert_eq!(json["augment_share_of_step"], 0.125);
        assert_eq!(json["step_ms"], 4.0);
    }
}
