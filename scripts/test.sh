#!/bin/bash
# weir's whole test suite: formatting, lints, unit, property, fuzz-corpus and integration tests
# (the integration tests build their own network namespaces and need root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
[ "$(id -u)" = 0 ] || echo "WARNING: not root: the namespace tests will skip loudly" >&2
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Integration tests start weir, so build it optimised once and let them run two at a time.
cargo test --workspace --locked --release -- --test-threads 2
