//! The whole-frame classifier run on every received packet.
//!
//! [`parse_frame`] walks Ethernet, up to two VLAN tags, ARP / IPv4 / IPv6 (with its extension
//! header chain) and the first bytes of TCP / UDP / ICMP / ICMPv6, and returns a small `Copy`
//! [`Parsed`] summary holding offsets and the fields the pipeline decides on. It reads fields
//! with `u16::from_be_bytes` at fixed offsets after one length check per header, does not
//! allocate, and never panics.
//!
//! # What is validated
//!
//! * Ethernet: at least 14 bytes; at most [`MAX_VLAN_DEPTH`] tags (TPIDs 0x8100, 0x88a8,
//!   0x9100 — see [`crate::wire::vlan`]); EtherType ARP, IPv4 or IPv6.
//! * ARP: Ethernet/IPv4 only (htype 1, ptype 0x0800, hlen 6, plen 4), operation 1 or 2.
//! * IPv4 (RFC 791): version 4, IHL ≥ 5, `IHL*4 ≤ total length ≤ bytes present`, header
//!   checksum correct. Options are walked but not interpreted: a malformed one (a length
//!   below 2 or running past the header, a record-route or timestamp pointer below its
//!   minimum) does not fail the parse but is reported in [`Ipv4Info::option_problem`], so the
//!   caller can answer it with a parameter problem (RFC 1812 §4.3.2.6); source-route options
//!   are flagged in [`Ipv4Info::source_routed`].
//! * IPv6 (RFC 8200): version 6, `40 + payload length ≤ bytes present`; extension headers
//!   hop-by-hop (0), routing (43), fragment (44), destination options (60) and AH (51, RFC
//!   4302) are walked, at most [`MAX_IPV6_EXT_HEADERS`] of them; ESP (50) and No Next
//!   Header (59) end the walk. Jumbograms (RFC 2675) are not supported.
//! * L4, only when the packet holds the start of the L4 header (not a non-first fragment):
//!   TCP ≥ 20 bytes, and a data offset ≥ 5 and within the packet (else
//!   [`ParseError::BadTcpDataOffset`]); UDP ≥ 8 bytes and
//!   `8 ≤ length field ≤ bytes present` (only `8 ≤ length` in a first fragment);
//!   ICMP / ICMPv6 ≥ 8 bytes. L4 checksums are **not** verified here.
//!
//! Bytes after the end of the IP packet (Ethernet padding to 60 bytes) are ignored:
//! [`Parsed::l3_len`] gives the real length.

use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr};

use crate::checksum;
use crate::wire::vlan::{is_vlan_tpid, VID_MAX};
use crate::wire::{ArpOperation, EthernetProtocol, MacAddr};

/// Most VLAN tags [`parse_frame`] accepts (one 802.1ad S-tag + one 802.1Q C-tag).
pub const MAX_VLAN_DEPTH: u8 = 2;

/// Most IPv6 extension headers [`parse_frame`] walks before giving up with
/// [`ParseError::Ipv6ExtChainTooLong`].
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

/// Longest frame [`parse_frame`] accepts, in bytes: offsets in [`Parsed`] are `u16`.
pub const MAX_FRAME_LEN: usize = u16::MAX as usize;

/// IP protocol number of ICMP (RFC 792).
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of TCP (RFC 9293).
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP (RFC 768).
pub const PROTO_UDP: u8 = 17;
/// IP protocol number of ICMPv6 (RFC 4443).
pub const PROTO_ICMPV6: u8 = 58;
/// IPv6 Hop-by-Hop Options header (RFC 8200 §4.3).
pub const NH_HOP_BY_HOP: u8 = 0;
/// IPv6 Routing header (RFC 8200 §4.4).
pub const NH_ROUTING: u8 = 43;
/// IPv6 Fragment header (RFC 8200 §4.5).
pub const NH_FRAGMENT: u8 = 44;
/// IPsec Encapsulating Security Payload (RFC 4303); ends the extension header walk.
pub const NH_ESP: u8 = 50;
/// IPsec Authentication Header (RFC 4302).
pub const NH_AH: u8 = 51;
/// IPv6 No Next Header (RFC 8200 §4.7); ends the walk.
pub const NH_NONE: u8 = 59;
/// IPv6 Destination Options header (RFC 8200 §4.6).
pub const NH_DEST_OPTS: u8 = 60;

const ETH_HEADER_LEN: usize = 14;
const VLAN_TAG_LEN: usize = 4;
const ARP_LEN: usize = 28;
const IPV4_MIN_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;

/// Why [`parse_frame`] rejected a frame. `#[repr(u8)]` so it can index per-reason drop
/// counters (`err as usize`, all values `< ParseError::ALL.len()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ParseError {
    /// Shorter than the 14-byte Ethernet header.
    TruncatedEthernet = 0,
    /// The innermost EtherType is not ARP, IPv4 or IPv6 (this includes 802.3 length values).
    UnknownEtherType = 1,
    /// More than [`MAX_VLAN_DEPTH`] VLAN tags.
    VlanTooDeep = 2,
    /// A TPID announced a VLAN tag that the frame is too short to hold.
    TruncatedVlan = 3,
    /// Shorter than the 28-byte Ethernet/IPv4 ARP packet.
    TruncatedArp = 4,
    /// ARP for something other than Ethernet/IPv4 (htype 1, ptype 0x0800, hlen 6, plen 4), or
    /// an operation other than request (1) or reply (2).
    BadArp = 5,
    /// Shorter than the IPv4 header (20 bytes, or IHL*4 when options are present).
    TruncatedIpv4 = 6,
    /// The IP version nibble does not match the EtherType.
    BadIpVersion = 7,
    /// IPv4 IHL below 5.
    BadIhl = 8,
    /// IPv4 total length below IHL*4 or above the bytes present.
    BadIpv4TotalLength = 9,
    /// IPv4 header checksum does not verify.
    BadIpv4Checksum = 10,
    /// Shorter than the 40-byte IPv6 header.
    TruncatedIpv6 = 11,
    /// IPv6 payload length runs past the bytes present.
    BadIpv6PayloadLength = 12,
    /// More than [`MAX_IPV6_EXT_HEADERS`] IPv6 extension headers.
    Ipv6ExtChainTooLong = 13,
    /// The fixed L4 header (TCP 20 bytes, UDP 8, ICMP/ICMPv6 8) does not fit in the IP
    /// payload.
    TruncatedL4 = 14,
    /// UDP length field below 8 or above the bytes present in the IP payload.
    BadL4Length = 15,
    /// An IPv6 extension header runs past the IPv6 payload.
    TruncatedIpv6Ext = 16,
    /// TCP data offset below 5 (20 bytes), or beyond the end of the segment.
    BadTcpDataOffset = 17,
    /// Frame longer than [`MAX_FRAME_LEN`].
    FrameTooLong = 18,
}

impl ParseError {
    /// Number of variants.
    pub const COUNT: usize = 19;

    /// Every variant, in discriminant order (`ALL[e as usize] == e`).
    pub const ALL: [ParseError; ParseError::COUNT] = [
        ParseError::TruncatedEthernet,
        ParseError::UnknownEtherType,
        ParseError::VlanTooDeep,
        ParseError::TruncatedVlan,
        ParseError::TruncatedArp,
        ParseError::BadArp,
        ParseError::TruncatedIpv4,
        ParseError::BadIpVersion,
        ParseError::BadIhl,
        ParseError::BadIpv4TotalLength,
        ParseError::BadIpv4Checksum,
        ParseError::TruncatedIpv6,
        ParseError::BadIpv6PayloadLength,
        ParseError::Ipv6ExtChainTooLong,
        ParseError::TruncatedL4,
        ParseError::BadL4Length,
        ParseError::TruncatedIpv6Ext,
        ParseError::BadTcpDataOffset,
        ParseError::FrameTooLong,
    ];

    /// The variant's name in snake_case, for counters and logs.
    pub const fn as_str(&self) -> &'static str {
        match self {
            ParseError::TruncatedEthernet => "truncated_ethernet",
            ParseError::UnknownEtherType => "unknown_ether_type",
            ParseError::VlanTooDeep => "vlan_too_deep",
            ParseError::TruncatedVlan => "truncated_vlan",
            ParseError::TruncatedArp => "truncated_arp",
            ParseError::BadArp => "bad_arp",
            ParseError::TruncatedIpv4 => "truncated_ipv4",
            ParseError::BadIpVersion => "bad_ip_version",
            ParseError::BadIhl => "bad_ihl",
            ParseError::BadIpv4TotalLength => "bad_ipv4_total_length",
            ParseError::BadIpv4Checksum => "bad_ipv4_checksum",
            ParseError::TruncatedIpv6 => "truncated_ipv6",
            ParseError::BadIpv6PayloadLength => "bad_ipv6_payload_length",
            ParseError::Ipv6ExtChainTooLong => "ipv6_ext_chain_too_long",
            ParseError::TruncatedL4 => "truncated_l4",
            ParseError::BadL4Length => "bad_l4_length",
            ParseError::TruncatedIpv6Ext => "truncated_ipv6_ext",
            ParseError::BadTcpDataOffset => "bad_tcp_data_offset",
            ParseError::FrameTooLong => "frame_too_long",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for ParseError {}

/// Summary of one frame, produced by [`parse_frame`]. Small, `Copy`, holds no references:
/// offsets index the frame that was parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// Number of VLAN tags (0..=[`MAX_VLAN_DEPTH`]).
    pub vlan_depth: u8,
    /// VLAN id (12 bits) of the outermost tag, if any.
    pub outer_vlan: Option<u16>,
    /// VLAN id of the second tag (the C-tag of a QinQ frame), if any.
    pub inner_vlan: Option<u16>,
    /// The innermost EtherType (after all tags): `Arp`, `Ipv4` or `Ipv6`.
    pub ethertype: EthernetProtocol,
    /// Byte offset of the L3 (ARP / IP) header from the start of the frame:
    /// `14 + 4 * vlan_depth`.
    pub l3_offset: u16,
    /// Length in bytes of the L3 packet: the IPv4 total length, 40 + the IPv6 payload length,
    /// or 28 for ARP. `l3_offset + l3_len <= frame.len()`; any rest is Ethernet padding.
    pub l3_len: u16,
    /// The L3 header's fields.
    pub l3: L3,
    /// The L4 header's fields; `None` for ARP, for non-first fragments and for IPv6 No Next
    /// Header.
    pub l4: Option<L4Info>,
}

/// The L3 part of a [`Parsed`] frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L3 {
    /// An Ethernet/IPv4 ARP packet (RFC 826).
    Arp(ArpInfo),
    /// An IPv4 packet.
    Ipv4(Ipv4Info),
    /// An IPv6 packet.
    Ipv6(Ipv6Info),
}

/// Fields of an Ethernet/IPv4 ARP packet (RFC 826).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpInfo {
    /// Request (1) or reply (2); never `Unknown`.
    pub operation: ArpOperation,
    /// Sender hardware address.
    pub sender_mac: MacAddr,
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address (all zero in requests).
    pub target_mac: MacAddr,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

/// Fields of an IPv4 header (RFC 791).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Info {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Header length in bytes (IHL * 4, 20..=60).
    pub header_len: u8,
    /// Total length in bytes (header + payload), as in the header.
    pub total_len: u16,
    /// Time to live.
    pub ttl: u8,
    /// Protocol number of the payload.
    pub protocol: u8,
    /// The DSCP (high 6 bits) and ECN (low 2 bits) byte.
    pub dscp_ecn: u8,
    /// Identification field.
    pub ident: u16,
    /// Whether IHL > 5.
    pub has_options: bool,
    /// The offset within the IPv4 header of the first malformed option, if any: the
    /// parameter problem pointer (RFC 792). Such a packet must be answered with a parameter
    /// problem and dropped, never forwarded.
    pub option_problem: Option<u8>,
    /// Whether a loose or strict source route option (131, 137) is present (RFC 7126 §4.3,
    /// §4.4: dropped by default).
    pub source_routed: bool,
    /// The Don't Fragment flag.
    pub dont_fragment: bool,
    /// Whether this is a fragment: More Fragments set or fragment offset != 0.
    pub is_fragment: bool,
    /// Whether this is the first fragment of a fragmented packet (a fragment with offset 0).
    /// `false` for unfragmented packets.
    pub is_first_fragment: bool,
    /// Fragment offset in 8-byte units.
    pub frag_offset: u16,
}

/// Fields of an IPv6 header (RFC 8200) and the result of walking its extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Info {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Payload length in bytes (everything after the 40-byte fixed header).
    pub payload_len: u16,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class (DSCP + ECN).
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
    /// The upper-layer protocol found after the extension headers (for a non-first fragment:
    /// the fragment header's next header; 50 for ESP, 59 for No Next Header).
    pub next_header: u8,
    /// Number of extension headers walked (0..=[`MAX_IPV6_EXT_HEADERS`]).
    pub ext_headers: u8,
    /// Byte offset from the frame start of the upper-layer header (for a non-first fragment:
    /// of the fragment data).
    pub l4_offset: u16,
    /// Whether a fragment header with offset != 0 or M set was found.
    pub is_fragment: bool,
    /// Whether that fragment header has offset 0 (the first fragment). `false` when
    /// unfragmented.
    pub is_first_fragment: bool,
}

/// The L4 part of a [`Parsed`] frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L4Info {
    /// Byte offset of the L4 header from the frame start.
    pub l4_offset: u16,
    /// The header's fields.
    pub header: L4,
}

/// Fields of the L4 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// TCP (protocol 6).
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Flags byte (byte 13): CWR 0x80, ECE 0x40, URG 0x20, ACK 0x10, PSH 0x08, RST 0x04,
        /// SYN 0x02, FIN 0x01.
        flags: u8,
        /// Header length in bytes (data offset * 4).
        header_len: u8,
    },
    /// UDP (protocol 17).
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// The length field: header + payload, in bytes (8..=IP payload length).
        length: u16,
    },
    /// ICMP (protocol 1, over IPv4).
    Icmpv4 {
        /// Message type.
        icmp_type: u8,
        /// Message code.
        icmp_code: u8,
        /// Bytes 4..6 of the header: the identifier of echo / echo reply messages.
        ident: u16,
    },
    /// ICMPv6 (next header 58, over IPv6).
    Icmpv6 {
        /// Message type.
        icmp_type: u8,
        /// Message code.
        icmp_code: u8,
        /// Bytes 4..6 of the header: the identifier of echo request / reply messages.
        ident: u16,
    },
    /// Any other protocol; nothing past the protocol number is read.
    Other {
        /// Protocol number / next header.
        protocol: u8,
    },
}

/// TCP flag bits of [`L4::Tcp::flags`].
pub mod tcp_flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer field is significant.
    pub const URG: u8 = 0x20;
    /// ECN-Echo (RFC 3168).
    pub const ECE: u8 = 0x40;
    /// Congestion Window Reduced (RFC 3168).
    pub const CWR: u8 = 0x80;
}

impl L4 {
    /// The IP protocol number.
    pub const fn protocol(&self) -> u8 {
        match self {
            L4::Tcp { .. } => PROTO_TCP,
            L4::Udp { .. } => PROTO_UDP,
            L4::Icmpv4 { .. } => PROTO_ICMP,
            L4::Icmpv6 { .. } => PROTO_ICMPV6,
            L4::Other { protocol } => *protocol,
        }
    }

    /// `(src_port, dst_port)` for TCP and UDP.
    pub const fn ports(&self) -> Option<(u16, u16)> {
        match self {
            L4::Tcp { src_port, dst_port, .. } | L4::Udp { src_port, dst_port, .. } => {
                Some((*src_port, *dst_port))
            }
            _ => None,
        }
    }
}

impl Parsed {
    /// The IPv4 fields, if this is IPv4.
    pub const fn ipv4(&self) -> Option<&Ipv4Info> {
        match &self.l3 {
            L3::Ipv4(v4) => Some(v4),
            _ => None,
        }
    }

    /// The IPv6 fields, if this is IPv6.
    pub const fn ipv6(&self) -> Option<&Ipv6Info> {
        match &self.l3 {
            L3::Ipv6(v6) => Some(v6),
            _ => None,
        }
    }

    /// The ARP fields, if this is ARP.
    pub const fn arp(&self) -> Option<&ArpInfo> {
        match &self.l3 {
            L3::Arp(arp) => Some(arp),
            _ => None,
        }
    }

    /// Whether this is an IP fragment that does not carry the L4 header.
    pub const fn is_non_first_fragment(&self) -> bool {
        match &self.l3 {
            L3::Arp(_) => false,
            L3::Ipv4(v4) => v4.is_fragment && !v4.is_first_fragment,
            L3::Ipv6(v6) => v6.is_fragment && !v6.is_first_fragment,
        }
    }

    /// Whether this is an IP fragment (first or not).
    pub const fn is_fragment(&self) -> bool {
        match &self.l3 {
            L3::Arp(_) => false,
            L3::Ipv4(v4) => v4.is_fragment,
            L3::Ipv6(v6) => v6.is_fragment,
        }
    }

    /// Byte offset one past the end of the L3 packet (`l3_offset + l3_len`): where Ethernet
    /// padding, if any, starts.
    pub const fn l3_end(&self) -> usize {
        self.l3_offset as usize + self.l3_len as usize
    }

    /// Byte offset where the upper-layer data starts: the L4 header for IP (the fragment
    /// data for non-first fragments), `None` for ARP.
    pub const fn upper_layer_offset(&self) -> Option<usize> {
        match &self.l3 {
            L3::Arp(_) => None,
            L3::Ipv4(v4) => Some(self.l3_offset as usize + v4.header_len as usize),
            L3::Ipv6(v6) => Some(v6.l4_offset as usize),
        }
    }
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// `N` bytes of `buf` at `off`, or `None`.
#[inline(always)]
fn chunk<const N: usize>(buf: &[u8], off: usize) -> Option<&[u8; N]> {
    buf.get(off..)?.first_chunk::<N>()
}

/// `x` as `u16`, saturating. Every value passed is already bounded by [`MAX_FRAME_LEN`].
#[inline(always)]
fn to_u16(x: usize) -> u16 {
    u16::try_from(x).unwrap_or(u16::MAX)
}

/// Classifies one Ethernet frame (without FCS). See the [module docs](self) for what is
/// validated. Never panics, never allocates.
pub fn parse_frame(frame: &[u8]) -> Result<Parsed, ParseError> {
    if frame.len() > MAX_FRAME_LEN {
        return Err(ParseError::FrameTooLong);
    }
    let Some(eth) = frame.first_chunk::<ETH_HEADER_LEN>() else {
        return Err(ParseError::TruncatedEthernet);
    };
    let mut ethertype = be16([eth[12], eth[13]]);
    let mut off = ETH_HEADER_LEN;
    let mut vlan_depth = 0u8;
    let mut outer_vlan = None;
    let mut inner_vlan = None;
    while is_vlan_tpid(ethertype) {
        if vlan_depth == MAX_VLAN_DEPTH {
            return Err(ParseError::VlanTooDeep);
        }
        let Some(tag) = chunk::<VLAN_TAG_LEN>(frame, off) else {
            return Err(ParseError::TruncatedVlan);
        };
        let vid = be16([tag[0], tag[1]]) & VID_MAX;
        if vlan_depth == 0 {
            outer_vlan = Some(vid);
        } else {
            inner_vlan = Some(vid);
        }
        vlan_depth += 1;
        ethertype = be16([tag[2], tag[3]]);
        off += VLAN_TAG_LEN;
    }
    let ethertype = EthernetProtocol::from(ethertype);
    let (l3, l3_len, l4) = match ethertype {
        EthernetProtocol::Ipv4 => parse_ipv4(frame, off)?,
        EthernetProtocol::Ipv6 => parse_ipv6(frame, off)?,
        EthernetProtocol::Arp => (L3::Arp(parse_arp(frame, off)?), ARP_LEN, None),
        EthernetProtocol::Unknown(_) => return Err(ParseError::UnknownEtherType),
    };
    Ok(Parsed {
        vlan_depth,
        outer_vlan,
        inner_vlan,
        ethertype,
        l3_offset: to_u16(off),
        l3_len: to_u16(l3_len),
        l3,
        l4,
    })
}

#[inline(always)]
fn parse_arp(frame: &[u8], off: usize) -> Result<ArpInfo, ParseError> {
    let Some(a) = chunk::<ARP_LEN>(frame, off) else {
        return Err(ParseError::TruncatedArp);
    };
    if a[..6] != [0x00, 0x01, 0x08, 0x00, 6, 4] {
        return Err(ParseError::BadArp);
    }
    let operation = match be16([a[6], a[7]]) {
        1 => ArpOperation::Request,
        2 => ArpOperation::Reply,
        _ => return Err(ParseError::BadArp),
    };
    Ok(ArpInfo {
        operation,
        sender_mac: MacAddr([a[8], a[9], a[10], a[11], a[12], a[13]]),
        sender_ip: Ipv4Addr::new(a[14], a[15], a[16], a[17]),
        target_mac: MacAddr([a[18], a[19], a[20], a[21], a[22], a[23]]),
        target_ip: Ipv4Addr::new(a[24], a[25], a[26], a[27]),
    })
}

type L3Result = Result<(L3, usize, Option<L4Info>), ParseError>;

#[inline(always)]
fn parse_ipv4(frame: &[u8], off: usize) -> L3Result {
    let rest = frame.get(off..).unwrap_or_default();
    let Some(h) = rest.first_chunk::<IPV4_MIN_HEADER_LEN>() else {
        return Err(ParseError::TruncatedIpv4);
    };
    if h[0] >> 4 != 4 {
        return Err(ParseError::BadIpVersion);
    }
    let header_len = usize::from(h[0] & 0x0f) * 4;
    if header_len < IPV4_MIN_HEADER_LEN {
        return Err(ParseError::BadIhl);
    }
    let Some(header) = rest.get(..header_len) else {
        return Err(ParseError::TruncatedIpv4);
    };
    let total_len = usize::from(be16([h[2], h[3]]));
    if total_len < header_len || total_len > rest.len() {
        return Err(ParseError::BadIpv4TotalLength);
    }
    let header_ok = if header_len == IPV4_MIN_HEADER_LEN {
        // Common case, unrolled: ten 16-bit words.
        let mut acc: u64 = 0;
        for i in 0..10 {
            acc += u64::from(be16([h[2 * i], h[2 * i + 1]]));
        }
        checksum::fold(acc) == 0xffff
    } else {
        checksum::sum(header) == 0xffff
    };
    if !header_ok {
        return Err(ParseError::BadIpv4Checksum);
    }
    let flags_frag = be16([h[6], h[7]]);
    let more_fragments = flags_frag & 0x2000 != 0;
    let frag_offset = flags_frag & 0x1fff;
    let is_fragment = more_fragments || frag_offset != 0;
    let protocol = h[9];
    let options = walk_ipv4_options(&header[IPV4_MIN_HEADER_LEN..]);
    let info = Ipv4Info {
        src: Ipv4Addr::new(h[12], h[13], h[14], h[15]),
        dst: Ipv4Addr::new(h[16], h[17], h[18], h[19]),
        header_len: h[0].wrapping_shl(2) & 0x3c,
        total_len: to_u16(total_len),
        ttl: h[8],
        protocol,
        dscp_ecn: h[1],
        ident: be16([h[4], h[5]]),
        has_options: header_len > IPV4_MIN_HEADER_LEN,
        option_problem: options.problem,
        source_routed: options.source_routed,
        dont_fragment: flags_frag & 0x4000 != 0,
        is_fragment,
        is_first_fragment: is_fragment && frag_offset == 0,
        frag_offset,
    };
    let l4 = if frag_offset == 0 {
        let end = off + total_len;
        Some(parse_l4(frame, off + header_len, end, protocol, false, is_fragment)?)
    } else {
        None
    };
    Ok((L3::Ipv4(info), total_len, l4))
}

/// What [`walk_ipv4_options`] found.
#[derive(Clone, Copy, Default)]
struct Ipv4Options {
    problem: Option<u8>,
    source_routed: bool,
}

/// Option types with a pointer byte after the length: record route (7), loose and strict
/// source route (131, 137), whose pointer is at least 4, and timestamp (68), at least 5
/// (RFC 791).
const fn option_pointer_min(kind: u8) -> Option<u8> {
    match kind {
        7 | 131 | 137 => Some(4),
        68 => Some(5),
        _ => None,
    }
}

/// Walks the options after the 20-byte IPv4 header (RFC 791): end of list (0) stops the walk,
/// no-operation (1) is one byte, every other option has a length byte that must be at least 2
/// and stay inside the header. Offsets are reported from the start of the IPv4 header, as
/// a parameter problem's pointer is, the way Linux's `ip_options_compile` reports them.
#[inline]
fn walk_ipv4_options(opts: &[u8]) -> Ipv4Options {
    let mut found = Ipv4Options::default();
    let mut at = 0usize;
    while let Some(&kind) = opts.get(at) {
        let here = to_u8(IPV4_MIN_HEADER_LEN + at);
        match kind {
            0 => break,
            1 => {
                at += 1;
                continue;
            }
            _ => {}
        }
        let Some(&len) = opts.get(at + 1) else {
            found.problem = Some(here);
            break;
        };
        let len_bytes = usize::from(len);
        if len_bytes < 2 || at + len_bytes > opts.len() {
            found.problem = Some(here);
            break;
        }
        if let Some(min) = option_pointer_min(kind) {
            match opts.get(at + 2) {
                Some(&ptr) if len_bytes >= 3 && ptr >= min => {}
                _ => {
                    found.problem = Some(here.saturating_add(if len_bytes >= 3 { 2 } else { 1 }));
                    break;
                }
            }
        }
        if kind == 131 || kind == 137 {
            found.source_routed = true;
        }
        at += len_bytes;
    }
    found
}

/// `x` as `u8`; every value passed is below 60 (the longest IPv4 header).
#[inline(always)]
fn to_u8(x: usize) -> u8 {
    u8::try_from(x).unwrap_or(u8::MAX)
}

#[inline(always)]
fn parse_ipv6(frame: &[u8], off: usize) -> L3Result {
    let rest = frame.get(off..).unwrap_or_default();
    let Some(h) = rest.first_chunk::<IPV6_HEADER_LEN>() else {
        return Err(ParseError::TruncatedIpv6);
    };
    if h[0] >> 4 != 6 {
        return Err(ParseError::BadIpVersion);
    }
    let payload_len = usize::from(be16([h[4], h[5]]));
    let l3_len = IPV6_HEADER_LEN + payload_len;
    if l3_len > rest.len() {
        return Err(ParseError::BadIpv6PayloadLength);
    }
    let end = off + l3_len;
    // Only look at bytes inside the IPv6 packet, not at Ethernet padding.
    let packet = frame.get(..end).unwrap_or_default();
    let mut next_header = h[6];
    let mut cur = off + IPV6_HEADER_LEN;
    let mut ext_headers = 0u8;
    let mut is_fragment = false;
    let mut is_first_fragment = false;
    let mut non_first = false;
    while let NH_HOP_BY_HOP | NH_ROUTING | NH_FRAGMENT | NH_DEST_OPTS | NH_AH = next_header {
        if usize::from(ext_headers) == MAX_IPV6_EXT_HEADERS {
            return Err(ParseError::Ipv6ExtChainTooLong);
        }
        ext_headers += 1;
        // Every extension header is at least 8 bytes.
        let Some(e) = chunk::<8>(packet, cur) else {
            return Err(ParseError::TruncatedIpv6Ext);
        };
        let len = match next_header {
            NH_FRAGMENT => 8,
            NH_AH => (usize::from(e[1]) + 2) * 4,
            _ => (usize::from(e[1]) + 1) * 8,
        };
        if cur + len > end {
            return Err(ParseError::TruncatedIpv6Ext);
        }
        let this = next_header;
        next_header = e[0];
        cur += len;
        if this == NH_FRAGMENT {
            // Fragment header: offset (13 bits) << 3 | res (2) | M (1).
            let frag = be16([e[2], e[3]]);
            let offset = frag >> 3;
            if offset != 0 || frag & 1 != 0 {
                is_fragment = true;
                is_first_fragment = offset == 0;
            }
            if offset != 0 {
                non_first = true;
                break;
            }
        }
    }
    let info = Ipv6Info {
        src: Ipv6Addr::from(read16(h, 8)),
        dst: Ipv6Addr::from(read16(h, 24)),
        payload_len: to_u16(payload_len),
        hop_limit: h[7],
        traffic_class: (h[0] << 4) | (h[1] >> 4),
        flow_label: u32::from_be_bytes([0, h[1] & 0x0f, h[2], h[3]]),
        next_header,
        ext_headers,
        l4_offset: to_u16(cur),
        is_fragment,
        is_first_fragment,
    };
    let l4 = if non_first || next_header == NH_NONE {
        None
    } else {
        Some(parse_l4(frame, cur, end, next_header, true, is_fragment)?)
    };
    Ok((L3::Ipv6(info), l3_len, l4))
}

#[inline(always)]
fn read16(h: &[u8; IPV6_HEADER_LEN], at: usize) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&h[at..at + 16]);
    out
}

#[inline(always)]
fn parse_l4(
    frame: &[u8],
    start: usize,
    end: usize,
    protocol: u8,
    ipv6: bool,
    fragment: bool,
) -> Result<L4Info, ParseError> {
    let seg = frame.get(start..end).unwrap_or_default();
    let header = match protocol {
        PROTO_TCP => {
            let Some(t) = seg.first_chunk::<20>() else {
                return Err(ParseError::TruncatedL4);
            };
            let header_len = usize::from(t[12] >> 4) * 4;
            if header_len < 20 {
                return Err(ParseError::BadTcpDataOffset);
            }
            // The header's own length claim is what is wrong, not the packet's length.
            if header_len > seg.len() {
                return Err(ParseError::BadTcpDataOffset);
            }
            L4::Tcp {
                src_port: be16([t[0], t[1]]),
                dst_port: be16([t[2], t[3]]),
                flags: t[13],
                header_len: (t[12] >> 2) & 0x3c,
            }
        }
        PROTO_UDP => {
            let Some(u) = seg.first_chunk::<8>() else {
                return Err(ParseError::TruncatedL4);
            };
            let length = be16([u[4], u[5]]);
            // A first fragment holds only part of the datagram the length describes.
            if length < 8 || (!fragment && usize::from(length) > seg.len()) {
                return Err(ParseError::BadL4Length);
            }
            L4::Udp { src_port: be16([u[0], u[1]]), dst_port: be16([u[2], u[3]]), length }
        }
        PROTO_ICMP if !ipv6 => {
            let Some(i) = seg.first_chunk::<8>() else {
                return Err(ParseError::TruncatedL4);
            };
            L4::Icmpv4 { icmp_type: i[0], icmp_code: i[1], ident: be16([i[4], i[5]]) }
        }
        PROTO_ICMPV6 if ipv6 => {
            let Some(i) = seg.first_chunk::<8>() else {
                return Err(ParseError::TruncatedL4);
            };
            L4::Icmpv6 { icmp_type: i[0], icmp_code: i[1], ident: be16([i[4], i[5]]) }
        }
        protocol => L4::Other { protocol },
    };
    Ok(L4Info { l4_offset: to_u16(start), header })
}

/// What the IPv4 forwarding fast path needs from a frame, see [`ipv4_fast`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Fast {
    /// IP protocol.
    pub protocol: u8,
    /// A fragment (more fragments, or an offset): its ports cannot be translated.
    pub fragment: bool,
    /// TCP or UDP source port of an unfragmented packet, else 0.
    pub src_port: u16,
    /// TCP or UDP destination port of an unfragmented packet, else 0.
    pub dst_port: u16,
    /// TCP flags of an unfragmented TCP packet, else 0.
    pub tcp_flags: u8,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Time to live.
    pub ttl: u8,
    /// IPv4 total length, bytes.
    pub total_len: u16,
    /// The DF flag.
    pub dont_fragment: bool,
}

/// The fields [`ipv4_fast`] returns, read without checking anything but the frame's length: for
/// hints (prefetching a flow table entry), never for decisions.
#[inline(always)]
pub fn ipv4_peek(frame: &[u8]) -> Option<Ipv4Fast> {
    let b = frame.first_chunk::<38>()?;
    if b[12] != 0x08 || b[13] != 0x00 || b[14] != 0x45 {
        return None;
    }
    let h = &b[14..34];
    let flags_frag = be16([h[6], h[7]]);
    Some(Ipv4Fast {
        protocol: h[9],
        fragment: flags_frag & 0x3fff != 0,
        src_port: be16([b[34], b[35]]),
        dst_port: be16([b[36], b[37]]),
        tcp_flags: 0,
        src: Ipv4Addr::new(h[12], h[13], h[14], h[15]),
        dst: Ipv4Addr::new(h[16], h[17], h[18], h[19]),
        ttl: h[8],
        total_len: be16([h[2], h[3]]),
        dont_fragment: flags_frag & 0x4000 != 0,
    })
}

/// The common case of [`parse_frame`], checked in a few instructions: an untagged IPv4 frame
/// with a 20-byte header. Returns `Some` only when `parse_frame` would accept the frame as
/// `L3::Ipv4` with no VLAN tag and no options — the same header checksum, length and L4
/// checks — so a caller may take its fast path on `Some` and fall back to `parse_frame` on
/// `None` (anything unusual, valid or not). The property test `fast_path_agrees` holds it to
/// that.
#[inline(always)]
pub fn ipv4_fast(frame: &[u8]) -> Option<Ipv4Fast> {
    let b = frame.first_chunk::<34>()?;
    if b[12] != 0x08 || b[13] != 0x00 || b[14] != 0x45 || frame.len() > MAX_FRAME_LEN {
        return None;
    }
    let h = &b[14..34];
    let total_len = be16([h[2], h[3]]);
    let total = usize::from(total_len);
    if total < IPV4_MIN_HEADER_LEN || total > frame.len() - ETH_HEADER_LEN {
        return None;
    }
    // The header sum over five 32-bit words in native byte order, folded: a valid header sums
    // to 0xffff in either byte order (RFC 1071 section 2(B) and 2(C)).
    let w = |i: usize| {
        let mut word = [0u8; 4];
        word.copy_from_slice(&h[i..i + 4]);
        u64::from(u32::from_ne_bytes(word))
    };
    if checksum::fold(w(0) + w(4) + w(8) + w(12) + w(16)) != 0xffff {
        return None;
    }
    let flags_frag = be16([h[6], h[7]]);
    let fragment = flags_frag & 0x3fff != 0;
    let (mut src_port, mut dst_port, mut tcp_flags) = (0, 0, 0);
    if flags_frag & 0x1fff == 0 {
        // First (or only) fragment: the L4 header must be there, as parse_l4 requires.
        let payload = total - IPV4_MIN_HEADER_LEN;
        let l4 = frame.get(34..34 + payload)?;
        let ok = match h[9] {
            PROTO_TCP => {
                l4.len() >= 20 && {
                    let hl = usize::from(l4[12] >> 4) * 4;
                    hl >= 20 && hl <= l4.len()
                }
            }
            PROTO_UDP => {
                l4.len() >= 8 && {
                    let len = usize::from(be16([l4[4], l4[5]]));
                    len >= 8 && (fragment || len <= l4.len())
                }
            }
            PROTO_ICMP => l4.len() >= 8,
            _ => true,
        };
        if !ok {
            return None;
        }
        if !fragment && (h[9] == PROTO_TCP || h[9] == PROTO_UDP) {
            // Checked above: the L4 header is there.
            src_port = be16([l4[0], l4[1]]);
            dst_port = be16([l4[2], l4[3]]);
            if h[9] == PROTO_TCP {
                tcp_flags = l4[13];
            }
        }
    }
    Some(Ipv4Fast {
        protocol: h[9],
        fragment,
        src_port,
        dst_port,
        tcp_flags,
        src: Ipv4Addr::new(h[12], h[13], h[14], h[15]),
        dst: Ipv4Addr::new(h[16], h[17], h[18], h[19]),
        ttl: h[8],
        total_len,
        dont_fragment: flags_frag & 0x4000 != 0,
    })
}
