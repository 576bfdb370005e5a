#!/usr/bin/env bash
# The main job on the sample images: one base, two localized spins, diffed in one run (the base
# read, expanded and indexed once), then each patch applied, verified and compared, with ratios.
#   scripts/demo.sh [OLD NEW...]
#   (default: images/base.squashfs images/spin-de.squashfs images/spin-fr.squashfs)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/dev-null.sh
if [ $# -ge 2 ]; then
    old=$1; shift; news=("$@")
else
    old=images/base.squashfs; news=(images/spin-de.squashfs images/spin-fr.squashfs)
fi

# the libzstd releases other distributions' zstd images need (build.rs links them)
scripts/zstd-releases.sh >/dev/null
cargo build --release --quiet
bin=target/release/spindiff
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "== diff   $old -> ${news[*]}"
"$bin" diff "$old" "${news[@]}" --out-dir "$out" --memory 256M -v
for new in "${news[@]}"; do
    patch=$out/$(basename "$new").spd
    echo "== apply  $patch"
    "$bin" apply "$old" "$patch" -o "$out/rebuilt" -v
    echo "== verify"
    "$bin" verify "$old" "$patch" "$new"
    cmp "$out/rebuilt" "$new"
    echo "== inspect"
    "$bin" inspect "$patch"
    awk -v p="$(stat -c %s "$patch")" -v n="$(stat -c %s "$new")" -v name="$new" \
        'BEGIN { printf "RESULT: %s rebuilt byte-identical; patch %d bytes = %.2f%% of NEW (%d bytes)\n", name, p, 100 * p / n, n }'
    rm -f "$out/rebuilt"
done
