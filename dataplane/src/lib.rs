//! weir's fast path: packet buffers and mempools, I/O backends, rings, workers and the
//! per-packet pipeline.
//!
//! `unsafe` is denied here except in the modules that need it: `mempool` (the mapped buffer
//! region), `io::afpacket`, `io::tap` and `io::sys` (sockets, mmap rings, ioctls), `cycles`
//! (the cycle counter), `hint` (cache prefetch), `dpdk` (the DPDK wrappers, feature `dpdk`) and the `poll(2)` call in
//! `worker`.

pub mod buf;
pub mod capture;
pub mod counters;
pub mod cycles;
#[cfg(feature = "dpdk")]
#[allow(unsafe_code)]
pub mod dpdk;
pub mod fib;
pub mod fuzzing;
pub mod hint;
pub mod io;
pub mod lpm;
pub mod mempool;
pub mod mesh;
pub mod neigh;
pub mod pipeline;
pub mod ring;
pub mod testing;
pub mod worker;
