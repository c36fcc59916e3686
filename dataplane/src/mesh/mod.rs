//! The L4 mesh: services (a VIP, port and protocol) spread over the endpoints of a cluster,
//! connection by connection, with NAT, destination NAT or DSR encapsulation.
//!
//! The pieces, each fixed in size once built:
//! - [`maglev`]: consistent hashing of a flow to an endpoint, weighted; a change of endpoints
//!   moves about 1/N of the flows.
//! - [`schedule`]: weighted round-robin and random picks from a precomputed sequence, and the
//!   power-of-two-choices pick of least-request.
//!
//! Everything here that runs per packet or per new flow is O(1) in the number of services,
//! endpoints and flows, and allocates nothing; tables are built on the control thread.

pub mod engine;
pub mod flow;
pub mod health;
pub mod maglev;
pub mod model;
pub mod schedule;

/// SplitMix64's finaliser: a fixed, well-mixed 64-bit hash of a 64-bit value. Stable across
/// builds and runs, which consistent hashing needs (a table built after a reload must agree with
/// the one before it).
#[inline]
pub const fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A stable 64-bit hash of bytes, seeded: [`mix64`] over 8-byte words.
pub fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = mix64(seed ^ bytes.len() as u64);
    for chunk in bytes.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = mix64(h ^ u64::from_le_bytes(w));
    }
    h
}
