#!/usr/bin/env bash
# Runs each cargo-fuzz target for a bounded time, one at a time, on one core:
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]      (default: 60 s; packet capture config)
# New inputs go to fuzz/work/<target>/ (ignored by git), crashes to fuzz/artifacts/
# (ignored); the committed seeds in fuzz/corpus/<target>/ are read, never written.
# Exits 0 with a message when no nightly toolchain or cargo-fuzz is installed, 1 when
# a target crashed (the artifact path is printed). See fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")"

secs="${1:-60}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then targets=(packet capture config); fi

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: no nightly toolchain (rustup toolchain install nightly): not fuzzing"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: cargo-fuzz is not installed (cargo install cargo-fuzz): not fuzzing"
  exit 0
fi

max_len() {
  case "$1" in
    packet) echo 2048 ;;
    *) echo 8192 ;;
  esac
}

# No sanitizer by default: the targets are safe Rust over safe Rust, and debug
# assertions (on in cargo fuzz builds) catch overflows and unsafe preconditions;
# FUZZ_SANITIZER=address runs them under ASan at about half the speed.
sanitizer="${FUZZ_SANITIZER:-none}"
cargo +nightly fuzz build --sanitizer "$sanitizer" 2>&1 | tail -n 1
mkdir -p logs
status=0
for t in "${targets[@]}"; do
  mkdir -p "work/$t" "artifacts/$t"
  log="logs/$t.log"
  echo "fuzz/run.sh: $t for ${secs}s (log: fuzz/$log)"
  # -jobs=1 -workers=1: one fuzzing process on one core; libFuzzer writes its output
  # to fuzz-0.log in the current directory, moved to $log afterwards.
  rm -f fuzz-0.log
  if ! cargo +nightly fuzz run --sanitizer "$sanitizer" "$t" "work/$t" "corpus/$t" -- \
      -max_total_time="$secs" -max_len="$(max_len "$t")" -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 -jobs=1 -workers=1 >/dev/null 2>&1; then
    status=1
  fi
  if [ -f fuzz-0.log ]; then mv fuzz-0.log "$log"; fi
  if grep -q "ERROR: libFuzzer\|panicked at\|==ERROR" "$log" 2>/dev/null; then
    status=1
    echo "fuzz/run.sh: $t CRASHED:"
    grep -E "panicked at|SUMMARY|Test unit written|==ERROR" "$log" | head -n 10
  fi
  grep -E "stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added" "$log" \
    | sed "s/^/  $t: /" || true
done
exit "$status"
