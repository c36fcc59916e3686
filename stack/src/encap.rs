//! Outer headers for DSR encapsulation: IP in IP (RFC 2003, RFC 2473, RFC 4213) and IP in UDP
//! with a Generic UDP Encapsulation header (draft-ietf-intarea-gue, variant 0).
//!
//! The caller makes room in front of the packet (buffer headroom) and has these write the outer
//! header there; the inner packet is left as the client sent it, so the endpoint sees the
//! client's address and the VIP, and answers the client directly.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::checksum::checksum;
use crate::error::BuildError;

/// IP protocol number of IPv4 carried in IP (RFC 2003).
pub const PROTO_IPV4: u8 = 4;
/// IP protocol number of IPv6 carried in IP (RFC 2473, RFC 4213).
pub const PROTO_IPV6: u8 = 41;
/// IP protocol number of UDP.
const PROTO_UDP: u8 = 17;

/// TTL / hop limit of outer headers weir writes.
pub const OUTER_TTL: u8 = 64;

/// How a DSR packet is encapsulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encapsulation {
    /// IP in IP.
    IpIp,
    /// IP in UDP to this port, with a 4-byte GUE header.
    Gue {
        /// Destination UDP port (the endpoint's GUE listener).
        port: u16,
    },
}

impl Encapsulation {
    /// Bytes added in front of the inner IP packet for an outer header of `outer`'s family.
    pub fn overhead(self, outer: IpAddr) -> usize {
        let ip = if outer.is_ipv4() { 20 } else { 40 };
        match self {
            Encapsulation::IpIp => ip,
            Encapsulation::Gue { .. } => ip + 8 + 4,
        }
    }
}

/// Writes the outer header(s) into `out` (exactly [`Encapsulation::overhead`] bytes) for an
/// inner IP packet of `inner_len` bytes whose version is given by `inner_v6`. `entropy` (a
/// flow hash) becomes the GUE source port, so ECMP on the way spreads flows and keeps each on
/// one path.
pub fn write_outer(
    out: &mut [u8],
    enc: Encapsulation,
    src: IpAddr,
    dst: IpAddr,
    inner_len: usize,
    inner_v6: bool,
    entropy: u16,
) -> Result<(), BuildError> {
    let inner_proto = if inner_v6 { PROTO_IPV6 } else { PROTO_IPV4 };
    let need = enc.overhead(dst);
    if out.len() != need {
        return Err(BuildError::BufferTooSmall);
    }
    let (ip_len, ip_proto) = match enc {
        Encapsulation::IpIp => (if dst.is_ipv4() { 20 } else { 40 }, inner_proto),
        Encapsulation::Gue { .. } => (if dst.is_ipv4() { 20 } else { 40 }, PROTO_UDP),
    };
    let payload = inner_len + (need - ip_len);
    let (hdr, rest) = out.split_at_mut(ip_len);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => write_ipv4(hdr, s, d, ip_proto, payload)?,
        (IpAddr::V6(s), IpAddr::V6(d)) => write_ipv6(hdr, s, d, ip_proto, payload)?,
        _ => return Err(BuildError::UnexpectedPacket),
    }
    if let Encapsulation::Gue { port } = enc {
        let udp_len = u16::try_from(payload).map_err(|_| BuildError::BufferTooSmall)?;
        // Source port from the flow hash, kept in the ephemeral range (RFC 6335) as FOU/GUE
        // senders do.
        let sport = 0xc000 | (entropy & 0x3fff);
        rest[0..2].copy_from_slice(&sport.to_be_bytes());
        rest[2..4].copy_from_slice(&port.to_be_bytes());
        rest[4..6].copy_from_slice(&udp_len.to_be_bytes());
        // A zero UDP checksum: allowed for tunnels over IPv4 (RFC 768) and, for this use, over
        // IPv6 (RFC 6935, RFC 6936); the inner packet carries its own.
        rest[6..8].copy_from_slice(&[0, 0]);
        // GUE variant 0: version 0, C 0, Hlen 0, Proto/ctype = the inner protocol, flags 0.
        rest[8..12].copy_from_slice(&[0, inner_proto, 0, 0]);
    }
    Ok(())
}

fn write_ipv4(
    h: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    payload: usize,
) -> Result<(), BuildError> {
    let total = u16::try_from(20 + payload).map_err(|_| BuildError::BufferTooSmall)?;
    h.fill(0);
    h[0] = 0x45;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    // DF: the outer packet must not be fragmented on the way (the inner MTU was checked).
    h[6] = 0x40;
    h[8] = OUTER_TTL;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&h[..20]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

fn write_ipv6(
    h: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next: u8,
    payload: usize,
) -> Result<(), BuildError> {
    let len = u16::try_from(payload).map_err(|_| BuildError::BufferTooSmall)?;
    h.fill(0);
    h[0] = 0x60;
    h[4..6].copy_from_slice(&len.to_be_bytes());
    h[6] = next;
    h[7] = OUTER_TTL;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{parse_frame, L3, L4};

    fn encapsulated(enc: Encapsulation, src: IpAddr, dst: IpAddr) -> Vec<u8> {
        let inner = crate::fixtures::TCP_SYN;
        let ip = &inner[14..];
        let n = enc.overhead(dst);
        let mut f = inner[..14].to_vec();
        f[12..14].copy_from_slice(if dst.is_ipv4() { &[0x08, 0x00] } else { &[0x86, 0xdd] });
        f.resize(14 + n, 0);
        write_outer(&mut f[14..], enc, src, dst, ip.len(), false, 0x1234).unwrap();
        f.extend_from_slice(ip);
        f
    }

    #[test]
    fn ipip_outer_header_parses_and_carries_the_packet() {
        let f = encapsulated(
            Encapsulation::IpIp,
            "198.18.2.1".parse().unwrap(),
            "198.18.2.10".parse().unwrap(),
        );
        let p = parse_frame(&f).unwrap();
        let L3::Ipv4(ip) = p.l3 else { panic!() };
        assert_eq!((ip.protocol, ip.ttl), (PROTO_IPV4, OUTER_TTL));
        assert!(ip.dont_fragment);
        assert_eq!(usize::from(p.l3_len), f.len() - 14);
        // The inner packet follows unchanged.
        assert_eq!(&f[34..], &crate::fixtures::TCP_SYN[14..]);
    }

    #[test]
    fn gue_outer_header_is_udp_to_the_port_with_the_inner_protocol() {
        let f = encapsulated(
            Encapsulation::Gue { port: 6080 },
            "2001:db8:2::1".parse().unwrap(),
            "2001:db8:2::10".parse().unwrap(),
        );
        let p = parse_frame(&f).unwrap();
        let Some(l4) = p.l4 else { panic!() };
        let L4::Udp { src_port, dst_port, length } = l4.header else { panic!("{:?}", l4.header) };
        assert_eq!(dst_port, 6080);
        assert!(src_port >= 0xc000);
        assert_eq!(usize::from(length), 8 + 4 + crate::fixtures::TCP_SYN.len() - 14);
        let gue = usize::from(l4.l4_offset) + 8;
        assert_eq!(&f[gue..gue + 4], &[0, PROTO_IPV4, 0, 0]);
    }

    #[test]
    fn mixed_families_and_short_buffers_are_refused() {
        let mut out = [0u8; 20];
        let v4: IpAddr = "198.18.0.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(write_outer(&mut out, Encapsulation::IpIp, v6, v4, 40, false, 0).is_err());
        assert!(write_outer(&mut out[..10], Encapsulation::IpIp, v4, v4, 40, false, 0).is_err());
    }
}
