//! `nn.Dropout(p)`: zeroes each value with probability p in training and scales the rest by
//! 1/(1-p); the identity in evaluation. Each layer draws from its own seeded generator, whose
//! state training checkpoints save, so a resumed run drops the same values.

use std::cell::{Cell, RefCell};

use super::Module;
use crate::ops::dropout;
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Configuration of a [`Dropout`].
#[derive(Clone, Debug)]
pub struct DropoutConfig {
    /// Probability of zeroing a value; PyTorch's default 0.5.
    pub p: f32,
}

impl Default for DropoutConfig {
    fn default() -> Self {
        DropoutConfig { p: 0.5 }
    }
}

impl DropoutConfig {
    pub fn new(p: f32) -> Self {
        assert!(
            (0.0..=1.0).contains(&p),
            "dropout probability must be in [0, 1], got {p}"
        );
        DropoutConfig { p }
    }

    /// The layer, its generator seeded from `rng`.
    pub fn init(&self, rng: &mut Rng) -> Dropout {
        Dropout {
            p: self.p,
            rng: RefCell::new(Rng::new(rng.next_u64())),
            training: Cell::new(true),
        }
    }
}

/// A dropout layer.
pub struct Dropout {
    pub p: f32,
    rng: RefCell<Rng>,
    training: Cell<bool>,
}

impl Module for Dropout {
    fn forward(&self, x: &Tensor) -> Tensor {
        dropout(x, self.p, self.training.get(), &mut self.rng.borrow_mut())
    }
    fn training_flag(&self) -> Option<&Cell<bool>> {
        Some(&self.training)
    }
    fn own_rng(&self) -> Option<&RefCell<Rng>> {
        Some(&self.rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_in_training_only_and_resumes_from_a_saved_state() {
        let d = DropoutConfig::new(0.5).init(&mut Rng::new(0));
        let x = Tensor::from_vec(vec![1.0; 1000], &[10, 100]);
        let saved = d.named_rngs()[0].1.borrow().state();
        let a = d.forward(&x).to_vec();
        let zeros = a.iter().filter(|v| **v == 0.0).count();
        assert!((400..600).contains(&zeros), "{zeros} of 1000 dropped at p = 0.5");
        assert!(a.iter().all(|v| *v == 0.0 || *v == 2.0));
        let b = d.forward(&x).to_vec();
        assert_ne!(a, b, "the generator moves on");
        *d.named_rngs()[0].1.borrow_mut() = Rng::from_state(saved);
        assert_eq!(d.forward(&x).to_vec(), a, "a restored state gives the same mask");
        d.eval();
        assert_eq!(d.forward(&x).to_vec(), x.to_vec());
    }
}
