//! Fuzzes the pipeline with the mesh in the path on sequences of frames; the input format, the
//! pipeline and the invariants asserted live in `dataplane::fuzzing::check_frames`.
//!
//! Run with `RUSTC_BOOTSTRAP=1 cargo fuzz run mesh_frames` from `dataplane/` (or
//! `bash scripts/fuzz.sh`). Seed corpus: `dataplane/fuzz/corpus/mesh_frames/`, also replayed
//! by `cargo test -p dataplane --test fuzz_corpus`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dataplane::fuzzing::check_frames(data));
