#!/usr/bin/env bash
# Load on `mnist-cnn serve` over 127.0.0.1: starts a release server on a free port, runs
# examples/serve_load.rs for SECONDS at 1 and at 64 keep-alive connections, with JSON pixels
# (the inference path) and with a PNG (decoding and preprocessing too), prints throughput,
# p50/p99 latency and errors, then stops the server with SIGTERM.
# usage: bench/serve_load.sh [SECONDS] [serve flags...]   (e.g. bench/serve_load.sh 5 --threads 2)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
shift || true
cargo build --release -q --bin mnist-cnn --example serve_load
bin=target/release/mnist-cnn
client=target/release/examples/serve_load
png=tests/fixtures/user_style/pen_7_07.png
echo "# $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; serve $*"
out=$(mktemp)
MNIST_CNN_RUNS_DIR=$(mktemp -d) "$bin" serve --addr 127.0.0.1:0 "$@" >"$out" 2>/dev/null &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 100); do
  [[ -s $out ]] && break
  sleep 0.05
done
url=$(head -1 "$out" | awk '{print $3}')
echo "# $url"
for conns in 1 64; do
  "$client" "$url" "$conns" "$secs"
  "$client" "$url" "$conns" "$secs" "$png"
done
curl -s "$url/metrics" | grep -E '^mnist_cnn_(requests_total|batch_size_(sum|count))' || true
