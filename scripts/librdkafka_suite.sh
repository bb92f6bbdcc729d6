#!/usr/bin/env bash
# Builds librdkafka 2.0.2's own test suite (the source Debian bookworm packages) into the
# cache and prints the directory holding its `test-runner`, for
# tests/e2e/test_librdkafka_suite.py. Work already done is skipped (a stamp file).
#
#   ./scripts/librdkafka_suite.sh    -> $CACHE/librdkafka-2.0.2/tests
set -euo pipefail

CACHE=${ICESTREAM_CACHE:-$HOME/.cache/icestream}
VERSION=2.0.2
URL=http://deb.debian.org/debian/pool/main/libr/librdkafka/librdkafka_$VERSION.orig.tar.gz
SHA256=f321bcb1e015a34114c83cf1aa7b99ee260236aab096b85c003170c90a47ca9d
# Only what the suite needs: no Kerberos (libsasl2) nor libcurl (OIDC), the bundled LZ4.
CONFIGURE=(--no-download --disable-gssapi --disable-curl --disable-lz4-ext --enable-zstd
           --enable-ssl --enable-zlib)
SRC=$CACHE/librdkafka-$VERSION
STAMP=$SRC/.icestream-built
recipe="$VERSION $SHA256 ${CONFIGURE[*]}"

if [ "$(cat "$STAMP" 2>/dev/null)" = "$recipe" ]; then
  echo "$SRC/tests"
  exit 0
fi

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}

# Compilers, the -dev packages of the codecs and TLS the library links, and RapidJSON
# (headers only), without which the tests that check statistics JSON skip themselves.
packages=()
command -v curl >/dev/null || packages+=(curl)
command -v make >/dev/null || packages+=(make)
command -v g++ >/dev/null || packages+=(g++)
command -v pkg-config >/dev/null || packages+=(pkg-config)
for p in libssl-dev libzstd-dev zlib1g-dev rapidjson-dev; do
  dpkg -s "$p" >/dev/null 2>&1 || packages+=("$p")
done
if [ ${#packages[@]} -gt 0 ]; then
  echo "librdkafka suite: installing ${packages[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -q >/dev/null
  as_root apt-get install -y -q "${packages[@]}" >/dev/null </dev/null
fi

mkdir -p "$CACHE"
tarball=$CACHE/librdkafka_$VERSION.orig.tar.gz
if ! echo "$SHA256  $tarball" | sha256sum -c --status 2>/dev/null; then
  echo "librdkafka suite: downloading $URL" >&2
  curl -fsSL --retry 3 -o "$tarball.part" "$URL"
  echo "$SHA256  $tarball.part" | sha256sum -c --status \
    || { echo "librdkafka suite: sha256 mismatch for $URL" >&2; rm -f "$tarball.part"; exit 1; }
  mv "$tarball.part" "$tarball"
fi

# A fresh tree each time: a half-finished build leaves no stamp.
echo "librdkafka suite: building (a few minutes)" >&2
rm -rf "$SRC"
tar -xzf "$tarball" -C "$CACHE"
log=$CACHE/librdkafka-build.log
jobs=$(nproc)
if ! (cd "$SRC" \
      && ./configure "${CONFIGURE[@]}" \
      && make -j"$jobs" libs \
      && make -j"$jobs" -C tests build) >"$log" 2>&1 </dev/null; then
  tail -n 40 "$log" >&2
  echo "librdkafka suite: build failed, full log in $log" >&2
  exit 1
fi
echo "$recipe" > "$STAMP"
echo "$SRC/tests"
