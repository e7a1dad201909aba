#!/usr/bin/env bash
# Trains each given model over seeds 0..N-1 (the model's recipe) and prints one line per run and
# a summary per model: test accuracy mean ± std, min, max, the runs below 90% (stuck), and the
# median whole-run time (training and validation; MNIST_CNN_SIMD=avx2 etc. picks the backend).
# usage: bench/seeds.sh N MODEL [MODEL ...]   (e.g. bench/seeds.sh 10 cnn cnn-norelu)
set -euo pipefail
cd "$(dirname "$0")/.."
n=$1
shift
cargo build --release -q
bin=target/release/mnist-cnn
echo "# $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
for model in "$@"; do
  accs=()
  times=()
  for ((seed = 0; seed < n; seed++)); do
    json=$("$bin" train --model "$model" --seed "$seed" --no-save --quiet --json 2>/dev/null)
    line=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); t=r["test"]["accuracy"]; v=r["epochs"][-1]["valid_accuracy"]; print("%.2f %.2f %s %d %.1f" % (100*t, 100*v, r["simd"], r["threads"], sum(e["seconds"] for e in r["epochs"])))' "$json")
    read -r test valid simd threads secs <<<"$line"
    echo "$model seed $seed: test ${test}%  valid ${valid}%  ${secs} s  (SIMD $simd, $threads threads)"
    accs+=("$test")
    times+=("$secs")
  done
  python3 - "$model" "${accs[*]}" "${times[*]}" <<'PY'
import statistics, sys
m, a, t = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
stuck = [i for i, x in enumerate(a) if x < 90]
sd = statistics.stdev(a) if len(a) > 1 else 0.0
print(f"{m}: test accuracy mean {statistics.mean(a):.2f} ± {sd:.2f}%  min {min(a):.2f}%  max {max(a):.2f}%  "
      f"stuck below 90%: {len(stuck)} of {len(a)} (seeds {stuck}); whole run median {statistics.median(t):.1f} s")
PY
done
