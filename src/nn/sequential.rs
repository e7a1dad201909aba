//! `nn.Sequential` (modules applied in order) and `Lambda` (a closure as a module), as in the
//! tutorial's last sections:
//!
//! ```
//! use mnist_cnn::nn::{Conv2dConfig, Lambda, Module, ReLU, Sequential};
//! use mnist_cnn::ops::{adaptive_avg_pool2d, reshape};
//! use mnist_cnn::rng::Rng;
//! use mnist_cnn::Tensor;
//!
//! let mut rng = Rng::new(0);
//! let conv = |i, o| Conv2dConfig::new(i, o, 3).with_stride(2).with_padding(1);
//! let model = Sequential::new()
//!     .append(Lambda::new(|x| reshape(x, &[None, Some(1), Some(28), Some(28)])))
//!     .append(conv(1, 16).init(&mut rng))
//!     .append(ReLU)
//!     .append(conv(16, 10).init(&mut rng))
//!     .append(ReLU)
//!     .append(Lambda::new(|x| adaptive_avg_pool2d(x, (1, 1))))
//!     .append(Lambda::new(|x| reshape(x, &[None, Some(10)])));
//! assert_eq!(model.forward(&Tensor::zeros(&[3, 784])).shape(), &[3, 10]);
//! // PyTorch's names: the position of each layer in the sequence.
//! let names: Vec<String> = model.named_parameters().into_iter().map(|(n, _)| n).collect();
//! assert_eq!(names, ["1.weight", "1.bias", "3.weight", "3.bias"]);
//! ```

use std::cell::Cell;

use super::Module;
use crate::tensor::Tensor;

/// Modules applied one after the other; children are named by position ("0", "1", ...) as in
/// PyTorch, or by the names given to [`Sequential::add_module`].
pub struct Sequential {
    layers: Vec<(String, Box<dyn Module>)>,
    training: Cell<bool>,
}

impl Default for Sequential {
    fn default() -> Self {
        Sequential::new()
    }
}

impl Sequential {
    pub fn new() -> Self {
        Sequential {
            layers: Vec::new(),
            training: Cell::new(true),
        }
    }

    /// Appends a layer named by its position.
    pub fn append(self, layer: impl Module + 'static) -> Self {
        let name = self.layers.len().to_string();
        self.add_module(&name, layer)
    }

    /// Appends a layer under a name (PyTorch's `add_module`, or `nn.Sequential(OrderedDict(...))`). Panics on a
    /// repeated or dotted name (a programming error).
    pub fn add_module(mut self, name: &str, layer: impl Module + 'static) -> Self {
        self.push(name, Box::new(layer));
        self
    }

    /// Appends an already boxed layer.
    pub fn push(&mut self, name: &str, layer: Box<dyn Module>) {
        assert!(
            !name.is_empty() && !name.contains('.'),
            "Sequential: layer name '{name}' must be non-empty without dots"
        );
        assert!(
            self.layers.iter().all(|(n, _)| n != name),
            "Sequential: two layers named '{name}'"
        );
        layer.set_training(self.training.get());
        self.layers.push((name.to_string(), layer));
    }

    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The i-th layer.
    pub fn get(&self, i: usize) -> Option<&dyn Module> {
        self.layers.get(i).map(|(_, l)| l.as_ref())
    }
}

impl Module for Sequential {
    fn forward(&self, x: &Tensor) -> Tensor {
        let mut x = x.clone();
        for (_, layer) in &self.layers {
            x = layer.forward(&x);
        }
        x
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        self.layers.iter().map(|(n, l)| (n.clone(), l.as_ref())).collect()
    }
    fn training_flag(&self) -> Option<&Cell<bool>> {
        Some(&self.training)
    }
}

/// A function as a module (the tutorial's `Lambda(preprocess)`): no parameters, the same in
/// training and evaluation.
pub struct Lambda {
    f: Box<dyn Fn(&Tensor) -> Tensor>,
}

impl Lambda {
    pub fn new(f: impl Fn(&Tensor) -> Tensor + 'static) -> Self {
        Lambda { f: Box::new(f) }
    }
}

impl Module for Lambda {
    fn forward(&self, x: &Tensor) -> Tensor {
        (self.f)(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{Conv2dConfig, LinearConfig, ReLU};
    use crate::ops::reshape;
    use crate::rng::Rng;

    fn model() -> Sequential {
        let mut rng = Rng::new(3);
        Sequential::new()
            .add_module("conv", Conv2dConfig::new(1, 2, 3).init(&mut rng))
            .add_module("act", ReLU)
            .add_module("flat", Lambda::new(|x| reshape(x, &[None, Some(2 * 3 * 3)])))
            .add_module("fc", LinearConfig::new(18, 4).init(&mut rng))
    }

    #[test]
    fn applies_layers_in_order_and_names_parameters_by_layer() {
        let m = model();
        let x = Tensor::rand(&[2, 1, 5, 5], &mut Rng::new(1));
        let y = m.forward(&x);
        assert_eq!(y.shape(), &[2, 4]);
        let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["conv.weight", "conv.bias", "fc.weight", "fc.bias"]);
        assert_eq!(m.num_parameters(), 2 * 9 + 2 + 18 * 4 + 4);
        // The same as calling the layers by hand.
        let by_hand = {
            let c = m.get(0).unwrap().forward(&x);
            let a = m.get(1).unwrap().forward(&c);
            let f = m.get(2).unwrap().forward(&a);
            m.get(3).unwrap().forward(&f)
        };
        assert_eq!(y.to_vec(), by_hand.to_vec());
    }

    #[test]
    fn eval_and_train_reach_every_descendant() {
        let inner = Sequential::new().append(LinearConfig::new(2, 2).init(&mut Rng::new(0)));
        let m = Sequential::new().append(inner).append(ReLU);
        assert!(m.is_training());
        m.eval();
        assert!(!m.is_training());
        let leaf = m.get(0).unwrap().children()[0].1.is_training();
        assert!(!leaf, "eval() reaches the grandchild");
        m.train();
        assert!(m.get(0).unwrap().children()[0].1.is_training());
        let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["0.0.weight", "0.0.bias"]);
    }

    #[test]
    #[should_panic(expected = "two layers named 'a'")]
    fn repeated_names_are_refused() {
        let _ = Sequential::new().add_module("a", ReLU).add_module("a", ReLU);
    }
}
