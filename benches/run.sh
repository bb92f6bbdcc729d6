#!/usr/bin/env bash
# Produce benchmarks against a release build of icestream on this machine, using the
# librdkafka load generator (src/loadgen.rs). Prints each scenario's numbers.
#
#   ./benches/run.sh                 all scenarios, 30 s each
#   DURATION=10 ./benches/run.sh     shorter
#   OBJECT_STORE=s3://… ./benches/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${ICESTREAM_CACHE:-$HOME/.cache/icestream}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
DURATION=${DURATION:-30}
cargo build --release -q -p icestream --bin icestream
cargo build --release -q -p icestream-bench --bin loadgen
BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d /tmp/icestream-bench.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BROKER_PID=
SCENARIO=0
stop_broker() {
  if [ -n "$BROKER_PID" ]; then kill "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; fi
  BROKER_PID=
}
trap 'stop_broker; rm -rf "$WORK"' EXIT

start_broker() {
  stop_broker
  # A new directory per scenario, all removed at exit: on ext4 without a journal, files
  # created within seconds of deleting many others pay for skipping their inodes.
  DATA=$WORK/data.$((++SCENARIO))
  local args=(serve --listen "127.0.0.1:$PORT" --data-dir "$DATA")
  [ -n "${OBJECT_STORE:-}" ] && args+=(--object-store "$OBJECT_STORE")
  RUST_LOG=warn "$BIN/icestream" "${args[@]}" "$@" > "$WORK/broker.log" 2>&1 &
  BROKER_PID=$!
  for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && return; sleep 0.1; done
  echo "broker did not start"; cat "$WORK/broker.log"; exit 1
}

scenario() {
  local title=$1; shift
  echo
  echo "### $title"
  "$BIN/loadgen" --bootstrap "127.0.0.1:$PORT" --duration "$DURATION" \
    --broker-pid "$BROKER_PID" --wal-dir "$DATA/objects/wal" "$@"
}

start_broker
scenario "1 KiB records, 16 partitions, acks=all, max throughput" \
  --partitions 16 --record-size 1024 --acks all --producers 2
start_broker
scenario "100 B records, 16 partitions, acks=all, max throughput" \
  --partitions 16 --record-size 100 --acks all --producers 2
start_broker
scenario "1 KiB records, 16 partitions, acks=all, 10 MB/s (latency)" \
  --partitions 16 --record-size 1024 --acks all --rate-mb 10 --linger-ms 1 --consume
start_broker
scenario "1 KiB records, 16 partitions, acks=all, 0.1 MB/s, linger 0 (latency when lightly loaded)" \
  --partitions 16 --record-size 1024 --acks all --rate-mb 0.1 --linger-ms 0
start_broker
scenario "1 KiB records, 1000 partitions, acks=all, 10 MB/s (PUTs per second)" \
  --partitions 1000 --record-size 1024 --acks all --rate-mb 10 --linger-ms 5
