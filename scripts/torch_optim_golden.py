#!/usr/bin/env python3
"""Writes tests/fixtures/torch_optim_golden.safetensors, the fixture of tests/optim_golden.rs:
torch.optim's optimizers and learning-rate schedulers, for the Rust ones in src/optim/.

Run by hand (needs torch, numpy, safetensors): python3 scripts/torch_optim_golden.py

Problem: three parameters (shapes [3, 4], [4], [2]) drawn from randn (torch.manual_seed(0)),
and 10 gradients for each, randn scaled by 1/(1 + step) so that the second moments fall and
amsgrad's running maximum matters. Parameter 2 has no gradient at steps 0-2 and parameter 1
none at step 6 (the optimizers skip them, and Adam's per-parameter step counters differ).
Stored (all values flat, one row per step):
  init.p<i>            [numel]          F32  the starting values
  grad.p<i>            [10, numel]      F32  the gradients (rows of zeros where absent)
  grad_present         [10, 3]          F32  1 where parameter i has a gradient at step k
  <opt>.f32.p<i>       [10, numel]      F32  torch's float32 run: values after each step
  <opt>.f64.p<i>       [10, numel]      F64  the same run in float64 (from the same f32 inputs)
  sched.<name>.lr      [50]             F64  param_groups[0]["lr"] used by optimizer step s
  sched.<name>.momentum [50]            F64  its momentum (SGD) or betas[0] (Adam)
The optimizers (OPTIMIZERS below; all with foreach=False, PyTorch's single-tensor loop):
  sgd             SGD(lr=0.1)
  sgd_nesterov    SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
  sgd_dampening   SGD(lr=0.1, momentum=0.9, dampening=0.5)
  adam            Adam()                                  (lr 1e-3, betas (0.9, 0.999), eps 1e-8)
  adam_wd         Adam(lr=0.01, weight_decay=0.1)
  adam_amsgrad    Adam(lr=0.01, betas=(0.9, 0.99), amsgrad=True)
  adamw           AdamW()                                 (weight_decay 1e-2)
  adamw_amsgrad   AdamW(lr=0.01, weight_decay=0.1, amsgrad=True)
The schedulers (SCHEDULES below), over 50 optimizer steps; the epoch-based StepLR is stepped
once per epoch of STEPS_PER_EPOCH = 5 optimizer steps, the others after every optimizer step:
  steplr          SGD(lr=0.1), StepLR(step_size=3, gamma=0.5)
  cosine          SGD(lr=0.1), CosineAnnealingLR(T_max=50)
  cosine_eta      SGD(lr=0.1), CosineAnnealingLR(T_max=50, eta_min=0.001)
  onecycle_sgd    SGD(lr=0.1, momentum=0.9), OneCycleLR(max_lr=0.1, total_steps=50)
  onecycle_adam   Adam(lr=1e-3), OneCycleLR(max_lr=0.01, total_steps=50)
  onecycle_3phase SGD(lr=0.1, momentum=0.9), OneCycleLR(max_lr=0.1, total_steps=50,
                  pct_start=0.25, anneal_strategy="linear", three_phase=True)
  linear          SGD(lr=0.1), LinearLR(start_factor=1/3, total_iters=10)  (PyTorch's default factor)
  warmup_cosine   SGD(lr=0.1), SequentialLR([LinearLR(start_factor=0.1, total_iters=10),
                  CosineAnnealingLR(T_max=40)], milestones=[10])
"""
import pathlib

import numpy as np
import torch
from safetensors.numpy import save_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "torch_optim_golden.safetensors"
SHAPES = [(3, 4), (4,), (2,)]
STEPS = 10
SCHED_STEPS, STEPS_PER_EPOCH = 50, 5
O = torch.optim

OPTIMIZERS = {
    "sgd": lambda p: O.SGD(p, lr=0.1, foreach=False),
    "sgd_nesterov": lambda p: O.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01, foreach=False),
    "sgd_dampening": lambda p: O.SGD(p, lr=0.1, momentum=0.9, dampening=0.5, foreach=False),
    "adam": lambda p: O.Adam(p, foreach=False),
    "adam_wd": lambda p: O.Adam(p, lr=0.01, weight_decay=0.1, foreach=False),
    "adam_amsgrad": lambda p: O.Adam(p, lr=0.01, betas=(0.9, 0.99), amsgrad=True, foreach=False),
    "adamw": lambda p: O.AdamW(p, foreach=False),
    "adamw_amsgrad": lambda p: O.AdamW(p, lr=0.01, weight_decay=0.1, amsgrad=True, foreach=False),
}


def present(k, i):
    return not ((i == 2 and k < 3) or (i == 1 and k == 6))


def run(make, init, grads, dtype):
    params = [torch.nn.Parameter(torch.from_numpy(x).to(dtype, copy=True)) for x in init]
    opt = make(params)
    rows = [[] for _ in params]
    for k in range(STEPS):
        for i, p in enumerate(params):
            p.grad = torch.from_numpy(grads[i][k]).to(dtype, copy=True).reshape(p.shape) if present(k, i) else None
        opt.step()
        for i, p in enumerate(params):
            rows[i].append(p.detach().reshape(-1).clone().numpy())
    return [np.stack(r) for r in rows]


def sched_run(name):
    p = [torch.nn.Parameter(torch.zeros(1))]
    sched, per_epoch = None, False
    if name == "steplr":
        opt = O.SGD(p, lr=0.1)
        sched, per_epoch = O.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5), True
    elif name == "cosine":
        opt = O.SGD(p, lr=0.1)
        sched = O.lr_scheduler.CosineAnnealingLR(opt, T_max=SCHED_STEPS)
    elif name == "cosine_eta":
        opt = O.SGD(p, lr=0.1)
        sched = O.lr_scheduler.CosineAnnealingLR(opt, T_max=SCHED_STEPS, eta_min=0.001)
    elif name == "onecycle_sgd":
        opt = O.SGD(p, lr=0.1, momentum=0.9)
        sched = O.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=SCHED_STEPS)
    elif name == "onecycle_adam":
        opt = O.Adam(p, lr=1e-3)
        sched = O.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=SCHED_STEPS)
    elif name == "onecycle_3phase":
        opt = O.SGD(p, lr=0.1, momentum=0.9)
        sched = O.lr_scheduler.OneCycleLR(
            opt, max_lr=0.1, total_steps=SCHED_STEPS, pct_start=0.25, anneal_strategy="linear", three_phase=True
        )
    elif name == "linear":
        opt = O.SGD(p, lr=0.1)
        sched = O.lr_scheduler.LinearLR(opt, start_factor=1.0 / 3, total_iters=10)
    elif name == "warmup_cosine":
        opt = O.SGD(p, lr=0.1)
        warm = O.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=10)
        cos = O.lr_scheduler.CosineAnnealingLR(opt, T_max=SCHED_STEPS - 10)
        sched = O.lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[10])
    else:
        raise ValueError(name)
    lrs, moms = [], []
    for s in range(SCHED_STEPS):
        g = opt.param_groups[0]
        lrs.append(float(g["lr"]))
        moms.append(float(g["betas"][0] if "betas" in g else g["momentum"]))
        p[0].grad = torch.zeros(1)
        opt.step()
        if not per_epoch or (s + 1) % STEPS_PER_EPOCH == 0:
            sched.step()
    return np.array(lrs, dtype=np.float64), np.array(moms, dtype=np.float64)


SCHEDULES = ["steplr", "cosine", "cosine_eta", "onecycle_sgd", "onecycle_adam", "onecycle_3phase", "linear", "warmup_cosine"]


def main():
    torch.manual_seed(0)
    init = [torch.randn(s).numpy().astype(np.float32) for s in SHAPES]
    grads = [
        np.stack([(torch.randn(s) / (1 + k)).reshape(-1).numpy().astype(np.float32) for k in range(STEPS)])
        for s in SHAPES
    ]
    for i in range(len(SHAPES)):
        for k in range(STEPS):
            if not present(k, i):
                grads[i][k] = 0.0
    out = {"grad_present": np.array([[float(present(k, i)) for i in range(len(SHAPES))] for k in range(STEPS)], dtype=np.float32)}
    for i in range(len(SHAPES)):
        out[f"init.p{i}"] = init[i].reshape(-1)
        out[f"grad.p{i}"] = grads[i]
    for name, make in OPTIMIZERS.items():
        r32 = run(make, init, grads, torch.float32)
        r64 = run(make, init, grads, torch.float64)
        dev = max(np.abs(a.astype(np.float64) - b).max() for a, b in zip(r32, r64))
        print(f"{name:14} float32 vs float64 after 10 steps: max |diff| {dev:.3g}")
        for i in range(len(SHAPES)):
            out[f"{name}.f32.p{i}"] = r32[i].astype(np.float32)
            out[f"{name}.f64.p{i}"] = r64[i].astype(np.float64)
    # amsgrad must change the result, else its test shows nothing.
    plain = run(lambda p: O.Adam(p, lr=0.01, betas=(0.9, 0.99), foreach=False), init, grads, torch.float64)
    d = max(np.abs(a - b).max() for a, b in zip(plain, [out[f"adam_amsgrad.f64.p{i}"] for i in range(3)]))
    print(f"amsgrad moves the parameters by up to {d:.3g}")
    assert d > 1e-4
    for name in SCHEDULES:
        lr, mom = sched_run(name)
        out[f"sched.{name}.lr"] = lr
        out[f"sched.{name}.momentum"] = mom
    save_file(out, str(OUT), metadata={"torch": torch.__version__})
    print("wrote", OUT)


if __name__ == "__main__":
    main()
