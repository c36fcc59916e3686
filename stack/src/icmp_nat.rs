//! ICMP errors about translated flows (RFC 5508 for NAT, RFC 3022 section 4.3): the packet an
//! error quotes is rewritten to what its sender knows (the client's own packet, or the
//! endpoint's), and the error is addressed accordingly, so path MTU discovery and unreachable
//! reports work through a NAT.

use core::net::IpAddr;

use crate::checksum::{checksum, l4_checksum_v6, update128, update16, update32};
use crate::error::BuildError;
use crate::nat::SocketAddr;
use crate::parse::{Parsed, L3, L4};

/// TCP and UDP protocol numbers.
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// The TCP or UDP packet an ICMP error quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted {
    /// Offset of the quoted IP header.
    pub ip_offset: usize,
    /// Offset of the quoted TCP/UDP header.
    pub l4_offset: usize,
    /// Where the ICMP message ends.
    pub end: usize,
    /// TCP or UDP.
    pub proto: u8,
    /// Quoted source address and port.
    pub src: SocketAddr,
    /// Quoted destination address and port.
    pub dst: SocketAddr,
}

/// If `parsed` is an ICMP error (IPv4 destination unreachable, time exceeded, parameter
/// problem; ICMPv6 destination unreachable, packet too big, time exceeded, parameter problem)
/// quoting a TCP or UDP packet with at least its ports, that packet.
pub fn quoted(frame: &[u8], parsed: &Parsed) -> Option<Quoted> {
    let l4 = parsed.l4?;
    let end = usize::from(parsed.l3_offset) + usize::from(parsed.l3_len);
    let q = usize::from(l4.l4_offset) + 8;
    let (ip_offset, l4_offset, proto, src, dst) = match (parsed.l3, l4.header) {
        (L3::Ipv4(ref ip), L4::Icmpv4 { icmp_type: 3 | 11 | 12, .. }) if !ip.is_fragment => {
            let h = frame.get(q..q + 20)?;
            if h[0] >> 4 != 4 {
                return None;
            }
            let ihl = usize::from(h[0] & 0x0f) * 4;
            let a = |o: usize| IpAddr::from([h[o], h[o + 1], h[o + 2], h[o + 3]]);
            (q, q + ihl, h[9], a(12), a(16))
        }
        (L3::Ipv6(ref ip), L4::Icmpv6 { icmp_type: 1..=4, .. }) if !ip.is_fragment => {
            let h = frame.get(q..q + 40)?;
            if h[0] >> 4 != 6 {
                return None;
            }
            let a = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&h[o..o + 16]);
                IpAddr::from(b)
            };
            (q, q + 40, h[6], a(8), a(24))
        }
        _ => return None,
    };
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    let ports = frame.get(l4_offset..l4_offset + 4)?;
    if l4_offset + 4 > end {
        return None;
    }
    Some(Quoted {
        ip_offset,
        l4_offset,
        end,
        proto,
        src: SocketAddr { addr: src, port: u16::from_be_bytes([ports[0], ports[1]]) },
        dst: SocketAddr { addr: dst, port: u16::from_be_bytes([ports[2], ports[3]]) },
    })
}

/// Rewrites the quoted packet's source and destination (addresses and ports) and, if given,
/// the error's own destination address; fixes the quoted IPv4 header checksum, the quoted
/// TCP/UDP checksum when it is quoted, the ICMP checksum and the outer IPv4 header checksum.
pub fn translate(
    frame: &mut [u8],
    parsed: &Parsed,
    q: &Quoted,
    new_src: SocketAddr,
    new_dst: SocketAddr,
    new_outer_dst: Option<IpAddr>,
) -> Result<(), BuildError> {
    let l3 = usize::from(parsed.l3_offset);
    let Some(l4) = parsed.l4 else { return Err(BuildError::UnexpectedPacket) };
    let icmp = usize::from(l4.l4_offset);
    if frame.len() < q.end || q.l4_offset + 4 > q.end {
        return Err(BuildError::BufferTooSmall);
    }
    // Where the quoted L4 checksum is, if it was quoted whole.
    let csum_at = q.l4_offset + if q.proto == PROTO_TCP { 16 } else { 6 };
    let l4_csum_at = (csum_at + 2 <= q.end).then_some(csum_at);
    let mut l4_csum = l4_csum_at.map(|at| u16::from_be_bytes([frame[at], frame[at + 1]]));
    let udp_none = q.proto == PROTO_UDP && l4_csum == Some(0) && q.src.addr.is_ipv4();
    let qi = q.ip_offset;
    match (q.src.addr, q.dst.addr, new_src.addr, new_dst.addr) {
        (IpAddr::V4(os), IpAddr::V4(od), IpAddr::V4(ns), IpAddr::V4(nd)) => {
            if q.ip_offset + 20 > q.end {
                return Err(BuildError::BufferTooSmall);
            }
            let mut ipc = u16::from_be_bytes([frame[qi + 10], frame[qi + 11]]);
            for (o, n, at) in [(os, ns, 12), (od, nd, 16)] {
                ipc = update32(ipc, u32::from(o), u32::from(n));
                l4_csum = l4_csum.map(|c| update32(c, u32::from(o), u32::from(n)));
                frame[qi + at..qi + at + 4].copy_from_slice(&n.octets());
            }
            frame[qi + 10..qi + 12].copy_from_slice(&ipc.to_be_bytes());
        }
        (IpAddr::V6(os), IpAddr::V6(od), IpAddr::V6(ns), IpAddr::V6(nd)) => {
            for (o, n, at) in [(os, ns, 8), (od, nd, 24)] {
                l4_csum = l4_csum.map(|c| update128(c, u128::from(o), u128::from(n)));
                frame[qi + at..qi + at + 16].copy_from_slice(&n.octets());
            }
        }
        _ => return Err(BuildError::UnexpectedPacket),
    }
    let p = q.l4_offset;
    l4_csum = l4_csum.map(|c| update16(c, q.src.port, new_src.port));
    l4_csum = l4_csum.map(|c| update16(c, q.dst.port, new_dst.port));
    frame[p..p + 2].copy_from_slice(&new_src.port.to_be_bytes());
    frame[p + 2..p + 4].copy_from_slice(&new_dst.port.to_be_bytes());
    if let (Some(at), Some(c)) = (l4_csum_at, l4_csum) {
        if !udp_none {
            let c = if q.proto == PROTO_UDP && c == 0 { 0xffff } else { c };
            frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
    }
    // The error's own header and checksum.
    match parsed.l3 {
        L3::Ipv4(ref ip) => {
            if let Some(IpAddr::V4(n)) = new_outer_dst {
                let c = u16::from_be_bytes([frame[l3 + 10], frame[l3 + 11]]);
                let c = update32(c, u32::from(ip.dst), u32::from(n));
                frame[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
                frame[l3 + 16..l3 + 20].copy_from_slice(&n.octets());
            }
            frame[icmp + 2..icmp + 4].fill(0);
            let c = checksum(&frame[icmp..q.end]);
            frame[icmp + 2..icmp + 4].copy_from_slice(&c.to_be_bytes());
        }
        L3::Ipv6(ref ip) => {
            let dst = match new_outer_dst {
                Some(IpAddr::V6(n)) => {
                    frame[l3 + 24..l3 + 40].copy_from_slice(&n.octets());
                    n
                }
                _ => ip.dst,
            };
            frame[icmp + 2..icmp + 4].fill(0);
            let c = l4_checksum_v6(ip.src, dst, 58, &frame[icmp..q.end]);
            frame[icmp + 2..icmp + 4].copy_from_slice(&c.to_be_bytes());
        }
        L3::Arp(_) => return Err(BuildError::UnexpectedPacket),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::icmp::{write_error_v4, Icmpv4Error};
    use crate::parse::parse_frame;
    use core::net::Ipv4Addr;

    /// A UDP datagram from weir's SNAT address to an endpoint, with a real checksum.
    fn datagram() -> Vec<u8> {
        let mut l4 = vec![0x4e, 0x21, 0x00, 0x35, 0, 12, 0, 0, b'd', b'a', b't', b'a'];
        let (s, d) = (Ipv4Addr::new(198, 18, 2, 1), Ipv4Addr::new(198, 18, 2, 10));
        let c = crate::checksum::l4_checksum_v4(s, d, 17, &l4);
        l4[6..8].copy_from_slice(&c.to_be_bytes());
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&32u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&s.octets());
        ip[16..20].copy_from_slice(&d.octets());
        let c = checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut f = vec![2, 0, 0, 0, 0, 0x10, 2, 0, 0, 0, 0, 0x22, 0x08, 0x00];
        f.extend_from_slice(&ip);
        f.extend_from_slice(&l4);
        f
    }

    #[test]
    fn a_port_unreachable_is_turned_back_to_the_client() {
        // The endpoint's port unreachable about weir's translated datagram.
        let d = datagram();
        let pd = parse_frame(&d).unwrap();
        let mut e = vec![0u8; 200];
        let n = write_error_v4(
            &mut e,
            &d,
            &pd,
            Icmpv4Error::PortUnreachable,
            Ipv4Addr::new(198, 18, 2, 10),
            crate::MacAddr([2, 0, 0, 0, 0, 0x22]),
            crate::MacAddr([2, 0, 0, 0, 0, 0x10]),
        )
        .unwrap();
        e.truncate(n);
        let pe = parse_frame(&e).unwrap();
        let q = quoted(&e, &pe).unwrap();
        assert_eq!(q.src, SocketAddr { addr: "198.18.2.1".parse().unwrap(), port: 0x4e21 });
        assert_eq!(q.dst, SocketAddr { addr: "198.18.2.10".parse().unwrap(), port: 53 });
        let client = SocketAddr { addr: "198.18.1.2".parse().unwrap(), port: 5353 };
        let vip = SocketAddr { addr: "198.19.0.1".parse().unwrap(), port: 53 };
        translate(&mut e, &pe, &q, client, vip, Some(client.addr)).unwrap();
        // Valid all through, and quoting the client's own datagram.
        let pe2 = parse_frame(&e).unwrap();
        let L3::Ipv4(outer) = pe2.l3 else { panic!() };
        assert_eq!(IpAddr::V4(outer.dst), client.addr);
        let icmp = usize::from(pe2.l4.unwrap().l4_offset);
        assert_eq!(checksum(&e[icmp..]), 0, "ICMP checksum");
        let q2 = quoted(&e, &pe2).unwrap();
        assert_eq!((q2.src, q2.dst), (client, vip));
        assert_eq!(checksum(&e[q2.ip_offset..q2.ip_offset + 20]), 0, "quoted IP checksum");
        let quoted_l4 = &e[q2.l4_offset..q2.end];
        let c = crate::checksum::l4_checksum_v4(
            Ipv4Addr::new(198, 18, 1, 2),
            Ipv4Addr::new(198, 19, 0, 1),
            17,
            &{
                let mut v = quoted_l4.to_vec();
                v[6..8].fill(0);
                v
            },
        );
        assert_eq!(u16::from_be_bytes([quoted_l4[6], quoted_l4[7]]), c, "quoted UDP checksum");
    }
}
