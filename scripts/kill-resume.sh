#!/usr/bin/env bash
# A killed and resumed apply of a 1 GiB pair (issue 4):
#   scripts/kill-resume.sh [SIZE]      (default 1G; the pair comes from scripts/make-pair.py)
# Makes the patch, starts `spindiff apply`, kills it with SIGKILL once about half of NEW is in
# its partial file, then runs `spindiff apply --resume -v` under /usr/bin/time -v. The resume
# must report the chunks it kept without rewriting them (and the kernel's count of blocks it
# wrote must cover only the rest), and its output must verify and equal NEW.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1G}
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
cargo build --release --quiet
bin=$PWD/target/release/spindiff
dir=bench-work/pair-$size
[ -f "$dir/new.bin" ] || python3 scripts/make-pair.py "$size" "$dir" --edits 300 >&2
work=bench-work/kill-resume
rm -rf "$work" && mkdir -p "$work"
old=$dir/old.bin new=$dir/new.bin patch=$work/patch.spd out=$work/new.out
partial=$work/.new.out.spindiff-partial

"$bin" diff "$old" "$new" -o "$patch" --memory 512M -q
new_len=$(stat -c %s "$new")
echo "pair: OLD $(stat -c %s "$old") bytes, NEW $new_len bytes, patch $(stat -c %s "$patch") bytes"

"$bin" apply "$old" "$patch" -o "$out" -q &
pid=$!
while [ "$(stat -c %s "$partial" 2>/dev/null || echo 0)" -lt $((new_len / 2)) ]; do
    kill -0 $pid 2>/dev/null || { echo "apply finished before it could be killed" >&2; exit 1; }
    sleep 0.02
done
kill -KILL $pid
wait $pid 2>/dev/null || true
[ ! -e "$out" ] || { echo "FAIL: NEW appeared although apply was killed" >&2; exit 1; }
had=$(stat -c %s "$partial")
echo "killed: apply was SIGKILLed with $had bytes in $partial"

log=$(mktemp)
/usr/bin/time -v "$bin" apply "$old" "$patch" -o "$out" --resume -v 2>"$log"
grep -E '^(resume:|applied |summary:)' "$log"
blocks=$(awk -F': ' '/File system outputs/ { print $2 }' "$log")
echo "resume wrote $blocks blocks of 512 bytes = $((blocks * 512)) bytes; NEW minus the partial file: $((new_len - had)) bytes"
rm -f "$log"
cmp "$out" "$new"
"$bin" verify "$old" "$patch" "$out" -q
echo "RESULT: resumed NEW is byte-identical and verifies"
