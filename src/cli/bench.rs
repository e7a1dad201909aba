//! `mnist-cnn bench`.

use std::path::PathBuf;

use clap::Args;

use super::{default_data_dir, in_pool};
use crate::data::{AugmentConfig, Format, load_mnist};
use crate::ops::simd::Backend;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Model.
    #[arg(long, default_value = "cnn", value_parser = super::model_names())]
    pub model: String,
    /// Worker threads [default: one per core].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Training batch size.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub batch_size: usize,
    /// Timed training epochs (each from a fresh model); the median is reported.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub repeats: usize,
    /// Training batches run with the per-layer profiler on.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub profile_batches: usize,
    /// Single-image forwards timed for the batch-1 latency.
    #[arg(long, default_value_t = 2000, value_name = "N")]
    pub latency_images: usize,
    /// Directory with the MNIST IDX files [default: where `train` finds MNIST].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Augment the training batches and report the augmentation's share of the step: none, or
    /// rotate=DEG,scale=FRACTION,shift=PIXELS,shear=DEG[,elastic[=ALPHA:SIGMA]] (e.g.
    /// rotate=10,scale=0.1,shift=2,shear=5,elastic=34:4).
    #[arg(long, value_name = "SPEC")]
    pub augment: Option<AugmentConfig>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Kernel backend [default: the best this CPU has, or $MNIST_CNN_SIMD].
    #[arg(long)]
    pub simd: Option<Backend>,
}

pub(crate) fn bench(a: BenchArgs) -> crate::Result<()> {
    if let Some(b) = a.simd {
        crate::ops::simd::select(b)?;
    }
    let dir = match &a.data_dir {
        Some(d) => d.clone(),
        None => default_data_dir()?,
    };
    let data = load_mnist(&dir, Format::Idx)?;
    if a.batch_size == 0 {
        return Err(crate::Error::settings("--batch-size must be at least 1"));
    }
    let cfg = crate::bench::BenchConfig {
        model: crate::nn::models::find(&a.model)?,
        batch_size: a.batch_size,
        repeats: a.repeats,
        profile_batches: a.profile_batches,
        latency_images: a.latency_images,
        augment: a.augment.filter(|c| !c.is_none()),
    };
    let report = in_pool(a.threads, || crate::bench::run(&cfg, &data))?;
    if a.json {
        out!("{}", report.to_json());
    } else {
        out!("{}", report.to_text().trim_end());
    }
    Ok(())
}
