#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every test (unit, property, CLI, faults, fuzz
# corpus replay, golden, doc) in release mode, since several tests move megabytes of data; and
# the fuzz targets must still compile (scripts/fuzz.sh runs them).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/dev-null.sh
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy
fi
# GNU time measures the peak memory of the binary in tests/promises.rs; squashfs-tools and
# xorriso make the images of tests/transform.rs
need=()
[ -x /usr/bin/time ] || need+=(time)
command -v mksquashfs >/dev/null || need+=(squashfs-tools)
command -v xorriso >/dev/null || need+=(xorriso)
# the xz command makes the initrd streams of tests/streams.rs
command -v xz >/dev/null || need+=(xz-utils)
# the zstd command makes the initrd streams of tests/zstd_streams.rs, as initramfs-tools does
command -v zstd >/dev/null || need+=(zstd)
# pigz makes gzip initrds of tests/gzip_streams.rs as dracut does when it is installed
command -v pigz >/dev/null || need+=(pigz)
# gensquashfs makes the squashfs-tools-ng images of tests/tools_ng.rs
command -v gensquashfs >/dev/null || need+=(squashfs-tools-ng)
# tests/json.rs checks every --json document with jq, as release pipelines read them
command -v jq >/dev/null || need+=(jq)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
# libzstd 1.5.4 (Debian 12's) beside the bundled 1.5.7, built from its zstd-sys crate and linked
# by build.rs: tests/transform.rs's Debian zstd images must then recompress whole
scripts/zstd-releases.sh >/dev/null
export SPINDIFF_REQUIRE_ZSTD_RELEASES=1
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo clippy --release --all-targets -- -D warnings
# mkfs.erofs 1.8.9 (LZMA, fragments: Fedora's live media) for tests/erofs.rs, built from the
# pinned archive in ../shared/peers
SPINDIFF_EROFS_UTILS=$(scripts/erofs-utils.sh)
export SPINDIFF_EROFS_UTILS
cargo test --release
# the fuzz corpus and past failures again with overflow checks on, as the fuzzers build
cargo test --test fuzz_corpus
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
command -v c++ >/dev/null || { apt-get update -qq && apt-get install -y -qq g++ >/dev/null; }
cargo clippy --manifest-path fuzz/Cargo.toml --quiet -- -D warnings
