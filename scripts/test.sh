#!/usr/bin/env bash
# Installs everything the tests need (Debian packages, a Python virtualenv with pinned
# clients and engines) and runs every test: formatting, lints, Rust unit/integration tests
# (the metadata conformance suite against the embedded store and a private PostgreSQL),
# and the end-to-end tests against real `icestream serve` processes.
#
#   ./scripts/test.sh            everything
#   ./scripts/test.sh -k kcat    end-to-end tests matching a pytest expression
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${ICESTREAM_CACHE:-$HOME/.cache/icestream}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
mkdir -p "$CACHE"

log() { printf '\n== %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}

# --- Debian packages --------------------------------------------------------------------
packages=()
command -v kcat >/dev/null || packages+=(kcat)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || packages+=(postgresql)
command -v python3 >/dev/null || packages+=(python3 python3-venv)
dpkg -s libclang-dev >/dev/null 2>&1 || packages+=(libclang-dev)
# librdkafka with TLS and SCRAM in the load generator (benches/, built by clippy)
dpkg -s libssl-dev >/dev/null 2>&1 || packages+=(libssl-dev)
command -v pkg-config >/dev/null || packages+=(pkg-config)
command -v javac >/dev/null || packages+=(openjdk-17-jdk-headless)  # the Java client and Flink tests
# Debian's Go clients (sarama 1.22, kafka-go 0.2.1), which speak pre-0.11 protocol versions
command -v go >/dev/null || packages+=(golang-go)
dpkg -s golang-github-shopify-sarama-dev >/dev/null 2>&1 || packages+=(golang-github-shopify-sarama-dev)
dpkg -s golang-github-segmentio-kafka-go-dev >/dev/null 2>&1 || packages+=(golang-github-segmentio-kafka-go-dev)
if [ ${#packages[@]} -gt 0 ]; then
  log "installing ${packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -q >/dev/null
  as_root apt-get install -y -q "${packages[@]}" >/dev/null
fi

# --- Python virtualenv ------------------------------------------------------------------
VENV=$CACHE/venv
stamp=$(sha256sum tests/requirements.txt | cut -c1-16)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.stamp" 2>/dev/null)" != "$stamp" ]; then
  log "python virtualenv"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -r tests/requirements.txt
  echo "$stamp" > "$VENV/.stamp"
fi
export PATH="$VENV/bin:$PATH"

# --- A private PostgreSQL on a free loopback port ----------------------------------------
PG_BIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")
PG_DIR=$(mktemp -d /tmp/icestream-pg.XXXXXX)
PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
[ "$(id -u)" = 0 ] && chown postgres "$PG_DIR"
pg "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres --no-sync >/dev/null
pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
  -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
cleanup() {
  pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
}
trap cleanup EXIT
export ICESTREAM_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"

# --- Rust --------------------------------------------------------------------------------
if [ $# -eq 0 ]; then
  log "cargo fmt --check"
  cargo fmt --all -- --check
  log "cargo clippy"
  cargo clippy --workspace --all-targets -q -- -D warnings
  log "cargo check --features foundationdb (the FoundationDB backend compiles; linking needs libfdb_c)"
  cargo check -q -p icestream --features foundationdb
  log "cargo test"
  cargo test --workspace -q
  # Every fuzz target briefly, from its corpus of real client traffic (the long campaign is
  # ./benches/fuzz.sh). libFuzzer needs the nightly toolchain; a machine without it skips.
  if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    log "fuzz targets (${FUZZ_RUNS:=30000} executions each)"
    RUNS=$FUZZ_RUNS ./benches/fuzz.sh
  else
    log "fuzz targets skipped: no nightly toolchain (rustup toolchain install nightly)"
  fi
fi
log "cargo build (icestream binary)"
cargo build -q -p icestream --bin icestream
export ICESTREAM_TEST_BIN=$CARGO_TARGET_DIR/debug/icestream

# librdkafka's own test suite, built once into the cache (tests/e2e/test_librdkafka_suite.py)
log "librdkafka test suite"
suite=$(ICESTREAM_CACHE=$CACHE ./scripts/librdkafka_suite.sh)
export ICESTREAM_LIBRDKAFKA_TESTS=$suite

# --- End to end --------------------------------------------------------------------------
log "end-to-end tests"
cd "$ROOT/tests"
python -m pytest -q -p no:cacheprovider "$@"
