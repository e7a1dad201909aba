#!/usr/bin/env bash
# The accuracy model (`bncnn`) trained by mnist-cnn and by PyTorch (bench/best_model.py) with the
# same recipe, on all 60,000 training images, in one run: test accuracy after each epoch (timing
# only; the recipe was chosen on the validation split), whole-run time and time to 99.5%.
# usage: bench/best_model.sh [SEEDS] [TORCH_SEEDS]   e.g. bench/best_model.sh "0 1 2" "0"
#   (defaults "0 1 2" and "0"; needs python3 with torch and numpy for the PyTorch runs; an empty
#   TORCH_SEEDS skips them). EPOCHS=N overrides the recipe's 25 epochs (both sides).
# Both sides are held to AVX2+FMA, the instructions most users' CPUs have: mnist-cnn with
# MNIST_CNN_SIMD=avx2 (override with SIMD=avx512|portable), PyTorch with ATEN_CPU_CAPABILITY=avx2,
# ONEDNN_MAX_CPU_ISA=AVX2 and MKL_ENABLE_INSTRUCTIONS=AVX2 (MKL, behind torch.mm and the linear
# layers, ignores the other two). 2 threads each (THREADS=N). Run it on an otherwise idle machine.
# SAVE_DIR=DIR keeps mnist-cnn's trained weights as DIR/bncnn-seedN.safetensors.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-0 1 2}
torch_seeds=${2-0}
simd=${SIMD:-avx2}
threads=${THREADS:-2}
epochs=${EPOCHS:-25}
python=${PYTHON:-python3}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cargo build --release --quiet
for s in $seeds; do
  echo "mnist-cnn bncnn seed $s ($simd, $threads threads)" >&2
  MNIST_CNN_SIMD=$simd target/release/mnist-cnn train --model bncnn --train-on-all --epochs "$epochs" \
    --seed "$s" --threads "$threads" --no-save --quiet --json \
    ${SAVE_DIR:+--save "$SAVE_DIR/bncnn-seed$s.safetensors"} >"$out/rust-$s.json"
done
for s in $torch_seeds; do
  echo "PyTorch bncnn seed $s (AVX2, $threads threads)" >&2
  ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 "$python" bench/best_model.py --epochs "$epochs" \
    --seed "$s" --threads "$threads" >"$out/torch-$s.jsonl"
done
"$python" - "$out" "$seeds" "$torch_seeds" "$simd" <<'PY'
import json, statistics, sys
d, seeds, torch_seeds, simd = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4]
cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")][0]
def first_at(curve, target=0.995):
    return next((t for acc, t in curve if acc >= target), None)
rows = []
for s in seeds:
    j = json.load(open(f"{d}/rust-{s}.json"))
    curve, t = [], 0.0
    for e in j["epochs"]:
        t += e["seconds"]
        curve.append((e["valid_accuracy"], t))  # the test split, with --train-on-all
    rows.append(("mnist-cnn", s, j["simd"], curve))
for s in torch_seeds:
    lines = [json.loads(l) for l in open(f"{d}/torch-{s}.jsonl")]
    head = lines[0]
    curve = [(e["test_accuracy"], e["wall_seconds"]) for e in lines[1:]]
    rows.append((f"PyTorch {head['torch']}", s, head["cpu_capability"].lower(), curve))
print(f"machine: {cpu}; bncnn, all 60,000 training images, test accuracy after each epoch\n")
print("| trainer | seed | SIMD | final test acc | whole run s | time to 99.5% s | acc by epoch |")
print("|---|---|---|---|---|---|---|")
fmt = lambda v: "never" if v is None else f"{v:.1f}"
for who, s, isa, curve in rows:
    accs = " ".join(f"{100 * a:.2f}" for a, _ in curve)
    print(f"| {who} | {s} | {isa} | {100 * curve[-1][0]:.2f}% | {curve[-1][1]:.1f} | {fmt(first_at(curve))} | {accs} |")
ours = [r for r in rows if r[0] == "mnist-cnn"]
finals = [100 * r[3][-1][0] for r in ours]
sd = statistics.stdev(finals) if len(finals) > 1 else 0.0
print(f"\nmnist-cnn: test accuracy {statistics.mean(finals):.2f} ± {sd:.2f}% over {len(finals)} seed(s) (min {min(finals):.2f}%), "
      f"whole run median {statistics.median(r[3][-1][1] for r in ours):.1f} s")
theirs = [r for r in rows if r[0] != "mnist-cnn"]
if theirs:
    pairs = [(r, o) for r in theirs for o in ours if o[1] == r[1]]
    for t, o in pairs:
        print(f"seed {t[1]}: whole run {t[3][-1][1] / o[3][-1][1]:.2f}x faster than PyTorch; "
              f"time to 99.5%: mnist-cnn {fmt(first_at(o[3]))} s, PyTorch {fmt(first_at(t[3]))} s")
PY
