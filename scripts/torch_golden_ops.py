#!/usr/bin/env python3
"""PyTorch golden values for the ops max_pool2d, adaptive_avg_pool2d, batch_norm2d, flatten, the
elementwise ops (add, sub, mul, div with broadcasting; exp, log, sqrt, pow) and the reductions
(sum, mean, max, var over axes).

Regenerate (needs torch and safetensors; run from anywhere):
    /tmp/torchenv/bin/python scripts/torch_golden_ops.py
It rewrites tests/fixtures/torch_golden.safetensors, which the unit tests in src/ops/ read
(the Rust tests never need Python). The output is deterministic for a given PyTorch version.

Every case stores its inputs ("<case>/x", ...), a fixed upstream gradient ("<case>/dy") and
PyTorch's results: the output "<case>/y" and the input gradients of L = sum(y * dy)
("<case>/dx", "/dw", "/db"); batch_norm cases with running statistics also store them after
the update ("<case>/running_mean_after", "/running_var_after"). The op's settings are in the
test tables of the Rust modules (the case names spell them). Inputs are float32 values made
deterministically below; max_pool2d (exact whatever the precision) runs in float32, the other
ops in float64, and every result is stored as float32.
"""
import pathlib

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "torch_golden.safetensors"

tensors = {}


def put(name, t):
    assert name not in tensors, name
    tensors[name] = t.detach().to(torch.float32).contiguous().clone()


def values(shape, seed, scale=2.0, offset=0.0):
    """Float32 values spread over [-scale, scale] + offset, fixed by the seed."""
    n = 1
    for d in shape:
        n *= d
    i = torch.arange(n, dtype=torch.float64)
    v = torch.sin(i * 1.618 + seed) * torch.cos(i * 0.377 + 2 * seed)
    return (v * scale + offset).to(torch.float32).reshape(shape)


def upstream(y, seed=0.5):
    """The fixed upstream gradient for an output like y (float32 values)."""
    i = torch.arange(y.numel(), dtype=torch.float64)
    return torch.cos(i * 0.7 + seed).to(torch.float32).reshape(y.shape)


def max_pool2d():
    x7 = values((2, 3, 7, 7), 1.0)
    x6 = values((2, 3, 6, 6), 2.0)
    # Ties (small integers), -inf values (a window of nothing else takes its first in-bounds
    # position) and NaN (propagates; the last NaN of a window takes the gradient).
    ties = torch.floor(values((1, 2, 5, 5), 3.0))
    ties[0, 0, 0, 0:3] = float("-inf")
    ties[0, 0, 1, 0:3] = float("-inf")
    ties[0, 1, 2, 2] = float("nan")
    ties[0, 1, 2, 3] = float("nan")
    cases = [
        ("k2s2p0_7", x7, 2, 2, 0),
        ("k3s2p1_7", x7, 3, 2, 1),
        ("k2s2p0_6", x6, 2, 2, 0),
        ("k3s2p1_6", x6, 3, 2, 1),
        ("k3s1p1_6", x6, 3, 1, 1),
        ("ties_k3s2p1", ties, 3, 2, 1),
        ("ties_k2s1p1", ties, 2, 1, 1),
    ]
    for name, x, k, s, p in cases:
        x = x.clone().requires_grad_()
        y = F.max_pool2d(x, k, s, p)
        dy = upstream(y)
        (y * dy).sum().backward()
        case = f"max_pool2d/{name}"
        put(case + "/x", x)
        put(case + "/y", y)
        put(case + "/dy", dy)
        put(case + "/dx", x.grad)


def adaptive_avg_pool2d():
    x7 = values((2, 3, 7, 7), 4.0)
    x6 = values((2, 3, 6, 6), 5.0)
    small = values((1, 2, 3, 2), 6.0)
    cases = [
        ("7_to_1x1", x7, (1, 1)),
        ("7_to_3x3", x7, (3, 3)),
        ("7_to_2x5", x7, (2, 5)),
        ("6_to_1x1", x6, (1, 1)),
        ("6_to_3x3", x6, (3, 3)),
        ("6_to_2x5", x6, (2, 5)),
        ("3x2_to_5x4", small, (5, 4)),  # output larger than the input: bins overlap
    ]
    for name, x, size in cases:
        x64 = x.to(torch.float64).requires_grad_()
        y = F.adaptive_avg_pool2d(x64, size)
        dy = upstream(y)
        (y * dy.to(torch.float64)).sum().backward()
        case = f"adaptive_avg_pool2d/{name}"
        put(case + "/x", x)
        put(case + "/y", y)
        put(case + "/dy", dy)
        put(case + "/dx", x64.grad)


def batch_norm():
    c = 3
    x = values((4, c, 5, 5), 7.0)
    offset = values((3, c, 4, 2), 8.0, scale=0.5, offset=20.0)  # large mean, small spread
    tiny = values((2, c, 1, 1), 9.0)  # N*H*W = 2, the least training accepts
    weight = torch.tensor([1.5, -0.75, 0.5], dtype=torch.float32)
    bias = torch.tensor([0.25, 0.0, -1.0], dtype=torch.float32)
    rmean = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float32)
    rvar = torch.tensor([0.9, 1.2, 0.5], dtype=torch.float32)
    # (name, x, training, affine, running stats, momentum, eps)
    cases = [
        ("train_affine", x, True, True, True, 0.1, 1e-5),
        ("train_plain", x, True, False, True, 0.3, 1e-5),
        ("train_nostats", x, True, True, False, 0.1, 1e-5),
        ("train_offset", offset, True, True, True, 0.1, 1e-3),
        ("train_tiny", tiny, True, True, True, 0.1, 1e-5),
        ("eval_affine", x, False, True, True, 0.1, 1e-5),
        ("eval_plain", x, False, False, True, 0.1, 1e-3),
    ]
    for name, xs, training, affine, stats, momentum, eps in cases:
        x64 = xs.to(torch.float64).requires_grad_()
        w64 = weight.to(torch.float64).requires_grad_() if affine else None
        b64 = bias.to(torch.float64).requires_grad_() if affine else None
        rm = rmean.to(torch.float64).clone() if stats else None
        rv = rvar.to(torch.float64).clone() if stats else None
        y = F.batch_norm(x64, rm, rv, w64, b64, training=training, momentum=momentum, eps=eps)
        dy = upstream(y)
        (y * dy.to(torch.float64)).sum().backward()
        case = f"batch_norm/{name}"
        put(case + "/x", xs)
        put(case + "/y", y)
        put(case + "/dy", dy)
        put(case + "/dx", x64.grad)
        if affine:
            put(case + "/weight", weight)
            put(case + "/bias", bias)
            put(case + "/dw", w64.grad)
            put(case + "/db", b64.grad)
        if stats:
            put(case + "/running_mean", rmean)
            put(case + "/running_var", rvar)
            put(case + "/running_mean_after", rm)
            put(case + "/running_var_after", rv)


def flatten():
    x = values((2, 3, 4, 5), 10.0)
    cases = [("1_m1", 1, -1), ("0_1", 0, 1), ("1_2", 1, 2), ("2_3", 2, 3), ("0_m1", 0, -1), ("2_2", 2, 2)]
    for name, start, end in cases:
        for layout, xl in [("", x), ("_cl", x.to(memory_format=torch.channels_last))]:
            xg = xl.clone().requires_grad_()
            y = torch.flatten(xg, start, end)
            dy = upstream(y)
            (y * dy).sum().backward()
            case = f"flatten/{name}{layout}"
            put(case + "/x", xg)
            put(case + "/y", y)
            put(case + "/dy", dy)
            put(case + "/dx", xg.grad)


def elementwise():
    a = values((2, 3, 4), 11.0)
    pos = values((2, 3, 4), 12.0, scale=1.0, offset=1.5)  # in [0.5, 2.5]: log, sqrt, pow, div
    others = {"b34": values((3, 4), 13.0), "b31": values((3, 1), 14.0), "b4": values((4,), 15.0),
              "b1": values((1,), 16.0)}
    ops = {"add": torch.add, "sub": torch.sub, "mul": torch.mul}
    for opname, op in ops.items():
        for bname, b in others.items():
            _binary(f"{opname}/{bname}", op, a, b)
    for bname, b in [("b31", others["b31"].abs() + 0.5), ("b4", others["b4"].abs() + 0.5)]:
        _binary(f"div/{bname}", torch.div, a, b)
    unary = {"exp": (torch.exp, a), "log": (torch.log, pos), "sqrt": (torch.sqrt, pos),
             "pow2.5": (lambda t: t ** 2.5, pos), "neg": (torch.neg, a)}
    for name, (op, x) in unary.items():
        xg = x.to(torch.float64).requires_grad_()
        y = op(xg)
        dy = upstream(y).to(torch.float64)
        (y * dy).sum().backward()
        put(f"{name}/x", x)
        put(f"{name}/y", y)
        put(f"{name}/dy", dy)
        put(f"{name}/dx", xg.grad)


def _binary(case, op, a, b):
    ag, bg = a.to(torch.float64).requires_grad_(), b.to(torch.float64).requires_grad_()
    y = op(ag, bg)
    dy = upstream(y).to(torch.float64)
    (y * dy).sum().backward()
    put(case + "/x", a)
    put(case + "/other", b)
    put(case + "/y", y)
    put(case + "/dy", dy)
    put(case + "/dx", ag.grad)
    put(case + "/dother", bg.grad)


def reduce():
    x = values((3, 4, 5), 21.0)
    # (name, op, dims, keepdim); max has distinct values here, so its gradient is one-hot.
    cases = [
        ("sum_1", torch.sum, (1,), False), ("sum_02_keep", torch.sum, (0, 2), True),
        ("sum_all", torch.sum, None, False), ("mean_2", torch.mean, (2,), False),
        ("mean_01_keep", torch.mean, (0, 1), True), ("var_1", torch.var, (1,), False),
        ("var_02_keep", torch.var, (0, 2), True), ("amax_1", torch.amax, (1,), False),
        ("amax_2_keep", torch.amax, (2,), True),
    ]
    for name, op, dims, keep in cases:
        xg = x.to(torch.float64).requires_grad_()
        y = op(xg) if dims is None else op(xg, dim=dims, keepdim=keep)
        dy = upstream(y).to(torch.float64)
        (y * dy).sum().backward()
        put(f"reduce/{name}/x", x)
        put(f"reduce/{name}/y", y)
        put(f"reduce/{name}/dy", dy)
        put(f"reduce/{name}/dx", xg.grad)


if __name__ == "__main__":
    elementwise()
    reduce()
    max_pool2d()
    adaptive_avg_pool2d()
    batch_norm()
    flatten()
    meta = {"generator": "scripts/torch_golden_ops.py", "torch": torch.__version__}
    save_file(tensors, str(OUT), metadata=meta)
    print(f"wrote {len(tensors)} tensors to {OUT}")
