#!/usr/bin/env bash
# Produce latency percentiles (1 KiB records, 16 partitions, acks=all) on the local store
# and on a store whose WAL PUTs answer PUT_DELAY_MS later (src/slowstore.rs: icestream
# over the fault-injecting object store), with librdkafka's load generator.
#
#   ./benches/latency.sh                  every scenario, 15 s each
#   DURATION=30 PUT_DELAY_MS=50 ./benches/latency.sh
#   BROKER_SET="flush_eager_bytes=0" ./benches/latency.sh     with settings, as --set k=v
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${ICESTREAM_CACHE:-$HOME/.cache/icestream}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
DURATION=${DURATION:-15}
PUT_DELAY_MS=${PUT_DELAY_MS:-20}
cargo build --release -q -p icestream --bin icestream
cargo build --release -q -p icestream-bench --bin loadgen --bin slowstore
BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d /tmp/icestream-latency.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BROKER_PID=
SCENARIO=0
SETS=()
for kv in ${BROKER_SET:-}; do SETS+=(--set "$kv"); done
stop_broker() {
  if [ -n "$BROKER_PID" ]; then kill "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; fi
  BROKER_PID=
}
trap 'stop_broker; rm -rf "$WORK"' EXIT

wait_port() {
  for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && return; sleep 0.1; done
  echo "broker did not start"; cat "$WORK/broker.log"; exit 1
}

local_store() {
  stop_broker
  # A new directory per scenario, all removed at exit: on ext4 without a journal, files
  # created within seconds of deleting many others pay for skipping their inodes.
  DATA=$WORK/data.$((++SCENARIO))
  RUST_LOG=warn "$BIN/icestream" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" \
    --set admin_listen= --set schema_registry_listen= "${SETS[@]}" > "$WORK/broker.log" 2>&1 &
  BROKER_PID=$!
  wait_port
}

slow_store() {
  stop_broker
  DATA=$WORK/data.$((++SCENARIO))
  RUST_LOG=warn "$BIN/slowstore" --listen "127.0.0.1:$PORT" --data-dir "$DATA" \
    --put-delay-ms "$PUT_DELAY_MS" "${SETS[@]}" > "$WORK/broker.log" 2>&1 &
  BROKER_PID=$!
  wait_port
}

scenario() {
  local title=$1; shift
  echo
  echo "### $title"
  "$BIN/loadgen" --bootstrap "127.0.0.1:$PORT" --duration "$DURATION" \
    --broker-pid "$BROKER_PID" --wal-dir "$DATA/objects/wal" \
    --partitions 16 --record-size 1024 --acks all "$@"
}

local_store
scenario "local store, 10 MB/s, linger 1" --rate-mb 10 --linger-ms 1
local_store
scenario "local store, 10 MB/s, linger 1, idempotent" --rate-mb 10 --linger-ms 1 --idempotence
local_store
scenario "local store, 0.1 MB/s, linger 0" --rate-mb 0.1 --linger-ms 0
slow_store
scenario "store answering PUTs ${PUT_DELAY_MS} ms later, 10 MB/s, linger 1" --rate-mb 10 --linger-ms 1
slow_store
scenario "store answering PUTs ${PUT_DELAY_MS} ms later, 10 MB/s, linger 1, idempotent" \
  --rate-mb 10 --linger-ms 1 --idempotence
