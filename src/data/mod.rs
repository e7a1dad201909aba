//! Data: the MNIST readers (IDX files and the tutorial's `mnist.pkl.gz`), [`TensorDataset`],
//! [`DataLoader`] and training-time augmentation ([`AugmentConfig`]).
//!
//! Images stay u8 in memory (pixel values 0..=255); batches are made as f32 on the fly, scaled
//! pixel/256 as the tutorial's file is, so both sources give bit-identical tensors.

pub mod augment;
mod dataset;
pub mod download;
pub mod idx;
mod loader;
mod mnist;
pub mod pickle;

pub use augment::{AugmentConfig, Augmenter, ElasticConfig};
pub use dataset::TensorDataset;
pub use loader::{Batch, DataLoader};
pub use mnist::{Format, Mnist, load_mnist};

/// Pixel value to the f32 the tutorial's file holds.
pub fn pixel_to_f32(p: u8) -> f32 {
    p as f32 / 256.0
}
