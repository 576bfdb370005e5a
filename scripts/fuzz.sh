#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/: the container parser, apply with a fixed OLD,
# diff->apply round trips, the transform layer's readers: ISO, squashfs, EROFS, initrd xz, zstd and gzip streams; reference packages) for SECONDS in total, shared equally, on the stable toolchain
# (`--sanitizer none`; spindiff's own code is safe Rust, the fuzzers look for panics, hangs,
# aborts and runaway memory). Installs cargo-fuzz itself.
#   scripts/fuzz.sh SECONDS
# New coverage goes to fuzz/work/<target>/ (git-ignored), seeded from fuzz/corpus/<target>/. A
# failing input is saved under fuzz/artifacts/<target>/; copy it to fuzz/regressions/<target>/
# with a name saying what it found, and tests/fuzz_corpus.rs replays it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:?usage: scripts/fuzz.sh SECONDS}
targets=(inspect apply roundtrip squashfs packages)
each=$(( seconds / ${#targets[@]} ))
[ "$each" -ge 1 ] || { echo "scripts/fuzz.sh: give at least ${#targets[@]} seconds" >&2; exit 2; }

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz..."
    cargo install cargo-fuzz --locked --quiet
fi
command -v c++ >/dev/null || { apt-get update -qq && apt-get install -y -qq g++ >/dev/null; }

cargo fuzz build --sanitizer none --release --debug-assertions
mkdir -p fuzz/work
status=0
for t in "${targets[@]}"; do
    mkdir -p "fuzz/work/$t" "fuzz/artifacts/$t"
    log=fuzz/work/$t.log
    echo "== $t: $each s"
    # -rss_limit_mb: the apply bound of a hostile patch (64 MiB chunks) with room to spare;
    # -timeout: any single input taking 20 s is a hang
    if cargo fuzz run --sanitizer none --release --debug-assertions "$t" "fuzz/work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$each" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        result=FAILED; status=1
        grep -E "panicked|ERROR|SUMMARY|Test unit written" "$log" | head -20 || true
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    peak=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    corpus=$(find "fuzz/work/$t" -type f | wc -l)
    echo "$t: $result, ${runs:-?} executions in $each s, peak RSS ${peak:-?} MB, $corpus new corpus entries (log: $log)"
done
exit $status
