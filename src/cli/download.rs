//! `mnist-cnn download` and `mnist-cnn plot`.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct DownloadArgs {
    /// Which: `mnist`, `fashion-mnist`, `kmnist`, or `tutorial-pickle` (the tutorial's mnist.pkl.gz).
    #[arg(value_parser = ["mnist", "fashion-mnist", "kmnist", "tutorial-pickle"])]
    pub dataset: String,
    /// Cache directory [default: the platform's data directory, e.g. ~/.local/share/mnist-cnn].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// A mirror to try first (a URL prefix to which the file names are appended); also read
    /// from the MNIST_CNN_MIRROR environment variable.
    #[arg(long)]
    pub mirror: Option<String>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug, Clone)]
pub struct PlotArgs {
    /// Metrics logs written by `train --log` (.jsonl or .csv).
    #[arg(required = true, value_name = "LOG")]
    pub logs: Vec<PathBuf>,
    /// The picture to write: PNG or SVG by extension.
    #[arg(long, value_name = "FILE", default_value = "curves.png")]
    pub out: PathBuf,
    /// Also draw the training loss during the epochs, from the batch records of .jsonl logs
    /// (one every 10 batches): raw as a faint line, smoothed as a solid one. Drawn anyway when
    /// every run is one epoch long.
    #[arg(long)]
    pub batches: bool,
    /// The smoothing of the per-batch loss: an exponential moving average with this weight on
    /// the past, debiased as TensorBoard's (0: none; 0.9: about the last 10 records; below 1).
    #[arg(long, default_value_t = 0.9, value_name = "WEIGHT")]
    pub smooth: f64,
}

pub(crate) fn download(a: DownloadArgs) -> Result<(), Box<dyn std::error::Error>> {
    let spec = crate::data::download::spec(&a.dataset).ok_or("unknown dataset")?;
    let dir = crate::data::download::cache_dir(a.dir.as_deref());
    let mirror = a
        .mirror
        .clone()
        .or_else(|| std::env::var("MNIST_CNN_MIRROR").ok().filter(|m| !m.is_empty()));
    let progress = !a.quiet && std::io::stderr().is_terminal();
    let (target, outcomes) =
        crate::data::download::download(&spec, &dir, mirror.as_deref(), progress, |m| eprintln!("{m}"))?;
    let fetched = outcomes
        .iter()
        .filter(|o| matches!(o, crate::data::download::Outcome::Fetched { .. }))
        .count();
    out!(
        "{}: {} files in {} ({fetched} fetched, {} already there)",
        a.dataset,
        outcomes.len(),
        target.display(),
        outcomes.len() - fetched
    );
    Ok(())
}
