//! `mnist-cnn eval`.

use std::path::PathBuf;

use clap::Args;

use super::{DataArgs, dataset_dir, load_dataset};
use crate::checkpoint::load_model;
use crate::data::DataLoader;
use crate::metrics::Confusion;
use crate::train::LOSS_FUNC;

#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// The weights to evaluate (safetensors).
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Which images: `test` (t10k) or `valid` (the last 10,000 training images).
    #[arg(long, default_value = "test", value_parser = ["test", "valid"])]
    pub split: String,
    /// Print one JSON object instead of the tables.
    #[arg(long)]
    pub json: bool,
    /// Also draw the confusion matrix as a heat map with counts (PNG or SVG by extension):
    /// viridis on a log scale (so that the few errors stand out), with a colour bar.
    #[arg(long, value_name = "FILE")]
    pub confusion_png: Option<PathBuf>,
    /// In the heat map, each cell's share of its row (the true class's images) in percent,
    /// coloured by that share, instead of counts.
    #[arg(long, requires = "confusion_png")]
    pub confusion_normalize: bool,
    /// Batch size of the evaluation.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    #[command(flatten)]
    pub data: DataArgs,
}

pub(crate) fn eval(a: EvalArgs) -> Result<(), Box<dyn std::error::Error>> {
    if a.batch_size == 0 {
        return Err("--batch-size must be at least 1".into());
    }
    let (arch, model, file) = load_model(&a.model)?;
    let dataset = file
        .metadata
        .get("dataset")
        .map_or("mnist".to_string(), |d| d.to_lowercase());
    let data = load_dataset(
        &dataset_dir(a.data.data_dir.as_ref(), &dataset),
        a.data.format,
        &dataset,
    )?;
    let split = if a.split == "valid" { data.valid } else { data.test };
    let dl = DataLoader::new(split, a.batch_size, false, 0);
    let c = Confusion::of(model.as_ref(), LOSS_FUNC, &dl, 10);
    if let Some(out) = &a.confusion_png {
        let names = crate::data::download::class_names(&dataset);
        crate::plot::plot_confusion(&c, &names, a.confusion_normalize, out)?;
    }
    if a.json {
        out!("{}", c.to_json());
    } else {
        out!("model {} ({arch}), {} split", a.model.display(), a.split);
        out!(
            "{}",
            c.to_text(&crate::data::download::class_names(&dataset)).trim_end()
        );
    }
    Ok(())
}
