#!/usr/bin/env python3
"""PyTorch <-> mnist-cnn weight files, both ways (run by hand; needs torch, numpy, safetensors).

1. Trains the tutorial's Mnist_CNN in PyTorch for one epoch (seed 0) on the bundled MNIST, saves
   it with safetensors.torch.save_file(model.state_dict(), ...) as
   tests/fixtures/torch_cnn.safetensors, and writes the logits PyTorch computes for the first 8
   validation images to tests/golden/torch_cnn_logits.rs (the Rust test compares them).
2. With --check FILE: loads a weights file written by `mnist-cnn train --save FILE` into the
   tutorial's model with load_state_dict(strict=True) and prints its test accuracy.

usage: python3 scripts/torch_interop.py [--check FILE]
"""
import argparse
import pathlib
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import optim
from torch.utils.data import DataLoader, TensorDataset

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from pytorch_reference import Mnist_CNN, idx as read_idx  # noqa: E402  (the tutorial's model)


def idx(name):
    return read_idx(ROOT / "data" / "mnist" / name)


def data():
    x = torch.tensor(idx("train-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 256)
    y = torch.tensor(idx("train-labels-idx1-ubyte.gz").astype(np.int64))
    xt = torch.tensor(idx("t10k-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 256)
    yt = torch.tensor(idx("t10k-labels-idx1-ubyte.gz").astype(np.int64))
    return x[:50000], y[:50000], x[50000:], y[50000:], xt, yt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check")
    a = ap.parse_args()
    x_train, y_train, x_valid, y_valid, x_test, y_test = data()
    if a.check:
        model = Mnist_CNN()
        model.load_state_dict(load_file(a.check), strict=True)
        model.eval()
        with torch.no_grad():
            logits = model(x_test)
            loss = F.cross_entropy(logits, y_test).item()
            acc = (logits.argmax(1) == y_test).float().mean().item()
        print(f"{a.check}: loaded into PyTorch's Mnist_CNN; test loss {loss:.4f}, accuracy {100 * acc:.2f}%")
        return
    torch.manual_seed(0)
    model = Mnist_CNN()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for xb, yb in DataLoader(TensorDataset(x_train, y_train), batch_size=64, shuffle=True):
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    out = ROOT / "tests" / "fixtures" / "torch_cnn.safetensors"
    save_file(model.state_dict(), str(out))
    with torch.no_grad():
        logits = model(x_valid[:8])
    vals = ", ".join(repr(float(v)) for v in logits.reshape(-1).tolist())
    (ROOT / "tests" / "golden" / "torch_cnn_logits.rs").write_text(
        f"// Written by scripts/torch_interop.py with PyTorch {torch.__version__}: the logits of the\n"
        f"// tutorial's Mnist_CNN in tests/fixtures/torch_cnn.safetensors for the first 8 validation images.\n"
        f"pub const LOGITS: [f32; {logits.numel()}] = [{vals}];\n"
    )
    print("wrote", out)


if __name__ == "__main__":
    main()
