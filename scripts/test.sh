#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every test (unit, property, CLI, doc) in
# release mode, since several tests move megabytes of data.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy
fi
cargo fmt --all -- --check
cargo clippy --release --all-targets -- -D warnings
cargo test --release
