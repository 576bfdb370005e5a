#!/usr/bin/env bash
# Builds erofs-utils 1.8.9 (mkfs.erofs, dump.erofs, fsck.erofs) from the pinned source archive in
# ../shared/peers (or $SPINDIFF_PEERS) into target/peers/erofs-utils, once, and prints the
# directory holding the programs. A test fixture maker only: spindiff links none of it (Debian
# 12's own erofs-utils 1.5 has no LZMA, which Fedora's live media use). Installs the Debian
# packages the build needs.
#   scripts/erofs-utils.sh            -> .../target/peers/erofs-utils/bin
set -euo pipefail
cd "$(dirname "$0")/.."
peers=${SPINDIFF_PEERS:-$PWD/../shared/peers}
prefix=$PWD/target/peers/erofs-utils
if [ ! -x "$prefix/bin/mkfs.erofs" ]; then
    archive=$peers/erofs-utils-1.8.9.tar.gz
    [ -f "$archive" ] || { echo "$0: $archive: not found (set SPINDIFF_PEERS)" >&2; exit 2; }
    need=()
    for p in autoconf automake libtool pkg-config liblzma-dev libzstd-dev liblz4-dev zlib1g-dev uuid-dev make gcc; do
        dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
    done
    if [ ${#need[@]} -gt 0 ]; then
        apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    build=$(mktemp -d)
    trap 'rm -rf "$build"' EXIT
    tar xzf "$archive" -C "$build"
    (
        cd "$build"/erofs-utils-1.8.9
        ./autogen.sh
        ./configure --enable-lzma --with-libzstd --with-liblz4 --prefix="$prefix"
        make -j2
        make install
    ) >"$build/log" 2>&1 || { tail -30 "$build/log" >&2; exit 1; }
fi
echo "$prefix/bin"
