//! mnist-cnn: the PyTorch tutorial "What is torch.nn really?" (MNIST CNN), in Rust.
//!
//! Modules follow the tutorial's concepts: [`tensor`] (tensors and autograd), [`ops`]
//! (`torch.nn.functional`), [`nn`] (modules, layers, `Sequential`, and the model registry),
//! [`optim`] (SGD, Adam, AdamW, learning-rate schedules),
//! [`data`] (MNIST readers, `TensorDataset`, `DataLoader`, downloads) and [`train`]
//! (`loss_batch`, `fit`). Around them: [`checkpoint`] (safetensors weights and training
//! checkpoints), [`metrics`] (confusion matrix), [`predict`] (users' images), [`log`] and
//! [`plot`] (metrics logs and charts), [`bench`](mod@bench) and [`profile`] (speed), [`cli`] (the command).
//! Whatever fails on its input returns the one [`Error`] (see [`error`]).
//!
//! # Example
//!
//! The tutorial's CNN on a batch of two blank images: ten logits per image, and a loss with
//! gradients for every weight (as `loss.backward()` in the tutorial).
//!
//! ```
//! use mnist_cnn::nn::{MnistCnn, Module};
//! use mnist_cnn::ops::cross_entropy;
//! use mnist_cnn::rng::Rng;
//! use mnist_cnn::Tensor;
//!
//! let model = MnistCnn::new(&mut Rng::new(0));
//! let xb = Tensor::zeros(&[2, 784]); // two 28x28 images, flattened as in the tutorial
//! let logits = model.forward(&xb);
//! assert_eq!(logits.shape(), &[2, 10]);
//! let loss = cross_entropy(&logits, &[3, 7]);
//! assert!(loss.item().is_finite());
//! loss.backward();
//! assert!(model.named_parameters().iter().all(|(_, p)| p.grad().is_some()));
//! ```

pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod error;
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
pub mod serve;
pub mod tensor;
pub mod train;

pub use error::{Error, Result};
pub use tensor::{Tensor, no_grad};
