//! `TensorDataset`: samples (N x D) and labels, indexed together: MNIST's u8 pixels (scaled
//! pixel/256 when batched), or any f32 tensor, as the tutorial's `TensorDataset(x_train, y_train)`.

use std::sync::Arc;

use crate::ops::{CHUNK, for_each_chunk};

use super::pixel_to_f32;
use crate::tensor::{Tensor, pool};

/// Images and their labels. Cheap to clone (the pixels are shared).
#[derive(Clone, Debug)]
pub struct TensorDataset {
    images: Arc<Vec<u8>>,
    /// The values of a dataset made from an f32 tensor ([`TensorDataset::from_tensors`]);
    /// `images` is then empty.
    values: Option<Arc<Vec<f32>>>,
    labels: Arc<Vec<u8>>,
    /// Values per image (784 for MNIST).
    features: usize,
    start: usize,
    len: usize,
}

impl TensorDataset {
    /// `images` holds `labels.len()` images of `features` pixels each.
    pub fn new(images: Vec<u8>, labels: Vec<u8>, features: usize) -> Self {
        assert_eq!(images.len(), labels.len() * features, "TensorDataset: images vs labels");
        let len = labels.len();
        TensorDataset {
            images: Arc::new(images),
            values: None,
            labels: Arc::new(labels),
            features,
            start: 0,
            len,
        }
    }

    /// `TensorDataset(x, y)`: sample i is row i of `x` (its first dimension; the rest is
    /// flattened, in logical order) with label `y[i]`. Panics if the counts differ or a label
    /// is 256 or more (programming errors).
    pub fn from_tensors(x: &Tensor, y: &[usize]) -> Self {
        let n = x.shape().first().copied().unwrap_or(1);
        assert_eq!(n, y.len(), "TensorDataset: {n} samples in x, {} labels", y.len());
        let labels: Vec<u8> = y
            .iter()
            .map(|&c| u8::try_from(c).unwrap_or_else(|_| panic!("TensorDataset: label {c} is over 255")))
            .collect();
        TensorDataset {
            images: Arc::new(Vec::new()),
            values: Some(Arc::new(x.to_vec())),
            labels: Arc::new(labels),
            features: x.numel() / n.max(1),
            start: 0,
            len: n,
        }
    }

    /// Whether the samples are u8 pixels (MNIST's) rather than f32 values.
    pub fn is_pixels(&self) -> bool {
        self.values.is_none()
    }

    /// The label of sample `i`.
    pub fn label(&self, i: usize) -> usize {
        assert!(i < self.len, "index {i} out of range for a dataset of {}", self.len);
        self.labels[self.start + i] as usize
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn features(&self) -> usize {
        self.features
    }

    /// Sample `i` of a pixel dataset: its pixels and label. Panics on a dataset of f32 values
    /// (see [`TensorDataset::is_pixels`]).
    pub fn get(&self, i: usize) -> (&[u8], u8) {
        assert!(i < self.len, "index {i} out of range for a dataset of {}", self.len);
        assert!(
            self.is_pixels(),
            "TensorDataset::get: a dataset of f32 values has no u8 pixels"
        );
        let j = self.start + i;
        (&self.images[j * self.features..(j + 1) * self.features], self.labels[j])
    }

    /// The samples of `self` then those of `other`, as one dataset (copied): the tutorial's
    /// training and validation splits together. Panics if they hold different kinds of samples
    /// or sizes (a programming error).
    pub fn concat(&self, other: &TensorDataset) -> TensorDataset {
        assert!(
            self.features == other.features && self.is_pixels() == other.is_pixels(),
            "TensorDataset::concat: samples of {} and {} values, pixels {} and {}",
            self.features,
            other.features,
            self.is_pixels(),
            other.is_pixels()
        );
        let rows = |d: &TensorDataset| d.start * d.features..(d.start + d.len) * d.features;
        let labels = [self, other]
            .iter()
            .flat_map(|d| d.labels[d.start..d.start + d.len].iter().copied())
            .collect::<Vec<u8>>();
        let (images, values) = match (&self.values, &other.values) {
            (Some(a), Some(b)) => (Vec::new(), Some(Arc::new([&a[rows(self)], &b[rows(other)]].concat()))),
            _ => ([&self.images[rows(self)], &other.images[rows(other)]].concat(), None),
        };
        TensorDataset {
            images: Arc::new(images),
            values,
            features: self.features,
            start: 0,
            len: labels.len(),
            labels: Arc::new(labels),
        }
    }

    /// Samples `range` as a dataset of their own, sharing the pixels.
    pub fn subset(&self, range: std::ops::Range<usize>) -> TensorDataset {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "subset {range:?} of {}",
            self.len
        );
        TensorDataset {
            start: self.start + range.start,
            len: range.end - range.start,
            ..self.clone()
        }
    }

    /// The samples at `indices` as x (B, D) in f32 (pixel/256, or the values as they are) and
    /// their labels.
    pub fn batch(&self, indices: &[usize]) -> (Tensor, Vec<usize>) {
        let d = self.features;
        let y = indices.iter().map(|&i| self.label(i)).collect();
        if let Some(values) = &self.values {
            let mut x = pool::take(indices.len() * d);
            for (row, &i) in x.chunks_mut(d).zip(indices) {
                let j = self.start + i;
                row.copy_from_slice(&values[j * d..(j + 1) * d]);
            }
            return (Tensor::from_vec(x, &[indices.len(), d]), y);
        }
        let mut x = pool::take(indices.len() * d);
        // The samples of a chunk are read side by side, a cache line of each at a time: their
        // rows lie at random places in memory, and this way their cache misses overlap instead
        // of being waited for one row after another.
        let convert = |(rows, idx): (&mut [f32], &[usize])| {
            let srcs: Vec<&[u8]> = idx.iter().map(|&i| self.get(i).0).collect();
            // One byte of every cache line first: independent loads, so the misses are all
            // in flight at once; the conversion below then reads from the cache.
            let mut touch = 0u8;
            for src in &srcs {
                for c0 in (0..d).step_by(64) {
                    touch ^= src[c0];
                }
            }
            std::hint::black_box(touch);
            for c0 in (0..d).step_by(64) {
                let c1 = (c0 + 64).min(d);
                for (row, src) in rows.chunks_mut(d).zip(&srcs) {
                    for (v, &p) in row[c0..c1].iter_mut().zip(&src[c0..c1]) {
                        *v = pixel_to_f32(p);
                    }
                }
            }
        };
        // Chunk by chunk, on the threads that will run the model's kernels on those samples.
        let work: Vec<_> = x.chunks_mut(CHUNK * d).zip(indices.chunks(CHUNK)).collect();
        for_each_chunk(work, convert);
        (Tensor::from_vec(x, &[indices.len(), d]), y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_scale_pixels_and_keep_labels() {
        let ds = TensorDataset::new(vec![0, 128, 255, 1, 2, 3], vec![7, 9], 3);
        let (x, y) = ds.batch(&[1, 0]);
        assert_eq!(x.shape(), &[2, 3]);
        assert_eq!(
            x.to_vec(),
            vec![1.0 / 256.0, 2.0 / 256.0, 3.0 / 256.0, 0.0, 0.5, 255.0 / 256.0]
        );
        assert_eq!(y, vec![9, 7]);
        let sub = ds.subset(1..2);
        assert_eq!(sub.len(), 1);
        assert_eq!(sub.get(0), (&[1u8, 2, 3][..], 9));
    }

    #[test]
    fn concat_puts_the_second_dataset_after_the_first_subsets_included() {
        let a = TensorDataset::new(vec![1, 2, 3, 4, 5, 6], vec![7, 8, 9], 2).subset(1..3);
        let b = TensorDataset::new(vec![10, 11], vec![0], 2);
        let c = a.concat(&b);
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(0), (&[3u8, 4][..], 8));
        assert_eq!(c.get(1), (&[5u8, 6][..], 9));
        assert_eq!(c.get(2), (&[10u8, 11][..], 0));
        let x = |v: f32| Tensor::from_vec(vec![v, v], &[1, 2]);
        let f = TensorDataset::from_tensors(&x(1.5), &[3]).concat(&TensorDataset::from_tensors(&x(-2.0), &[4]));
        let (xb, yb) = f.batch(&[1, 0]);
        assert_eq!((xb.to_vec(), yb), (vec![-2.0, -2.0, 1.5, 1.5], vec![4, 3]));
    }

    #[test]
    fn a_dataset_of_float_tensors_batches_its_rows_as_they_are() {
        // TensorDataset(x_train, y_train) with x (3, 2, 2) f32.
        let x = Tensor::from_vec((0..12).map(|v| v as f32 * 0.5 - 1.0).collect(), &[3, 2, 2]);
        let ds = TensorDataset::from_tensors(&x, &[4, 0, 9]);
        assert!(!ds.is_pixels());
        assert_eq!((ds.len(), ds.features()), (3, 4));
        let (xb, yb) = ds.batch(&[2, 0]);
        assert_eq!(xb.shape(), &[2, 4]);
        assert_eq!(xb.to_vec(), [3.0, 3.5, 4.0, 4.5, -1.0, -0.5, 0.0, 0.5]);
        assert_eq!(yb, [9, 4]);
        let sub = ds.subset(1..3);
        assert_eq!(sub.batch(&[0]).0.to_vec(), [1.0, 1.5, 2.0, 2.5]);
        assert_eq!(sub.label(1), 9);
        // Through a DataLoader, every sample once.
        let dl = crate::data::DataLoader::new(ds, 2, true, 3);
        let mut labels: Vec<usize> = dl.epoch(0).flat_map(|b| b.y).collect();
        labels.sort();
        assert_eq!(labels, [0, 4, 9]);
    }
}
