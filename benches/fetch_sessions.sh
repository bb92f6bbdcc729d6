#!/usr/bin/env bash
# Fetch cost with and without incremental fetch sessions (KIP-227): one consumer of 1,000
# partitions against a release broker on the local store, with full requests and then
# through a session (src/fetchbench.rs). First with nothing produced and no long poll (the
# cost of a fetch that finds nothing, as fast as the consumer asks), then with 10 of the
# partitions receiving 2,000 records/s and a 500 ms long poll.
#
#   ./benches/fetch_sessions.sh
#   DURATION=30 PARTITIONS=5000 ./benches/fetch_sessions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${ICESTREAM_CACHE:-$HOME/.cache/icestream}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
DURATION=${DURATION:-20}
PARTITIONS=${PARTITIONS:-1000}
cargo build --release -q -p icestream --bin icestream
cargo build --release -q -p icestream-bench --bin fetchbench
BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d /tmp/icestream-fetch.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RUST_LOG=warn "$BIN/icestream" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" \
  --set admin_listen= --set schema_registry_listen= > "$WORK/broker.log" 2>&1 &
BROKER_PID=$!
trap 'kill $BROKER_PID 2>/dev/null || true; wait $BROKER_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
echo "### idle partitions, max_wait_ms 0"
"$BIN/fetchbench" --bootstrap "127.0.0.1:$PORT" --broker-pid "$BROKER_PID" \
  --partitions "$PARTITIONS" --duration "$DURATION" --rate 0 --max-wait-ms 0 "$@"
echo
echo "### 10 active partitions, 2000 records/s, max_wait_ms 500"
"$BIN/fetchbench" --bootstrap "127.0.0.1:$PORT" --broker-pid "$BROKER_PID" \
  --partitions "$PARTITIONS" --duration "$DURATION" "$@"
