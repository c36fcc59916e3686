//! L4 checksum completion (checksum offload done in software).

use crate::checksum;
use crate::error::BuildError;
use crate::parse::{Parsed, L3, L4};

/// Byte offset of the checksum field inside the L4 header, and whether a computed 0 must be
/// sent as 0xffff (UDP, RFC 768).
fn csum_field(l4: &L4) -> Option<(usize, bool)> {
    match l4 {
        L4::Tcp { .. } => Some((16, false)),
        L4::Udp { .. } => Some((6, true)),
        L4::Icmpv4 { .. } | L4::Icmpv6 { .. } => Some((2, false)),
        L4::Other { .. } => None,
    }
}

/// Returns `(l4_offset, l4_end, field_offset_in_frame, udp)` for a complete, unfragmented
/// TCP/UDP (or, if `icmp`, ICMP/ICMPv6) segment inside `frame`.
fn locate(
    frame: &[u8],
    parsed: &Parsed,
    icmp: bool,
) -> Result<(usize, usize, usize, bool), BuildError> {
    if parsed.is_fragment() {
        return Err(BuildError::Fragmented);
    }
    let Some(l4) = &parsed.l4 else {
        return Err(BuildError::UnexpectedPacket);
    };
    if !icmp && !matches!(l4.header, L4::Tcp { .. } | L4::Udp { .. }) {
        return Err(BuildError::UnexpectedPacket);
    }
    let Some((field, udp)) = csum_field(&l4.header) else {
        return Err(BuildError::UnexpectedPacket);
    };
    let start = usize::from(l4.l4_offset);
    let end = parsed.l3_end();
    if end > frame.len() || start + field + 2 > end {
        return Err(BuildError::BufferTooSmall);
    }
    Ok((start, end, start + field, udp))
}

/// Completes a partial TCP or UDP checksum (IPv4 or IPv6), the Linux `CHECKSUM_PARTIAL`
/// contract (virtio-net `VIRTIO_NET_HDR_F_NEEDS_CSUM`):
///
/// * on entry the checksum field holds the **folded pseudo-header sum, not complemented**
///   (as [`checksum::pseudo_header_v4`] / [`checksum::pseudo_header_v6`] return it);
/// * this sums every byte from the L4 header start to the end of the IP payload
///   ([`Parsed::l3_end`], so Ethernet padding is excluded) — that sum already includes the
///   pseudo-header through the field — and stores its complement. A UDP result of 0 is
///   stored as 0xffff (RFC 768).
///
/// Errors: [`BuildError::Fragmented`] for any fragment, [`BuildError::UnexpectedPacket`] when
/// the L4 protocol is not TCP or UDP, [`BuildError::BufferTooSmall`] when `frame` is shorter
/// than `parsed` says.
pub fn complete_l4_checksum(frame: &mut [u8], parsed: &Parsed) -> Result<(), BuildError> {
    let (start, end, field, udp) = locate(frame, parsed, false)?;
    let mut csum = checksum::checksum(&frame[start..end]);
    if udp && csum == 0 {
        csum = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&csum.to_be_bytes());
    Ok(())
}

/// Computes the L4 checksum from scratch and stores it: TCP, UDP and ICMPv6 with the
/// pseudo-header of the IP header (RFC 9293, RFC 768, RFC 8200 §8.1), ICMPv4 without one
/// (RFC 792). Whatever the field held is ignored. For IPv6 the pseudo-header uses the IPv6
/// header's destination (packets with a routing header are not special-cased).
///
/// Errors as for [`complete_l4_checksum`]; ICMP is accepted here.
pub fn fill_l4_checksum(frame: &mut [u8], parsed: &Parsed) -> Result<(), BuildError> {
    let (start, end, field, udp) = locate(frame, parsed, true)?;
    let proto = parsed.l4.map_or(0, |l4| l4.header.protocol());
    frame[field..field + 2].copy_from_slice(&[0, 0]);
    let seg = &frame[start..end];
    let mut csum = match &parsed.l3 {
        L3::Ipv4(_) if proto == crate::parse::PROTO_ICMP => checksum::checksum(seg),
        L3::Ipv4(v4) => checksum::l4_checksum_v4(v4.src, v4.dst, proto, seg),
        L3::Ipv6(v6) => checksum::l4_checksum_v6(v6.src, v6.dst, proto, seg),
        L3::Arp(_) => return Err(BuildError::UnexpectedPacket),
    };
    if udp && csum == 0 {
        csum = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&csum.to_be_bytes());
    Ok(())
}

/// Whether the L4 checksum of `frame` verifies (TCP, UDP, ICMPv6 with pseudo-header; ICMPv4
/// without). A UDP checksum of 0 over IPv4 means "none" and verifies. `false` for fragments,
/// ARP and other protocols.
pub fn verify_l4_checksum(frame: &[u8], parsed: &Parsed) -> bool {
    let Ok((start, end, field, udp)) = locate(frame, parsed, true) else {
        return false;
    };
    let seg = &frame[start..end];
    let proto = parsed.l4.map_or(0, |l4| l4.header.protocol());
    let len = end - start;
    let total = match &parsed.l3 {
        L3::Ipv4(_) if proto == crate::parse::PROTO_ICMP => checksum::sum(seg),
        L3::Ipv4(v4) => {
            if udp && frame[field..field + 2] == [0, 0] {
                return true;
            }
            let len = u16::try_from(len).unwrap_or(u16::MAX);
            checksum::add(
                checksum::pseudo_header_v4(v4.src, v4.dst, proto, len),
                checksum::sum(seg),
            )
        }
        L3::Ipv6(v6) => {
            let len = u32::try_from(len).unwrap_or(u32::MAX);
            checksum::add(
                checksum::pseudo_header_v6(v6.src, v6.dst, proto, len),
                checksum::sum(seg),
            )
        }
        L3::Arp(_) => return false,
    };
    total == 0xffff
}
