//! The forwarding information base: routes and local addresses, built once per configuration and
//! shared read-only by every worker.

use crate::lpm::{Dir24_8, Lpm6, LpmError, NextHopId, MAX_NEXT_HOPS};
use crate::neigh::Mac;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where a route sends a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextHop {
    /// One of weir's own addresses.
    Local {
        /// The port that owns it.
        port: u8,
    },
    /// A directly connected network: the destination itself is the neighbor.
    Connected {
        /// Output port.
        port: u8,
    },
    /// Through a gateway on a connected network.
    Via {
        /// Output port.
        port: u8,
        /// The gateway's address (resolved by ARP/NDP).
        gateway: IpAddr,
    },
}

/// A port as the pipeline sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortAddrs {
    /// The port's MAC address (source of everything weir sends on it).
    pub mac: Mac,
    /// IPv4 addresses with their prefix length.
    pub ipv4: Vec<Ipv4Net>,
    /// IPv6 addresses with their prefix length.
    pub ipv6: Vec<Ipv6Net>,
    /// Largest IP packet the port sends, in bytes (excludes the Ethernet header).
    pub mtu: u16,
    /// The device at the other end uses this port's MAC too, so frames from it come from
    /// `mac`: DPDK's `net_tap` gives the kernel's TAP interface the port's own address.
    /// Elsewhere a frame from weir's own MAC is a loop or a spoof.
    pub mac_shared: bool,
}

impl PortAddrs {
    /// The MAC that no frame arriving on this port may come from, if there is one.
    #[inline(always)]
    pub fn foreign_mac(&self) -> Option<&Mac> {
        (!self.mac_shared).then_some(&self.mac)
    }
}

impl PortAddrs {
    /// The first IPv4 address, used as the source of ARP requests and ICMP errors.
    pub fn primary_v4(&self) -> Option<Ipv4Addr> {
        self.ipv4.first().map(|n| n.addr())
    }

    /// The IPv6 address to send from toward `dst`: one on the same prefix if any, else the first.
    pub fn source_v6(&self, dst: Ipv6Addr) -> Option<Ipv6Addr> {
        self.ipv6.iter().find(|n| n.contains(&dst)).or(self.ipv6.first()).map(|n| n.addr())
    }
}

/// A static route from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaticRoute {
    /// Destination prefix.
    pub prefix: IpNet,
    /// Output port.
    pub port: u8,
    /// Gateway; `None` for an on-link route.
    pub via: Option<IpAddr>,
}

/// A FIB build error.
#[derive(Debug)]
pub enum FibError {
    /// The IPv4 table could not hold the routes.
    Lpm(LpmError),
    /// A route names a port that does not exist.
    NoSuchPort(u8),
    /// More distinct next hops than the tables can name.
    TooManyNextHops,
}

impl std::fmt::Display for FibError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FibError::Lpm(e) => write!(f, "{e}"),
            FibError::NoSuchPort(p) => write!(f, "route names port {p}, which does not exist"),
            FibError::TooManyNextHops => write!(f, "more than {MAX_NEXT_HOPS} distinct next hops"),
        }
    }
}

impl std::error::Error for FibError {}

/// Routes and local addresses of both families.
pub struct Fib {
    v4: Dir24_8,
    v6: Lpm6,
    hops: Vec<NextHop>,
    ports: Vec<PortAddrs>,
    /// weir's own IPv4 addresses and the broadcast addresses of its connected prefixes,
    /// sorted: sources no packet from outside may carry (RFC 1812 §5.3.7).
    v4_reserved: Box<[u32]>,
    /// The broadcast addresses of the connected IPv4 prefixes, sorted.
    v4_broadcasts: Box<[u32]>,
    /// weir's own IPv6 addresses, sorted.
    v6_own: Box<[Ipv6Addr]>,
}

/// The directed broadcast address of `n`, if it has one (prefixes of 30 bits or fewer: /31
/// and /32 have none, RFC 3021).
fn broadcast_of(n: &Ipv4Net) -> Option<Ipv4Addr> {
    (n.prefix_len() <= 30).then(|| n.broadcast())
}

/// Whether the sorted `set` holds `x`: a short scan for the few addresses a router has, a
/// binary search past that.
#[inline(always)]
fn holds<T: Ord + Copy>(set: &[T], x: T) -> bool {
    if set.len() <= 8 {
        set.contains(&x)
    } else {
        set.binary_search(&x).is_ok()
    }
}

impl Fib {
    /// Builds the FIB: a local host route for each port address, a connected route for each
    /// port prefix, then the static routes (a more specific prefix wins; among equal prefixes the
    /// later one).
    pub fn build(ports: Vec<PortAddrs>, routes: &[StaticRoute]) -> Result<Self, FibError> {
        let mut hops: Vec<NextHop> = Vec::new();
        let mut intern = |h: NextHop| -> Result<NextHopId, FibError> {
            if let Some(i) = hops.iter().position(|x| *x == h) {
                return NextHopId::try_from(i).map_err(|_| FibError::TooManyNextHops);
            }
            if hops.len() >= MAX_NEXT_HOPS {
                return Err(FibError::TooManyNextHops);
            }
            hops.push(h);
            NextHopId::try_from(hops.len() - 1).map_err(|_| FibError::TooManyNextHops)
        };
        let mut r4: Vec<(Ipv4Net, NextHopId)> = Vec::new();
        let mut r6: Vec<(Ipv6Net, NextHopId)> = Vec::new();
        // Static routes first: connected and local routes, pushed after, win ties.
        for r in routes {
            if usize::from(r.port) >= ports.len() {
                return Err(FibError::NoSuchPort(r.port));
            }
            let hop = match r.via {
                Some(gateway) => NextHop::Via { port: r.port, gateway },
                None => NextHop::Connected { port: r.port },
            };
            let id = intern(hop)?;
            match r.prefix {
                IpNet::V4(n) => r4.push((n, id)),
                IpNet::V6(n) => r6.push((n, id)),
            }
        }
        for (i, p) in ports.iter().enumerate() {
            let port = u8::try_from(i).map_err(|_| FibError::NoSuchPort(u8::MAX))?;
            let connected = intern(NextHop::Connected { port })?;
            let local = intern(NextHop::Local { port })?;
            for n in &p.ipv4 {
                r4.push((n.trunc(), connected));
                r4.push((Ipv4Net::new(n.addr(), 32).unwrap_or(*n), local));
            }
            for n in &p.ipv6 {
                r6.push((n.trunc(), connected));
                r6.push((Ipv6Net::new(n.addr(), 128).unwrap_or(*n), local));
            }
            // Link-local on-link: fe80::/64 is connected on every port that has IPv6, but
            // with several ports only the first can own it without a scope, so it stays off.
        }
        let v4 = Dir24_8::build(&r4).map_err(FibError::Lpm)?;
        let v6 = Lpm6::build(&r6);
        let mut v4_broadcasts: Vec<u32> = ports
            .iter()
            .flat_map(|p| p.ipv4.iter().filter_map(broadcast_of))
            .map(u32::from)
            .collect();
        v4_broadcasts.sort_unstable();
        v4_broadcasts.dedup();
        let mut v4_reserved: Vec<u32> =
            ports.iter().flat_map(|p| p.ipv4.iter().map(|n| u32::from(n.addr()))).collect();
        v4_reserved.extend_from_slice(&v4_broadcasts);
        v4_reserved.sort_unstable();
        v4_reserved.dedup();
        let mut v6_own: Vec<Ipv6Addr> =
            ports.iter().flat_map(|p| p.ipv6.iter().map(|n| n.addr())).collect();
        v6_own.sort_unstable();
        v6_own.dedup();
        Ok(Fib {
            v4,
            v6,
            hops,
            ports,
            v4_reserved: v4_reserved.into(),
            v4_broadcasts: v4_broadcasts.into(),
            v6_own: v6_own.into(),
        })
    }

    /// Whether `a` is one of weir's IPv4 addresses or the broadcast address of a connected
    /// prefix: no packet from outside may come from there.
    #[inline(always)]
    pub fn is_own_or_broadcast_v4(&self, a: Ipv4Addr) -> bool {
        holds(&self.v4_reserved, u32::from(a))
    }

    /// Whether `a` is the broadcast address of a connected IPv4 prefix (a directed broadcast).
    #[inline]
    pub fn is_directed_broadcast(&self, a: Ipv4Addr) -> bool {
        holds(&self.v4_broadcasts, u32::from(a))
    }

    /// Whether `a` is one of weir's IPv6 addresses.
    #[inline]
    pub fn is_own_v6(&self, a: Ipv6Addr) -> bool {
        holds(&self.v6_own, a)
    }

    /// Whether a neighbor at `ip` may be reached through `port`: inside one of the port's
    /// connected prefixes, and a unicast host there (not weir's own address on any port, not
    /// the prefix's network or broadcast address, not multicast or unspecified). ARP and NDP
    /// claims about any other address on this port are spoofed or misdirected.
    pub fn is_on_link(&self, port: u8, ip: IpAddr) -> bool {
        let Some(p) = self.port(port) else { return false };
        match ip {
            IpAddr::V4(a) => {
                !a.is_multicast()
                    && !a.is_unspecified()
                    && !self.is_own_or_broadcast_v4(a)
                    && p.ipv4
                        .iter()
                        .any(|n| n.contains(&a) && (n.prefix_len() > 30 || a != n.network()))
            }
            IpAddr::V6(a) => {
                !a.is_multicast()
                    && !a.is_unspecified()
                    && !self.is_own_v6(a)
                    && p.ipv6.iter().any(|n| n.contains(&a))
            }
        }
    }

    /// The next hop for an IPv4 destination.
    #[inline(always)]
    pub fn lookup_v4(&self, dst: Ipv4Addr) -> Option<NextHop> {
        self.v4.lookup(dst).and_then(|i| self.hops.get(usize::from(i)).copied())
    }

    /// The next hop for an IPv6 destination.
    #[inline]
    pub fn lookup_v6(&self, dst: Ipv6Addr) -> Option<NextHop> {
        self.v6.lookup(dst).and_then(|i| self.hops.get(usize::from(i)).copied())
    }

    /// The ports, indexed by port number.
    pub fn ports(&self) -> &[PortAddrs] {
        &self.ports
    }

    /// One port.
    #[inline]
    pub fn port(&self, port: u8) -> Option<&PortAddrs> {
        self.ports.get(usize::from(port))
    }

    /// Whether `ip` is one of `port`'s addresses.
    pub fn is_local_on(&self, port: u8, ip: IpAddr) -> bool {
        self.port(port).is_some_and(|p| match ip {
            IpAddr::V4(a) => p.ipv4.iter().any(|n| n.addr() == a),
            IpAddr::V6(a) => p.ipv6.iter().any(|n| n.addr() == a),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> Vec<PortAddrs> {
        vec![
            PortAddrs {
                mac: [2, 0, 0, 0, 0, 1],
                ipv4: vec!["198.18.1.1/24".parse().unwrap()],
                ipv6: vec!["2001:db8:1::1/64".parse().unwrap()],
                mtu: 1500,
                mac_shared: false,
            },
            PortAddrs {
                mac: [2, 0, 0, 0, 0, 2],
                ipv4: vec!["198.18.2.1/24".parse().unwrap()],
                ipv6: vec!["2001:db8:2::1/64".parse().unwrap()],
                mtu: 1500,
                mac_shared: false,
            },
        ]
    }

    #[test]
    fn local_connected_and_static() {
        let routes = [StaticRoute {
            prefix: "198.19.0.0/16".parse().unwrap(),
            port: 1,
            via: Some("198.18.2.2".parse().unwrap()),
        }];
        let fib = Fib::build(ports(), &routes).unwrap();
        assert_eq!(fib.lookup_v4("198.18.1.1".parse().unwrap()), Some(NextHop::Local { port: 0 }));
        assert_eq!(
            fib.lookup_v4("198.18.1.7".parse().unwrap()),
            Some(NextHop::Connected { port: 0 })
        );
        assert_eq!(
            fib.lookup_v4("198.19.3.3".parse().unwrap()),
            Some(NextHop::Via { port: 1, gateway: "198.18.2.2".parse().unwrap() })
        );
        assert_eq!(fib.lookup_v4("192.0.2.1".parse().unwrap()), None);
        assert_eq!(
            fib.lookup_v6("2001:db8:2::1".parse().unwrap()),
            Some(NextHop::Local { port: 1 })
        );
        assert_eq!(
            fib.lookup_v6("2001:db8:2::9".parse().unwrap()),
            Some(NextHop::Connected { port: 1 })
        );
    }

    #[test]
    fn own_broadcast_and_on_link_addresses() {
        let fib = Fib::build(ports(), &[]).unwrap();
        let v4 = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(fib.is_own_or_broadcast_v4(v4("198.18.1.1")));
        assert!(fib.is_own_or_broadcast_v4(v4("198.18.2.255")));
        assert!(!fib.is_own_or_broadcast_v4(v4("198.18.2.2")));
        assert!(fib.is_directed_broadcast(v4("198.18.1.255")));
        assert!(!fib.is_directed_broadcast(v4("198.18.1.1")));
        assert!(fib.is_own_v6("2001:db8:2::1".parse().unwrap()));
        assert!(fib.is_on_link(0, ip("198.18.1.7")));
        assert!(!fib.is_on_link(0, ip("198.18.2.7")), "the other port's prefix");
        for s in ["198.18.1.0", "198.18.1.255", "198.18.1.1", "198.18.2.1", "224.0.0.1"] {
            assert!(!fib.is_on_link(0, ip(s)), "{s}");
        }
        assert!(fib.is_on_link(1, ip("2001:db8:2::9")));
        assert!(!fib.is_on_link(0, ip("2001:db8:2::9")));
        assert!(!fib.is_on_link(0, ip("2001:db8:1::1")), "weir's own");
        assert!(!fib.is_on_link(0, ip("fe80::1")), "link-local: not routed, not learned");
        assert!(!fib.is_on_link(9, ip("198.18.1.7")), "no such port");
    }

    #[test]
    fn route_to_missing_port_is_rejected() {
        let routes = [StaticRoute { prefix: "0.0.0.0/0".parse().unwrap(), port: 5, via: None }];
        assert!(matches!(Fib::build(ports(), &routes), Err(FibError::NoSuchPort(5))));
    }
}
