//! `mnist-cnn eval`: on an MNIST split (as it is, or through `predict`'s preprocessing), or
//! on a labelled folder of images (`--images DIR`) with accuracy per style.

use std::path::PathBuf;

use clap::Args;

use super::{DataArgs, dataset_dir, load_dataset};
use crate::data::DataLoader;
use crate::metrics::Confusion;
use crate::train::LOSS_FUNC;

/// A split to evaluate on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    /// The test set (t10k).
    Test,
    /// The validation split (the last 10,000 training images).
    Valid,
}

#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// The weights to evaluate (safetensors); the dataset is the one recorded in its metadata
    /// [default: the newest run's model.safetensors under runs/ (or $MNIST_CNN_RUNS_DIR), else
    /// the model built into the program].
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Which images.
    #[arg(long, value_enum, default_value_t = Split::Test)]
    pub split: Split,
    /// Evaluate on a labelled folder of images instead of an MNIST split, prepared as `predict`
    /// prepares them: labels and styles from DIR/labels.csv (`file,label[,style]`), else from
    /// the names (STYLE_DIGIT_N.png or DIGIT_N.png). Prints accuracy overall and per style.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["confusion_png", "preprocess"])]
    pub images: Option<PathBuf>,
    /// Put each image of the MNIST split through `predict`'s preprocessing (as a 28x28 gray
    /// image, light on black) before the network, to check that it loses nothing on MNIST.
    #[arg(long, conflicts_with = "no_preprocess")]
    pub preprocess: bool,
    #[command(flatten)]
    pub prep: super::predict::PrepArgs,
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

pub(crate) fn eval(a: EvalArgs) -> crate::Result<()> {
    if a.batch_size == 0 || a.batch_size > 2 * super::train::MAX_BATCH {
        return Err(crate::Error::settings(format!(
            "--batch-size must be from 1 to {}",
            2 * super::train::MAX_BATCH
        )));
    }
    let crate::runs::LoadedModel {
        arch,
        model,
        file,
        source,
    } = crate::runs::resolve_model(a.model.as_deref())?;
    if let Some(dir) = &a.images {
        return super::eval_images::eval_images(dir, &a, model.as_ref(), &format!("{source} ({arch})"));
    }
    let dataset = file
        .metadata
        .get("dataset")
        .map_or("mnist".to_string(), |d| d.to_lowercase());
    let data = load_dataset(
        &dataset_dir(a.data.data_dir.as_ref(), &dataset)?,
        a.data.format,
        &dataset,
    )?;
    let split = if a.split == Split::Valid { data.valid } else { data.test };
    let split = if a.preprocess {
        super::eval_images::preprocessed(&split, a.prep.deskew)
    } else {
        split
    };
    let dl = DataLoader::new(split, a.batch_size, false, 0);
    let spinner = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let s = indicatif::ProgressBar::new_spinner().with_message(format!("evaluating {} images", dl.dataset.len()));
        s.enable_steady_tick(std::time::Duration::from_millis(100));
        s
    });
    let c = Confusion::of(model.as_ref(), LOSS_FUNC, &dl, 10);
    drop(spinner);
    if let Some(out) = &a.confusion_png {
        let names = crate::data::download::class_names(&dataset);
        crate::plot::plot_confusion(&c, &names, a.confusion_normalize, out)?;
    }
    if a.json {
        out!("{}", c.to_json());
    } else {
        let split = if a.split == Split::Valid { "valid" } else { "test" };
        let how = if a.preprocess {
            ", each image through predict's preprocessing"
        } else {
            ""
        };
        out!("model {source} ({arch}), {split} split{how}");
        out!(
            "{}",
            c.to_text(&crate::data::download::class_names(&dataset)).trim_end()
        );
    }
    Ok(())
}
