//! MNIST from either source: the four IDX files, or the tutorial's `mnist.pkl.gz`.
//!
//! Splits as in the tutorial's file: train = the first 50,000 training images, valid = the last
//! 10,000, test = t10k.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::TensorDataset;
use super::idx::read_images_and_labels;
use super::pickle::read_mnist_pickle;
use crate::Error;

/// Where the data comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `train-images-idx3-ubyte[.gz]` and the three other IDX files.
    Idx,
    /// The tutorial's `mnist.pkl.gz`.
    Pickle,
}

impl FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "idx" => Ok(Format::Idx),
            "pickle" => Ok(Format::Pickle),
            _ => Err(Error::settings(format!(
                "unknown format '{s}' (expected idx or pickle)"
            ))),
        }
    }
}

/// The three splits.
#[derive(Clone, Debug)]
pub struct Mnist {
    pub train: TensorDataset,
    pub valid: TensorDataset,
    pub test: TensorDataset,
}

/// Images held out from the training file for validation: 10,000 of MNIST's 60,000.
fn valid_len(n: usize) -> usize {
    10_000.min(n / 6)
}

/// `dir/name`, or `dir/name.gz` when only that exists.
fn find(dir: &Path, name: &str) -> crate::Result<PathBuf> {
    let plain = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    if plain.is_file() {
        Ok(plain)
    } else if gz.is_file() {
        Ok(gz)
    } else {
        Err(Error::not_found(&plain, "not found (nor with .gz)"))
    }
}

/// Loads MNIST from `path`: a directory with the IDX files, or (pickle) a directory holding
/// `mnist.pkl.gz` or the pickle file itself.
pub fn load_mnist(path: &Path, format: Format) -> crate::Result<Mnist> {
    const D: usize = 784;
    match format {
        Format::Idx => {
            let (img, lab) = read_images_and_labels(
                &find(path, "train-images-idx3-ubyte")?,
                &find(path, "train-labels-idx1-ubyte")?,
            )?;
            let (timg, tlab) = read_images_and_labels(
                &find(path, "t10k-images-idx3-ubyte")?,
                &find(path, "t10k-labels-idx1-ubyte")?,
            )?;
            for (a, name) in [(&img, "train-images"), (&timg, "t10k-images")] {
                if a.dims[1] * a.dims[2] != D {
                    let problem = format!("images are {}x{}, expected 28x28", a.dims[1], a.dims[2]);
                    return Err(Error::shape(problem).at(path.join(name)));
                }
            }
            let all = TensorDataset::new(img.data, lab, D);
            let n = all.len();
            let v = valid_len(n);
            if v == 0 {
                return Err(Error::format(
                    find(path, "train-images-idx3-ubyte")?,
                    format!("holds {n} images: too few to hold out a validation split (at least 6 needed)"),
                ));
            }
            if timg.dims[0] == 0 {
                return Err(Error::format(
                    find(path, "t10k-images-idx3-ubyte")?,
                    "holds no images: the test split would be empty",
                ));
            }
            Ok(Mnist {
                train: all.subset(0..n - v),
                valid: all.subset(n - v..n),
                test: TensorDataset::new(timg.data, tlab, D),
            })
        }
        Format::Pickle => {
            let file = if path.is_dir() {
                path.join("mnist.pkl.gz")
            } else {
                path.to_path_buf()
            };
            let [train, valid, test] = read_mnist_pickle(&file)?;
            for ((_, y), name) in [&train, &valid, &test].into_iter().zip(["train", "valid", "test"]) {
                if y.is_empty() {
                    return Err(Error::format(file, format!("the {name} split holds no images")));
                }
            }
            let ds = |(x, y): (Vec<u8>, Vec<u8>)| TensorDataset::new(x, y, D);
            Ok(Mnist {
                train: ds(train),
                valid: ds(valid),
                test: ds(test),
            })
        }
    }
}
