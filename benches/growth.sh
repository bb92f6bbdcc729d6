#!/usr/bin/env bash
# Table growth over a long run (release build): a steady trickle into every partition of
# one topic with fast compaction rounds, probing the table as engines see it. Prints, per
# probe: rounds, rows, live data files, small files of the fullest partition, manifests,
# snapshots, metadata file size, metadata bytes, data bytes, PyIceberg plan_files time and
# DuckDB count(*) time (by the metadata file, and by the table directory via
# version-hint.text).
#
#   ./benches/growth.sh                          16 partitions, 1,800 rounds of 100 ms
#   PARTITIONS=1000 ROUNDS=300 ./benches/growth.sh
#   RATE=800 PROBES=200,1000,1800 ./benches/growth.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${ICESTREAM_CACHE:-$HOME/.cache/icestream}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
VENV=${ICESTREAM_VENV:-$CACHE/venv}
PARTITIONS=${PARTITIONS:-16}
ROUNDS=${ROUNDS:-1800}
PROBES=${PROBES:-200,1000,$ROUNDS}
RATE=${RATE:-800}
INTERVAL_MS=${INTERVAL_MS:-100}
cargo build --release -q -p icestream --bin icestream
BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d /tmp/icestream-growth.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
ADMIN=$(free_port)
BROKER_PID=
cleanup() {
  if [ -n "$BROKER_PID" ]; then kill "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
# Maintenance runs every 5 rounds, as at the defaults (rounds every 2 s, rewrites every
# 10 s); unreferenced files go after a minute instead of 10 (the run is short).
RUST_LOG=warn "$BIN/icestream" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" \
  --set admin_listen="127.0.0.1:$ADMIN" \
  --set compaction_interval_ms="$INTERVAL_MS" \
  --set table_rewrite_interval_ms=$((INTERVAL_MS * 5)) \
  --set table_metadata_grace_ms=60000 \
  ${EXTRA_SETTINGS:-} > "$WORK/broker.log" 2>&1 &
BROKER_PID=$!
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
"$VENV/bin/python" benches/growth/growth.py --bootstrap "127.0.0.1:$PORT" \
  --admin "127.0.0.1:$ADMIN" --data-dir "$WORK/data" --partitions "$PARTITIONS" \
  --rate "$RATE" --probes "$PROBES"
grep -E "ERROR|panicked" "$WORK/broker.log" | head -5 || true
