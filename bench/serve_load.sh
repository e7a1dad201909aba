#!/usr/bin/env bash
# Load on `mnist-cnn serve` and on a FastAPI/uvicorn/PyTorch reference serving the same weights
# (bench/reference_server.py), same machine, same run, over 127.0.0.1 keep-alive connections.
#
# Servers, one after the other, each on a free port: mnist-cnn with the bundled bncnn, mnist-cnn
# with the tutorial's cnn (CNN_WEIGHTS, default tests/fixtures/mnist_cnn_seed0.safetensors; a
# 1-epoch model is trained when the file is missing), then the reference with each of them, and
# for PNG uploads the reference again with REF_PREP=same ("reference-same": mnist-cnn's image
# preparation ported to numpy and OpenCV, bench/reference_prep.py, so that both servers do the
# same work for an upload; the plain reference's preparation is much lighter than ours).
# For each: the idle CPU over IDLE seconds after startup, loads of SECONDS each with JSON pixels
# (the inference path) and with a PNG (decoding and preprocessing too) at 1, 64 and 1,000
# connections (examples/serve_load.rs, one core at most), the idle CPU over IDLE seconds after
# the load, the peak RSS (VmHWM, summed over the server's processes), then SIGTERM.
# Prints two markdown tables: the loads (with mnist-cnn's throughput over the reference's, and
# for PNG over reference-same's, on the same model, body and connections, and the CPU time an
# answered request took in the server's processes and in the client, which share the cores), and
# each server's startup, idle CPU and memory.
#
# usage: bench/serve_load.sh [SECONDS] [serve flags...]    (e.g. bench/serve_load.sh 5 --threads 2)
# environment: CNN_WEIGHTS, PYTHON (default /tmp/torchenv/bin/python, else python3),
#   REF_WORKERS (uvicorn workers, default one per core), REF_THREADS (torch threads per worker,
#   default 1), IDLE (seconds, default 5), CONNS (default "1 64 1000"), SAME_PREP (0 to leave
#   reference-same out; default 1).
# The reference part is skipped, saying why, when Python, torch, fastapi or uvicorn is missing;
# reference-same when OpenCV (cv2) is.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
shift || true
idle=${IDLE:-5}
conns_list=${CONNS:-1 64 1000}
cnn_weights=${CNN_WEIGHTS:-tests/fixtures/mnist_cnn_seed0.safetensors}
bncnn_weights=assets/models/bncnn_seed0.safetensors
ref_workers=${REF_WORKERS:-$(nproc)}
ref_threads=${REF_THREADS:-1}
png=tests/fixtures/user_style/pen_7_07.png
hz=$(getconf CLK_TCK)

# 1,000 client sockets plus 1,000 server ones (the client and the server inherit this limit).
max_conns=$(tr ' ' '\n' <<<"$conns_list" | sort -n | tail -1)
if (( $(ulimit -n) < max_conns + 256 )); then
  ulimit -n $((max_conns + 256)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi

cargo build --release -q --bin mnist-cnn --example serve_load
bin=target/release/mnist-cnn
client=target/release/examples/serve_load
work=$(mktemp -d)
server_pid=
cleanup() {
  [[ -n $server_pid ]] && kill -TERM "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

if [[ ! -f $cnn_weights ]]; then
  echo "# $cnn_weights missing: training the tutorial's cnn for 1 epoch"
  cnn_weights=$work/cnn_1epoch.safetensors
  "$bin" train --model cnn --epochs 1 --no-save --save "$cnn_weights" >/dev/null
fi

# Python for the reference: torch, fastapi, uvicorn, PIL and safetensors importable.
py=${PYTHON:-/tmp/torchenv/bin/python}
[[ -x $py ]] || py=$(command -v python3 || true)
ref_skip=
if [[ -z $py ]]; then
  ref_skip="no Python found (set PYTHON)"
elif ! missing=$("$py" -c '
import importlib.util as u
need = ["torch", "fastapi", "uvicorn", "PIL", "safetensors", "numpy"]
gone = [m for m in need if u.find_spec(m) is None]
print(" ".join(gone)); raise SystemExit(1 if gone else 0)' 2>&1); then
  ref_skip="$py lacks: $missing (pip install torch fastapi \"uvicorn[standard]\" pillow safetensors numpy)"
fi
same_skip=
if [[ ${SAME_PREP:-1} == 0 ]]; then
  same_skip="SAME_PREP=0"
elif [[ -z $ref_skip ]] && ! "$py" -c 'import cv2' 2>/dev/null; then
  same_skip="$py lacks cv2 (pip install opencv-python-headless)"
fi

echo "# $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg); $secs s per load; serve flags: ${*:-(none)}"
if [[ -z $ref_skip ]]; then
  echo "# reference: $("$py" -c 'import torch, fastapi, uvicorn, sys; print(f"Python {sys.version.split()[0]}, torch {torch.__version__}, fastapi {fastapi.__version__}, uvicorn {uvicorn.__version__}")'), $ref_workers workers x $ref_threads torch threads"
  if [[ -z $same_skip ]]; then
    echo "# reference-same: the same, with OpenCV $("$py" -c 'import cv2; print(cv2.__version__)') (bench/reference_prep.py)"
  fi
else
  echo "# reference SKIPPED: $ref_skip"
fi

# The server's process and its descendants (uvicorn's workers).
tree() {
  local p
  echo "$1"
  for p in $(pgrep -P "$1" || true); do tree "$p"; done
}
# utime + stime of the tree, in clock ticks (fields 14 and 15; the name in field 2 may hold spaces).
ticks() {
  local p t=0
  for p in $(tree "$1"); do
    t=$((t + $(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{t = $12 + $13} END {print t + 0}')))
  done
  echo "$t"
}
# CPU use over $idle seconds of no requests, as % of one core.
idle_cpu() {
  local a b
  a=$(ticks "$1")
  sleep "$idle"
  b=$(ticks "$1")
  awk -v d=$((b - a)) -v hz="$hz" -v s="$idle" 'BEGIN {printf "%.1f", 100 * d / hz / s}'
}
# Sum over the tree of a /proc/PID/status field (kB) or of smaps_rollup's Pss, in MB.
mem_mb() {
  local p kb=0 file=status
  [[ $2 == Pss ]] && file=smaps_rollup
  for p in $(tree "$1"); do
    kb=$((kb + $(awk -v f="$2:" '$1 == f {v = $2} END {print v + 0}' "/proc/$p/$file" 2>/dev/null)))
  done
  awk -v k="$kb" 'BEGIN {printf "%.0f", k / 1024}'
}
now() { date +%s.%N; }

results=$work/results.tsv
servers=$work/servers.tsv
: >"$results"
: >"$servers"

# measure SERVER MODEL URL START_TIME [BODIES]: idle CPU, the loads (BODIES: default "json png"),
# idle CPU, memory, the PNG's digit.
measure() {
  local name=$1 model=$2 url=$3 t0=$4 bodies=${5:-json png} up cpu0 cpu1 rss0 line rps p50 p99 errs shed digit c
  local ticks0 ticks1 answered server_us client_us
  up=$(awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}')
  cpu0=$(idle_cpu "$server_pid")
  rss0=$(mem_mb "$server_pid" VmRSS)
  for c in $conns_list; do
    for body in $bodies; do
      ticks0=$(ticks "$server_pid")
      if [[ $body == json ]]; then line=$("$client" "$url" "$c" "$secs" || true); else line=$("$client" "$url" "$c" "$secs" "$png" || true); fi
      ticks1=$(ticks "$server_pid")
      if [[ $line != *req/s* ]]; then
        echo "#   $name $model: the client failed at $c connections ($body)"
        continue
      fi
      echo "#   $name $model: $line"
      rps=$(sed -E 's/.* ([0-9]+) req\/s.*/\1/' <<<"$line")
      p50=$(sed -E 's/.*p50 ([0-9.a-zNA]+) ms.*/\1/' <<<"$line")
      p99=$(sed -E 's/.*p99 ([0-9.a-zNA]+) ms.*/\1/' <<<"$line")
      errs=$(sed -E 's/.* ([0-9]+) errors.*/\1/' <<<"$line")
      shed=$(sed -E 's/.*\(([0-9]+) 503.*/\1/' <<<"$line")
      # CPU time per answered request: the server's processes over the load (clock ticks, so
      # to 1/hz s: 0.1% of a 5 s load on 2 cores), and the client's own (it reports it).
      answered=$(sed -E 's/.* ([0-9]+) answered.*/\1/' <<<"$line")
      server_us=$(awk -v d=$((ticks1 - ticks0)) -v hz="$hz" -v n="$answered" 'BEGIN {if (n > 0) printf "%.0f", 1e6 * d / hz / n}')
      client_us=$(grep -oE 'client CPU [0-9.]+' <<<"$line" | awk '{printf "%.0f", $3}' || true)
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$model" "$body" "$c" "$rps" "$p50" "$p99" "$errs" "$shed" \
        "$server_us" "$client_us" >>"$results"
    done
  done
  cpu1=$(idle_cpu "$server_pid")
  digit=$(curl -s --max-time 10 -H 'Content-Type: application/octet-stream' --data-binary @"$png" "$url/api/predict" |
    grep -o '"digit":[0-9]' | head -1 | cut -d: -f2 || true)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$model" "$up" "$cpu0" "$cpu1" "$rss0" "$(mem_mb "$server_pid" VmHWM)" \
    "$(mem_mb "$server_pid" Pss)" "${digit:-?}" >>"$servers"
}

# SIGTERM, then up to 10 s for the process to exit.
stop() {
  kill -TERM "$server_pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}

run_mnist() { # MODEL WEIGHTS_OR_EMPTY
  local out=$work/mnist.out t0 url
  : >"$out" # here, not in the background job's redirection: that may come after the check below
  t0=$(now)
  MNIST_CNN_RUNS_DIR=$work/runs "$bin" serve --addr 127.0.0.1:0 ${2:+--model "$2"} "${@:3}" >"$out" 2>"$work/mnist.err" &
  server_pid=$!
  for _ in $(seq 200); do
    grep -q 'http://' "$out" && break
    sleep 0.05
  done
  url=$(grep -o 'http://[0-9.:]*' "$out" | head -1)
  if [[ $url != http://127.0.0.1:* ]]; then
    echo "# mnist-cnn serve did not start (stdout, then stderr):" && cat "$out" "$work/mnist.err"
    exit 1
  fi
  echo "# mnist-cnn $1 at $url"
  measure mnist-cnn "$1" "$url" "$t0"
  stop
}

run_reference() { # MODEL WEIGHTS [PREP]: PREP same runs reference-same, PNG only
  local log=$work/ref.log t0 port n name=reference bodies="json png"
  [[ ${3:-simple} == same ]] && name=reference-same bodies=png
  port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  t0=$(now)
  REF_WEIGHTS=$2 REF_THREADS=$ref_threads REF_PREP=${3:-simple} "$py" -m uvicorn reference_server:app --app-dir bench \
    --host 127.0.0.1 --port "$port" --workers "$ref_workers" --no-access-log >"$log" 2>&1 &
  server_pid=$!
  n=0
  for _ in $(seq 1200); do
    n=$(grep -c 'Application startup complete' "$log" || true)
    (( n >= ref_workers )) && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.05
  done
  if (( n < ref_workers )); then
    echo "# $name ($1) did not start; skipped:" && tail -5 "$log"
    stop
    return
  fi
  echo "# $name $1 at http://127.0.0.1:$port"
  measure "$name" "$1" "http://127.0.0.1:$port" "$t0" "$bodies"
  stop
}

run_mnist bncnn "" "$@"
run_mnist cnn "$cnn_weights" "$@"
if [[ -z $ref_skip ]]; then
  run_reference bncnn "$bncnn_weights"
  run_reference cnn "$cnn_weights"
  if [[ -z $same_skip ]]; then
    run_reference bncnn "$bncnn_weights" same
    run_reference cnn "$cnn_weights" same
  fi
fi

echo
echo "| server | model | body | conns | req/s | p50 ms | p99 ms | errors (503s) | req/s mnist-cnn / reference | / reference-same | CPU us a request: server + client |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
awk -F'\t' '
  NR == FNR { if ($1 ~ /^reference/) ref[$1 FS $2 FS $3 FS $4] = $5; next }
  function ratio(server, k) {
    return ($1 == "mnist-cnn" && ((server FS k) in ref) && ref[server FS k] > 0) ? sprintf("%.2f", $5 / ref[server FS k]) : ""
  }
  {
    k = $2 FS $3 FS $4
    printf "| %s | %s | %s | %s | %s | %s | %s | %s (%s) | %s | %s | %s |\n", $1, $2, ($3 == "json" ? "JSON" : "PNG"), $4, $5, $6, $7, $8, $9,
      ratio("reference", k), ratio("reference-same", k), ($10 == "" ? "" : $10 " + " ($11 == "" ? "?" : $11))
  }' "$results" <(sort -t$'\t' -k2,2 -k3,3 -k4,4n -k1,1 "$results")
echo
echo "| server | model | startup s | idle CPU after start, % of a core | idle CPU after load | RSS MB after start | peak RSS MB | PSS MB after load | PNG digit |"
echo "|---|---|---|---|---|---|---|---|---|"
awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9}' "$servers"
echo
echo "RSS: summed over the server's processes (uvicorn's supervisor and workers), so pages they share"
echo "(libtorch's code) count once per process; peak RSS is the sum of each process's VmHWM. PSS divides"
echo "shared pages between the processes that map them."
if [[ -n $ref_skip ]]; then
  echo
  echo "reference skipped: $ref_skip"
elif [[ -n $same_skip ]]; then
  echo
  echo "reference-same skipped: $same_skip"
fi
