#!/usr/bin/env bash
# Runs the Go benchmarks RUNS times (default 6), each run a fresh process in
# which every side of a comparison runs right after the other, so that load
# drift on a shared machine hits all sides alike; then prints the median of
# each side and the ratios (cmd/summarize). Needs the throwaway servers:
#   cargo build --release -p dialpool-ffi
#   cargo run -q -p dialpool-testkit -- run -- bash bench/go/run.sh
# Environment: RUNS (6), BENCH (the -bench pattern, "."), BENCHTIME (1s),
# OUT (a file that keeps the raw output; a temporary file by default).
set -euo pipefail
cd "$(dirname "$0")"
runs=${RUNS:-6}
out=${OUT:-$(mktemp)}
: > "$out"
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(go version)"
for i in $(seq "$runs"); do
  echo "== run $i/$runs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
  # Odd runs put dialpool first in each comparison, even runs last.
  BENCH_REVERSE=$(( (i + 1) % 2 )) go test -run '^$' -bench "${BENCH:-.}" -benchtime "${BENCHTIME:-1s}" -count 1 -timeout 30m | tee -a "$out"
done
echo "== medians of $runs runs (raw output: $out)"
go run ./cmd/summarize < "$out"
