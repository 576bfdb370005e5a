#!/usr/bin/env bash
# Spins with and without references (issue 23): each base -> spin pair of the corpus
# (scripts/make-images.sh) diffed without references and with the packages the spin adds as
# references (images/build/full/refs/: the .deb files debootstrap fetched for the spin and not
# the base), 2 threads, --memory 1G, taking turns; the patch with references applied with them
# (and checked), by index and streamed from a pipe. Times and peaks
# from /usr/bin/time; ratios, not absolute times (a shared machine). Writes
# docs/benchmarks-references.md and the same table into docs/benchmarks.md.
#   scripts/bench-references.sh [RUNS] [PAIR...]
#   (default: 3 runs; iso xziso xzsquash rawsquash tar erofs/kde; a PAIR is a corpus path
#   without .old/.new)
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=$PWD/images/build/full
refs=$corpus/refs
[ -d "$refs" ] || { echo "$0: $refs: run scripts/make-images.sh first" >&2; exit 2; }
runs=${1:-3}; shift || true
pairs=("$@"); [ ${#pairs[@]} -gt 0 ] || pairs=(iso xziso xzsquash rawsquash tar erofs/kde)
cargo build --release --quiet
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cp target/release/spindiff "$work/spindiff"
commit=$(git rev-parse --short HEAD)$(git diff --quiet || echo -dirty)
# runs a command under GNU time; prints "seconds peak_KiB"
timed() {
    /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    cat "$work/time"
}
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
size() { stat -c %s "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
{
    echo "# Spins with and without references (issue 23)"
    echo
    echo "\`scripts/bench-references.sh\` at $commit, $(nproc) cores, 2 threads, \`--memory 1G\`, medians of $runs"
    echo "runs taking turns: each base -> spin pair diffed without references and with the .deb files the spin"
    echo "adds (\`--ref-dir refs/\`: $(ls "$refs" | wc -l) packages, $(du -sb "$refs" | cut -f1) bytes), the patch with references applied"
    echo "with them by index (2 threads) and streamed from a pipe (one thread's worth of chunks), NEW checked."
    echo "Sizes in bytes, times in seconds, peaks in MiB (/usr/bin/time)."
    echo
    echo "| pair | NEW | patch without | patch with references | with / without | packages named | diff s without, with (ratio) | apply s, MiB | apply from a pipe: s, MiB |"
    echo "|---|---|---|---|---|---|---|---|---|"
} > "$work/md"
for pair in "${pairs[@]}"; do
    old=$corpus/$pair.old new=$corpus/$pair.new
    without=() with=()
    for _ in $(seq "$runs"); do
        read -r s _ < <(timed "$work/spindiff" diff "$old" "$new" -o "$work/p0" -q --threads 2 --memory 1G)
        without+=("$s")
        read -r s _ < <(timed "$work/spindiff" diff "$old" "$new" -o "$work/p1" -q --threads 2 --memory 1G --ref-dir "$refs")
        with+=("$s")
    done
    read -r as ak < <(timed "$work/spindiff" apply "$old" "$work/p1" -o "$work/out" --threads 2 --ref-dir "$refs")
    cmp -s "$work/out" "$new" || { echo "$0: $pair: apply did not give NEW" >&2; exit 1; }
    rm -f "$work/out"
    read -r ps pk < <(timed sh -c 'exec "$0" apply "$1" - -o "$2" --ref-dir "$3" < "$4"' \
        "$work/spindiff" "$old" "$work/out" "$refs" "$work/p1")
    cmp -s "$work/out" "$new" || { echo "$0: $pair: streamed apply did not give NEW" >&2; exit 1; }
    rm -f "$work/out"
    named=$("$work/spindiff" inspect "$work/p1" --json | python3 -c 'import json,sys; r=json.load(sys.stdin)["references"]; print(len(r["files"]) if r else 0)')
    dw=$(median "${without[@]}") dr=$(median "${with[@]}")
    printf '| %s | %d | %d | %d | %sx | %d | %.1f, %.1f (%sx) | %.1f, %d | %.1f, %d |\n' "$pair" "$(size "$new")" \
        "$(size "$work/p0")" "$(size "$work/p1")" "$(ratio "$(size "$work/p1")" "$(size "$work/p0")")" "$named" \
        "$dw" "$dr" "$(ratio "$dr" "$dw")" "$as" "$((ak / 1024))" "$ps" "$((pk / 1024))" >> "$work/md"
    echo "$pair done" >&2
done
cat >> "$work/md" <<'MD'

Pairs (docs/benchmarks.md, "Corpus"): iso, a live ISO with a gzip squashfs and a zstd initrd;
xziso, the same with xz; xzsquash, the roots as xz squashfs; rawsquash, as uncompressed
squashfs; tar, as tarballs; erofs/kde, the roots' /usr/share as EROFS with Fedora KDE's
settings (LZMA, all fragments, 1 MiB pclusters: docs/benchmarks-erofs.md). The spin adds German and French language packages (task-german,
manpages-de, hunspell-de-de, locales, ...); what the patch with references still carries is what
no package holds: the locales compiled on the image (`locale-gen`), dpkg's and man-db's
databases, the squashfs metadata.
MD
cp "$work/md" docs/benchmarks-references.md
scripts/bench-block.py references docs/benchmarks-references.md docs/benchmarks.md
cat docs/benchmarks-references.md
