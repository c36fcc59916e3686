//! In-place address and port translation of IPv4 and IPv6 TCP/UDP packets (NAT), with the IPv4
//! header checksum and the TCP/UDP checksum patched incrementally (RFC 1624, RFC 3022 section
//! 4.2): the cost does not depend on the packet's length.

use core::net::IpAddr;

use crate::checksum::{self, update128, update16, update32};
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

/// Where a TCP or UDP packet's translatable fields are, and what they hold: what
/// [`rewrite_at`] needs, from a [`Parsed`] frame ([`NatSite::from_parsed`]) or from the IPv4
/// fast path (as a [`NatSiteV4`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatSite {
    /// Offset of the IP header.
    pub l3_offset: usize,
    /// Offset of the TCP/UDP header.
    pub l4_offset: usize,
    /// Length of the IP packet, bytes (what an MTU must hold).
    pub l3_len: u16,
    /// TCP (else UDP).
    pub tcp: bool,
    /// Source address and port now in the packet.
    pub src: SocketAddr,
    /// Destination address and port now in the packet.
    pub dst: SocketAddr,
}

impl NatSite {
    /// The site of a parsed, unfragmented TCP or UDP packet.
    pub fn from_parsed(parsed: &Parsed) -> Result<NatSite, BuildError> {
        let Some(l4) = parsed.l4 else { return Err(BuildError::UnexpectedPacket) };
        let (tcp, sport, dport) = match l4.header {
            L4::Tcp { src_port, dst_port, .. } => (true, src_port, dst_port),
            L4::Udp { src_port, dst_port, .. } => (false, src_port, dst_port),
            _ => return Err(BuildError::UnexpectedPacket),
        };
        let (src, dst) = match parsed.l3 {
            L3::Ipv4(ref ip) if ip.is_fragment => return Err(BuildError::Fragmented),
            L3::Ipv6(ref ip) if ip.is_fragment => return Err(BuildError::Fragmented),
            L3::Ipv4(ref ip) => (IpAddr::V4(ip.src), IpAddr::V4(ip.dst)),
            L3::Ipv6(ref ip) => (IpAddr::V6(ip.src), IpAddr::V6(ip.dst)),
            L3::Arp(_) => return Err(BuildError::UnexpectedPacket),
        };
        Ok(NatSite {
            l3_offset: usize::from(parsed.l3_offset),
            l4_offset: usize::from(l4.l4_offset),
            l3_len: parsed.l3_len,
            tcp,
            src: SocketAddr { addr: src, port: sport },
            dst: SocketAddr { addr: dst, port: dport },
        })
    }

    /// The IPv4 form of this site, for [`rewrite_v4`]; `None` for IPv6.
    pub fn v4(&self) -> Option<NatSiteV4> {
        let (IpAddr::V4(src), IpAddr::V4(dst)) = (self.src.addr, self.dst.addr) else {
            return None;
        };
        Some(NatSiteV4 {
            l3_offset: self.l3_offset,
            l4_offset: self.l4_offset,
            tcp: self.tcp,
            src,
            src_port: self.src.port,
            dst,
            dst_port: self.dst.port,
        })
    }
}

/// [`NatSite`] of an IPv4 packet, in IPv4 terms: what [`rewrite_v4`] needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatSiteV4 {
    /// Offset of the IP header.
    pub l3_offset: usize,
    /// Offset of the TCP/UDP header.
    pub l4_offset: usize,
    /// TCP (else UDP).
    pub tcp: bool,
    /// Source address now in the packet.
    pub src: core::net::Ipv4Addr,
    /// Source port now in the packet.
    pub src_port: u16,
    /// Destination address now in the packet.
    pub dst: core::net::Ipv4Addr,
    /// Destination port now in the packet.
    pub dst_port: u16,
}

impl NatSiteV4 {
    /// The site of an untagged IPv4 packet the fast path accepted; `None` unless it is an
    /// unfragmented TCP or UDP packet.
    #[inline]
    pub fn from_ipv4_fast(f: &crate::parse::Ipv4Fast) -> Option<NatSiteV4> {
        if f.fragment || (f.protocol != 6 && f.protocol != 17) {
            return None;
        }
        Some(NatSiteV4 {
            l3_offset: 14,
            l4_offset: 34,
            tcp: f.protocol == 6,
            src: f.src,
            src_port: f.src_port,
            dst: f.dst,
            dst_port: f.dst_port,
        })
    }
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
    rewrite_at(frame, &NatSite::from_parsed(parsed)?, src, dst)
}

/// [`rewrite_at`] for an IPv4 site, without going through `IpAddr`: the IPv4 fast path's
/// rewrite. `src` and `dst` are the new (address, port) pairs, `None` to leave one as it is.
/// The caller guarantees the site came from this frame (offsets within it).
#[inline]
pub fn rewrite_v4(
    frame: &mut [u8],
    site: &NatSiteV4,
    src: Option<(core::net::Ipv4Addr, u16)>,
    dst: Option<(core::net::Ipv4Addr, u16)>,
) -> Result<(), BuildError> {
    let csum_at = if site.tcp { 16 } else { 6 };
    // The IP header as a fixed-size view, the L4 header up to its checksum as a slice of known
    // length: both checked here, before anything is written.
    let (head, tail) =
        frame.split_at_mut_checked(site.l4_offset).ok_or(BuildError::BufferTooSmall)?;
    let ip = head
        .get_mut(site.l3_offset..)
        .and_then(|h| h.first_chunk_mut::<20>())
        .ok_or(BuildError::BufferTooSmall)?;
    let l4 = tail.get_mut(..csum_at + 2).ok_or(BuildError::BufferTooSmall)?;
    // The address changes go into both checksums (the L4 one through its pseudo-header), the
    // port changes into the L4 one only: summed unfolded, folded once each.
    let (mut addrs, mut ports) = (0u64, 0u64);
    if let Some((a, p)) = src {
        let n = u32::from(a);
        addrs += checksum::delta32(u32::from(site.src), n);
        ports += checksum::delta16(site.src_port, p);
        ip[12..16].copy_from_slice(&n.to_be_bytes());
        l4[0..2].copy_from_slice(&p.to_be_bytes());
    }
    if let Some((a, p)) = dst {
        let n = u32::from(a);
        addrs += checksum::delta32(u32::from(site.dst), n);
        ports += checksum::delta16(site.dst_port, p);
        ip[16..20].copy_from_slice(&n.to_be_bytes());
        l4[2..4].copy_from_slice(&p.to_be_bytes());
    }
    let ip_csum = u16::from_be_bytes([ip[10], ip[11]]);
    ip[10..12].copy_from_slice(&checksum::apply_delta(ip_csum, addrs).to_be_bytes());
    let old = u16::from_be_bytes([l4[csum_at], l4[csum_at + 1]]);
    // An IPv4 UDP checksum of zero means none was sent (RFC 768): it stays zero.
    if site.tcp || old != 0 {
        let mut new = checksum::apply_delta(old, addrs + ports);
        if !site.tcp && new == 0 {
            new = 0xffff;
        }
        l4[csum_at..csum_at + 2].copy_from_slice(&new.to_be_bytes());
    }
    Ok(())
}

/// [`rewrite`] at a known [`NatSite`].
#[inline]
pub fn rewrite_at(
    frame: &mut [u8],
    site: &NatSite,
    src: Option<SocketAddr>,
    dst: Option<SocketAddr>,
) -> Result<(), BuildError> {
    let l3 = site.l3_offset;
    let l4o = site.l4_offset;
    let csum_at = l4o + if site.tcp { 16 } else { 6 };
    if frame.len() < csum_at + 2 || frame.len() < l4o + 8 {
        return Err(BuildError::BufferTooSmall);
    }
    let mut l4_csum = u16::from_be_bytes([frame[csum_at], frame[csum_at + 1]]);
    let udp_no_csum = !site.tcp && l4_csum == 0 && site.src.addr.is_ipv4();
    match (site.src.addr, site.dst.addr) {
        (IpAddr::V4(old_src), IpAddr::V4(old_dst)) => {
            let v4 = |s: Option<SocketAddr>| match s.map(|s| s.addr) {
                None => Ok(None),
                Some(IpAddr::V4(a)) => Ok(Some(a)),
                Some(IpAddr::V6(_)) => Err(BuildError::UnexpectedPacket),
            };
            let (new_src, new_dst) = (v4(src)?, v4(dst)?);
            if frame.len() < l3 + 20 {
                return Err(BuildError::BufferTooSmall);
            }
            let mut ip_csum = u16::from_be_bytes([frame[l3 + 10], frame[l3 + 11]]);
            for (new, at, old) in [(new_src, 12, old_src), (new_dst, 16, old_dst)] {
                if let Some(new) = new {
                    ip_csum = update32(ip_csum, u32::from(old), u32::from(new));
                    l4_csum = update32(l4_csum, u32::from(old), u32::from(new));
                    frame[l3 + at..l3 + at + 4].copy_from_slice(&new.octets());
                }
            }
            frame[l3 + 10..l3 + 12].copy_from_slice(&ip_csum.to_be_bytes());
        }
        (IpAddr::V6(old_src), IpAddr::V6(old_dst)) => {
            let v6 = |s: Option<SocketAddr>| match s.map(|s| s.addr) {
                None => Ok(None),
                Some(IpAddr::V6(a)) => Ok(Some(a)),
                Some(IpAddr::V4(_)) => Err(BuildError::UnexpectedPacket),
            };
            let (new_src, new_dst) = (v6(src)?, v6(dst)?);
            if frame.len() < l3 + 40 {
                return Err(BuildError::BufferTooSmall);
            }
            for (new, at, old) in [(new_src, 8, old_src), (new_dst, 24, old_dst)] {
                if let Some(new) = new {
                    l4_csum = update128(l4_csum, u128::from(old), u128::from(new));
                    frame[l3 + at..l3 + at + 16].copy_from_slice(&new.octets());
                }
            }
        }
        _ => return Err(BuildError::UnexpectedPacket),
    }
    if let Some(s) = src {
        l4_csum = update16(l4_csum, site.src.port, s.port);
        frame[l4o..l4o + 2].copy_from_slice(&s.port.to_be_bytes());
    }
    if let Some(d) = dst {
        l4_csum = update16(l4_csum, site.dst.port, d.port);
        frame[l4o + 2..l4o + 4].copy_from_slice(&d.port.to_be_bytes());
    }
    if !udp_no_csum {
        // RFC 768: a computed UDP checksum of zero is sent as all ones.
        if !site.tcp && l4_csum == 0 {
            l4_csum = 0xffff;
        }
        frame[csum_at..csum_at + 2].copy_from_slice(&l4_csum.to_be_bytes());
    }
    Ok(())
}
