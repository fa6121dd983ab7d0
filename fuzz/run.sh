#!/usr/bin/env bash
# Builds the fuzz targets, then runs each (all, or those named) for SECONDS, one at a time, and
# prints libFuzzer's final numbers: executions, exec/s, coverage (cov) and features (ft).
#
#   bash fuzz/run.sh [SECONDS] [TARGET...]      # default: 300 s, every target
#
# Environment: CARGO_TARGET_DIR (default /root/.cache/streamgate-fuzz-target), FUZZ_WORK (the
# growing corpora and logs, default /root/.cache/streamgate-fuzz-work; fuzz/corpus/<target>
# holds the committed seeds and is only read), FUZZ_SANITIZER (none or address; default none).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-300}
shift || true
if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for f in fuzz/fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi

# cargo-fuzz passes nightly-only `-Z` flags; RUSTC_BOOTSTRAP lets the stable compiler take them.
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/streamgate-fuzz-target}
sanitizer=${FUZZ_SANITIZER:-none}
work=${FUZZ_WORK:-/root/.cache/streamgate-fuzz-work}
mkdir -p "$work/logs"

# Same dependency versions as the main crate.
[ -f fuzz/Cargo.lock ] || cp Cargo.lock fuzz/Cargo.lock
cargo fuzz build -s "$sanitizer" --target-dir "$CARGO_TARGET_DIR"

printf '%-16s %8s %12s %8s %8s %8s  %s\n' target seconds executions exec/s cov ft result
for t in "${targets[@]}"; do
  mkdir -p "$work/corpus/$t"
  log="$work/logs/$t.log"
  result=ok
  start=$(date +%s)
  cargo fuzz run -s "$sanitizer" --target-dir "$CARGO_TARGET_DIR" "$t" "$work/corpus/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1 || result="FAILED (see $log and fuzz/artifacts/$t/)"
  elapsed=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | grep 'cov:' | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  printf '%-16s %8s %12s %8s %8s %8s  %s\n' "$t" "$elapsed" "${execs:--}" "${eps:--}" "${cov:--}" "${ft:--}" "$result"
done
