#!/usr/bin/env bash
# Apply on a small machine (issue 22): for each pair of the full corpus (scripts/make-images.sh),
# the default patch and the patch made with `diff --apply-memory 32M`, their sizes, and their
# applies timed with /usr/bin/time (peak RSS): the default patch with no cap and under `apply --memory 32M`, the 32M patch under
# `apply --memory 32M` (streamed, and by index with --threads 3). 2 threads, `--memory 1G`.
# Writes docs/benchmarks-small-apply.md.
#   scripts/bench-small-apply.sh [PAIR...]        (default: iso xziso xz1m)
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=$PWD/images/build/full
pairs=("$@"); [ ${#pairs[@]} -gt 0 ] || pairs=(iso xziso xz1m)
for p in "${pairs[@]}"; do
    [ -f "$corpus/$p.new" ] || { echo "$0: $corpus/$p.new: run scripts/make-images.sh first" >&2; exit 2; }
done
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
scripts/zstd-releases.sh >/dev/null  # the libzstd releases build.rs links
cargo build --release --quiet
work=$(mktemp -d -p "$corpus"); trap 'rm -rf "$work"' EXIT
bin=$work/spindiff
cp target/release/spindiff "$bin"
commit=$(git rev-parse --short HEAD)
# runs a command under GNU time; prints "seconds peak_MiB"
timed() {
    /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    awk '{ printf "%s %.1f", $1, $2 / 1024 }' "$work/time"
}
size() { stat -c %s "$1"; }
bound() { # the memory bound the last timed `apply -v` printed
    sed -n 's/.*memory bound \([0-9.]* [KMG]iB\).*/\1/p' "$work/err"
}
{
    echo "# Apply on a small machine (issue 22)"
    echo
    echo "\`scripts/bench-small-apply.sh\` at $commit, $(nproc) cores, \`--threads 2 --memory 1G\` for the diffs."
    echo "Each pair's default patch (4 MiB chunks), applied with no cap and under \`--memory 32M\` (format version 10), and the patch made with \`--apply-memory 32M\`;"
    echo "apply times in seconds and peak RSS in MiB from /usr/bin/time, one run each on a shared"
    echo "machine. \`--no-transform\` is the same pair's patch without the transform, applied as it is."
    echo
    echo "| pair | default patch | --apply-memory 32M patch (chunk) | size ratio | default apply s, MiB (bound) | default apply --memory 32M s, MiB (bound) | 32M apply s, MiB (bound) | 32M apply --threads 3 s, MiB | --no-transform apply s |"
    echo "|---|---|---|---|---|---|---|---|---|"
} > "$work/md"
for p in "${pairs[@]}"; do
    old=$corpus/$p.old new=$corpus/$p.new
    "$bin" diff "$old" "$new" -o "$work/default.spd" --threads 2 --memory 1G -q
    "$bin" diff "$old" "$new" -o "$work/plain.spd" --threads 2 --memory 1G -q --no-transform
    read -r d_s d_m <<<"$(timed "$bin" apply -v "$old" "$work/default.spd" -o "$work/out" --threads 2)"
    d_b=$(bound)
    cmp -s "$work/out" "$new" || { echo "$p: default apply differs" >&2; exit 1; }
    # the default patch on the small machine: under --memory 32M, or what it needs
    if "$bin" apply -v "$old" "$work/default.spd" -o "$work/out" --threads 2 --memory 32M 2>"$work/err" >/dev/null; then
        read -r c_s c_m <<<"$(timed "$bin" apply -v "$old" "$work/default.spd" -o "$work/out" --threads 2 --memory 32M)"
        cmp -s "$work/out" "$new" || { echo "$p: default apply under 32M differs" >&2; exit 1; }
        c="$c_s, $c_m ($(bound))"
    else
        c="refused: needs $(sed -n 's/.*needs --memory \([0-9]*M\) at least.*/\1/p' "$work/err")"
    fi
    read -r n_s _ <<<"$(timed "$bin" apply "$old" "$work/plain.spd" -o "$work/out" --threads 2)"
    a=$(size "$work/default.spd")
    if ! "$bin" diff "$old" "$new" -o "$work/small.spd" --threads 2 --memory 1G -q --apply-memory 32M 2>"$work/err"; then
        # refused: the least the pair's patch applies in
        least=$(sed -n 's/.*applies in \([0-9]* MiB\) at least.*/\1/p' "$work/err")
        printf '| %s | %s | refused: needs %s | | %s, %s (%s) | %s | | | %s |\n' \
            "$p" "$a" "$least" "$d_s" "$d_m" "$d_b" "$c" "$n_s" | tee -a "$work/md"
        continue
    fi
    chunk=$("$bin" inspect "$work/small.spd" | sed -n 's/^chunk size *//p')
    read -r s_s s_m <<<"$(timed "$bin" apply -v "$old" "$work/small.spd" -o "$work/out" --threads 2 --memory 32M)"
    s_b=$(bound)
    cmp -s "$work/out" "$new" || { echo "$p: 32M apply differs" >&2; exit 1; }
    read -r t_s t_m <<<"$(timed "$bin" apply "$old" "$work/small.spd" -o "$work/out" --threads 3 --memory 32M)"
    cmp -s "$work/out" "$new" || { echo "$p: 32M apply with 3 threads differs" >&2; exit 1; }
    b=$(size "$work/small.spd")
    printf '| %s | %s | %s (%s) | %s | %s, %s (%s) | %s | %s, %s (%s) | %s, %s | %s |\n' \
        "$p" "$a" "$b" "$chunk" "$(awk -v a="$b" -v b="$a" 'BEGIN { printf "%.3f", a / b }')" \
        "$d_s" "$d_m" "$d_b" "$c" "$s_s" "$s_m" "$s_b" "$t_s" "$t_m" "$n_s" | tee -a "$work/md"
done
cp "$work/md" docs/benchmarks-small-apply.md
echo "wrote docs/benchmarks-small-apply.md"
