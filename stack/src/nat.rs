//! In-place address and port translation of IPv4 and IPv6 TCP/UDP packets (NAT), with the IPv4
//! header checksum and the TCP/UDP checksum patched incrementally (RFC 1624, RFC 3022 section
//! 4.2): the cost does not depend on the packet's length.

use core::net::IpAddr;

use crate::checksum::{self, update128, update16, update32};
use crate::error::BuildError;
use crate::flow::PackedV4;
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
/// [`rewrite_at`] needs, from a [`Parsed`] frame ([`NatSite::from_parsed`]).
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

/// What one direction of an IPv4 TCP/UDP translation does to the checksums, worked out once
/// for a flow: the IPv4 fast path then writes the new addresses and ports and adds these to
/// the checksums ([`translate_v4`]), with the very result [`rewrite_at`] gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct V4Deltas {
    /// Folded ones'-complement sum of the address changes (IP header and pseudo-header).
    ip: u16,
    /// Folded ones'-complement sum of the address and port changes (TCP/UDP checksum).
    l4: u16,
}

impl V4Deltas {
    /// No change.
    pub const ZERO: V4Deltas = V4Deltas { ip: 0, l4: 0 };

    /// The changes that take a packet keyed `from` to `to`, where `src` and `dst` say which
    /// of source and destination (address and port) a [`rewrite_at`] would be given.
    pub fn new(from: &PackedV4, to: &PackedV4, src: bool, dst: bool) -> V4Deltas {
        let (mut addrs, mut ports) = (0u64, 0u64);
        if src {
            addrs += checksum::delta32(u32::from(from.src()), u32::from(to.src()));
            ports += checksum::delta16(from.src_port(), to.src_port());
        }
        if dst {
            addrs += checksum::delta32(u32::from(from.dst()), u32::from(to.dst()));
            ports += checksum::delta16(from.dst_port(), to.dst_port());
        }
        // Folding first changes nothing: a sum folds to 0 only when it is 0, and sums equal
        // modulo 0xffff fold alike otherwise.
        V4Deltas { ip: checksum::fold(addrs), l4: checksum::fold(addrs + ports) }
    }
}

/// Translates an untagged IPv4 TCP (`tcp`) or UDP packet with a 20-byte header (what the fast
/// path accepts) to the addresses and ports of `to`, fixing both checksums by `deltas`
/// (computed from the packet's own key, [`V4Deltas::new`]). An IPv4 UDP checksum of zero
/// (none sent, RFC 768) stays zero. A frame shorter than its L4 header's checksum field is
/// refused untouched.
#[inline(always)]
pub fn translate_v4(
    frame: &mut [u8],
    tcp: bool,
    to: &PackedV4,
    deltas: V4Deltas,
) -> Result<(), BuildError> {
    const IP: usize = 14;
    const L4: usize = IP + 20;
    let csum_at = L4 + if tcp { 16 } else { 6 };
    let h = frame.get_mut(..csum_at + 2).ok_or(BuildError::BufferTooSmall)?;
    // Source and destination addresses, then ports, in one store each.
    h[IP + 12..IP + 20].copy_from_slice(&to.addrs_be());
    h[L4..L4 + 4].copy_from_slice(&to.ports_be());
    let ip_csum = u16::from_be_bytes([h[IP + 10], h[IP + 11]]);
    h[IP + 10..IP + 12]
        .copy_from_slice(&checksum::apply_delta(ip_csum, u64::from(deltas.ip)).to_be_bytes());
    let old = u16::from_be_bytes([h[csum_at], h[csum_at + 1]]);
    if tcp || old != 0 {
        let mut new = checksum::apply_delta(old, u64::from(deltas.l4));
        if !tcp && new == 0 {
            new = 0xffff;
        }
        h[csum_at..csum_at + 2].copy_from_slice(&new.to_be_bytes());
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
