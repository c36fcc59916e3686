//! Fuzzes the configuration loader, `weir::config::parse`; the invariants asserted live in
//! `weir::fuzzing::check_config`.
//!
//! Run with `RUSTC_BOOTSTRAP=1 cargo fuzz run config` from the repository's root (or
//! `bash scripts/fuzz.sh`). Seed corpus: `fuzz/corpus/config/`, also replayed by
//! `cargo test --test fuzz_corpus`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| weir::fuzzing::check_config(data));
