#!/usr/bin/env python3
"""A batch-norm nn.Sequential, PyTorch <-> mnist-cnn, both ways (run by hand; needs torch,
numpy, safetensors: /tmp/torchenv/bin/python or any Python with them).

The model (tests/sequential_interop.rs builds the same one in Rust):
    Conv2d(1, 8, 3, padding=1), BatchNorm2d(8), ReLU, MaxPool2d(2),
    Conv2d(8, 16, 3, stride=2, padding=1), BatchNorm2d(16), ReLU, AdaptiveAvgPool2d((3, 3)),
    Dropout(0.25), Flatten, Linear(144, 10)

1. (no argument) Trains it in PyTorch for 30 SGD steps (seed 0, batch 64, lr 0.05, momentum
   0.9) on the bundled MNIST, so the running statistics and num_batches_tracked (int64) are
   real; saves model.state_dict() with safetensors.torch.save_file as
   tests/fixtures/torch_seq_bn.safetensors, and the first 16 validation images with the logits
   PyTorch computes for them in eval mode as tests/fixtures/torch_seq_bn_io.safetensors.
2. --check DIR: DIR holds what the Rust test wrote (seq_bn_rust.safetensors, a model trained
   in Rust; seq_bn_rust_io.safetensors, inputs and the Rust logits): loads the weights into the
   PyTorch model with load_state_dict(strict=True) and prints the largest logit difference.

usage: python3 scripts/torch_sequential_interop.py [--check DIR]
"""
import argparse
import pathlib
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from pytorch_reference import idx as read_idx  # noqa: E402


def model():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d((3, 3)),
        nn.Dropout(0.25),
        nn.Flatten(),
        nn.Linear(144, 10),
    )


def images(name, n):
    x = read_idx(ROOT / "data" / "mnist" / name).reshape(-1, 1, 28, 28).astype(np.float32) / 256
    return torch.tensor(x[:n])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check")
    a = ap.parse_args()
    fx = ROOT / "tests" / "fixtures"
    if a.check:
        d = pathlib.Path(a.check)
        m = model()
        m.load_state_dict(load_file(str(d / "seq_bn_rust.safetensors")), strict=True)
        m.eval()
        io = load_file(str(d / "seq_bn_rust_io.safetensors"))
        with torch.no_grad():
            logits = m(io["x"])
        diff = (logits - io["logits"]).abs().max().item()
        print(f"{d}/seq_bn_rust.safetensors: loaded into PyTorch's nn.Sequential (strict); "
              f"num_batches_tracked {[int(v) for k, v in m.state_dict().items() if k.endswith('num_batches_tracked')]}; "
              f"largest logit difference from Rust's: {diff:.3g} over {logits.numel()} logits")
        sys.exit(0 if diff <= 1e-5 else 1)
    torch.manual_seed(0)
    m = model()
    x = images("train-images-idx3-ubyte.gz", 64 * 30)
    y = torch.tensor(read_idx(ROOT / "data" / "mnist" / "train-labels-idx1-ubyte.gz")[: 64 * 30].astype(np.int64))
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    m.train()
    for i in range(30):
        loss = F.cross_entropy(m(x[i * 64:(i + 1) * 64]), y[i * 64:(i + 1) * 64])
        loss.backward()
        opt.step()
        opt.zero_grad()
    m.eval()
    xv = images("t10k-images-idx3-ubyte.gz", 16)
    with torch.no_grad():
        logits = m(xv)
    save_file(m.state_dict(), str(fx / "torch_seq_bn.safetensors"))
    save_file({"x": xv.contiguous(), "logits": logits.contiguous()}, str(fx / "torch_seq_bn_io.safetensors"))
    print("wrote", fx / "torch_seq_bn.safetensors", "and", fx / "torch_seq_bn_io.safetensors", "with torch", torch.__version__)


if __name__ == "__main__":
    main()
