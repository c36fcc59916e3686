//! In-place IPv4 header rewrites for forwarding.

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
#[inline(always)]
pub fn decrement_ttl(frame: &mut [u8], l3_offset: usize) -> Result<u8, BuildError> {
    let Some(h) = frame.get_mut(l3_offset..).and_then(|s| s.first_chunk_mut::<20>()) else {
        return Err(BuildError::BufferTooSmall);
    };
    let ttl = h[8];
    if ttl <= 1 {
        return Err(BuildError::TtlExpired);
    }
    let new_ttl = ttl - 1;
    // RFC 1624 eqn. 3 with m' = m - 0x0100 (the TTL is the high byte of its word) reduces to
    // HC' = HC +' 0x0100, ones'-complement addition with end-around carry (RFC 1141). The
    // result is never 0x0000 (RFC 1624 section 3's concern): the carry makes it at least 1.
    let csum = u32::from(u16::from_be_bytes([h[10], h[11]])) + 0x0100;
    let csum = (csum + (csum >> 16)) & 0xffff;
    h[8] = new_ttl;
    h[10..12].copy_from_slice(&csum.to_be_bytes()[2..4]);
    Ok(new_ttl)
}
