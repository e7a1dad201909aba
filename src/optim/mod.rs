//! `torch.optim`: stochastic gradient descent.

mod sgd;

pub use sgd::{Sgd, SgdConfig};
