//! Longest-prefix-match tables: DIR-24-8 for IPv4, a hash table per prefix length for IPv6.
//!
//! DIR-24-8 (Gupta, Lin, McKeown, "Routing lookups in hardware at memory access speeds",
//! INFOCOM 1998; the structure DPDK's `rte_lpm` uses) answers any IPv4 lookup in one memory
//! access for prefixes up to /24 and two beyond. It was chosen over a general-purpose trie by
//! the `lpm` benchmark in `benches/pipeline.rs` (see BENCHMARKS.md). Tables are built once from a
//! route list and then only read; a route change builds a new table.

use ipnet::{Ipv4Net, Ipv6Net};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Index of a next hop in the FIB's next-hop list.
pub type NextHopId = u16;

const TBL24_ENTRIES: usize = 1 << 24;
/// Marks a tbl24 entry whose low 15 bits index a tbl8 group instead of holding a next hop.
const EXTENDED: u16 = 0x8000;
/// Largest next-hop id a DIR-24-8 entry can hold (entries store id + 1; 0 means no route).
pub const MAX_NEXT_HOPS: usize = 0x7ffe;
/// Largest number of /25../32 groups (each covers one /24 and costs 512 bytes).
pub const MAX_TBL8_GROUPS: usize = 0x7fff;

/// A route table build error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LpmError {
    /// More next hops than an entry can name.
    TooManyNextHops,
    /// More /24 blocks split by longer prefixes than tbl8 groups allow.
    TooManyLongPrefixes,
}

impl std::fmt::Display for LpmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LpmError::TooManyNextHops => write!(f, "more than {MAX_NEXT_HOPS} next hops"),
            LpmError::TooManyLongPrefixes => {
                write!(f, "more than {MAX_TBL8_GROUPS} /24 blocks hold prefixes longer than /24")
            }
        }
    }
}

impl std::error::Error for LpmError {}

/// IPv4 DIR-24-8 table. 32 MiB for tbl24, 512 bytes per tbl8 group.
pub struct Dir24_8 {
    tbl24: Box<[u16]>,
    tbl8: Vec<u16>,
}

impl Dir24_8 {
    /// Builds the table from `(prefix, next hop)` pairs. When the same prefix appears twice the
    /// later one wins.
    pub fn build(routes: &[(Ipv4Net, NextHopId)]) -> Result<Self, LpmError> {
        let mut sorted: Vec<(Ipv4Net, NextHopId)> =
            routes.iter().map(|&(n, h)| (n.trunc(), h)).collect();
        // Shorter prefixes first, so each longer one overwrites what it refines.
        sorted.sort_by_key(|(n, _)| n.prefix_len());
        let mut t =
            Dir24_8 { tbl24: vec![0u16; TBL24_ENTRIES].into_boxed_slice(), tbl8: Vec::new() };
        for (net, hop) in sorted {
            if usize::from(hop) > MAX_NEXT_HOPS {
                return Err(LpmError::TooManyNextHops);
            }
            let entry = hop + 1;
            let addr = u32::from(net.network());
            let len = net.prefix_len();
            if len <= 24 {
                let first = (addr >> 8) as usize;
                let count = 1usize << (24 - len);
                t.tbl24[first..first + count].fill(entry);
            } else {
                let i24 = (addr >> 8) as usize;
                let group = if t.tbl24[i24] & EXTENDED != 0 {
                    usize::from(t.tbl24[i24] & !EXTENDED)
                } else {
                    let group = t.tbl8.len() / 256;
                    if group >= MAX_TBL8_GROUPS {
                        return Err(LpmError::TooManyLongPrefixes);
                    }
                    let inherited = t.tbl24[i24];
                    t.tbl8.extend(std::iter::repeat_n(inherited, 256));
                    // group < MAX_TBL8_GROUPS = 0x7fff, so it fits the 15 low bits.
                    t.tbl24[i24] = EXTENDED | u16::try_from(group).unwrap_or(0);
                    group
                };
                let first = group * 256 + (addr & 0xff) as usize;
                let count = 1usize << (32 - len);
                t.tbl8[first..first + count].fill(entry);
            }
        }
        Ok(t)
    }

    /// The next hop of the longest prefix covering `addr`.
    #[inline(always)]
    pub fn lookup(&self, addr: Ipv4Addr) -> Option<NextHopId> {
        let a = u32::from(addr);
        let mut e = self.tbl24[(a >> 8) as usize];
        if e & EXTENDED != 0 {
            let i = usize::from(e & !EXTENDED) * 256 + (a & 0xff) as usize;
            e = self.tbl8.get(i).copied().unwrap_or(0);
        }
        e.checked_sub(1)
    }
}

/// IPv6 longest-prefix match: one hash table per prefix length in use, probed longest first
/// (Waldvogel et al.'s scheme without the binary search: routing tables use few lengths, so a
/// lookup is a few masked probes, where a trie walks a node per bit it branches on).
pub struct Lpm6 {
    /// (prefix length, prefixes of that length → next hop), longest first.
    by_len: Vec<(u8, rustc_hash::FxHashMap<u128, NextHopId>)>,
}

/// The network part of `a` under a `len`-bit prefix.
#[inline(always)]
fn mask6(a: u128, len: u8) -> u128 {
    match len {
        0 => 0,
        l if l >= 128 => a,
        l => a & !(u128::MAX >> l),
    }
}

impl Lpm6 {
    /// Builds the table from `(prefix, next hop)` pairs; the last of equal prefixes wins.
    pub fn build(routes: &[(Ipv6Net, NextHopId)]) -> Self {
        let mut by_len: Vec<(u8, rustc_hash::FxHashMap<u128, NextHopId>)> = Vec::new();
        for &(net, hop) in routes {
            let len = net.prefix_len();
            let key = mask6(u128::from(net.addr()), len);
            match by_len.iter_mut().find(|(l, _)| *l == len) {
                Some((_, m)) => {
                    m.insert(key, hop);
                }
                None => {
                    let mut m = rustc_hash::FxHashMap::default();
                    m.insert(key, hop);
                    by_len.push((len, m));
                }
            }
        }
        by_len.sort_by_key(|e| std::cmp::Reverse(e.0));
        Lpm6 { by_len }
    }

    /// The next hop of the longest prefix covering `addr`.
    #[inline]
    pub fn lookup(&self, addr: Ipv6Addr) -> Option<NextHopId> {
        let a = u128::from(addr);
        self.by_len.iter().find_map(|(len, m)| m.get(&mask6(a, *len)).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins_across_tbl24_and_tbl8() {
        let t = Dir24_8::build(&[
            (net("0.0.0.0/0"), 0),
            (net("198.18.0.0/15"), 1),
            (net("198.18.1.0/24"), 2),
            (net("198.18.1.128/25"), 3),
            (net("198.18.1.200/32"), 4),
        ])
        .unwrap();
        let l = |s: &str| t.lookup(s.parse().unwrap());
        assert_eq!(l("192.0.2.1"), Some(0));
        assert_eq!(l("198.19.5.5"), Some(1));
        assert_eq!(l("198.18.1.5"), Some(2));
        assert_eq!(l("198.18.1.129"), Some(3));
        assert_eq!(l("198.18.1.200"), Some(4));
        assert_eq!(l("198.18.1.201"), Some(3));
    }

    #[test]
    fn no_route_is_none() {
        let t = Dir24_8::build(&[(net("198.18.0.0/24"), 7)]).unwrap();
        assert_eq!(t.lookup("198.18.1.1".parse().unwrap()), None);
        assert_eq!(t.lookup("198.18.0.255".parse().unwrap()), Some(7));
    }

    #[test]
    fn ipv6_lpm() {
        let t = Lpm6::build(&[
            ("::/0".parse().unwrap(), 0),
            ("2001:db8::/32".parse().unwrap(), 1),
            ("2001:db8:1::/48".parse().unwrap(), 2),
        ]);
        assert_eq!(t.lookup("2001:db8:1::5".parse().unwrap()), Some(2));
        assert_eq!(t.lookup("2001:db8:2::5".parse().unwrap()), Some(1));
        assert_eq!(t.lookup("2001:db9::1".parse().unwrap()), Some(0));
    }

    /// The longest route covering `a`, by a scan of them all; the last of equal prefixes wins,
    /// as in the tables' `build`.
    fn reference<N: Into<ipnet::IpNet> + Copy>(
        routes: &[(N, NextHopId)],
        a: impl Into<std::net::IpAddr>,
    ) -> Option<NextHopId> {
        let a = a.into();
        let mut best: Option<(u8, NextHopId)> = None;
        for &(n, h) in routes {
            let n: ipnet::IpNet = n.into().trunc();
            if n.contains(&a) && best.is_none_or(|(l, _)| n.prefix_len() >= l) {
                best = Some((n.prefix_len(), h));
            }
        }
        best.map(|(_, h)| h)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn ipv6_matches_linear_reference(
            routes in proptest::collection::vec((any::<u32>(), 0u8..=128, 0u16..100), 1..40),
            probes in proptest::collection::vec(any::<u32>(), 1..200),
        ) {
            // Prefixes and probes share 2001:db8::/32 and vary in bits spread over the rest,
            // so that lookups hit prefixes of many lengths.
            let spread = |x: u32| {
                let x = u128::from(x);
                0x2001_0db8_u128 << 96 | (x & 0xff) << 88 | (x >> 8 & 0xff) << 56 | (x >> 16 & 0xff) << 24 | (x >> 24)
            };
            let routes: Vec<(Ipv6Net, NextHopId)> = routes
                .into_iter()
                .map(|(a, l, h)| (Ipv6Net::new(Ipv6Addr::from(spread(a)), l).unwrap(), h))
                .collect();
            let t = Lpm6::build(&routes);
            for p in probes {
                let a = Ipv6Addr::from(spread(p));
                prop_assert_eq!(t.lookup(a), reference(&routes, a));
            }
            for (n, _) in &routes {
                prop_assert_eq!(t.lookup(n.addr()), reference(&routes, n.addr()));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn matches_linear_reference(
            routes in proptest::collection::vec((any::<u32>(), 0u8..=32, 0u16..100), 1..40),
            probes in proptest::collection::vec(any::<u32>(), 1..200),
        ) {
            // Cluster prefixes in one /16 so lookups hit them.
            let routes: Vec<(Ipv4Net, NextHopId)> = routes
                .into_iter()
                .map(|(a, l, h)| (Ipv4Net::new(Ipv4Addr::from(0xc612_0000 | (a & 0xffff)), l).unwrap(), h))
                .collect();
            let t = Dir24_8::build(&routes).unwrap();
            for p in probes {
                let a = Ipv4Addr::from(0xc612_0000 | (p & 0xffff));
                prop_assert_eq!(t.lookup(a), reference(&routes, a));
            }
        }
    }
}
