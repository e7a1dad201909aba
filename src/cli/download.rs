//! `mnist-cnn download` and `mnist-cnn plot`.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;

/// What `download` fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fetchable {
    /// MNIST's four IDX files.
    Mnist,
    /// Fashion-MNIST's four IDX files.
    FashionMnist,
    /// Kuzushiji-MNIST's four IDX files.
    Kmnist,
    /// The tutorial's mnist.pkl.gz.
    TutorialPickle,
}

impl Fetchable {
    fn key(self) -> &'static str {
        match self {
            Fetchable::Mnist => "mnist",
            Fetchable::FashionMnist => "fashion-mnist",
            Fetchable::Kmnist => "kmnist",
            Fetchable::TutorialPickle => "tutorial-pickle",
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct DownloadArgs {
    /// Which dataset.
    #[arg(value_enum)]
    pub dataset: Fetchable,
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

pub(crate) fn download(a: DownloadArgs) -> crate::Result<()> {
    let spec = crate::data::download::spec(a.dataset.key()).expect("the command line names a known dataset");
    let dir = crate::data::download::cache_dir(a.dir.as_deref());
    let mirror = a
        .mirror
        .clone()
        .or_else(|| std::env::var("MNIST_CNN_MIRROR").ok().filter(|m| !m.is_empty()));
    let progress = !a.quiet && std::io::stderr().is_terminal();
    let limits = crate::data::download::Limits::from_env()?;
    let (target, outcomes) =
        crate::data::download::download_with(&spec, &dir, mirror.as_deref(), progress, &limits, |m| eprintln!("{m}"))?;
    let fetched = outcomes
        .iter()
        .filter(|o| matches!(o, crate::data::download::Outcome::Fetched { .. }))
        .count();
    out!(
        "{}: {} files in {} ({fetched} fetched, {} already there)",
        a.dataset.key(),
        outcomes.len(),
        target.display(),
        outcomes.len() - fetched
    );
    Ok(())
}
