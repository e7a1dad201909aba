#!/usr/bin/env python3
"""Writes tests/fixtures/torch_80_steps.safetensors, the fixture of the 80-step accuracy test
(tests/accuracy.rs).

Run by hand (needs torch, numpy, safetensors): python3 scripts/torch_80_steps.py

The tutorial's Mnist_CNN with PyTorch's default initialisation (torch.manual_seed(0)) takes 80
SGD steps (lr 0.1, momentum 0.9, batch 64) on the first 5,120 training images of the bundled
data/mnist in file order (pixels / 256, as the tutorial's pickle), once in float64 and once in
float32. Stored: the initial float32 weights (`init.<name>`), the float64 gradients of the
first batch from them (`grad64.<name>`; float32's relative errors in the metadata), the float64 run's final weights
(`f64.<name>`, F64), the float64 weights every 10 steps (`f64.step<N>.<name>`), and in the metadata the float32 run's largest distance from the float64 one.
"""
import gzip
import pathlib

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "torch_80_steps.safetensors"
STEPS, BATCH, LR, MOMENTUM = 80, 64, 0.1, 0.9
# The float64 weights are also stored after every EVERY steps (`f64.step<N>.<name>`).
EVERY = 10


def idx(name):
    data = gzip.open(ROOT / "data" / "mnist" / name).read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


class MnistCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 16, kernel_size=3, stride=2, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 16, kernel_size=3, stride=2, padding=1)
        self.conv3 = torch.nn.Conv2d(16, 10, kernel_size=3, stride=2, padding=1)

    def forward(self, xb):
        xb = xb.view(-1, 1, 28, 28)
        xb = F.relu(self.conv1(xb))
        xb = F.relu(self.conv2(xb))
        xb = F.relu(self.conv3(xb))
        xb = F.avg_pool2d(xb, 4)
        return xb.view(-1, xb.size(1))


def train(init, dtype, x, y, every=None):
    model = MnistCNN().to(dtype)
    model.load_state_dict({k: v.to(dtype) for k, v in init.items()})
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    x = x.to(dtype)
    snaps = {}
    for i in range(STEPS):
        xb, yb = x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH]
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if every and (i + 1) % every == 0 and i + 1 < STEPS:
            snaps[i + 1] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    final = {k: v.detach() for k, v in model.state_dict().items()}
    return (final, snaps) if every else final


def main():
    torch.manual_seed(0)
    init = {k: v.detach().clone() for k, v in MnistCNN().state_dict().items()}
    n = STEPS * BATCH
    x = torch.from_numpy(idx("train-images-idx3-ubyte.gz")[:n].reshape(n, 784).astype(np.float32) / 256)
    y = torch.from_numpy(idx("train-labels-idx1-ubyte.gz")[:n].astype(np.int64))
    w64, snaps = train(init, torch.float64, x, y, every=EVERY)
    w32, snaps32 = train(init, torch.float32, x, y, every=EVERY)
    dev32 = max((w32[k].double() - w64[k]).abs().max().item() for k in w64)
    for step in snaps:
        d = max((snaps32[step][k].double() - snaps[step][k]).abs().max().item() for k in w64)
        print(f"  float32 vs float64 after {step} steps: {d:.3e}")
    moved = max((w64[k] - init[k].double()).abs().max().item() for k in w64)
    print(f"float32 vs float64 after {STEPS} steps: max |diff| = {dev32:.3e}; largest weight change {moved:.3f}")
    # The gradients of the first batch from the initial weights, in float64 (`grad64.<name>`),
    # and how far float32's are from them, relative to each tensor's largest gradient.
    grads = {}
    for dtype in (torch.float64, torch.float32):
        model = MnistCNN().to(dtype)
        model.load_state_dict({k: v.to(dtype) for k, v in init.items()})
        F.cross_entropy(model(x[:BATCH].to(dtype)), y[:BATCH]).backward()
        grads[dtype] = {k: p.grad.double() for k, p in model.named_parameters()}
    rel32 = {
        k: ((grads[torch.float32][k] - g).abs().max() / g.abs().max()).item()
        for k, g in grads[torch.float64].items()
    }
    print("first batch, float32 gradient error / largest gradient:", {k: f"{v:.2e}" for k, v in rel32.items()})
    tensors = {f"init.{k}": v.numpy() for k, v in init.items()}
    tensors.update({f"grad64.{k}": v.numpy() for k, v in grads[torch.float64].items()})
    tensors.update({f"f64.{k}": v.numpy() for k, v in w64.items()})
    for step, w in snaps.items():
        tensors.update({f"f64.step{step}.{k}": v.numpy() for k, v in w.items()})
    meta = {
        "torch": torch.__version__,
        "steps": str(STEPS),
        "float32_max_abs_diff": f"{dev32:.3e}",
    }
    meta.update({f"float32_grad_rel_err.{k}": f"{v:.3e}" for k, v in rel32.items()})
    save_file(tensors, str(OUT), metadata=meta)
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
