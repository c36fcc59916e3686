//! The per-packet pipeline: L2 (ARP, NDP), L3 (LPM routing, TTL, ICMP) and the verdict.
//!
//! Contract of [`Pipeline::process`]: it takes one received frame and its input port, and
//! produces exactly one [`Verdict`]. `Forward` frames are already rewritten (MACs, TTL,
//! checksums) and handed to [`Egress::send`]; `Held` frames wait in the neighbor queue; `Drop`
//! frames are freed by the caller and counted under their [`DropReason`]. Replies weir makes
//! (ARP, NDP, ICMP) are sent through the same [`Egress`]. Nothing here allocates, locks, or
//! panics on what a frame contains; time comes in as `now_ns`.

use crate::buf::PacketBuf;
use crate::fib::{Fib, NextHop};
use crate::mesh::engine::{MeshAction, MeshEngine};
use crate::neigh::{
    Claim, Learned, Lookup, Neighbor, NeighborBus, NeighborTable, NeighborTimers, NeighborUpdate,
};
use stack::icmp::{Icmpv4Error, Icmpv6Error};
use stack::parse::{L3, L4};
use stack::wire::ArpOperation;
use stack::{parse_frame, MacAddr, ParseError, Parsed};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

/// Why a frame was dropped. One counter per reason per worker.
///
/// This declaration is the one list of reasons: the counters' array length, the names in
/// `/stats`, `/metrics` and capture comments (snake case of the variant) and their help (the
/// doc comment) all come from it.
#[repr(u8)]
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    strum::EnumCount,
    strum::VariantArray,
    strum::IntoStaticStr,
    strum::EnumMessage,
)]
#[strum(serialize_all = "snake_case")]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    TruncatedEthernet,
    /// An EtherType weir does not handle.
    UnknownEtherType,
    /// More VLAN tags than the parser walks.
    VlanTooDeep,
    /// A VLAN tag cut short.
    TruncatedVlan,
    /// A VLAN-tagged frame: weir has no VLAN sub-interfaces yet.
    VlanTagged,
    /// ARP cut short.
    TruncatedArp,
    /// ARP for a hardware or protocol type other than Ethernet/IPv4.
    BadArp,
    /// ARP not asking for nor answering one of weir's addresses.
    ArpNotForUs,
    /// IPv4 header cut short.
    TruncatedIpv4,
    /// IP version field does not match the EtherType.
    BadIpVersion,
    /// IHL below 5.
    BadIhl,
    /// IPv4 total length below the header or beyond the frame.
    BadIpv4TotalLength,
    /// IPv4 header checksum wrong.
    BadIpv4Checksum,
    /// IPv6 header cut short.
    TruncatedIpv6,
    /// IPv6 payload length beyond the frame.
    BadIpv6PayloadLength,
    /// Too many IPv6 extension headers.
    Ipv6ExtChainTooLong,
    /// An IPv6 extension header cut short.
    TruncatedIpv6Ext,
    /// TCP data offset below 5 or beyond the segment.
    BadTcpDataOffset,
    /// A frame longer than any the parser accepts.
    FrameTooLong,
    /// L4 header cut short.
    TruncatedL4,
    /// UDP length field inconsistent.
    BadL4Length,
    /// Destination MAC neither ours nor broadcast/multicast.
    NotOurMac,
    /// Broadcast or multicast IP destination that weir does not forward.
    NotRoutable,
    /// No route to the destination.
    NoRoute,
    /// TTL or hop limit ran out (an ICMP time exceeded was sent unless rate-limited).
    TtlExceeded,
    /// Larger than the output port's MTU (DF set or IPv6: an ICMP error was sent).
    MtuExceeded,
    /// Addressed to weir, for a protocol weir does not answer.
    LocalUnhandled,
    /// A fragment addressed to weir itself (weir does not reassemble).
    LocalFragment,
    /// An NDP message that fails RFC 4861 validation.
    BadNdp,
    /// ICMPv6 that is neither NDP nor echo, addressed to weir.
    Icmpv6Unhandled,
    /// The queue of frames waiting for a neighbor was full.
    NeighborQueueFull,
    /// The neighbor did not answer in time.
    NeighborTimeout,
    /// No buffer for a reply weir had to build.
    PoolExhausted,
    /// The output transmit queue was full.
    TxFull,
    /// To a VIP, on a port or protocol no service has.
    NoService,
    /// The service's cluster has no endpoint taking new flows.
    NoEndpoint,
    /// A new flow did not fit this worker's flow table.
    FlowTableFull,
    /// No free SNAT port for a new NAT flow.
    SnatExhausted,
    /// Mid-connection TCP, or a reply, of a flow weir does not know.
    NoFlow,
    /// The flow's endpoint was removed or is unhealthy, and its cluster resets such flows.
    EndpointGone,
    /// A service packet weir cannot translate (a fragment).
    Untranslatable,
    /// Meant for another worker, whose handoff ring was full.
    HandoffFull,
    /// A source address no packet from outside may carry: unspecified, loopback, multicast,
    /// broadcast, reserved (RFC 1812 §5.3.7, RFC 4291), or one of weir's own.
    MartianSource,
    /// A destination no router forwards to: IPv4 0/8, 127/8, 240/4; IPv6 unspecified, loopback,
    /// IPv4-mapped.
    MartianDestination,
    /// An Ethernet source that is broadcast, multicast, zero or weir's own MAC.
    BadSourceMac,
    /// An ICMP or ICMPv6 message to weir whose checksum does not verify.
    BadIcmpChecksum,
    /// IPv4 options with a malformed length or pointer (a parameter problem was sent unless
    /// rate-limited).
    BadIpv4Options,
    /// An IPv4 loose or strict source route option (RFC 7126: not honoured).
    SourceRouted,
    /// To the broadcast address of a connected prefix (RFC 2644: not forwarded, not answered).
    DirectedBroadcast,
    /// An ARP or NDP claim about an address outside the connected prefixes of the port it came
    /// in on, or about one of weir's own addresses: ignored.
    NeighborOffLink,
    /// An ARP or NDP claim that would create or change a neighbor entry without weir having
    /// asked (or change a static one, or change one within the lock time): ignored.
    NeighborClaimRefused,
    /// Longer than a packet buffer: the port received only part of it.
    Oversize,
    /// A new flow while weir drains (see `SharedMesh::draining`).
    Draining,
    /// Refused by the device before weir saw it (a DPDK port's `ierrors`: longer than its
    /// buffers, a bad frame check sequence, …): from the device's counters.
    RxErrors,
}

impl DropReason {
    /// Every reason, in discriminant order.
    pub const ALL: &'static [DropReason] = <Self as strum::VariantArray>::VARIANTS;
    /// Number of reasons.
    pub const COUNT: usize = <Self as strum::EnumCount>::COUNT;

    /// The snake_case name used in stats output.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// What the reason means: its doc comment, on one line.
    pub fn help(self) -> String {
        crate::counters::one_line(strum::EnumMessage::get_documentation(&self).unwrap_or_default())
    }
}

impl From<ParseError> for DropReason {
    fn from(e: ParseError) -> Self {
        match e {
            ParseError::TruncatedEthernet => DropReason::TruncatedEthernet,
            ParseError::UnknownEtherType => DropReason::UnknownEtherType,
            ParseError::VlanTooDeep => DropReason::VlanTooDeep,
            ParseError::TruncatedVlan => DropReason::TruncatedVlan,
            ParseError::TruncatedArp => DropReason::TruncatedArp,
            ParseError::BadArp => DropReason::BadArp,
            ParseError::TruncatedIpv4 => DropReason::TruncatedIpv4,
            ParseError::BadIpVersion => DropReason::BadIpVersion,
            ParseError::BadIhl => DropReason::BadIhl,
            ParseError::BadIpv4TotalLength => DropReason::BadIpv4TotalLength,
            ParseError::BadIpv4Checksum => DropReason::BadIpv4Checksum,
            ParseError::TruncatedIpv6 => DropReason::TruncatedIpv6,
            ParseError::BadIpv6PayloadLength => DropReason::BadIpv6PayloadLength,
            ParseError::Ipv6ExtChainTooLong => DropReason::Ipv6ExtChainTooLong,
            ParseError::TruncatedIpv6Ext => DropReason::TruncatedIpv6Ext,
            ParseError::BadTcpDataOffset => DropReason::BadTcpDataOffset,
            ParseError::FrameTooLong => DropReason::FrameTooLong,
            ParseError::TruncatedL4 => DropReason::TruncatedL4,
            ParseError::BadL4Length => DropReason::BadL4Length,
        }
    }
}

/// The port the route to `dst` leaves by.
fn port_toward(fib: &Fib, dst: IpAddr) -> Option<&crate::fib::PortAddrs> {
    let hop = match dst {
        IpAddr::V4(a) => fib.lookup_v4(a)?,
        IpAddr::V6(a) => fib.lookup_v6(a)?,
    };
    match hop {
        NextHop::Connected { port } | NextHop::Via { port, .. } => fib.port(port),
        NextHop::Local { .. } => None,
    }
}

/// Live flows below which a worker's flow table is taken to be in the cache, and a burst's
/// lookups are not prefetched (about 1 MiB of records and index).
const PREFETCH_MIN_FLOWS: usize = 8192;

/// How many packets ahead of processing a burst's flow records are prefetched.
const RECORDS_AHEAD: usize = 8;

/// weir's address facing `endpoint`: the first address of its family on the port the route to
/// it leaves by. NAT flows to the endpoint come from there, so its replies return to weir.
fn snat_source(fib: &Fib, endpoint: IpAddr) -> Option<IpAddr> {
    let p = port_toward(fib, endpoint)?;
    match endpoint {
        IpAddr::V4(_) => p.ipv4.first().map(|n| IpAddr::V4(n.addr())),
        IpAddr::V6(_) => p.ipv6.first().map(|n| IpAddr::V6(n.addr())),
    }
}

impl crate::mesh::engine::Routes for Fib {
    fn source_toward(&self, endpoint: IpAddr) -> Option<IpAddr> {
        snat_source(self, endpoint)
    }

    #[inline]
    fn mtu_toward(&self, dst: IpAddr) -> Option<u16> {
        port_toward(self, dst).map(|p| p.mtu)
    }
}

/// What became of one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Rewritten and sent out of this port (a reply goes back out of its input port).
    Forward(u8),
    /// Waiting for its next hop to be resolved.
    Held,
    /// Dropped, for this reason.
    Drop(DropReason),
    /// Consumed by weir itself (an ARP reply or neighbor advertisement it learned from, or a
    /// solicitation it answered with a new frame): freed, not an error.
    Consumed,
    /// Handed to the worker that owns its flow.
    Handoff(u16),
}

/// Where the pipeline sends frames and gets buffers for the frames it builds.
pub trait Egress<B: PacketBuf> {
    /// Queues `pkt` for transmission on `port`.
    fn send(&mut self, port: u8, pkt: B);
    /// A fresh empty buffer, or `None` when the pool is exhausted.
    fn alloc(&mut self) -> Option<B>;
    /// Hands `pkt`, received on `in_port`, to worker `worker` (after `passes` workers looked
    /// for its flow in vain); gives it back when that worker's ring is full (or there is no
    /// such worker).
    fn handoff(&mut self, worker: u16, pkt: B, in_port: u8, passes: u8) -> Result<(), B> {
        let _ = (worker, in_port, passes);
        Err(pkt)
    }
}

/// Pipeline sizing and timing, fixed at start-up.
#[derive(Clone, Copy, Debug)]
pub struct PipelineConfig {
    /// Neighbor entries per worker.
    pub neighbor_capacity: usize,
    /// Frames per worker that may wait for neighbor resolution.
    pub pending_capacity: usize,
    /// Neighbor ageing.
    pub neighbor_timers: NeighborTimers,
    /// How long a frame waits for its neighbor before it is dropped, in nanoseconds.
    pub resolve_timeout_ns: u64,
    /// Interval between ARP/NS retries for one address, in nanoseconds.
    pub resolve_retry_ns: u64,
    /// ICMP errors a worker may send per second (token bucket rate, RFC 1812 4.3.2.8).
    pub icmp_errors_per_sec: u32,
    /// Burst size of the ICMP error token bucket.
    pub icmp_error_burst: u32,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            neighbor_capacity: 1024,
            pending_capacity: 256,
            neighbor_timers: NeighborTimers::default(),
            resolve_timeout_ns: 3_000_000_000,
            resolve_retry_ns: 1_000_000_000,
            icmp_errors_per_sec: 100,
            icmp_error_burst: 50,
        }
    }
}

/// Per-worker pipeline counters (single writer: the worker).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineCounters {
    /// Drops by reason, indexed by `DropReason as usize`.
    pub drops: [u64; DropReason::COUNT],
    /// Frames routed to another port.
    pub forwarded: u64,
    /// Replies weir built or turned around: ARP, NDP, ICMP echo.
    pub replies: u64,
    /// ICMP errors sent.
    pub icmp_errors: u64,
    /// ICMP errors suppressed by the rate limit.
    pub icmp_rate_limited: u64,
    /// ARP requests and neighbor solicitations sent.
    pub resolutions_sent: u64,
    /// L4 checksums completed for frames a local sender left partial.
    pub checksums_completed: u64,
    /// Neighbor updates that did not fit another worker's inbox.
    pub neighbor_updates_lost: u64,
    /// Frames weir consumed itself (ARP replies, NAs, NSs answered with a new frame).
    pub consumed: u64,
    /// Frames handed to the worker that owns their flow.
    pub handed_off: u64,
    /// ARP and NDP claims weir did not believe: off-link, unsolicited, or against a static or
    /// freshly confirmed entry (the frames that carried nothing else are also drops).
    pub neighbor_claims_ignored: u64,
    /// Unicast probes sent to a neighbor whose address someone else claimed.
    pub neighbor_probes_sent: u64,
    /// TCP resets sent from a VIP for segments of flows whose endpoint is gone (also in
    /// `replies`).
    pub resets_sent: u64,
}

impl Default for PipelineCounters {
    fn default() -> Self {
        PipelineCounters {
            drops: [0; DropReason::COUNT],
            forwarded: 0,
            replies: 0,
            icmp_errors: 0,
            icmp_rate_limited: 0,
            resolutions_sent: 0,
            checksums_completed: 0,
            neighbor_updates_lost: 0,
            consumed: 0,
            handed_off: 0,
            neighbor_claims_ignored: 0,
            neighbor_probes_sent: 0,
            resets_sent: 0,
        }
    }
}

struct Pending<B> {
    pkt: B,
    port: u8,
    next_hop: IpAddr,
    queued_ns: u64,
}

/// Token bucket for ICMP errors.
struct TokenBucket {
    tokens: u64,
    burst: u64,
    per_sec: u64,
    last_ns: u64,
}

impl TokenBucket {
    fn take(&mut self, now_ns: u64) -> bool {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        let add = elapsed.saturating_mul(self.per_sec) / 1_000_000_000;
        if add > 0 {
            self.tokens = (self.tokens + add).min(self.burst);
            self.last_ns = now_ns;
        }
        if self.tokens > 0 {
            self.tokens -= 1;
            true
        } else {
            false
        }
    }
}

/// One worker's pipeline.
pub struct Pipeline<B> {
    worker: usize,
    fib: Arc<Fib>,
    neigh: NeighborTable,
    bus: Arc<NeighborBus>,
    pending: Vec<Pending<B>>,
    cfg: PipelineConfig,
    icmp: TokenBucket,
    /// When the last ARP request / solicitation went out, for the few addresses most recently
    /// asked about: paces retries for held frames and refreshes of stale entries.
    refresh_sent: [(Option<IpAddr>, u64); 8],
    /// The L4 mesh, when services are configured.
    mesh: Option<MeshEngine>,
    /// The flow keys of the burst being processed, for the second prefetch stage, and the
    /// next of them to prefetch.
    ahead: arrayvec::ArrayVec<stack::PackedV4, { crate::buf::BURST }>,
    ahead_next: usize,
    /// Counters; read by the worker to publish them.
    pub counters: PipelineCounters,
}

impl<B: PacketBuf> Pipeline<B> {
    /// A pipeline for worker `worker` over `fib`, with `static_neighbors` preloaded.
    pub fn new(
        worker: usize,
        fib: Arc<Fib>,
        bus: Arc<NeighborBus>,
        cfg: PipelineConfig,
        static_neighbors: &[(IpAddr, u8, [u8; 6])],
    ) -> Self {
        let mut neigh = NeighborTable::new(cfg.neighbor_capacity, cfg.neighbor_timers);
        for &(ip, port, mac) in static_neighbors {
            neigh.learn(ip, Neighbor::permanent(mac, port));
        }
        Pipeline {
            worker,
            fib,
            neigh,
            bus,
            pending: Vec::with_capacity(cfg.pending_capacity),
            icmp: TokenBucket {
                tokens: u64::from(cfg.icmp_error_burst),
                burst: u64::from(cfg.icmp_error_burst),
                per_sec: u64::from(cfg.icmp_errors_per_sec),
                last_ns: 0,
            },
            cfg,
            refresh_sent: [(None, 0); 8],
            mesh: None,
            ahead: arrayvec::ArrayVec::new(),
            ahead_next: 0,
            counters: PipelineCounters::default(),
        }
    }

    /// Puts the L4 mesh in the path: packets to its VIPs, and replies of its flows, are
    /// balanced and translated before they are routed.
    pub fn with_mesh(mut self, mesh: MeshEngine) -> Self {
        self.mesh = Some(mesh);
        self
    }

    /// The mesh engine, if there is one.
    pub fn mesh(&self) -> Option<&MeshEngine> {
        self.mesh.as_ref()
    }

    /// The neighbors this pipeline learned, with their ages at `now_ns` (see
    /// [`NeighborTable::learned_entries`]).
    pub fn learned_neighbors(&self, now_ns: u64) -> Vec<(IpAddr, crate::neigh::Mac, u8, u64)> {
        self.neigh.learned_entries(now_ns)
    }

    /// Takes over a neighbor another weir's worker learned: fresh from this pipeline's clock
    /// start, so it is resolved again no later than an entry learned now would be.
    pub fn learn_neighbor(&mut self, ip: IpAddr, mac: crate::neigh::Mac, port: u8) {
        self.neigh.learn(ip, Neighbor::learned(mac, port, 0));
    }

    /// The mesh engine, if there is one, to change.
    pub fn mesh_mut(&mut self) -> Option<&mut MeshEngine> {
        self.mesh.as_mut()
    }

    /// The FIB in use.
    pub fn fib(&self) -> &Fib {
        &self.fib
    }

    /// The link of `port` went down or came back: what was learned of its neighbors is
    /// forgotten (they are resolved again when next needed).
    pub fn link_changed(&mut self, port: u8) {
        self.neigh.forget_port(port);
    }

    /// Neighbor entries this worker holds.
    pub fn neighbors(&self) -> usize {
        self.neigh.len()
    }

    /// Frames waiting for resolution.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Counts a drop.
    #[inline]
    pub fn count_drop(&mut self, r: DropReason) {
        self.counters.drops[r as usize] += 1;
    }

    /// Before a burst is processed: starts loading the flow-index slots of its packets that
    /// the mesh may want, all at once so their cache misses overlap. The flow records follow
    /// a few packets ahead of processing ([`process`](Self::process)), by when their slots
    /// have arrived: issued right after the slots, they would wait for them.
    pub fn prefetch_burst(&mut self, burst: &[B]) {
        self.ahead.clear();
        self.ahead_next = 0;
        let Some(m) = &self.mesh else { return };
        // A table this small stays in the cache: prefetching would only cost.
        if !m.is_active() || m.flows().len() < PREFETCH_MIN_FLOWS {
            return;
        }
        for pkt in burst {
            let Some(f) = stack::parse::ipv4_peek(pkt.data()) else { continue };
            if !m.may_concern(&IpAddr::V4(f.src), &IpAddr::V4(f.dst)) {
                continue;
            }
            if let Some(k) = stack::PackedV4::from_ipv4_fast(&f) {
                m.prefetch_slot(&k);
                let _ = self.ahead.try_push(k);
            }
        }
        for _ in 0..RECORDS_AHEAD {
            self.prefetch_next_record();
        }
    }

    /// The second prefetch stage for the next key of the burst, if any is left.
    #[inline(always)]
    fn prefetch_next_record(&mut self) {
        if let (Some(k), Some(m)) = (self.ahead.get(self.ahead_next), &self.mesh) {
            m.prefetch_record(k);
            self.ahead_next += 1;
        }
    }

    /// Handles one frame received on `in_port`. See the module docs for the contract.
    #[inline(always)]
    pub fn process(
        &mut self,
        mut pkt: B,
        in_port: u8,
        now_ns: u64,
        out: &mut impl Egress<B>,
    ) -> Verdict {
        self.prefetch_next_record();
        if let Some(port) = self.fast_forward_v4(&mut pkt, in_port, now_ns) {
            out.send(port, pkt);
            return Verdict::Forward(port);
        }
        self.process_general(pkt, in_port, now_ns, out)
    }

    /// [`Pipeline::process`] for a packet another worker handed over, after `passes` workers
    /// looked for its flow in vain (0 when it was handed to its flow's owner).
    pub fn process_handed(
        &mut self,
        pkt: B,
        in_port: u8,
        passes: u8,
        now_ns: u64,
        out: &mut impl Egress<B>,
    ) -> Verdict {
        if passes == 0 {
            return self.process(pkt, in_port, now_ns, out);
        }
        if let Some(m) = self.mesh.as_mut() {
            m.set_seeking(passes);
        }
        let v = self.process_general(pkt, in_port, now_ns, out);
        if let Some(m) = self.mesh.as_mut() {
            m.set_seeking(0);
        }
        v
    }

    /// Everything the fast path does not take: parse the whole frame and decide. Kept out of
    /// line so the fast path stays a small function.
    #[inline(never)]
    fn process_general(
        &mut self,
        mut pkt: B,
        in_port: u8,
        now_ns: u64,
        out: &mut impl Egress<B>,
    ) -> Verdict {
        let verdict = self.classify(&mut pkt, in_port, now_ns, out);
        match verdict {
            Step::Send(port) => {
                out.send(port, pkt);
                Verdict::Forward(port)
            }
            Step::Hold(port, next_hop) => self.hold(pkt, port, next_hop, now_ns, out),
            Step::Drop(r) => {
                self.count_drop(r);
                Verdict::Drop(r)
            }
            Step::Consumed => {
                self.counters.consumed += 1;
                Verdict::Consumed
            }
            Step::Handoff(w, passes) => match out.handoff(w, pkt, in_port, passes) {
                Ok(()) => {
                    self.counters.handed_off += 1;
                    Verdict::Handoff(w)
                }
                Err(pkt) => {
                    drop(pkt);
                    self.count_drop(DropReason::HandoffFull);
                    Verdict::Drop(DropReason::HandoffFull)
                }
            },
        }
    }

    /// The IPv4 forwarding fast path: an untagged, option-less IPv4 frame to our MAC, routed to
    /// a resolved neighbor within the MTU with TTL to spare. It checks everything the general
    /// path checks for such a frame (`stack::parse::ipv4_fast` accepts only what `parse_frame`
    /// accepts) and returns `None` for anything else, which then takes the general path.
    #[inline(always)]
    fn fast_forward_v4(&mut self, pkt: &mut B, in_port: u8, now_ns: u64) -> Option<u8> {
        if pkt.meta().l4_csum_partial {
            return None;
        }
        let port = self.fib.port(in_port)?;
        let (our_mac, foreign) = (port.mac, port.foreign_mac().copied());
        let frame = pkt.data_mut();
        if frame.get(0..6)? != our_mac || !plausible_source_mac(frame.get(6..12)?, foreign.as_ref())
        {
            return None;
        }
        let f = stack::parse::ipv4_fast(frame)?;
        if f.ttl <= 1
            || f.dst.is_broadcast()
            || f.dst.is_multicast()
            || stack::ipv4::is_martian_source(f.src)
            || stack::ipv4::is_martian_destination(f.dst)
            || self.fib.is_own_or_broadcast_v4(f.src)
        {
            return None;
        }
        let mut dst = f.dst;
        // Packets of this worker's NAT and DNAT flows are translated here; anything else the
        // mesh may want (a new flow, a reply for another worker, DSR, a packet too big for the
        // way on) takes the general path, before anything has changed.
        let mut hit = None;
        if let Some(m) = &mut self.mesh {
            if m.is_active() && m.may_concern(&IpAddr::V4(f.src), &IpAddr::V4(f.dst)) {
                let key = stack::PackedV4::from_ipv4_fast(&f)?;
                let h = m.fast_lookup(&key, f.tcp_flags, now_ns)?;
                dst = h.new_dst();
                hit = Some(h);
            }
        }
        let (out_port, next_hop) = match self.fib.lookup_v4(dst)? {
            NextHop::Connected { port } => (port, dst),
            NextHop::Via { port, gateway: IpAddr::V4(gateway) } => (port, gateway),
            _ => return None,
        };
        let port = self.fib.port(out_port)?;
        if f.total_len > port.mtu {
            return None;
        }
        let src_mac = port.mac;
        let Lookup::Fresh(dst_mac) = self.neigh.lookup_v4(next_hop, now_ns) else {
            return None;
        };
        if let (Some(h), Some(m)) = (&hit, &mut self.mesh) {
            if !m.fast_commit(frame, f.protocol == 6, h, f.tcp_flags, now_ns) {
                return None;
            }
        }
        stack::ipv4::decrement_ttl(frame, 14).ok()?;
        frame[0..6].copy_from_slice(&dst_mac);
        frame[6..12].copy_from_slice(&src_mac);
        self.counters.forwarded += 1;
        Some(out_port)
    }

    fn classify(
        &mut self,
        pkt: &mut B,
        in_port: u8,
        now_ns: u64,
        out: &mut impl Egress<B>,
    ) -> Step {
        let Some(port) = self.fib.port(in_port) else {
            return Step::Drop(DropReason::NotOurMac);
        };
        let our_mac = port.mac;
        let frame = pkt.data();
        if frame.len() < 14 {
            return Step::Drop(DropReason::TruncatedEthernet);
        }
        let dst_is_ours = frame[0..6] == our_mac;
        if !dst_is_ours && frame[0] & 1 == 0 {
            return Step::Drop(DropReason::NotOurMac);
        }
        if !plausible_source_mac(&frame[6..12], port.foreign_mac()) {
            return Step::Drop(DropReason::BadSourceMac);
        }
        let parsed = match parse_frame(frame) {
            Ok(p) => p,
            Err(e) => return Step::Drop(e.into()),
        };
        if parsed.vlan_depth > 0 {
            return Step::Drop(DropReason::VlanTagged);
        }
        if let Some(r) = self.martian(&parsed) {
            return Step::Drop(r);
        }
        if let L3::Ipv4(ref ip) = parsed.l3 {
            if let Some(pointer) = ip.option_problem {
                let kind = IcmpKind::ParameterProblem { pointer };
                return self.icmp_error(pkt, &parsed, in_port, kind, now_ns, out);
            }
            if ip.source_routed {
                return Step::Drop(DropReason::SourceRouted);
            }
        }
        if let Some(step) = self.mesh_step(pkt, &parsed, in_port, dst_is_ours, now_ns, out) {
            return step;
        }
        match parsed.l3 {
            L3::Arp(_) => self.arp(pkt, &parsed, in_port, now_ns, out),
            L3::Ipv4(ref ip) => {
                let dst = ip.dst;
                match self.fib.lookup_v4(dst) {
                    Some(NextHop::Local { .. }) => self.local_v4(pkt, &parsed, in_port),
                    _ if !dst_is_ours || dst.is_broadcast() || dst.is_multicast() => {
                        Step::Drop(DropReason::NotRoutable)
                    }
                    None => self.icmp_error(pkt, &parsed, in_port, IcmpKind::NoRoute, now_ns, out),
                    Some(hop) => {
                        self.forward(pkt, &parsed, in_port, hop, IpAddr::V4(dst), now_ns, out)
                    }
                }
            }
            L3::Ipv6(ref ip) => {
                let dst = ip.dst;
                if dst.is_multicast() {
                    // Solicited-node and all-nodes multicast carry NDP for us.
                    return self.local_v6(pkt, &parsed, in_port, now_ns, out);
                }
                match self.fib.lookup_v6(dst) {
                    Some(NextHop::Local { .. }) => {
                        self.local_v6(pkt, &parsed, in_port, now_ns, out)
                    }
                    _ if !dst_is_ours || stack::ipv6::is_link_local(&dst) => {
                        Step::Drop(DropReason::NotRoutable)
                    }
                    None => self.icmp_error(pkt, &parsed, in_port, IcmpKind::NoRoute, now_ns, out),
                    Some(hop) => {
                        self.forward(pkt, &parsed, in_port, hop, IpAddr::V6(dst), now_ns, out)
                    }
                }
            }
        }
    }

    /// Why no router may forward nor answer this packet, if so (RFC 1812 §5.3.7, RFC 4291):
    /// a source no host outside may use (weir's own addresses and directed broadcasts
    /// included), a destination no router forwards to, a directed broadcast; for IPv6 also an
    /// unspecified or link-local source on a packet not addressed to weir itself.
    fn martian(&self, parsed: &Parsed) -> Option<DropReason> {
        match parsed.l3 {
            L3::Arp(_) => None,
            L3::Ipv4(ref ip) => {
                if stack::ipv4::is_martian_source(ip.src) || self.fib.is_own_or_broadcast_v4(ip.src)
                {
                    Some(DropReason::MartianSource)
                } else if stack::ipv4::is_martian_destination(ip.dst) {
                    Some(DropReason::MartianDestination)
                } else if self.fib.is_directed_broadcast(ip.dst) {
                    Some(DropReason::DirectedBroadcast)
                } else {
                    None
                }
            }
            L3::Ipv6(ref ip) => {
                if stack::ipv6::is_martian_source(&ip.src) || self.fib.is_own_v6(ip.src) {
                    return Some(DropReason::MartianSource);
                }
                if stack::ipv6::is_martian_destination(&ip.dst) {
                    return Some(DropReason::MartianDestination);
                }
                let scoped = ip.src.is_unspecified() || stack::ipv6::is_link_local(&ip.src);
                let to_weir = ip.dst.is_multicast()
                    || matches!(self.fib.lookup_v6(ip.dst), Some(NextHop::Local { .. }));
                (scoped && !to_weir).then_some(DropReason::MartianSource)
            }
        }
    }

    /// The mesh's part: `None` when the frame is not the mesh's (route it as usual), else what
    /// became of it (translated frames are routed to their new destination here).
    fn mesh_step(
        &mut self,
        pkt: &mut B,
        parsed: &Parsed,
        in_port: u8,
        dst_is_ours: bool,
        now_ns: u64,
        out: &mut impl Egress<B>,
    ) -> Option<Step> {
        let m = self.mesh.as_mut()?;
        if !m.is_active() || !dst_is_ours {
            return None;
        }
        let (src, dst, ttl) = match parsed.l3 {
            L3::Ipv4(ref ip) => (IpAddr::V4(ip.src), IpAddr::V4(ip.dst), ip.ttl),
            L3::Ipv6(ref ip) => (IpAddr::V6(ip.src), IpAddr::V6(ip.dst), ip.hop_limit),
            L3::Arp(_) => return None,
        };
        // Expiring packets are answered by the router in front of the service, untranslated.
        if ttl <= 1 {
            return None;
        }
        let icmp_error = matches!(
            parsed.l4,
            Some(stack::parse::L4Info {
                header: L4::Icmpv4 { icmp_type: 3 | 11 | 12, .. }
                    | L4::Icmpv6 { icmp_type: 1..=4, .. },
                ..
            })
        );
        let transport = matches!(
            parsed.l4,
            Some(stack::parse::L4Info { header: L4::Tcp { .. } | L4::Udp { .. }, .. })
        );
        if !transport && !icmp_error {
            return None;
        }
        let fib = &self.fib;
        let local = matches!(
            match dst {
                IpAddr::V4(a) => fib.lookup_v4(a),
                IpAddr::V6(a) => fib.lookup_v6(a),
            },
            Some(NextHop::Local { .. })
        );
        if !local && !m.may_concern(&src, &dst) {
            return None;
        }
        // A checksum a local sender left to offload is completed before translation, which
        // patches it incrementally.
        if pkt.meta().l4_csum_partial {
            let _ = stack::l4::complete_l4_checksum(pkt.data_mut(), parsed);
            pkt.set_meta(Default::default());
            self.counters.checksums_completed += 1;
        }
        let action = if icmp_error {
            m.handle_icmp_error(pkt.data_mut(), parsed, local, now_ns)
        } else {
            m.handle(pkt.data_mut(), parsed, local, fib.as_ref(), now_ns)
        };
        match action {
            MeshAction::Pass => None,
            MeshAction::Drop(r) => Some(Step::Drop(r)),
            MeshAction::Handoff(w) => Some(Step::Handoff(w, 0)),
            MeshAction::Seek(w) => Some(Step::Handoff(w, m.seeking().saturating_add(1))),
            MeshAction::TooBig { mtu } => {
                // As a router would: an error to the sender, about its own packet (untouched).
                let kind = match parsed.l3 {
                    L3::Ipv4(ref ip) if !ip.dont_fragment => None,
                    _ => Some(IcmpKind::TooBig { mtu }),
                };
                if let Some(kind) = kind {
                    self.icmp_error(pkt, parsed, in_port, kind, now_ns, out);
                }
                Some(Step::Drop(DropReason::MtuExceeded))
            }
            MeshAction::Reset => {
                // The client's segment goes no further; a reset from the VIP, made of it, tells
                // it so. A segment that cannot take the reset is only dropped.
                match stack::tcp::rst_reply_in_place(pkt.data_mut(), parsed) {
                    Ok(n) if pkt.set_len(n).is_ok() => {
                        self.counters.replies += 1;
                        self.counters.resets_sent += 1;
                        Some(Step::Send(in_port))
                    }
                    _ => Some(Step::Drop(DropReason::EndpointGone)),
                }
            }
            MeshAction::Encapsulate { endpoint, encap, entropy } => {
                Some(self.encapsulate(pkt, parsed, in_port, endpoint, encap, entropy, now_ns, out))
            }
            MeshAction::Translated { dst } => {
                // Translation changes addresses and ports only: the parsed offsets, length and
                // TTL still describe the frame.
                let hop = match dst {
                    IpAddr::V4(a) => self.fib.lookup_v4(a),
                    IpAddr::V6(a) => self.fib.lookup_v6(a),
                };
                Some(match hop {
                    None => Step::Drop(DropReason::NoRoute),
                    Some(NextHop::Local { .. }) => Step::Drop(DropReason::LocalUnhandled),
                    Some(hop) => self.forward(pkt, parsed, in_port, hop, dst, now_ns, out),
                })
            }
        }
    }

    /// DSR: wraps the packet, as the client sent it, in an outer header to `endpoint` (from
    /// weir's address facing it) and routes the result. A packet that would no longer fit the
    /// output MTU gets the ICMP error a router gives, with the MTU left for the inner packet.
    #[allow(clippy::too_many_arguments)]
    fn encapsulate(
        &mut self,
        pkt: &mut B,
        parsed: &Parsed,
        in_port: u8,
        endpoint: IpAddr,
        encap: stack::encap::Encapsulation,
        entropy: u16,
        now_ns: u64,
        out: &mut impl Egress<B>,
    ) -> Step {
        let hop = match endpoint {
            IpAddr::V4(a) => self.fib.lookup_v4(a),
            IpAddr::V6(a) => self.fib.lookup_v6(a),
        };
        let (Some(hop), Some(src)) = (hop, snat_source(&self.fib, endpoint)) else {
            return Step::Drop(DropReason::NoRoute);
        };
        let out_port = match hop {
            NextHop::Connected { port } | NextHop::Via { port, .. } => port,
            NextHop::Local { .. } => return Step::Drop(DropReason::LocalUnhandled),
        };
        let overhead = encap.overhead(endpoint);
        let inner_len = usize::from(parsed.l3_len);
        let mtu = self.fib.port(out_port).map_or(0, |p| p.mtu);
        if inner_len + overhead > usize::from(mtu) {
            let room = u16::try_from(usize::from(mtu).saturating_sub(overhead)).unwrap_or(0);
            let kind = match parsed.l3 {
                L3::Ipv4(ref ip) if !ip.dont_fragment => None,
                _ => Some(IcmpKind::TooBig { mtu: room }),
            };
            if let Some(kind) = kind {
                self.icmp_error(pkt, parsed, in_port, kind, now_ns, out);
            }
            return Step::Drop(DropReason::MtuExceeded);
        }
        let inner_v6 = matches!(parsed.l3, L3::Ipv6(_));
        let l3 = usize::from(parsed.l3_offset);
        // Drop Ethernet padding and VLAN tags: the new frame is Ethernet, outer IP, inner IP.
        if pkt.set_len(l3 + inner_len).is_err()
            || pkt.adj(l3 - 14).is_err()
            || pkt.prepend(overhead).is_err()
        {
            return Step::Drop(DropReason::PoolExhausted);
        }
        let frame = pkt.data_mut();
        frame.copy_within(overhead..overhead + 12, 0);
        let ethertype: u16 = if endpoint.is_ipv4() { 0x0800 } else { 0x86dd };
        frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
        if stack::encap::write_outer(
            &mut frame[14..14 + overhead],
            encap,
            src,
            endpoint,
            inner_len,
            inner_v6,
            entropy,
        )
        .is_err()
        {
            return Step::Drop(DropReason::Untranslatable);
        }
        let Ok(outer) = parse_frame(pkt.data()) else {
            return Step::Drop(DropReason::Untranslatable);
        };
        self.forward(pkt, &outer, in_port, hop, endpoint, now_ns, out)
    }

    /// Routes a transit frame: TTL, MTU, neighbor, rewrite.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &mut self,
        pkt: &mut B,
        parsed: &Parsed,
        in_port: u8,
        hop: NextHop,
        dst: IpAddr,
        now_ns: u64,
        out: &mut impl Egress<B>,
    ) -> Step {
        let (out_port, next_hop) = match hop {
            NextHop::Connected { port } => (port, dst),
            NextHop::Via { port, gateway } => (port, gateway),
            NextHop::Local { .. } => return Step::Drop(DropReason::LocalUnhandled),
        };
        let ttl = match parsed.l3 {
            L3::Ipv4(ref ip) => ip.ttl,
            L3::Ipv6(ref ip) => ip.hop_limit,
            L3::Arp(_) => return Step::Drop(DropReason::NotRoutable),
        };
        if ttl <= 1 {
            self.icmp_error(pkt, parsed, in_port, IcmpKind::TimeExceeded, now_ns, out);
            return Step::Drop(DropReason::TtlExceeded);
        }
        let Some(port) = self.fib.port(out_port) else {
            return Step::Drop(DropReason::NoRoute);
        };
        let out_mac = port.mac;
        let mtu = port.mtu;
        if usize::from(parsed.l3_len) > usize::from(mtu) {
            let kind = match parsed.l3 {
                L3::Ipv4(ref ip) if !ip.dont_fragment => None,
                _ => Some(IcmpKind::TooBig { mtu }),
            };
            if let Some(kind) = kind {
                self.icmp_error(pkt, parsed, in_port, kind, now_ns, out);
            }
            return Step::Drop(DropReason::MtuExceeded);
        }
        let dst_mac = match self.neigh.lookup(&next_hop, now_ns) {
            Lookup::Fresh(m) => m,
            Lookup::Stale(m) => {
                self.refresh(out_port, next_hop, now_ns, out);
                m
            }
            Lookup::Missing => return Step::Hold(out_port, next_hop),
        };
        if !self.rewrite(pkt, parsed, dst_mac, out_mac) {
            // Only a frame shorter than its parsed header could get here.
            return Step::Drop(match parsed.l3 {
                L3::Ipv6(_) => DropReason::TruncatedIpv6,
                _ => DropReason::TruncatedIpv4,
            });
        }
        Step::Send(out_port)
    }

    fn arp(
        &mut self,
        pkt: &mut B,
        parsed: &Parsed,
        in_port: u8,
        now_ns: u64,
        out: &mut impl Egress<B>,
    ) -> Step {
        let L3::Arp(arp) = parsed.l3 else {
            return Step::Drop(DropReason::BadArp);
        };
        let for_us = self.fib.is_local_on(in_port, IpAddr::V4(arp.target_ip));
        if !for_us {
            return Step::Drop(DropReason::ArpNotForUs);
        }
        // RFC 826: the target learns the sender's mapping from a request or a reply, as far as
        // weir believes it. An ARP probe (RFC 5227, sender 0.0.0.0) claims nothing.
        // A reply this worker did not ask for, but sent to weir's own MAC, may answer another
        // worker's request: like a request to weir, it may create an entry, never change one.
        let sender = IpAddr::V4(arp.sender_ip);
        let to_us = self.fib.port(in_port).is_some_and(|p| pkt.data().get(0..6) == Some(&p.mac));
        let claim = if arp.sender_ip.is_unspecified() {
            Ok(())
        } else {
            let how = match arp.operation {
                ArpOperation::Request => Claim::Request,
                _ if self.solicited(sender, now_ns) => Claim::Solicited,
                _ if to_us => Claim::Request,
                _ => Claim::Unsolicited,
            };
            self.weigh_claim(sender, arp.sender_mac.0, in_port, how, now_ns, out)
        };
        if arp.operation == ArpOperation::Request {
            let Some(port) = self.fib.port(in_port) else {
                return Step::Drop(DropReason::ArpNotForUs);
            };
            let mac = MacAddr(port.mac);
            if stack::arp::write_reply(pkt.data_mut(), parsed, mac, arp.target_ip).is_err() {
                return Step::Drop(DropReason::TruncatedArp);
            }
            self.counters.replies += 1;
            return Step::Send(in_port);
        }
        // A reply: learned above, or not believed; nothing to send.
        match claim {
            Ok(()) => Step::Consumed,
            Err(r) => Step::Drop(r),
        }
    }

    fn local_v4(&mut self, pkt: &mut B, parsed: &Parsed, in_port: u8) -> Step {
        let L3::Ipv4(ref ip) = parsed.l3 else { return Step::Drop(DropReason::LocalUnhandled) };
        if ip.is_fragment {
            return Step::Drop(DropReason::LocalFragment);
        }
        match parsed.l4 {
            Some(stack::parse::L4Info { header: L4::Icmpv4 { icmp_type: 8, .. }, .. }) => {
                if !stack::l4::verify_l4_checksum(pkt.data(), parsed) {
                    return Step::Drop(DropReason::BadIcmpChecksum);
                }
                if stack::icmp::echo_reply_in_place_v4(pkt.data_mut(), parsed).is_err() {
                    return Step::Drop(DropReason::TruncatedL4);
                }
                self.counters.replies += 1;
                Step::Send(in_port)
            }
            _ => Step::Drop(DropReason::LocalUnhandled),
        }
    }

    fn local_v6(
        &mut self,
        pkt: &mut B,
        parsed: &Parsed,
        in_port: u8,
        now_ns: u64,
        out: &mut impl Egress<B>,
    ) -> Step {
        let L3::Ipv6(ref ip) = parsed.l3 else { return Step::Drop(DropReason::LocalUnhandled) };
        if ip.is_fragment {
            return Step::Drop(DropReason::LocalFragment);
        }
        let Some(stack::parse::L4Info { header: L4::Icmpv6 { icmp_type, .. }, .. }) = parsed.l4
        else {
            return Step::Drop(if ip.dst.is_multicast() {
                DropReason::NotRoutable
            } else {
                DropReason::LocalUnhandled
            });
        };
        match icmp_type {
            128 if !ip.dst.is_multicast() => {
                if !stack::l4::verify_l4_checksum(pkt.data(), parsed) {
                    return Step::Drop(DropReason::BadIcmpChecksum);
                }
                if stack::icmp::echo_reply_in_place_v6(pkt.data_mut(), parsed).is_err() {
                    return Step::Drop(DropReason::TruncatedL4);
                }
                self.counters.replies += 1;
                Step::Send(in_port)
            }
            135 => {
                let ns = match stack::nd::parse_ns(pkt.data(), parsed) {
                    Ok(ns) => ns,
                    Err(_) => return Step::Drop(DropReason::BadNdp),
                };
                if !self.fib.is_local_on(in_port, IpAddr::V6(ns.target)) {
                    return Step::Drop(DropReason::NotRoutable);
                }
                // A link-local sender is answered but not learned: weir does not route to
                // link-local addresses.
                if let Some(mac) = ns.source_ll {
                    if !ip.src.is_unspecified() && !stack::ipv6::is_link_local(&ip.src) {
                        let sender = IpAddr::V6(ip.src);
                        let _ =
                            self.weigh_claim(sender, mac.0, in_port, Claim::Request, now_ns, out);
                    }
                }
                let Some(port) = self.fib.port(in_port) else {
                    return Step::Drop(DropReason::BadNdp);
                };
                let our_mac = MacAddr(port.mac);
                let src_mac = MacAddr(pkt.data()[6..12].try_into().unwrap_or([0; 6]));
                // RFC 4861 7.2.4: a DAD probe (unspecified source) is answered to all-nodes.
                let (dst_mac, dst_ip, solicited) = if ip.src.is_unspecified() {
                    (
                        MacAddr([0x33, 0x33, 0, 0, 0, 1]),
                        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
                        false,
                    )
                } else {
                    (src_mac, ip.src, true)
                };
                let Some(mut reply) = out.alloc() else {
                    return Step::Drop(DropReason::PoolExhausted);
                };
                let cap = reply.capacity();
                if reply.set_len(cap).is_err() {
                    return Step::Drop(DropReason::PoolExhausted);
                }
                match stack::nd::write_na(
                    reply.data_mut(),
                    our_mac,
                    ns.target,
                    dst_mac,
                    dst_ip,
                    ns.target,
                    solicited,
                ) {
                    Ok(n) if reply.set_len(n).is_ok() => {
                        self.counters.replies += 1;
                        out.send(in_port, reply);
                        Step::Consumed
                    }
                    _ => Step::Drop(DropReason::PoolExhausted),
                }
            }
            136 => {
                let na = match stack::nd::parse_na(pkt.data(), parsed) {
                    Ok(na) => na,
                    Err(_) => return Step::Drop(DropReason::BadNdp),
                };
                let mac = na.target_ll.map(|m| m.0).or_else(|| pkt.data()[6..12].try_into().ok());
                let Some(mac) = mac else { return Step::Consumed };
                if stack::ipv6::is_link_local(&na.target) {
                    return Step::Consumed;
                }
                // As for ARP replies: solicited by this worker, or by another (sent to weir's
                // own address, flagged solicited), or neither.
                let target = IpAddr::V6(na.target);
                let how = if na.solicited && self.solicited(target, now_ns) {
                    Claim::Solicited
                } else if na.solicited && !ip.dst.is_multicast() {
                    Claim::Request
                } else {
                    Claim::Unsolicited
                };
                match self.weigh_claim(target, mac, in_port, how, now_ns, out) {
                    Ok(()) => Step::Consumed,
                    Err(r) => Step::Drop(r),
                }
            }
            // Router solicitations/advertisements and redirects: weir is not a SLAAC router.
            133 | 134 | 137 => Step::Drop(DropReason::Icmpv6Unhandled),
            _ if ip.dst.is_multicast() => Step::Drop(DropReason::NotRoutable),
            _ => Step::Drop(DropReason::Icmpv6Unhandled),
        }
    }

    /// Weighs a frame's claim that `ip` is at `mac` on `port` (see [`crate::neigh`]): believed,
    /// the entry is recorded, the other workers told and frames waiting for it released; not,
    /// the claim is counted with the reason, and the entry's own MAC probed.
    fn weigh_claim(
        &mut self,
        ip: IpAddr,
        mac: [u8; 6],
        port: u8,
        how: Claim,
        now_ns: u64,
        out: &mut impl Egress<B>,
    ) -> Result<(), DropReason> {
        if !self.fib.is_on_link(port, ip) || mac[0] & 1 != 0 || mac == [0; 6] {
            self.counters.neighbor_claims_ignored += 1;
            return Err(DropReason::NeighborOffLink);
        }
        match self.neigh.claim(ip, mac, port, now_ns, how) {
            Learned::Added | Learned::Changed => {}
            Learned::Confirmed if how != Claim::Unsolicited => {}
            Learned::Confirmed | Learned::Full => return Ok(()),
            Learned::Refused => {
                self.counters.neighbor_claims_ignored += 1;
                if let Some((owner, port)) = self.neigh.start_probe(ip, now_ns) {
                    self.probe(port, ip, owner, out);
                }
                return Err(DropReason::NeighborClaimRefused);
            }
        }
        let n = Neighbor::learned(mac, port, now_ns);
        self.counters.neighbor_updates_lost +=
            self.bus.publish(self.worker, NeighborUpdate { ip, neighbor: n });
        self.release_pending(ip);
        Ok(())
    }

    /// Whether weir is waiting for an answer about `ip`: it sent a broadcast request lately,
    /// or frames are waiting for it.
    fn solicited(&self, ip: IpAddr, now_ns: u64) -> bool {
        let window = self.cfg.resolve_timeout_ns.max(self.cfg.resolve_retry_ns);
        self.last_request(ip).is_some_and(|t| now_ns.saturating_sub(t) <= window)
            || self.pending.iter().any(|p| p.next_hop == ip)
    }

    fn release_pending(&mut self, ip: IpAddr) {
        // Marks entries now sendable; `flush_pending` sends them (it needs the egress).
        for p in self.pending.iter_mut() {
            if p.next_hop == ip {
                p.queued_ns = RELEASE;
            }
        }
    }

    /// Housekeeping between bursts: applies neighbor updates from other workers, sends frames
    /// whose neighbor is now known, retries resolution and times out frames that waited too long.
    pub fn maintain(&mut self, now_ns: u64, out: &mut impl Egress<B>) {
        if let Some(m) = &mut self.mesh {
            m.maintain(now_ns);
        }
        while let Some(u) = self.bus.receive(self.worker) {
            self.neigh.learn(u.ip, u.neighbor);
            self.release_pending(u.ip);
        }
        if self.pending.is_empty() {
            return;
        }
        let mut i = 0;
        while i < self.pending.len() {
            let p = &self.pending[i];
            let (ip, port, queued) = (p.next_hop, p.port, p.queued_ns);
            if queued == RELEASE {
                if let Lookup::Fresh(mac) | Lookup::Stale(mac) = self.neigh.lookup(&ip, now_ns) {
                    let mut p = self.pending.swap_remove(i);
                    let src = self.fib.port(port).map(|x| x.mac).unwrap_or_default();
                    self.finish_held(&mut p.pkt, mac, src);
                    out.send(port, p.pkt);
                    continue;
                }
            } else if now_ns.saturating_sub(queued) > self.cfg.resolve_timeout_ns {
                drop(self.pending.swap_remove(i));
                self.count_drop(DropReason::NeighborTimeout);
                continue;
            } else if self
                .last_request(ip)
                .is_none_or(|t| now_ns.saturating_sub(t) >= self.cfg.resolve_retry_ns)
            {
                self.request(port, ip, now_ns, out);
            }
            i += 1;
        }
    }

    /// Completes the rewrite of a frame that waited for its neighbor.
    fn finish_held(&mut self, pkt: &mut B, dst_mac: [u8; 6], src_mac: [u8; 6]) {
        if let Ok(parsed) = parse_frame(pkt.data()) {
            self.rewrite(pkt, &parsed, dst_mac, src_mac);
        }
    }

    /// Rewrites a routed frame for its next hop: TTL or hop limit, MACs, and the L4 checksum a
    /// local sender left partial. False (frame untouched) if the frame cannot take it.
    fn rewrite(
        &mut self,
        pkt: &mut B,
        parsed: &Parsed,
        dst_mac: [u8; 6],
        src_mac: [u8; 6],
    ) -> bool {
        let frame = pkt.data_mut();
        let l3 = usize::from(parsed.l3_offset);
        let rewritten = match parsed.l3 {
            L3::Ipv4(_) => stack::ipv4::decrement_ttl(frame, l3),
            L3::Ipv6(_) => stack::ipv6::decrement_hop_limit(frame, l3),
            L3::Arp(_) => return false,
        };
        if rewritten.is_err() {
            return false;
        }
        frame[0..6].copy_from_slice(&dst_mac);
        frame[6..12].copy_from_slice(&src_mac);
        if pkt.meta().l4_csum_partial {
            // A partial checksum on a frame too short for its L4 header is left as it is: the
            // receiver drops it, as it would from a broken NIC.
            let _ = stack::l4::complete_l4_checksum(pkt.data_mut(), parsed);
            pkt.set_meta(Default::default());
            self.counters.checksums_completed += 1;
        }
        self.counters.forwarded += 1;
        true
    }

    fn hold(
        &mut self,
        pkt: B,
        port: u8,
        next_hop: IpAddr,
        now_ns: u64,
        out: &mut impl Egress<B>,
    ) -> Verdict {
        if self.pending.len() >= self.cfg.pending_capacity {
            self.count_drop(DropReason::NeighborQueueFull);
            return Verdict::Drop(DropReason::NeighborQueueFull);
        }
        let first = !self.pending.iter().any(|p| p.next_hop == next_hop);
        self.pending.push(Pending { pkt, port, next_hop, queued_ns: now_ns.max(1) });
        if first {
            self.request(port, next_hop, now_ns, out);
        }
        Verdict::Held
    }

    /// When the last broadcast request for `ip` went out, if weir remembers one.
    fn last_request(&self, ip: IpAddr) -> Option<u64> {
        self.refresh_sent.iter().find(|(a, _)| *a == Some(ip)).map(|&(_, t)| t)
    }

    fn refresh(&mut self, port: u8, ip: IpAddr, now_ns: u64, out: &mut impl Egress<B>) {
        if self
            .last_request(ip)
            .is_none_or(|t| now_ns.saturating_sub(t) >= self.cfg.resolve_retry_ns)
        {
            self.request(port, ip, now_ns, out);
        }
    }

    /// Sends a unicast ARP request or neighbor solicitation for `ip` to `mac`, the MAC weir
    /// holds for it, out of `port`: only that host answers it.
    fn probe(&mut self, port: u8, ip: IpAddr, mac: [u8; 6], out: &mut impl Egress<B>) {
        let Some(p) = self.fib.port(port) else { return };
        let ours = MacAddr(p.mac);
        let (src_v4, src_v6) = match ip {
            IpAddr::V4(_) => (p.primary_v4(), None),
            IpAddr::V6(t) => (None, p.source_v6(t)),
        };
        let mut sent = false;
        self.build_and_send(port, out, |b| match (ip, src_v4, src_v6) {
            (IpAddr::V4(t), Some(src), _) => {
                sent = true;
                stack::arp::write_probe(b, ours, src, t, MacAddr(mac))
            }
            (IpAddr::V6(t), _, Some(src)) => {
                sent = true;
                stack::nd::write_probe(b, ours, src, t, MacAddr(mac))
            }
            _ => Err(stack::BuildError::UnexpectedPacket),
        });
        if sent {
            self.counters.neighbor_probes_sent += 1;
        }
    }

    /// Sends an ARP request or a neighbor solicitation for `ip` out of `port`.
    fn request(&mut self, port: u8, ip: IpAddr, now_ns: u64, out: &mut impl Egress<B>) {
        // Remember when, in the slot of this address or the oldest slot.
        let slot = self
            .refresh_sent
            .iter()
            .position(|(a, _)| *a == Some(ip))
            .or_else(|| {
                self.refresh_sent.iter().enumerate().min_by_key(|(_, (_, t))| *t).map(|(i, _)| i)
            })
            .unwrap_or(0);
        self.refresh_sent[slot] = (Some(ip), now_ns);
        let Some(p) = self.fib.port(port) else { return };
        let mac = MacAddr(p.mac);
        let Some(mut buf) = out.alloc() else {
            self.count_drop(DropReason::PoolExhausted);
            return;
        };
        let cap = buf.capacity();
        if buf.set_len(cap).is_err() {
            return;
        }
        let written = match ip {
            IpAddr::V4(target) => {
                let Some(src) = p.primary_v4() else { return };
                stack::arp::write_request(buf.data_mut(), mac, src, target)
            }
            IpAddr::V6(target) => {
                let Some(src) = p.source_v6(target) else { return };
                stack::nd::write_ns(buf.data_mut(), mac, src, target)
            }
        };
        if let Ok(n) = written {
            if buf.set_len(n).is_ok() {
                self.counters.resolutions_sent += 1;
                out.send(port, buf);
            }
        }
    }

    /// Sends gratuitous ARP and unsolicited NA for every address of every port.
    pub fn announce(&mut self, out: &mut impl Egress<B>) {
        let fib = Arc::clone(&self.fib);
        for (i, p) in fib.ports().iter().enumerate() {
            let Ok(port) = u8::try_from(i) else { break };
            let mac = MacAddr(p.mac);
            for n in &p.ipv4 {
                self.build_and_send(port, out, |b| stack::arp::write_gratuitous(b, mac, n.addr()));
            }
            for n in &p.ipv6 {
                let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
                self.build_and_send(port, out, |b| {
                    stack::nd::write_na(
                        b,
                        mac,
                        n.addr(),
                        MacAddr([0x33, 0x33, 0, 0, 0, 1]),
                        all_nodes,
                        n.addr(),
                        false,
                    )
                });
            }
        }
    }

    fn build_and_send(
        &mut self,
        port: u8,
        out: &mut impl Egress<B>,
        build: impl FnOnce(&mut [u8]) -> Result<usize, stack::BuildError>,
    ) {
        let Some(mut buf) = out.alloc() else {
            self.count_drop(DropReason::PoolExhausted);
            return;
        };
        let cap = buf.capacity();
        if buf.set_len(cap).is_err() {
            return;
        }
        if let Ok(n) = build(buf.data_mut()) {
            if buf.set_len(n).is_ok() {
                out.send(port, buf);
            }
        }
    }

    /// Sends an ICMP error about `pkt` back toward its source, if RFC 1812/4443 allow it and the
    /// rate limit has a token. Returns the drop step for the original frame.
    fn icmp_error(
        &mut self,
        pkt: &mut B,
        parsed: &Parsed,
        in_port: u8,
        kind: IcmpKind,
        now_ns: u64,
        out: &mut impl Egress<B>,
    ) -> Step {
        let reason = match kind {
            IcmpKind::TimeExceeded => DropReason::TtlExceeded,
            IcmpKind::TooBig { .. } => DropReason::MtuExceeded,
            IcmpKind::NoRoute => DropReason::NoRoute,
            IcmpKind::ParameterProblem { .. } => DropReason::BadIpv4Options,
        };
        if !stack::icmp::may_send_icmp_error(parsed, pkt.data()) {
            return Step::Drop(reason);
        }
        if !self.icmp.take(now_ns) {
            self.counters.icmp_rate_limited += 1;
            return Step::Drop(reason);
        }
        let Some(port) = self.fib.port(in_port) else { return Step::Drop(reason) };
        let our_mac = MacAddr(port.mac);
        let peer_mac = MacAddr(pkt.data()[6..12].try_into().unwrap_or([0; 6]));
        let Some(mut buf) = out.alloc() else {
            self.count_drop(DropReason::PoolExhausted);
            return Step::Drop(reason);
        };
        let cap = buf.capacity();
        if buf.set_len(cap).is_err() {
            return Step::Drop(reason);
        }
        let written = match parsed.l3 {
            L3::Ipv4(_) => match port.primary_v4() {
                Some(src) => {
                    let kind = match kind {
                        IcmpKind::TimeExceeded => Icmpv4Error::TimeExceeded,
                        IcmpKind::NoRoute => Icmpv4Error::NetUnreachable,
                        IcmpKind::TooBig { mtu } => Icmpv4Error::FragNeeded { next_hop_mtu: mtu },
                        IcmpKind::ParameterProblem { pointer } => {
                            Icmpv4Error::ParameterProblem { pointer }
                        }
                    };
                    stack::icmp::write_error_v4(
                        buf.data_mut(),
                        pkt.data(),
                        parsed,
                        kind,
                        src,
                        our_mac,
                        peer_mac,
                    )
                }
                None => return Step::Drop(reason),
            },
            L3::Ipv6(ref ip) => match port.source_v6(ip.src) {
                Some(src) => {
                    let kind = match kind {
                        IcmpKind::TimeExceeded => Icmpv6Error::TimeExceeded,
                        IcmpKind::NoRoute => Icmpv6Error::NoRoute,
                        IcmpKind::TooBig { mtu } => {
                            Icmpv6Error::PacketTooBig { mtu: u32::from(mtu) }
                        }
                        // IPv4 options only: no IPv6 packet gets here.
                        IcmpKind::ParameterProblem { .. } => return Step::Drop(reason),
                    };
                    stack::icmp::write_error_v6(
                        buf.data_mut(),
                        pkt.data(),
                        parsed,
                        kind,
                        src,
                        our_mac,
                        peer_mac,
                    )
                }
                None => return Step::Drop(reason),
            },
            L3::Arp(_) => return Step::Drop(reason),
        };
        if let Ok(n) = written {
            if buf.set_len(n).is_ok() {
                self.counters.icmp_errors += 1;
                out.send(in_port, buf);
            }
        }
        Step::Drop(reason)
    }
}

/// Which ICMP error to send; mapped to the ICMPv4 or ICMPv6 message of the packet's family.
#[derive(Clone, Copy)]
enum IcmpKind {
    /// TTL / hop limit exceeded in transit.
    TimeExceeded,
    /// No route: destination net unreachable (v4) / no route to destination (v6).
    NoRoute,
    /// Too big for the output MTU: fragmentation needed (v4, DF set) / packet too big (v6).
    TooBig { mtu: u16 },
    /// A malformed IPv4 option at this offset of the header: parameter problem (v4 only).
    ParameterProblem { pointer: u8 },
}

/// Whether `src`, a frame's source MAC, can be a host's: not a group (multicast or broadcast)
/// address, not zero, and not `ours` (a frame claiming to come from weir's own port is a loop
/// or a spoof; see [`crate::fib::PortAddrs::foreign_mac`]).
#[inline(always)]
fn plausible_source_mac(src: &[u8], ours: Option<&[u8; 6]>) -> bool {
    src.first().is_some_and(|b| b & 1 == 0) && src != [0u8; 6] && ours.is_none_or(|o| src != o)
}

/// Marks a pending entry whose neighbor is now known.
const RELEASE: u64 = u64::MAX;

/// The pipeline's internal decision, before ownership of the frame is settled.
enum Step {
    Send(u8),
    Hold(u8, IpAddr),
    Drop(DropReason),
    /// Handled by weir itself (an ARP reply or NA learned from): freed, not a drop.
    Consumed,
    /// Belongs to another worker's flow (or may: after this many workers looked for it).
    Handoff(u16, u8),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reasons_are_listed_in_discriminant_order_with_unique_names() {
        let mut names = std::collections::BTreeSet::new();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
            assert!(names.insert(r.as_str()), "duplicate name {}", r.as_str());
            assert!(!r.help().is_empty(), "{r:?} has no help");
        }
        // The names operators and tests know them by.
        assert_eq!(DropReason::Ipv6ExtChainTooLong.as_str(), "ipv6_ext_chain_too_long");
        assert_eq!(DropReason::BadIpv4TotalLength.as_str(), "bad_ipv4_total_length");
        assert_eq!(DropReason::Icmpv6Unhandled.as_str(), "icmpv6_unhandled");
        assert_eq!(DropReason::RxErrors.as_str(), "rx_errors");
        assert_eq!(
            DropReason::NotRoutable.help(),
            "Broadcast or multicast IP destination that weir does not forward."
        );
    }

    #[test]
    fn every_parse_error_has_its_drop_reason() {
        for e in ParseError::ALL {
            assert_eq!(DropReason::from(e).as_str(), e.as_str(), "{e:?}");
        }
    }

    #[test]
    fn icmp_errors_are_rate_limited() {
        let mut b = TokenBucket { tokens: 2, burst: 2, per_sec: 10, last_ns: 0 };
        assert!(b.take(0));
        assert!(b.take(0));
        assert!(!b.take(1_000));
        // 100 ms buys one token at 10 per second.
        assert!(b.take(100_000_000));
        assert!(!b.take(100_000_001));
    }
}
