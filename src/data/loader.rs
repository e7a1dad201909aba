//! `DataLoader`: mini-batches of a [`TensorDataset`], shuffled with a seed.
//!
//! The order of epoch `e` is a permutation drawn from the stream (seed, e): it changes every
//! epoch, is the same for the same seed, and does not depend on what ran before (so a resumed
//! run sees the same batches). The last batch keeps the remainder (PyTorch's drop_last=False).
//!
//! With an augmentation ([`DataLoader::with_augment`]; none by default) each sample of a batch
//! is transformed as the batch is made, on the pool's threads, by a transform fixed by (seed,
//! epoch, sample index): see [`super::augment`].

use super::TensorDataset;
use super::augment::{AugmentConfig, Augmenter};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// One mini-batch: x (B, D) and B labels.
pub struct Batch {
    pub x: Tensor,
    pub y: Vec<usize>,
}

/// Batches over a dataset, like `DataLoader(ds, batch_size, shuffle)`.
#[derive(Clone, Debug)]
pub struct DataLoader {
    pub dataset: TensorDataset,
    pub batch_size: usize,
    pub shuffle: bool,
    pub seed: u64,
    /// The augmentation of every batch, if any.
    augment: Option<Augmenter>,
}

impl DataLoader {
    pub fn new(dataset: TensorDataset, batch_size: usize, shuffle: bool, seed: u64) -> Self {
        assert!(batch_size > 0, "batch size must be positive");
        DataLoader {
            dataset,
            batch_size,
            shuffle,
            seed,
            augment: None,
        }
    }

    /// Augments every batch it makes with `cfg` (for a training loader). The images must be
    /// square (28x28 for MNIST). Panics when `cfg` is out of range (see
    /// [`AugmentConfig::validate`]).
    pub fn with_augment(mut self, cfg: AugmentConfig) -> Self {
        assert!(
            self.dataset.is_pixels(),
            "with_augment: augmentation works on u8 pixel datasets"
        );
        let d = self.dataset.features();
        let side = d.isqrt();
        assert_eq!(side * side, d, "with_augment: images of {d} pixels are not square");
        self.augment = Some(Augmenter::new(cfg, side, side));
        self
    }

    /// The augmentation set with [`with_augment`](Self::with_augment), if any.
    pub fn augment(&self) -> Option<&AugmentConfig> {
        self.augment.as_ref().map(Augmenter::config)
    }

    /// Number of batches per epoch.
    pub fn len(&self) -> usize {
        self.dataset.len().div_ceil(self.batch_size)
    }

    pub fn is_empty(&self) -> bool {
        self.dataset.is_empty()
    }

    /// The sample indices of epoch `epoch`, in the order they are served.
    pub fn order(&self, epoch: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.dataset.len()).collect();
        if self.shuffle {
            Rng::derive(self.seed, epoch as u64).shuffle(&mut idx);
        }
        idx
    }

    /// The batches of epoch `epoch`, made on the fly.
    pub fn epoch(&self, epoch: usize) -> impl Iterator<Item = Batch> + '_ {
        let order = self.order(epoch);
        let bs = self.batch_size;
        (0..self.len()).map(move |b| {
            let idx = &order[b * bs..((b + 1) * bs).min(order.len())];
            let (x, y) = match &self.augment {
                None => self.dataset.batch(idx),
                Some(a) => a.batch(&self.dataset, idx, self.seed, epoch),
            };
            Batch { x, y }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(n: usize) -> TensorDataset {
        // Image i is the single pixel i (mod 256); the label is i mod 10.
        TensorDataset::new(
            (0..n).map(|i| i as u8).collect(),
            (0..n).map(|i| (i % 10) as u8).collect(),
            1,
        )
    }

    fn ids(dl: &DataLoader, epoch: usize) -> Vec<Vec<usize>> {
        dl.epoch(epoch)
            .map(|b| b.x.data().iter().map(|v| (v * 256.0) as usize).collect())
            .collect()
    }

    #[test]
    fn every_sample_once_per_epoch_with_a_partial_last_batch() {
        let dl = DataLoader::new(dataset(203), 64, true, 1);
        assert_eq!(dl.len(), 4);
        let batches = ids(&dl, 0);
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![64, 64, 64, 11]);
        let mut all: Vec<usize> = batches.concat();
        all.sort();
        assert_eq!(all, (0..203).collect::<Vec<_>>());
    }

    #[test]
    fn order_changes_every_epoch_and_repeats_for_the_same_seed() {
        let dl = DataLoader::new(dataset(200), 50, true, 42);
        let (e0, e1) = (dl.order(0), dl.order(1));
        assert_ne!(e0, e1);
        assert_ne!(e0, (0..200).collect::<Vec<_>>());
        assert_eq!(e0, DataLoader::new(dataset(200), 50, true, 42).order(0));
        assert_ne!(e0, DataLoader::new(dataset(200), 50, true, 43).order(0));
    }

    #[test]
    fn no_shuffle_serves_in_order_and_labels_follow_images() {
        let dl = DataLoader::new(dataset(25), 10, false, 0);
        assert_eq!(ids(&dl, 3)[0], (0..10).collect::<Vec<_>>());
        for b in DataLoader::new(dataset(25), 7, true, 5).epoch(0) {
            for (v, y) in b.x.data().iter().zip(&b.y) {
                assert_eq!((*v * 256.0) as usize % 10, *y);
            }
        }
    }
}
