#!/usr/bin/env bash
# Runs `mnist-cnn bench` and bench/pytorch_reference.py side by side, alternating, for 1 and 2
# threads, then prints medians and ratios, and the peak RSS of a full 10-epoch `train` run.
# usage: bench/compare.sh [ROUNDS]   (default 3; needs python3 with torch and numpy)
# The kernel backend is the best this CPU has; MNIST_CNN_SIMD=avx512|avx2|neon|portable forces
# one (for mnist-cnn; the table's first line names the backend used). To hold PyTorch to AVX2
# as well: ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 (MKL,
# behind torch.mm and so the SGEMM peak line, ignores the first two).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cargo build --release --quiet
bin=target/release/mnist-cnn
for t in 1 2; do
  for r in $(seq "$rounds"); do
    echo "round $r/$rounds, $t thread(s)" >&2
    "$bin" bench --threads "$t" --repeats 1 --json >>"$out/rust.jsonl"
    python3 bench/pytorch_reference.py --threads "$t" --repeats 1 --json >>"$out/torch.jsonl"
  done
done
echo "full 10-epoch training run, 2 threads, for peak RSS" >&2
/usr/bin/time -f '%M' -o "$out/rss" "$bin" train --threads 2 >"$out/train.txt"
python3 - "$out" <<'PY'
import json, statistics, sys, platform, subprocess
d = sys.argv[1]
rows = {"rust": [json.loads(l) for l in open(f"{d}/rust.jsonl")], "torch": [json.loads(l) for l in open(f"{d}/torch.jsonl")]}
rss_train = int(open(f"{d}/rss").read().split()[-1]) / 1024
cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")][0]
t0 = rows['torch'][0]
limits = ", ".join(f"{k}={v}" for k, v in t0.get("isa_limits", {}).items()) or "no ISA limits"
print(f"machine: {cpu}, {len(open('/proc/cpuinfo').read().split('processor')) - 1} cpus; torch {t0['version']} (ATen {t0.get('cpu_capability', '?')}; {limits}); mnist-cnn SIMD backend {rows['rust'][0]['simd']}")
print(f"medians of {len(rows['rust']) // 2} alternating rounds per thread count\n")
metrics = [
    ("training samples/s", "train_samples_per_sec", True),
    ("epoch s (train + valid)", "epoch_seconds", False),
    ("inference b1000 images/s", "infer_batch1000_images_per_sec", True),
    ("inference b1 us/image", "infer_batch1_us_median", False),
    ("peak RSS MB (bench)", "peak_rss_mb", False),
]
print("| threads | metric | mnist-cnn | PyTorch | ratio (better = >1) |")
print("|---|---|---|---|---|")
med = {}
for t in (1, 2):
    r = [x for x in rows["rust"] if x["threads"] == t]
    p = [x for x in rows["torch"] if x["threads"] == t]
    for name, key, higher in metrics:
        a = statistics.median(x[key] for x in r)
        b = statistics.median(x[key] for x in p)
        med[(t, key, "rust")], med[(t, key, "torch")] = a, b
        ratio = a / b if higher else b / a
        print(f"| {t} | {name} | {a:,.1f} | {b:,.1f} | {ratio:.2f}x |")
for t in (1, 2):
    r = [x for x in rows["rust"] if x["threads"] == t]
    p = [x for x in rows["torch"] if x["threads"] == t]
    peak = statistics.median(x["sgemm_gflops"] for x in p)
    gf = statistics.median(x["train_gflops"] for x in r)
    print(f"\n{t} thread(s): training {gf:.1f} GFLOP/s = {100 * gf / peak:.0f}% of the measured SGEMM peak ({peak:.0f} GFLOP/s, torch.mm 2048^2)")
s1, s2 = med[(1, "train_samples_per_sec", "rust")], med[(2, "train_samples_per_sec", "rust")]
print(f"mnist-cnn 2 threads vs 1: {s2 / s1:.2f}x")
print(f"peak RSS of a full 10-epoch `train` run (2 threads): {rss_train:.1f} MB")
print("\nper layer, ms per training batch (mnist-cnn, 2 threads, last round):")
last = [x for x in rows["rust"] if x["threads"] == 2][-1]
for l in last["layers"]:
    print(f"  {l['name']:28} forward {l['forward_ms']:.3f}  backward {l['backward_ms']:.3f}")
PY
