//! Learning-rate schedules (`torch.optim.lr_scheduler`), as pure functions of the training
//! position: the optimizer step about to be taken (0-based, counted over the whole run) and,
//! for the epoch-based ones, the steps per epoch. They hold no state, so a resumed run gets
//! the same learning rates bit for bit.
//!
//! Each [`Schedule`] gives the value PyTorch's scheduler has put in `param_groups[0]["lr"]` (and
//! `"momentum"` / `"betas"[0]`) when optimizer step `step` runs, with the scheduler's `step()`
//! called after each optimizer step, or after each epoch's last one for the epoch-based StepLR.
//! The values are computed in f64 from the closed forms and rounded to f32 once; they match
//! PyTorch's to 1e-6 relative (tests/optim_golden.rs).
//!
//! CLI syntax ([`ScheduleSpec`], `str::parse`):
//! ```text
//!   constant                        no scheduler: the optimizer's lr throughout
//!   step:EPOCHS[:GAMMA]             StepLR(step_size=EPOCHS, gamma=GAMMA (0.1)), per epoch
//!   cosine[:ETA_MIN]                CosineAnnealingLR(T_max=total steps, eta_min=ETA_MIN (0))
//!   onecycle[:MAX_LR]               OneCycleLR(max_lr=MAX_LR (the optimizer's lr), total_steps)
//!   warmup:STEPS[:START][+SCHED]    LinearLR(start_factor=START (1/3), total_iters=STEPS); with
//!                                   +SCHED (constant, step.., cosine..), SequentialLR([LinearLR,
//!                                   SCHED], milestones=[STEPS]), SCHED over the remaining steps
//! ```

use std::fmt;
use std::str::FromStr;

use super::{Optimizer, decimal};

/// OneCycleLR's `anneal_strategy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anneal {
    /// `"cos"`: `end + (start - end) / 2 * (cos(pi * pct) + 1)`.
    Cos,
    /// `"linear"`: `start + (end - start) * pct`.
    Linear,
}

impl Anneal {
    fn apply(self, start: f64, end: f64, pct: f64) -> f64 {
        match self {
            Anneal::Cos => end + (start - end) / 2.0 * ((std::f64::consts::PI * pct).cos() + 1.0),
            Anneal::Linear => (end - start) * pct + start,
        }
    }
}

/// `torch.optim.lr_scheduler.OneCycleLR`'s arguments; [`OneCycle::new`] has its defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct OneCycle {
    pub max_lr: f64,
    pub total_steps: usize,
    /// Share of the steps spent increasing the lr (0.3).
    pub pct_start: f64,
    /// `anneal_strategy` (cos).
    pub anneal: Anneal,
    /// The initial lr is `max_lr / div_factor` (25).
    pub div_factor: f64,
    /// The final lr is `initial lr / final_div_factor` (1e4).
    pub final_div_factor: f64,
    /// Up to max_lr, back down to the initial lr, then to the final one (false: up, then down).
    pub three_phase: bool,
    /// `cycle_momentum`: `Some((base_momentum, max_momentum))` ((0.85, 0.95)); the momentum
    /// (SGD) or beta1 (Adam) goes inversely to the lr. `None`: left alone.
    pub cycle_momentum: Option<(f64, f64)>,
}

impl OneCycle {
    /// PyTorch's defaults: pct_start 0.3, cos, div_factor 25, final_div_factor 1e4, two
    /// phases, momentum cycled between 0.85 and 0.95.
    pub fn new(max_lr: f64, total_steps: usize) -> OneCycle {
        OneCycle {
            max_lr,
            total_steps,
            pct_start: 0.3,
            anneal: Anneal::Cos,
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
            cycle_momentum: Some((0.85, 0.95)),
        }
    }

    /// (lr, momentum) at `step`, as OneCycleLR's `get_lr`: the phase holding `step`, and the
    /// share of it done. Past the last step the final values are held (PyTorch raises).
    fn at(&self, step: usize) -> (f64, Option<f64>) {
        let total = self.total_steps.max(1) as f64;
        let step = step.min(self.total_steps.max(1) - 1) as f64;
        let initial = self.max_lr / self.div_factor;
        let min = initial / self.final_div_factor;
        let (base_m, max_m) = self.cycle_momentum.unwrap_or((0.0, 0.0));
        // (end step, start lr, end lr, start momentum, end momentum)
        let phases: Vec<(f64, f64, f64, f64, f64)> = if self.three_phase {
            vec![
                (self.pct_start * total - 1.0, initial, self.max_lr, max_m, base_m),
                (2.0 * self.pct_start * total - 2.0, self.max_lr, initial, base_m, max_m),
                (total - 1.0, initial, min, max_m, max_m),
            ]
        } else {
            vec![
                (self.pct_start * total - 1.0, initial, self.max_lr, max_m, base_m),
                (total - 1.0, self.max_lr, min, base_m, max_m),
            ]
        };
        let mut start_step = 0.0;
        for (i, &(end_step, lr0, lr1, m0, m1)) in phases.iter().enumerate() {
            if step <= end_step || i == phases.len() - 1 {
                // A phase of no length (PyTorch divides by zero) is done.
                let pct = if end_step == start_step {
                    1.0
                } else {
                    (step - start_step) / (end_step - start_step)
                };
                let lr = self.anneal.apply(lr0, lr1, pct);
                return (lr, self.cycle_momentum.map(|_| self.anneal.apply(m0, m1, pct)));
            }
            start_step = end_step;
        }
        unreachable!("the last phase always matches")
    }
}

/// A learning-rate schedule: the lr (and momentum, for OneCycleLR) of each optimizer step.
/// Hyper-parameters are f64, as PyTorch's are Python floats.
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    /// No scheduler: `lr` throughout.
    Constant { lr: f64 },
    /// `StepLR(step_size, gamma)` stepped once per epoch: `base_lr * gamma^(epoch / step_size)`
    /// with `epoch = step / steps_per_epoch` (whole divisions).
    Step {
        base_lr: f64,
        /// In epochs.
        step_size: usize,
        gamma: f64,
        steps_per_epoch: usize,
    },
    /// `CosineAnnealingLR(T_max, eta_min)` stepped once per optimizer step, in its closed form
    /// `eta_min + (base_lr - eta_min) * (1 + cos(pi * step / t_max)) / 2`.
    Cosine { base_lr: f64, t_max: usize, eta_min: f64 },
    /// `OneCycleLR`, stepped once per optimizer step.
    OneCycle(OneCycle),
    /// `LinearLR(start_factor, end_factor, total_iters)` stepped once per optimizer step:
    /// `base_lr * (start + (end - start) * min(step, total_iters) / total_iters)`. With `then`,
    /// `SequentialLR([LinearLR, then], milestones=[total_iters])`: from step `total_iters` on,
    /// `then` at `step - total_iters`.
    Linear {
        base_lr: f64,
        start_factor: f64,
        end_factor: f64,
        total_iters: usize,
        then: Option<Box<Schedule>>,
    },
}

impl Schedule {
    fn at(&self, step: usize) -> (f64, Option<f64>) {
        match self {
            Schedule::Constant { lr } => (*lr, None),
            Schedule::Step {
                base_lr,
                step_size,
                gamma,
                steps_per_epoch,
            } => {
                let epoch = step / (*steps_per_epoch).max(1);
                (base_lr * gamma.powf((epoch / (*step_size).max(1)) as f64), None)
            }
            Schedule::Cosine {
                base_lr,
                t_max,
                eta_min,
            } => {
                let t = step as f64 / (*t_max).max(1) as f64;
                let cos = (std::f64::consts::PI * t).cos();
                (eta_min + (base_lr - eta_min) * (1.0 + cos) / 2.0, None)
            }
            Schedule::OneCycle(c) => c.at(step),
            Schedule::Linear {
                base_lr,
                start_factor,
                end_factor,
                total_iters,
                then,
            } => match then {
                Some(next) if step >= *total_iters => next.at(step - total_iters),
                _ => {
                    let done = step.min(*total_iters) as f64 / (*total_iters).max(1) as f64;
                    (base_lr * (start_factor + (end_factor - start_factor) * done), None)
                }
            },
        }
    }

    /// The learning rate of optimizer step `step` (0-based).
    pub fn lr(&self, step: usize) -> f32 {
        self.at(step).0 as f32
    }

    /// The momentum (SGD) or beta1 (Adam) of optimizer step `step`, for a schedule that sets
    /// it (OneCycleLR with cycle_momentum); `None` for the others.
    pub fn momentum(&self, step: usize) -> Option<f32> {
        self.at(step).1.map(|m| m as f32)
    }
}

/// Sets the learning rate of optimizer step `step` in `opt` (and the momentum where
/// `schedule` gives one); call it before that step.
pub fn apply(schedule: &Schedule, opt: &mut dyn Optimizer, step: usize) {
    opt.set_lr(schedule.lr(step));
    if let Some(m) = schedule.momentum(step) {
        opt.set_momentum(m);
    }
}

/// A schedule as written on the command line (syntax in the module header); [`build`](Self::build)
/// makes the [`Schedule`] once the run's length is known.
#[derive(Clone, Debug, PartialEq)]
pub enum ScheduleSpec {
    /// `constant`
    Constant,
    /// `step:EPOCHS[:GAMMA]`
    Step { epochs: usize, gamma: f64 },
    /// `cosine[:ETA_MIN]`
    Cosine { eta_min: f64 },
    /// `onecycle[:MAX_LR]` (the optimizer's lr when absent)
    OneCycle { max_lr: Option<f64> },
    /// `warmup:STEPS[:START_FACTOR][+SCHEDULE]`
    Warmup {
        steps: usize,
        start_factor: f64,
        then: Option<Box<ScheduleSpec>>,
    },
}

/// The syntax, for error messages.
const SYNTAX: &str =
    "constant, step:EPOCHS[:GAMMA], cosine[:ETA_MIN], onecycle[:MAX_LR] or warmup:STEPS[:START_FACTOR][+SCHEDULE]";

/// PyTorch's `LinearLR` default `start_factor`.
const DEFAULT_START_FACTOR: f64 = 1.0 / 3.0;

impl ScheduleSpec {
    /// The schedule of a run of `total_steps` optimizer steps, `steps_per_epoch` to an epoch,
    /// whose optimizer was made with learning rate `base_lr`.
    pub fn build(&self, base_lr: f32, total_steps: usize, steps_per_epoch: usize) -> Schedule {
        let base = decimal(base_lr);
        match self {
            ScheduleSpec::Constant => Schedule::Constant { lr: base },
            ScheduleSpec::Step { epochs, gamma } => Schedule::Step {
                base_lr: base,
                step_size: *epochs,
                gamma: *gamma,
                steps_per_epoch,
            },
            ScheduleSpec::Cosine { eta_min } => Schedule::Cosine {
                base_lr: base,
                t_max: total_steps,
                eta_min: *eta_min,
            },
            ScheduleSpec::OneCycle { max_lr } => Schedule::OneCycle(OneCycle::new(max_lr.unwrap_or(base), total_steps)),
            ScheduleSpec::Warmup {
                steps,
                start_factor,
                then,
            } => Schedule::Linear {
                base_lr: base,
                start_factor: *start_factor,
                end_factor: 1.0,
                total_iters: *steps,
                then: then
                    .as_ref()
                    .map(|t| Box::new(t.build(base_lr, total_steps.saturating_sub(*steps), steps_per_epoch))),
            },
        }
    }
}

/// A positive whole number.
fn count(s: &str, what: &str, spec: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("bad schedule '{spec}': {what} must be a whole number > 0, got '{s}'"))
}

/// A finite number accepted by `ok` (described by `must`).
fn number(s: &str, what: &str, must: &str, ok: impl Fn(f64) -> bool, spec: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|&x| x.is_finite() && ok(x))
        .ok_or_else(|| format!("bad schedule '{spec}': {what} must be {must}, got '{s}'"))
}

/// A spec that is not valid is an [`Error::Settings`](crate::Error::Settings) saying why.
impl FromStr for ScheduleSpec {
    type Err = crate::Error;

    fn from_str(spec: &str) -> crate::Result<Self> {
        parse_spec(spec).map_err(crate::Error::settings)
    }
}

fn parse_spec(spec: &str) -> Result<ScheduleSpec, String> {
    // The '+' before a schedule's name (not an exponent's, as in 1e+3).
    let plus = spec
        .char_indices()
        .find(|&(i, c)| c == '+' && spec[i + 1..].starts_with(|n: char| n.is_ascii_alphabetic()));
    let (head, then) = match plus {
        Some((i, _)) => (&spec[..i], Some(&spec[i + 1..])),
        None => (spec, None),
    };
    let parts: Vec<&str> = head.split(':').collect();
    let args = &parts[1..];
    let arity = |max: usize| {
        if args.len() > max {
            Err(format!(
                "bad schedule '{spec}': too many ':' arguments (expected {SYNTAX})"
            ))
        } else {
            Ok(())
        }
    };
    if then.is_some() && parts[0] != "warmup" {
        return Err(format!(
            "bad schedule '{spec}': only warmup can be followed by '+SCHEDULE'"
        ));
    }
    match parts[0] {
        "constant" => {
            arity(0)?;
            Ok(ScheduleSpec::Constant)
        }
        "step" => {
            arity(2)?;
            let epochs = args
                .first()
                .ok_or_else(|| format!("bad schedule '{spec}': step needs EPOCHS (step:EPOCHS[:GAMMA])"))?;
            Ok(ScheduleSpec::Step {
                epochs: count(epochs, "EPOCHS", spec)?,
                gamma: match args.get(1) {
                    Some(g) => number(g, "GAMMA", "a number > 0", |x| x > 0.0, spec)?,
                    None => 0.1,
                },
            })
        }
        "cosine" => {
            arity(1)?;
            Ok(ScheduleSpec::Cosine {
                eta_min: match args.first() {
                    Some(e) => number(e, "ETA_MIN", "a number >= 0", |x| x >= 0.0, spec)?,
                    None => 0.0,
                },
            })
        }
        "onecycle" => {
            arity(1)?;
            Ok(ScheduleSpec::OneCycle {
                max_lr: match args.first() {
                    Some(m) => Some(number(m, "MAX_LR", "a number > 0", |x| x > 0.0, spec)?),
                    None => None,
                },
            })
        }
        "warmup" => {
            arity(2)?;
            let steps = args
                .first()
                .ok_or_else(|| format!("bad schedule '{spec}': warmup needs STEPS (warmup:STEPS)"))?;
            let then = match then {
                None => None,
                Some(t) => {
                    let next = parse_spec(t)?;
                    if matches!(next, ScheduleSpec::OneCycle { .. } | ScheduleSpec::Warmup { .. }) {
                        return Err(format!(
                            "bad schedule '{spec}': warmup can be followed by constant, step or cosine (onecycle warms up itself)"
                        ));
                    }
                    Some(Box::new(next))
                }
            };
            Ok(ScheduleSpec::Warmup {
                steps: count(steps, "STEPS", spec)?,
                start_factor: match args.get(1) {
                    Some(f) => number(f, "START_FACTOR", "in (0, 1]", |x| x > 0.0 && x <= 1.0, spec)?,
                    None => DEFAULT_START_FACTOR,
                },
                then,
            })
        }
        other => Err(format!("unknown schedule '{other}' in '{spec}': expected {SYNTAX}")),
    }
}

/// The syntax it was parsed from (normalised: defaults left out), so it round-trips.
impl fmt::Display for ScheduleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleSpec::Constant => write!(f, "constant"),
            ScheduleSpec::Step { epochs, gamma } => write!(f, "step:{epochs}:{gamma}"),
            ScheduleSpec::Cosine { eta_min } if *eta_min == 0.0 => write!(f, "cosine"),
            ScheduleSpec::Cosine { eta_min } => write!(f, "cosine:{eta_min}"),
            ScheduleSpec::OneCycle { max_lr: None } => write!(f, "onecycle"),
            ScheduleSpec::OneCycle { max_lr: Some(m) } => write!(f, "onecycle:{m}"),
            ScheduleSpec::Warmup {
                steps,
                start_factor,
                then,
            } => {
                write!(f, "warmup:{steps}")?;
                if *start_factor != DEFAULT_START_FACTOR {
                    write!(f, ":{start_factor}")?;
                }
                match then {
                    Some(t) => write!(f, "+{t}"),
                    None => Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{AdamConfig, SgdConfig};

    #[test]
    fn specs_parse_with_pytorch_defaults_and_round_trip() {
        let cases = [
            ("constant", ScheduleSpec::Constant),
            ("step:3", ScheduleSpec::Step { epochs: 3, gamma: 0.1 }),
            ("step:3:0.5", ScheduleSpec::Step { epochs: 3, gamma: 0.5 }),
            ("cosine", ScheduleSpec::Cosine { eta_min: 0.0 }),
            ("cosine:0.001", ScheduleSpec::Cosine { eta_min: 0.001 }),
            ("onecycle", ScheduleSpec::OneCycle { max_lr: None }),
            ("onecycle:0.3", ScheduleSpec::OneCycle { max_lr: Some(0.3) }),
            ("onecycle:1e+0", ScheduleSpec::OneCycle { max_lr: Some(1.0) }),
            (
                "warmup:100",
                ScheduleSpec::Warmup {
                    steps: 100,
                    start_factor: 1.0 / 3.0,
                    then: None,
                },
            ),
            (
                "warmup:10:0.1+cosine",
                ScheduleSpec::Warmup {
                    steps: 10,
                    start_factor: 0.1,
                    then: Some(Box::new(ScheduleSpec::Cosine { eta_min: 0.0 })),
                },
            ),
        ];
        for (text, spec) in cases {
            let parsed: ScheduleSpec = text.parse().unwrap();
            assert_eq!(parsed, spec, "{text}");
            let shown = parsed.to_string();
            assert_eq!(shown.parse::<ScheduleSpec>().unwrap(), spec, "{text} -> {shown}");
        }
        assert_eq!("step:3".parse::<ScheduleSpec>().unwrap().to_string(), "step:3:0.1");
    }

    #[test]
    fn bad_specs_are_rejected_with_what_is_wrong() {
        let cases = [
            ("", "unknown schedule ''"),
            ("linear", "unknown schedule 'linear'"),
            ("step", "step needs EPOCHS"),
            ("step:0", "EPOCHS must be a whole number > 0, got '0'"),
            ("step:2:-1", "GAMMA must be a number > 0"),
            ("step:2:0.5:1", "too many ':' arguments"),
            ("cosine:-0.1", "ETA_MIN must be a number >= 0"),
            ("onecycle:nan", "MAX_LR must be a number > 0"),
            ("constant:1", "too many ':' arguments"),
            ("warmup", "warmup needs STEPS"),
            ("warmup:10:0", "START_FACTOR must be in (0, 1]"),
            (
                "warmup:10+onecycle",
                "warmup can be followed by constant, step or cosine",
            ),
            (
                "warmup:10+warmup:5",
                "warmup can be followed by constant, step or cosine",
            ),
            ("warmup:10+bogus", "unknown schedule 'bogus'"),
            ("cosine+constant", "only warmup can be followed"),
        ];
        for (text, want) in cases {
            let e = text.parse::<ScheduleSpec>().unwrap_err();
            assert!(matches!(e, crate::Error::Settings { path: None, .. }), "{e:?}");
            assert!(e.to_string().contains(want), "'{text}': {e}");
        }
    }

    #[test]
    fn step_lr_decays_once_per_step_size_epochs() {
        let s = "step:2:0.5".parse::<ScheduleSpec>().unwrap().build(0.1, 100, 10);
        assert_eq!(s.lr(0), 0.1);
        assert_eq!(s.lr(19), 0.1);
        assert_eq!(s.lr(20), 0.05);
        assert_eq!(s.lr(40), 0.025);
        assert_eq!(s.momentum(40), None);
    }

    #[test]
    fn warmup_rises_linearly_then_hands_over() {
        let s = "warmup:4:0.2+cosine".parse::<ScheduleSpec>().unwrap().build(1.0, 14, 7);
        let lrs: Vec<f32> = (0..5).map(|i| s.lr(i)).collect();
        assert_eq!(lrs, vec![0.2, 0.4, 0.6, 0.8, 1.0]);
        // cosine over the remaining 10 steps: halfway at step 4 + 5.
        assert!((s.lr(9) - 0.5).abs() < 1e-7);
        let plain = "warmup:4".parse::<ScheduleSpec>().unwrap().build(1.0, 14, 7);
        assert_eq!(plain.lr(100), 1.0);
    }

    #[test]
    fn one_cycle_edges_and_degenerate_lengths() {
        let s = Schedule::OneCycle(OneCycle::new(1.0, 100));
        assert_eq!(s.lr(0), 0.04);
        assert_eq!(s.momentum(0), Some(0.95));
        // Peak at the end of the first phase (step 29): max lr, base momentum.
        assert_eq!(s.lr(29), 1.0);
        assert_eq!(s.momentum(29), Some(0.85));
        assert_eq!(s.lr(99), 4e-6);
        assert_eq!(s.lr(1000), s.lr(99), "the final lr is held");
        // One step in all: no division by zero.
        let one = Schedule::OneCycle(OneCycle::new(1.0, 1));
        assert!(one.lr(0).is_finite());
        let short = Schedule::OneCycle(OneCycle {
            pct_start: 0.5,
            ..OneCycle::new(1.0, 2)
        });
        assert!(short.lr(0).is_finite() && short.lr(1).is_finite());
    }

    #[test]
    fn apply_sets_lr_and_cycles_sgd_momentum_or_adam_beta1() {
        let s = Schedule::OneCycle(OneCycle::new(0.5, 10));
        let mut sgd = SgdConfig::new(0.1).with_momentum(0.9).init(vec![]);
        apply(&s, &mut sgd, 3);
        assert_eq!((sgd.config.lr, sgd.config.momentum), (s.lr(3), s.momentum(3).unwrap()));
        let mut adam = AdamConfig::new().init(vec![]);
        apply(&s, &mut adam, 3);
        assert_eq!(
            (adam.config.lr, adam.config.betas),
            (s.lr(3), (s.momentum(3).unwrap(), 0.999))
        );
        // A schedule without momentum leaves it alone.
        let c = "cosine".parse::<ScheduleSpec>().unwrap().build(0.1, 10, 5);
        apply(&c, &mut sgd, 5);
        assert_eq!((sgd.config.lr, sgd.config.momentum), (0.05, s.momentum(3).unwrap()));
    }
}
