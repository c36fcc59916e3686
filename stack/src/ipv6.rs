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

/// Whether `a` is an IPv4-mapped address, `::ffff:0:0/96` (RFC 4291 §2.5.5.2), which never
/// appears on the wire.
#[inline]
pub const fn is_ipv4_mapped(a: &core::net::Ipv6Addr) -> bool {
    let s = a.segments();
    s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 && s[5] == 0xffff
}

/// Whether `a` is link-local unicast, `fe80::/10` (RFC 4291 §2.5.6): never forwarded.
#[inline]
pub const fn is_link_local(a: &core::net::Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// Whether `a` may not be the source of any packet weir receives (RFC 4291 §2.5.3, §2.5.5.2,
/// §2.7): loopback, multicast and IPv4-mapped. The unspecified address (only for duplicate
/// address detection) and link-local sources (only on the link) are the caller's to judge.
#[inline]
pub const fn is_martian_source(a: &core::net::Ipv6Addr) -> bool {
    a.is_loopback() || a.is_multicast() || is_ipv4_mapped(a)
}

/// Whether a packet to `a` must not be forwarded (RFC 4291 §2.5.2, §2.5.3, §2.5.5.2): the
/// unspecified address, loopback and IPv4-mapped.
#[inline]
pub const fn is_martian_destination(a: &core::net::Ipv6Addr) -> bool {
    a.is_unspecified() || a.is_loopback() || is_ipv4_mapped(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv6Addr;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn martians() {
        for s in ["::1", "ff02::1", "ff0e::5", "::ffff:198.18.0.1"] {
            assert!(is_martian_source(&a(s)), "{s}");
        }
        for s in ["::", "fe80::1", "2001:db8::1", "::198.18.0.1"] {
            assert!(!is_martian_source(&a(s)), "{s}");
        }
        for s in ["::", "::1", "::ffff:10.0.0.1"] {
            assert!(is_martian_destination(&a(s)), "{s}");
        }
        assert!(!is_martian_destination(&a("2001:db8::1")));
        assert!(is_link_local(&a("fe80::1")) && is_link_local(&a("febf::1")));
        assert!(!is_link_local(&a("fec0::1")));
    }
}
