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

/// Whether `a` may not be the source of a packet a router receives (RFC 1812 §5.3.7, §4.2.2.11):
/// "this network" 0.0.0.0/8, loopback 127.0.0.0/8, multicast 224.0.0.0/4, and the reserved
/// 240.0.0.0/4 with the limited broadcast 255.255.255.255. Directed broadcasts and the
/// router's own addresses depend on its configuration: the caller checks those.
#[inline(always)]
pub const fn is_martian_source(a: core::net::Ipv4Addr) -> bool {
    let first = a.octets()[0];
    first == 0 || first == 127 || first >= 224
}

/// Whether a router must not forward a packet to `a` (RFC 1812 §5.3.7, §4.2.3.1): 0.0.0.0/8,
/// 127.0.0.0/8 and the reserved 240.0.0.0/4 other than the limited broadcast (which is
/// link-local, never forwarded, and dropped as such). Multicast is not martian, only not
/// routed by weir.
#[inline(always)]
pub const fn is_martian_destination(a: core::net::Ipv4Addr) -> bool {
    let first = a.octets()[0];
    first == 0 || first == 127 || (first >= 240 && !a.is_broadcast())
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    #[test]
    fn martians() {
        for s in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "224.0.0.1",
            "239.1.1.1",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(is_martian_source(s.parse().unwrap()), "{s}");
        }
        for s in ["198.18.0.1", "192.0.2.255", "1.0.0.0", "223.255.255.255"] {
            assert!(!is_martian_source(s.parse().unwrap()), "{s}");
        }
        for s in ["0.0.0.0", "127.1.1.1", "240.0.0.1", "255.255.255.254"] {
            assert!(is_martian_destination(s.parse().unwrap()), "{s}");
        }
        for s in ["198.18.0.1", "224.0.0.1", "255.255.255.255"] {
            assert!(!is_martian_destination(s.parse::<Ipv4Addr>().unwrap()), "{s}");
        }
    }
}
