#!/usr/bin/env bash
# Runs each fuzz target for SECONDS (default 120) at low priority, one job, one worker, with
# hangs (>10 s per input) and memory blowups (>2 GB RSS) counted as crashes. New inputs go to
# fuzz/work/<target> (ignored by git), seeds are read from fuzz/corpus/<target>, crash inputs
# land in fuzz/artifacts/<target>. The last lines of each run go to fuzz/work/<target>.log.
# Needs a nightly toolchain and cargo-fuzz:  cargo install cargo-fuzz
#
# usage: fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-120}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(idx gzip pickle safetensors image metrics_log http_response)
fi
for t in "${targets[@]}"; do
  mkdir -p "fuzz/work/$t" "fuzz/artifacts/$t"
  echo "== $t: ${secs}s"
  nice -n 19 cargo +nightly fuzz run "$t" "fuzz/work/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -jobs=1 -workers=1 -rss_limit_mb=2048 -timeout=10 \
    -max_len=262144 -print_final_stats=1 \
    > "fuzz/work/$t.log" 2>&1 || echo "!! $t stopped with a finding: see fuzz/work/$t.log and fuzz/artifacts/$t/"
  # With -jobs, libFuzzer writes the job's own output to fuzz-0.log in the current directory.
  if [ -f fuzz-0.log ]; then mv fuzz-0.log "fuzz/work/$t.job.log"; fi
  grep -hE "^Done|stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY|ERROR|panicked" "fuzz/work/$t.log" "fuzz/work/$t.job.log" 2>/dev/null | head -8
done
