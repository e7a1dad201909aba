//! A safe reader for the tutorial's `mnist.pkl.gz`: a pickle of
//! `((x_train, y_train), (x_valid, y_valid), (x_test, y_test))` of numpy arrays.
//!
//! Nothing is executed. The reader interprets the pickle opcodes that numpy arrays use and
//! accepts only these globals: `numpy.core.multiarray._reconstruct` (also `numpy._core...`),
//! `numpy.ndarray`, `numpy.dtype`, `_codecs.encode` (bytes in Python 3's protocol 2) and
//! `numpy.core.numeric._frombuffer` (also `numpy._core...`, how numpy writes arrays with
//! protocol 5). It reads Python 2's protocol 2 (raw bytes as BINSTRING / SHORT_BINSTRING, as
//! in the tutorial's file) and Python 3 numpy's protocols 2 to 5. Any other global, a shape
//! that disagrees with the byte count, big-endian or Fortran-order data, or truncation is an
//! error that says what is wrong.
//!
//! Hostile files: containers may nest at most [`MAX_DEPTH`] levels, and no value is ever
//! walked or dropped recursively (see `Drop for Value`), so no file can overflow the stack; the
//! decompressed pickle is at most [`MAX_PICKLE_BYTES`].
//!
//! The parts: `value` (the Python values a numpy pickle builds, and the globals it may name),
//! `machine` (the opcode interpreter), `mnist` (the three splits' images and labels out of the
//! top-level tuple); here, the bounded read of the (gzipped) file.

mod machine;
mod mnist;
mod value;

use std::path::Path;

use super::idx::read_gz_bounded;

pub use mnist::{Split, parse_mnist_pickle};
pub use value::{Dtype, NdArray};

/// The deepest nesting of tuples, lists, dicts and MARKs accepted. numpy's pickles nest 4
/// levels; the limit only stops hostile files early with a clear error.
pub const MAX_DEPTH: u32 = 100;

/// The most bytes a (decompressed) MNIST-style pickle may hold: the tutorial's file is 220 MB
/// (70,000 float32 images of 784 pixels and their int64 labels).
pub const MAX_PICKLE_BYTES: u64 = 512 << 20;

/// Reads `mnist.pkl.gz` (or an uncompressed pickle) into (train, valid, test).
pub fn read_mnist_pickle(path: &Path) -> crate::Result<[Split; 3]> {
    let bytes = read_gz_bounded(path, MAX_PICKLE_BYTES, "an MNIST pickle")?;
    parse_mnist_pickle(&bytes).map_err(|e| e.at(path))
}
