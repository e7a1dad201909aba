#!/usr/bin/env python3
"""Where the 80-step accuracy test's step 80 comes from (tests/accuracy.rs, BENCHMARKS.md
session 11). Needs torch and numpy; reuses scripts/torch_80_steps.py's model and data.

  python3 scripts/torch_80_steps_trace.py trace DIR   # PyTorch's float64 and float32 weights
                                                       # after each of the 80 steps, DIR/steps_f64.bin
                                                       # and DIR/steps_f32.bin (80 x 3930 f64)
  python3 scripts/torch_80_steps_trace.py nudge [N]   # float32 from the initial weights nudged
                                                       # by one ulp (each weight up with p 1/2),
                                                       # N seeds: step 80's distance from float64
  python3 scripts/torch_80_steps_trace.py unit DIR    # step 73's batch: the conv2 pre-activations
                                                       # nearest zero with float64's step-72 weights,
                                                       # and with DIR/ours72.bin's and float32's

DIR/ours72.bin (this crate's weights after 72 steps, f64, in named_parameters order) is written
by `cargo run --release --example eighty_steps_trace -- DIR`.
"""
import pathlib
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import torch_80_steps as t  # noqa: E402

NAMES = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "conv3.weight", "conv3.bias"]
SHAPES = [(16, 1, 3, 3), (16,), (16, 16, 3, 3), (16,), (10, 16, 3, 3), (10,)]
N_PARAMS = sum(int(np.prod(s)) for s in SHAPES)


def setup():
    torch.manual_seed(0)
    init = {k: v.detach().clone() for k, v in t.MnistCNN().state_dict().items()}
    n = t.STEPS * t.BATCH
    x = torch.from_numpy(t.idx("train-images-idx3-ubyte.gz")[:n].reshape(n, 784).astype(np.float32) / 256)
    y = torch.from_numpy(t.idx("train-labels-idx1-ubyte.gz")[:n].astype(np.int64))
    return init, x, y


def trajectory(init, dtype, x, y):
    """The weights after each step, flattened in NAMES order, as float64 (STEPS, N_PARAMS)."""
    model = t.MnistCNN().to(dtype)
    model.load_state_dict({k: v.to(dtype) for k, v in init.items()})
    opt = torch.optim.SGD(model.parameters(), lr=t.LR, momentum=t.MOMENTUM)
    xs, out = x.to(dtype), []
    for i in range(t.STEPS):
        b = slice(i * t.BATCH, (i + 1) * t.BATCH)
        F.cross_entropy(model(xs[b]), y[b]).backward()
        opt.step()
        opt.zero_grad()
        sd = model.state_dict()
        out.append(np.concatenate([sd[k].double().numpy().ravel() for k in NAMES]))
    return np.array(out)


def unpack(v):
    out, o = {}, 0
    for n, s in zip(NAMES, SHAPES):
        k = int(np.prod(s))
        out[n] = torch.from_numpy(v[o : o + k].reshape(s).copy())
        o += k
    return out


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    init, x, y = setup()
    if cmd == "trace":
        d = pathlib.Path(sys.argv[2])
        d.mkdir(parents=True, exist_ok=True)
        for dtype, tag in ((torch.float64, "f64"), (torch.float32, "f32")):
            trajectory(init, dtype, x, y).tofile(d / f"steps_{tag}.bin")
        print(f"wrote {d}/steps_f64.bin and steps_f32.bin ({t.STEPS} x {N_PARAMS} f64)")
    elif cmd == "nudge":
        w64 = trajectory(init, torch.float64, x, y)[-1]
        for seed in range(int(sys.argv[2]) if len(sys.argv) > 2 else 6):
            g = torch.Generator().manual_seed(seed)
            nudged = {}
            for k, v in init.items():
                up = torch.rand(v.shape, generator=g) < 0.5
                nudged[k] = torch.where(up, torch.nextafter(v, torch.full_like(v, 1.0)), v)
            w32 = trajectory(nudged, torch.float32, x, y)[-1]
            print(f"seed {seed}: float32 step 80, max |w - w_f64| = {np.abs(w32 - w64).max():.3e}")
    elif cmd == "unit":
        d = pathlib.Path(sys.argv[2])
        r64 = np.fromfile(d / "steps_f64.bin").reshape(t.STEPS, N_PARAMS)
        r32 = np.fromfile(d / "steps_f32.bin").reshape(t.STEPS, N_PARAMS)
        ours = np.fromfile(d / "ours72.bin")
        xb = x[72 * t.BATCH : 73 * t.BATCH].view(-1, 1, 28, 28)

        def conv2_pre(w, dtype):
            w = {k: v.to(dtype) for k, v in unpack(w).items()}
            h = F.relu(F.conv2d(xb.to(dtype), w["conv1.weight"], w["conv1.bias"], stride=2, padding=1))
            return F.conv2d(h, w["conv2.weight"], w["conv2.bias"], stride=2, padding=1).double()

        z64, zo, z32 = conv2_pre(r64[71], torch.float64), conv2_pre(ours, torch.float64), conv2_pre(r32[71], torch.float32)
        for i in torch.argsort(z64.abs().flatten())[:5].tolist():
            im, c, oh, ow = np.unravel_index(i, z64.shape)
            print(
                f"image {im} channel {c} pixel ({oh}, {ow}): float64 {z64.flatten()[i]:.3e}, "
                f"this crate's weights {zo.flatten()[i]:.3e}, PyTorch float32's {z32.flatten()[i]:.3e}"
            )
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
