//! The optimizers and learning-rate schedules against `torch.optim`: 10 steps of SGD, Adam and
//! AdamW on fixed parameters and gradients, compared after each step with PyTorch's float32
//! run (1e-6 absolute) and its float64 run (1e-6, or no further than PyTorch's float32 run is);
//! 50 steps of each scheduler's lr and momentum (1e-6 relative); and state()/load_state(): a
//! run saved after some steps and restored into a fresh optimizer continues bit-identically.
//! Fixture: tests/fixtures/torch_optim_golden.safetensors, written by
//! scripts/torch_optim_golden.py (which lists the configurations used here).

use std::path::PathBuf;

use mnist_cnn::optim::schedule::{Anneal, OneCycle};
use mnist_cnn::optim::{AdamConfig, AdamWConfig, Optimizer, Schedule, ScheduleSpec, SgdConfig};
use mnist_cnn::tensor::Tensor;
use safetensors::SafeTensors;

#[path = "common/safetensors_f64.rs"]
mod safetensors_f64;
use safetensors_f64::values;

const STEPS: usize = 10;
const PARAMS: usize = 3;
const TOLERANCE: f64 = 1e-6;

fn fixture() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_optim_golden.safetensors");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The configurations of scripts/torch_optim_golden.py, by its names.
fn optimizer(name: &str, params: Vec<Tensor>) -> Box<dyn Optimizer> {
    match name {
        "sgd" => Box::new(SgdConfig::new(0.1).init(params)),
        "sgd_nesterov" => Box::new(
            SgdConfig::new(0.1)
                .with_momentum(0.9)
                .with_nesterov(true)
                .with_weight_decay(0.01)
                .init(params),
        ),
        "sgd_dampening" => Box::new(SgdConfig::new(0.1).with_momentum(0.9).with_dampening(0.5).init(params)),
        "adam" => Box::new(AdamConfig::new().init(params)),
        "adam_wd" => Box::new(AdamConfig::new().with_lr(0.01).with_weight_decay(0.1).init(params)),
        "adam_amsgrad" => Box::new(
            AdamConfig::new()
                .with_lr(0.01)
                .with_betas(0.9, 0.99)
                .with_amsgrad(true)
                .init(params),
        ),
        "adamw" => Box::new(AdamWConfig::new().init(params)),
        "adamw_amsgrad" => Box::new(
            AdamWConfig::new()
                .with_lr(0.01)
                .with_weight_decay(0.1)
                .with_amsgrad(true)
                .init(params),
        ),
        _ => panic!("no configuration '{name}'"),
    }
}

const OPTIMIZERS: [&str; 8] = [
    "sgd",
    "sgd_nesterov",
    "sgd_dampening",
    "adam",
    "adam_wd",
    "adam_amsgrad",
    "adamw",
    "adamw_amsgrad",
];

/// The fixed problem: initial values, and each step's gradient (`None` where absent).
struct Problem {
    init: Vec<Vec<f32>>,
    grads: Vec<Vec<Option<Vec<f32>>>>,
}

impl Problem {
    fn load(st: &SafeTensors) -> Problem {
        let present = values(st, "grad_present");
        let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let init: Vec<Vec<f32>> = (0..PARAMS).map(|i| f32s(&values(st, &format!("init.p{i}")))).collect();
        let grads = (0..STEPS)
            .map(|k| {
                (0..PARAMS)
                    .map(|i| {
                        let n = init[i].len();
                        let g = values(st, &format!("grad.p{i}"));
                        (present[k * PARAMS + i] == 1.0).then(|| f32s(&g[k * n..(k + 1) * n]))
                    })
                    .collect()
            })
            .collect();
        Problem { init, grads }
    }

    fn params(&self, values: &[Vec<f32>]) -> Vec<Tensor> {
        values
            .iter()
            .map(|v| Tensor::parameter(v.clone(), &[v.len()]))
            .collect()
    }

    /// Step `k` of `opt`: its gradients, the update, gradients cleared.
    fn step(&self, opt: &mut dyn Optimizer, k: usize) {
        for (p, g) in opt.params().iter().zip(&self.grads[k]) {
            p.set_grad(g.clone());
        }
        opt.step();
        opt.zero_grad();
    }
}

fn snapshot(opt: &dyn Optimizer) -> Vec<Vec<f32>> {
    opt.params().iter().map(Tensor::to_vec).collect()
}

/// Each optimizer after each step: within 1e-6 of PyTorch's float32 run, and of its float64
/// run (or no further from it than the float32 run is).
#[test]
fn optimizers_match_torch_after_each_step() {
    let bytes = fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let problem = Problem::load(&st);
    for name in OPTIMIZERS {
        let want32: Vec<Vec<f64>> = (0..PARAMS).map(|i| values(&st, &format!("{name}.f32.p{i}"))).collect();
        let want64: Vec<Vec<f64>> = (0..PARAMS).map(|i| values(&st, &format!("{name}.f64.p{i}"))).collect();
        let mut opt = optimizer(name, problem.params(&problem.init));
        let (mut worst32, mut worst64, mut torch32) = (0f64, 0f64, 0f64);
        for k in 0..STEPS {
            problem.step(opt.as_mut(), k);
            let (mut d32, mut d64, mut t32) = (0f64, 0f64, 0f64);
            for (i, got) in snapshot(opt.as_ref()).iter().enumerate() {
                let n = got.len();
                for (j, &g) in got.iter().enumerate() {
                    let (a, b) = (want32[i][k * n + j], want64[i][k * n + j]);
                    d32 = d32.max((g as f64 - a).abs());
                    d64 = d64.max((g as f64 - b).abs());
                    t32 = t32.max((a - b).abs());
                }
            }
            assert!(d32 <= TOLERANCE, "{name} step {}: {d32:e} from PyTorch float32", k + 1);
            assert!(
                d64 <= TOLERANCE.max(t32),
                "{name} step {}: {d64:e} from PyTorch float64, whose float32 run is {t32:e} from it",
                k + 1
            );
            (worst32, worst64, torch32) = (worst32.max(d32), worst64.max(d64), torch32.max(t32));
        }
        eprintln!(
            "{name:14} max |ours - torch f32| {worst32:.2e}  |ours - torch f64| {worst64:.2e}  |torch f32 - f64| {torch32:.2e}"
        );
    }
}

/// Saved after `split` steps, restored into a fresh optimizer over fresh parameters holding the
/// same values: the remaining steps are bit-identical to the uninterrupted run's.
#[test]
fn restored_state_continues_bit_identically() {
    let bytes = fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let problem = Problem::load(&st);
    // After 2 steps parameter 2 has no state yet (no gradient until step 3); after 5 all have.
    for split in [2, 5] {
        for name in OPTIMIZERS {
            let mut whole = optimizer(name, problem.params(&problem.init));
            (0..split).for_each(|k| problem.step(whole.as_mut(), k));
            let saved = whole.state();
            let mut resumed = optimizer(name, problem.params(&snapshot(whole.as_ref())));
            resumed.load_state(&saved).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(resumed.state(), saved, "{name}: state after load_state");
            for k in split..STEPS {
                problem.step(whole.as_mut(), k);
                problem.step(resumed.as_mut(), k);
                let bits = |o: &dyn Optimizer| -> Vec<Vec<u32>> {
                    snapshot(o)
                        .iter()
                        .map(|v| v.iter().map(|x| x.to_bits()).collect())
                        .collect()
                };
                assert_eq!(
                    bits(whole.as_ref()),
                    bits(resumed.as_ref()),
                    "{name} split {split} step {k}"
                );
            }
            assert_eq!(whole.state(), resumed.state(), "{name}");
            // Without the state, the continuation differs (so the comparison above shows something).
            if name != "sgd" {
                let mut cold = optimizer(
                    name,
                    problem.params(&snapshot(optimizer_after(&problem, name, split).as_ref())),
                );
                (split..STEPS).for_each(|k| problem.step(cold.as_mut(), k));
                assert_ne!(snapshot(cold.as_ref()), snapshot(whole.as_ref()), "{name}");
            }
        }
    }
}

fn optimizer_after(problem: &Problem, name: &str, steps: usize) -> Box<dyn Optimizer> {
    let mut opt = optimizer(name, problem.params(&problem.init));
    (0..steps).for_each(|k| problem.step(opt.as_mut(), k));
    opt
}

/// load_state rejects a state tensor of the wrong length, saying which and how long.
#[test]
fn load_state_rejects_a_wrong_length_tensor() {
    let bytes = fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let problem = Problem::load(&st);
    for name in ["sgd_nesterov", "adam", "adamw_amsgrad"] {
        let mut state = optimizer_after(&problem, name, 5).state();
        let t = &mut state.tensors[0];
        t.values.pop();
        let (key, param, len) = (t.key.clone(), t.param, t.values.len());
        let mut fresh = optimizer(name, problem.params(&problem.init));
        let e = fresh.load_state(&state).unwrap_err().to_string();
        let want = format!("'{key}' of parameter {param} has {len} values, expected {}", len + 1);
        assert!(e.contains(&want), "{name}: '{e}' lacks '{want}'");
        assert!(
            fresh.state().tensors.is_empty(),
            "{name}: a rejected state must change nothing"
        );
    }
}

/// Each scheduler's lr (and momentum) over 50 steps, within 1e-6 relative of PyTorch's.
#[test]
fn schedules_match_torch() {
    let bytes = fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (total, per_epoch) = (50, 5);
    let spec = |s: &str, lr: f32| s.parse::<ScheduleSpec>().unwrap().build(lr, total, per_epoch);
    let cases: [(&str, Schedule); 8] = [
        ("steplr", spec("step:3:0.5", 0.1)),
        ("cosine", spec("cosine", 0.1)),
        ("cosine_eta", spec("cosine:0.001", 0.1)),
        ("onecycle_sgd", spec("onecycle", 0.1)),
        ("onecycle_adam", spec("onecycle:0.01", 1e-3)),
        (
            "onecycle_3phase",
            Schedule::OneCycle(OneCycle {
                pct_start: 0.25,
                anneal: Anneal::Linear,
                three_phase: true,
                ..OneCycle::new(0.1, total)
            }),
        ),
        ("linear", spec("warmup:10", 0.1)),
        ("warmup_cosine", spec("warmup:10:0.1+cosine", 0.1)),
    ];
    for (name, schedule) in cases {
        let lr = values(&st, &format!("sched.{name}.lr"));
        let momentum = values(&st, &format!("sched.{name}.momentum"));
        assert_eq!(lr.len(), total);
        let mut worst = 0f64;
        for s in 0..total {
            let rel = |got: f32, want: f64| (got as f64 - want).abs() / want.abs();
            let d = rel(schedule.lr(s), lr[s]);
            assert!(d <= TOLERANCE, "{name} step {s}: lr {} vs {}", schedule.lr(s), lr[s]);
            worst = worst.max(d);
            match schedule.momentum(s) {
                Some(m) => {
                    let d = rel(m, momentum[s]);
                    assert!(d <= TOLERANCE, "{name} step {s}: momentum {m} vs {}", momentum[s]);
                }
                None => assert_eq!(momentum[s], momentum[0], "{name}: PyTorch changed the momentum"),
            }
        }
        let cycles = name.starts_with("onecycle");
        assert_eq!(schedule.momentum(0).is_some(), cycles, "{name}");
        eprintln!("{name:16} max relative lr error {worst:.2e}");
    }
}
