//! Whether the kernel is using an interface: its addresses and routes, read from procfs alone.
//!
//! IPv6 addresses come from `/proc/net/if_inet6` and routes from `/proc/net/ipv6_route`. procfs
//! has no IPv4 address-to-interface table, so IPv4 addresses are the host's local addresses
//! (`/proc/net/fib_trie`, `/32 host LOCAL`) attributed to the interface of the connected route
//! (`/proc/net/route`, no gateway) that covers them; that route also gives the prefix length.

use crate::error::Result;
use crate::sysfs::Host;
use serde::Serialize;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address with its prefix length, on an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IfAddr {
    /// Interface name.
    pub iface: String,
    /// The address.
    pub addr: IpAddr,
    /// Prefix length in bits.
    pub prefix_len: u8,
}

impl IfAddr {
    /// IPv6 link-local (fe80::/10): every interface that is up has one, so it says nothing
    /// about whether the host depends on the interface.
    pub fn is_link_local(&self) -> bool {
        matches!(self.addr, IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80)
    }
}

impl fmt::Display for IfAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// A route through an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    /// Interface name.
    pub iface: String,
    /// Destination prefix.
    pub dest: IpAddr,
    /// Its length in bits.
    pub prefix_len: u8,
    /// Next hop, for routes through a gateway.
    pub gateway: Option<IpAddr>,
}

impl Route {
    /// Whether it is a default route (0.0.0.0/0 or ::/0).
    pub fn is_default(&self) -> bool {
        self.prefix_len == 0
    }

    fn contains(&self, addr: IpAddr) -> bool {
        match (self.dest, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                prefix_eq(&net.octets(), &a.octets(), self.prefix_len)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                prefix_eq(&net.octets(), &a.octets(), self.prefix_len)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_default() {
            write!(f, "default")?;
        } else {
            write!(f, "{}/{}", self.dest, self.prefix_len)?;
        }
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        Ok(())
    }
}

/// Whether the first `len` bits of two addresses agree.
fn prefix_eq(a: &[u8], b: &[u8], len: u8) -> bool {
    let len = usize::from(len);
    let (whole, rest) = (len / 8, len % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[whole] & mask == b[whole] & mask
}

/// The host's addresses and routes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetTables {
    /// Every attributed address (IPv4 and IPv6).
    pub addresses: Vec<IfAddr>,
    /// Every route through an interface (IPv4 main table and IPv6).
    pub routes: Vec<Route>,
}

/// What the kernel does with one interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KernelUse {
    /// Addresses other than IPv6 link-local.
    pub addresses: Vec<IfAddr>,
    /// IPv6 link-local addresses (reported, not counted as use).
    pub link_local: Vec<IfAddr>,
    /// Routes through it.
    pub routes: Vec<Route>,
    /// Whether one of them is a default route.
    pub default_route: bool,
}

impl KernelUse {
    /// Whether the host depends on it: an address, or a route.
    pub fn in_use(&self) -> bool {
        !self.addresses.is_empty() || !self.routes.is_empty()
    }

    /// What it carries, in words: `default route via 192.0.2.1; addresses 192.0.2.2/24`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for r in self.routes.iter().filter(|r| r.is_default()) {
            match r.gateway {
                Some(gw) => parts.push(format!("default route via {gw}")),
                None => parts.push("default route".to_owned()),
            }
        }
        if !self.addresses.is_empty() {
            let list: Vec<String> = self.addresses.iter().map(ToString::to_string).collect();
            parts.push(format!("addresses {}", list.join(", ")));
        }
        // Connected routes repeat the addresses; name only the others.
        let others: Vec<String> = self
            .routes
            .iter()
            .filter(|r| !r.is_default())
            .filter(|r| {
                !(r.gateway.is_none()
                    && self
                        .addresses
                        .iter()
                        .any(|a| a.prefix_len == r.prefix_len && r.contains(a.addr)))
            })
            .map(ToString::to_string)
            .collect();
        if !others.is_empty() {
            parts.push(format!("routes {}", others.join(", ")));
        }
        parts.join("; ")
    }
}

impl NetTables {
    /// Reads the tables; a missing file (no IPv6, say) is an empty table.
    pub fn read(host: &Host) -> Result<Self> {
        let route = host.read_proc("net/route")?.unwrap_or_default();
        let fib_trie = host.read_proc("net/fib_trie")?.unwrap_or_default();
        let if_inet6 = host.read_proc("net/if_inet6")?.unwrap_or_default();
        let ipv6_route = host.read_proc("net/ipv6_route")?.unwrap_or_default();
        Ok(Self::parse(&route, &fib_trie, &if_inet6, &ipv6_route))
    }

    /// Builds the tables from the text of the four procfs files.
    pub fn parse(route: &str, fib_trie: &str, if_inet6: &str, ipv6_route: &str) -> Self {
        let v4_routes = parse_route(route);
        let mut addresses = Vec::new();
        for local in parse_fib_trie_locals(fib_trie) {
            if local.is_loopback() {
                continue;
            }
            let connected = v4_routes
                .iter()
                .filter(|r| r.gateway.is_none() && r.contains(IpAddr::V4(local)))
                .max_by_key(|r| r.prefix_len);
            // An address without a connected route cannot be attributed from procfs.
            if let Some(r) = connected {
                addresses.push(IfAddr {
                    iface: r.iface.clone(),
                    addr: IpAddr::V4(local),
                    prefix_len: r.prefix_len,
                });
            }
        }
        addresses.extend(parse_if_inet6(if_inet6));
        let mut routes = v4_routes;
        routes.extend(parse_ipv6_route(ipv6_route));
        Self { addresses, routes }
    }

    /// What the kernel does with `iface`.
    pub fn usage(&self, iface: &str) -> KernelUse {
        let (link_local, addresses) = self
            .addresses
            .iter()
            .filter(|a| a.iface == iface)
            .cloned()
            .partition(IfAddr::is_link_local);
        let routes: Vec<Route> = self.routes.iter().filter(|r| r.iface == iface).cloned().collect();
        let default_route = routes.iter().any(Route::is_default);
        KernelUse { addresses, link_local, routes, default_route }
    }
}

// /proc/net/route flags (include/uapi/linux/route.h).
const RTF_UP: u32 = 0x0001;
const RTF_GATEWAY: u32 = 0x0002;
const RTF_REJECT: u32 = 0x0200;
// /proc/net/ipv6_route flags (include/uapi/linux/ipv6_route.h).
const RTF_CACHE: u32 = 0x0100_0000;
const RTF_LOCAL: u32 = 0x8000_0000;

/// Parses `/proc/net/route`: `Iface Destination Gateway Flags RefCnt Use Metric Mask …`, with
/// addresses as the hex of their in-memory (network order) bytes read as a native integer.
pub fn parse_route(text: &str) -> Vec<Route> {
    let mut routes = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let (Some(dest), Some(gw), Ok(flags), Some(mask)) =
            (proc_ipv4(f[1]), proc_ipv4(f[2]), u32::from_str_radix(f[3], 16), proc_ipv4(f[7]))
        else {
            continue;
        };
        if flags & RTF_UP == 0 || flags & RTF_REJECT != 0 {
            continue;
        }
        let Ok(prefix_len) = u8::try_from(u32::from(mask).leading_ones()) else { continue };
        routes.push(Route {
            iface: f[0].to_owned(),
            dest: IpAddr::V4(dest),
            prefix_len,
            gateway: (flags & RTF_GATEWAY != 0).then_some(IpAddr::V4(gw)),
        });
    }
    routes
}

/// An IPv4 address as /proc/net/route prints it: `%08X` of the native-endian load of the
/// network-order bytes, so the native bytes of the number are the address bytes.
fn proc_ipv4(hex: &str) -> Option<Ipv4Addr> {
    let v = u32::from_str_radix(hex, 16).ok()?;
    Some(Ipv4Addr::from(v.to_ne_bytes()))
}

/// The inverse of [`proc_ipv4`], for writing fixture files.
pub fn proc_ipv4_hex(addr: Ipv4Addr) -> String {
    format!("{:08X}", u32::from_ne_bytes(addr.octets()))
}

/// The host's local IPv4 addresses from `/proc/net/fib_trie`: a `|-- ADDR` leaf followed by a
/// `/32 host LOCAL` line. The Main and Local tables may both list one; duplicates are dropped.
pub fn parse_fib_trie_locals(text: &str) -> Vec<Ipv4Addr> {
    let mut found = Vec::new();
    let mut leaf: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(addr) = t.strip_prefix("|-- ") {
            leaf = addr.trim().parse().ok();
        } else if t.starts_with("/32 host LOCAL") {
            if let Some(a) = leaf {
                if !found.contains(&a) {
                    found.push(a);
                }
            }
        } else if !t.starts_with('/') {
            // A new node or table header: the leaf's lines are over.
            leaf = None;
        }
    }
    found
}

fn hex_ipv6(hex: &str) -> Option<Ipv6Addr> {
    if hex.len() != 32 {
        return None;
    }
    u128::from_str_radix(hex, 16).ok().map(Ipv6Addr::from)
}

/// Parses `/proc/net/if_inet6`: `ADDR IFINDEX PREFIXLEN SCOPE FLAGS IFNAME`, numbers in hex.
pub fn parse_if_inet6(text: &str) -> Vec<IfAddr> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 {
                return None;
            }
            Some(IfAddr {
                iface: f[5].to_owned(),
                addr: IpAddr::V6(hex_ipv6(f[0])?),
                prefix_len: u8::from_str_radix(f[2], 16).ok()?,
            })
        })
        .filter(|a| !matches!(a.addr, IpAddr::V6(v) if v.is_loopback()))
        .collect()
}

/// Parses `/proc/net/ipv6_route`: `DEST DLEN SRC SLEN NEXTHOP METRIC REFCNT USE FLAGS IFNAME`.
/// Left out, because every interface that is up has them: local-table entries (the host's own
/// addresses), cached routes, reject routes, fe80::/64 and multicast ff00::/8.
pub fn parse_ipv6_route(text: &str) -> Vec<Route> {
    let link_local: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0);
    let multicast: Ipv6Addr = Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0);
    let mut routes = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let (Some(dest), Ok(prefix_len), Some(next_hop), Ok(flags)) = (
            hex_ipv6(f[0]),
            u8::from_str_radix(f[1], 16),
            hex_ipv6(f[4]),
            u32::from_str_radix(f[8], 16),
        ) else {
            continue;
        };
        if flags & (RTF_LOCAL | RTF_CACHE | RTF_REJECT) != 0 || flags & RTF_UP == 0 {
            continue;
        }
        if (dest == link_local && prefix_len == 64) || (dest == multicast && prefix_len == 8) {
            continue;
        }
        routes.push(Route {
            iface: f[9].to_owned(),
            dest: IpAddr::V6(dest),
            prefix_len,
            gateway: (flags & RTF_GATEWAY != 0 && !next_hop.is_unspecified())
                .then_some(IpAddr::V6(next_hop)),
        });
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from a host with 192.0.2.2/24 and fd00::2/64 on eth0 (addresses rewritten to
    // documentation ranges where they differed).
    const ROUTE: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";
    const FIB_TRIE: &str = "\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 192.0.2.0/24 2 0 2
        +-- 192.0.2.0/30 2 0 2
           |-- 192.0.2.0
              /24 link UNICAST
           |-- 192.0.2.2
              /32 host LOCAL
        |-- 192.0.2.255
           /32 link BROADCAST
";
    const IF_INET6: &str = "\
fd000000000000000000000000000002 04 40 00 82     eth0
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
";
    const IPV6_ROUTE: &str = "\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo
fd000000000000000000000000000002 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000003 00000000 80200001     eth0
ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000003 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";

    #[test]
    fn reads_a_real_hosts_tables() {
        let t = NetTables::parse(ROUTE, FIB_TRIE, IF_INET6, IPV6_ROUTE);
        let u = t.usage("eth0");
        let addrs: Vec<String> = u.addresses.iter().map(ToString::to_string).collect();
        assert_eq!(addrs, ["192.0.2.2/24", "fd00::2/64"]);
        assert_eq!(u.link_local.len(), 1);
        assert!(u.default_route);
        let routes: Vec<String> = u.routes.iter().map(ToString::to_string).collect();
        assert_eq!(
            routes,
            ["default via 192.0.2.1", "192.0.2.0/24", "fd00::/64", "default via fd00::1"]
        );
        assert_eq!(
            u.describe(),
            "default route via 192.0.2.1; default route via fd00::1; \
             addresses 192.0.2.2/24, fd00::2/64"
        );
        assert!(!t.usage("lo").in_use());
        assert!(!t.usage("eth1").in_use());
    }

    #[test]
    fn hex_round_trips_on_this_host() {
        let a = Ipv4Addr::new(198, 18, 1, 2);
        assert_eq!(proc_ipv4(&proc_ipv4_hex(a)), Some(a));
    }

    #[test]
    fn prefix_match_respects_partial_bytes() {
        assert!(prefix_eq(&[10, 0, 0b1010_0000, 0], &[10, 0, 0b1011_1111, 9], 19));
        assert!(!prefix_eq(&[10, 0, 0b1010_0000, 0], &[10, 0, 0b1000_0000, 9], 19));
        assert!(prefix_eq(&[1, 2, 3, 4], &[9, 9, 9, 9], 0));
    }
}
