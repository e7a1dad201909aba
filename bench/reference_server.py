#!/usr/bin/env python3
"""The reference server for bench/serve_load.sh: FastAPI + uvicorn + PyTorch serving the same
weights as `mnist-cnn serve`, as a typical user would write it.

Endpoints: `POST /api/predict` takes JSON `{"pixels": [784 floats in 0..1]}` (MNIST's form, row
by row) or an image file's bytes (PNG, JPEG, ...), and answers JSON with the digit, the ten
probabilities and the top 3, like mnist-cnn's; `GET /api/model` and `GET /healthz`.

The model is chosen by the weights' tensor names: `block1.conv.weight` is the bundled `bncnn`
(the module of bench/best_model.py), `conv1.weight` the tutorial's Mnist_CNN (the module of
bench/pytorch_reference.py), in eval mode under `torch.inference_mode()`. One request is one
forward pass (no batching across requests: a plain FastAPI deployment has none), run in the
`async def` handler itself: for a model this small, a trip to the thread pool costs more than
the forward pass.

Two image preparations, chosen by `REF_PREP`:
- `simple` (the default): much simpler than mnist-cnn's (which picks a channel, denoises,
  removes uneven lighting, thresholds, keeps the digit's components and normalises the stroke
  width): PIL decodes, converts to grayscale, inverts when the background is light (mean above
  127), crops to the ink's bounding box, scales it into 20x20 keeping the aspect ratio and
  pastes it centred in 28x28 (pixels / 256). So these image rows do less work than ours (and
  read the load test's pen-drawn 7 as a 2 with the tutorial's CNN).
- `same`: bench/reference_prep.py, the same steps as mnist-cnn's `predict` preparation written
  with numpy and OpenCV (its docstring says how close it comes): the API's "same preprocessing
  as predict", so both servers do the same work for an upload. Needs opencv-python-headless.

How it is run (bench/serve_load.sh does this): one uvicorn worker process per core, each with
one torch thread, the usual CPU-bound setup (the Python work of a request holds the GIL, so a
second process, not a second torch thread, is what uses a second core), access log off
(mnist-cnn logs no requests either):

    REF_WEIGHTS=assets/models/bncnn_seed0.safetensors REF_THREADS=1 \\
        python -m uvicorn reference_server:app --app-dir bench --host 127.0.0.1 --port 8081 \\
        --workers 2 --no-access-log

or `python bench/reference_server.py [--weights FILE] [--port 8081] [--workers N] [--threads T]
[--prep simple|same]`.
"""
import argparse
import io
import json
import os
import pathlib
import sys

import numpy as np
import torch
import torch.nn.functional as F
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image, ImageOps
from safetensors.torch import load_file

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from best_model import BnCnn  # noqa: E402
from pytorch_reference import Mnist_CNN  # noqa: E402

WEIGHTS = os.environ.get("REF_WEIGHTS", str(HERE.parent / "assets/models/bncnn_seed0.safetensors"))
torch.set_num_threads(int(os.environ.get("REF_THREADS", "1")))
PREP = os.environ.get("REF_PREP", "simple")
if PREP not in ("simple", "same"):
    raise SystemExit(f"REF_PREP={PREP}: simple or same")


def load_model(path):
    state = load_file(path)
    if "block1.conv.weight" in state:
        name, model = "bncnn", BnCnn()
    elif "conv1.weight" in state:
        name, model = "cnn", Mnist_CNN()
    else:
        raise SystemExit(f"{path}: neither bncnn nor the tutorial's cnn (tensors: {sorted(state)[:4]} ...)")
    model.load_state_dict(state)
    return name, model.eval()


ARCH, MODEL = load_model(WEIGHTS)
app = FastAPI()


def error(status, message):
    return JSONResponse({"error": message}, status_code=status)


def prepare_simple(data):
    """28x28 float32 in 0..1, light digit on black (see the module's docstring)."""
    img = Image.open(io.BytesIO(data)).convert("L")
    a = np.asarray(img, dtype=np.uint8)
    if a.mean() > 127:
        a = 255 - a
    ys, xs = np.nonzero(a > 64)
    if len(xs) == 0:
        return None
    crop = Image.fromarray(a[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
    crop = ImageOps.contain(crop, (20, 20), Image.BILINEAR)
    field = Image.new("L", (28, 28))
    field.paste(crop, ((28 - crop.width) // 2, (28 - crop.height) // 2))
    return np.asarray(field, dtype=np.float32) / 256


if PREP == "same":
    import cv2  # noqa: E402

    from reference_prep import prepare as prepare_image  # noqa: E402

    cv2.setNumThreads(torch.get_num_threads())  # one thread per worker, as torch
else:
    prepare_image = prepare_simple


@app.post("/api/predict")
async def predict(request: Request):
    body = await request.body()
    if not body:
        return error(400, "empty body: send an image or JSON pixels")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json" or (ctype in ("", "application/octet-stream") and body.lstrip()[:1] == b"{"):
        try:
            pixels = np.asarray(json.loads(body)["pixels"], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as e:
            return error(400, f"bad JSON: {e}")
        if pixels.shape != (784,) or not np.all((pixels >= 0) & (pixels <= 1)):
            return error(400, "pixels must be 784 finite values from 0 to 1")
    else:
        try:
            pixels = prepare_image(body)
        except Exception as e:  # PIL raises many kinds
            return error(400, f"cannot decode the image: {e}")
        if pixels is None:
            return error(422, "no digit found (blank image)")
    with torch.inference_mode():
        p = F.softmax(MODEL(torch.from_numpy(pixels).view(1, 784)), dim=1)[0].tolist()
    order = sorted(range(10), key=lambda d: -p[d])
    return {
        "digit": order[0],
        "probabilities": p,
        "top": [{"digit": d, "probability": p[d]} for d in order[:3]],
        "model": ARCH,
    }


@app.get("/api/model")
async def model_info():
    return {"architecture": ARCH, "source": WEIGHTS, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "pid": os.getpid(), "prep": PREP}


@app.get("/healthz")
async def healthz():
    return {"status": "ok"}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=WEIGHTS)
    ap.add_argument("--port", type=int, default=8081)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prep", choices=("simple", "same"), default=PREP)
    a = ap.parse_args()
    os.environ["REF_WEIGHTS"], os.environ["REF_THREADS"], os.environ["REF_PREP"] = a.weights, str(a.threads), a.prep
    import uvicorn

    uvicorn.run("reference_server:app", app_dir=str(HERE), host="127.0.0.1", port=a.port, workers=a.workers,
                access_log=False)
