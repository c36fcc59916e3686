//! In-place IPv4 header rewrites for forwarding.

use crate::checksum;
use crate::error::BuildError;

/// Decrements the TTL of the IPv4 header at `l3_offset` in `frame` and patches the header
/// checksum incrementally (RFC 1624, RFC 1812 §5.3.1). Returns the new TTL.
///
/// Errors, leaving the frame untouched: [`BuildError::TtlExpired`] if the TTL is 0 or 1 (the
/// packet must not be forwarded; RFC 1812 §5.3.1 says answer with ICMP time exceeded),
/// [`BuildError::BufferTooSmall`] if the frame is too short to hold the header.
///
/// The caller is expected to have parsed the frame (so the header is IPv4 and its checksum
/// valid); nothing is checked beyond the length.
#[inline]
pub fn decrement_ttl(frame: &mut [u8], l3_offset: usize) -> Result<u8, BuildError> {
    let Some(h) = frame.get_mut(l3_offset..).and_then(|s| s.first_chunk_mut::<20>()) else {
        return Err(BuildError::BufferTooSmall);
    };
    let ttl = h[8];
    if ttl <= 1 {
        return Err(BuildError::TtlExpired);
    }
    let new_ttl = ttl - 1;
    let old_word = u16::from_be_bytes([ttl, h[9]]);
    let new_word = u16::from_be_bytes([new_ttl, h[9]]);
    let csum = u16::from_be_bytes([h[10], h[11]]);
    h[8] = new_ttl;
    h[10..12].copy_from_slice(&checksum::update16(csum, old_word, new_word).to_be_bytes());
    Ok(new_ttl)
}
