//! In-place IPv6 header rewrites for forwarding.

use crate::error::BuildError;

/// Decrements the hop limit of the IPv6 header at `l3_offset` in `frame` (RFC 8200 §3; IPv6
/// has no header checksum). Returns the new hop limit.
///
/// Errors, leaving the frame untouched: [`BuildError::TtlExpired`] if the hop limit is 0 or 1
/// (RFC 4443 §3.3: discard and send ICMPv6 time exceeded), [`BuildError::BufferTooSmall`] if
/// the frame is too short to hold the fixed header.
#[inline]
pub fn decrement_hop_limit(frame: &mut [u8], l3_offset: usize) -> Result<u8, BuildError> {
    let Some(h) = frame.get_mut(l3_offset..).and_then(|s| s.first_chunk_mut::<40>()) else {
        return Err(BuildError::BufferTooSmall);
    };
    if h[7] <= 1 {
        return Err(BuildError::TtlExpired);
    }
    h[7] -= 1;
    Ok(h[7])
}
