//! mnist-cnn: the PyTorch tutorial "What is torch.nn really?" (MNIST CNN), in Rust.
//!
//! Modules follow the tutorial's concepts: [`tensor`] (tensors and autograd), [`ops`]
//! (`torch.nn.functional`), [`nn`] (modules and the two models), [`optim`] (SGD),
//! [`data`] (MNIST readers, `TensorDataset`, `DataLoader`, downloads) and [`train`]
//! (`loss_batch`, `fit`). Around them: [`checkpoint`] (safetensors weights and training
//! checkpoints), [`metrics`] (confusion matrix), [`predict`] (users' images), [`log`] and
//! [`plot`] (metrics logs and charts), [`bench`] and [`profile`] (speed), [`cli`] (the command).

pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod fuzzing;
pub mod log;
pub mod metrics;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod plot;
pub mod predict;
pub mod profile;
pub mod rng;
pub mod runs;
pub mod tensor;
pub mod train;

pub use tensor::{Tensor, no_grad};
