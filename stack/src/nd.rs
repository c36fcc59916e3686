//! IPv6 Neighbor Discovery (RFC 4861): neighbor solicitations and advertisements.
//!
//! [`parse_ns`] / [`parse_na`] validate a received message per RFC 4861 §7.1.1 / §7.1.2
//! (hop limit 255, ICMPv6 code 0, correct checksum, length ≥ 24, well-formed options,
//! non-multicast target and source, and the source / destination address rules) and return its
//! fields; [`write_ns`] / [`write_na`] build untagged frames with hop limit 255.

use core::fmt;
use core::net::Ipv6Addr;

use crate::checksum;
use crate::error::BuildError;
use crate::icmp::write_ipv6_header;
use crate::parse::{Parsed, L3, L4, PROTO_ICMPV6};
use crate::wire::MacAddr;

/// ICMPv6 type of a neighbor solicitation (RFC 4861 §4.3).
pub const NEIGHBOR_SOLICIT: u8 = 135;
/// ICMPv6 type of a neighbor advertisement (RFC 4861 §4.4).
pub const NEIGHBOR_ADVERT: u8 = 136;
/// Hop limit of every ND message (RFC 4861 §7.1).
pub const ND_HOP_LIMIT: u8 = 255;
/// Option type: source link-layer address (RFC 4861 §4.6.1).
pub const OPT_SOURCE_LL_ADDR: u8 = 1;
/// Option type: target link-layer address (RFC 4861 §4.6.1).
pub const OPT_TARGET_LL_ADDR: u8 = 2;
/// NA flag: the sender is a router (RFC 4861 §4.4).
pub const NA_FLAG_ROUTER: u8 = 0x80;
/// NA flag: sent in response to a solicitation (RFC 4861 §4.4).
pub const NA_FLAG_SOLICITED: u8 = 0x40;
/// NA flag: override an existing cache entry (RFC 4861 §4.4).
pub const NA_FLAG_OVERRIDE: u8 = 0x20;
/// Length of an NS or NA with one link-layer address option (8 + 16 + 8), in bytes.
pub const MESSAGE_LEN: usize = 32;
/// Length of the untagged frames [`write_ns`] and [`write_na`] write (14 + 40 + 32), in bytes.
pub const FRAME_LEN: usize = 14 + 40 + MESSAGE_LEN;

/// Minimum NS / NA length without options (RFC 4861 §7.1.1), in bytes.
const MIN_LEN: usize = 24;

/// Why [`parse_ns`] / [`parse_na`] rejected a message. `#[repr(u8)]` for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum NdError {
    /// Not an ICMPv6 message of the expected type.
    NotNd = 0,
    /// Hop limit is not 255 (the message may come from off-link).
    BadHopLimit = 1,
    /// ICMPv6 code is not 0.
    BadCode = 2,
    /// ICMPv6 checksum does not verify.
    BadChecksum = 3,
    /// Shorter than 24 bytes, or the frame is shorter than the parsed lengths.
    Truncated = 4,
    /// An option has length 0 or runs past the message.
    BadOption = 5,
    /// The target address is multicast.
    MulticastTarget = 6,
    /// A multicast source (RFC 4291 §2.7), or an NS from the unspecified address that is not
    /// sent to a solicited-node address or that carries a source link-layer address option
    /// (RFC 4861 §7.1.1).
    BadSource = 7,
    /// NA to a multicast destination with the Solicited flag set (RFC 4861 §7.1.2).
    SolicitedToMulticast = 8,
}

impl NdError {
    /// The variant's name in snake_case.
    pub const fn as_str(&self) -> &'static str {
        match self {
            NdError::NotNd => "not_nd",
            NdError::BadHopLimit => "bad_hop_limit",
            NdError::BadCode => "bad_code",
            NdError::BadChecksum => "bad_checksum",
            NdError::Truncated => "truncated",
            NdError::BadOption => "bad_option",
            NdError::MulticastTarget => "multicast_target",
            NdError::BadSource => "bad_source",
            NdError::SolicitedToMulticast => "solicited_to_multicast",
        }
    }
}

impl fmt::Display for NdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for NdError {}

/// A validated neighbor solicitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighborSolicit {
    /// The address being resolved.
    pub target: Ipv6Addr,
    /// The sender's link-layer address, from the source link-layer address option.
    pub source_ll: Option<MacAddr>,
    /// Whether the IPv6 source is the unspecified address (duplicate address detection).
    pub is_dad: bool,
}

/// A validated neighbor advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighborAdvert {
    /// The address advertised.
    pub target: Ipv6Addr,
    /// The target's link-layer address, from the target link-layer address option.
    pub target_ll: Option<MacAddr>,
    /// Router flag.
    pub router: bool,
    /// Solicited flag.
    pub solicited: bool,
    /// Override flag.
    pub override_: bool,
}

/// The solicited-node multicast address of `addr`: `ff02::1:ffXX:XXXX` with the low 24 bits
/// of `addr` (RFC 4291 §2.7.1).
pub const fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | o[13] as u16, (o[14] as u16) << 8 | o[15] as u16)
}

/// The Ethernet multicast address of IPv6 multicast `addr`: `33:33` followed by its low 32
/// bits (RFC 2464 §7).
pub const fn multicast_mac(addr: Ipv6Addr) -> MacAddr {
    let o = addr.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// Checks the RFC 4861 §7.1 rules shared by NS and NA and returns `(ipv6 info, message)`.
fn validate<'a>(
    frame: &'a [u8],
    parsed: &Parsed,
    want_type: u8,
) -> Result<(crate::parse::Ipv6Info, &'a [u8]), NdError> {
    let (L3::Ipv6(v6), Some(l4)) = (&parsed.l3, &parsed.l4) else {
        return Err(NdError::NotNd);
    };
    let L4::Icmpv6 { icmp_type, icmp_code, .. } = l4.header else {
        return Err(NdError::NotNd);
    };
    if icmp_type != want_type {
        return Err(NdError::NotNd);
    }
    if v6.hop_limit != ND_HOP_LIMIT {
        return Err(NdError::BadHopLimit);
    }
    if icmp_code != 0 {
        return Err(NdError::BadCode);
    }
    let Some(msg) = frame.get(usize::from(l4.l4_offset)..parsed.l3_end()) else {
        return Err(NdError::Truncated);
    };
    if msg.len() < MIN_LEN {
        return Err(NdError::Truncated);
    }
    let len = u32::try_from(msg.len()).unwrap_or(u32::MAX);
    let total = checksum::add(
        checksum::pseudo_header_v6(v6.src, v6.dst, PROTO_ICMPV6, len),
        checksum::sum(msg),
    );
    if total != 0xffff {
        return Err(NdError::BadChecksum);
    }
    let mut t = [0u8; 16];
    t.copy_from_slice(&msg[8..24]);
    if Ipv6Addr::from(t).is_multicast() {
        return Err(NdError::MulticastTarget);
    }
    // No packet comes from a multicast address; answering one would send a solicited
    // advertisement to a group.
    if v6.src.is_multicast() {
        return Err(NdError::BadSource);
    }
    Ok((*v6, msg))
}

/// Finds the first link-layer address option of type `want` in `opts`, checking every
/// option's length (RFC 4861 §4.6: length in 8-byte units, never 0).
fn find_ll_option(mut opts: &[u8], want: u8) -> Result<Option<MacAddr>, NdError> {
    let mut found = None;
    while !opts.is_empty() {
        let Some(&[kind, units]) = opts.first_chunk::<2>() else {
            return Err(NdError::BadOption);
        };
        let len = usize::from(units) * 8;
        if len == 0 || len > opts.len() {
            return Err(NdError::BadOption);
        }
        if kind == want && found.is_none() && len >= 8 {
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&opts[2..8]);
            found = Some(MacAddr(mac));
        }
        opts = &opts[len..];
    }
    Ok(found)
}

/// Validates and reads a neighbor solicitation (RFC 4861 §4.3, §7.1.1) from a parsed frame.
pub fn parse_ns(frame: &[u8], parsed: &Parsed) -> Result<NeighborSolicit, NdError> {
    let (v6, msg) = validate(frame, parsed, NEIGHBOR_SOLICIT)?;
    let source_ll = find_ll_option(&msg[MIN_LEN..], OPT_SOURCE_LL_ADDR)?;
    let mut t = [0u8; 16];
    t.copy_from_slice(&msg[8..24]);
    let target = Ipv6Addr::from(t);
    let is_dad = v6.src.is_unspecified();
    if is_dad && (v6.dst != solicited_node(target) || source_ll.is_some()) {
        return Err(NdError::BadSource);
    }
    Ok(NeighborSolicit { target, source_ll, is_dad })
}

/// Validates and reads a neighbor advertisement (RFC 4861 §4.4, §7.1.2) from a parsed frame.
pub fn parse_na(frame: &[u8], parsed: &Parsed) -> Result<NeighborAdvert, NdError> {
    let (v6, msg) = validate(frame, parsed, NEIGHBOR_ADVERT)?;
    let flags = msg[4];
    let solicited = flags & NA_FLAG_SOLICITED != 0;
    if solicited && v6.dst.is_multicast() {
        return Err(NdError::SolicitedToMulticast);
    }
    let target_ll = find_ll_option(&msg[MIN_LEN..], OPT_TARGET_LL_ADDR)?;
    let mut t = [0u8; 16];
    t.copy_from_slice(&msg[8..24]);
    Ok(NeighborAdvert {
        target: Ipv6Addr::from(t),
        target_ll,
        router: flags & NA_FLAG_ROUTER != 0,
        solicited,
        override_: flags & NA_FLAG_OVERRIDE != 0,
    })
}

#[allow(clippy::too_many_arguments)]
fn write_nd(
    out: &mut [u8],
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src_ip: Ipv6Addr,
    dst_ip: Ipv6Addr,
    icmp_type: u8,
    flags: u8,
    target: Ipv6Addr,
    option: u8,
) -> Result<usize, BuildError> {
    let Some(out) = out.get_mut(..FRAME_LEN) else {
        return Err(BuildError::BufferTooSmall);
    };
    out[..6].copy_from_slice(&dst_mac.0);
    out[6..12].copy_from_slice(&src_mac.0);
    out[12..14].copy_from_slice(&[0x86, 0xdd]);
    // MESSAGE_LEN is 32: fits u16.
    write_ipv6_header(&mut out[14..54], src_ip, dst_ip, 32, ND_HOP_LIMIT);
    let m = &mut out[54..];
    m[0] = icmp_type;
    m[1] = 0;
    m[2..4].copy_from_slice(&[0, 0]);
    m[4..8].copy_from_slice(&[flags, 0, 0, 0]);
    m[8..24].copy_from_slice(&target.octets());
    m[24] = option;
    m[25] = 1;
    m[26..32].copy_from_slice(&src_mac.0);
    let c = checksum::l4_checksum_v6(src_ip, dst_ip, PROTO_ICMPV6, m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    Ok(FRAME_LEN)
}

/// Writes a multicast neighbor solicitation for `target` (RFC 4861 §7.2.2) into `out`: from
/// `our_mac` / `our_ip` to the solicited-node address of `target` and its `33:33:ff:..` MAC,
/// hop limit 255, with a source link-layer address option carrying `our_mac`.
/// Returns [`FRAME_LEN`] (86) or [`BuildError::BufferTooSmall`].
pub fn write_ns(
    out: &mut [u8],
    our_mac: MacAddr,
    our_ip: Ipv6Addr,
    target: Ipv6Addr,
) -> Result<usize, BuildError> {
    let dst_ip = solicited_node(target);
    write_nd(
        out,
        our_mac,
        multicast_mac(dst_ip),
        our_ip,
        dst_ip,
        NEIGHBOR_SOLICIT,
        0,
        target,
        OPT_SOURCE_LL_ADDR,
    )
}

/// Writes a unicast neighbor solicitation for `target` to `target_mac`, the MAC weir holds for
/// it (RFC 4861 §7.3.3: the probe of a neighbor whose reachability is in doubt), with a source
/// link-layer address option. Returns [`FRAME_LEN`] (86) or [`BuildError::BufferTooSmall`].
pub fn write_probe(
    out: &mut [u8],
    our_mac: MacAddr,
    our_ip: Ipv6Addr,
    target: Ipv6Addr,
    target_mac: MacAddr,
) -> Result<usize, BuildError> {
    write_nd(
        out,
        our_mac,
        target_mac,
        our_ip,
        target,
        NEIGHBOR_SOLICIT,
        0,
        target,
        OPT_SOURCE_LL_ADDR,
    )
}

/// Writes a neighbor advertisement for `target` (RFC 4861 §7.2.4) into `out`: from `our_mac`
/// / `our_ip` to `dst_mac` / `dst_ip`, hop limit 255, flags Router (weir is a router) and
/// Override set, Solicited = `solicited`, with a target link-layer address option carrying
/// `our_mac`.
///
/// When answering an NS from the unspecified address (DAD), RFC 4861 §7.2.4 requires
/// `dst_ip` = `ff02::1` (and MAC `33:33:00:00:00:01`) and `solicited = false`.
/// Returns [`FRAME_LEN`] (86) or [`BuildError::BufferTooSmall`].
pub fn write_na(
    out: &mut [u8],
    our_mac: MacAddr,
    our_ip: Ipv6Addr,
    dst_mac: MacAddr,
    dst_ip: Ipv6Addr,
    target: Ipv6Addr,
    solicited: bool,
) -> Result<usize, BuildError> {
    let flags = NA_FLAG_ROUTER | NA_FLAG_OVERRIDE | if solicited { NA_FLAG_SOLICITED } else { 0 };
    write_nd(
        out,
        our_mac,
        dst_mac,
        our_ip,
        dst_ip,
        NEIGHBOR_ADVERT,
        flags,
        target,
        OPT_TARGET_LL_ADDR,
    )
}
