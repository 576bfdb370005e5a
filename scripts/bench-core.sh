#!/usr/bin/env bash
# Core acceptance measurements (issue 2), with /usr/bin/time -v for wall time and peak RSS:
#   1. a 1 GiB pair round-trips with --memory 512M: diff peak RSS <= 512 MiB, apply <= 64 MiB
#   2. a 256 MiB pair: patch size and diff wall time against bsdiff 4.3, from the same run
#   3. the 256 MiB patch is byte-identical with --threads 1 and --threads 2
# Pairs come from scripts/make-pair.py into bench-work/ (git-ignored). Installs bsdiff and time.
#   scripts/bench-core.sh [BIG_SIZE] [CMP_SIZE]      (defaults: 1G 256M)
set -euo pipefail
cd "$(dirname "$0")/.."
big=${1:-1G}
cmp=${2:-256M}
work=bench-work
mkdir -p "$work"

need=()
command -v bsdiff >/dev/null || need+=(bsdiff)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
scripts/zstd-releases.sh >/dev/null  # the libzstd releases build.rs links
cargo build --release --quiet
bin=$PWD/target/release/spindiff

pair() { # SIZE -> directory with old.bin and new.bin
    local dir=$work/pair-$1
    [ -f "$dir/new.bin" ] || python3 scripts/make-pair.py "$1" "$dir" --edits 300 >&2
    echo "$dir"
}

# timed LABEL CMD... : runs CMD under /usr/bin/time -v, prints "LABEL wall_s peak_kib"
timed() {
    local label=$1; shift
    local log; log=$(mktemp)
    /usr/bin/time -v "$@" 2>"$log" >/dev/null || { cat "$log" >&2; rm -f "$log"; return 1; }
    local wall rss
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s }' "$log")
    rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$log")
    rm -f "$log"
    echo "$label $wall $rss"
}

row() { awk -v l="$1" -v w="$2" -v r="$3" -v extra="$4" 'BEGIN { printf "| %-44s | %9.2f s | %9.1f MiB | %s\n", l, w, r / 1024, extra }'; }

echo "== 1. $big pair under --memory 512M, 2 threads"
d=$(pair "$big")
read -r _ dw dr < <(timed diff "$bin" diff "$d/old.bin" "$d/new.bin" -o "$d/p.spd" --memory 512M --threads 2 -q)
read -r _ aw ar < <(timed apply "$bin" apply "$d/old.bin" "$d/p.spd" -o "$d/out.bin" --threads 2 -q)
cmp "$d/out.bin" "$d/new.bin" && echo "round trip: identical"
row "spindiff diff  ($big, --memory 512M)" "$dw" "$dr" "patch $(stat -c %s "$d/p.spd") B"
row "spindiff apply ($big)" "$aw" "$ar" ""
[ "$dr" -le $((512 * 1024)) ] && echo "diff peak RSS <= 512 MiB: yes" || echo "diff peak RSS <= 512 MiB: NO"
[ "$ar" -le $((64 * 1024)) ] && echo "apply peak RSS <= 64 MiB: yes" || echo "apply peak RSS <= 64 MiB: NO"
rm -f "$d/out.bin"

echo "== 2. $cmp pair: spindiff against bsdiff, 2 threads"
d=$(pair "$cmp")
read -r _ sw sr < <(timed spindiff "$bin" diff "$d/old.bin" "$d/new.bin" -o "$d/p.spd" --threads 2 -q)
read -r _ bw br < <(timed bsdiff bsdiff "$d/old.bin" "$d/new.bin" "$d/p.bsdiff")
"$bin" apply "$d/old.bin" "$d/p.spd" -o "$d/out.bin" -q && cmp "$d/out.bin" "$d/new.bin" && rm -f "$d/out.bin"
ss=$(stat -c %s "$d/p.spd"); bs=$(stat -c %s "$d/p.bsdiff")
row "spindiff diff ($cmp)" "$sw" "$sr" "patch $ss B"
row "bsdiff 4.3    ($cmp)" "$bw" "$br" "patch $bs B"
awk -v s="$ss" -v b="$bs" -v sw="$sw" -v bw="$bw" 'BEGIN { printf "patch size spindiff/bsdiff = %.3f; bsdiff/spindiff wall time = %.1fx\n", s / b, bw / sw }'

echo "== 3. determinism on the $cmp pair"
"$bin" diff "$d/old.bin" "$d/new.bin" -o "$d/p1.spd" --threads 1 -q
cmp "$d/p1.spd" "$d/p.spd" && echo "--threads 1 and --threads 2 patches are byte-identical"
