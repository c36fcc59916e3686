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
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --release -- --test-threads 2 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (the last binary cargo runs is often an empty doc-test).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "weir: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
