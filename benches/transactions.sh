#!/usr/bin/env bash
# Transactional throughput against idempotent throughput, and read_committed end-to-end
# latency, with a release build of icestream on this machine: 1 KiB records,
# 16 partitions, acks=all; transactions commit every 100 ms. Throughput with 2 producers;
# latency with 1 producer, and with 2 (their transactions overlap on every partition, so a
# record is readable only once every transaction opened before it has ended: the last
# stable offset is the first offset of the oldest open transaction, as in Kafka).
#
#   ./benches/transactions.sh               30 s per scenario
#   DURATION=10 ./benches/transactions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${ICESTREAM_CACHE:-$HOME/.cache/icestream}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
DURATION=${DURATION:-30}
cargo build --release -q -p icestream --bin icestream
cargo build --release -q -p icestream-bench --bin loadgen
BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d /tmp/icestream-txn-bench.XXXXXX)
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
  RUST_LOG=warn "$BIN/icestream" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" \
    > "$WORK/broker.log" 2>&1 &
  BROKER_PID=$!
  for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && return; sleep 0.1; done
  echo "broker did not start"; cat "$WORK/broker.log"; exit 1
}
run() {
  local name=$1 title=$2; shift 2
  echo
  echo "### $title"
  "$BIN/loadgen" --bootstrap "127.0.0.1:$PORT" --duration "$DURATION" --partitions 16 \
    --record-size 1024 --acks all --producers "${PRODUCERS:-2}" --broker-pid "$BROKER_PID" "$@" \
    | tee "$WORK/$name.out"
}
mbps() { awk '/^throughput/ {print $2}' "$WORK/$1.out"; }

start_broker
run idem "idempotent, max throughput" --idempotence
start_broker
run txn "transactional, 100 ms transactions, max throughput" --transaction-ms 100
start_broker
PRODUCERS=1 run txn-latency "transactional, 1 producer, 100 ms transactions, 10 MB/s, read_committed end-to-end latency" \
  --transaction-ms 100 --rate-mb 10 --linger-ms 1 --consume
start_broker
run txn-latency-2 "transactional, 2 producers, 100 ms transactions, 10 MB/s, read_committed end-to-end latency" \
  --transaction-ms 100 --rate-mb 10 --linger-ms 1 --consume
start_broker
PRODUCERS=1 run idem-latency "idempotent, 1 producer, 10 MB/s, read_committed end-to-end latency (baseline)" \
  --idempotence --rate-mb 10 --linger-ms 1 --consume
echo
python3 -c "print(f'transactional / idempotent throughput: {float(\"$(mbps txn)\") / float(\"$(mbps idem)\") * 100:.0f}% ($(mbps txn) vs $(mbps idem) MB/s)')"
