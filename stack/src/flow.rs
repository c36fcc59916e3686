//! Flow keys: the 5-tuple of an IP packet, built only from a [`Parsed`] header.
//!
//! [`FlowKey`] is compact (16-byte address arrays + a family tag, 40 bytes, `Copy`) so that
//! hashing and comparing it is a few word operations. Its fields are private: the only way to
//! get one is [`FlowKey::from_parsed`] / [`FlowKey::from_parsed_l3`] (and [`FlowKey::reversed`]
//! of one), so a key always describes a packet that passed [`parse_frame`](crate::parse_frame).

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::parse::{Parsed, L3, L4};

/// ICMPv4 echo reply type (RFC 792).
const ICMPV4_ECHO_REPLY: u8 = 0;
/// ICMPv4 echo request type (RFC 792).
const ICMPV4_ECHO_REQUEST: u8 = 8;
/// ICMPv6 echo request type (RFC 4443 §4.1).
const ICMPV6_ECHO_REQUEST: u8 = 128;
/// ICMPv6 echo reply type (RFC 4443 §4.2).
const ICMPV6_ECHO_REPLY: u8 = 129;

/// Default seed of [`FlowKey::symmetric_hash`].
pub const DEFAULT_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// The address family of a [`FlowKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Family {
    /// IPv4: only the first 4 bytes of each address are used, the rest are zero.
    V4 = 4,
    /// IPv6.
    V6 = 6,
}

/// A flow's 5-tuple: addresses, ports and IP protocol.
///
/// * TCP / UDP: the ports.
/// * ICMP / ICMPv6 echo request and reply: the echo identifier as *both* ports, so a request
///   and its reply are [`reversed`](FlowKey::reversed) keys of each other.
/// * Anything else (other ICMP types, other protocols, packets whose L4 header is not present):
///   ports 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    src: [u8; 16],
    dst: [u8; 16],
    src_port: u16,
    dst_port: u16,
    proto: u8,
    family: Family,
}

impl FlowKey {
    /// The key of an IP packet, or `None` for ARP and for non-first fragments (their ports are
    /// unknown; use [`FlowKey::from_parsed_l3`] for those).
    #[inline]
    pub fn from_parsed(parsed: &Parsed) -> Option<FlowKey> {
        if parsed.is_non_first_fragment() {
            return None;
        }
        let mut key = Self::from_parsed_l3(parsed)?;
        if let Some(l4) = &parsed.l4 {
            let (sp, dp) = match l4.header {
                L4::Tcp { src_port, dst_port, .. } | L4::Udp { src_port, dst_port, .. } => {
                    (src_port, dst_port)
                }
                L4::Icmpv4 {
                    icmp_type: ICMPV4_ECHO_REQUEST | ICMPV4_ECHO_REPLY, ident, ..
                }
                | L4::Icmpv6 {
                    icmp_type: ICMPV6_ECHO_REQUEST | ICMPV6_ECHO_REPLY, ident, ..
                } => (ident, ident),
                _ => (0, 0),
            };
            key.src_port = sp;
            key.dst_port = dp;
        }
        Some(key)
    }

    /// The 3-tuple key (addresses and protocol, ports 0) of any IP packet, fragments
    /// included; `None` for ARP.
    #[inline]
    pub fn from_parsed_l3(parsed: &Parsed) -> Option<FlowKey> {
        let mut key = FlowKey {
            src: [0; 16],
            dst: [0; 16],
            src_port: 0,
            dst_port: 0,
            proto: 0,
            family: Family::V4,
        };
        match &parsed.l3 {
            L3::Arp(_) => return None,
            L3::Ipv4(v4) => {
                key.src[..4].copy_from_slice(&v4.src.octets());
                key.dst[..4].copy_from_slice(&v4.dst.octets());
                key.proto = v4.protocol;
            }
            L3::Ipv6(v6) => {
                key.src = v6.src.octets();
                key.dst = v6.dst.octets();
                key.proto = v6.next_header;
                key.family = Family::V6;
            }
        }
        Some(key)
    }

    /// The key of the TCP or UDP packet an ICMP error quotes.
    pub fn from_quoted(q: &crate::icmp_nat::Quoted) -> Option<FlowKey> {
        let octets = |a: IpAddr| match a {
            IpAddr::V4(v4) => {
                let mut o = [0u8; 16];
                o[..4].copy_from_slice(&v4.octets());
                o
            }
            IpAddr::V6(v6) => v6.octets(),
        };
        let family = match (q.src.addr, q.dst.addr) {
            (IpAddr::V4(_), IpAddr::V4(_)) => Family::V4,
            (IpAddr::V6(_), IpAddr::V6(_)) => Family::V6,
            _ => return None,
        };
        Some(FlowKey {
            src: octets(q.src.addr),
            dst: octets(q.dst.addr),
            src_port: q.src.port,
            dst_port: q.dst.port,
            proto: q.proto,
            family,
        })
    }

    /// The key of the opposite direction: addresses and ports swapped.
    #[inline]
    pub const fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            proto: self.proto,
            family: self.family,
        }
    }

    /// The key of this flow after a translation: the packet a NAT writes from a parsed one has
    /// these addresses and ports, the same protocol and family. `None` when an address is of the
    /// other family.
    pub fn rewritten(
        &self,
        src: IpAddr,
        src_port: u16,
        dst: IpAddr,
        dst_port: u16,
    ) -> Option<FlowKey> {
        let octets = |a: IpAddr| -> Option<[u8; 16]> {
            match (a, self.family) {
                (IpAddr::V4(v4), Family::V4) => {
                    let mut o = [0u8; 16];
                    o[..4].copy_from_slice(&v4.octets());
                    Some(o)
                }
                (IpAddr::V6(v6), Family::V6) => Some(v6.octets()),
                _ => None,
            }
        };
        Some(FlowKey {
            src: octets(src)?,
            dst: octets(dst)?,
            src_port,
            dst_port,
            proto: self.proto,
            family: self.family,
        })
    }

    /// A key from its parts; `None` when the two addresses are of different families.
    pub fn new(
        src: IpAddr,
        src_port: u16,
        dst: IpAddr,
        dst_port: u16,
        proto: u8,
    ) -> Option<FlowKey> {
        let family = if src.is_ipv4() { Family::V4 } else { Family::V6 };
        let base = FlowKey { src: [0; 16], dst: [0; 16], src_port, dst_port, proto, family };
        base.rewritten(src, src_port, dst, dst_port)
    }

    /// Source address.
    pub fn src(&self) -> IpAddr {
        self.addr(&self.src)
    }

    /// An IPv4 key in two words ([`PackedV4`]); `None` for IPv6.
    #[inline]
    pub fn packed_v4(&self) -> Option<PackedV4> {
        let (src, src_port, dst, dst_port) = self.v4()?;
        Some(PackedV4::new(src, src_port, dst, dst_port, self.proto))
    }

    /// An IPv4 key's (source, source port, destination, destination port), without going
    /// through `IpAddr`; `None` for IPv6.
    #[inline]
    pub fn v4(&self) -> Option<(Ipv4Addr, u16, Ipv4Addr, u16)> {
        if self.family != Family::V4 {
            return None;
        }
        let a = |o: &[u8; 16]| Ipv4Addr::new(o[0], o[1], o[2], o[3]);
        Some((a(&self.src), self.src_port, a(&self.dst), self.dst_port))
    }

    /// Destination address.
    pub fn dst(&self) -> IpAddr {
        self.addr(&self.dst)
    }

    fn addr(&self, a: &[u8; 16]) -> IpAddr {
        match self.family {
            Family::V4 => IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(*a)),
        }
    }

    /// Source port (or echo identifier, or 0; see the type docs).
    pub const fn src_port(&self) -> u16 {
        self.src_port
    }

    /// Destination port (or echo identifier, or 0; see the type docs).
    pub const fn dst_port(&self) -> u16 {
        self.dst_port
    }

    /// IP protocol number (IPv6: the upper-layer protocol after extension headers).
    pub const fn proto(&self) -> u8 {
        self.proto
    }

    /// Address family.
    pub const fn family(&self) -> Family {
        self.family
    }

    /// A directional 32-bit hash for hash tables: cheaper than the symmetric one (no ordering
    /// of the endpoints, one multiply per word). Not for choosing workers or endpoints, where
    /// both directions must agree. A table should pick a random `seed`, so that tuples chosen
    /// by whoever sends the packets do not pile up in one place.
    #[inline]
    pub fn table_hash(&self, seed: u64) -> u32 {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        if let Some(p) = self.packed_v4() {
            return p.table_hash(seed);
        }
        let mut h = seed ^ (u64::from(self.proto) << 8 | self.family as u64);
        for w in [word(&self.src, 0), word(&self.src, 8), word(&self.dst, 0), word(&self.dst, 8)] {
            h = (h.rotate_left(5) ^ w).wrapping_mul(K);
        }
        h = (h.rotate_left(5) ^ (u64::from(self.src_port) << 16 | u64::from(self.dst_port)))
            .wrapping_mul(K);
        u32::try_from(h >> 32).unwrap_or_default()
    }

    /// [`symmetric_hash_seeded`](Self::symmetric_hash_seeded) with [`DEFAULT_SEED`].
    #[inline]
    pub fn symmetric_hash(&self) -> u32 {
        self.symmetric_hash_seeded(DEFAULT_SEED)
    }

    /// A deterministic 32-bit hash equal for a key and its [`reversed`](Self::reversed) key,
    /// so both directions of a flow land on the same worker / table bucket.
    ///
    /// The two `(address, port)` endpoints are put in a canonical order, then mixed 64 bits
    /// at a time (multiply + xor-shift, finished with the murmur3 `fmix64` finalizer) together
    /// with the protocol, family and `seed`. Not a cryptographic hash: pick a secret `seed` if
    /// an attacker may choose the tuples.
    #[inline]
    pub fn symmetric_hash_seeded(&self, seed: u64) -> u32 {
        let a = (&self.src, self.src_port);
        let b = (&self.dst, self.dst_port);
        let ((lo_addr, lo_port), (hi_addr, hi_port)) = if a <= b { (a, b) } else { (b, a) };
        let mut h = seed ^ (u64::from(self.proto) << 8 | self.family as u64);
        h = mix(h, word(lo_addr, 0));
        h = mix(h, word(lo_addr, 8));
        h = mix(h, word(hi_addr, 0));
        h = mix(h, word(hi_addr, 8));
        h = mix(h, u64::from(lo_port) << 16 | u64::from(hi_port));
        let h = fmix64(h);
        u32::try_from(h >> 32).unwrap_or_default()
            ^ u32::try_from(h & 0xffff_ffff).unwrap_or_default()
    }
}

/// An IPv4 [`FlowKey`] packed in two words, for the IPv4 fast path: built from the header
/// fields in a few instructions, compared in two, hashed with one multiply. The same flow's
/// [`FlowKey::packed_v4`] and [`FlowKey::table_hash`] agree with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct PackedV4 {
    /// Source address (high half) and destination address, as numbers.
    addrs: u64,
    /// Source port << 24 | destination port << 8 | protocol.
    rest: u64,
}

impl PackedV4 {
    /// All zero: what a free flow record holds (its owner keeps a flag that says so).
    pub const ZERO: PackedV4 = PackedV4 { addrs: 0, rest: 0 };

    /// The key of a packet from `src`:`src_port` to `dst`:`dst_port` of IP protocol `proto`.
    #[inline(always)]
    pub fn new(src: Ipv4Addr, src_port: u16, dst: Ipv4Addr, dst_port: u16, proto: u8) -> Self {
        PackedV4 {
            addrs: u64::from(u32::from(src)) << 32 | u64::from(u32::from(dst)),
            rest: u64::from(src_port) << 24 | u64::from(dst_port) << 8 | u64::from(proto),
        }
    }

    /// The key of an unfragmented TCP or UDP packet that [`ipv4_fast`](crate::parse::ipv4_fast)
    /// accepted, packed: what [`FlowKey::from_parsed`] gives for it, as
    /// [`FlowKey::packed_v4`] packs it (the fast-path proptest holds them equal).
    #[inline(always)]
    pub fn from_ipv4_fast(f: &crate::parse::Ipv4Fast) -> Option<PackedV4> {
        if f.fragment || (f.protocol != 6 && f.protocol != 17) {
            return None;
        }
        Some(PackedV4::new(f.src, f.src_port, f.dst, f.dst_port, f.protocol))
    }

    /// The key of the packet that answers this one: addresses and ports swapped.
    #[inline(always)]
    pub fn reversed(&self) -> PackedV4 {
        let ports = self.rest >> 8;
        PackedV4 {
            addrs: self.addrs.rotate_left(32),
            rest: (ports & 0xffff) << 24 | (ports >> 16) << 8 | (self.rest & 0xff),
        }
    }

    /// Source and destination address as they stand in an IPv4 header.
    #[inline(always)]
    pub(crate) fn addrs_be(&self) -> [u8; 8] {
        self.addrs.to_be_bytes()
    }

    /// Source and destination port as they stand in a TCP or UDP header.
    #[inline(always)]
    pub(crate) fn ports_be(&self) -> [u8; 4] {
        u32::try_from(self.rest >> 8 & 0xffff_ffff).unwrap_or_default().to_be_bytes()
    }

    /// Source address.
    #[inline(always)]
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::try_from(self.addrs >> 32).unwrap_or_default())
    }

    /// Destination address.
    #[inline(always)]
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::try_from(self.addrs & 0xffff_ffff).unwrap_or_default())
    }

    /// Source port.
    #[inline(always)]
    pub fn src_port(&self) -> u16 {
        u16::try_from(self.rest >> 24 & 0xffff).unwrap_or_default()
    }

    /// Destination port.
    #[inline(always)]
    pub fn dst_port(&self) -> u16 {
        u16::try_from(self.rest >> 8 & 0xffff).unwrap_or_default()
    }

    /// IP protocol.
    #[inline(always)]
    pub fn proto(&self) -> u8 {
        u8::try_from(self.rest & 0xff).unwrap_or_default()
    }

    /// [`FlowKey::table_hash`] of this key: the two words, each mixed with the seed, multiplied
    /// once (wyhash's folded multiply), a short dependency chain.
    #[inline(always)]
    pub fn table_hash(&self, seed: u64) -> u32 {
        let m = u128::from(self.addrs ^ seed ^ 0xa076_1d64_78bd_642f)
            * u128::from(self.rest ^ seed.rotate_left(32) ^ 0xe703_7ed1_a0b4_28db);
        let h = low64(m) ^ low64(m >> 64);
        u32::try_from(h >> 32).unwrap_or_default()
            ^ u32::try_from(h & 0xffff_ffff).unwrap_or_default()
    }
}

#[inline(always)]
fn word(a: &[u8; 16], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&a[at..at + 8]);
    u64::from_le_bytes(w)
}

#[inline(always)]
fn low64(x: u128) -> u64 {
    u64::try_from(x & u128::from(u64::MAX)).unwrap_or_default()
}

#[inline(always)]
fn mix(h: u64, w: u64) -> u64 {
    let x = (h ^ w).wrapping_mul(0x9fb2_1c65_1e98_df25);
    x ^ (x >> 28)
}

/// murmur3's 64-bit finalizer.
#[inline(always)]
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}
