#!/usr/bin/env bash
# Table-side benchmarks on release builds: compaction throughput, table freshness under a
# steady 10 MB/s, and consumer throughput from the WAL (hot) versus from Parquet (cold).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${ICESTREAM_CACHE:-$HOME/.cache/icestream}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
cargo build --release -q -p icestream --bin icestream
cargo build --release -q -p icestream-bench --bin loadgen --bin tablebench
BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d /tmp/icestream-tablebench.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BROKER_PID=
stop_broker() {
  if [ -n "$BROKER_PID" ]; then kill "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; fi
  BROKER_PID=
}
trap 'stop_broker; rm -rf "$WORK"' EXIT
start_broker() {
  stop_broker
  RUST_LOG=warn "$BIN/icestream" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" "$@" >> "$WORK/broker.log" 2>&1 &
  BROKER_PID=$!
  for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && return; sleep 0.1; done
  echo "broker did not start"; cat "$WORK/broker.log"; exit 1
}

echo "### compaction throughput (in-process, 512 MB of WAL, 16 partitions, 1 KiB records)"
"$BIN/tablebench" compact --mb "${COMPACT_MB:-512}" --partitions 16

echo
echo "### compaction throughput, small segments (~50 KiB: 3 records per partition, as a broker taking 10 MB/s writes every 5 ms)"
"$BIN/tablebench" compact --mb "${COMPACT_SMALL_MB:-128}" --partitions 16 --batch-records 3

echo
echo "### compaction throughput with typed columns (Avro values of a registered schema, decoded into columns)"
"$BIN/tablebench" compact --mb "${COMPACT_MB:-512}" --partitions 16 --avro

echo
echo "### small-file rewrite (in-process: 256 MB of WAL folded in 4 MB rounds, then rewritten)"
"$BIN/tablebench" compact --mb "${REWRITE_MB:-256}" --partitions 16 --round-mb 4 --rewrite | grep rewrite

echo
echo "### table freshness at 10 MB/s (defaults: compaction every 2 s)"
start_broker
"$BIN/tablebench" freshness --bootstrap "127.0.0.1:$PORT" --rate-mb 10 --duration "${DURATION:-30}" \
  --catalog "sqlite://$WORK/data/catalog.db" --object-store "file://$WORK/data/objects"
stop_broker
rm -rf "$WORK/data"

echo
echo "### hot fetch (WAL) versus cold fetch (Parquet), 8 partitions"
start_broker --set compaction=false
"$BIN/loadgen" --bootstrap "127.0.0.1:$PORT" --topic fetchbench --partitions 8 --record-size 1024 \
  --duration 10 --warmup 0 --producers 2 | grep -E "throughput"
"$BIN/tablebench" fetch --bootstrap "127.0.0.1:$PORT" --topic fetchbench --partitions 8 | sed 's/^fetch /hot fetch /'
start_broker --set compaction=true --set segment_grace_ms=10000 --set gc_interval_ms=1000 --set compaction_interval_ms=500
for _ in $(seq 600); do
  [ -z "$(ls "$WORK/data/objects/wal" 2>/dev/null)" ] && break
  sleep 1
done
"$BIN/tablebench" fetch --bootstrap "127.0.0.1:$PORT" --topic fetchbench --partitions 8 | sed 's/^fetch /cold fetch/'
