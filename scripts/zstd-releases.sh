#!/usr/bin/env bash
# Builds the libzstd releases spindiff recompresses with besides the one zstd-sys bundles
# (1.5.7): zstd blocks recompress bit for bit only with the release that made them, and
# Debian 12's mksquashfs and mkfs.erofs use 1.5.4 (issue 21). Each release's compressor is
# built from the zstd-sys crate that bundles it (fetched by cargo, never the system's library),
# its symbols renamed with a prefix of their own so that it links beside 1.5.7, into
#   target/peers/zstd-<release>/libspindiff_zstd_<release with _>.a
# which build.rs links when it is there (the codec then has that release as an encoding).
#   scripts/zstd-releases.sh            -> prints the directory of each archive
set -euo pipefail
cd "$(dirname "$0")/.."
# release -> the zstd-sys version that bundles it
declare -A CRATE=([1.5.4]=2.0.7+zstd.1.5.4)
for release in "${!CRATE[@]}"; do
    tag=${release//./_}
    out=$PWD/target/peers/zstd-$release
    lib=$out/libspindiff_zstd_$tag.a
    # an archive built before whole streams (single-threaded: no threads started) is rebuilt
    if [ -f "$lib" ] && ! nm "$lib" 2>/dev/null | grep -q " U pthread_create"; then
        rm -f "$lib"
    fi
    if [ ! -f "$lib" ]; then
        fetch=$PWD/target/peers/zstd-fetch-$release
        mkdir -p "$fetch/src"
        printf '[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\nzstd-sys = "=%s"\n\n[workspace]\n' \
            "${CRATE[$release]}" > "$fetch/Cargo.toml"
        echo 'fn main() {}' > "$fetch/src/main.rs"
        manifest=$(cargo metadata --manifest-path "$fetch/Cargo.toml" --format-version 1 |
            grep -o '"manifest_path":"[^"]*/zstd-sys-[^"]*"' | head -1 | sed 's/.*:"//; s/"$//')
        src=$(dirname "$manifest")/zstd/lib
        grep -q "ZSTD_VERSION_RELEASE *${release##*.}" "$src/zstd.h" ||
            { echo "$0: $src is not zstd $release" >&2; exit 2; }
        build=$(mktemp -d); trap 'rm -rf "$build"' EXIT
        # the compressor only, with its multi-threaded framing (the zstd command line's default,
        # which whole streams replay; mksquashfs and mkfs.erofs call it single-threaded), no
        # assembly, position independent (spindiff is linked as a PIE)
        for c in "$src"/common/*.c "$src"/compress/*.c; do
            cc -O3 -fPIC -pthread -DZSTD_MULTITHREAD -DXXH_NAMESPACE=ZSTD_ -DZSTD_DISABLE_ASM -I"$src" -I"$src/common" \
                -c "$c" -o "$build/$(basename "$(dirname "$c")")-$(basename "$c" .c).o"
        done
        ar rcs "$build/libzstd.a" "$build"/*.o
        # every symbol the archive defines gets the prefix; references to them follow
        nm -g --defined-only --format=posix "$build/libzstd.a" | awk 'NF >= 2 && $2 ~ /^[TDBRVW]$/ { print $1 }' |
            sort -u | awk -v p="spindiff_zstd_${tag}_" '{ print $1, p $1 }' > "$build/rename"
        mkdir -p "$out"
        objcopy --redefine-syms="$build/rename" "$build/libzstd.a" "$lib.tmp"
        mv "$lib.tmp" "$lib"
    fi
    echo "$out"
done
