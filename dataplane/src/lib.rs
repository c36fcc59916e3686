//! weir's fast path: packet buffers and mempools, I/O backends, rings, workers and the
//! per-packet pipeline.

pub mod buf;
pub mod io;
pub mod mempool;
