#!/usr/bin/env bash
# What security costs: produce throughput and the broker's CPU per GiB over PLAINTEXT
# versus SASL_SSL (TLS with SCRAM-SHA-512) and SASL_PLAINTEXT, with 1 KiB records on 16
# partitions, acks=all, through the librdkafka load generator (src/loadgen.rs). The CA
# and certificate are made here with openssl; the user with `icestream users`.
#
#   ./benches/security.sh               30 s per scenario
#   DURATION=10 ./benches/security.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${ICESTREAM_CACHE:-$HOME/.cache/icestream}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
DURATION=${DURATION:-30}
cargo build --release -q -p icestream --bin icestream
cargo build --release -q -p icestream-bench --bin loadgen
BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d /tmp/icestream-security.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BROKER_PID=
SCENARIO=0
stop_broker() {
  if [ -n "$BROKER_PID" ]; then kill "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; fi
  BROKER_PID=
}
trap 'stop_broker; rm -rf "$WORK"' EXIT

(
  cd "$WORK"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 \
    -subj "/CN=bench CA" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
    -subj "/CN=localhost" 2>/dev/null
  echo "subjectAltName=IP:127.0.0.1,DNS:localhost" > server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
    -days 1 -extfile server.ext 2>/dev/null
)

PLAIN=$(free_port)
SASL_SSL=$(free_port)
SASL_PLAIN=$(free_port)
start_broker() {
  stop_broker
  # A new directory per scenario, all removed at exit: on ext4 without a journal, files
  # created within seconds of deleting many others pay for skipping their inodes.
  DATA=$WORK/data.$((++SCENARIO))
  "$BIN/icestream" users --data-dir "$DATA" add bench --password bench-secret >/dev/null
  RUST_LOG=warn "$BIN/icestream" serve --data-dir "$DATA" \
    --set "listeners=PLAINTEXT://127.0.0.1:$PLAIN,SASL_SSL://127.0.0.1:$SASL_SSL,SASL_PLAINTEXT://127.0.0.1:$SASL_PLAIN" \
    --set "ssl_certificate_file=$WORK/server.pem" --set "ssl_key_file=$WORK/server.key" \
    --set "super_users=User:bench;User:ANONYMOUS" \
    --set admin_listen= --set schema_registry_listen= > "$WORK/broker.log" 2>&1 &
  BROKER_PID=$!
  for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$PLAIN) 2>/dev/null && return; sleep 0.1; done
  echo "broker did not start"; cat "$WORK/broker.log"; exit 1
}

scenario() {
  local title=$1 port=$2; shift 2
  start_broker
  echo
  echo "### $title"
  "$BIN/loadgen" --bootstrap "127.0.0.1:$port" --duration "$DURATION" \
    --broker-pid "$BROKER_PID" --wal-dir "$DATA/objects/wal" \
    --partitions 16 --record-size 1024 --acks all --producers 2 "$@"
}

scenario "PLAINTEXT: 1 KiB records, 16 partitions, acks=all" "$PLAIN"
scenario "SASL_SSL (TLS 1.3, SCRAM-SHA-512): 1 KiB records, 16 partitions, acks=all" "$SASL_SSL" \
  --client security.protocol=SASL_SSL --client sasl.mechanisms=SCRAM-SHA-512 \
  --client sasl.username=bench --client sasl.password=bench-secret \
  --client "ssl.ca.location=$WORK/ca.pem"
scenario "SASL_PLAINTEXT (SCRAM-SHA-512): 1 KiB records, 16 partitions, acks=all" "$SASL_PLAIN" \
  --client security.protocol=SASL_PLAINTEXT --client sasl.mechanisms=SCRAM-SHA-512 \
  --client sasl.username=bench --client sasl.password=bench-secret
