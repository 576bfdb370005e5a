#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every test (unit, property, CLI, faults, fuzz
# corpus replay, golden, doc) in release mode, since several tests move megabytes of data; and
# the fuzz targets must still compile (scripts/fuzz.sh runs them).
set -euo pipefail
cd "$(dirname "$0")/.."
# Nothing here reads standard input. Started with it closed (as CI does), the first pipe cargo
# opens becomes fd 0 and its probe `rustc -` then compiles build-script output: give it /dev/null.
exec </dev/null
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy
fi
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo clippy --release --all-targets -- -D warnings
cargo test --release
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
command -v c++ >/dev/null || { apt-get update -qq && apt-get install -y -qq g++ >/dev/null; }
cargo clippy --manifest-path fuzz/Cargo.toml --quiet -- -D warnings
