#!/bin/bash
# weir's whole test suite: formatting, lints, unit, property, fuzz-corpus and integration tests
# (the integration tests build their own network namespaces and need root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
[ "$(id -u)" = 0 ] || echo "WARNING: not root: the namespace tests will skip loudly" >&2
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Every dependency's licence, bans and source (advisories need a network CI does not have).
command -v cargo-deny >/dev/null 2>&1 || cargo install cargo-deny --locked --quiet
cargo deny check licenses bans sources
# Integration tests start weir, so build it optimised once and let them run two at a time.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --release -- --test-threads 2 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The Debian package: made with cargo-deb, taken apart, what it installs run.
if bash scripts/package.sh --check; then
  echo "test result: ok. 1 passed; 0 failed; 0 ignored (debian package)" >>"$log"
else
  echo "test result: FAILED. 0 passed; 1 failed; 0 ignored (debian package)" >>"$log"
  status=1
fi
# Each fuzz target for a bounded time, on a copy of its seed corpus.
if bash scripts/fuzz.sh 20; then
  echo "test result: ok. 1 passed; 0 failed; 0 ignored (fuzzing)" >>"$log"
else
  echo "test result: FAILED. 0 passed; 1 failed; 0 ignored (fuzzing)" >>"$log"
  status=1
fi
# Miri over the mempool and the handoff rings, where a nightly toolchain with Miri can be had
# (pools are leaked on purpose: they serve the process until it exits).
if cargo +nightly miri --version >/dev/null 2>&1 ||
  rustup component add miri rust-src --toolchain nightly >/dev/null 2>&1; then
  if MIRIFLAGS="-Zmiri-disable-isolation -Zmiri-ignore-leaks" \
    cargo +nightly miri test -p dataplane --lib -- mempool:: ring::; then
    echo "test result: ok. 1 passed; 0 failed; 0 ignored (miri)" >>"$log"
  else
    echo "test result: FAILED. 0 passed; 1 failed; 0 ignored (miri)" >>"$log"
    status=1
  fi
else
  echo "WARNING: Miri NOT RUN: no nightly toolchain with the miri component on this machine" >&2
  echo "test result: ok. 0 passed; 0 failed; 1 ignored (miri)" >>"$log"
fi
set -e
# One closing line for the whole suite (the last binary cargo runs is often an empty doc-test).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "weir: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
