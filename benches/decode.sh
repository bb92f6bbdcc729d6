#!/usr/bin/env bash
# What bounded request decoding and produce-time batch validation cost, on real client
# traffic (fuzz/corpus) and generated batches in every codec; release build, prints a table.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${ICESTREAM_CACHE:-$HOME/.cache/icestream}
export CARGO_TARGET_DIR=$CACHE/decode-bench-target
cargo build -q --release --manifest-path benches/decode/Cargo.toml
"$CARGO_TARGET_DIR/release/icestream-decode-bench" fuzz/corpus
