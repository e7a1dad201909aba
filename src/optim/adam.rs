//! Adam and AdamW with PyTorch's semantics (`torch.optim.Adam`, `torch.optim.AdamW`): the
//! single-tensor (for-loop) algorithm of `torch.optim.adam._single_tensor_adam`, which
//! PyTorch uses on the CPU.
//!
//! For each parameter p with gradient g, its own step count t += 1, then:
//!   Adam:    g = g + weight_decay * p                (an L2 penalty in the gradient)
//!   AdamW:   p = p * (1 - lr * weight_decay)         (decoupled weight decay, first)
//!   m = m + (1 - beta1) * (g - m)                    (`exp_avg.lerp_(g, 1 - beta1)`)
//!   v = beta2 * v + (1 - beta2) * g * g              (`exp_avg_sq`)
//!   amsgrad: v_max = max(v_max, v), used as v below  (`max_exp_avg_sq`)
//!   denom = sqrt(v) / sqrt(1 - beta2^t) + eps
//!   p = p - lr / (1 - beta1^t) * m / denom
//! m, v and v_max start at zero on a parameter's first step. Parameters without a gradient are
//! skipped and keep their step count.
//!
//! Rounding: each stored value — the L2-decayed gradient, the decoupled-decayed parameter, m,
//! v, v_max and the updated parameter — is computed in f64 from f32 values, with the
//! hyper-parameters as decimals ([`decimal`]), and rounded to f32 once; the bias corrections and
//! the denominator are f64 temporaries. One exception follows PyTorch's float32 kernel: AdamW's
//! factor `1 - lr * weight_decay` is used as an f32 (0.99999 is 0.99998999 in f32, 0.14% more
//! decay at the defaults), because PyTorch multiplies by the factor in float32: with the decimal
//! factor the golden AdamW run is 1.2e-6 from PyTorch's float32 one by step 5, with it 0.

use super::{Optimizer, OptimizerState, StateTensor, decimal};
use crate::ops::simd::{Kernel, Simd};
use crate::tensor::Tensor;

/// Hyper-parameters of [`Adam`], with `torch.optim.Adam`'s defaults: lr 1e-3, betas (0.9,
/// 0.999), eps 1e-8, weight_decay 0 (an L2 penalty), amsgrad off.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f32,
    pub betas: (f32, f32),
    pub eps: f32,
    pub weight_decay: f32,
    pub amsgrad: bool,
}

/// Hyper-parameters of AdamW (an [`Adam`] with decoupled weight decay), with
/// `torch.optim.AdamW`'s defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 1e-2,
/// amsgrad off.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamWConfig {
    pub lr: f32,
    pub betas: (f32, f32),
    pub eps: f32,
    pub weight_decay: f32,
    pub amsgrad: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
        }
    }
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 1e-2,
            amsgrad: false,
        }
    }
}

/// The builder methods and checks both configurations share.
macro_rules! adam_builders {
    ($config:ident, $what:literal) => {
        impl $config {
            /// The defaults.
            pub fn new() -> Self {
                Self::default()
            }
            pub fn with_lr(self, lr: f32) -> Self {
                $config { lr, ..self }
            }
            pub fn with_betas(self, beta1: f32, beta2: f32) -> Self {
                $config {
                    betas: (beta1, beta2),
                    ..self
                }
            }
            pub fn with_eps(self, eps: f32) -> Self {
                $config { eps, ..self }
            }
            pub fn with_weight_decay(self, weight_decay: f32) -> Self {
                $config { weight_decay, ..self }
            }
            pub fn with_amsgrad(self, amsgrad: bool) -> Self {
                $config { amsgrad, ..self }
            }

            /// Checks the hyper-parameters as PyTorch does: lr, eps and weight_decay finite and
            /// >= 0, each beta in [0, 1).
            pub fn validate(&self) -> crate::Result<()> {
                for (name, v) in [
                    ("lr", self.lr),
                    ("eps", self.eps),
                    ("weight_decay", self.weight_decay),
                ] {
                    if !(v.is_finite() && v >= 0.0) {
                        return Err(crate::Error::settings(format!(
                            "{} {name} must be a finite number >= 0, got {v}",
                            $what
                        )));
                    }
                }
                for (i, b) in [self.betas.0, self.betas.1].into_iter().enumerate() {
                    if !(0.0..1.0).contains(&b) {
                        return Err(crate::Error::settings(format!(
                            "{} beta{} must be in [0, 1), got {b}",
                            $what,
                            i + 1
                        )));
                    }
                }
                Ok(())
            }
        }
    };
}

adam_builders!(AdamConfig, "Adam");
adam_builders!(AdamWConfig, "AdamW");

impl AdamConfig {
    /// The optimizer over `params`. Panics on hyper-parameters [`validate`](Self::validate)
    /// rejects (check user input with it first).
    pub fn init(&self, params: Vec<Tensor>) -> Adam {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        Adam::new(self.clone(), false, params)
    }
}

impl AdamWConfig {
    /// The optimizer over `params`: an [`Adam`] with decoupled weight decay, whose
    /// [`name`](Optimizer::name) is "adamw". Panics on hyper-parameters
    /// [`validate`](Self::validate) rejects.
    pub fn init(&self, params: Vec<Tensor>) -> Adam {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let c = AdamConfig {
            lr: self.lr,
            betas: self.betas,
            eps: self.eps,
            weight_decay: self.weight_decay,
            amsgrad: self.amsgrad,
        };
        Adam::new(c, true, params)
    }
}

/// One parameter's state, created on its first step.
#[derive(Clone, Debug, PartialEq)]
struct ParamState {
    step: u64,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
    /// With amsgrad only.
    max_exp_avg_sq: Option<Vec<f32>>,
}

/// How a step decays the weights: not, decoupled (the parameter times the f32 factor, AdamW) or
/// as an L2 penalty added to the gradient (Adam's weight_decay).
#[derive(Clone, Copy)]
enum Decay {
    None,
    Decoupled(f64),
    L2(f64),
}

/// One parameter's step's constants (see the module header).
#[derive(Clone, Copy)]
struct Constants {
    decay: Decay,
    beta1: f64,
    beta2: f64,
    step_size: f64,
    bias_correction2_sqrt: f64,
    eps: f64,
}

/// One parameter's update over its elements: weights, gradient, m, v and (amsgrad) v_max.
/// Run through a backend's `vectorize` (a [`Kernel`]), so that these plain f64 loops are
/// compiled with its vector instructions: the compiler vectorises them (square roots and
/// divisions included, each correctly rounded, so every backend gives the same bits). Scalar,
/// `bncnn`'s AdamW step took 0.30-0.32 ms of a 32-image training step.
struct Elements<'a> {
    w: &'a mut [f32],
    g: &'a [f32],
    m: &'a mut [f32],
    v: &'a mut [f32],
    vmax: Option<&'a mut [f32]>,
    k: Constants,
}

fn run_elements<S: Simd>(s: S, job: Elements) {
    s.vectorize(job)
}

impl Kernel for Elements<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, _: S) {
        let Elements { w, g, m, v, vmax, k } = self;
        let n = w.len();
        assert!(
            g.len() == n && m.len() == n && v.len() == n,
            "gradient, state and parameter differ in length"
        );
        if let Some(vmax) = &vmax {
            assert_eq!(vmax.len(), n, "max_exp_avg_sq and parameter differ in length");
        }
        // Each decay compiled apart (and each with and without amsgrad, in `update`), without
        // branches in its loop.
        match k.decay {
            Decay::None => update((w, g, m, v, vmax), k, |x| x, |g, _| g),
            Decay::Decoupled(d) => update((w, g, m, v, vmax), k, |x| (x * d) as f32 as f64, |g, _| g),
            Decay::L2(wd) => update((w, g, m, v, vmax), k, |x| x, |g, x| (g + wd * x) as f32 as f64),
        }
    }
}

/// m and v after a step with gradient g (rounded to f32 once each).
#[inline(always)]
fn moments(k: Constants, g: f64, m: f32, v: f32) -> (f32, f32) {
    let m_old = m as f64;
    let m = (m_old + (1.0 - k.beta1) * (g - m_old)) as f32;
    let v = (k.beta2 * v as f64 + (1.0 - k.beta2) * g * g) as f32;
    (m, v)
}

/// The parameter x after the step, from m and v.
#[inline(always)]
fn updated(k: Constants, x: f64, m: f32, v: f32) -> f32 {
    let denom = (v as f64).sqrt() / k.bias_correction2_sqrt + k.eps;
    (x - k.step_size * m as f64 / denom) as f32
}

/// The update of weights w with gradient g, moments m and v, and with amsgrad v_max:
/// `decayed(x)` is the parameter after the decoupled decay, `grad(g, x)` the gradient after the
/// L2 penalty.
#[allow(clippy::type_complexity)]
#[inline(always)]
fn update(
    (w, g, m, v, vmax): (&mut [f32], &[f32], &mut [f32], &mut [f32], Option<&mut [f32]>),
    k: Constants,
    decayed: impl Fn(f64) -> f64,
    grad: impl Fn(f64, f64) -> f64,
) {
    let mv = w.iter_mut().zip(g).zip(m.iter_mut().zip(v.iter_mut()));
    let Some(vmax) = vmax else {
        for ((w, &g), (m, v)) in mv {
            let x = *w as f64;
            let g = grad(g as f64, x);
            (*m, *v) = moments(k, g, *m, *v);
            *w = updated(k, decayed(x), *m, *v);
        }
        return;
    };
    for (((w, &g), (m, v)), vm) in mv.zip(vmax) {
        let x = *w as f64;
        let g = grad(g as f64, x);
        (*m, *v) = moments(k, g, *m, *v);
        // torch.maximum: NaN wins.
        *vm = if vm.is_nan() || v.is_nan() {
            f32::NAN
        } else {
            vm.max(*v)
        };
        *w = updated(k, decayed(x), *m, *vm);
    }
}

/// Adam, or AdamW when made by [`AdamWConfig::init`].
pub struct Adam {
    /// The hyper-parameters (AdamW's too; `weight_decay` is then decoupled).
    pub config: AdamConfig,
    decoupled: bool,
    params: Vec<Tensor>,
    /// One per parameter, `None` until its first step (as in PyTorch).
    state: Vec<Option<ParamState>>,
}

const EXP_AVG: &str = "exp_avg";
const EXP_AVG_SQ: &str = "exp_avg_sq";
const MAX_EXP_AVG_SQ: &str = "max_exp_avg_sq";

impl Adam {
    fn new(config: AdamConfig, decoupled: bool, params: Vec<Tensor>) -> Adam {
        let state = vec![None; params.len()];
        Adam {
            config,
            decoupled,
            params,
            state,
        }
    }

    /// The step count of parameter `i`: how many updates it has had (0 before its first).
    pub fn step_count(&self, i: usize) -> u64 {
        self.state[i].as_ref().map_or(0, |s| s.step)
    }

    /// The state tensor names this configuration has.
    fn keys(&self) -> &'static [&'static str] {
        if self.config.amsgrad {
            &[EXP_AVG, EXP_AVG_SQ, MAX_EXP_AVG_SQ]
        } else {
            &[EXP_AVG, EXP_AVG_SQ]
        }
    }
}

impl Optimizer for Adam {
    fn step(&mut self) {
        let c = &self.config;
        let (lr, beta1, beta2) = (decimal(c.lr), decimal(c.betas.0), decimal(c.betas.1));
        let (eps, weight_decay) = (decimal(c.eps), decimal(c.weight_decay));
        // PyTorch's float32 `param.mul_(1 - lr * weight_decay)` multiplies by an f32 factor.
        let decay = (1.0 - lr * weight_decay) as f32 as f64;
        for (p, state) in self.params.iter().zip(self.state.iter_mut()) {
            let grad = p.grad_ref();
            let Some(grad) = grad.as_ref() else { continue };
            let mut w = p.data_mut();
            assert_eq!(grad.len(), w.len(), "gradient and parameter differ in length");
            let s = state.get_or_insert_with(|| ParamState {
                step: 0,
                exp_avg: vec![0.0; w.len()],
                exp_avg_sq: vec![0.0; w.len()],
                max_exp_avg_sq: None,
            });
            if c.amsgrad && s.max_exp_avg_sq.is_none() {
                s.max_exp_avg_sq = Some(vec![0.0; w.len()]);
            }
            s.step += 1;
            let t = s.step as f64;
            let k = Constants {
                decay: match (c.weight_decay != 0.0, self.decoupled) {
                    (false, _) => Decay::None,
                    (true, true) => Decay::Decoupled(decay),
                    (true, false) => Decay::L2(weight_decay),
                },
                beta1,
                beta2,
                step_size: lr / (1.0 - beta1.powf(t)),
                bias_correction2_sqrt: (1.0 - beta2.powf(t)).sqrt(),
                eps,
            };
            let ParamState {
                exp_avg,
                exp_avg_sq,
                max_exp_avg_sq,
                ..
            } = s;
            let vmax = max_exp_avg_sq.as_deref_mut().filter(|_| c.amsgrad);
            let job = Elements {
                w: &mut w,
                g: grad,
                m: exp_avg,
                v: exp_avg_sq,
                vmax,
                k,
            };
            crate::simd_dispatch!(run_elements(job));
        }
    }

    fn zero_grad(&self) {
        self.params.iter().for_each(Tensor::zero_grad);
    }
    fn lr(&self) -> f32 {
        self.config.lr
    }
    fn set_lr(&mut self, lr: f32) {
        self.config.lr = lr;
    }
    /// beta1.
    fn momentum(&self) -> Option<f32> {
        Some(self.config.betas.0)
    }
    fn set_momentum(&mut self, m: f32) {
        self.config.betas.0 = m;
    }
    fn params(&self) -> &[Tensor] {
        &self.params
    }
    fn name(&self) -> &'static str {
        if self.decoupled { "adamw" } else { "adam" }
    }

    /// For each parameter that has taken a step: `exp_avg`, `exp_avg_sq`, with amsgrad
    /// `max_exp_avg_sq`, and the scalar `step.<i>`.
    fn state(&self) -> OptimizerState {
        let mut out = OptimizerState::default();
        for (param, s) in self.state.iter().enumerate() {
            let Some(s) = s else { continue };
            let mut push = |key: &str, values: &Vec<f32>| {
                out.tensors.push(StateTensor {
                    key: key.into(),
                    param,
                    values: values.clone(),
                })
            };
            push(EXP_AVG, &s.exp_avg);
            push(EXP_AVG_SQ, &s.exp_avg_sq);
            if let Some(vm) = &s.max_exp_avg_sq {
                push(MAX_EXP_AVG_SQ, vm);
            }
            out.scalars.insert(format!("step.{param}"), s.step.to_string());
        }
        out
    }

    /// A parameter's state is all or nothing: `step.<i>` with each of its tensors, or none of
    /// them (it has not taken a step).
    fn load_state(&mut self, state: &OptimizerState) -> crate::Result<()> {
        let bad = crate::Error::checkpoint_problem;
        let keys = self.keys();
        let tensors = state.checked_tensors(&self.params, keys)?;
        let n = self.params.len();
        let mut steps = vec![None; n];
        for (k, v) in &state.scalars {
            let i = (k.strip_prefix("step."))
                .and_then(|i| i.parse::<usize>().ok())
                .ok_or_else(|| {
                    bad(format!(
                        "unexpected scalar optimizer state '{k}' (expected step.<parameter>)"
                    ))
                })?;
            if i >= n {
                return Err(bad(format!(
                    "optimizer state '{k}' is for parameter {i}, but there are {n} parameters"
                )));
            }
            let step = v.parse::<u64>().ok().filter(|&s| s > 0).ok_or_else(|| {
                bad(format!(
                    "optimizer state '{k}' is '{v}', not a step count (a whole number > 0)"
                ))
            })?;
            steps[i] = Some(step);
        }
        let mut restored = Vec::with_capacity(n);
        for (i, step) in steps.into_iter().enumerate() {
            let get = |key: &str| tensors.get(&(key, i)).map(|v| v.to_vec());
            match step {
                None => {
                    if let Some(key) = keys.iter().find(|k| tensors.contains_key(&(**k, i))) {
                        return Err(bad(format!(
                            "optimizer state '{key}' of parameter {i} without its step count 'step.{i}'"
                        )));
                    }
                    restored.push(None);
                }
                Some(step) => {
                    let missing = |key: &str| {
                        bad(format!(
                            "optimizer state of parameter {i} has 'step.{i}' but no '{key}'"
                        ))
                    };
                    let max_exp_avg_sq = match self.config.amsgrad {
                        true => Some(get(MAX_EXP_AVG_SQ).ok_or_else(|| missing(MAX_EXP_AVG_SQ))?),
                        false => None,
                    };
                    restored.push(Some(ParamState {
                        step,
                        exp_avg: get(EXP_AVG).ok_or_else(|| missing(EXP_AVG))?,
                        exp_avg_sq: get(EXP_AVG_SQ).ok_or_else(|| missing(EXP_AVG_SQ))?,
                        max_exp_avg_sq,
                    }));
                }
            }
        }
        self.state = restored;
        Ok(())
    }

    fn hyperparameters(&self) -> Vec<(String, String)> {
        let c = &self.config;
        [
            ("lr", c.lr.to_string()),
            ("betas", format!("{},{}", c.betas.0, c.betas.1)),
            ("eps", c.eps.to_string()),
            ("weight_decay", c.weight_decay.to_string()),
            ("amsgrad", c.amsgrad.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One step on p = [1, -2, 0.5] with gradient `g`.
    fn one_step(opt: &mut Adam, p: &Tensor, g: [f32; 3]) -> Vec<f32> {
        p.set_grad(Some(g.to_vec()));
        opt.step();
        opt.zero_grad();
        p.to_vec()
    }

    /// The scalar update the vectorised one replaced (the module header's arithmetic, one
    /// element at a time): m, v, v_max and the parameters after `steps` steps.
    fn scalar_reference(c: &AdamConfig, decoupled: bool, p0: &[f32], grads: &[Vec<f32>]) -> [Vec<f32>; 4] {
        let (lr, beta1, beta2) = (decimal(c.lr), decimal(c.betas.0), decimal(c.betas.1));
        let (eps, weight_decay) = (decimal(c.eps), decimal(c.weight_decay));
        let decay = (1.0 - lr * weight_decay) as f32 as f64;
        let n = p0.len();
        let (mut w, mut m, mut v, mut vm) = (p0.to_vec(), vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
        for (step, grad) in grads.iter().enumerate() {
            let t = (step + 1) as f64;
            let step_size = lr / (1.0 - beta1.powf(t));
            let bias_correction2_sqrt = (1.0 - beta2.powf(t)).sqrt();
            for i in 0..n {
                let (mut g, mut x) = (grad[i] as f64, w[i] as f64);
                if c.weight_decay != 0.0 {
                    if decoupled {
                        x = (x * decay) as f32 as f64;
                    } else {
                        g = (g + weight_decay * x) as f32 as f64;
                    }
                }
                let m_old = m[i] as f64;
                m[i] = (m_old + (1.0 - beta1) * (g - m_old)) as f32;
                v[i] = (beta2 * v[i] as f64 + (1.0 - beta2) * g * g) as f32;
                let vv = if c.amsgrad {
                    vm[i] = if vm[i].is_nan() || v[i].is_nan() {
                        f32::NAN
                    } else {
                        vm[i].max(v[i])
                    };
                    vm[i]
                } else {
                    v[i]
                };
                let denom = (vv as f64).sqrt() / bias_correction2_sqrt + eps;
                w[i] = (x - step_size * m[i] as f64 / denom) as f32;
            }
        }
        [w, m, v, vm]
    }

    /// The vectorised update gives the scalar one's bits on every backend: Adam without decay,
    /// with its L2 penalty, AdamW, and AdamW with amsgrad; 1,000 values (whole vectors and a
    /// remainder) over four steps, gradients with zeros, tiny and large values.
    #[test]
    fn every_backend_gives_the_scalar_updates_bits() {
        let n = 1003;
        let mut rng = crate::rng::Rng::new(7);
        let p0: Vec<f32> = (0..n).map(|_| rng.uniform(-2.0, 2.0)).collect();
        let grads: Vec<Vec<f32>> = (0..4)
            .map(|_| {
                (0..n)
                    .map(|i| match i % 5 {
                        0 => 0.0,
                        1 => rng.uniform(-5e-7, 5e-7),
                        2 => rng.uniform(-500.0, 500.0),
                        _ => rng.uniform(-0.5, 0.5),
                    })
                    .collect()
            })
            .collect();
        let with = |wd: f32, amsgrad: bool| AdamConfig {
            lr: 3e-3,
            weight_decay: wd,
            amsgrad,
            ..AdamConfig::default()
        };
        let cases = [
            (with(0.0, false), false),
            (with(0.1, false), false),
            (with(0.05, false), true),
            (with(0.05, true), true),
        ];
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        crate::ops::simd::on_each_backend("adam", |b| {
            for (c, decoupled) in &cases {
                let [w, m, v, vm] = scalar_reference(c, *decoupled, &p0, &grads);
                let p = Tensor::parameter(p0.clone(), &[n]);
                let mut opt = Adam::new(c.clone(), *decoupled, vec![p.clone()]);
                for g in &grads {
                    p.set_grad(Some(g.clone()));
                    opt.step();
                }
                let st = opt.state[0].as_ref().expect("stepped");
                let what = format!("{b:?} {c:?} decoupled {decoupled}");
                assert_eq!(bits(&p.to_vec()), bits(&w), "{what}: parameters");
                assert_eq!(bits(&st.exp_avg), bits(&m), "{what}: exp_avg");
                assert_eq!(bits(&st.exp_avg_sq), bits(&v), "{what}: exp_avg_sq");
                if c.amsgrad {
                    assert_eq!(
                        bits(st.max_exp_avg_sq.as_deref().expect("amsgrad")),
                        bits(&vm),
                        "{what}"
                    );
                }
            }
        });
    }

    #[test]
    fn first_step_moves_each_value_by_lr_against_its_gradient_sign() {
        // Step 1: m = 0.1 g, v = 0.001 g², so m / bc1 = g and sqrt(v / bc2) = |g|.
        let p = Tensor::parameter(vec![1.0, -2.0, 0.5], &[3]);
        let mut opt = AdamConfig::new().with_lr(0.01).init(vec![p.clone()]);
        let got = one_step(&mut opt, &p, [0.5, -3.0, 1e-3]);
        let want = [
            1.0 - 0.01 * 0.5 / (0.5 + 1e-8),
            -2.0 + 0.01,
            0.5 - 0.01 * 1e-3 / (1e-3 + 1e-8),
        ];
        for (a, b) in got.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-7, "{got:?} vs {want:?}");
        }
        assert_eq!(opt.step_count(0), 1);
    }

    #[test]
    fn l2_and_decoupled_weight_decay_differ_as_in_pytorch() {
        // Zero gradient: Adam's L2 term is the whole gradient (a full lr step against p's sign);
        // AdamW only shrinks p by the f32 factor 1 - lr * wd (m = 0, so no Adam step).
        let p = Tensor::parameter(vec![1.0, -2.0, 0.5], &[3]);
        let mut adam = AdamConfig::new()
            .with_lr(0.1)
            .with_weight_decay(0.5)
            .init(vec![p.clone()]);
        let got = one_step(&mut adam, &p, [0.0; 3]);
        for (a, b) in got.iter().zip([0.9, -1.9, 0.4]) {
            assert!((a - b).abs() < 1e-6, "{got:?}");
        }
        let p = Tensor::parameter(vec![1.0, -2.0, 0.5], &[3]);
        let mut adamw = AdamWConfig::new()
            .with_lr(0.1)
            .with_weight_decay(0.5)
            .init(vec![p.clone()]);
        assert_eq!(adamw.name(), "adamw");
        let got = one_step(&mut adamw, &p, [0.0; 3]);
        assert_eq!(got, vec![0.95, -1.9, 0.475]);
    }

    #[test]
    fn amsgrad_normalises_by_the_largest_second_moment() {
        // A large gradient then small ones: with amsgrad the step shrinks, as v_max stays large.
        let run = |amsgrad: bool| {
            let p = Tensor::parameter(vec![0.0; 3], &[3]);
            let mut opt = AdamConfig::new()
                .with_betas(0.9, 0.5)
                .with_amsgrad(amsgrad)
                .init(vec![p.clone()]);
            one_step(&mut opt, &p, [10.0; 3]);
            let before = p.to_vec()[0];
            (before - one_step(&mut opt, &p, [0.1; 3])[0], opt.state())
        };
        let ((plain, s_plain), (ams, s_ams)) = (run(false), run(true));
        assert!(ams < plain * 0.9, "amsgrad step {ams} vs {plain}");
        assert!(!s_plain.tensors.iter().any(|t| t.key == MAX_EXP_AVG_SQ));
        let vm = s_ams.tensors.iter().find(|t| t.key == MAX_EXP_AVG_SQ).unwrap();
        let v = s_ams.tensors.iter().find(|t| t.key == EXP_AVG_SQ).unwrap();
        assert!(vm.values[0] > v.values[0]);
    }

    #[test]
    fn parameters_without_gradient_keep_their_step_count() {
        let (a, b) = (Tensor::parameter(vec![1.0], &[1]), Tensor::parameter(vec![2.0], &[1]));
        let mut opt = AdamConfig::new().init(vec![a.clone(), b.clone()]);
        a.set_grad(Some(vec![1.0]));
        opt.step();
        assert_eq!((opt.step_count(0), opt.step_count(1)), (1, 0));
        assert_eq!(b.to_vec(), vec![2.0]);
        let s = opt.state();
        assert_eq!(s.scalars.len(), 1);
        assert_eq!(s.scalars["step.0"], "1");
        assert!(s.tensors.iter().all(|t| t.param == 0));
    }

    #[test]
    fn load_state_rejects_inconsistent_state_and_changes_nothing() {
        let p = Tensor::parameter(vec![1.0, 2.0], &[2]);
        let mut opt = AdamConfig::new().init(vec![p.clone()]);
        p.set_grad(Some(vec![0.5, -0.5]));
        opt.step();
        let good = opt.state();
        let err = |f: &dyn Fn(&mut OptimizerState)| {
            let mut s = good.clone();
            f(&mut s);
            let mut fresh = AdamConfig::new().init(vec![p.clone()]);
            let e = fresh.load_state(&s).unwrap_err();
            assert_eq!(fresh.step_count(0), 0, "a rejected state must change nothing");
            assert!(matches!(e, crate::Error::Checkpoint { path: None, .. }), "{e:?}");
            e.to_string()
        };
        let e = err(&|s| s.tensors[0].values.push(0.0));
        assert!(e.contains("'exp_avg' of parameter 0 has 3 values, expected 2"), "{e}");
        let e = err(&|s| s.tensors.retain(|t| t.key != EXP_AVG_SQ));
        assert!(e.contains("has 'step.0' but no 'exp_avg_sq'"), "{e}");
        let e = err(&|s| s.scalars.clear());
        assert!(e.contains("without its step count 'step.0'"), "{e}");
        let e = err(&|s| {
            s.scalars.insert("step.0".into(), "x".into());
        });
        assert!(e.contains("'step.0' is 'x', not a step count"), "{e}");
        let e = err(&|s| {
            s.scalars.insert("lr".into(), "1".into());
        });
        assert!(e.contains("unexpected scalar optimizer state 'lr'"), "{e}");
        let e = err(&|s| {
            s.scalars.insert("step.4".into(), "1".into());
        });
        assert!(e.contains("parameter 4, but there are 1 parameters"), "{e}");
        let e = err(&|s| {
            let mut t = s.tensors[0].clone();
            t.key = MAX_EXP_AVG_SQ.into();
            s.tensors.push(t);
        });
        assert!(e.contains("unexpected optimizer state 'max_exp_avg_sq'"), "{e}");
        // amsgrad needs its maximum.
        let mut ams = AdamConfig::new().with_amsgrad(true).init(vec![p.clone()]);
        let e = ams.load_state(&good).unwrap_err().to_string();
        assert!(e.contains("no 'max_exp_avg_sq'"), "{e}");
        let mut fresh = AdamConfig::new().init(vec![p.clone()]);
        fresh.load_state(&good).unwrap();
        assert_eq!(fresh.state(), good);
    }

    #[test]
    fn hyper_parameters_are_checked_and_reported() {
        assert!(
            AdamConfig::new()
                .with_betas(0.9, 1.0)
                .validate()
                .unwrap_err()
                .to_string()
                .contains("beta2")
        );
        assert!(
            AdamWConfig::new()
                .with_lr(-1.0)
                .validate()
                .unwrap_err()
                .to_string()
                .contains("AdamW lr")
        );
        assert!(AdamConfig::new().with_eps(f32::NAN).validate().is_err());
        let opt = AdamConfig::new().init(vec![]);
        assert_eq!(opt.name(), "adam");
        let h = opt.hyperparameters();
        assert_eq!(h[0], ("lr".to_string(), "0.001".to_string()));
        assert_eq!(h[1], ("betas".to_string(), "0.9,0.999".to_string()));
        assert_eq!(AdamWConfig::new().weight_decay, 1e-2);
    }
}
