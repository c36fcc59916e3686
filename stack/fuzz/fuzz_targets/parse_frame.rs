//! Fuzzes `stack::parse_frame` and everything that consumes its result; the logic (and the
//! invariants asserted) live in `stack::fuzzing::check_frame`.
//!
//! Run with `cargo fuzz run parse_frame` from `stack/` (nightly). Seed corpus:
//! `stack/fuzz/corpus/parse_frame/`, also replayed by `cargo test -p stack --test fuzz_corpus`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| stack::fuzzing::check_frame(data));
