#!/usr/bin/env python3
"""The tutorial's Mnist_CNN in PyTorch: the same workloads as `mnist-cnn bench`.

Training throughput (one epoch of the 50,000 training images, batch 64, SGD lr 0.1 momentum
0.9, shuffled, the tutorial's loss_batch), epoch time (training + validation at batch 128),
inference images/s at batch 1000 over the 10,000 validation images, batch-1 latency (median),
peak RSS, and the machine's SGEMM rate (torch.mm of two 2048x2048 float32 matrices) as the
reference peak. Reads the same IDX files as mnist-cnn (data/mnist by default).

usage: python3 bench/pytorch_reference.py [--threads N] [--repeats R] [--json]
"""
import argparse
import gzip
import json
import os
import pathlib
import resource
import struct
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset

ROOT = pathlib.Path(__file__).resolve().parent.parent


def idx(path):
    data = gzip.open(path, "rb").read() if str(path).endswith(".gz") else open(path, "rb").read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


class Mnist_CNN(nn.Module):  # the tutorial's model, verbatim
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 16, kernel_size=3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(16, 10, kernel_size=3, stride=2, padding=1)

    def forward(self, xb):
        xb = xb.view(-1, 1, 28, 28)
        xb = F.relu(self.conv1(xb))
        xb = F.relu(self.conv2(xb))
        xb = F.relu(self.conv3(xb))
        xb = F.avg_pool2d(xb, 4)
        return xb.view(-1, xb.size(1))


def loss_batch(model, loss_func, xb, yb, opt=None):
    loss = loss_func(model(xb), yb)
    if opt is not None:
        loss.backward()
        opt.step()
        opt.zero_grad()
    return loss.item(), len(xb)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--latency-images", type=int, default=2000)
    ap.add_argument("--data-dir", default=str(ROOT / "data" / "mnist"))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    d = pathlib.Path(a.data_dir)
    x = torch.tensor(idx(d / "train-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 256)
    y = torch.tensor(idx(d / "train-labels-idx1-ubyte.gz").astype(np.int64))
    x_train, y_train, x_valid, y_valid = x[:50000], y[:50000], x[50000:], y[50000:]
    train_dl = DataLoader(TensorDataset(x_train, y_train), batch_size=64, shuffle=True)
    valid_dl = DataLoader(TensorDataset(x_valid, y_valid), batch_size=128)
    loss_func = F.cross_entropy

    rates, epochs = [], []
    for _ in range(a.repeats):
        model = Mnist_CNN()
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        t0 = time.perf_counter()
        model.train()
        for xb, yb in train_dl:
            loss_batch(model, loss_func, xb, yb, opt)
        train_s = time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            losses, nums = zip(*[loss_batch(model, loss_func, xb, yb) for xb, yb in valid_dl])
        epochs.append(time.perf_counter() - t0)
        rates.append(len(x_train) / train_s)

    model.eval()
    inf = []
    with torch.no_grad():
        for _ in range(3):
            t0 = time.perf_counter()
            for i in range(0, len(x_valid), 1000):
                model(x_valid[i : i + 1000])
            inf.append(len(x_valid) / (time.perf_counter() - t0))
        lat = []
        for i in range(min(a.latency_images, len(x_valid))):
            xb = x_valid[i : i + 1]
            t0 = time.perf_counter()
            model(xb)
            lat.append((time.perf_counter() - t0) * 1e6)

    m = torch.rand(2048, 2048)
    torch.mm(m, m)
    best = min(_timed(lambda: torch.mm(m, m)) for _ in range(5))
    out = {
        "impl": "pytorch",
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        # What held PyTorch's kernels: ATen's vector code, and the settings oneDNN and MKL read.
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "isa_limits": {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS") if k in os.environ},
        "train_samples_per_sec": float(np.median(rates)),
        "train_samples_per_sec_all": rates,
        "epoch_seconds": float(np.median(epochs)),
        "infer_batch1000_images_per_sec": float(np.median(inf)),
        "infer_batch1_us_median": float(np.median(lat)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "sgemm_gflops": 2 * 2048**3 / best / 1e9,
    }
    if a.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:32} {v}")


def _timed(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
