//! One worker's share of the mesh: its flow table, its picks, its translations.
//!
//! [`MeshEngine::handle`] takes a parsed TCP or UDP packet and says what the mesh makes of it:
//! nothing (ordinary routing goes on), a translation done in place (the caller routes the
//! packet to its new destination), a drop with its reason, or a handoff to the worker that owns
//! the flow. Per packet it costs a flow lookup; per new flow a service lookup, a pick and an
//! insert: all O(1) in the number of services, endpoints and flows, and nothing allocates.
//!
//! Ownership: a flow lives on one worker. Forward packets of a flow reach the same worker by
//! the queue's flow hash. NAT replies come to weir's SNAT port, and ports are handed out so
//! that `(port - first port) % workers` is the owner; DNAT replies carry the client's address
//! and port, so DNAT flows belong to the worker `hash(client) % workers`, computable from both
//! directions.

use super::flow::{
    tcp_flags, Direction, Flow, FlowState, FlowTable, FlowTimeouts, InsertError, Removal,
    Transition, WhenFull,
};
use super::health::HealthTable;
use super::model::{proto, MeshSnapshot, Mode, OnEndpointGone, Policy};
use super::schedule::{two_choices, Rng};
use crate::pipeline::DropReason;
use arc_swap::ArcSwap;
use stack::nat::SocketAddr;
use stack::parse::{Parsed, L3, L4};
use stack::{FlowKey, PackedV4};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Seed of the flow hash Maglev picks with: the same on every worker and in every run, so a
/// flow picks the same endpoint wherever it lands.
const PICK_SEED: u64 = 0x7765_6972_6d61_676c;
/// Seed of the DNAT owner hash.
const OWNER_SEED: u64 = 0x7765_6972_6f77_6e72;
/// The sweep means to look at every flow record once in this long, so that a flow is freed
/// about this long after it expires even if none of its packets comes to find it expired. A
/// worker that polls less often than `capacity / SWEEP_MAX_PER_POLL` times in this period (an
/// idle one, sleeping between polls) takes longer.
const SWEEP_PERIOD_NS: u64 = 1_000_000_000;
/// Most flow records the sweep looks at per poll.
const SWEEP_MAX_PER_POLL: u64 = 1024;
/// SNAT ports tried for one new flow before giving up.
const SNAT_TRIES: u32 = 16;

/// The endpoint id of a flow whose endpoint this configuration does not know (a flow taken
/// over from another weir whose configuration had it).
pub const NO_ENDPOINT: u32 = u32::MAX;

/// The mesh configuration as all workers share it: the current snapshot and a generation
/// number that changes with every swap (one relaxed load tells a worker whether to reload).
pub struct SharedMesh {
    snapshot: ArcSwap<MeshSnapshot>,
    generation: AtomicU64,
    /// What the workers see of each endpoint's connections.
    pub health: HealthTable,
    /// Set while weir drains: no new flows (a new TCP connection is reset, a new UDP flow
    /// dropped as `draining`); existing flows carry on.
    pub draining: AtomicBool,
    /// Each worker's share, by worker index.
    pub workers: Box<[Arc<WorkerShare>]>,
    endpoints: usize,
    services: usize,
    /// Snapshots swapped out that a worker may still hold: kept (by the control thread
    /// alone) so that the last reference, and with it the freeing of a large snapshot, is
    /// never a worker's.
    retired: std::sync::Mutex<Vec<Arc<MeshSnapshot>>>,
}

crate::counters! {
    /// One service's counters on one worker.
    pub struct ServiceCounters => ServiceTotals {
        /// Packets of the service's flows translated or encapsulated, both directions (ICMP
        /// errors about them are counted apart, in the worker's `icmp_translated`).
        Counter packets,
        /// Bytes of those packets (frames as received).
        Counter bytes,
        /// Flows opened.
        Counter flows_opened,
        /// Flows ended: closed, expired, evicted or reset.
        Counter flows_closed,
        /// Flows whose handshake the endpoint refused or left unanswered.
        Counter flows_failed,
    }
}

/// What one worker's mesh shows the rest of weir while it runs: per-service counters and
/// active flows per endpoint. The worker alone writes them (plain loads and stores, no
/// read-modify-write), anyone reads them.
pub struct WorkerShare {
    /// By stable service id ([`super::model::Service::id`]).
    pub services: Box<[ServiceCounters]>,
    /// Flows per stable endpoint id (what least-request balances on).
    pub active: Box<[std::sync::atomic::AtomicU32]>,
}

impl WorkerShare {
    fn new(endpoints: usize, services: usize) -> Self {
        WorkerShare {
            services: (0..services).map(|_| ServiceCounters::default()).collect(),
            active: (0..endpoints).map(|_| std::sync::atomic::AtomicU32::new(0)).collect(),
        }
    }

    #[inline(always)]
    fn service(&self, id: u32) -> Option<&ServiceCounters> {
        self.services.get(usize::try_from(id).ok()?)
    }

    #[inline]
    fn active_add(&self, endpoint: u32, up: bool) {
        if let Some(a) = self.active.get(usize::try_from(endpoint).unwrap_or(usize::MAX)) {
            let n = a.load(Ordering::Relaxed);
            a.store(if up { n.saturating_add(1) } else { n.saturating_sub(1) }, Ordering::Relaxed);
        }
    }
}

/// Adds to a counter only its owning worker writes: a plain load and store.
#[inline(always)]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl SharedMesh {
    /// Shares `snapshot`, with health counters for `endpoints` endpoint ids and a share for
    /// each of `workers` workers (counters for `services` service ids).
    pub fn new(
        snapshot: MeshSnapshot,
        endpoints: usize,
        services: usize,
        workers: usize,
    ) -> Arc<SharedMesh> {
        let generation = AtomicU64::new(snapshot.generation);
        Arc::new(SharedMesh {
            snapshot: ArcSwap::from_pointee(snapshot),
            generation,
            health: HealthTable::new(endpoints),
            draining: AtomicBool::new(false),
            workers: (0..workers)
                .map(|_| Arc::new(WorkerShare::new(endpoints, services)))
                .collect(),
            endpoints,
            services,
            retired: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Worker `worker`'s share (one of its own if the mesh was made for fewer workers).
    fn share(&self, worker: u16) -> Arc<WorkerShare> {
        self.workers
            .get(usize::from(worker))
            .map_or_else(|| Arc::new(WorkerShare::new(self.endpoints, self.services)), Arc::clone)
    }

    /// A service's counters summed over the workers.
    pub fn service_totals(&self, id: u32) -> ServiceTotals {
        let mut t = ServiceTotals::default();
        for w in self.workers.iter() {
            if let Some(c) = w.service(id) {
                t.add(&c.snapshot());
            }
        }
        t
    }

    /// Flows on endpoint `id`, over the workers.
    pub fn active_flows(&self, id: u32) -> u64 {
        let i = usize::try_from(id).unwrap_or(usize::MAX);
        self.workers
            .iter()
            .filter_map(|w| w.active.get(i))
            .map(|a| u64::from(a.load(Ordering::Relaxed)))
            .sum()
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<MeshSnapshot> {
        self.snapshot.load_full()
    }

    /// Replaces the snapshot; workers pick it up at their next poll. (Control thread only:
    /// workers never take the lock.)
    pub fn store(&self, snapshot: MeshSnapshot) {
        let g = snapshot.generation;
        let old = self.snapshot.swap(Arc::new(snapshot));
        self.generation.store(g, Ordering::Release);
        let mut retired = self.retired.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Those no worker holds any more are freed here.
        retired.retain(|s| Arc::strong_count(s) > 1);
        retired.push(old);
    }
}

/// Per-worker mesh settings, fixed at start-up.
#[derive(Clone, Copy, Debug)]
pub struct MeshSettings {
    /// Flows per worker.
    pub flow_capacity: usize,
    /// Flow timeouts.
    pub timeouts: FlowTimeouts,
    /// New flows in a full table.
    pub when_full: WhenFull,
    /// SNAT port range, inclusive.
    pub snat_ports: (u16, u16),
    /// Most endpoint ids (the model's capacity).
    pub endpoints: usize,
    /// Most clusters (the model's capacity).
    pub clusters: usize,
    /// Answer a TCP segment (not a SYN) of no known flow, for a NAT service, with a reset from
    /// the VIP ([`MeshAction::Reset`]) instead of dropping it.
    pub reset_unknown: bool,
    /// Before that, let the other workers look for its flow ([`MeshAction::Seek`]): for ports
    /// that do not keep a flow on one queue, with more than one worker.
    pub seek_unknown: bool,
}

/// What the engine needs to know of routing.
pub trait Routes {
    /// weir's address facing `endpoint` (the source of NAT flows to it).
    fn source_toward(&self, endpoint: IpAddr) -> Option<IpAddr>;
    /// The MTU, bytes, of the port the route to `dst` leaves by.
    fn mtu_toward(&self, dst: IpAddr) -> Option<u16>;
}

/// What the mesh made of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeshAction {
    /// Not a mesh packet: route it as usual.
    Pass,
    /// Translated in place: route it to its new destination (its offsets, length and TTL are
    /// as parsed).
    Translated {
        /// The destination address now in the packet.
        dst: IpAddr,
    },
    /// Drop it.
    Drop(DropReason),
    /// Its flow belongs to this worker.
    Handoff(u16),
    /// A TCP segment of a connection under way with no flow here, which another worker may
    /// hold: on a port that does not keep a flow on one queue (DPDK's `net_af_packet` rolls
    /// frames over to another queue when one's ring is full), a connection's segments can
    /// reach any worker. Each worker looks in turn (at most 255); the last one resets or drops
    /// it as [`MeshSettings::reset_unknown`] says. Only with
    /// [`MeshSettings::seek_unknown`].
    Seek(u16),
    /// Its flow's endpoint is gone and the cluster resets such flows: answer this TCP segment
    /// with a reset (the flow is already removed).
    Reset,
    /// Translated, it would not fit the MTU toward its new destination (this many bytes):
    /// answer it as a router does, untranslated (nothing was changed).
    TooBig {
        /// The MTU the packet must fit.
        mtu: u16,
    },
    /// DSR: encapsulate it, unchanged, to this endpoint address.
    Encapsulate {
        /// The endpoint's address (the outer destination).
        endpoint: IpAddr,
        /// How.
        encap: super::model::Encap,
        /// A flow hash, for the outer header's entropy.
        entropy: u16,
    },
}

/// Mesh counters of one worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeshCounters {
    /// Flows opened.
    pub flows_opened: u64,
    /// Packets translated client to endpoint.
    pub forward: u64,
    /// Packets translated endpoint to client.
    pub reverse: u64,
    /// Handshakes the endpoint answered.
    pub connects_ok: u64,
    /// Handshakes refused (RST) or unanswered.
    pub connects_failed: u64,
    /// ICMP errors about flows, translated.
    pub icmp_translated: u64,
    /// Handshakes an endpoint answered with a challenge ACK: the 4-tuple weir chose was still
    /// in use there (see [`Transition::Collided`]).
    pub snat_collisions: u64,
    /// Failed handshakes not held against their endpoint, because the worker was evicting
    /// handshakes (a flood) when they failed.
    pub connects_failed_unjudged: u64,
}

/// One worker's mesh state.
pub struct MeshEngine {
    worker: u16,
    workers: u16,
    shared: Arc<SharedMesh>,
    snap: Arc<MeshSnapshot>,
    flows: FlowTable,
    /// Round-robin cursor per cluster index (capacity fixed at start-up).
    rr: Vec<u32>,
    /// Per-service counters and flows per endpoint id (least-request) of this worker.
    share: Arc<WorkerShare>,
    /// (service, packets, bytes) counted but not yet added to that service's counters: a
    /// burst is mostly one service's, and adding once per run of its packets (and at the
    /// latest at the next poll) spares two read-modify-writes a packet.
    pending: (u32, u64, u64),
    rng: Rng,
    snat_first: u16,
    snat_count: u32,
    snat_cursor: u32,
    /// Step between the SNAT ports handed out in a row: coprime with this worker's share of
    /// the range, so every port comes round once before any comes again.
    snat_stride: u32,
    /// Whether failed handshakes count against their endpoint now: not while the worker is
    /// evicting handshakes for new flows, or was lately (see [`MeshEngine::maintain`]).
    judging: bool,
    /// See [`MeshSettings::reset_unknown`].
    reset_unknown: bool,
    /// See [`MeshSettings::seek_unknown`].
    seek_unknown: bool,
    /// Workers that looked for the flow of the packet being handled and did not find it (see
    /// [`MeshEngine::set_seeking`]).
    seeking: u8,
    /// Evictions seen at the last housekeeping, and when the last one was seen.
    evictions_seen: u64,
    last_eviction_ns: Option<u64>,
    /// How long after an eviction failures are not judged: a handshake timeout, and the time
    /// the sweep may take to find a flow expired.
    unjudged_ns: u64,
    /// The mesh's handshake timeout (clusters may set their own).
    syn_ns: u64,
    /// The expiry sweep's pace.
    sweep: SweepPace,
    /// Counters.
    pub counters: MeshCounters,
}

/// How a NAT or DNAT flow's packet going `dir` is rewritten: (new source, new destination,
/// the destination address it ends up with). DSR flows are not rewritten.
#[inline]
fn rewrite_for(flow: &Flow, dir: Direction) -> (Option<SocketAddr>, Option<SocketAddr>, IpAddr) {
    let (f, r) = (&flow.forward, &flow.reverse);
    let sa = |a: IpAddr, port: u16| SocketAddr { addr: a, port };
    match (flow.mode, dir) {
        (Mode::Nat, Direction::Forward) => {
            (Some(sa(r.dst(), r.dst_port())), Some(sa(r.src(), r.src_port())), r.src())
        }
        (Mode::Dnat, Direction::Forward) => (None, Some(sa(r.src(), r.src_port())), r.src()),
        (Mode::Nat, Direction::Reverse) => {
            (Some(sa(f.dst(), f.dst_port())), Some(sa(f.src(), f.src_port())), f.src())
        }
        (Mode::Dnat, Direction::Reverse) => (Some(sa(f.dst(), f.dst_port())), None, r.dst()),
        (Mode::Dsr(_), Direction::Forward) => (None, None, f.dst()),
        (Mode::Dsr(_), Direction::Reverse) => (None, None, r.dst()),
    }
}

/// A packet of a known IPv4 NAT or DNAT flow, as the fast path found it: what it leaves as,
/// and what that does to its checksums.
#[derive(Clone, Copy, Debug)]
pub struct FastHit {
    id: u32,
    dir: Direction,
    service: u32,
    /// The packet's key once translated: the other direction's key, reversed.
    to: PackedV4,
    deltas: stack::nat::V4Deltas,
}

impl FastHit {
    /// The destination once translated.
    #[inline(always)]
    pub fn new_dst(&self) -> Ipv4Addr {
        self.to.dst()
    }
}

/// The sweep's pace: one record every `ns_per_record`, and where it stands.
#[derive(Clone, Copy, Debug)]
struct SweepPace {
    ns_per_record: u64,
    /// Time up to which records have been swept.
    swept_ns: u64,
}

impl SweepPace {
    fn new(capacity: usize) -> SweepPace {
        let capacity = u64::try_from(capacity.max(1)).unwrap_or(u64::MAX);
        SweepPace { ns_per_record: (SWEEP_PERIOD_NS / capacity).max(1), swept_ns: 0 }
    }

    /// How many records are due at `now_ns`, at most [`SWEEP_MAX_PER_POLL`]; counts them as
    /// swept. Time not yet worth a record carries over, and a backlog is kept to one period.
    #[inline]
    fn due(&mut self, now_ns: u64) -> usize {
        let elapsed = now_ns.saturating_sub(self.swept_ns);
        if elapsed < self.ns_per_record {
            return 0;
        }
        if elapsed > SWEEP_PERIOD_NS {
            self.swept_ns = now_ns - SWEEP_PERIOD_NS;
        }
        let due = (now_ns - self.swept_ns) / self.ns_per_record;
        let n = due.min(SWEEP_MAX_PER_POLL);
        self.swept_ns += n * self.ns_per_record;
        usize::try_from(n).unwrap_or(0)
    }
}

/// Flows leaving the table: their endpoint loses an active flow, their service counts them
/// closed; an unanswered handshake is a failed connect.
fn on_removed<'a>(
    share: &'a WorkerShare,
    health: &'a HealthTable,
    counters: &'a mut MeshCounters,
    judging: bool,
) -> impl FnMut(&Flow, Removal) + 'a {
    move |f, r| {
        share.active_add(f.endpoint, false);
        let service = share.service(f.service);
        if let Some(c) = service {
            bump(&c.flows_closed, 1);
        }
        if matches!(r, Removal::Expired { unanswered: true }) {
            if let Some(c) = service {
                bump(&c.flows_failed, 1);
            }
            counters.connects_failed += 1;
            if judging {
                health.failed(f.endpoint);
            } else {
                counters.connects_failed_unjudged += 1;
            }
        }
    }
}

/// A random number, different in every process: where SNAT ports start and how they step.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    h.finish()
}

const fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

/// A step through `n` ports from `seed` that visits each once per round: coprime with `n`.
fn stride_for(n: u32, seed: u64) -> u32 {
    if n <= 1 {
        return 1;
    }
    let mut s = u32::try_from(seed % u64::from(n)).unwrap_or(1).max(1);
    while gcd(s, n) != 1 {
        s = s % (n - 1) + 1;
    }
    s
}

impl MeshEngine {
    /// Worker `worker` of `workers`.
    pub fn new(
        worker: u16,
        workers: u16,
        settings: &MeshSettings,
        shared: Arc<SharedMesh>,
    ) -> Self {
        let (lo, hi) = settings.snat_ports;
        let flows = FlowTable::new(settings.flow_capacity, settings.timeouts, settings.when_full);
        // Ports start at a random place and step by a random stride in every run, as the
        // kernel's do (RFC 6056): a restarted weir does not hand out again the 4-tuples its
        // predecessor left in the endpoints' TIME_WAIT.
        let snat_count = u32::from(hi.saturating_sub(lo)) + 1;
        let w = u32::from(workers.max(1));
        let mine = snat_count / w + u32::from(snat_count % w > u32::from(worker));
        let seed = random_u64();
        let snat_cursor = u32::try_from(seed % u64::from(mine.max(1))).unwrap_or(0);
        let snat_stride = stride_for(mine, seed >> 32);
        MeshEngine {
            worker,
            workers: workers.max(1),
            snap: shared.load(),
            share: shared.share(worker),
            pending: (super::flow::NO_SERVICE, 0, 0),
            shared,
            sweep: SweepPace::new(flows.capacity()),
            flows,
            rr: vec![0; settings.clusters],
            rng: Rng::new(u64::from(worker) ^ 0x5eed),
            snat_first: lo,
            snat_count,
            snat_cursor,
            snat_stride,
            judging: true,
            reset_unknown: settings.reset_unknown,
            seek_unknown: settings.seek_unknown,
            seeking: 0,
            evictions_seen: 0,
            last_eviction_ns: None,
            unjudged_ns: settings.timeouts.syn_ns.saturating_add(2 * SWEEP_PERIOD_NS),
            syn_ns: settings.timeouts.syn_ns,
            counters: MeshCounters::default(),
        }
    }

    /// Between bursts: takes up a new snapshot if there is one, and expires a few flows.
    ///
    /// While this worker evicts handshakes to make room (a flood of new flows), and for a
    /// handshake timeout after, failed handshakes are not held against their endpoints: the
    /// flood's own flows fail, and a SNAT port handed out again soon after its flow was
    /// evicted meets what the endpoint still holds of the old one. An attacker must not be
    /// able to get healthy endpoints ejected.
    pub fn maintain(&mut self, now_ns: u64) {
        self.flush_counts();
        if self.shared.generation.load(Ordering::Acquire) != self.snap.generation {
            let before = self.snap.generation;
            self.snap = self.shared.load();
            let longest =
                self.snap.clusters.iter().filter_map(|c| c.connect_timeout_ns).max().unwrap_or(0);
            self.unjudged_ns = self.syn_ns.max(longest).saturating_add(2 * SWEEP_PERIOD_NS);
            // A service id handed out since may have been another service's: its counters
            // start again. The snapshot lists the ids it handed out; only a worker that missed
            // a snapshot looks through every service.
            let fresh = |id: u32| {
                if let Some(c) = self.share.service(id) {
                    c.publish(&ServiceTotals::default());
                }
            };
            if self.snap.generation == before + 1 {
                self.snap.born_services.iter().copied().for_each(fresh);
            } else {
                self.snap.service_list.iter().filter(|s| s.born > before).for_each(|s| fresh(s.id));
            }
        }
        let evicted = self.flows.stats.evicted;
        if evicted != self.evictions_seen {
            self.evictions_seen = evicted;
            self.last_eviction_ns = Some(now_ns);
        }
        self.judging =
            self.last_eviction_ns.is_none_or(|t| now_ns.saturating_sub(t) >= self.unjudged_ns);
        // Paced by time, not by polls: at a high packet rate a fixed number of records per
        // poll would stream the whole table through the cache many times a second.
        let due = self.sweep.due(now_ns);
        if due > 0 && !self.flows.is_empty() {
            let mut cb =
                on_removed(&self.share, &self.shared.health, &mut self.counters, self.judging);
            self.flows.sweep(now_ns, due, &mut cb);
        }
    }

    /// Whether any service is configured.
    #[inline]
    pub fn is_active(&self) -> bool {
        !self.snap.service_list.is_empty()
    }

    /// Whether a packet from `src` to `dst` may concern the mesh (see
    /// [`MeshSnapshot::may_concern`]).
    #[inline]
    pub fn may_concern(&self, src: &IpAddr, dst: &IpAddr) -> bool {
        self.snap.may_concern(src, dst)
    }

    /// The flow table (for statistics).
    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    /// The flow table, writable (a hot restart copies it out while it serves: see
    /// [`FlowTable::track_changes`]).
    pub fn flows_mut(&mut self) -> &mut FlowTable {
        &mut self.flows
    }

    /// Takes over a flow another weir held (see [`FlowTable::carried`]). Its endpoint and
    /// service are looked up again in this weir's snapshot, by the endpoint's address and port
    /// and by the service's VIP, port and protocol (ids are each process's own); an endpoint
    /// or service this configuration lacks is [`NO_ENDPOINT`] or [`NO_SERVICE`], and the
    /// flow's first packet checks it against the configuration as after a reload.
    ///
    /// [`NO_SERVICE`]: super::flow::NO_SERVICE
    pub fn import(&mut self, mut flow: Flow, now_ns: u64) -> Result<u32, InsertError> {
        let (f, r) = (flow.forward, flow.reverse);
        flow.endpoint = self.snap.endpoint_id(r.src(), r.src_port()).unwrap_or(NO_ENDPOINT);
        flow.service = self
            .snap
            .service(f.dst(), f.dst_port(), f.proto())
            .map_or(super::flow::NO_SERVICE, |(_, s)| s.id);
        // Never this snapshot's tag, nor a later one's: the first packet checks.
        flow.checked = super::flow::generation_tag(self.snap.generation.wrapping_sub(1));
        let id = self.flows.import(flow, now_ns)?;
        self.share.active_add(flow.endpoint, true);
        Ok(id)
    }

    /// The id of the flow holding `key` in this worker's table, if one does.
    pub fn flow_id(&self, key: &FlowKey) -> Option<u32> {
        self.flows.id_of(key)
    }

    /// Removes flow `id`, imported or not, counting it nowhere but its endpoint's active flows
    /// (a hot restart's flow that ended in the old weir after it was copied).
    pub fn forget(&mut self, id: u32) {
        let share = &self.share;
        self.flows.remove(id, &mut |f: &Flow, _| share.active_add(f.endpoint, false));
    }

    /// Per-service counters and active flows per endpoint id of this worker.
    pub fn share(&self) -> &WorkerShare {
        &self.share
    }

    fn owner_of_client(&self, addr: IpAddr, port: u16) -> u16 {
        if self.workers == 1 {
            return 0;
        }
        let a = match addr {
            IpAddr::V4(v4) => u64::from(u32::from(v4)),
            IpAddr::V6(v6) => {
                let o = v6.octets();
                o.iter().fold(0u64, |h, &b| super::mix64(h ^ u64::from(b)))
            }
        };
        let h = super::mix64(OWNER_SEED ^ a ^ (u64::from(port) << 48));
        u16::try_from(h % u64::from(self.workers)).unwrap_or(0)
    }

    /// Says how many workers looked for the flow of the packets handled next and did not find
    /// it ([`MeshAction::Seek`]): the pipeline sets it for a packet another worker handed over
    /// so, and back to 0 after.
    pub fn set_seeking(&mut self, passes: u8) {
        self.seeking = passes;
    }

    /// See [`MeshEngine::set_seeking`].
    pub fn seeking(&self) -> u8 {
        self.seeking
    }

    fn owner_of_snat_port(&self, port: u16) -> Option<u16> {
        let off = u32::from(port.checked_sub(self.snat_first)?);
        (off < self.snat_count).then(|| u16::try_from(off % u32::from(self.workers)).unwrap_or(0))
    }

    /// Handles a parsed packet (see the module docs). `dst_is_local` says whether the
    /// destination is one of weir's own addresses (NAT replies come there); `snat_source`
    /// gives weir's address facing an endpoint. When it returns [`MeshAction::Translated`] the
    /// frame's addresses and ports (and checksums) are rewritten; `parsed` then describes the
    /// frame as it was.
    pub fn handle(
        &mut self,
        frame: &mut [u8],
        parsed: &Parsed,
        dst_is_local: bool,
        routes: &impl Routes,
        now_ns: u64,
    ) -> MeshAction {
        let Some(l4) = parsed.l4 else { return MeshAction::Pass };
        let flags = match l4.header {
            L4::Tcp { flags, .. } => flags,
            L4::Udp { .. } => 0,
            _ => return MeshAction::Pass,
        };
        let fragment = match parsed.l3 {
            L3::Ipv4(ref ip) => ip.is_fragment,
            L3::Ipv6(ref ip) => ip.is_fragment,
            L3::Arp(_) => return MeshAction::Pass,
        };
        let Some(key) = FlowKey::from_parsed(parsed) else { return MeshAction::Pass };
        let found = {
            let mut cb =
                on_removed(&self.share, &self.shared.health, &mut self.counters, self.judging);
            self.flows.lookup(&key, now_ns, &mut cb)
        };
        let opening = flags & tcp_flags::SYN != 0 && flags & tcp_flags::ACK == 0;
        if let Some((id, dir)) = found {
            if fragment {
                return MeshAction::Drop(DropReason::Untranslatable);
            }
            if !(opening && dir == Direction::Forward && self.is_closing(id)) {
                return self.existing(frame, parsed, id, dir, flags, routes, now_ns);
            }
            // The client reuses the port of a connection that has ended: a new connection,
            // picked afresh (the old flow only waited out its closing timeout).
            let mut cb =
                on_removed(&self.share, &self.shared.health, &mut self.counters, self.judging);
            self.flows.remove(id, &mut cb);
        }
        // Not a flow of this worker. A reply to a SNAT port, or a DNAT reply, of another's?
        let (src, dst) = (key.src(), key.dst());
        if dst_is_local {
            return match self.owner_of_snat_port(key.dst_port()) {
                Some(w) if w != self.worker => MeshAction::Handoff(w),
                Some(_) => MeshAction::Drop(DropReason::NoFlow),
                None => MeshAction::Pass,
            };
        }
        let Some((_, svc)) = self.snap.service(dst, key.dst_port(), key.proto()) else {
            if self.snap.is_vip(&dst) {
                return MeshAction::Drop(DropReason::NoService);
            }
            // Perhaps a DNAT reply (from an endpoint to a client) whose flow lives elsewhere.
            let owner = self.owner_of_client(dst, key.dst_port());
            if owner != self.worker && self.snap.may_concern(&src, &dst) {
                return MeshAction::Handoff(owner);
            }
            return MeshAction::Pass;
        };
        let (mode, cluster_idx, service) = (svc.mode, svc.cluster, svc.id);
        if mode == Mode::Dnat {
            let owner = self.owner_of_client(src, key.src_port());
            if owner != self.worker {
                return MeshAction::Handoff(owner);
            }
        }
        if fragment {
            return MeshAction::Drop(DropReason::Untranslatable);
        }
        let state = if key.proto() == proto::TCP {
            if opening {
                FlowState::SynSent
            } else if mode == Mode::Nat {
                // Mid-connection: another worker may hold its flow (see MeshAction::Seek).
                if self.seek_unknown
                    && self.seeking < u8::MAX
                    && u16::from(self.seeking) + 1 < self.workers
                {
                    return MeshAction::Seek((self.worker + 1) % self.workers);
                }
                // Nobody does: the SNAT port it had is unknown, so the connection cannot go
                // on; a reset tells the client at once rather than after its timeouts.
                if self.reset_unknown && flags & tcp_flags::RST == 0 {
                    return MeshAction::Reset;
                }
                return MeshAction::Drop(DropReason::NoFlow);
            } else {
                // DNAT and DSR keep the client's tuple: pick again (Maglev picks the same
                // endpoint while the cluster is unchanged) and carry on.
                FlowState::Established
            }
        } else {
            FlowState::Datagram
        };
        // Draining: a new connection had better go elsewhere, at once. (A DNAT connection
        // picked up mid-way is an existing one, and carries on.)
        if state != FlowState::Established && self.shared.draining.load(Ordering::Relaxed) {
            return if state == FlowState::SynSent {
                MeshAction::Reset
            } else {
                MeshAction::Drop(DropReason::Draining)
            };
        }
        let Some(ep) = self.pick(cluster_idx, &key) else {
            return MeshAction::Drop(DropReason::NoEndpoint);
        };
        let reverse = match mode {
            Mode::Nat => {
                let Some(snat) = routes.source_toward(ep.addr) else {
                    return MeshAction::Drop(DropReason::NoEndpoint);
                };
                match self.snat_key(&key, ep.addr, ep.port, snat) {
                    Some(r) => r,
                    None => return MeshAction::Drop(DropReason::SnatExhausted),
                }
            }
            Mode::Dnat | Mode::Dsr(_) => {
                match key.rewritten(ep.addr, ep.port, src, key.src_port()) {
                    Some(r) => r,
                    None => return MeshAction::Drop(DropReason::Untranslatable),
                }
            }
        };
        let flow = Flow {
            forward: key,
            reverse,
            endpoint: ep.id,
            service,
            mode,
            checked: super::flow::generation_tag(self.snap.generation),
            state,
            expires_ns: 0,
        };
        let inserted = {
            let mut cb =
                on_removed(&self.share, &self.shared.health, &mut self.counters, self.judging);
            self.flows.insert(flow, now_ns, &mut cb)
        };
        let id = match inserted {
            Ok(id) => id,
            Err(InsertError::Full) => return MeshAction::Drop(DropReason::FlowTableFull),
            Err(InsertError::Exists) => return MeshAction::Drop(DropReason::SnatExhausted),
        };
        let cluster = self.snap.clusters.get(usize::try_from(cluster_idx).unwrap_or(usize::MAX));
        if let Some(t) = cluster.and_then(|c| c.connect_timeout_ns) {
            self.flows.set_expiry(id, now_ns.saturating_add(t));
        }
        self.share.active_add(ep.id, true);
        if let Some(c) = self.share.service(service) {
            bump(&c.flows_opened, 1);
        }
        self.counters.flows_opened += 1;
        self.existing(frame, parsed, id, Direction::Forward, flags, routes, now_ns)
    }

    /// A packet of a known flow: endpoint check, state, translation.
    #[allow(clippy::too_many_arguments)]
    fn existing(
        &mut self,
        frame: &mut [u8],
        parsed: &Parsed,
        id: u32,
        dir: Direction,
        flags: u8,
        routes: &impl Routes,
        now_ns: u64,
    ) -> MeshAction {
        let Some(flow) = self.flows.get(id) else { return MeshAction::Pass };
        if flow.checked != super::flow::generation_tag(self.snap.generation) {
            // The configuration changed since this flow was last checked: is its endpoint
            // still serving?
            // A removed service drains its flows; a cluster decides for its endpoints.
            let service = self.snap.service(
                flow.forward.dst(),
                flow.forward.dst_port(),
                flow.forward.proto(),
            );
            // Its service removed, and its id perhaps another's since: it counts for none.
            if service.is_none_or(|(_, s)| s.id != flow.service) {
                self.flows.set_service(id, super::flow::NO_SERVICE);
            }
            let reset = service.and_then(|(_, s)| self.snap.cluster(s.cluster)).is_some_and(|c| {
                let (addr, port) = (flow.reverse.src(), flow.reverse.src_port());
                !c.is_serving_at(flow.endpoint, addr, port)
                    && c.on_endpoint_gone == OnEndpointGone::Reset
            });
            if reset {
                let mut cb =
                    on_removed(&self.share, &self.shared.health, &mut self.counters, self.judging);
                self.flows.remove(id, &mut cb);
                let tcp = flow.forward.proto() == proto::TCP;
                return if tcp && dir == Direction::Forward && flags & tcp_flags::RST == 0 {
                    MeshAction::Reset
                } else {
                    MeshAction::Drop(DropReason::EndpointGone)
                };
            }
            self.flows.mark_checked(id, self.snap.generation);
        }
        let (f, r) = (flow.forward, flow.reverse);
        let (src, dst, new_dst) = rewrite_for(&flow, dir);
        if !matches!(flow.mode, Mode::Dsr(_)) {
            if let Some(mtu) = routes.mtu_toward(new_dst) {
                if usize::from(parsed.l3_len) > usize::from(mtu) {
                    return MeshAction::TooBig { mtu };
                }
            }
        }
        self.touch(id, dir, flags, now_ns);
        if let Mode::Dsr(encap) = flow.mode {
            if dir == Direction::Reverse {
                // Replies of DSR flows go from the endpoint to the client directly.
                return MeshAction::Pass;
            }
            self.count(Direction::Forward, flow.service, frame.len());
            let h = f.symmetric_hash_seeded(PICK_SEED);
            return MeshAction::Encapsulate {
                endpoint: r.src(),
                encap,
                entropy: u16::try_from(h & 0xffff).unwrap_or(0),
            };
        }
        let site = match stack::nat::NatSite::from_parsed(parsed) {
            Ok(site) => site,
            Err(_) => return MeshAction::Drop(DropReason::Untranslatable),
        };
        if stack::nat::rewrite_at(frame, &site, src, dst).is_err() {
            return MeshAction::Drop(DropReason::Untranslatable);
        }
        self.count(dir, flow.service, frame.len());
        MeshAction::Translated { dst: new_dst }
    }

    /// Starts loading the flow-index slot `key`'s lookup begins at (the first prefetch stage).
    #[inline]
    pub fn prefetch_slot(&self, key: &PackedV4) {
        self.flows.prefetch_slot(key);
    }

    /// Starts loading the flow record `key`'s slot names, once that slot is in the cache (the
    /// second stage).
    #[inline]
    pub fn prefetch_record(&self, key: &PackedV4) {
        self.flows.prefetch_record(key);
    }

    /// An ICMP error about a packet of one of this worker's flows: the quoted packet is turned
    /// back into what the error's recipient sent or knows, the error readdressed, and the new
    /// destination returned to route it to (RFC 5508). Errors about other workers' flows are
    /// handed over; anything else passes.
    pub fn handle_icmp_error(
        &mut self,
        frame: &mut [u8],
        parsed: &Parsed,
        dst_is_local: bool,
        now_ns: u64,
    ) -> MeshAction {
        let Some(q) = stack::icmp_nat::quoted(frame, parsed) else { return MeshAction::Pass };
        let Some(quoted) = FlowKey::from_quoted(&q) else { return MeshAction::Pass };
        // The quoted packet is one weir sent: its reply direction is a key of the flow.
        let found = {
            let mut cb =
                on_removed(&self.share, &self.shared.health, &mut self.counters, self.judging);
            self.flows.lookup(&quoted.reversed(), now_ns, &mut cb)
        };
        let Some((id, dir)) = found else {
            // Perhaps another worker's flow: NAT flows by their SNAT port, DNAT by the client.
            let owner = if dst_is_local {
                self.owner_of_snat_port(q.src.port)
            } else {
                Some(self.owner_of_client(q.src.addr, q.src.port))
            };
            return match owner {
                Some(w) if w != self.worker => MeshAction::Handoff(w),
                _ => MeshAction::Pass,
            };
        };
        let Some(flow) = self.flows.get(id) else { return MeshAction::Pass };
        let (f, r) = (flow.forward, flow.reverse);
        let sa = |a: IpAddr, port: u16| SocketAddr { addr: a, port };
        let (src, dst, outer, route_to) = match (flow.mode, dir) {
            (Mode::Dsr(_), _) => return MeshAction::Pass,
            // About a packet weir sent to the endpoint: the client's own packet, to the client.
            (Mode::Nat, Direction::Reverse) => {
                (sa(f.src(), f.src_port()), sa(f.dst(), f.dst_port()), Some(f.src()), f.src())
            }
            (Mode::Dnat, Direction::Reverse) => {
                (sa(f.src(), f.src_port()), sa(f.dst(), f.dst_port()), None, f.src())
            }
            // About a packet weir sent to the client: the endpoint's, to the endpoint.
            (_, Direction::Forward) => {
                (sa(r.src(), r.src_port()), sa(r.dst(), r.dst_port()), Some(r.src()), r.src())
            }
        };
        if stack::icmp_nat::translate(frame, parsed, &q, src, dst, outer).is_err() {
            return MeshAction::Drop(DropReason::Untranslatable);
        }
        self.counters.icmp_translated += 1;
        MeshAction::Translated { dst: route_to }
    }

    /// The IPv4 fast path's first half: whether this packet belongs to a NAT or DNAT flow this
    /// worker holds, checked against the current snapshot, and where it goes once translated.
    /// Nothing changes yet, so the fast path can still give the packet to the general path
    /// (which handles anything this returns `None` for) if the way on is not clear.
    #[inline(always)]
    pub fn fast_lookup(&self, key: &PackedV4, flags: u8, now_ns: u64) -> Option<FastHit> {
        let (id, dir, flow) = self.flows.peek_v4(key, now_ns)?;
        if flow.checked != super::flow::generation_tag(self.snap.generation) {
            return None;
        }
        let opening = flags & tcp_flags::SYN != 0 && flags & tcp_flags::ACK == 0;
        if opening && flow.state == FlowState::Closing {
            // A new connection on an ended one's port: the general path opens it afresh.
            return None;
        }
        if !matches!(flow.mode, Mode::Nat | Mode::Dnat) {
            return None;
        }
        let d = usize::from(dir == Direction::Reverse);
        Some(FastHit {
            id,
            dir,
            service: flow.service,
            to: flow.keys[1 - d].reversed(),
            deltas: flow.deltas[d],
        })
    }

    /// The second half: translates the packet ([`FastHit`] from [`fast_lookup`] on this very
    /// packet, a TCP one when `tcp`, else UDP) and moves its flow on. False (nothing changed)
    /// if the frame cannot take it.
    ///
    /// [`fast_lookup`]: Self::fast_lookup
    #[inline(always)]
    pub fn fast_commit(
        &mut self,
        frame: &mut [u8],
        tcp: bool,
        hit: &FastHit,
        flags: u8,
        now_ns: u64,
    ) -> bool {
        if stack::nat::translate_v4(frame, tcp, &hit.to, hit.deltas).is_err() {
            return false;
        }
        self.touch(hit.id, hit.dir, flags, now_ns);
        self.count(hit.dir, hit.service, frame.len());
        true
    }

    fn is_closing(&self, id: u32) -> bool {
        self.flows.state(id) == Some(FlowState::Closing)
    }

    /// A packet of flow `id` went `dir`: its state moves on, and a handshake answered or refused
    /// is the endpoint's health.
    #[inline]
    fn touch(&mut self, id: u32, dir: Direction, flags: u8, now_ns: u64) {
        let t = self.flows.touch(id, dir, flags, now_ns);
        if t != Transition::None {
            self.note_transition(id, t);
        }
    }

    /// A handshake of flow `id` answered or refused: its endpoint's health.
    #[cold]
    fn note_transition(&mut self, id: u32, t: Transition) {
        let Some(endpoint) = self.flows.endpoint(id) else { return };
        match t {
            Transition::Answered => {
                self.counters.connects_ok += 1;
                self.shared.health.succeeded(endpoint);
            }
            Transition::Refused => {
                self.counters.connects_failed += 1;
                if let Some(c) = self.flows.service(id).and_then(|s| self.share.service(s)) {
                    bump(&c.flows_failed, 1);
                }
                if self.judging {
                    self.shared.health.failed(endpoint);
                } else {
                    self.counters.connects_failed_unjudged += 1;
                }
            }
            Transition::Collided => self.counters.snat_collisions += 1,
            Transition::None => {}
        }
    }

    /// A packet of `bytes` of a flow of `service` translated going `dir`.
    #[inline(always)]
    fn count(&mut self, dir: Direction, service: u32, bytes: usize) {
        match dir {
            Direction::Forward => self.counters.forward += 1,
            Direction::Reverse => self.counters.reverse += 1,
        }
        let p = &mut self.pending;
        if p.0 == service {
            p.1 += 1;
            p.2 += bytes as u64;
        } else {
            self.flush_counts();
            self.pending = (service, 1, bytes as u64);
        }
    }

    /// Adds the packets and bytes counted since to their service's counters (done at every
    /// poll's housekeeping, and when the service changes).
    #[inline(never)]
    pub fn flush_counts(&mut self) {
        let (service, packets, bytes) = self.pending;
        if packets > 0 {
            if let Some(c) = self.share.service(service) {
                bump(&c.packets, packets);
                bump(&c.bytes, bytes);
            }
            self.pending = (service, 0, 0);
        }
    }

    /// Picks an endpoint of cluster `ci` for a new flow.
    fn pick(&mut self, ci: u32, key: &FlowKey) -> Option<super::model::Endpoint> {
        let c = self.snap.cluster(ci)?;
        if c.eligible.is_empty() {
            return None;
        }
        let i = match c.policy {
            Policy::Maglev => c.maglev()?.lookup(u64::from(key.symmetric_hash_seeded(PICK_SEED))),
            Policy::RoundRobin => {
                let cur = self.rr.get_mut(usize::try_from(ci).ok()?)?;
                *cur = cur.wrapping_add(1);
                c.schedule()?.at(*cur)
            }
            Policy::Random => c.schedule()?.at(self.rng.next_u32()),
            Policy::LeastRequest => {
                let active = &self.share.active;
                let eligible = &c.eligible;
                two_choices(c.schedule()?, &mut self.rng, |i| {
                    eligible
                        .get(usize::from(i))
                        .and_then(|e| active.get(usize::try_from(e.id).ok()?))
                        .map_or(u32::MAX, |a| a.load(Ordering::Relaxed))
                })
            }
        };
        c.eligible.get(usize::from(i)).copied()
    }

    /// A reply key for a NAT flow to endpoint `ep:port` from `snat`, with a SNAT port of this
    /// worker that no flow uses with that endpoint.
    fn snat_key(&mut self, key: &FlowKey, ep: IpAddr, port: u16, snat: IpAddr) -> Option<FlowKey> {
        let w = u32::from(self.workers);
        let mine = self.snat_count / w + u32::from(self.snat_count % w > u32::from(self.worker));
        if mine == 0 {
            return None;
        }
        for _ in 0..SNAT_TRIES.min(mine) {
            let next =
                (u64::from(self.snat_cursor) + u64::from(self.snat_stride)) % u64::from(mine);
            self.snat_cursor = u32::try_from(next).unwrap_or(0);
            let off = self.snat_cursor * w + u32::from(self.worker);
            let p = u16::try_from(u32::from(self.snat_first) + off).ok()?;
            let reply = key.rewritten(ep, port, snat, p)?;
            if !self.flows.contains(&reply) {
                return Some(reply);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::{gcd, stride_for, SweepPace, SWEEP_MAX_PER_POLL, SWEEP_PERIOD_NS};

    #[test]
    fn snat_strides_visit_every_port_once_a_round() {
        for n in [1u32, 2, 3, 10, 64, 20_000, 40_000] {
            for seed in [0u64, 1, 7, 0xdead_beef, u64::MAX] {
                let s = stride_for(n, seed);
                assert!(s >= 1 && (n == 1 || s < n), "{n} {seed} {s}");
                assert_eq!(gcd(s, n.max(1)), 1, "{n} {seed} {s}");
                if n <= 64 {
                    let mut seen = vec![false; n as usize];
                    let mut c = 0u32;
                    for _ in 0..n {
                        c = (c + s) % n;
                        assert!(!std::mem::replace(&mut seen[c as usize], true));
                    }
                }
            }
        }
    }

    #[test]
    fn the_sweep_keeps_its_pace_carries_the_remainder_and_bounds_its_backlog() {
        // 1000 records: one due every millisecond.
        let mut p = SweepPace::new(1000);
        assert_eq!(p.due(500_000), 0);
        assert_eq!(p.due(1_500_000), 1);
        assert_eq!(p.due(1_999_999), 0);
        // The half millisecond left over from the last call counts.
        assert_eq!(p.due(2_000_000), 1);
        // Polled often, a whole period sweeps the whole table.
        let swept: usize = (1..=1000u64).map(|ms| p.due(2_000_000 + ms * 1_000_000)).sum();
        assert_eq!(swept, 1000);
        // After a long sleep the backlog is one period's worth, taken at most
        // SWEEP_MAX_PER_POLL at a time.
        let mut p = SweepPace::new(1_000_000);
        let now = 100 * SWEEP_PERIOD_NS;
        let mut total = 0;
        loop {
            let n = p.due(now);
            assert!(n as u64 <= SWEEP_MAX_PER_POLL);
            if n == 0 {
                break;
            }
            total += n;
        }
        assert_eq!(total, 1_000_000);
    }
}
