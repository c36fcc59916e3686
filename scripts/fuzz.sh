#!/bin/bash
# Runs every fuzz target for a bounded time: bash scripts/fuzz.sh [SECONDS_PER_TARGET] (30).
#
#   stack/fuzz      parse_frame   stack::fuzzing::check_frame
#   dataplane/fuzz  mesh_frames   dataplane::fuzzing::check_frames
#   fuzz            config        weir::fuzzing::check_config
#
# Each target runs on a copy of its seed corpus in a temporary directory, so the committed
# corpus does not grow. Prints one line per target:
#   fuzz <target>: <runs> inputs in <N> s, <crashes> crashes
# and exits non-zero if any target crashed (a panic, a sanitizer report, or an input running
# longer than TIMEOUT seconds), keeping the crashing input (in <fuzz dir>/artifacts/<target>/,
# git-ignored) and printing its path. libFuzzer runs on nightly features, enabled here on the
# stable toolchain with RUSTC_BOOTSTRAP=1; cargo-fuzz is installed if missing. FUZZ_ARGS adds
# libFuzzer options (e.g. FUZZ_ARGS=-rss_limit_mb=4096), TIMEOUT sets the per-input limit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${1:-30}
timeout=${TIMEOUT:-10}
case $seconds in
  '' | *[!0-9]*)
    echo "usage: bash scripts/fuzz.sh [SECONDS_PER_TARGET]" >&2
    exit 2
    ;;
esac

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# One target directory for the three fuzz crates (they share `stack`), under the git-ignored
# target/.
target_dir=$root/target/fuzz
failed=0

# fuzz <crate dir> <fuzz dir> <target>
fuzz() {
  local crate=$1 fuzz_dir=$2 target=$3
  local corpus=$work/corpus/$target log=$work/$target.log
  mkdir -p "$corpus"
  cp -R "$root/$fuzz_dir/corpus/$target/." "$corpus/"
  (cd "$root/$crate" && cargo fuzz build --fuzz-dir "$root/$fuzz_dir" --target-dir "$target_dir" "$target")
  local start end status
  start=$(date +%s)
  set +e
  (cd "$root/$crate" && cargo fuzz run --fuzz-dir "$root/$fuzz_dir" --target-dir "$target_dir" \
    "$target" "$corpus" -- -max_total_time="$seconds" -timeout="$timeout" \
    -print_final_stats=1 ${FUZZ_ARGS:-}) >"$log" 2>&1
  status=$?
  set -e
  end=$(date +%s)
  local runs crashes artifact
  runs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
  artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
  crashes=0
  if [ -n "$artifact" ] || [ "$status" != 0 ]; then
    crashes=1
  fi
  echo "fuzz $target: ${runs:-0} inputs in $((end - start)) s, $crashes crashes"
  if [ "$crashes" != 0 ]; then
    failed=1
    # The panic message or sanitizer report, and the input that caused it.
    grep -E -m 5 "panicked at|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|SUMMARY" "$log" >&2 || true
    if [ -n "$artifact" ]; then
      case $artifact in
        /*) ;;
        *) artifact=$root/$crate/$artifact ;;
      esac
      echo "fuzz $target: crashing input kept in $artifact" >&2
      echo "fuzz $target: reproduce with: cd $crate && RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir $root/$fuzz_dir $target $artifact" >&2
    else
      tail -n 30 "$log" >&2
    fi
  fi
}

fuzz stack stack/fuzz parse_frame
fuzz dataplane dataplane/fuzz mesh_frames
fuzz . fuzz config
exit $failed
