//! `TensorDataset`: images (u8, N x D) and labels, indexed together.

use std::sync::Arc;

use crate::ops::{CHUNK, for_each_chunk};

use super::pixel_to_f32;
use crate::tensor::{Tensor, pool};

/// Images and their labels. Cheap to clone (the pixels are shared).
#[derive(Clone, Debug)]
pub struct TensorDataset {
    images: Arc<Vec<u8>>,
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
            labels: Arc::new(labels),
            features,
            start: 0,
            len,
        }
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

    /// Sample `i`: its pixels and label.
    pub fn get(&self, i: usize) -> (&[u8], u8) {
        assert!(i < self.len, "index {i} out of range for a dataset of {}", self.len);
        let j = self.start + i;
        (&self.images[j * self.features..(j + 1) * self.features], self.labels[j])
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

    /// The samples at `indices` as x (B, D) in f32 (pixel/256) and their labels.
    pub fn batch(&self, indices: &[usize]) -> (Tensor, Vec<usize>) {
        let d = self.features;
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
        let y = indices.iter().map(|&i| self.get(i).1 as usize).collect();
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
}
