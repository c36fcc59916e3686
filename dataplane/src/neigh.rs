//! The neighbor table: IPv4 (ARP) and IPv6 (NDP) next hops to MAC addresses.
//!
//! Each worker owns a table of fixed capacity. What one worker learns it tells the others through
//! their bounded inboxes ([`NeighborBus`]), so no table is ever shared or locked; a lost update
//! only means that worker resolves the address itself later.

use crossbeam_queue::ArrayQueue;
use rustc_hash::FxHashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// A MAC address.
pub type Mac = [u8; 6];

/// What a worker knows about one neighbor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbor {
    /// Link-layer address.
    pub mac: Mac,
    /// Port the neighbor was seen on.
    pub port: u8,
    /// When it was last confirmed, in nanoseconds of the pipeline clock.
    pub confirmed_ns: u64,
    /// Configured statically: never ages.
    pub permanent: bool,
}

/// Neighbor table timing, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighborTimers {
    /// After this long without confirmation an entry is still used but re-resolved
    /// (RFC 4861 REACHABLE_TIME is 30 s).
    pub stale_after_ns: u64,
    /// After this long an entry is forgotten.
    pub expire_after_ns: u64,
}

impl Default for NeighborTimers {
    fn default() -> Self {
        NeighborTimers { stale_after_ns: 30_000_000_000, expire_after_ns: 300_000_000_000 }
    }
}

/// Result of a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Known and fresh.
    Fresh(Mac),
    /// Known, but due for re-resolution: use it and send a request.
    Stale(Mac),
    /// Unknown or expired.
    Missing,
}

/// Slots of the direct-mapped IPv4 lookup cache in front of the table.
const V4_CACHE_SLOTS: usize = 256;

/// A cached IPv4 answer, valid while the table's generation is unchanged and before `stale_at`.
#[derive(Clone, Copy)]
struct V4CacheSlot {
    ip: u32,
    generation: u64,
    stale_at: u64,
    mac: Mac,
}

/// One worker's neighbor table.
pub struct NeighborTable {
    /// The next hops a worker forwards to are few and hot: a direct-mapped cache answers most
    /// IPv4 lookups with one multiply and one compare instead of a hash-map probe.
    v4_cache: Box<[V4CacheSlot; V4_CACHE_SLOTS]>,
    map: FxHashMap<IpAddr, Neighbor>,
    capacity: usize,
    timers: NeighborTimers,
    /// Bumped on every change, so caches keyed on it know when to refresh.
    generation: u64,
    /// Learned entries refused because the table was full.
    pub full_drops: u64,
}

impl NeighborTable {
    /// A table of at most `capacity` entries. The map is sized so that it never reallocates while
    /// holding at most that many.
    pub fn new(capacity: usize, timers: NeighborTimers) -> Self {
        NeighborTable {
            v4_cache: Box::new(
                [V4CacheSlot { ip: 0, generation: u64::MAX, stale_at: 0, mac: [0; 6] };
                    V4_CACHE_SLOTS],
            ),
            map: FxHashMap::with_capacity_and_hasher(capacity * 2, Default::default()),
            capacity,
            timers,
            generation: 0,
            full_drops: 0,
        }
    }

    /// Looks `ip` up at time `now_ns`.
    #[inline(always)]
    pub fn lookup(&mut self, ip: &IpAddr, now_ns: u64) -> Lookup {
        match ip {
            IpAddr::V4(v4) => self.lookup_v4(*v4, now_ns),
            IpAddr::V6(_) => self.lookup_slow(ip, now_ns),
        }
    }

    /// Looks an IPv4 address up at time `now_ns`: the fast path's entry point, which keeps the
    /// address in a register.
    #[inline(always)]
    pub fn lookup_v4(&mut self, ip: std::net::Ipv4Addr, now_ns: u64) -> Lookup {
        let key = u32::from(ip);
        let c = &self.v4_cache[Self::v4_slot(key)];
        if c.ip == key && c.generation == self.generation && now_ns < c.stale_at {
            return Lookup::Fresh(c.mac);
        }
        self.lookup_slow(&IpAddr::V4(ip), now_ns)
    }

    /// Fibonacci hashing: the top bits of key * 2^32/phi index the cache.
    #[inline(always)]
    fn v4_slot(key: u32) -> usize {
        (key.wrapping_mul(0x9e37_79b9) >> 24) as usize
    }

    #[cold]
    #[inline(never)]
    fn lookup_slow(&mut self, ip: &IpAddr, now_ns: u64) -> Lookup {
        let answer = self.lookup_map(ip, now_ns);
        if let (IpAddr::V4(v4), Lookup::Fresh(mac), Some(n)) = (ip, answer, self.map.get(ip)) {
            let stale_at = if n.permanent {
                u64::MAX
            } else {
                n.confirmed_ns.saturating_add(self.timers.stale_after_ns)
            };
            let key = u32::from(*v4);
            self.v4_cache[Self::v4_slot(key)] =
                V4CacheSlot { ip: key, generation: self.generation, stale_at, mac };
        }
        answer
    }

    fn lookup_map(&self, ip: &IpAddr, now_ns: u64) -> Lookup {
        match self.map.get(ip) {
            Some(n) if n.permanent => Lookup::Fresh(n.mac),
            Some(n) => {
                let age = now_ns.saturating_sub(n.confirmed_ns);
                if age < self.timers.stale_after_ns {
                    Lookup::Fresh(n.mac)
                } else if age < self.timers.expire_after_ns {
                    Lookup::Stale(n.mac)
                } else {
                    Lookup::Missing
                }
            }
            None => Lookup::Missing,
        }
    }

    /// Records `ip` at `mac`. Returns whether the table changed (new entry or new MAC).
    /// A permanent entry is never overwritten by a learned one.
    pub fn learn(&mut self, ip: IpAddr, n: Neighbor) -> bool {
        if let Some(old) = self.map.get_mut(&ip) {
            if old.permanent && !n.permanent {
                return false;
            }
            let changed = old.mac != n.mac || old.port != n.port;
            *old = n;
            if changed {
                self.generation += 1;
            }
            return changed;
        }
        if self.map.len() >= self.capacity && !self.evict_expired(n.confirmed_ns) {
            self.full_drops += 1;
            return false;
        }
        self.map.insert(ip, n);
        self.generation += 1;
        true
    }

    /// Forgets entries past their expiry; true if any was removed.
    pub fn evict_expired(&mut self, now_ns: u64) -> bool {
        let before = self.map.len();
        let expire = self.timers.expire_after_ns;
        self.map.retain(|_, n| n.permanent || now_ns.saturating_sub(n.confirmed_ns) < expire);
        let removed = self.map.len() != before;
        if removed {
            self.generation += 1;
        }
        removed
    }

    /// Changes whenever an entry is added, changed or removed.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// A neighbor learned by one worker, for the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighborUpdate {
    /// The neighbor's address.
    pub ip: IpAddr,
    /// What was learned.
    pub neighbor: Neighbor,
}

/// Bounded inboxes, one per worker, carrying neighbor updates between workers.
pub struct NeighborBus {
    inboxes: Box<[ArrayQueue<NeighborUpdate>]>,
}

impl NeighborBus {
    /// Inboxes for `workers` workers of `depth` updates each.
    pub fn new(workers: usize, depth: usize) -> Arc<Self> {
        Arc::new(NeighborBus {
            inboxes: (0..workers).map(|_| ArrayQueue::new(depth.max(1))).collect(),
        })
    }

    /// Tells every worker but `from`; returns how many inboxes were full.
    pub fn publish(&self, from: usize, update: NeighborUpdate) -> u64 {
        let mut lost = 0;
        for (i, q) in self.inboxes.iter().enumerate() {
            if i != from && q.push(update).is_err() {
                lost += 1;
            }
        }
        lost
    }

    /// Takes the next update addressed to `worker`.
    pub fn receive(&self, worker: usize) -> Option<NeighborUpdate> {
        self.inboxes.get(worker)?.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [2, 0, 0, 0, 0, 1];

    fn n(at: u64) -> Neighbor {
        Neighbor { mac: MAC, port: 0, confirmed_ns: at, permanent: false }
    }

    #[test]
    fn ages_fresh_stale_missing() {
        let timers = NeighborTimers { stale_after_ns: 10, expire_after_ns: 20 };
        let mut t = NeighborTable::new(4, timers);
        let ip: IpAddr = "198.18.0.1".parse().unwrap();
        assert!(t.learn(ip, n(100)));
        assert_eq!(t.lookup(&ip, 105), Lookup::Fresh(MAC));
        assert_eq!(t.lookup(&ip, 112), Lookup::Stale(MAC));
        assert_eq!(t.lookup(&ip, 121), Lookup::Missing);
    }

    #[test]
    fn cached_answers_follow_changes_and_age() {
        let timers = NeighborTimers { stale_after_ns: 10, expire_after_ns: 20 };
        let mut t = NeighborTable::new(4, timers);
        let ip: IpAddr = "198.18.0.1".parse().unwrap();
        t.learn(ip, n(100));
        assert_eq!(t.lookup(&ip, 101), Lookup::Fresh(MAC));
        assert_eq!(t.lookup(&ip, 102), Lookup::Fresh(MAC));
        // A new MAC is seen at once, not the cached one.
        t.learn(ip, Neighbor { mac: [7; 6], ..n(103) });
        assert_eq!(t.lookup(&ip, 104), Lookup::Fresh([7; 6]));
        // The cached entry ages like the table's.
        assert_eq!(t.lookup(&ip, 114), Lookup::Stale([7; 6]));
        // A re-confirmation (same MAC) makes it fresh again.
        t.learn(ip, Neighbor { mac: [7; 6], ..n(114) });
        assert_eq!(t.lookup(&ip, 115), Lookup::Fresh([7; 6]));
        t.evict_expired(200);
        assert_eq!(t.lookup(&ip, 200), Lookup::Missing);
    }

    #[test]
    fn capacity_is_a_hard_bound() {
        let mut t = NeighborTable::new(2, NeighborTimers::default());
        for i in 0..5u8 {
            t.learn(IpAddr::from([198, 18, 0, i]), n(0));
        }
        assert_eq!(t.len(), 2);
        assert_eq!(t.full_drops, 3);
    }

    #[test]
    fn permanent_entries_stay() {
        let mut t = NeighborTable::new(2, NeighborTimers { stale_after_ns: 1, expire_after_ns: 2 });
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        t.learn(ip, Neighbor { permanent: true, ..n(0) });
        assert!(!t.learn(ip, Neighbor { mac: [9; 6], ..n(5) }));
        assert_eq!(t.lookup(&ip, 1_000), Lookup::Fresh(MAC));
    }

    #[test]
    fn bus_reaches_every_other_worker() {
        let bus = NeighborBus::new(3, 4);
        let u = NeighborUpdate { ip: "198.18.0.9".parse().unwrap(), neighbor: n(0) };
        assert_eq!(bus.publish(1, u), 0);
        assert_eq!(bus.receive(0), Some(u));
        assert_eq!(bus.receive(1), None);
        assert_eq!(bus.receive(2), Some(u));
    }
}
