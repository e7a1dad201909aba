#!/usr/bin/env python3
"""The `bncnn` model and its recipe in PyTorch: the other half of bench/best_model.sh.

Same network (state_dict names as mnist-cnn's: block1.conv.weight, block1.bn.running_mean, ...,
fc.weight), same recipe: AdamW (betas (0.9, 0.999), weight decay 1e-4), OneCycleLR with max_lr
0.006 (PyTorch's defaults otherwise: pct_start 0.3, cos, beta1 cycled 0.85-0.95), batch 128,
random affine augmentation (rotation uniform in +-12 degrees, scale in [0.9, 1.1], shift uniform
in +-1.5 pixels on each axis, bilinear, zero outside: what `--augment rotate=12,scale=0.1,
shift=1.5` draws), trained on all 60,000 training images (the IDX files in data/mnist, pixels /
256 as mnist-cnn scales them). After each epoch it evaluates the 10,000 test images (timing
only: nothing is chosen on them) and prints one JSON line per epoch with the wall time so far.

usage: python3 bench/best_model.py [--epochs 25] [--seed 0] [--threads 2] [--lr 0.006]
"""
import argparse
import gzip
import json
import math
import pathlib
import struct
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = pathlib.Path(__file__).resolve().parent.parent


def idx(name):
    data = gzip.open(ROOT / "data/mnist" / f"{name}.gz", "rb").read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


class ConvBn(nn.Module):
    def __init__(self, c, oc, stride):
        super().__init__()
        self.conv = nn.Conv2d(c, oc, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(oc)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class BnCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.block1 = ConvBn(1, 16, 1)
        self.block2 = ConvBn(16, 32, 1)
        self.block3 = ConvBn(32, 64, 1)
        self.block4 = ConvBn(64, 64, 2)
        self.fc = nn.Linear(64, 10)

    def forward(self, xb):
        x = xb.view(-1, 1, 28, 28)
        x = F.max_pool2d(self.block1(x), 2)
        x = F.max_pool2d(self.block2(x), 2)
        x = self.block4(self.block3(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def augment(x, rotate_deg, scale, shift_px, gen):
    """Random affine warp of a batch (N, 1, 28, 28), as mnist-cnn's augment draws it."""
    n = x.shape[0]
    u = lambda: torch.rand(n, generator=gen) * 2 - 1
    ang, s = u() * math.radians(rotate_deg), 1 + u() * scale
    tx, ty = u() * shift_px, u() * shift_px
    # affine_grid maps output coordinates to input ones in [-1, 1] units: the inverse map.
    cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
    half = 28 / 2
    theta = torch.stack(
        [
            torch.stack([cos, sin, -(cos * tx + sin * ty) / half], 1),
            torch.stack([-sin, cos, -(-sin * tx + cos * ty) / half], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.006)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=128)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    gen = torch.Generator().manual_seed(a.seed + 1)
    xt = torch.tensor(idx("train-images-idx3-ubyte").reshape(-1, 1, 28, 28), dtype=torch.float32) / 256
    yt = torch.tensor(idx("train-labels-idx1-ubyte"), dtype=torch.int64)
    xs = torch.tensor(idx("t10k-images-idx3-ubyte").reshape(-1, 1, 28, 28), dtype=torch.float32) / 256
    ys = torch.tensor(idx("t10k-labels-idx1-ubyte"), dtype=torch.int64)
    model = BnCnn()
    steps_per_epoch = math.ceil(len(xt) / a.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=a.epochs * steps_per_epoch)
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"type": "header", "torch": torch.__version__, "threads": a.threads, "params": params,
                      "cpu_capability": torch.backends.cpu.get_cpu_capability()}), flush=True)
    t0 = time.perf_counter()
    for epoch in range(1, a.epochs + 1):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), a.batch_size):
            b = perm[i : i + a.batch_size]
            loss = F.cross_entropy(model(augment(xt[b], 12.0, 0.1, 1.5, gen)), yt[b])
            loss.backward()
            opt.step()
            opt.zero_grad()
            sched.step()
        model.eval()
        with torch.no_grad():
            correct = sum((model(xs[i : i + 256]).argmax(1) == ys[i : i + 256]).sum().item() for i in range(0, len(xs), 256))
        print(json.dumps({"type": "epoch", "epoch": epoch, "test_accuracy": correct / len(xs),
                          "wall_seconds": time.perf_counter() - t0}), flush=True)


if __name__ == "__main__":
    main()
