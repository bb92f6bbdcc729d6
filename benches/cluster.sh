#!/usr/bin/env bash
# Cluster benchmarks on release builds with a private PostgreSQL as the shared metadata
# store: produce throughput through one broker versus two brokers side by side (same
# object store directory, same metadata), and segment-commit latency and conflict rate
# when two writers commit into the same partitions.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${ICESTREAM_CACHE:-$HOME/.cache/icestream}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
DURATION=${DURATION:-20}
cargo build --release -q -p icestream --bin icestream
cargo build --release -q -p icestream-bench --bin loadgen --bin tablebench
BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d /tmp/icestream-cluster.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PG_BIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")
PG_PORT=$(free_port)
pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$WORK"
pg "$PG_BIN/initdb" -D "$WORK/pg" -A trust -U postgres --no-sync >/dev/null
pg "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w \
  -o "-p $PG_PORT -k $WORK -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  pg "$PG_BIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
newdb() {
  local name=$1
  pg "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -q -c "CREATE DATABASE $name" >/dev/null
  echo "postgres://postgres@127.0.0.1:$PG_PORT/$name"
}
start_broker() {
  local name=$1 port=$2 meta=$3
  RUST_LOG=warn "$BIN/icestream" serve --listen "127.0.0.1:$port" --data-dir "$WORK/$name" \
    --metadata "$meta" --object-store "file://$WORK/objects" --set "catalog=$meta" \
    --set admin_listen= > "$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && return; sleep 0.1; done
  echo "broker $name did not start"; cat "$WORK/$name.log"; exit 1
}

echo "### one broker (PostgreSQL metadata), 1 KiB records, 16 partitions, acks=all"
META=$(newdb one)
P1=$(free_port)
start_broker one "$P1" "$META"
"$BIN/loadgen" --bootstrap "127.0.0.1:$P1" --partitions 16 --record-size 1024 --producers 2 \
  --duration "$DURATION" | grep -E "throughput|produce latency"
for p in "${PIDS[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
PIDS=()

echo
echo "### two brokers side by side (same metadata, same object store)"
META=$(newdb two)
P1=$(free_port); P2=$(free_port)
start_broker b1 "$P1" "$META"
start_broker b2 "$P2" "$META"
sleep 2
"$BIN/loadgen" --bootstrap "127.0.0.1:$P1,127.0.0.1:$P2" --partitions 16 --record-size 1024 \
  --producers 2 --duration "$DURATION" | grep -E "throughput|produce latency"
for p in "${PIDS[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
PIDS=()

echo
echo "### segment commits into the same 16 partitions: 1 writer, then 2 writers"
"$BIN/tablebench" meta --metadata "$(newdb m1)" --writers 1 --duration "$DURATION"
"$BIN/tablebench" meta --metadata "$(newdb m2)" --writers 2 --duration "$DURATION"
