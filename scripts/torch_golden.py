#!/usr/bin/env python3
"""Writes the PyTorch golden values that the Rust unit tests quote.

Run by hand (needs torch): python3 scripts/torch_golden.py
Writes tests/golden/conv2d.rs and tests/golden/cross_entropy.rs as Rust constants.
Inputs are closed-form (arange, sin, cos) so the Rust tests rebuild them exactly.
"""
import pathlib

import torch
import torch.nn.functional as F

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "golden"


def arr(name, t):
    vals = ", ".join(repr(float(v)) for v in t.detach().reshape(-1).tolist())
    return f"pub const {name}: [f32; {t.numel()}] = [{vals}];\n"


def header():
    return f"// Written by scripts/torch_golden.py with PyTorch {torch.__version__} (float32). Do not edit.\n"


def conv2d():
    x = (torch.arange(100, dtype=torch.float32) / 50 - 1).reshape(2, 2, 5, 5).requires_grad_()
    w = torch.sin(torch.arange(54, dtype=torch.float32)).reshape(3, 2, 3, 3).requires_grad_()
    b = torch.tensor([0.1, -0.2, 0.3]).requires_grad_()
    y = F.conv2d(x, w, b, stride=2, padding=1)
    r = torch.cos(torch.arange(y.numel(), dtype=torch.float32)).view_as(y)
    (y * r).sum().backward()
    (OUT / "conv2d.rs").write_text(
        header() + arr("Y", y) + arr("DX", x.grad) + arr("DW", w.grad) + arr("DB", b.grad)
    )


def cross_entropy():
    # Logits with a large spread, to show the log-softmax is stable.
    z = (torch.sin(torch.arange(4 * 10, dtype=torch.float32)) * 30).reshape(4, 10)
    z[1, 3] = 200.0
    z = z.requires_grad_()
    target = torch.tensor([3, 0, 9, 5])
    loss = F.cross_entropy(z, target)
    loss.backward()
    (OUT / "cross_entropy.rs").write_text(
        header() + f"pub const LOSS: f32 = {loss.item()!r};\n" + arr("DZ", z.grad)
    )


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    conv2d()
    cross_entropy()
    print("wrote", OUT)
