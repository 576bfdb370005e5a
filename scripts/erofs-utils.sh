#!/usr/bin/env bash
# Builds erofs-utils 1.8.9 (mkfs.erofs, dump.erofs, fsck.erofs) from the pinned source archive in
# ../shared/peers (or $SPINDIFF_PEERS) into target/peers/erofs-utils, once, and prints the
# directory holding the programs. A test fixture maker only: spindiff links none of it (Debian
# 12's own erofs-utils 1.5 has no LZMA, which Fedora's live media use). Installs the Debian
# packages the build needs.
#
# zstd pclusters recompress bit for bit only with the libzstd release that made them, so
# mkfs.erofs is linked, statically, against the libzstd release spindiff's zstd-sys bundles
# (1.5.7, Fedora 42's), built from that crate's sources; Debian 12's 1.5.4 would make images
# whose zstd pclusters stay stored, as another distribution's may.
#   scripts/erofs-utils.sh            -> .../target/peers/erofs-utils-zstd<version>/bin
set -euo pipefail
cd "$(dirname "$0")/.."
peers=${SPINDIFF_PEERS:-$PWD/../shared/peers}
# the zstd-sys crate's sources (fetched by cargo; its version names the libzstd release)
manifest=$(cargo metadata --format-version 1 2>/dev/null |
    grep -o '"manifest_path":"[^"]*/zstd-sys-[^"]*"' | head -1 | sed 's/.*:"//; s/"$//')
zstd_src=$(dirname "$manifest")/zstd/lib
[ -f "$zstd_src/zstd.h" ] || { echo "$0: zstd-sys sources not found (cargo fetch first)" >&2; exit 2; }
zstd_version=$(basename "$(dirname "$manifest")" | sed 's/.*+zstd\.//')
prefix=$PWD/target/peers/erofs-utils-zstd$zstd_version
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
        # libzstd.a as zstd's own lib/Makefile builds it (single-threaded, no assembly: the
        # assembly only decodes)
        mkdir -p "$build/zstd/lib" "$build/zstd/include"
        for c in "$zstd_src"/common/*.c "$zstd_src"/compress/*.c "$zstd_src"/decompress/*.c; do
            cc -O2 -DXXH_NAMESPACE=ZSTD_ -DZSTD_DISABLE_ASM -I"$zstd_src" -I"$zstd_src/common" \
                -c "$c" -o "$build/zstd/$(basename "$(dirname "$c")")-$(basename "$c" .c).o"
        done
        ar rcs "$build/zstd/lib/libzstd.a" "$build"/zstd/*.o
        cp "$zstd_src"/zstd.h "$zstd_src"/zstd_errors.h "$build/zstd/include/"
        cd "$build"/erofs-utils-1.8.9
        ./autogen.sh
        ./configure --enable-lzma --with-libzstd --with-liblz4 --prefix="$prefix" \
            libzstd_CFLAGS="-I$build/zstd/include" libzstd_LIBS="-L$build/zstd/lib -lzstd"
        make -j2
        make install
    ) >"$build/log" 2>&1 || { tail -30 "$build/log" >&2; exit 1; }
fi
echo "$prefix/bin"
