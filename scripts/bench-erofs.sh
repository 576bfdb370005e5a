#!/usr/bin/env bash
# EROFS pairs (scripts/make-images.sh: the base and German spin's /usr/share as EROFS made with
# Fedora's, lorax's and Debian's settings) against HDiffPatch 4.12 in the same run: spindiff,
# spindiff --no-transform and hdiffz -m take turns on each pair (2 threads, --memory 1G), each
# timed with /usr/bin/time -v; spindiff's patch is applied and checked. Writes
# docs/benchmarks-erofs.md and the same table into docs/benchmarks.md.
# cross (the base as xz squashfs, the spin as EROFS with KDE's settings) is set against
# crossplain (both uncompressed), layered (an ISO with two xz squashfs layers and an xz initrd)
# against layeredplain (the same ISO with nothing compressed), every other pair against plain
# (uncompressed EROFS).
# zstdsquash (Debian's mksquashfs, zstd 19) is set against rawsquash (the same roots uncompressed);
# zstdinitrd, xzinitrd, gzinitrd, gz9initrd and zstd15initrd (initramfs-tools' initrds: zstd -9,
# single-threaded xz, gzip -n; dracut's gzip -n -9; dracut-ng's zstd -15 -T0) against
# zstdinitrdplain (the same cpio uncompressed).
#   scripts/bench-erofs.sh [KIND...]
#   (default: kde coreos lorax lz4hc cross layered zstdsquash zstdinitrd xzinitrd gzinitrd gz9initrd zstd15initrd)
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=$PWD/images/build/full/erofs
[ -d "$corpus" ] || { echo "$0: $corpus: run scripts/make-images.sh first" >&2; exit 2; }
kinds=("$@"); [ ${#kinds[@]} -gt 0 ] || kinds=(kde coreos lorax lz4hc cross layered zstdsquash zstdinitrd xzinitrd gzinitrd gz9initrd zstd15initrd)
hdp=$PWD/images/build/peers/HDiffPatch-4.12.0-505eaa5
[ -x "$hdp/hdiffz" ] || { echo "$0: build HDiffPatch first (scripts/bench-peers.sh does)" >&2; exit 2; }
scripts/zstd-releases.sh >/dev/null  # the libzstd releases build.rs links
cargo build --release --quiet
cargo bench --bench recompress --no-run --quiet 2>/dev/null
# the encoders' own time for the blocks a patch's apply recompresses (benches/recompress.rs)
encoders() { cargo bench --bench recompress --quiet -- "$1" "$2" 2>/dev/null | awk '/^encoders:/ { print $2 }'; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cp target/release/spindiff "$work/spindiff"
commit=$(git rev-parse --short HEAD)
# runs a command under GNU time; prints "seconds peak_KiB"
timed() {
    /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    cat "$work/time"
}
size() { stat -c %s "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
{
    echo "# Live media pairs: EROFS, and an ISO with layers and an initrd (issue 21)"
    echo
    echo "\`scripts/bench-erofs.sh\` at $commit, $(nproc) cores, 2 threads, \`--memory 1G\`: the base and German"
    echo "spin's /usr/share as EROFS (mkfs.erofs 1.8.9), and the two roots as an ISO with layers (layered)."
    echo "Patch sizes in bytes; times in seconds and peaks in MiB from /usr/bin/time, one run each on a"
    echo "shared machine (ratios, not absolute times)."
    echo
    echo "| pair (settings) | NEW | spindiff | --no-transform | hdiffz -m | spindiff / hdiffz | spindiff / uncompressed pair | diff s (hdiffz) | apply s, MiB | encoders s (apply / their time per thread) |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
} > "$work/md"
declare -A uncompressed=()
# the uncompressed pairs first, each once
# the uncompressed pair each pair is set against
against_of() {
    case $1 in
        cross | crossplain) echo crossplain ;;
        layered*) echo layeredplain ;;
        zstdsquash | rawsquash) echo rawsquash ;;
        *initrd*) echo zstdinitrdplain ;;
        *) echo plain ;;
    esac
}
# the uncompressed pairs first, each once, then the rest
order=()
for k in "${kinds[@]}"; do
    a=$(against_of "$k")
    [[ " ${order[*]} " == *" $a "* ]] || order+=("$a")
done
for k in "${kinds[@]}"; do case $k in plain | crossplain | layeredplain | rawsquash | zstdinitrdplain) ;; *) order+=("$k") ;; esac; done
for kind in "${order[@]}"; do
    dir=$corpus; case $kind in layered* | zstdsquash | rawsquash | *initrd*) dir=$corpus/.. ;; esac
    old=$dir/$kind.old new=$dir/$kind.new
    read -r ds dk < <(timed "$work/spindiff" diff "$old" "$new" -o "$work/p" -q --threads 2 --memory 1G)
    timed "$work/spindiff" diff "$old" "$new" -o "$work/raw" -q --threads 2 --memory 1G --no-transform >/dev/null
    read -r hs hk < <(timed "$hdp/hdiffz" -m-6 -SD -c-zstd-21-24 -p-2 -d -f "$old" "$new" "$work/h")
    read -r as ak < <(timed "$work/spindiff" apply "$old" "$work/p" -o "$work/out" --threads 2)
    cmp -s "$work/out" "$new" || { echo "$0: $kind: apply did not give NEW" >&2; exit 1; }
    p=$(size "$work/p")
    es=$(encoders "$work/p" "$new")
    per_thread=$(awk -v a="$as" -v e="$es" 'BEGIN { if (e > 0) printf "%.2fx", a / (e / 2); else print "n/a" }')
    case $kind in plain | crossplain | layeredplain | rawsquash | zstdinitrdplain) uncompressed[$kind]=$p ;; esac
    against=$(against_of "$kind")
    printf '| %s | %d | %d | %d | %d | %sx | %sx | %.1f (%.1f) | %.1f, %d | %.1f (%s) |\n' "$kind" "$(size "$new")" \
        "$p" "$(size "$work/raw")" "$(size "$work/h")" "$(ratio "$p" "$(size "$work/h")")" \
        "$(ratio "$p" "${uncompressed[$against]}")" "$ds" "$hs" "$as" "$((ak / 1024))" "$es" "$per_thread" >> "$work/md"
    echo "$kind done" >&2
done
cat >> "$work/md" <<'MD'

encoders: the encoders' own time for the blocks the apply recompresses, one at a time
(`cargo bench --bench recompress -- PATCH NEW`); an apply with 2 threads cannot take less than
half of it.

Settings: kde `-zlzma,level=6 -Eall-fragments,fragdedupe=inode -C1048576` (Fedora KDE's trials),
coreos `-zlzma,level=6 -Efragments` (Fedora CoreOS), lorax `-zzstd,level=8 -Ededupe,all-fragments
-C65536`, lz4hc `-zlz4hc` (Debian 12's erofs-utils default), plain: uncompressed, what a
transform can reach. cross: the base as xz squashfs (`-Xbcj x86 -b 1M -Xdict-size 1M`), the
spin as kde's EROFS, as Fedora 41 -> 42 upgrades went; crossplain: both uncompressed (cross's
ratio is against it). mkfs.erofs is linked against libzstd 1.5.7 (Fedora 42's, the release
spindiff bundles; spindiff also links 1.5.4, Debian 12's); zstd pclusters made by a release
spindiff does not link do not reproduce and the file system is diffed as stored, as
`--no-transform` does. layered: an ISO as Ubuntu's
desktop ISO is made, the root without /usr/share and /usr/share as two xz squashfs layers (`-Xbcj
x86`), and an initrd as dracut writes it (a microcode cpio, then `xz --check=crc32
--lzma2=dict=1MiB -T2` of a cpio of /usr/share/locale, 69 -> 75 MB); layeredplain: the same ISOs
with uncompressed squashfs layers and an uncompressed initrd (layered's ratio is against it).
zstdsquash: the base and spin roots as zstd squashfs at level 19 made by Debian 12's mksquashfs
(libzstd 1.5.4, which spindiff links beside 1.5.7); rawsquash: the same roots uncompressed.
zstdinitrd: an initrd as Debian 12's initramfs-tools writes it (a microcode cpio, then `zstd -q
-9` from a pipe: the zstd command line's multi-threaded framing) of the roots' /usr/share/locale
and storage modules (120 -> 126 MB of cpio), one whole stream; xzinitrd: the same with
initramfs-tools' `xz --check=crc32` (single-threaded: one block); gzinitrd: with its `gzip -n`
(level 6), gz9initrd: with dracut's `gzip -n -9` (each rebuilt from the recipe NEW's table
carries); zstd15initrd: with dracut-ng's `zstd -15 -q -T0` (Fedora 43's default: a level whose
search runs where NEW is expanded, its memory planned); zstdinitrdplain: the cpio uncompressed (the initrd pairs' ratio is against it).
MD
cp "$work/md" docs/benchmarks-erofs.md
# the same table in docs/benchmarks.md, between its markers (scripts/bench-report.py keeps it)
scripts/bench-block.py erofs docs/benchmarks-erofs.md docs/benchmarks.md
cat docs/benchmarks-erofs.md
