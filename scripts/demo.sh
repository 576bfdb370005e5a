#!/usr/bin/env bash
# The main job on the sample images: diff, apply, verify, and the ratio.
#   scripts/demo.sh [OLD NEW]     (default: images/base.squashfs images/spin-de.squashfs)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/dev-null.sh
old=${1:-images/base.squashfs}
new=${2:-images/spin-de.squashfs}

cargo build --release --quiet
bin=target/release/spindiff
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "== diff   $old -> $new"
"$bin" diff "$old" "$new" -o "$out/patch.spd" --memory 256M -v
echo "== apply"
"$bin" apply "$old" "$out/patch.spd" -o "$out/rebuilt" -v
echo "== verify"
"$bin" verify "$old" "$out/patch.spd" "$new"
cmp "$out/rebuilt" "$new"
echo "== inspect"
"$bin" inspect "$out/patch.spd"
patch=$(stat -c %s "$out/patch.spd")
size=$(stat -c %s "$new")
awk -v p="$patch" -v n="$size" 'BEGIN { printf "RESULT: rebuilt NEW is byte-identical; patch %d bytes = %.2f%% of NEW (%d bytes)\n", p, 100 * p / n, n }'
