//! The per-worker flow table: which endpoint each connection went to, and what its packets
//! are rewritten to, in both directions.
//!
//! Fixed capacity, allocated once: an arena of flow records and an open-addressing index
//! (linear probing, backward-shift deletion, load at most 1/2) holding two keys per flow, the
//! packet as the client sent it ([`Direction::Forward`]) and the reply as it comes back
//! ([`Direction::Reverse`]). Nothing here allocates after [`FlowTable::new`].
//!
//! Flows expire by state (TCP handshake, established, closing; UDP), checked on lookup and by
//! a sweep of a few records per poll. When the table is full a new flow is refused, or the
//! oldest flow still in its handshake (no ACK from the client yet) is evicted for it
//! ([`WhenFull`]); established flows are never evicted. Every flow that leaves the table is reported to a callback with the reason,
//! so the caller can free what it holds (a SNAT port) and learn from it (a handshake that timed
//! out is a failed connection to its endpoint).

use std::collections::VecDeque;

use super::model::Mode;
use stack::nat::V4Deltas;
use stack::{FlowKey, PackedV4};

/// TCP flags (RFC 9293).
pub mod tcp_flags {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronise sequence numbers: opens a connection.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Acknowledgement field significant.
    pub const ACK: u8 = 0x10;
}

/// Where a flow is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FlowState {
    /// TCP: the client's SYN went out, the endpoint has not answered.
    SynSent,
    /// TCP: the endpoint answered the SYN; the client has not acknowledged yet. (A flood of
    /// spoofed SYNs stays here: its sources never complete the handshake.)
    SynReceived,
    /// TCP: the handshake completed.
    Established,
    /// TCP: a FIN or RST was seen.
    Closing,
    /// UDP (and anything else without connection state).
    Datagram,
}

/// How long a flow lives without traffic, by state, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTimeouts {
    /// TCP handshake not completed.
    pub syn_ns: u64,
    /// TCP established.
    pub established_ns: u64,
    /// TCP after FIN or RST.
    pub closing_ns: u64,
    /// UDP.
    pub datagram_ns: u64,
}

impl Default for FlowTimeouts {
    fn default() -> Self {
        const S: u64 = 1_000_000_000;
        FlowTimeouts {
            syn_ns: 5 * S,
            established_ns: 3600 * S,
            closing_ns: 10 * S,
            datagram_ns: 30 * S,
        }
    }
}

impl FlowState {
    /// A TCP handshake not yet completed: what a full table may evict.
    pub fn is_handshake(self) -> bool {
        matches!(self, FlowState::SynSent | FlowState::SynReceived)
    }
}

impl FlowTimeouts {
    fn of(&self, s: FlowState) -> u64 {
        match s {
            FlowState::SynSent | FlowState::SynReceived => self.syn_ns,
            FlowState::Established => self.established_ns,
            FlowState::Closing => self.closing_ns,
            FlowState::Datagram => self.datagram_ns,
        }
    }
}

/// What to do with a new flow when the table is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Refuse it (the caller drops its packet and counts it).
    DropNew,
    /// Evict the oldest flow still in its TCP handshake, if there is one; refuse otherwise.
    EvictEmbryonic,
}

/// Which of a flow's two keys a packet matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to service: the packet as the client sent it.
    Forward,
    /// Endpoint to client: the reply as it comes back to weir.
    Reverse,
}

/// A flow, as inserted and as reported (the table keeps it in two parts, [`HotFlow`] and the
/// rest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// The client's packets as they arrive.
    pub forward: FlowKey,
    /// The endpoint's replies as they arrive (after NAT: from the endpoint to weir's SNAT
    /// address; with DNAT: from the endpoint to the client).
    pub reverse: FlowKey,
    /// The endpoint it went to (a stable endpoint id).
    pub endpoint: u32,
    /// How its packets are translated.
    pub mode: super::model::Mode,
    /// The service it belongs to (a stable service id).
    pub service: u32,
    /// The generation of the mesh snapshot its endpoint was last checked against (see
    /// [`generation_tag`]).
    pub checked: u32,
    /// Its state.
    pub state: FlowState,
    /// When it expires without traffic.
    pub expires_ns: u64,
}

/// The service id of a flow whose service is gone: it counts towards none.
pub const NO_SERVICE: u32 = u32::MAX;

/// A snapshot generation as a flow records it: its low 32 bits, to fit the flow's hot line. A
/// flow would miss a check only if exactly a multiple of 2^32 snapshots came between two of
/// its packets.
#[inline(always)]
pub fn generation_tag(generation: u64) -> u32 {
    u32::try_from(generation & 0xffff_ffff).unwrap_or(0)
}

/// Why a flow left the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// No traffic for its state's timeout. `unanswered` when that state was the handshake: the
    /// endpoint never answered.
    Expired {
        /// The TCP handshake timed out.
        unanswered: bool,
    },
    /// Evicted, in its handshake, for a new flow in a full table.
    Evicted,
    /// Removed by the caller.
    Removed,
}

/// What a packet did to its flow's state, for health checking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Nothing of note.
    None,
    /// The endpoint answered a handshake: a successful connection.
    Answered,
    /// The endpoint reset a handshake: a failed connection.
    Refused,
    /// The endpoint answered a handshake's SYN with a bare ACK (RFC 5961's challenge ACK): it
    /// still holds a connection on this 4-tuple, from an earlier flow that used the same SNAT
    /// port. Neither a success nor the endpoint's failure.
    Collided,
}

/// Why a flow could not be inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// The table is full (and nothing could be evicted).
    Full,
    /// One of the keys is already in the table.
    Exists,
}

/// Flow table counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Flows inserted.
    pub inserted: u64,
    /// Flows that expired.
    pub expired: u64,
    /// Handshakes evicted for new flows.
    pub evicted: u64,
    /// New flows refused because the table was full.
    pub refused_full: u64,
}

const EMPTY: u32 = u32::MAX;

/// `n` copies of `value`, in memory the kernel is asked to back with huge pages: lookups in a
/// table of a million flows land anywhere in hundreds of megabytes.
fn huge_filled<T: Clone>(n: usize, value: T) -> Box<[T]> {
    let mut v = Vec::with_capacity(n);
    crate::hint::huge_pages(&v);
    v.resize(n, value);
    v.into_boxed_slice()
}

#[derive(Clone, Copy)]
struct Slot {
    hash: u32,
    /// Flow id << 1 | direction (1 = reverse); EMPTY when free.
    tagged: u32,
}

const FREE_SLOT: Slot = Slot { hash: 0, tagged: EMPTY };

/// What a packet of a flow needs, on one cache line: the IPv4 fast path reads nothing else. The
/// rest of the flow (its full keys and endpoint) is in a second, colder array.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub struct HotFlow {
    /// The forward and reverse keys of an IPv4 flow, packed (zero for IPv6).
    pub keys: [PackedV4; 2],
    /// When it expires without traffic.
    pub expires_ns: u64,
    /// The generation of the mesh snapshot its endpoint was last checked against (see
    /// [`generation_tag`]).
    pub checked: u32,
    /// The service it belongs to (a stable service id): per-service counters.
    pub service: u32,
    /// How its packets are translated.
    pub mode: super::model::Mode,
    /// Its state.
    pub state: FlowState,
    /// Whether `keys` hold its keys (an IPv4 flow).
    pub v4: bool,
    /// Whether the record holds a flow.
    live: bool,
    /// What translating a packet going each way does to its checksums (IPv4 NAT and DNAT).
    pub deltas: [V4Deltas; 2],
}

const FREE_HOT: HotFlow = HotFlow {
    keys: [PackedV4::ZERO; 2],
    expires_ns: 0,
    checked: 0,
    service: 0,
    mode: super::model::Mode::Dnat,
    state: FlowState::Datagram,
    v4: false,
    live: false,
    deltas: [V4Deltas::ZERO; 2],
};

/// The rest of a flow record.
#[derive(Clone, Copy)]
struct ColdFlow {
    keys: [FlowKey; 2],
    endpoint: u32,
}

/// A fixed-capacity flow table. See the module docs.
pub struct FlowTable {
    slots: Box<[Slot]>,
    mask: usize,
    hot: Box<[HotFlow]>,
    cold: Box<[Option<ColdFlow>]>,
    /// Creation number of each record, to tell a handshake in `embryonic` from a later flow
    /// that reused its record.
    born: Box<[u32]>,
    free: Vec<u32>,
    embryonic: VecDeque<(u32, u32)>,
    next_birth: u32,
    sweep: usize,
    timeouts: FlowTimeouts,
    when_full: WhenFull,
    len: usize,
    /// The index's hash seed, random per table: packets' senders cannot aim at one probe run.
    seed: u64,
    /// One bit per record: changed since [`FlowTable::track_changes`] turned tracking on
    /// (a hot restart copies the table while it serves, then sends what changed meanwhile).
    changed: Box<[u64]>,
    tracking: bool,
    /// Counters.
    pub stats: FlowStats,
}

#[inline(always)]
fn direction(tagged: u32) -> Direction {
    if tagged & 1 == 0 {
        Direction::Forward
    } else {
        Direction::Reverse
    }
}

impl FlowTable {
    /// A table of `capacity` flows (at least 1, at most 2^29).
    pub fn new(capacity: usize, timeouts: FlowTimeouts, when_full: WhenFull) -> FlowTable {
        let capacity = capacity.clamp(1, 1 << 29);
        // Two keys per flow at a load of at most 1/2.
        let slots = (capacity * 4).next_power_of_two();
        FlowTable {
            slots: huge_filled(slots, FREE_SLOT),
            mask: slots - 1,
            hot: huge_filled(capacity, FREE_HOT),
            cold: huge_filled(capacity, None),
            born: vec![0; capacity].into_boxed_slice(),
            free: (0..u32::try_from(capacity).unwrap_or(u32::MAX)).rev().collect(),
            embryonic: VecDeque::with_capacity(capacity),
            next_birth: 0,
            sweep: 0,
            timeouts,
            when_full,
            len: 0,
            seed: std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), capacity),
            changed: vec![0; capacity.div_ceil(64)].into_boxed_slice(),
            tracking: false,
            stats: FlowStats::default(),
        }
    }

    /// Notes that record `id` changed, while changes are tracked.
    #[inline(always)]
    fn note_change(&mut self, id: u32) {
        if self.tracking {
            let i = usize::try_from(id).unwrap_or(usize::MAX);
            if let Some(w) = self.changed.get_mut(i >> 6) {
                *w |= 1 << (i & 63);
            }
        }
    }

    /// Starts (forgetting what was noted before) or stops noting which records change: flows
    /// inserted, removed, or moved on by a packet.
    pub fn track_changes(&mut self, on: bool) {
        self.changed.fill(0);
        self.tracking = on;
    }

    /// Hands each record changed since tracking began, from word `*cursor` of the change map
    /// on, to `out`: its id and the flow it holds now (`None`: it holds none, the flow left),
    /// with [`Flow::expires_ns`] as the nanoseconds it has left at `now_ns`. Stops after about
    /// `max` records; returns whether the whole map was walked. Handed records are unmarked.
    pub fn drain_changes(
        &mut self,
        cursor: &mut usize,
        max: usize,
        now_ns: u64,
        out: &mut impl FnMut(u32, Option<Flow>),
    ) -> bool {
        let mut n = 0;
        while *cursor < self.changed.len() {
            if n >= max {
                return false;
            }
            let word = std::mem::take(&mut self.changed[*cursor]);
            let mut bits = word;
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let Ok(id) = u32::try_from(*cursor * 64 + b) else { continue };
                out(id, self.carried(id, now_ns));
                n += 1;
            }
            *cursor += 1;
        }
        true
    }

    /// Flow `id` as another process takes it over: [`Flow::expires_ns`] is the nanoseconds it
    /// has left at `now_ns` (the two processes' clocks differ).
    pub fn carried(&self, id: u32, now_ns: u64) -> Option<Flow> {
        self.hot(id)?;
        let mut f = self.get(id)?;
        f.expires_ns = f.expires_ns.saturating_sub(now_ns);
        Some(f)
    }

    /// Takes over a flow another process held: inserted as [`insert`](Self::insert) would,
    /// never evicting one, to expire `flow.expires_ns` after `now_ns`.
    pub fn import(&mut self, flow: Flow, now_ns: u64) -> Result<u32, InsertError> {
        if self.free.is_empty() {
            self.stats.refused_full += 1;
            return Err(InsertError::Full);
        }
        let id = self.insert(flow, now_ns, &mut |_, _| {})?;
        self.set_expiry(id, now_ns.saturating_add(flow.expires_ns));
        Ok(id)
    }

    /// Flows in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most flows the table holds.
    pub fn capacity(&self) -> usize {
        self.hot.len()
    }

    /// The timeouts in force.
    pub fn timeouts(&self) -> FlowTimeouts {
        self.timeouts
    }

    #[inline(always)]
    fn home(&self, hash: u32) -> usize {
        usize::try_from(hash).unwrap_or(0) & self.mask
    }

    /// Whether the key slot `tagged` names is `key` (`packed`: its IPv4 form, compared on the
    /// hot line without reading the cold record).
    #[inline(always)]
    fn is_key(&self, tagged: u32, key: &FlowKey, packed: Option<PackedV4>) -> bool {
        let id = usize::try_from(tagged >> 1).unwrap_or(usize::MAX);
        let d = usize::from(tagged & 1 == 1);
        match packed {
            Some(p) => self.hot.get(id).is_some_and(|h| h.v4 && h.keys[d] == p),
            None => self.cold.get(id).is_some_and(|c| c.is_some_and(|c| c.keys[d] == *key)),
        }
    }

    /// The flow a packet with `key` belongs to, and the direction it goes, if there is one and
    /// it has not expired by `now_ns` (an expired one is removed and reported).
    #[inline]
    pub fn lookup(
        &mut self,
        key: &FlowKey,
        now_ns: u64,
        on_removed: &mut impl FnMut(&Flow, Removal),
    ) -> Option<(u32, Direction)> {
        let i = self.find(key)?;
        let tagged = self.slots[i].tagged;
        let id = tagged >> 1;
        let expired = self.hot(id).is_some_and(|h| h.expires_ns <= now_ns);
        if expired {
            self.expire_one(id, on_removed);
            return None;
        }
        Some((id, direction(tagged)))
    }

    /// The IPv4 fast path's lookup: the flow `key` belongs to, the direction, and its hot line,
    /// if it has not expired by `now_ns`. An expired flow is reported as absent but left for
    /// the general path (or the sweep) to remove, so nothing here needs a callback.
    #[inline(always)]
    pub fn peek_v4(&self, key: &PackedV4, now_ns: u64) -> Option<(u32, Direction, &HotFlow)> {
        let h = key.table_hash(self.seed);
        let mut i = self.home(h);
        loop {
            let s = self.slots[i];
            if s.tagged == EMPTY {
                return None;
            }
            if s.hash == h {
                let id = s.tagged >> 1;
                let hot = self.hot.get(usize::try_from(id).ok()?)?;
                let d = usize::from(s.tagged & 1 == 1);
                if hot.v4 && hot.keys[d] == *key {
                    if hot.expires_ns <= now_ns {
                        return None;
                    }
                    return Some((id, direction(s.tagged), hot));
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Starts loading the index slot where `key`'s search begins (the first stage of a burst's
    /// lookups).
    #[inline]
    pub fn prefetch_slot(&self, key: &PackedV4) {
        let i = self.home(key.table_hash(self.seed));
        crate::hint::prefetch(self.slots.as_ptr().wrapping_add(i));
    }

    /// Starts loading the hot line of the flow `key` names, if its slot (loaded by
    /// [`prefetch_slot`]) says which (the second stage).
    ///
    /// [`prefetch_slot`]: Self::prefetch_slot
    #[inline]
    pub fn prefetch_record(&self, key: &PackedV4) {
        let h = key.table_hash(self.seed);
        let mut i = self.home(h);
        // Look a few slots along the probe run, by hash only: a hint needs no certainty.
        for _ in 0..4 {
            let s = self.slots[i];
            if s.tagged == EMPTY {
                return;
            }
            if s.hash == h {
                let id = usize::try_from(s.tagged >> 1).unwrap_or(0);
                crate::hint::prefetch(self.hot.as_ptr().wrapping_add(id));
                return;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The id of the flow holding `key` (expired or not).
    pub fn id_of(&self, key: &FlowKey) -> Option<u32> {
        self.find(key).map(|i| self.slots[i].tagged >> 1)
    }

    /// Whether a key is in the table (expired or not).
    #[inline]
    pub fn contains(&self, key: &FlowKey) -> bool {
        self.find(key).is_some()
    }

    #[inline(always)]
    fn hot(&self, id: u32) -> Option<&HotFlow> {
        self.hot.get(usize::try_from(id).ok()?).filter(|h| h.live)
    }

    /// The flow with this id.
    #[inline]
    pub fn get(&self, id: u32) -> Option<Flow> {
        let i = usize::try_from(id).ok()?;
        let c = (*self.cold.get(i)?)?;
        let h = self.hot.get(i)?;
        Some(Flow {
            forward: c.keys[0],
            reverse: c.keys[1],
            endpoint: c.endpoint,
            mode: h.mode,
            service: h.service,
            checked: h.checked,
            state: h.state,
            expires_ns: h.expires_ns,
        })
    }

    /// The state of flow `id`.
    #[inline]
    pub fn state(&self, id: u32) -> Option<FlowState> {
        self.hot(id).map(|h| h.state)
    }

    /// The endpoint of flow `id`.
    #[inline]
    pub fn endpoint(&self, id: u32) -> Option<u32> {
        Some((*self.cold.get(usize::try_from(id).ok()?)?)?.endpoint)
    }

    /// The service of flow `id`.
    #[inline]
    pub fn service(&self, id: u32) -> Option<u32> {
        self.hot(id).map(|h| h.service)
    }

    /// Changes the service flow `id` counts towards ([`NO_SERVICE`]: none).
    pub fn set_service(&mut self, id: u32, service: u32) {
        if let Some(h) = self.hot.get_mut(usize::try_from(id).unwrap_or(usize::MAX)) {
            h.service = service;
        }
        self.note_change(id);
    }

    /// Notes that flow `id`'s endpoint was checked against snapshot `generation`.
    #[inline]
    pub fn mark_checked(&mut self, id: u32, generation: u64) {
        if let Some(h) = self.hot.get_mut(usize::try_from(id).unwrap_or(usize::MAX)) {
            h.checked = generation_tag(generation);
        }
    }

    /// Records a packet of flow `id` going in `dir` with TCP `flags` (0 for UDP): moves its
    /// state on and pushes its expiry out. Returns what that meant for the connection.
    #[inline(always)]
    pub fn touch(&mut self, id: u32, dir: Direction, flags: u8, now_ns: u64) -> Transition {
        let timeouts = self.timeouts;
        let Some(f) = self.hot.get_mut(usize::try_from(id).unwrap_or(usize::MAX)) else {
            return Transition::None;
        };
        if !f.live {
            return Transition::None;
        }
        let mut t = Transition::None;
        let was_state = f.state;
        if f.state != FlowState::Datagram {
            let was = f.state;
            if flags & tcp_flags::RST != 0 {
                f.state = FlowState::Closing;
                if was == FlowState::SynSent && dir == Direction::Reverse {
                    t = Transition::Refused;
                }
            } else if was == FlowState::SynSent
                && dir == Direction::Reverse
                && flags & tcp_flags::SYN == 0
            {
                t = Transition::Collided;
            } else if was == FlowState::SynSent && dir == Direction::Reverse {
                f.state = FlowState::SynReceived;
                t = Transition::Answered;
            } else if was == FlowState::SynReceived
                && dir == Direction::Forward
                && flags & tcp_flags::ACK != 0
                && flags & tcp_flags::SYN == 0
            {
                f.state = FlowState::Established;
            } else if was == FlowState::SynSent
                && dir == Direction::Forward
                && flags & tcp_flags::ACK != 0
                && flags & tcp_flags::SYN == 0
                && matches!(f.mode, super::model::Mode::Dsr(_))
            {
                // DSR: the endpoint answers the client directly. The client acknowledging
                // after its SYN is the sign that the endpoint answered.
                f.state = FlowState::Established;
                t = Transition::Answered;
            }
            if flags & tcp_flags::FIN != 0 {
                f.state = FlowState::Closing;
            }
        }
        // A handshake has until its deadline, set when it began: retransmitted SYNs do not
        // extend it (that is a connect timeout).
        if !(f.state.is_handshake() && t == Transition::None && f.state == was_state) {
            f.expires_ns = now_ns.saturating_add(timeouts.of(f.state));
        }
        self.note_change(id);
        t
    }

    /// Sets when flow `id` expires (a cluster's own connect timeout, say).
    pub fn set_expiry(&mut self, id: u32, expires_ns: u64) {
        if let Some(f) = self.hot.get_mut(usize::try_from(id).unwrap_or(usize::MAX)) {
            f.expires_ns = expires_ns;
        }
        self.note_change(id);
    }

    /// Inserts a flow; its expiry is set from its state and `now_ns`. When the table is full,
    /// [`WhenFull`] decides; an evicted flow is reported to `on_removed`.
    pub fn insert(
        &mut self,
        flow: Flow,
        now_ns: u64,
        on_removed: &mut impl FnMut(&Flow, Removal),
    ) -> Result<u32, InsertError> {
        if self.find(&flow.forward).is_some() || self.find(&flow.reverse).is_some() {
            return Err(InsertError::Exists);
        }
        if self.free.is_empty()
            && !(self.when_full == WhenFull::EvictEmbryonic && self.evict_one(on_removed))
        {
            self.stats.refused_full += 1;
            return Err(InsertError::Full);
        }
        let Some(id) = self.free.pop() else {
            self.stats.refused_full += 1;
            return Err(InsertError::Full);
        };
        let idx = usize::try_from(id).unwrap_or(0);
        self.next_birth = self.next_birth.wrapping_add(1);
        self.born[idx] = self.next_birth;
        if flow.state.is_handshake() && self.embryonic.len() < self.embryonic.capacity() {
            self.embryonic.push_back((id, self.next_birth));
        }
        self.place(flow.forward.table_hash(self.seed), id << 1);
        self.place(flow.reverse.table_hash(self.seed), id << 1 | 1);
        let packed = (flow.forward.packed_v4(), flow.reverse.packed_v4());
        let (keys, v4) = match packed {
            (Some(f), Some(r)) => ([f, r], true),
            _ => ([PackedV4::ZERO; 2], false),
        };
        // A packet going one way leaves with the other way's key reversed; NAT rewrites both
        // ends, DNAT the endpoint's end only.
        let (nat, dnat) = (flow.mode == Mode::Nat, flow.mode == Mode::Dnat);
        let deltas = if v4 && (nat || dnat) {
            [
                V4Deltas::new(&keys[0], &keys[1].reversed(), nat, true),
                V4Deltas::new(&keys[1], &keys[0].reversed(), true, nat),
            ]
        } else {
            [V4Deltas::ZERO; 2]
        };
        self.hot[idx] = HotFlow {
            keys,
            expires_ns: now_ns.saturating_add(self.timeouts.of(flow.state)),
            checked: flow.checked,
            service: flow.service,
            mode: flow.mode,
            state: flow.state,
            v4,
            live: true,
            deltas,
        };
        self.cold[idx] =
            Some(ColdFlow { keys: [flow.forward, flow.reverse], endpoint: flow.endpoint });
        self.len += 1;
        self.stats.inserted += 1;
        self.note_change(id);
        Ok(id)
    }

    /// Removes flow `id` (reported to `on_removed` as [`Removal::Removed`]).
    pub fn remove(&mut self, id: u32, on_removed: &mut impl FnMut(&Flow, Removal)) {
        if let Some(f) = self.take(id) {
            on_removed(&f, Removal::Removed);
        }
    }

    /// Looks at up to `budget` records from where the last sweep stopped and removes those
    /// expired by `now_ns`. Returns how many it removed.
    pub fn sweep(
        &mut self,
        now_ns: u64,
        budget: usize,
        on_removed: &mut impl FnMut(&Flow, Removal),
    ) -> usize {
        let mut n = 0;
        for _ in 0..budget.min(self.hot.len()) {
            let id = self.sweep;
            self.sweep = if self.sweep + 1 == self.hot.len() { 0 } else { self.sweep + 1 };
            let h = &self.hot[id];
            if h.live && h.expires_ns <= now_ns {
                self.expire_one(u32::try_from(id).unwrap_or(u32::MAX), on_removed);
                n += 1;
            }
        }
        n
    }

    /// Every live flow (for tests and statistics; not for the fast path).
    pub fn iter(&self) -> impl Iterator<Item = (u32, Flow)> + '_ {
        (0..self.hot.len()).filter_map(|i| {
            let id = u32::try_from(i).ok()?;
            Some((id, self.get(id)?))
        })
    }

    fn expire_one(&mut self, id: u32, on_removed: &mut impl FnMut(&Flow, Removal)) {
        if let Some(f) = self.take(id) {
            self.stats.expired += 1;
            on_removed(&f, Removal::Expired { unanswered: f.state == FlowState::SynSent });
        }
    }

    /// Evicts the oldest flow still in its handshake. Returns whether one was.
    fn evict_one(&mut self, on_removed: &mut impl FnMut(&Flow, Removal)) -> bool {
        while let Some((id, birth)) = self.embryonic.pop_front() {
            let idx = usize::try_from(id).unwrap_or(usize::MAX);
            let still = self.born.get(idx) == Some(&birth)
                && self.hot(id).is_some_and(|h| h.state.is_handshake());
            if still {
                if let Some(f) = self.take(id) {
                    self.stats.evicted += 1;
                    on_removed(&f, Removal::Evicted);
                    return true;
                }
            }
        }
        false
    }

    fn find(&self, key: &FlowKey) -> Option<usize> {
        let h = key.table_hash(self.seed);
        let packed = key.packed_v4();
        let mut i = self.home(h);
        loop {
            let s = self.slots[i];
            if s.tagged == EMPTY {
                return None;
            }
            if s.hash == h && self.is_key(s.tagged, key, packed) {
                return Some(i);
            }
            i = (i + 1) & self.mask;
        }
    }

    fn place(&mut self, hash: u32, tagged: u32) {
        let mut i = self.home(hash);
        // A free slot exists: the index is at most half full.
        while self.slots[i].tagged != EMPTY {
            i = (i + 1) & self.mask;
        }
        self.slots[i] = Slot { hash, tagged };
    }

    fn take(&mut self, id: u32) -> Option<Flow> {
        let f = self.get(id)?;
        // Find the keys' slots while the record still answers for them, then free it.
        for key in [f.forward, f.reverse] {
            if let Some(i) = self.find(&key) {
                self.unplace(i);
            }
        }
        let idx = usize::try_from(id).ok()?;
        self.cold[idx] = None;
        self.hot[idx] = FREE_HOT;
        self.free.push(id);
        self.len -= 1;
        self.note_change(id);
        Some(f)
    }

    /// Empties slot `i`, shifting later slots of the same probe run back (no tombstones).
    fn unplace(&mut self, mut i: usize) {
        self.slots[i] = FREE_SLOT;
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            let s = self.slots[j];
            if s.tagged == EMPTY {
                return;
            }
            let home = self.home(s.hash);
            // Slot j may move to i if its home is not in the cyclic range (i, j].
            let stays = if i <= j { i < home && home <= j } else { i < home || home <= j };
            if !stays {
                self.slots[i] = s;
                self.slots[j] = FREE_SLOT;
                i = j;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::net::{IpAddr, Ipv4Addr};

    fn base() -> FlowKey {
        FlowKey::from_parsed(&stack::parse_frame(&stack::fixtures::TCP_SYN).unwrap()).unwrap()
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0xc612_0000 | (n & 0xffff)))
    }

    /// Flow n: client 198.18.x.y:(n) to the VIP, replies from an endpoint to the SNAT address.
    fn flow(n: u32, state: FlowState) -> Flow {
        let b = base();
        let port = u16::try_from(n % 60000 + 1024).unwrap();
        Flow {
            forward: b.rewritten(ip(n), port, ip(0xfff0), 80).unwrap(),
            reverse: b
                .rewritten(ip(0xfff1), 80, ip(0xfff2), u16::try_from(n % 65000).unwrap())
                .unwrap(),
            endpoint: n % 3,
            service: 0,
            mode: crate::mesh::model::Mode::Nat,
            checked: 0,
            state,
            expires_ns: 0,
        }
    }

    /// Flow n over IPv6 (odd n) or IPv4 (even n): the table keeps the two families' keys
    /// differently (IPv4 packed on the hot line, IPv6 in the cold record).
    fn flow_any(n: u32, state: FlowState) -> Flow {
        if n.is_multiple_of(2) {
            return flow(n, state);
        }
        let b = FlowKey::from_parsed(
            &stack::parse_frame(&stack::fixtures::ICMPV6_ECHO_REQUEST).unwrap(),
        )
        .unwrap();
        let ip6 = |m: u32| IpAddr::V6(std::net::Ipv6Addr::from(0x2001_0db8 << 96 | u128::from(m)));
        let port = u16::try_from(n % 60000 + 1024).unwrap();
        Flow {
            forward: b.rewritten(ip6(n), port, ip6(0xfff0), 80).unwrap(),
            reverse: b
                .rewritten(ip6(0xfff1), 80, ip6(0xfff2), u16::try_from(n % 65000).unwrap())
                .unwrap(),
            ..flow(n, state)
        }
    }

    fn none() -> impl FnMut(&Flow, Removal) {
        |_, _| {}
    }

    #[test]
    fn a_flow_costs_a_hot_line_and_a_cold_record() {
        assert_eq!(std::mem::size_of::<HotFlow>(), 64);
        assert_eq!(std::mem::align_of::<HotFlow>(), 64);
        // Both keys (38 bytes each) and the endpoint; README's memory figure counts on it.
        assert!(std::mem::size_of::<Option<ColdFlow>>() <= 80);
    }

    #[test]
    fn each_table_seeds_its_index_afresh() {
        let a = FlowTable::new(16, FlowTimeouts::default(), WhenFull::DropNew);
        let b = FlowTable::new(16, FlowTimeouts::default(), WhenFull::DropNew);
        assert_ne!(a.seed, b.seed);
        let k = flow(1, FlowState::SynSent).forward;
        assert_ne!(k.table_hash(a.seed), k.table_hash(b.seed));
    }

    #[test]
    fn both_keys_find_the_flow() {
        let mut t = FlowTable::new(16, FlowTimeouts::default(), WhenFull::DropNew);
        let f = flow(1, FlowState::SynSent);
        let id = t.insert(f, 0, &mut none()).unwrap();
        assert_eq!(t.lookup(&f.forward, 1, &mut none()), Some((id, Direction::Forward)));
        assert_eq!(t.lookup(&f.reverse, 1, &mut none()), Some((id, Direction::Reverse)));
        assert_eq!(t.lookup(&f.forward.reversed(), 1, &mut none()), None);
        assert_eq!(t.insert(f, 0, &mut none()), Err(InsertError::Exists));
        t.remove(id, &mut none());
        assert!(t.is_empty());
        assert_eq!(t.lookup(&f.forward, 1, &mut none()), None);
    }

    #[test]
    fn tcp_states_and_timeouts() {
        let to = FlowTimeouts { syn_ns: 10, established_ns: 1000, closing_ns: 50, datagram_ns: 30 };
        let mut t = FlowTable::new(16, to, WhenFull::DropNew);
        let f = flow(1, FlowState::SynSent);
        let id = t.insert(f, 0, &mut none()).unwrap();
        assert_eq!(t.get(id).unwrap().expires_ns, 10);
        // Another SYN from the client changes nothing; the endpoint's SYN-ACK answers, the
        // client's ACK completes the handshake.
        assert_eq!(t.touch(id, Direction::Forward, tcp_flags::SYN, 5), Transition::None);
        assert_eq!(
            t.touch(id, Direction::Reverse, tcp_flags::SYN | tcp_flags::ACK, 6),
            Transition::Answered
        );
        assert_eq!(t.get(id).unwrap().state, FlowState::SynReceived);
        assert_eq!(t.get(id).unwrap().expires_ns, 16);
        t.touch(id, Direction::Forward, tcp_flags::ACK, 7);
        assert_eq!(t.get(id).unwrap().state, FlowState::Established);
        assert_eq!(t.get(id).unwrap().expires_ns, 1007);
        t.touch(id, Direction::Forward, tcp_flags::FIN | tcp_flags::ACK, 100);
        assert_eq!(t.get(id).unwrap().state, FlowState::Closing);
        assert_eq!(t.get(id).unwrap().expires_ns, 150);
        // A reset handshake is a refusal.
        let g = flow(2, FlowState::SynSent);
        let id2 = t.insert(g, 0, &mut none()).unwrap();
        assert_eq!(
            t.touch(id2, Direction::Reverse, tcp_flags::RST | tcp_flags::ACK, 1),
            Transition::Refused
        );
        // Expiry on lookup reports the removal.
        let mut gone = Vec::new();
        assert_eq!(t.lookup(&f.forward, 150, &mut |f: &Flow, r| gone.push((f.endpoint, r))), None);
        assert_eq!(gone, [(1, Removal::Expired { unanswered: false })]);
    }

    #[test]
    fn an_unanswered_handshake_expires_as_such() {
        let to = FlowTimeouts { syn_ns: 10, ..FlowTimeouts::default() };
        let mut t = FlowTable::new(16, to, WhenFull::DropNew);
        t.insert(flow(1, FlowState::SynSent), 0, &mut none()).unwrap();
        t.insert(flow(2, FlowState::Datagram), 0, &mut none()).unwrap();
        let mut gone = Vec::new();
        assert_eq!(t.sweep(11, 100, &mut |_: &Flow, r| gone.push(r)), 1);
        assert_eq!(gone, [Removal::Expired { unanswered: true }]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_full_table_refuses_or_evicts_handshakes_only() {
        let mut t = FlowTable::new(4, FlowTimeouts::default(), WhenFull::DropNew);
        for n in 0..4 {
            t.insert(flow(n, FlowState::SynSent), 0, &mut none()).unwrap();
        }
        assert_eq!(t.insert(flow(9, FlowState::SynSent), 0, &mut none()), Err(InsertError::Full));
        assert_eq!(t.stats.refused_full, 1);

        let mut t = FlowTable::new(4, FlowTimeouts::default(), WhenFull::EvictEmbryonic);
        let mut ids = Vec::new();
        for n in 0..4 {
            ids.push(t.insert(flow(n, FlowState::SynSent), 0, &mut none()).unwrap());
        }
        // Flows 0 and 1 get established; the flood may only push out 2 and 3, answered by the
        // endpoint or not.
        for &id in &ids[..2] {
            t.touch(id, Direction::Reverse, tcp_flags::SYN | tcp_flags::ACK, 1);
            t.touch(id, Direction::Forward, tcp_flags::ACK, 1);
        }
        t.touch(ids[2], Direction::Reverse, tcp_flags::SYN | tcp_flags::ACK, 1);
        let mut evicted = Vec::new();
        for n in 10..20 {
            let _ = t.insert(flow(n, FlowState::SynSent), 2, &mut |f: &Flow, r| {
                evicted.push((f.forward.src_port(), r));
            });
        }
        assert_eq!(t.len(), 4);
        assert!(t.lookup(&flow(0, FlowState::SynSent).forward, 3, &mut none()).is_some());
        assert!(t.lookup(&flow(1, FlowState::SynSent).forward, 3, &mut none()).is_some());
        assert!(evicted.iter().all(|(_, r)| *r == Removal::Evicted));
        assert_eq!(t.stats.evicted, u64::try_from(evicted.len()).unwrap());
    }

    #[test]
    fn changes_are_noted_while_tracked_and_a_carried_flow_keeps_its_time_left() {
        let to =
            FlowTimeouts { syn_ns: 10, established_ns: 1000, closing_ns: 50, datagram_ns: 300 };
        let mut t = FlowTable::new(200, to, WhenFull::DropNew);
        let ids: Vec<u32> = (0..100)
            .map(|n| t.insert(flow(n, FlowState::Datagram), 0, &mut none()).unwrap())
            .collect();
        t.track_changes(true);
        // Touched, removed, inserted: each noted once; the rest not at all.
        t.touch(ids[3], Direction::Forward, 0, 100);
        t.remove(ids[7], &mut none());
        let new = t.insert(flow(500, FlowState::SynSent), 100, &mut none()).unwrap();
        let mut seen = Vec::new();
        let mut cursor = 0;
        while !t.drain_changes(&mut cursor, 1, 150, &mut |id, f| seen.push((id, f))) {}
        seen.sort_by_key(|(id, _)| *id);
        // The new flow took the removed one's record: it is handed out once, as it is now
        // (the receiver replaces what the record held with it).
        assert_eq!(new, ids[7]);
        assert_eq!(seen.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [ids[3], ids[7]]);
        for (id, f) in &seen {
            if *id == ids[7] {
                assert_eq!(f.map(|f| f.state), Some(FlowState::SynSent));
            } else if *id == ids[3] {
                // Touched at 100 with a 300 ns timeout: 250 left at 150.
                assert_eq!(f.map(|f| f.expires_ns), Some(250));
            }
        }
        // A removal alone is handed out as gone.
        t.remove(ids[9], &mut none());
        let mut gone = Vec::new();
        cursor = 0;
        t.drain_changes(&mut cursor, usize::MAX, 150, &mut |id, f| gone.push((id, f.is_none())));
        assert_eq!(gone, [(ids[9], true)]);
        // Handed out once: the map is clear again.
        let mut again = 0;
        cursor = 0;
        t.drain_changes(&mut cursor, usize::MAX, 150, &mut |_, _| again += 1);
        assert_eq!(again, 0);
        // Another table takes it over with the time it had left, from its own clock.
        let mut other = FlowTable::new(200, to, WhenFull::DropNew);
        let carried = t.carried(ids[3], 150).unwrap();
        let id = other.import(carried, 10_000).unwrap();
        assert_eq!(other.get(id).unwrap().expires_ns, 10_250);
        assert_eq!(
            other.lookup(&carried.forward, 10_249, &mut none()),
            Some((id, Direction::Forward))
        );
        assert_eq!(other.import(carried, 10_000), Err(InsertError::Exists));
        // A handshake taken over can still be evicted for new flows.
        let mut small = FlowTable::new(1, to, WhenFull::EvictEmbryonic);
        let mut answered = flow(600, FlowState::SynReceived);
        answered.expires_ns = 5;
        small.import(answered, 0).unwrap();
        assert!(small.insert(flow(601, FlowState::SynSent), 1, &mut none()).is_ok());
        assert_eq!(small.stats.evicted, 1);
    }

    proptest! {
        /// Against a HashMap model: inserts, removals and lookups agree, through many
        /// backward-shift deletions in a small, crowded index.
        #[test]
        fn agrees_with_a_map(ops in proptest::collection::vec((0u8..3, 0u32..48), 1..400)) {
            let mut t = FlowTable::new(32, FlowTimeouts::default(), WhenFull::DropNew);
            let mut model: HashMap<u32, u32> = HashMap::new();
            for (op, n) in ops {
                let f = flow_any(n, FlowState::Datagram);
                match op {
                    0 => match t.insert(f, 0, &mut none()) {
                        Ok(id) => { prop_assert!(!model.contains_key(&n)); model.insert(n, id); }
                        Err(InsertError::Exists) => prop_assert!(model.contains_key(&n)),
                        Err(InsertError::Full) => prop_assert_eq!(model.len(), 32),
                    },
                    1 => if let Some(id) = model.remove(&n) { t.remove(id, &mut none()); },
                    _ => {
                        let got = t.lookup(&f.reverse, 0, &mut none()).map(|(id, _)| id);
                        prop_assert_eq!(got, model.get(&n).copied());
                    }
                }
                prop_assert_eq!(t.len(), model.len());
            }
            for (n, id) in &model {
                let f = flow_any(*n, FlowState::Datagram);
                prop_assert_eq!(t.lookup(&f.forward, 0, &mut none()), Some((*id, Direction::Forward)));
            }
        }
    }
}
