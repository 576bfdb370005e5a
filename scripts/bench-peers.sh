#!/usr/bin/env bash
# Head-to-head benchmark of spindiff against HDiffPatch 4.12 (hdiffz -m and -s), bsdiff/bspatch 4.3,
# xdelta3 and zstd --patch-from on every pair of the corpus (scripts/make-images.sh), in one run:
#   scripts/bench-peers.sh [--small] [--runs N] [--timeout SECONDS] [--resume] [--only TOOL,...]
# Run by run, pair by pair, the tools take turns (spindiff, spindiff --no-transform, hdiffz -m,
# hdiffz -s, bsdiff, xdelta3, zstd -19, zstd -3), each timed with /usr/bin/time -v for diff and for
# apply (bsdiff, which takes minutes a pair, after all the others); every applied output is
# compared with NEW. hpatchz does not fsync and spindiff does, so
# hpatchz's apply is also timed followed by `sync` (the apply_sync_s column). A run killed by the
# time limit or for lack of memory is recorded as such, and that tool is not run again on that pair
# (its later runs are recorded with the same status: the tools are deterministic, a second try
# would only burn the limit again). HDiffPatch is built by this script from the source archive in
# ../shared/peers (or $SPINDIFF_PEERS). Writes docs/benchmarks.md, docs/benchmarks.png and the
# README's headline table (docs/benchmarks-small.* with --small) from the medians; raw rows go to
# images/build/<size>/results.tsv as they are measured, spindiff's patches under --memory 256M to
# results-256m.tsv. --resume keeps the rows of an interrupted run made with the same spindiff
# binary and corpus and measures only what is missing. --only TOOL,... measures only those tools
# again (e.g. spindiff,spindiff-raw,hdiffz-m,hdiffz-s after a change to spindiff: they still take
# turns in one run) and keeps the other tools' rows from the last run on the same corpus, with the
# same runs and time limit; the report says which rows come from which run (their times are then
# from another run: compare sizes freely, times with care).
set -euo pipefail
cd "$(dirname "$0")/.."

size=full runs=3 limit=1800 resume=0 only=
while [ $# -gt 0 ]; do
    case $1 in
        --small) size=small ;;
        --runs) runs=$2; shift ;;
        --timeout) limit=$2; shift ;;
        --resume) resume=1 ;;
        --only) only=$2; shift ;;
        *) echo "usage: $0 [--small] [--runs N] [--timeout SECONDS] [--resume] [--only TOOL,...]" >&2; exit 2 ;;
    esac
    shift
done
corpus=$PWD/images/build/$size
suffix=""; [ "$size" = small ] && suffix=-small
doc=docs/benchmarks$suffix.md
chart=docs/benchmarks$suffix.png

need=()
for t in bsdiff:bsdiff xdelta3:xdelta3 zstd:zstd gnuplot:gnuplot-nox g++:g++ make:make; do
    command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
[ -x /usr/bin/time ] || need+=(time)
for h in zstd.h:libzstd-dev bzlib.h:libbz2-dev zlib.h:zlib1g-dev; do
    [ -f "/usr/include/${h%%:*}" ] || need+=("${h#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ -f "$corpus/MANIFEST" ] || bash scripts/make-images.sh ${suffix:+--small}
# HDiffPatch from the pinned source archive, built once into images/build/peers (git-ignored)
peers=${SPINDIFF_PEERS:-$PWD/../shared/peers}
hdp=$PWD/images/build/peers/HDiffPatch-4.12.0-505eaa5
if [ ! -x "$hdp/hdiffz" ] || [ ! -x "$hdp/hpatchz" ]; then
    [ -f "$peers/hdiffpatch-4.12.0.tar.gz" ] || { echo "$0: $peers/hdiffpatch-4.12.0.tar.gz: not found (set SPINDIFF_PEERS)" >&2; exit 2; }
    mkdir -p "$(dirname "$hdp")"
    tar xzf "$peers/hdiffpatch-4.12.0.tar.gz" -C "$(dirname "$hdp")"
    make -s -C "$hdp" -j2 LDEF=0 LZMA=0 ZSTD=2 MD5=0 XXH=0 >/dev/null
fi
hdiffz=$hdp/hdiffz hpatchz=$hdp/hpatchz
# The binary under test is copied aside, so rebuilding during a long run cannot change it midway;
# --resume goes on with the copy the interrupted run measured.
mkdir -p "$corpus/bench-bin"
spindiff=$corpus/bench-bin/spindiff
if [ $resume = 0 ] || [ ! -x "$spindiff" ]; then
    scripts/zstd-releases.sh >/dev/null  # the libzstd releases build.rs links
cargo build --release --quiet
    cp target/release/spindiff "$spindiff.new"
    mv "$spindiff.new" "$spindiff"
fi
# the live-ISO pairs first: a run stopped part way has the rows that matter most
pairs=(iso xziso squashfs xzsquash rawsquash tar update native rustcli sparse)
tools=(spindiff spindiff-raw hdiffz-m hdiffz-s bsdiff xdelta3 zstd-19 zstd-3)
measured=("${tools[@]}")    # the tools this run measures (--only: some of them)
if [ -n "$only" ]; then
    IFS=, read -r -a measured <<< "$only"
    for t in "${measured[@]}"; do
        [[ " ${tools[*]} " == *" $t "* ]] || { echo "$0: --only: unknown tool $t (tools: ${tools[*]})" >&2; exit 2; }
    done
fi

work=$(mktemp -d -p "$corpus" bench.XXXX)
trap 'rm -rf "$work"' EXIT
results=$corpus/results.tsv
capped=$corpus/results-256m.tsv
# what a run's rows depend on besides the spindiff binary
same_run_options="tools ${tools[*]} corpus $(sha256sum < "$corpus/MANIFEST" | cut -c1-16) runs $runs timeout $limit"
meta="spindiff $(sha256sum < "$spindiff" | cut -c1-16) $same_run_options"
if [ $resume = 1 ]; then
    if [ ! -f "$results" ] || [ "$(cat "$corpus/results.meta" 2>/dev/null)" != "$meta" ]; then
        echo "$0: nothing to resume: no interrupted run with this binary, corpus and options" >&2
        exit 2
    fi
    echo "resuming: $(($(wc -l < "$results") - 1)) rows kept from $results"
elif [ -n "$only" ]; then
    # keep the other tools' rows of the last run, which must have had this corpus and options
    if [ ! -f "$results" ] || [ "$(cut -d' ' -f3- "$corpus/results.meta" 2>/dev/null)" != "$same_run_options" ]; then
        echo "$0: --only: no earlier run on this corpus with --runs $runs --timeout $limit to keep rows from" >&2
        exit 2
    fi
    kept=$(awk -F'\t' -v m=" ${measured[*]} " 'NR > 1 && index(m, " " $2 " ") == 0 { print $2 }' "$results" | sort -u | tr '\n' ' ')
    # where the kept rows come from: the run that measured them (kept again by a later --only run)
    [ -f "$corpus/results.kept" ] || echo "$(cat "$corpus/results.commit") $(date -r "$results" +%F)" > "$corpus/results.kept"
    echo "$(head -1 "$corpus/results.kept" | cut -d' ' -f1,2) ${kept% }" > "$corpus/results.kept"
    awk -F'\t' -v m=" ${measured[*]} " 'NR == 1 || index(m, " " $2 " ") == 0' "$results" > "$results.tmp"
    mv "$results.tmp" "$results"
    echo "$meta" > "$corpus/results.meta"
    git describe --always --dirty > "$corpus/results.commit" 2>/dev/null || echo unknown > "$corpus/results.commit"
    echo "measuring ${measured[*]}; keeping the rows of ${kept% } from the run at $(cut -d' ' -f1,2 "$corpus/results.kept")"
else
    echo "$meta" > "$corpus/results.meta"
    rm -f "$corpus/results.kept"
    git describe --always --dirty > "$corpus/results.commit" 2>/dev/null || echo unknown > "$corpus/results.commit"
    printf 'pair\ttool\trun\tpatch_bytes\tdiff_s\tdiff_kib\tapply_s\tapply_kib\tstatus\tapply_sync_s\n' > "$results"
fi
# The 256M step's table starts with the run, not with the step: a run interrupted before the step
# must not leave an older binary's rows for --resume to keep.
spindiff_measured=0; [[ " ${measured[*]} " == *" spindiff "* ]] && spindiff_measured=1
if { [ $resume = 0 ] && [ $spindiff_measured = 1 ]; } || [ ! -f "$capped" ]; then
    printf 'pair\tpatch_bytes\tdiff_s\tdiff_kib\tstatus\n' > "$capped"
fi

# timed CMD... -> "wall_s peak_kib status"; status ok, timeout, oom or failed
timed() {
    local log; log=$(mktemp -p "$work")
    local rc=0
    timeout --signal=KILL "$limit" /usr/bin/time -v "$@" >/dev/null 2>"$log" || rc=$?
    local wall rss status=ok
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s }' "$log")
    rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$log")
    if [ $rc -ne 0 ]; then
        if [ -z "$wall" ]; then status=timeout; wall=$limit; rss=0      # time itself was killed
        elif grep -q 'signal 9' "$log" || grep -qi 'out of memory\|cannot allocate\|bad_alloc' "$log"; then status=oom
        else status=failed; fi
    fi
    rm -f "$log"
    echo "${wall:-0} ${rss:-0} $status"
}

diff_cmd() { # TOOL OLD NEW PATCH
    local old=$2 new=$3 patch=$4
    local window=$(( $(stat -c %s "$old") ))
    case $1 in
        spindiff) echo "$spindiff diff $old $new -o $patch --threads 2 --memory 1G -q" ;;
        spindiff-raw) echo "$spindiff diff $old $new -o $patch --threads 2 --memory 1G -q --no-transform" ;;
        hdiffz-m) echo "$hdiffz -m-6 -SD -c-zstd-21-24 -p-2 -d -f $old $new $patch" ;;
        hdiffz-s) echo "$hdiffz -s-64 -SD -c-zstd-21-24 -p-2 -d -f $old $new $patch" ;;
        bsdiff) echo "bsdiff $old $new $patch" ;;
        xdelta3) echo "xdelta3 -e -9 -f -B $(xdelta_window "$window") -s $old $new $patch" ;;
        zstd-19) echo "zstd -q -f -19 --long=31 --patch-from=$old $new -o $patch" ;;
        zstd-3) echo "zstd -q -f -3 --long=31 --patch-from=$old $new -o $patch" ;;
    esac
}
apply_cmd() { # TOOL OLD PATCH OUT
    local old=$2 patch=$3 out=$4
    case $1 in
        spindiff|spindiff-raw) echo "$spindiff apply $old $patch -o $out --threads 2 -q" ;;
        hdiffz-m|hdiffz-s) echo "$hpatchz -f $old $patch $out" ;;
        bsdiff) echo "bspatch $old $out $patch" ;;
        xdelta3) echo "xdelta3 -d -f -B $(xdelta_window "$(stat -c %s "$old")") -s $old $patch $out" ;;
        zstd-19|zstd-3) echo "zstd -q -f -d --long=31 --patch-from=$old $patch -o $out" ;;
    esac
}
# xdelta3's source window must cover OLD: the next power of two, 16 MiB at least, 2 GiB at most
xdelta_window() { local w=$((16 << 20)); while [ $w -lt "$1" ] && [ $w -lt $((2 << 30)) ]; do w=$((w * 2)); done; echo $w; }

# status of a tool that timed out or ran out of memory on a pair, from this run or a resumed one
declare -A given_up
while IFS=$'\t' read -r p t _ _ _ _ _ _ st _; do
    case $st in timeout|oom) given_up[$p/$t]=$st ;; esac
done < <(tail -n +2 "$results")

measure() { # TOOL... : every run of every pair with these tools, taking turns
    local run pair tool old new patch out dw dr ds aw ar as sw bytes status
    for run in $(seq 1 "$runs"); do
        for pair in "${pairs[@]}"; do
            old=$corpus/$pair.old new=$corpus/$pair.new
            for tool in "$@"; do
                if awk -F'\t' -v p="$pair" -v t="$tool" -v r="$run" '$1 == p && $2 == t && $3 == r { found = 1 } END { exit !found }' "$results"; then
                    continue    # measured before an interruption (--resume)
                fi
                if [ -n "${given_up[$pair/$tool]:-}" ]; then
                    printf '%s\t%s\t%s\t0\t%s\t0\t0\t0\t%s\t\n' "$pair" "$tool" "$run" "$limit" "${given_up[$pair/$tool]}" | tee -a "$results"
                    continue
                fi
                patch=$work/$pair.$tool.patch out=$work/$pair.$tool.out
                rm -f "$patch" "$out"
                # shellcheck disable=SC2046
                read -r dw dr ds < <(timed $(diff_cmd "$tool" "$old" "$new" "$patch"))
                aw=0 ar=0 as=skipped bytes=0 sw=""
                if [ "$ds" = ok ]; then
                    bytes=$(stat -c %s "$patch")
                    # shellcheck disable=SC2046
                    read -r aw ar as < <(timed $(apply_cmd "$tool" "$old" "$patch" "$out"))
                    if [ "$as" = ok ] && ! cmp -s "$out" "$new"; then as=mismatch; fi
                    if [ "$as" = ok ] && [ "${tool%-*}" = hdiffz ]; then
                        # the same apply followed by sync: spindiff fsyncs NEW, hpatchz does not
                        rm -f "$out"; sync
                        # shellcheck disable=SC2046
                        read -r sw _ _ < <(timed sh -c "$(apply_cmd "$tool" "$old" "$patch" "$out") >/dev/null && sync")
                    fi
                fi
                status=$ds; [ "$ds" = ok ] && status=$as
                case $ds in timeout|oom) given_up[$pair/$tool]=$ds ;; esac
                printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$pair" "$tool" "$run" "$bytes" "$dw" "$dr" "$aw" "$ar" "$status" "$sw" | tee -a "$results"
                rm -f "$patch" "$out"
            done
        done
    done
}

# bsdiff takes 10-15 minutes a pair where the others take seconds to minutes: it runs last, so a
# run stopped part way (and resumed with --resume) already has every other tool's rows.
fast=()
for t in "${measured[@]}"; do [ "$t" = bsdiff ] || fast+=("$t"); done
[ ${#fast[@]} = 0 ] || measure "${fast[@]}"

# The memory cap: spindiff's patch under --memory 256M, to compare with its 1G patch above (patches
# are deterministic, so one diff per pair), with its peak RSS; the patch is applied and checked.
for pair in "${pairs[@]}"; do
    if awk -F'\t' -v p="$pair" '$1 == p { found = 1 } END { exit !found }' "$capped"; then
        continue    # measured before an interruption (--resume)
    fi
    old=$corpus/$pair.old new=$corpus/$pair.new patch=$work/$pair.256m.patch out=$work/$pair.256m.out
    read -r dw dr ds < <(timed "$spindiff" diff "$old" "$new" -o "$patch" --threads 2 --memory 256M -q)
    bytes=0
    if [ "$ds" = ok ]; then
        bytes=$(stat -c %s "$patch")
        if ! "$spindiff" apply "$old" "$patch" -o "$out" -q; then ds=failed
        elif ! cmp -s "$out" "$new"; then ds=mismatch; fi
    fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$pair" "$bytes" "$dw" "$dr" "$ds" | tee -a "$capped"
    rm -f "$patch" "$out"
done

[[ " ${measured[*]} " != *" bsdiff "* ]] || measure bsdiff

SPINDIFF_BIN=$spindiff SPINDIFF_COMMIT=$(cat "$corpus/results.commit") \
    SPINDIFF_KEPT=$(cat "$corpus/results.kept" 2>/dev/null || true) \
    SPINDIFF_HDIFFZ=$hdiffz python3 scripts/bench-report.py "$results" "$corpus/MANIFEST" "$doc" "$chart" "$size" "$runs" "$limit"
echo "wrote $doc and $chart"
