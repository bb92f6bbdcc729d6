#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz / libFuzzer, nightly toolchain) of everything
# icestream parses from untrusted bytes:
#   request_decode   request header + body of every API and version (kafka-protocol, patched,
#                    and the pre-0.11 versions icestream decodes itself)
#   batch_validate   produce-time batch validation and the compactor's record decoding
#   legacy_convert   message format v0/v1 up- and down-conversion (clients before 0.11)
#   segment_decode   WAL segment footers and the batches of their chunks
# Each target starts from the corpus in fuzz/corpus/<target> (real client traffic captured
# with benches/fuzz/capture.py and clients.py, and WAL segments via seeds.py), runs a fixed
# number of executions, and prints executions, time and crashes. Any single allocation over
# MALLOC_LIMIT_MB counts as a crash (allocation amplification), as does a panic or abort.
#
#   ./benches/fuzz.sh                      every target, 10 million executions each
#   RUNS=100000 ./benches/fuzz.sh          shorter (CI uses this on the corpus)
#   ./benches/fuzz.sh request_decode       one target
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${ICESTREAM_CACHE:-$HOME/.cache/icestream}
export CARGO_TARGET_DIR=$CACHE/fuzz-target
RUNS=${RUNS:-10000000}
MALLOC_LIMIT_MB=${MALLOC_LIMIT_MB:-512}
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(request_decode batch_validate legacy_convert segment_decode)

command -v cargo-fuzz >/dev/null || cargo install -q --locked cargo-fuzz
cd fuzz
cargo +nightly fuzz build -O

failed=0
passed=0
for t in "${TARGETS[@]}"; do
  work=$(mktemp -d /tmp/icestream-fuzz.XXXXXX)
  log=$work/log
  start=$(date +%s)
  set +e
  cargo +nightly fuzz run -O "$t" "$work" "corpus/$t" -- \
    -runs="$RUNS" -rss_limit_mb=2048 -malloc_limit_mb="$MALLOC_LIMIT_MB" \
    -artifact_prefix="$work/" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  secs=$(( $(date +%s) - start ))
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  crashes=$(ls "$work" | grep -c -E '^(crash|oom|leak|timeout)-' || true)
  if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    failed=$((failed + 1))
    echo "fuzz $t: FAILED after ${execs:-?} executions in ${secs}s ($crashes crash files in $work)"
    grep -E 'ERROR|panicked|SUMMARY' "$log" | head -5
  else
    passed=$((passed + 1))
    echo "fuzz $t: ${execs} executions in ${secs}s ($(( execs / (secs > 0 ? secs : 1) )) per second), 0 crashes"
    rm -rf "$work"
  fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
