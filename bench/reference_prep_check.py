#!/usr/bin/env python3
"""How close bench/reference_prep.py (the reference server's equal-work image preparation) comes
to mnist-cnn's own: both prepare the 250 images of tests/fixtures/user_style, mnist-cnn through
`predict --save-preprocessed`, and this prints the mean absolute pixel difference (0..1), the
images that differ most, each model's accuracy on both preparations (PyTorch, the same
weights), and the port's time per image.

    python bench/reference_prep_check.py [MNIST_CNN_BINARY]   (default target/release/mnist-cnn)

Needs torch, numpy, PIL, safetensors and opencv-python-headless.
"""
import csv
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import cv2  # noqa: E402

import reference_prep  # noqa: E402
from best_model import BnCnn  # noqa: E402
from pytorch_reference import Mnist_CNN  # noqa: E402

FIXTURES = ROOT / "tests/fixtures/user_style"
MODELS = (("cnn", Mnist_CNN, "tests/fixtures/mnist_cnn_seed0.safetensors"),
          ("bncnn", BnCnn, "assets/models/bncnn_seed0.safetensors"))


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target/release/mnist-cnn")
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    labels = {r["file"]: int(r["label"]) for r in csv.DictReader(open(FIXTURES / "labels.csv"))}
    names = sorted(labels)
    with tempfile.TemporaryDirectory() as ours_dir:
        subprocess.run([binary, "predict", "--model", str(ROOT / MODELS[0][2]), "--save-preprocessed", ours_dir,
                        *(str(FIXTURES / n) for n in names)], check=True, stdout=subprocess.DEVNULL)
        ours = np.stack([np.asarray(Image.open(pathlib.Path(ours_dir) / (n.rsplit(".", 1)[0] + ".png")), np.float32)
                         / 256 for n in names])
    port = []
    for n in names:
        out = reference_prep.prepare((FIXTURES / n).read_bytes())
        port.append(np.zeros((28, 28), np.float32) if out is None else out)
    port = np.stack(port)
    diff = np.abs(port - ours).mean(axis=(1, 2))
    print(f"{len(names)} images: mean absolute pixel difference {diff.mean():.4f} (0..1), max {diff.max():.4f}; "
          f"identical {int((diff == 0).sum())}, over 0.01 {int((diff > 0.01).sum())}, over 0.05 {int((diff > 0.05).sum())}")
    for i in np.argsort(-diff)[:5]:
        print(f"  {names[i]:<22} {diff[i]:.4f}")
    y = torch.tensor([labels[n] for n in names])
    for name, cls, weights in MODELS:
        model = cls()
        model.load_state_dict(load_file(ROOT / weights))
        model.eval()
        with torch.inference_mode():
            p_port = model(torch.from_numpy(port).view(-1, 784)).argmax(1)
            p_ours = model(torch.from_numpy(ours).view(-1, 784)).argmax(1)
        print(f"{name}: accuracy {100 * (p_port == y).float().mean():.1f}% on the port's images, "
              f"{100 * (p_ours == y).float().mean():.1f}% on mnist-cnn's; "
              f"{int((p_port != p_ours).sum())} predictions differ")
    for n in ("pen_7_07.png", "photo_4_04.jpg", "thin-pen_2_02.png"):
        data = (FIXTURES / n).read_bytes()
        times = []
        for _ in range(200):
            t = time.perf_counter()
            reference_prep.prepare(data)
            times.append(time.perf_counter() - t)
        print(f"{n}: {1e3 * sorted(times)[100]:.2f} ms median per preparation (one thread)")


if __name__ == "__main__":
    main()
