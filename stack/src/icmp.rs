//! ICMP (RFC 792) and ICMPv6 (RFC 4443) answers: echo replies in place and error messages.
//!
//! Before sending any error, the caller must check [`may_send_icmp_error`] and apply its own
//! rate limit (RFC 1812 §4.3.2.8, RFC 4443 §2.4(f)).

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::checksum;
use crate::error::BuildError;
use crate::parse::{Parsed, L3, L4, PROTO_ICMP, PROTO_ICMPV6};
use crate::wire::ether::dst_mac;
use crate::wire::MacAddr;

/// ICMPv4 echo reply type (RFC 792).
pub const ICMPV4_ECHO_REPLY: u8 = 0;
/// ICMPv4 destination unreachable type (RFC 792).
pub const ICMPV4_DEST_UNREACHABLE: u8 = 3;
/// ICMPv4 echo request type (RFC 792).
pub const ICMPV4_ECHO_REQUEST: u8 = 8;
/// ICMPv4 time exceeded type (RFC 792).
pub const ICMPV4_TIME_EXCEEDED: u8 = 11;
/// ICMPv4 parameter problem type (RFC 792).
pub const ICMPV4_PARAMETER_PROBLEM: u8 = 12;
/// ICMPv6 destination unreachable type (RFC 4443 §3.1).
pub const ICMPV6_DEST_UNREACHABLE: u8 = 1;
/// ICMPv6 packet too big type (RFC 4443 §3.2).
pub const ICMPV6_PACKET_TOO_BIG: u8 = 2;
/// ICMPv6 time exceeded type (RFC 4443 §3.3).
pub const ICMPV6_TIME_EXCEEDED: u8 = 3;
/// ICMPv6 echo request type (RFC 4443 §4.1).
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
/// ICMPv6 echo reply type (RFC 4443 §4.2).
pub const ICMPV6_ECHO_REPLY: u8 = 129;
/// ICMPv6 redirect type (RFC 4861 §4.5); never answered with an error (RFC 4443 §2.4(e)).
pub const ICMPV6_REDIRECT: u8 = 137;

/// Largest IPv4 datagram carrying an ICMP error, in bytes (RFC 1812 §4.3.2.3).
pub const IPV4_ERROR_MAX_LEN: usize = 576;
/// Largest IPv6 packet carrying an ICMPv6 error, in bytes: the IPv6 minimum MTU
/// (RFC 4443 §2.4(c), RFC 8200 §5).
pub const IPV6_ERROR_MAX_LEN: usize = 1280;
/// TTL / hop limit of the packets built here (RFC 1700 default TTL).
pub const DEFAULT_TTL: u8 = 64;

const ETH_LEN: usize = 14;
const ICMP_HEADER_LEN: usize = 8;

/// Which ICMPv4 error [`write_error_v4`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmpv4Error {
    /// Time exceeded in transit: type 11 code 0 (TTL reached 0).
    TimeExceeded,
    /// Destination unreachable, net unreachable: type 3 code 0.
    NetUnreachable,
    /// Destination unreachable, host unreachable: type 3 code 1.
    HostUnreachable,
    /// Destination unreachable, protocol unreachable: type 3 code 2.
    ProtocolUnreachable,
    /// Destination unreachable, port unreachable: type 3 code 3.
    PortUnreachable,
    /// Destination unreachable, fragmentation needed and DF set: type 3 code 4, with the
    /// next-hop MTU in bytes (RFC 1191 §4).
    FragNeeded {
        /// MTU of the next-hop link, in bytes.
        next_hop_mtu: u16,
    },
    /// Destination unreachable, communication administratively prohibited: type 3 code 13
    /// (RFC 1812 §5.2.7.1).
    AdminProhibited,
    /// Parameter problem: type 12 code 0, with a pointer to the offending byte of the
    /// original IP header (RFC 792, RFC 1812 §4.3.2.6).
    ParameterProblem {
        /// Offset of the bad byte from the start of the original IP header.
        pointer: u8,
    },
}

impl Icmpv4Error {
    /// `(type, code, bytes 4..8 of the ICMP header)`.
    const fn encode(self) -> (u8, u8, [u8; 4]) {
        match self {
            Icmpv4Error::TimeExceeded => (ICMPV4_TIME_EXCEEDED, 0, [0; 4]),
            Icmpv4Error::NetUnreachable => (ICMPV4_DEST_UNREACHABLE, 0, [0; 4]),
            Icmpv4Error::HostUnreachable => (ICMPV4_DEST_UNREACHABLE, 1, [0; 4]),
            Icmpv4Error::ProtocolUnreachable => (ICMPV4_DEST_UNREACHABLE, 2, [0; 4]),
            Icmpv4Error::PortUnreachable => (ICMPV4_DEST_UNREACHABLE, 3, [0; 4]),
            Icmpv4Error::FragNeeded { next_hop_mtu } => {
                let m = next_hop_mtu.to_be_bytes();
                (ICMPV4_DEST_UNREACHABLE, 4, [0, 0, m[0], m[1]])
            }
            Icmpv4Error::AdminProhibited => (ICMPV4_DEST_UNREACHABLE, 13, [0; 4]),
            Icmpv4Error::ParameterProblem { pointer } => {
                (ICMPV4_PARAMETER_PROBLEM, 0, [pointer, 0, 0, 0])
            }
        }
    }
}

/// Which ICMPv6 error [`write_error_v6`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmpv6Error {
    /// Time exceeded, hop limit exceeded in transit: type 3 code 0.
    TimeExceeded,
    /// Destination unreachable, no route to destination: type 1 code 0.
    NoRoute,
    /// Destination unreachable, administratively prohibited: type 1 code 1.
    AdminProhibited,
    /// Destination unreachable, address unreachable: type 1 code 3.
    AddressUnreachable,
    /// Destination unreachable, port unreachable: type 1 code 4.
    PortUnreachable,
    /// Packet too big: type 2 code 0, with the next-hop MTU in bytes.
    PacketTooBig {
        /// MTU of the next-hop link, in bytes.
        mtu: u32,
    },
}

impl Icmpv6Error {
    /// `(type, code, bytes 4..8 of the ICMPv6 header)`.
    const fn encode(self) -> (u8, u8, [u8; 4]) {
        match self {
            Icmpv6Error::TimeExceeded => (ICMPV6_TIME_EXCEEDED, 0, [0; 4]),
            Icmpv6Error::NoRoute => (ICMPV6_DEST_UNREACHABLE, 0, [0; 4]),
            Icmpv6Error::AdminProhibited => (ICMPV6_DEST_UNREACHABLE, 1, [0; 4]),
            Icmpv6Error::AddressUnreachable => (ICMPV6_DEST_UNREACHABLE, 3, [0; 4]),
            Icmpv6Error::PortUnreachable => (ICMPV6_DEST_UNREACHABLE, 4, [0; 4]),
            Icmpv6Error::PacketTooBig { mtu } => (ICMPV6_PACKET_TOO_BIG, 0, mtu.to_be_bytes()),
        }
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Turns a parsed ICMPv4 echo request in `frame` into the echo reply in place: MACs and IP
/// addresses swapped, TTL set to [`DEFAULT_TTL`], type 8 → 0; the IPv4 header and ICMP
/// checksums are patched incrementally (RFC 1624), so a request with a bad ICMP checksum gets
/// a reply with a bad checksum. IP options and VLAN tags are kept. Returns the reply's length,
/// `l3_offset + total_len` (Ethernet padding dropped).
///
/// Errors: [`BuildError::UnexpectedPacket`] unless `parsed` is an ICMPv4 echo request (type 8,
/// code 0); [`BuildError::Fragmented`] for fragments; [`BuildError::NotUnicast`] if the
/// destination MAC or IP is multicast / broadcast; [`BuildError::BufferTooSmall`] if `frame`
/// is shorter than `parsed` says.
pub fn echo_reply_in_place_v4(frame: &mut [u8], parsed: &Parsed) -> Result<usize, BuildError> {
    let (L3::Ipv4(v4), Some(l4)) = (&parsed.l3, &parsed.l4) else {
        return Err(BuildError::UnexpectedPacket);
    };
    if !matches!(l4.header, L4::Icmpv4 { icmp_type: ICMPV4_ECHO_REQUEST, icmp_code: 0, .. }) {
        return Err(BuildError::UnexpectedPacket);
    }
    if v4.is_fragment {
        return Err(BuildError::Fragmented);
    }
    if v4.dst.is_multicast() || v4.dst.is_broadcast() {
        return Err(BuildError::NotUnicast);
    }
    let l3 = usize::from(parsed.l3_offset);
    let l4o = usize::from(l4.l4_offset);
    let end = parsed.l3_end();
    if frame.len() < end || l4o + ICMP_HEADER_LEN > end || l3 + 20 > end {
        return Err(BuildError::BufferTooSmall);
    }
    if frame[0] & 1 != 0 {
        return Err(BuildError::NotUnicast);
    }
    // Swapping source and destination leaves both checksums unchanged.
    swap_ranges(frame, l3 + 12, l3 + 16, 4);
    let old = be16(frame, l3 + 8);
    let new = u16::from_be_bytes([DEFAULT_TTL, frame[l3 + 9]]);
    frame[l3 + 8] = DEFAULT_TTL;
    let c = checksum::update16(be16(frame, l3 + 10), old, new);
    frame[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    turn_echo_around(frame, l4o, ICMPV4_ECHO_REPLY);
    Ok(end)
}

/// Turns a parsed ICMPv6 echo request in `frame` into the echo reply in place: MACs and
/// addresses swapped, hop limit set to [`DEFAULT_TTL`], type 128 → 129, the ICMPv6 checksum
/// patched incrementally (the pseudo-header sum does not change when source and destination
/// swap). Returns `l3_offset + 40 + payload_len`.
///
/// Errors: [`BuildError::UnexpectedPacket`] unless `parsed` is an ICMPv6 echo request (type
/// 128, code 0) directly after the IPv6 header (no extension headers); [`BuildError::Fragmented`]
/// for fragments; [`BuildError::NotUnicast`] if the destination MAC or address is multicast
/// (answering `ff02::1` needs a unicast source the caller must choose); and
/// [`BuildError::BufferTooSmall`].
pub fn echo_reply_in_place_v6(frame: &mut [u8], parsed: &Parsed) -> Result<usize, BuildError> {
    let (L3::Ipv6(v6), Some(l4)) = (&parsed.l3, &parsed.l4) else {
        return Err(BuildError::UnexpectedPacket);
    };
    if !matches!(l4.header, L4::Icmpv6 { icmp_type: ICMPV6_ECHO_REQUEST, icmp_code: 0, .. }) {
        return Err(BuildError::UnexpectedPacket);
    }
    if v6.is_fragment {
        return Err(BuildError::Fragmented);
    }
    if v6.ext_headers != 0 {
        return Err(BuildError::UnexpectedPacket);
    }
    if v6.dst.is_multicast() {
        return Err(BuildError::NotUnicast);
    }
    let l3 = usize::from(parsed.l3_offset);
    let l4o = usize::from(l4.l4_offset);
    let end = parsed.l3_end();
    if frame.len() < end || l4o + ICMP_HEADER_LEN > end || l3 + 40 > end {
        return Err(BuildError::BufferTooSmall);
    }
    if frame[0] & 1 != 0 {
        return Err(BuildError::NotUnicast);
    }
    swap_ranges(frame, l3 + 8, l3 + 24, 16);
    frame[l3 + 7] = DEFAULT_TTL;
    turn_echo_around(frame, l4o, ICMPV6_ECHO_REPLY);
    Ok(end)
}

/// The part of an echo reply both families share: MACs swapped, and the ICMP type at `l4o`
/// set to `reply_type` with the checksum patched incrementally (RFC 1624).
fn turn_echo_around(frame: &mut [u8], l4o: usize, reply_type: u8) {
    swap_ranges(frame, 0, 6, 6);
    let old = be16(frame, l4o);
    frame[l4o] = reply_type;
    let new = be16(frame, l4o);
    let c = checksum::update16(be16(frame, l4o + 2), old, new);
    frame[l4o + 2..l4o + 4].copy_from_slice(&c.to_be_bytes());
}

/// Swaps `frame[a..a + len]` with `frame[b..b + len]`; `a + len <= b`, both in bounds
/// (checked by every caller).
fn swap_ranges(frame: &mut [u8], a: usize, b: usize, len: usize) {
    let (left, right) = frame.split_at_mut(b);
    left[a..a + len].swap_with_slice(&mut right[..len]);
}

/// Whether an ICMP / ICMPv6 error may be sent about the packet in `frame` (RFC 1812
/// §4.3.2.7, RFC 1122 §3.2.2, RFC 4443 §2.4(e)). Returns `false` when the packet:
///
/// * is ARP or is a non-first fragment;
/// * is itself an ICMP error (ICMPv4 types 3, 4, 5, 11, 12; ICMPv6 types < 128) or an ICMPv6
///   redirect (137);
/// * was sent to a link-layer multicast or broadcast address;
/// * has a multicast (or IPv4 limited-broadcast 255.255.255.255) destination address;
/// * has a source address that does not identify a single host: IPv4 0.0.0.0/8, 127.0.0.0/8,
///   multicast, 240.0.0.0/4 (including broadcast); IPv6 unspecified, loopback, multicast.
///
/// RFC 4443 §2.4(e.3) lets packet too big (and parameter problem code 2) answer multicast
/// destinations; this function is conservative and says no. Subnet-directed broadcast
/// destinations are unknown here: the caller must check those.
pub fn may_send_icmp_error(parsed: &Parsed, frame: &[u8]) -> bool {
    if parsed.is_non_first_fragment() {
        return false;
    }
    let Some(mac) = dst_mac(frame) else {
        return false;
    };
    if mac.is_multicast() {
        return false;
    }
    match &parsed.l3 {
        L3::Arp(_) => false,
        L3::Ipv4(v4) => {
            if let Some(L4::Icmpv4 { icmp_type, .. }) = parsed.l4.map(|l| l.header) {
                if matches!(icmp_type, 3 | 4 | 5 | 11 | 12) {
                    return false;
                }
            }
            let s = v4.src.octets();
            !(v4.dst.is_multicast()
                || v4.dst.is_broadcast()
                || s[0] == 0
                || s[0] == 127
                || s[0] >= 224)
        }
        L3::Ipv6(v6) => {
            if let Some(L4::Icmpv6 { icmp_type, .. }) = parsed.l4.map(|l| l.header) {
                if icmp_type < 128 || icmp_type == ICMPV6_REDIRECT {
                    return false;
                }
            }
            !(v6.dst.is_multicast()
                || v6.src.is_unspecified()
                || v6.src.is_loopback()
                || v6.src.is_multicast())
        }
    }
}

/// Writes an ICMPv4 error about the parsed packet `original_frame` into `out`: an untagged
/// Ethernet frame `src_mac` → `dst_mac`, an IPv4 header `src_ip` → the original source (TTL
/// [`DEFAULT_TTL`], DSCP CS6 as Linux does, no DF), the ICMP header, then the original IP
/// header and as much of its payload as keeps the IP datagram within [`IPV4_ERROR_MAX_LEN`]
/// (576) bytes and `out` (RFC 1812 §4.3.2.3). Ethernet padding is never quoted. Returns the
/// frame length.
///
/// Check [`may_send_icmp_error`] first: this function does not.
///
/// Errors: [`BuildError::UnexpectedPacket`] unless `parsed` is IPv4;
/// [`BuildError::BufferTooSmall`] if `out` cannot hold the headers plus the original IP header
/// and 8 bytes of its payload (RFC 792), or `original_frame` is shorter than `parsed` says.
#[allow(clippy::too_many_arguments)]
pub fn write_error_v4(
    out: &mut [u8],
    original_frame: &[u8],
    parsed: &Parsed,
    kind: Icmpv4Error,
    src_ip: Ipv4Addr,
    src_mac: MacAddr,
    dst_mac: MacAddr,
) -> Result<usize, BuildError> {
    let L3::Ipv4(orig) = &parsed.l3 else {
        return Err(BuildError::UnexpectedPacket);
    };
    const HEADERS: usize = ETH_LEN + 20 + ICMP_HEADER_LEN;
    let orig_len = usize::from(parsed.l3_len);
    let min_quote = orig_len.min(usize::from(orig.header_len) + 8);
    let quote_len = orig_len
        .min(IPV4_ERROR_MAX_LEN - 20 - ICMP_HEADER_LEN)
        .min(out.len().saturating_sub(HEADERS));
    if quote_len < min_quote {
        return Err(BuildError::BufferTooSmall);
    }
    let l3 = usize::from(parsed.l3_offset);
    let Some(quote) = original_frame.get(l3..l3 + quote_len) else {
        return Err(BuildError::BufferTooSmall);
    };
    let total = HEADERS + quote_len;
    let Some(out) = out.get_mut(..total) else {
        return Err(BuildError::BufferTooSmall);
    };
    let ip_len = u16::try_from(total - ETH_LEN).unwrap_or(u16::MAX);
    out[..6].copy_from_slice(&dst_mac.0);
    out[6..12].copy_from_slice(&src_mac.0);
    out[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut out[ETH_LEN..ETH_LEN + 20];
    ip[0] = 0x45;
    ip[1] = 0xc0;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[4..8].copy_from_slice(&[0, 0, 0, 0]);
    ip[8] = DEFAULT_TTL;
    ip[9] = PROTO_ICMP;
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&src_ip.octets());
    ip[16..20].copy_from_slice(&orig.src.octets());
    let c = checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let (icmp_type, code, rest) = kind.encode();
    let icmp = &mut out[ETH_LEN + 20..];
    icmp[0] = icmp_type;
    icmp[1] = code;
    icmp[2..4].copy_from_slice(&[0, 0]);
    icmp[4..8].copy_from_slice(&rest);
    icmp[8..].copy_from_slice(quote);
    let c = checksum::checksum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Ok(total)
}

/// Writes an ICMPv6 error about the parsed packet `original_frame` into `out`: an untagged
/// Ethernet frame `src_mac` → `dst_mac`, an IPv6 header `src_ip` → the original source (hop
/// limit [`DEFAULT_TTL`]), the ICMPv6 header, then as much of the original packet as keeps
/// the IPv6 packet within [`IPV6_ERROR_MAX_LEN`] (1280) bytes and `out` (RFC 4443 §2.4(c)).
/// Returns the frame length.
///
/// Check [`may_send_icmp_error`] first: this function does not.
///
/// Errors: [`BuildError::UnexpectedPacket`] unless `parsed` is IPv6;
/// [`BuildError::BufferTooSmall`] if `out` cannot hold the headers plus the original IPv6
/// header and 8 more bytes, or `original_frame` is shorter than `parsed` says.
#[allow(clippy::too_many_arguments)]
pub fn write_error_v6(
    out: &mut [u8],
    original_frame: &[u8],
    parsed: &Parsed,
    kind: Icmpv6Error,
    src_ip: Ipv6Addr,
    src_mac: MacAddr,
    dst_mac: MacAddr,
) -> Result<usize, BuildError> {
    let L3::Ipv6(orig) = &parsed.l3 else {
        return Err(BuildError::UnexpectedPacket);
    };
    const HEADERS: usize = ETH_LEN + 40 + ICMP_HEADER_LEN;
    let orig_len = usize::from(parsed.l3_len);
    let min_quote = orig_len.min(48);
    let quote_len = orig_len
        .min(IPV6_ERROR_MAX_LEN - 40 - ICMP_HEADER_LEN)
        .min(out.len().saturating_sub(HEADERS));
    if quote_len < min_quote {
        return Err(BuildError::BufferTooSmall);
    }
    let l3 = usize::from(parsed.l3_offset);
    let Some(quote) = original_frame.get(l3..l3 + quote_len) else {
        return Err(BuildError::BufferTooSmall);
    };
    let total = HEADERS + quote_len;
    let Some(out) = out.get_mut(..total) else {
        return Err(BuildError::BufferTooSmall);
    };
    let icmp_len = ICMP_HEADER_LEN + quote_len;
    out[..6].copy_from_slice(&dst_mac.0);
    out[6..12].copy_from_slice(&src_mac.0);
    out[12..14].copy_from_slice(&[0x86, 0xdd]);
    write_ipv6_header(
        &mut out[ETH_LEN..ETH_LEN + 40],
        src_ip,
        orig.src,
        u16::try_from(icmp_len).unwrap_or(u16::MAX),
        DEFAULT_TTL,
    );
    let (icmp_type, code, rest) = kind.encode();
    let icmp = &mut out[ETH_LEN + 40..];
    icmp[0] = icmp_type;
    icmp[1] = code;
    icmp[2..4].copy_from_slice(&[0, 0]);
    icmp[4..8].copy_from_slice(&rest);
    icmp[8..].copy_from_slice(quote);
    let c = checksum::l4_checksum_v6(src_ip, orig.src, PROTO_ICMPV6, icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Ok(total)
}

/// Writes a 40-byte IPv6 header carrying ICMPv6 into `h` (exactly 40 bytes long).
pub(crate) fn write_ipv6_header(
    h: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    payload_len: u16,
    hop_limit: u8,
) {
    h[..4].copy_from_slice(&[0x60, 0, 0, 0]);
    h[4..6].copy_from_slice(&payload_len.to_be_bytes());
    h[6] = PROTO_ICMPV6;
    h[7] = hop_limit;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
}
