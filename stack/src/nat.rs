//! In-place address and port translation of IPv4 and IPv6 TCP/UDP packets (NAT), with the IPv4
//! header checksum and the TCP/UDP checksum patched incrementally (RFC 1624, RFC 3022 section
//! 4.2): the cost does not depend on the packet's length.

use core::net::IpAddr;

use crate::checksum::{update128, update16, update32};
use crate::error::BuildError;
use crate::parse::{Parsed, L3, L4};

/// An address and a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketAddr {
    /// Address.
    pub addr: IpAddr,
    /// Port.
    pub port: u16,
}

/// Rewrites the source and/or destination address and port of a parsed TCP or UDP packet in
/// `frame`. Addresses must be of the packet's family.
///
/// The L4 checksum covers the pseudo-header (both addresses) and the ports, so both changes go
/// into it; the IPv4 header checksum covers the addresses only. An IPv4 UDP checksum of zero
/// (none sent, RFC 768) stays zero. Errors leave the frame untouched:
/// [`BuildError::UnexpectedPacket`] for anything but an unfragmented (or first-fragment) TCP or
/// UDP packet of the addresses' family, [`BuildError::Fragmented`] for a first fragment (its L4
/// checksum covers data weir does not see), [`BuildError::BufferTooSmall`] for a frame shorter
/// than its parsed headers.
pub fn rewrite(
    frame: &mut [u8],
    parsed: &Parsed,
    src: Option<SocketAddr>,
    dst: Option<SocketAddr>,
) -> Result<(), BuildError> {
    let Some(l4) = parsed.l4 else { return Err(BuildError::UnexpectedPacket) };
    let (is_tcp, old_sport, old_dport) = match l4.header {
        L4::Tcp { src_port, dst_port, .. } => (true, src_port, dst_port),
        L4::Udp { src_port, dst_port, .. } => (false, src_port, dst_port),
        _ => return Err(BuildError::UnexpectedPacket),
    };
    let l3 = usize::from(parsed.l3_offset);
    let l4o = usize::from(l4.l4_offset);
    let csum_at = l4o + if is_tcp { 16 } else { 6 };
    if frame.len() < csum_at + 2 || frame.len() < l4o + 8 {
        return Err(BuildError::BufferTooSmall);
    }
    let mut l4_csum = u16::from_be_bytes([frame[csum_at], frame[csum_at + 1]]);
    let udp_no_csum = !is_tcp && l4_csum == 0 && matches!(parsed.l3, L3::Ipv4(_));
    match parsed.l3 {
        L3::Ipv4(ref ip) => {
            if ip.is_fragment {
                return Err(BuildError::Fragmented);
            }
            let v4 = |s: Option<SocketAddr>| match s.map(|s| s.addr) {
                None => Ok(None),
                Some(IpAddr::V4(a)) => Ok(Some(a)),
                Some(IpAddr::V6(_)) => Err(BuildError::UnexpectedPacket),
            };
            let (new_src, new_dst) = (v4(src)?, v4(dst)?);
            let mut ip_csum = u16::from_be_bytes([frame[l3 + 10], frame[l3 + 11]]);
            for (new, at, old) in [(new_src, 12, ip.src), (new_dst, 16, ip.dst)] {
                if let Some(new) = new {
                    ip_csum = update32(ip_csum, u32::from(old), u32::from(new));
                    l4_csum = update32(l4_csum, u32::from(old), u32::from(new));
                    frame[l3 + at..l3 + at + 4].copy_from_slice(&new.octets());
                }
            }
            frame[l3 + 10..l3 + 12].copy_from_slice(&ip_csum.to_be_bytes());
        }
        L3::Ipv6(ref ip) => {
            if ip.is_fragment {
                return Err(BuildError::Fragmented);
            }
            let v6 = |s: Option<SocketAddr>| match s.map(|s| s.addr) {
                None => Ok(None),
                Some(IpAddr::V6(a)) => Ok(Some(a)),
                Some(IpAddr::V4(_)) => Err(BuildError::UnexpectedPacket),
            };
            let (new_src, new_dst) = (v6(src)?, v6(dst)?);
            for (new, at, old) in [(new_src, 8, ip.src), (new_dst, 24, ip.dst)] {
                if let Some(new) = new {
                    l4_csum = update128(l4_csum, u128::from(old), u128::from(new));
                    frame[l3 + at..l3 + at + 16].copy_from_slice(&new.octets());
                }
            }
        }
        L3::Arp(_) => return Err(BuildError::UnexpectedPacket),
    }
    if let Some(s) = src {
        l4_csum = update16(l4_csum, old_sport, s.port);
        frame[l4o..l4o + 2].copy_from_slice(&s.port.to_be_bytes());
    }
    if let Some(d) = dst {
        l4_csum = update16(l4_csum, old_dport, d.port);
        frame[l4o + 2..l4o + 4].copy_from_slice(&d.port.to_be_bytes());
    }
    if !udp_no_csum {
        // RFC 768: a computed UDP checksum of zero is sent as all ones.
        if !is_tcp && l4_csum == 0 {
            l4_csum = 0xffff;
        }
        frame[csum_at..csum_at + 2].copy_from_slice(&l4_csum.to_be_bytes());
    }
    Ok(())
}
