//! ARP (RFC 826) answers and requests for Ethernet/IPv4.
//!
//! Frames are written untagged by [`write_request`] / [`write_gratuitous`]; [`write_reply`]
//! works in place and keeps the request's VLAN tags. None of them pads to the 60-byte
//! Ethernet minimum.

use core::net::Ipv4Addr;

use crate::error::BuildError;
use crate::parse::{Parsed, L3};
use crate::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, EthernetRepr, MacAddr,
};

/// Length of an Ethernet/IPv4 ARP packet (RFC 826), in bytes.
pub const ARP_LEN: usize = 28;
/// Length of an untagged ARP frame (14 + 28), in bytes.
pub const FRAME_LEN: usize = 14 + ARP_LEN;

/// Turns a parsed ARP request in `frame` into the reply in place: operation 2, our
/// addresses as sender, the requester as target, Ethernet destination the requester's
/// hardware address and source `our_mac`. VLAN tags are kept.
///
/// It does not check that the request's target is `our_ip` (so proxy ARP can use it): the
/// caller decides whether to answer. Returns the reply's length, `l3_offset + 28`.
///
/// Errors: [`BuildError::UnexpectedPacket`] if `parsed` is not an ARP request,
/// [`BuildError::BufferTooSmall`] if `frame` is shorter than `parsed` says.
pub fn write_reply(
    frame: &mut [u8],
    parsed: &Parsed,
    our_mac: MacAddr,
    our_ip: Ipv4Addr,
) -> Result<usize, BuildError> {
    let L3::Arp(arp) = &parsed.l3 else {
        return Err(BuildError::UnexpectedPacket);
    };
    if arp.operation != ArpOperation::Request {
        return Err(BuildError::UnexpectedPacket);
    }
    let off = usize::from(parsed.l3_offset);
    let end = off + ARP_LEN;
    if frame.len() < end {
        return Err(BuildError::BufferTooSmall);
    }
    frame[..6].copy_from_slice(&arp.sender_mac.0);
    frame[6..12].copy_from_slice(&our_mac.0);
    let a = &mut frame[off..end];
    a[6..8].copy_from_slice(&2u16.to_be_bytes());
    a[8..14].copy_from_slice(&our_mac.0);
    a[14..18].copy_from_slice(&our_ip.octets());
    a[18..24].copy_from_slice(&arp.sender_mac.0);
    a[24..28].copy_from_slice(&arp.sender_ip.octets());
    Ok(end)
}

fn write_arp(
    buf: &mut [u8],
    eth_dst: MacAddr,
    src_mac: MacAddr,
    repr: &ArpRepr,
) -> Result<usize, BuildError> {
    let Some(buf) = buf.get_mut(..FRAME_LEN) else {
        return Err(BuildError::BufferTooSmall);
    };
    let mut eth = EthernetFrame::new_unchecked(&mut *buf);
    EthernetRepr {
        src_addr: src_mac.into(),
        dst_addr: eth_dst.into(),
        ethertype: EthernetProtocol::Arp,
    }
    .emit(&mut eth);
    repr.emit(&mut ArpPacket::new_unchecked(&mut buf[14..]));
    Ok(FRAME_LEN)
}

/// Writes a broadcast ARP request "who has `target_ip`? tell `src_ip`" into `buf`.
/// Returns [`FRAME_LEN`] (42) or [`BuildError::BufferTooSmall`].
pub fn write_request(
    buf: &mut [u8],
    src_mac: MacAddr,
    src_ip: Ipv4Addr,
    target_ip: Ipv4Addr,
) -> Result<usize, BuildError> {
    write_probe(buf, src_mac, src_ip, target_ip, MacAddr::BROADCAST)
}

/// Writes an ARP request "who has `target_ip`? tell `src_ip`" sent by unicast to
/// `target_mac`, the MAC weir holds for it: a reachability probe (RFC 1122 §2.3.2.1) that
/// only that host answers. Returns [`FRAME_LEN`] (42) or [`BuildError::BufferTooSmall`].
pub fn write_probe(
    buf: &mut [u8],
    src_mac: MacAddr,
    src_ip: Ipv4Addr,
    target_ip: Ipv4Addr,
    target_mac: MacAddr,
) -> Result<usize, BuildError> {
    let repr = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: src_mac.into(),
        source_protocol_addr: src_ip,
        target_hardware_addr: MacAddr::ZERO.into(),
        target_protocol_addr: target_ip,
    };
    write_arp(buf, target_mac, src_mac, &repr)
}

/// Writes a gratuitous ARP (an ARP announcement, RFC 5227 §2.3: a broadcast request whose
/// sender and target protocol addresses are both `ip`) into `buf`.
/// Returns [`FRAME_LEN`] (42) or [`BuildError::BufferTooSmall`].
pub fn write_gratuitous(buf: &mut [u8], mac: MacAddr, ip: Ipv4Addr) -> Result<usize, BuildError> {
    write_request(buf, mac, ip, ip)
}
