//! SGD with PyTorch's semantics (`torch.optim.SGD`).
//!
//! For each parameter p with gradient g:
//!   g = g + weight_decay * p
//!   if momentum != 0: buf = g on the first step, else buf = momentum * buf + (1 - dampening) * g;
//!                     g = g + momentum * buf if nesterov, else buf
//!   p = p - lr * g
//! Parameters without a gradient are skipped.
//!
//! Each stored value (the weight-decayed gradient, the momentum buffer, the parameter) is
//! computed in f64 from f32 values with the hyper-parameters as decimals ([`decimal`]) and
//! rounded to f32 once. Its [`Optimizer`] state is PyTorch's: one `momentum_buffer` per
//! parameter that has taken a momentum step.

use super::{Optimizer, OptimizerState, StateTensor};
use crate::tensor::Tensor;

/// Hyper-parameters of [`Sgd`], with PyTorch's defaults (all zero, nesterov off).
#[derive(Clone, Debug, PartialEq)]
pub struct SgdConfig {
    pub lr: f32,
    pub momentum: f32,
    pub dampening: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
}

impl SgdConfig {
    pub fn new(lr: f32) -> Self {
        SgdConfig {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
    pub fn with_momentum(self, momentum: f32) -> Self {
        SgdConfig { momentum, ..self }
    }
    pub fn with_dampening(self, dampening: f32) -> Self {
        SgdConfig { dampening, ..self }
    }
    pub fn with_weight_decay(self, weight_decay: f32) -> Self {
        SgdConfig { weight_decay, ..self }
    }
    pub fn with_nesterov(self, nesterov: bool) -> Self {
        SgdConfig { nesterov, ..self }
    }

    /// Checks the hyper-parameters as `torch.optim.SGD` does: none negative or non-finite, and
    /// Nesterov momentum only with a momentum and zero dampening.
    pub fn validate(&self) -> crate::Result<()> {
        for (name, v) in [
            ("lr", self.lr),
            ("momentum", self.momentum),
            ("weight_decay", self.weight_decay),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(crate::Error::settings(format!(
                    "SGD {name} must be a finite number >= 0, got {v}"
                )));
            }
        }
        if !self.dampening.is_finite() {
            return Err(crate::Error::settings(format!(
                "SGD dampening must be finite, got {}",
                self.dampening
            )));
        }
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(crate::Error::settings(
                "Nesterov momentum requires a momentum and zero dampening",
            ));
        }
        Ok(())
    }

    /// The optimizer over `params`. Panics on hyper-parameters [`validate`](Self::validate)
    /// rejects (check user input with it first).
    pub fn init(&self, params: Vec<Tensor>) -> Sgd {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let n = params.len();
        Sgd {
            config: self.clone(),
            params,
            momentum_buffers: vec![None; n],
        }
    }
}

/// The optimizer: its parameters and one momentum buffer each.
pub struct Sgd {
    pub config: SgdConfig,
    params: Vec<Tensor>,
    /// One per parameter, `None` until its first step (as in PyTorch).
    pub momentum_buffers: Vec<Option<Vec<f32>>>,
}

impl Sgd {
    /// One update of every parameter that has a gradient. Each value is computed in f64 from
    /// the f32 parameter, gradient and buffer, with the hyper-parameters as the decimals they
    /// were written as (see `decimal`), and rounded to f32 once, as PyTorch's float32 SGD
    /// effectively does: 0.9 as an f32 is 0.89999998, and in PyTorch's float64 run of the
    /// tutorial's first 70 steps that difference alone moves the weights by 4e-8.
    pub fn step(&mut self) {
        let c = &self.config;
        let (lr, momentum) = (decimal(c.lr), decimal(c.momentum));
        let (dampening, weight_decay) = (decimal(c.dampening), decimal(c.weight_decay));
        for (p, buf) in self.params.iter().zip(self.momentum_buffers.iter_mut()) {
            let grad = p.grad_ref();
            let Some(grad) = grad.as_ref() else { continue };
            let mut w = p.data_mut();
            let mut d: Vec<f32> = if c.weight_decay != 0.0 {
                grad.iter()
                    .zip(w.iter())
                    .map(|(&g, &w)| (g as f64 + weight_decay * w as f64) as f32)
                    .collect()
            } else {
                grad.clone()
            };
            if c.momentum != 0.0 {
                let b = match buf {
                    None => buf.insert(d.clone()),
                    Some(b) => {
                        b.iter_mut()
                            .zip(&d)
                            .for_each(|(b, &g)| *b = (momentum * *b as f64 + (1.0 - dampening) * g as f64) as f32);
                        b
                    }
                };
                if c.nesterov {
                    d.iter_mut()
                        .zip(b.iter())
                        .for_each(|(g, &b)| *g = (*g as f64 + momentum * b as f64) as f32);
                } else {
                    d.copy_from_slice(b);
                }
            }
            w.iter_mut()
                .zip(&d)
                .for_each(|(w, &g)| *w = (*w as f64 - lr * g as f64) as f32);
        }
    }

    /// Clears every parameter's gradient.
    pub fn zero_grad(&self) {
        self.params.iter().for_each(Tensor::zero_grad);
    }

    pub fn params(&self) -> &[Tensor] {
        &self.params
    }
}

impl Optimizer for Sgd {
    fn step(&mut self) {
        Sgd::step(self)
    }
    fn zero_grad(&self) {
        Sgd::zero_grad(self)
    }
    fn lr(&self) -> f32 {
        self.config.lr
    }
    fn set_lr(&mut self, lr: f32) {
        self.config.lr = lr;
    }
    fn momentum(&self) -> Option<f32> {
        Some(self.config.momentum)
    }
    fn set_momentum(&mut self, m: f32) {
        self.config.momentum = m;
    }
    fn params(&self) -> &[Tensor] {
        &self.params
    }
    fn name(&self) -> &'static str {
        "sgd"
    }

    /// One `momentum_buffer` per parameter that has one; no scalars.
    fn state(&self) -> OptimizerState {
        let tensors = (self.momentum_buffers.iter().enumerate())
            .filter_map(|(param, b)| {
                b.as_ref().map(|b| StateTensor {
                    key: MOMENTUM_BUFFER.into(),
                    param,
                    values: b.clone(),
                })
            })
            .collect();
        OptimizerState {
            tensors,
            scalars: Default::default(),
        }
    }

    /// A parameter without a `momentum_buffer` entry has none (PyTorch's `None`: it has not
    /// taken a momentum step), so only extra entries, wrong lengths and scalars are errors.
    fn load_state(&mut self, state: &OptimizerState) -> crate::Result<()> {
        let tensors = state.checked_tensors(&self.params, &[MOMENTUM_BUFFER])?;
        if let Some(k) = state.scalars.keys().next() {
            return Err(crate::Error::checkpoint_problem(format!(
                "unexpected scalar optimizer state '{k}' (SGD has none)"
            )));
        }
        for (i, buf) in self.momentum_buffers.iter_mut().enumerate() {
            *buf = tensors.get(&(MOMENTUM_BUFFER, i)).map(|v| v.to_vec());
        }
        Ok(())
    }

    fn hyperparameters(&self) -> Vec<(String, String)> {
        let c = &self.config;
        [
            ("lr", c.lr.to_string()),
            ("momentum", c.momentum.to_string()),
            ("dampening", c.dampening.to_string()),
            ("weight_decay", c.weight_decay.to_string()),
            ("nesterov", c.nesterov.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// PyTorch's name of SGD's per-parameter state.
const MOMENTUM_BUFFER: &str = "momentum_buffer";

/// The decimal an f32 hyper-parameter was written as (its shortest round-trip form: 0.9f32 ->
/// 0.9), as an f64. PyTorch's float32 SGD uses Python's (f64) hyper-parameters too.
pub fn decimal(x: f32) -> f64 {
    x.to_string().parse().expect("an f32 prints as a decimal")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three steps on p = [1, -2] with fixed gradients, against values computed by hand from
    /// the update rule in the header (the same numbers `torch.optim.SGD` gives).
    fn run(config: SgdConfig) -> Vec<f32> {
        let p = Tensor::parameter(vec![1.0, -2.0], &[2]);
        let mut opt = config.init(vec![p.clone()]);
        for g in [[0.5, 1.0], [0.25, -1.0], [-0.5, 0.0]] {
            p.set_grad(Some(g.to_vec()));
            opt.step();
            opt.zero_grad();
            assert!(p.grad().is_none());
        }
        p.to_vec()
    }

    fn assert_close(got: Vec<f32>, want: [f64; 2]) {
        for (a, b) in got.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn plain_sgd() {
        // p -= 0.1 * g summed: g sums to [0.25, 0]
        assert_close(run(SgdConfig::new(0.1)), [0.975, -2.0]);
    }

    #[test]
    fn momentum_first_step_takes_the_gradient_itself() {
        // buf: [0.5,1] -> [0.45+0.25, 0.9-1] = [0.7,-0.1] -> [0.63-0.5, -0.09] = [0.13,-0.09]
        // p = p - 0.1 * (sum of bufs) = [1 - 0.133, -2 - 0.081]
        assert_close(run(SgdConfig::new(0.1).with_momentum(0.9)), [0.867, -2.081]);
    }

    #[test]
    fn dampening_weight_decay_and_nesterov() {
        // dampening 0.5: buf1 = g1 = [0.5, 1]; buf2 = 0.9*buf1 + 0.5*g2 = [0.575, 0.4];
        // buf3 = 0.9*buf2 + 0.5*g3 = [0.2675, 0.36]; p = p - 0.1*(sum) = [0.86575, -2.176]
        assert_close(
            run(SgdConfig::new(0.1).with_momentum(0.9).with_dampening(0.5)),
            [0.86575, -2.176],
        );
        // weight decay 0.1 without momentum: d = g + 0.1 p at each step.
        let mut p = [1.0f64, -2.0];
        for g in [[0.5, 1.0], [0.25, -1.0], [-0.5, 0.0]] {
            for k in 0..2 {
                p[k] -= 0.1 * (g[k] + 0.1 * p[k]);
            }
        }
        assert_close(run(SgdConfig::new(0.1).with_weight_decay(0.1)), p);
        // nesterov: d = g + 0.9 * buf
        let mut p = [1.0f64, -2.0];
        let mut buf: Option<[f64; 2]> = None;
        for g in [[0.5, 1.0], [0.25, -1.0], [-0.5, 0.0]] {
            let b = match buf {
                None => g,
                Some(b) => [0.9 * b[0] + g[0], 0.9 * b[1] + g[1]],
            };
            buf = Some(b);
            for k in 0..2 {
                p[k] -= 0.1 * (g[k] + 0.9 * b[k]);
            }
        }
        assert_close(run(SgdConfig::new(0.1).with_momentum(0.9).with_nesterov(true)), p);
    }

    #[test]
    fn hyper_parameters_are_the_decimals_written() {
        assert_eq!(decimal(0.9), 0.9f64);
        assert_eq!(decimal(0.1), 0.1f64);
        assert_ne!(0.9f32 as f64, 0.9f64, "the f32 itself is not 0.9");
        assert_eq!(decimal(1e-3), 1e-3f64);
    }

    #[test]
    fn parameters_without_gradient_are_left_alone() {
        let p = Tensor::parameter(vec![3.0], &[1]);
        let mut opt = SgdConfig::new(0.1).with_momentum(0.9).init(vec![p.clone()]);
        opt.step();
        assert_eq!(p.to_vec(), vec![3.0]);
        assert!(opt.momentum_buffers[0].is_none());
    }

    #[test]
    fn state_round_trips_and_missing_buffers_mean_none() {
        let (a, b) = (
            Tensor::parameter(vec![1.0, 2.0], &[2]),
            Tensor::parameter(vec![3.0], &[1]),
        );
        let mut opt = SgdConfig::new(0.1).with_momentum(0.9).init(vec![a.clone(), b.clone()]);
        a.set_grad(Some(vec![0.5, -0.5]));
        Optimizer::step(&mut opt);
        let s = opt.state();
        assert_eq!(s.tensors.len(), 1, "b has no buffer yet");
        assert_eq!((s.tensors[0].key.as_str(), s.tensors[0].param), ("momentum_buffer", 0));
        let mut fresh = SgdConfig::new(0.1).with_momentum(0.9).init(vec![a.clone(), b.clone()]);
        fresh.momentum_buffers[1] = Some(vec![7.0]);
        fresh.load_state(&s).unwrap();
        assert_eq!(fresh.momentum_buffers, opt.momentum_buffers);
        let mut bad = s.clone();
        bad.tensors[0].values.push(1.0);
        let e = fresh.load_state(&bad).unwrap_err().to_string();
        assert!(
            e.contains("'momentum_buffer' of parameter 0 has 3 values, expected 2"),
            "{e}"
        );
        let mut bad = s.clone();
        bad.scalars.insert("step.0".into(), "1".into());
        assert!(fresh.load_state(&bad).unwrap_err().to_string().contains("SGD has none"));
    }

    #[test]
    fn trait_accessors_and_validation() {
        let mut opt = SgdConfig::new(0.1).with_momentum(0.9).init(vec![]);
        assert_eq!(
            (Optimizer::lr(&opt), opt.momentum(), opt.name()),
            (0.1, Some(0.9), "sgd")
        );
        opt.set_lr(0.05);
        opt.set_momentum(0.8);
        assert_eq!((opt.config.lr, opt.config.momentum), (0.05, 0.8));
        let h = opt.hyperparameters();
        assert_eq!(h[0], ("lr".to_string(), "0.05".to_string()));
        assert_eq!(h[4], ("nesterov".to_string(), "false".to_string()));
        let e = SgdConfig::new(0.1)
            .with_nesterov(true)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("Nesterov"), "{e}");
        assert!(SgdConfig::new(-0.1).validate().unwrap_err().to_string().contains("lr"));
    }
}
