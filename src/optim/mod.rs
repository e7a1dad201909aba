//! `torch.optim`: the [`Optimizer`] trait, [`Sgd`], [`Adam`] (and AdamW, an [`Adam`] with
//! decoupled weight decay), and learning-rate [`schedule`]s.
//!
//! Every optimizer computes each stored value (parameter, momentum buffer, moment estimate) in
//! f64 from the f32 values it is made of, with the hyper-parameters as the decimals they were
//! written as (see [`decimal`]), and rounds it to f32 once. The results match PyTorch's float32
//! runs to within 1e-6 over the golden tests' 10 steps (tests/optim_golden.rs).
//!
//! Optimizer state is exported and restored by name ([`OptimizerState`], PyTorch's state-dict
//! names), so a checkpoint can hold it and a resumed run continues bit-identically.

mod adam;
mod kind;
pub mod schedule;
mod sgd;

use std::collections::BTreeMap;

use crate::tensor::Tensor;

pub use adam::{Adam, AdamConfig, AdamWConfig};
pub use kind::OptimizerKind;
pub use schedule::{Schedule, ScheduleSpec};
pub use sgd::{Sgd, SgdConfig, decimal};

/// An optimizer over a fixed list of parameters (`torch.optim.Optimizer` with one parameter
/// group).
pub trait Optimizer {
    /// One update of every parameter that has a gradient; the others are left alone.
    fn step(&mut self);
    /// Sets every parameter's gradient to `None`.
    fn zero_grad(&self);
    /// The learning rate the next [`step`](Optimizer::step) uses.
    fn lr(&self) -> f32;
    /// Replaces the learning rate (what a schedule does before each step).
    fn set_lr(&mut self, lr: f32);
    /// SGD momentum / Adam beta1 (what OneCycleLR cycles); `None` where it has none.
    fn momentum(&self) -> Option<f32>;
    /// Replaces the momentum (SGD) or beta1 (Adam); ignored by an optimizer without one.
    fn set_momentum(&mut self, m: f32);
    /// The parameters, in the order given to `init`.
    fn params(&self) -> &[Tensor];
    /// `"sgd"`, `"adam"` or `"adamw"`.
    fn name(&self) -> &'static str;
    /// Named per-parameter state for checkpoints, e.g. ("momentum_buffer", param index,
    /// values), ("exp_avg", i, ..), ("exp_avg_sq", i, ..); plus scalar state as strings (e.g.
    /// "step.3" -> "120").
    fn state(&self) -> OptimizerState;
    /// Restores [`state`](Optimizer::state)'s output. A missing or extra entry, a tensor of the
    /// wrong length or an unparsable scalar is an [`Error::Checkpoint`](crate::Error::Checkpoint)
    /// (without a path) naming it, and nothing is changed.
    fn load_state(&mut self, state: &OptimizerState) -> crate::Result<()>;
    /// Hyper-parameters as (name, value) strings for a run's metadata or header, e.g.
    /// `[("lr", "0.1"), ("momentum", "0.9"), ..]`, with PyTorch's argument names.
    fn hyperparameters(&self) -> Vec<(String, String)>;
}

/// An optimizer's state: per-parameter tensors and scalars as strings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimizerState {
    pub tensors: Vec<StateTensor>,
    pub scalars: BTreeMap<String, String>,
}

/// One per-parameter state tensor: PyTorch's state name (`momentum_buffer`, `exp_avg`, ..), the
/// parameter's index and its values (as many as the parameter has).
#[derive(Clone, Debug, PartialEq)]
pub struct StateTensor {
    pub key: String,
    pub param: usize,
    pub values: Vec<f32>,
}

impl OptimizerState {
    /// The state tensors by (key, parameter index), checked against `params`: each key one of
    /// `keys`, each index a parameter's, no duplicate, and as many values as the parameter.
    fn checked_tensors<'a>(
        &'a self,
        params: &[Tensor],
        keys: &[&str],
    ) -> crate::Result<BTreeMap<(&'a str, usize), &'a [f32]>> {
        self.checked(params, keys).map_err(crate::Error::checkpoint_problem)
    }

    fn checked<'a>(
        &'a self,
        params: &[Tensor],
        keys: &[&str],
    ) -> Result<BTreeMap<(&'a str, usize), &'a [f32]>, String> {
        let mut out = BTreeMap::new();
        for t in &self.tensors {
            if !keys.contains(&t.key.as_str()) {
                let expected = keys.join(", ");
                return Err(format!(
                    "unexpected optimizer state '{}' for parameter {} (expected one of: {expected})",
                    t.key, t.param
                ));
            }
            let Some(p) = params.get(t.param) else {
                return Err(format!(
                    "optimizer state '{}' is for parameter {}, but there are {} parameters",
                    t.key,
                    t.param,
                    params.len()
                ));
            };
            if t.values.len() != p.numel() {
                return Err(format!(
                    "optimizer state '{}' of parameter {} has {} values, expected {} (shape {:?})",
                    t.key,
                    t.param,
                    t.values.len(),
                    p.numel(),
                    p.shape()
                ));
            }
            if out.insert((t.key.as_str(), t.param), t.values.as_slice()).is_some() {
                return Err(format!(
                    "optimizer state '{}' of parameter {} appears twice",
                    t.key, t.param
                ));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(key: &str, param: usize, n: usize) -> OptimizerState {
        OptimizerState {
            tensors: vec![StateTensor {
                key: key.into(),
                param,
                values: vec![0.0; n],
            }],
            scalars: BTreeMap::new(),
        }
    }

    #[test]
    fn state_tensors_are_checked_by_key_index_length_and_uniqueness() {
        let params = [Tensor::parameter(vec![0.0; 3], &[3])];
        let keys = ["exp_avg"];
        assert!(state("exp_avg", 0, 3).checked_tensors(&params, &keys).is_ok());
        let e = state("exp_avg", 0, 2)
            .checked_tensors(&params, &keys)
            .unwrap_err()
            .to_string();
        assert!(e.contains("has 2 values, expected 3"), "{e}");
        let e = state("exp_avg", 1, 3)
            .checked_tensors(&params, &keys)
            .unwrap_err()
            .to_string();
        assert!(e.contains("parameter 1, but there are 1 parameters"), "{e}");
        let e = state("momentum", 0, 3)
            .checked_tensors(&params, &keys)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unexpected optimizer state 'momentum'"), "{e}");
        let mut twice = state("exp_avg", 0, 3);
        twice.tensors.push(twice.tensors[0].clone());
        let e = twice.checked_tensors(&params, &keys).unwrap_err().to_string();
        assert!(e.contains("appears twice"), "{e}");
    }
}
