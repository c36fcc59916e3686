//! The neighbor table: IPv4 (ARP) and IPv6 (NDP) next hops to MAC addresses.
//!
//! Each worker owns a table of fixed capacity. What one worker learns it tells the others through
//! their bounded inboxes ([`NeighborBus`]), so no table is ever shared or locked; a lost update
//! only means that worker resolves the address itself later.
//!
//! Anyone on a link can claim any address, so what a frame claims is weighed by how it came
//! ([`Claim`], [`NeighborTable::claim`]): an entry is created from an answer to weir's own
//! request or from a request addressed to weir, never from a gratuitous or unsolicited
//! announcement; an existing entry changes its MAC only on an answer to a broadcast request,
//! and not within [`LOCKTIME_NS`] of its last confirmation (the first answer wins, as Linux's
//! `locktime`). A refused claim about an entry makes the caller probe the entry's current MAC
//! by unicast ([`NeighborTable::start_probe`]): if the owner answers, nothing changes; if not,
//! the entry goes stale after the probe timeout and the next broadcast request settles it.
//! Static entries never change. Which port may claim which address is the caller's check
//! (the port whose connected prefix holds it).

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
    /// When weir last probed this entry's MAC by unicast because someone else claimed the
    /// address; 0 when never. An answer from the entry's MAC confirms it (`confirmed_ns` moves
    /// past this); none within the probe timeout makes the entry stale.
    pub probe_ns: u64,
}

impl Neighbor {
    /// A learned entry, confirmed at `now_ns`.
    pub fn learned(mac: Mac, port: u8, now_ns: u64) -> Self {
        Neighbor { mac, port, confirmed_ns: now_ns, permanent: false, probe_ns: 0 }
    }

    /// A static entry.
    pub fn permanent(mac: Mac, port: u8) -> Self {
        Neighbor { mac, port, confirmed_ns: 0, permanent: true, probe_ns: 0 }
    }

    /// Whether a probe is out and unanswered.
    fn probing(&self) -> bool {
        self.probe_ns > self.confirmed_ns
    }
}

/// A MAC change within this long of an entry's last confirmation is refused: of several
/// answers to one request, the first wins (Linux's `locktime`, 1 s).
pub const LOCKTIME_NS: u64 = 1_000_000_000;

/// How a claim that `ip` is at some MAC reached weir.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// An answer to a broadcast request weir has outstanding for the address (an ARP reply,
    /// or an NA with the solicited flag, while weir waits for one).
    Solicited,
    /// A request addressed to weir (an ARP request for one of its addresses, an NS with a
    /// source link-layer option): RFC 826 and RFC 4861 §7.2.3 let it create an entry.
    Request,
    /// Anything else: a gratuitous ARP, an ARP reply or NA weir did not ask for.
    Unsolicited,
}

/// What [`NeighborTable::claim`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// A new entry.
    Added,
    /// The entry already said so (confirmed, if the claim counts as a confirmation).
    Confirmed,
    /// The entry's MAC or port changed.
    Changed,
    /// Refused: a static entry, an unsolicited change, a change within the lock time, or a
    /// new entry from an unsolicited claim. Nothing changed.
    Refused,
    /// A new entry did not fit.
    Full,
}

/// Neighbor table timing, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighborTimers {
    /// After this long without confirmation an entry is still used but re-resolved
    /// (RFC 4861 REACHABLE_TIME is 30 s).
    pub stale_after_ns: u64,
    /// After this long an entry is forgotten.
    pub expire_after_ns: u64,
    /// A unicast probe unanswered for this long makes its entry stale.
    pub probe_timeout_ns: u64,
}

impl Default for NeighborTimers {
    fn default() -> Self {
        NeighborTimers {
            stale_after_ns: 30_000_000_000,
            expire_after_ns: 300_000_000_000,
            probe_timeout_ns: 1_000_000_000,
        }
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
            } else if n.probing() {
                n.probe_ns.saturating_add(self.timers.probe_timeout_ns)
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
                let unanswered = n.probing()
                    && now_ns.saturating_sub(n.probe_ns) >= self.timers.probe_timeout_ns;
                if unanswered && age < self.timers.expire_after_ns {
                    Lookup::Stale(n.mac)
                } else if age < self.timers.stale_after_ns {
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

    /// Weighs a claim, made at `now_ns`, that `ip` is at `mac` on `port` (see the module docs).
    pub fn claim(&mut self, ip: IpAddr, mac: Mac, port: u8, now_ns: u64, how: Claim) -> Learned {
        let Some(old) = self.map.get_mut(&ip) else {
            if how == Claim::Unsolicited {
                return Learned::Refused;
            }
            return if self.learn(ip, Neighbor::learned(mac, port, now_ns)) {
                Learned::Added
            } else {
                Learned::Full
            };
        };
        if old.mac == mac && old.port == port {
            // The owner speaking again: a confirmation, unless nobody asked.
            if !old.permanent && how != Claim::Unsolicited && now_ns > old.confirmed_ns {
                old.confirmed_ns = now_ns;
                self.generation += 1;
            }
            return Learned::Confirmed;
        }
        let locked = now_ns.saturating_sub(old.confirmed_ns) < LOCKTIME_NS;
        // While a unicast probe is out, only the entry's own MAC may answer.
        let probe_out =
            old.probing() && now_ns.saturating_sub(old.probe_ns) < self.timers.probe_timeout_ns;
        if old.permanent || how != Claim::Solicited || locked || probe_out {
            return Learned::Refused;
        }
        *old = Neighbor::learned(mac, port, now_ns);
        self.generation += 1;
        Learned::Changed
    }

    /// Notes that `ip`'s current MAC is being probed at `now_ns`, because someone else
    /// claimed the address. Returns where to send the probe (the entry's MAC and port), or
    /// `None` for a static entry, an unknown address, or one probed less than the probe
    /// timeout ago.
    pub fn start_probe(&mut self, ip: IpAddr, now_ns: u64) -> Option<(Mac, u8)> {
        let n = self.map.get_mut(&ip)?;
        if n.permanent
            || (n.probe_ns != 0 && now_ns.saturating_sub(n.probe_ns) < self.timers.probe_timeout_ns)
        {
            return None;
        }
        n.probe_ns = now_ns.max(n.confirmed_ns + 1);
        self.generation += 1;
        Some((n.mac, n.port))
    }

    /// Every learned (not static) entry, with its age at `now_ns`: what a hot restart's next
    /// weir takes over, so that it need not resolve its next hops again while it forwards.
    pub fn learned_entries(&self, now_ns: u64) -> Vec<(IpAddr, Mac, u8, u64)> {
        self.map
            .iter()
            .filter(|(_, n)| !n.permanent)
            .map(|(ip, n)| (*ip, n.mac, n.port, now_ns.saturating_sub(n.confirmed_ns)))
            .collect()
    }

    /// Records `ip` at `n` as it is, from a trusted source (the configuration, or another
    /// worker that weighed the claim already). Returns whether the table changed (new entry or
    /// new MAC). A permanent entry is never overwritten by a learned one.
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

    /// Forgets the learned entries on `port` (static ones stay): its link went down or came
    /// back, perhaps as another device with other hosts behind it, as Linux flushes a device's
    /// neighbors when it goes down. Returns how many were forgotten.
    pub fn forget_port(&mut self, port: u8) -> usize {
        let before = self.map.len();
        self.map.retain(|_, n| n.permanent || n.port != port);
        let removed = before - self.map.len();
        if removed > 0 {
            self.generation += 1;
        }
        removed
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
        Neighbor::learned(MAC, 0, at)
    }

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn ages_fresh_stale_missing() {
        let timers =
            NeighborTimers { stale_after_ns: 10, expire_after_ns: 20, probe_timeout_ns: 5 };
        let mut t = NeighborTable::new(4, timers);
        let ip: IpAddr = "198.18.0.1".parse().unwrap();
        assert!(t.learn(ip, n(100)));
        assert_eq!(t.lookup(&ip, 105), Lookup::Fresh(MAC));
        assert_eq!(t.lookup(&ip, 112), Lookup::Stale(MAC));
        assert_eq!(t.lookup(&ip, 121), Lookup::Missing);
    }

    #[test]
    fn cached_answers_follow_changes_and_age() {
        let timers =
            NeighborTimers { stale_after_ns: 10, expire_after_ns: 20, probe_timeout_ns: 5 };
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
        let timers = NeighborTimers { stale_after_ns: 1, expire_after_ns: 2, probe_timeout_ns: 1 };
        let mut t = NeighborTable::new(2, timers);
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        t.learn(ip, Neighbor::permanent(MAC, 0));
        assert!(!t.learn(ip, Neighbor { mac: [9; 6], ..n(5) }));
        for how in [Claim::Solicited, Claim::Request, Claim::Unsolicited] {
            assert_eq!(t.claim(ip, [9; 6], 0, 10 * SEC, how), Learned::Refused);
        }
        assert_eq!(t.start_probe(ip, 10 * SEC), None, "nothing to probe on a static entry");
        assert_eq!(t.lookup(&ip, 1_000), Lookup::Fresh(MAC));
    }

    #[test]
    fn only_requests_and_answers_create_entries() {
        let mut t = NeighborTable::new(4, NeighborTimers::default());
        let a: IpAddr = "198.18.0.1".parse().unwrap();
        let b: IpAddr = "198.18.0.2".parse().unwrap();
        let c: IpAddr = "198.18.0.3".parse().unwrap();
        assert_eq!(t.claim(a, MAC, 0, SEC, Claim::Unsolicited), Learned::Refused);
        assert_eq!(t.lookup(&a, SEC), Lookup::Missing);
        assert_eq!(t.claim(b, MAC, 0, SEC, Claim::Request), Learned::Added);
        assert_eq!(t.claim(c, MAC, 0, SEC, Claim::Solicited), Learned::Added);
        assert_eq!(t.lookup(&b, SEC), Lookup::Fresh(MAC));
    }

    #[test]
    fn a_mac_changes_only_on_a_solicited_answer_outside_the_lock_time() {
        let mut t = NeighborTable::new(4, NeighborTimers::default());
        let ip: IpAddr = "198.18.0.1".parse().unwrap();
        let thief = [6; 6];
        assert_eq!(t.claim(ip, MAC, 0, SEC, Claim::Solicited), Learned::Added);
        // Unsolicited and request claims never move it, whenever they come.
        assert_eq!(t.claim(ip, thief, 0, 5 * SEC, Claim::Unsolicited), Learned::Refused);
        assert_eq!(t.claim(ip, thief, 0, 5 * SEC, Claim::Request), Learned::Refused);
        // Nor does a second answer to the same request, within the lock time.
        assert_eq!(t.claim(ip, MAC, 0, 6 * SEC, Claim::Solicited), Learned::Confirmed);
        assert_eq!(t.claim(ip, thief, 0, 6 * SEC + 10, Claim::Solicited), Learned::Refused);
        assert_eq!(t.lookup(&ip, 6 * SEC + 20), Lookup::Fresh(MAC));
        // Past it, an answer to a new request does (the owner moved).
        assert_eq!(t.claim(ip, thief, 0, 8 * SEC, Claim::Solicited), Learned::Changed);
        assert_eq!(t.lookup(&ip, 8 * SEC + 1), Lookup::Fresh(thief));
        // Another port is a change too.
        assert_eq!(t.claim(ip, thief, 1, 12 * SEC, Claim::Request), Learned::Refused);
    }

    #[test]
    fn a_probe_answered_keeps_the_entry_and_one_unanswered_makes_it_stale() {
        let mut t = NeighborTable::new(4, NeighborTimers::default());
        let ip: IpAddr = "198.18.0.1".parse().unwrap();
        t.claim(ip, MAC, 0, SEC, Claim::Solicited);
        assert_eq!(t.lookup(&ip, 2 * SEC), Lookup::Fresh(MAC));
        assert_eq!(t.start_probe(ip, 2 * SEC), Some((MAC, 0)));
        assert_eq!(t.start_probe(ip, 2 * SEC + 5), None, "one probe per probe timeout");
        // While the probe is out, even a solicited answer from another MAC is refused.
        assert_eq!(t.claim(ip, [6; 6], 0, 2 * SEC + 10, Claim::Solicited), Learned::Refused);
        // The owner answers: fresh, and it stays so past the probe timeout.
        assert_eq!(t.claim(ip, MAC, 0, 2 * SEC + 20, Claim::Solicited), Learned::Confirmed);
        assert_eq!(t.lookup(&ip, 4 * SEC), Lookup::Fresh(MAC));
        // A probe nobody answers: stale after the timeout, however fresh the entry was.
        assert_eq!(t.start_probe(ip, 5 * SEC), Some((MAC, 0)));
        assert_eq!(t.lookup(&ip, 5 * SEC + 1), Lookup::Fresh(MAC));
        assert_eq!(t.lookup(&ip, 6 * SEC), Lookup::Stale(MAC));
        // Then an answer to the broadcast request that staleness sends may move it.
        assert_eq!(t.claim(ip, [6; 6], 0, 6 * SEC + 1, Claim::Solicited), Learned::Changed);
        assert_eq!(t.lookup(&ip, 6 * SEC + 2), Lookup::Fresh([6; 6]));
    }

    #[test]
    fn a_ports_learned_entries_are_forgotten_its_static_ones_kept() {
        let mut t = NeighborTable::new(8, NeighborTimers::default());
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            "198.18.0.1".parse().unwrap(),
            "198.18.0.2".parse().unwrap(),
            "198.18.1.2".parse().unwrap(),
        );
        t.learn(a, n(0));
        t.learn(b, Neighbor::permanent(MAC, 0));
        t.learn(c, Neighbor::learned(MAC, 1, 0));
        assert_eq!(t.lookup(&a, 1), Lookup::Fresh(MAC));
        assert_eq!(t.forget_port(0), 1);
        assert_eq!(t.lookup(&a, 1), Lookup::Missing, "the cache follows");
        assert_eq!(t.lookup(&b, 1), Lookup::Fresh(MAC));
        assert_eq!(t.lookup(&c, 1), Lookup::Fresh(MAC));
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
