//! Workers: one per core, pinned, polling their port queues and running each burst to
//! completion through the pipeline.

use crate::buf::Batch;
use crate::buf::PacketBuf as _;
use crate::capture::Direction;
use crate::cycles;
use crate::io::PacketIo;
use crate::mempool::{PoolBuf, PoolCache};
use crate::pipeline::{DropReason, Egress, Pipeline, PipelineCounters, Verdict};
use crate::ring::{Handoff, HandoffRing};
use arrayvec::ArrayVec;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// First nap of an idle worker whose queues have no descriptor to sleep on, microseconds.
pub const NAP_MIN_US: u64 = 10;
/// Longest such nap, microseconds: the most latency an idle worker adds to the first frame.
pub const NAP_MAX_US: u64 = 1000;

/// Polls between two reads of the clock.
const CLOCK_EVERY_POLLS: u32 = 8;

/// How often a worker looks at its ports' links, nanoseconds.
const LINK_CHECK_NS: u64 = 1_000_000_000;

/// What a worker does when its queues are empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdlePolicy {
    /// Keep polling: lowest latency, one core at 100 %.
    BusyPoll,
    /// After `empty_polls` empty polls in a row, sleep in `poll(2)` on the queues' descriptors
    /// for at most `sleep_ms` milliseconds, until traffic returns. Queues without a descriptor
    /// to wait on (DPDK's) nap instead: from [`NAP_MIN_US`] doubling to at most [`NAP_MAX_US`]
    /// (and `sleep_ms`), polling between naps, back to busy polling as soon as a frame arrives.
    Adaptive {
        /// Empty polls before sleeping.
        empty_polls: u32,
        /// Longest sleep, in milliseconds (housekeeping runs at least this often).
        sleep_ms: u32,
    },
}

/// Tells workers to stop, and wakes at once those asleep in `poll(2)`: a pipe whose read end
/// is in every sleeping worker's descriptor set becomes readable when [`StopSignal::stop`]
/// writes to it, and stays so.
pub struct StopSignal {
    flag: AtomicBool,
    reader: std::io::PipeReader,
    writer: std::io::PipeWriter,
}

impl StopSignal {
    /// A signal not given yet.
    pub fn new() -> std::io::Result<StopSignal> {
        let (reader, writer) = std::io::pipe()?;
        Ok(StopSignal { flag: AtomicBool::new(false), reader, writer })
    }

    /// Asks every worker to stop, waking the sleeping ones.
    pub fn stop(&self) {
        use std::io::Write;
        if !self.flag.swap(true, Ordering::Release) {
            // One byte is enough: nobody reads it, the pipe stays readable.
            let _ = (&self.writer).write(&[1]);
        }
    }

    /// Whether [`stop`](Self::stop) was called.
    #[inline]
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    fn fd(&self) -> RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.reader)
    }
}

/// A source of fresh buffers for frames the pipeline builds.
pub trait BufSource<B> {
    /// One empty buffer, or `None` when exhausted.
    fn alloc(&mut self) -> Option<B>;
}

impl BufSource<PoolBuf> for PoolCache {
    fn alloc(&mut self) -> Option<PoolBuf> {
        PoolCache::alloc(self)
    }
}

fn bump(c: &AtomicU64, v: u64) {
    // Single writer (the owning worker): a plain load and store, no read-modify-write.
    c.store(v, Ordering::Relaxed);
}

pub use crate::io::SharedPortStats;

crate::counters! {
    /// A worker's counters, written by the worker and read by anyone (VPP `show runtime`
    /// style).
    pub struct WorkerCounters {
        /// Worker loop iterations.
        Counter polls,
        /// Loop iterations that received at least one frame.
        Counter bursts,
        /// Frames the worker received.
        Counter packets,
        /// TSC cycles spent in iterations that received or sent frames.
        Counter busy_cycles,
        /// TSC cycles spent in empty iterations and asleep.
        Counter idle_cycles,
        /// Times the worker slept in poll(2).
        Counter sleeps,
        /// Frames routed.
        Counter forwarded,
        /// ARP, NDP and echo replies sent.
        Counter replies,
        /// Frames consumed by weir (ARP replies, neighbor advertisements).
        Counter consumed,
        /// ICMP errors sent.
        Counter icmp_errors,
        /// ICMP errors suppressed by the rate limit.
        Counter icmp_rate_limited,
        /// ARP requests and neighbor solicitations sent.
        Counter resolutions_sent,
        /// L4 checksums completed (partial checksums from the kernel).
        Counter checksums_completed,
        /// Frames handed to the worker owning their flow.
        Counter handed_off,
        /// ARP and NDP claims not believed.
        Counter neighbor_claims_ignored,
        /// Unicast probes of neighbors whose address someone else claimed.
        Counter neighbor_probes_sent,
        /// TCP resets sent (flows whose endpoint is gone, segments of no flow, draining).
        Counter resets_sent,
        /// Mesh flows in the worker's table.
        Gauge flows,
        /// Mesh flows opened.
        Counter flows_opened,
        /// Mesh flows expired.
        Counter flows_expired,
        /// Mesh handshakes evicted for new flows in a full table.
        Counter flows_evicted,
        /// Packets translated client to endpoint.
        Counter mesh_forward,
        /// Packets translated endpoint to client.
        Counter mesh_reverse,
        /// Handshakes endpoints answered.
        Counter connects_ok,
        /// Handshakes endpoints refused or left unanswered.
        Counter connects_failed,
        /// ICMP errors about flows, translated.
        Counter icmp_translated,
        /// Handshakes answered with a challenge ACK: the SNAT 4-tuple was still in use.
        Counter snat_collisions,
        /// Failed handshakes not held against their endpoints (during evictions).
        Counter connects_failed_unjudged,
    }
}

/// What a worker shares with the rest of weir: its counters, per port and per drop reason, and
/// the desks where it answers flow listings and copies captured frames.
#[repr(align(128))]
pub struct WorkerStats {
    /// Loop, pipeline and mesh counters.
    pub counters: WorkerCounters,
    /// Drops by reason, indexed by `DropReason as usize`.
    pub drops: [AtomicU64; DropReason::COUNT],
    /// Per port of this worker.
    pub ports: Box<[SharedPortStats]>,
    /// Where the control thread asks for a page of this worker's flows.
    pub flow_desk: FlowDesk,
    /// Where this worker copies the frames a capture wants.
    pub capture: crate::capture::CaptureRing,
    /// Where the control thread takes this worker's flows and queues in a hot restart.
    pub handover: HandoverDesk,
}

/// Flows one page of a hot restart's copy holds.
pub const HANDOVER_PAGE: usize = 4096;

/// Flow records a worker looks at per poll while it copies its table out (a few tens of
/// microseconds: the worker keeps forwarding meanwhile).
const HANDOVER_LOOK_PER_POLL: usize = 8192;

/// How long a paused worker sleeps between looks at its desk.
const PAUSED_NAP: std::time::Duration = std::time::Duration::from_micros(50);

/// What the control thread asks of a worker in a hot restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum HandoverAsk {
    /// Nothing (or: done with what was asked).
    Nothing = 0,
    /// Copy the flow table out, page by page, while forwarding, and note what changes.
    Copy = 1,
    /// Hand out what changed since the copy began, still forwarding (and noting what changes
    /// meanwhile): the pause then has only that much left to hand out.
    CatchUp = 4,
    /// Stop receiving, hand out what changed since the copy began, then each queue's
    /// descriptor and position, and wait.
    Pause = 2,
    /// Back to forwarding as before (the restart failed); changes are no longer noted.
    Resume = 3,
}

/// Where a worker is in a hot restart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum HandoverStage {
    /// Forwarding, no restart under way.
    #[default]
    Serving,
    /// Copying its table out, forwarding.
    Copying,
    /// The whole table copied; forwarding, noting changes.
    Copied,
    /// Handing out what changed during the copy, forwarding.
    CatchingUp,
    /// What changed during the copy handed out; forwarding, noting changes.
    CaughtUp,
    /// Not receiving; handing out the changes.
    Pausing,
    /// Not receiving; everything handed out (the page's `queues` say where the queues stand).
    Paused,
}

/// One page of a worker's part in a hot restart, as the worker fills it.
#[derive(Debug, Default)]
pub struct HandoverPage {
    /// Flows, by their id in the worker's table, as [`FlowTable::carried`] gives them
    /// (capacity [`HANDOVER_PAGE`], reserved: the worker fills it without allocating).
    ///
    /// [`FlowTable::carried`]: crate::mesh::flow::FlowTable::carried
    pub flows: Vec<(u32, crate::mesh::flow::Flow)>,
    /// Ids whose flows left the table after they were copied (capacity [`HANDOVER_PAGE`]).
    pub gone: Vec<u32>,
    /// Once paused: each port's queue, by port number.
    pub queues: Vec<Option<crate::io::QueueHandover>>,
    /// Once paused: the neighbors the worker learned (address, MAC, port, age in ns).
    pub neighbors: Vec<(std::net::IpAddr, crate::neigh::Mac, u8, u64)>,
    /// The stage the worker was in when it filled the page.
    pub stage: HandoverStage,
    /// The worker filled the page and the control thread has not taken it yet.
    pub full: bool,
}

impl HandoverPage {
    /// Empties the page (keeping its room): nothing a failed attempt left goes to the next.
    fn clear(&mut self) {
        self.flows.clear();
        self.gone.clear();
        self.queues.clear();
        self.neighbors.clear();
        self.stage = HandoverStage::Serving;
        self.full = false;
    }

    /// An empty page with its room reserved.
    pub fn new() -> HandoverPage {
        HandoverPage {
            flows: Vec::with_capacity(HANDOVER_PAGE),
            gone: Vec::with_capacity(HANDOVER_PAGE),
            ..HandoverPage::default()
        }
    }
}

/// A worker's desk for a hot restart: the control thread leaves a [`HandoverAsk`]; the worker
/// sees it between bursts (one relaxed load a loop while nothing is asked), fills pages and
/// leaves them here; the control thread takes each ([`HandoverDesk::take`]), which frees the
/// desk for the next. The worker never waits for the lock.
pub struct HandoverDesk {
    ask: std::sync::atomic::AtomicU8,
    page: std::sync::Mutex<HandoverPage>,
}

impl Default for HandoverDesk {
    fn default() -> Self {
        HandoverDesk {
            ask: std::sync::atomic::AtomicU8::new(HandoverAsk::Nothing as u8),
            page: std::sync::Mutex::new(HandoverPage::new()),
        }
    }
}

impl HandoverDesk {
    /// Asks the worker for `ask`.
    pub fn ask(&self, ask: HandoverAsk) {
        self.ask.store(ask as u8, Ordering::Release);
    }

    /// Takes the page the worker left, if it left one: its contents are swapped into `into`
    /// (whose own vectors, cleared, go back to the desk). Returns the stage it was filled in.
    pub fn take(&self, into: &mut HandoverPage) -> Option<HandoverStage> {
        let mut page = self.page.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !page.full {
            return None;
        }
        into.flows.clear();
        into.gone.clear();
        std::mem::swap(&mut page.flows, &mut into.flows);
        std::mem::swap(&mut page.gone, &mut into.gone);
        into.queues = std::mem::take(&mut page.queues);
        into.neighbors = std::mem::take(&mut page.neighbors);
        into.stage = page.stage;
        page.full = false;
        Some(page.stage)
    }

    /// The stage of the worker's last page (`Serving` once it resumed).
    pub fn stage(&self) -> HandoverStage {
        self.page.lock().unwrap_or_else(std::sync::PoisonError::into_inner).stage
    }

    fn asked(&self) -> HandoverAsk {
        match self.ask.load(Ordering::Acquire) {
            1 => HandoverAsk::Copy,
            2 => HandoverAsk::Pause,
            3 => HandoverAsk::Resume,
            4 => HandoverAsk::CatchUp,
            _ => HandoverAsk::Nothing,
        }
    }
}

/// Frames a worker's capture ring holds ([`crate::capture::SNAP_MAX`] bytes each: 2 MiB).
pub const CAPTURE_SLOTS: usize = 1024;

/// The most flows one page of a flow listing holds.
pub const FLOW_PAGE_MAX: usize = 1000;

/// Which flows a listing wants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowFilter {
    /// Flows to this VIP, port and protocol (a service).
    pub service: Option<(std::net::IpAddr, u16, u8)>,
    /// Flows on this endpoint id.
    pub endpoint: Option<u32>,
}

/// A flow in a listing: its id, the flow, and the milliseconds it has left without traffic.
pub type ListedFlow = (u32, crate::mesh::flow::Flow, u64);

/// One page of a worker's flows, as the worker answered it.
#[derive(Debug, Default)]
pub struct FlowPage {
    /// From which flow id the worker looks.
    pub cursor: u32,
    /// At most this many flows (up to [`FLOW_PAGE_MAX`]).
    pub limit: usize,
    /// Which flows.
    pub filter: FlowFilter,
    /// The flows found, with the milliseconds each has left without traffic (capacity
    /// [`FLOW_PAGE_MAX`], reserved at start-up: the worker fills it without allocating).
    pub flows: Vec<ListedFlow>,
    /// The id to go on from, if the table holds more.
    pub next: Option<u32>,
    /// The worker has answered.
    pub answered: bool,
}

/// A worker's desk for flow listings: the control thread leaves a request and raises the flag;
/// the worker sees the flag between bursts (one relaxed load a loop), fills the page and lowers
/// it. The lock is never waited on by the worker (it tries it), and the control thread holds it
/// only to write a request or read an answer.
pub struct FlowDesk {
    pending: AtomicBool,
    page: std::sync::Mutex<FlowPage>,
}

impl Default for FlowDesk {
    fn default() -> Self {
        FlowDesk {
            pending: AtomicBool::new(false),
            page: std::sync::Mutex::new(FlowPage {
                flows: Vec::with_capacity(FLOW_PAGE_MAX),
                ..FlowPage::default()
            }),
        }
    }
}

impl FlowDesk {
    /// Leaves a request for up to `limit` flows matching `filter` from flow id `cursor` on.
    pub fn ask(&self, cursor: u32, limit: usize, filter: FlowFilter) {
        let mut page = self.page.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        page.cursor = cursor;
        page.limit = limit.min(FLOW_PAGE_MAX);
        page.filter = filter;
        page.flows.clear();
        page.next = None;
        page.answered = false;
        self.pending.store(true, Ordering::Release);
    }

    /// The answer, once the worker gave it: the flows and where to go on from.
    pub fn answer(&self) -> Option<(Vec<ListedFlow>, Option<u32>)> {
        let page = self.page.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        page.answered.then(|| (page.flows.clone(), page.next))
    }
}

impl WorkerStats {
    /// Zeroed counters for `ports` ports.
    pub fn new(ports: usize) -> Self {
        WorkerStats {
            counters: WorkerCounters::default(),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
            ports: (0..ports).map(|_| SharedPortStats::default()).collect(),
            flow_desk: FlowDesk::default(),
            capture: crate::capture::CaptureRing::new(CAPTURE_SLOTS),
            handover: HandoverDesk::default(),
        }
    }

    fn publish_pipeline(&self, c: &PipelineCounters) {
        let w = &self.counters;
        for (a, v) in self.drops.iter().zip(c.drops.iter()) {
            bump(a, *v);
        }
        bump(&w.forwarded, c.forwarded);
        bump(&w.replies, c.replies);
        bump(&w.icmp_errors, c.icmp_errors);
        bump(&w.icmp_rate_limited, c.icmp_rate_limited);
        bump(&w.resolutions_sent, c.resolutions_sent);
        bump(&w.checksums_completed, c.checksums_completed);
        bump(&w.consumed, c.consumed);
        bump(&w.handed_off, c.handed_off);
        bump(&w.neighbor_claims_ignored, c.neighbor_claims_ignored);
        bump(&w.neighbor_probes_sent, c.neighbor_probes_sent);
        bump(&w.resets_sent, c.resets_sent);
    }

    fn publish_mesh(&self, m: &crate::mesh::engine::MeshEngine) {
        let w = &self.counters;
        let f = m.flows();
        bump(&w.flows, f.len() as u64);
        bump(&w.flows_expired, f.stats.expired);
        bump(&w.flows_evicted, f.stats.evicted);
        let c = m.counters;
        bump(&w.flows_opened, c.flows_opened);
        bump(&w.mesh_forward, c.forward);
        bump(&w.mesh_reverse, c.reverse);
        bump(&w.connects_ok, c.connects_ok);
        bump(&w.connects_failed, c.connects_failed);
        bump(&w.icmp_translated, c.icmp_translated);
        bump(&w.snat_collisions, c.snat_collisions);
        bump(&w.connects_failed_unjudged, c.connects_failed_unjudged);
    }
}

/// Sets `pipeline`'s counters, and its mesh's, to those another weir's worker published (a
/// hot restart), so that they go on counting from there: `value(name)` gives each of
/// [`WorkerCounters`] by name, `drops(reason)` each drop reason's. The loop's own counters
/// go on with [`Worker::carry_loop_counters`]; the flow gauge counts what the table holds.
pub fn carry_counters<B: crate::buf::PacketBuf>(
    pipeline: &mut Pipeline<B>,
    value: impl Fn(&str) -> u64,
    drops: impl Fn(DropReason) -> u64,
) {
    let c = &mut pipeline.counters;
    for (i, d) in c.drops.iter_mut().enumerate() {
        if let Some(r) = DropReason::ALL.get(i) {
            *d = drops(*r);
        }
    }
    c.forwarded = value("forwarded");
    c.replies = value("replies");
    c.icmp_errors = value("icmp_errors");
    c.icmp_rate_limited = value("icmp_rate_limited");
    c.resolutions_sent = value("resolutions_sent");
    c.checksums_completed = value("checksums_completed");
    c.consumed = value("consumed");
    c.handed_off = value("handed_off");
    c.neighbor_claims_ignored = value("neighbor_claims_ignored");
    c.neighbor_probes_sent = value("neighbor_probes_sent");
    c.resets_sent = value("resets_sent");
    if let Some(m) = pipeline.mesh_mut() {
        let c = &mut m.counters;
        c.flows_opened = value("flows_opened");
        c.forward = value("mesh_forward");
        c.reverse = value("mesh_reverse");
        c.connects_ok = value("connects_ok");
        c.connects_failed = value("connects_failed");
        c.icmp_translated = value("icmp_translated");
        c.snat_collisions = value("snat_collisions");
        c.connects_failed_unjudged = value("connects_failed_unjudged");
        let f = &mut m.flows_mut().stats;
        f.expired = value("flows_expired");
        f.evicted = value("flows_evicted");
    }
}

#[derive(Default, Clone, Copy)]
struct LoopCounters {
    polls: u64,
    bursts: u64,
    packets: u64,
    busy_cycles: u64,
    idle_cycles: u64,
    sleeps: u64,
}

/// The egress side of one loop iteration: per-port transmit batches, flushed when full and at
/// the end of the burst.
struct Tx<'a, P: PacketIo, S> {
    ports: &'a mut [P],
    batches: &'a mut [Batch<P::Buf>],
    source: &'a mut S,
    /// Every worker's handoff ring, by worker index.
    outboxes: &'a [Arc<HandoffRing<P::Buf>>],
    /// A transmit capture, when one is armed.
    capture: Option<(&'a crate::capture::CaptureRing, crate::capture::Armed)>,
}

/// Offers a frame about to leave by `port` to an armed transmit capture (out of line: the
/// frame's send path keeps one test of an `Option` when no capture is armed).
#[cold]
#[inline(never)]
fn tap_sent(ring: &crate::capture::CaptureRing, f: &crate::capture::Armed, port: u8, frame: &[u8]) {
    if f.filter.port == port {
        crate::capture::offer(ring, f, frame, None);
    }
}

impl<P: PacketIo, S: BufSource<P::Buf>> Egress<P::Buf> for Tx<'_, P, S> {
    #[inline(always)]
    fn send(&mut self, port: u8, pkt: P::Buf) {
        let i = usize::from(port);
        // An armed transmit capture sees the frame as it leaves, while it is in the cache.
        if let Some((ring, f)) = &self.capture {
            tap_sent(ring, f, port, pkt.data());
        }
        let (Some(batch), Some(io)) = (self.batches.get_mut(i), self.ports.get_mut(i)) else {
            return;
        };
        if batch.is_full() {
            io.tx_burst(batch);
        }
        // Cannot fail: the batch was just flushed if it was full.
        let _ = batch.try_push(pkt);
    }

    #[inline]
    fn alloc(&mut self) -> Option<P::Buf> {
        self.source.alloc()
    }

    fn handoff(&mut self, worker: u16, pkt: P::Buf, in_port: u8, passes: u8) -> Result<(), P::Buf> {
        match self.outboxes.get(usize::from(worker)) {
            Some(ring) => ring.enqueue(Handoff { pkt, in_port, passes }).map_err(|h| h.pkt),
            None => Err(pkt),
        }
    }
}

impl<P: PacketIo, S> Tx<'_, P, S> {
    /// Sends every pending batch; returns how many frames were handed over.
    fn flush(&mut self) -> usize {
        let mut n = 0;
        for i in 0..self.ports.len().min(self.batches.len()) {
            if !self.batches[i].is_empty() {
                n += self.batches[i].len();
                self.ports[i].tx_burst(&mut self.batches[i]);
            }
        }
        n
    }
}

/// One worker: its queues (one per port), its pipeline, its buffer source.
pub struct Worker<P: PacketIo, S> {
    id: usize,
    ports: Vec<P>,
    tx: Vec<Batch<P::Buf>>,
    rx: Batch<P::Buf>,
    handoff_in: Option<Arc<HandoffRing<P::Buf>>>,
    handoff_out: Arc<[Arc<HandoffRing<P::Buf>>]>,
    /// The capture filter this worker last read.
    tap: crate::capture::CaptureTap,
    handoff_rx: ArrayVec<Handoff<P::Buf>, { crate::buf::BURST }>,
    source: S,
    pipeline: Pipeline<P::Buf>,
    idle: IdlePolicy,
    stats: Arc<WorkerStats>,
    counters: LoopCounters,
    epoch: Instant,
    /// The pipeline clock as last read, and the polls since then.
    clock_ns: u64,
    clock_age: u32,
    /// Where this worker is in a hot restart, and how far its copy or its changes went.
    handover: HandoverStage,
    handover_cursor: usize,
}

impl<P: PacketIo, S: BufSource<P::Buf>> Worker<P, S> {
    /// A worker over `ports` (index = port number in the FIB).
    pub fn new(
        id: usize,
        ports: Vec<P>,
        source: S,
        pipeline: Pipeline<P::Buf>,
        idle: IdlePolicy,
        stats: Arc<WorkerStats>,
    ) -> Self {
        let tx = (0..ports.len()).map(|_| Batch::new()).collect();
        Worker {
            id,
            ports,
            tx,
            rx: Batch::new(),
            handoff_in: None,
            handoff_out: Arc::from(Vec::new()),
            tap: crate::capture::CaptureTap::default(),
            handoff_rx: ArrayVec::new(),
            source,
            pipeline,
            idle,
            stats,
            counters: LoopCounters::default(),
            epoch: Instant::now(),
            clock_ns: 0,
            clock_age: u32::MAX,
            handover: HandoverStage::Serving,
            handover_cursor: 0,
        }
    }

    /// Sets the loop's counters (polls, bursts, packets, cycles, sleeps) to those another weir's
    /// worker published (a hot restart), by [`WorkerCounters`] name: they go on from there.
    pub fn carry_loop_counters(&mut self, value: impl Fn(&str) -> u64) {
        self.counters = LoopCounters {
            polls: value("polls"),
            bursts: value("bursts"),
            packets: value("packets"),
            busy_cycles: value("busy_cycles"),
            idle_cycles: value("idle_cycles"),
            sleeps: value("sleeps"),
        };
    }

    /// Makes `ring` this worker's inbox: packets other workers hand over are processed here as
    /// if received on the port they carry.
    pub fn set_handoff_inbox(&mut self, ring: Arc<HandoffRing<P::Buf>>) {
        self.handoff_in = Some(ring);
    }

    /// Connects the workers' rings: `rings[w]` is worker w's inbox, this worker's among them.
    pub fn set_handoff_rings(&mut self, rings: Arc<[Arc<HandoffRing<P::Buf>>]>) {
        self.handoff_in = rings.get(self.id).cloned();
        self.handoff_out = rings;
    }

    /// This worker's index.
    pub fn id(&self) -> usize {
        self.id
    }

    /// Nanoseconds since the worker started: the pipeline's clock.
    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Sends gratuitous ARP / unsolicited NA for every port address.
    pub fn announce(&mut self) {
        let mut tx = Tx {
            ports: &mut self.ports,
            batches: &mut self.tx,
            source: &mut self.source,
            outboxes: &self.handoff_out,
            capture: None,
        };
        self.pipeline.announce(&mut tx);
        tx.flush();
    }

    /// One loop iteration: housekeeping, then one burst from each port, run to completion.
    /// Returns the number of frames received.
    #[inline]
    pub fn poll_once(&mut self) -> usize {
        let start = cycles::now();
        // The clock is read every few polls, not every poll: its users (neighbor ageing, retries,
        // ICMP rate limits) work in milliseconds, and a clock read costs more than a packet.
        if self.clock_age >= CLOCK_EVERY_POLLS {
            self.clock_ns = self.now_ns();
            self.clock_age = 0;
        }
        self.clock_age += 1;
        let now_ns = self.clock_ns;
        // A capture, when armed: its filter (read once a poll, not per frame).
        let ring = &self.stats.capture;
        let capture = if ring.is_armed() { self.tap.filter(ring) } else { None };
        let mut tx = Tx {
            ports: &mut self.ports,
            batches: &mut self.tx,
            source: &mut self.source,
            outboxes: &self.handoff_out,
            capture: capture.filter(|f| f.filter.direction == Direction::Tx).map(|f| (ring, f)),
        };
        self.pipeline.maintain(now_ns, &mut tx);
        let mut received = 0;
        for p in 0..tx.ports.len() {
            let n = tx.ports[p].rx_burst(&mut self.rx);
            if n == 0 {
                continue;
            }
            received += n;
            let port = u8::try_from(p).unwrap_or(u8::MAX);
            self.pipeline.prefetch_burst(&self.rx);
            let here = capture.filter(|f| f.filter.port == port);
            if let Some(f) = here.filter(|f| f.filter.direction == Direction::Rx) {
                // In the same pass as the pipeline's: the frame's header is in the cache.
                for pkt in self.rx.drain(..) {
                    crate::capture::offer(ring, &f, pkt.data(), None);
                    self.pipeline.process(pkt, port, now_ns, &mut tx);
                }
                continue;
            }
            if let Some(f) = here.filter(|f| f.filter.direction == Direction::Dropped) {
                for pkt in self.rx.drain(..) {
                    let held = crate::capture::hold(ring, &f, pkt.data());
                    let v = self.pipeline.process(pkt, port, now_ns, &mut tx);
                    let dropped = match v {
                        Verdict::Drop(r) => Some(r as u8),
                        _ => None,
                    };
                    crate::capture::settle(ring, held, dropped);
                }
                continue;
            }
            for pkt in self.rx.drain(..) {
                let v = self.pipeline.process(pkt, port, now_ns, &mut tx);
                debug_assert!(
                    !matches!(v, Verdict::Forward(x) if usize::from(x) >= tx.ports.len())
                );
            }
        }
        if let Some(ring) = &self.handoff_in {
            let n = ring.dequeue_burst(&mut self.handoff_rx);
            received += n;
            for h in self.handoff_rx.drain(..) {
                self.pipeline.process_handed(h.pkt, h.in_port, h.passes, now_ns, &mut tx);
            }
        }
        // Frames released by housekeeping (resolved neighbors) are sent in polls that
        // received nothing: that work is busy time too.
        let flushed = tx.flush();
        let spent = cycles::now().wrapping_sub(start);
        self.counters.polls += 1;
        if received > 0 || flushed > 0 {
            self.counters.bursts += u64::from(received > 0);
            self.counters.packets += received as u64;
            self.counters.busy_cycles += spent;
        } else {
            self.counters.idle_cycles += spent;
        }
        received
    }

    /// Fills the page the control thread asked for, from this worker's flow table. Called
    /// between bursts; never waits for the lock; allocates nothing (the page's room is
    /// reserved).
    #[cold]
    fn answer_flow_listing(&mut self) {
        let Ok(mut page) = self.stats.flow_desk.page.try_lock() else { return };
        let now = self.clock_ns;
        let (cursor, limit, filter) = (page.cursor, page.limit, page.filter);
        let mut next = None;
        if let Some(m) = self.pipeline.mesh() {
            let table = m.flows();
            for (id, f) in table.iter().skip_while(|(id, _)| *id < cursor) {
                let on_service = filter.service.is_none_or(|(vip, port, proto)| {
                    f.forward.dst() == vip
                        && f.forward.dst_port() == port
                        && f.forward.proto() == proto
                });
                if !on_service || filter.endpoint.is_some_and(|e| e != f.endpoint) {
                    continue;
                }
                if page.flows.len() >= limit {
                    next = Some(id);
                    break;
                }
                let left_ms = f.expires_ns.saturating_sub(now) / 1_000_000;
                page.flows.push((id, f, left_ms));
            }
        }
        page.next = next;
        page.answered = true;
        self.stats.flow_desk.pending.store(false, Ordering::Release);
    }

    /// Copies the counters to the shared stats.
    pub fn publish(&self) {
        let s = &self.stats;
        let c = &self.counters;
        let w = &s.counters;
        bump(&w.polls, c.polls);
        bump(&w.bursts, c.bursts);
        bump(&w.packets, c.packets);
        bump(&w.busy_cycles, c.busy_cycles);
        bump(&w.idle_cycles, c.idle_cycles);
        bump(&w.sleeps, c.sleeps);
        s.publish_pipeline(&self.pipeline.counters);
        if let Some(m) = self.pipeline.mesh() {
            s.publish_mesh(m);
        }
        for (shared, io) in s.ports.iter().zip(self.ports.iter()) {
            shared.publish(&io.stats());
        }
    }

    /// Looks at the links of every port (or of port `only`), logs what changed, and
    /// announces weir's addresses again on a link that came back.
    fn check_links(&mut self, only: Option<usize>) {
        let mut back = false;
        for (i, port) in self.ports.iter_mut().enumerate() {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            let event = port.check_link();
            if matches!(
                event,
                Some(crate::io::LinkEvent::Down { .. } | crate::io::LinkEvent::Up { .. })
            ) {
                self.pipeline.link_changed(u8::try_from(i).unwrap_or(u8::MAX));
            }
            match event {
                None => {}
                Some(crate::io::LinkEvent::Down { iface, reason }) => tracing::warn!(
                    worker = self.id,
                    port = i,
                    %iface,
                    %reason,
                    "link down: not polled, frames for it dropped, until it returns"
                ),
                Some(crate::io::LinkEvent::Up { iface, reopened }) => {
                    tracing::info!(worker = self.id, port = i, %iface, reopened, "link up");
                    back = true;
                }
                Some(crate::io::LinkEvent::ReopenFailed { iface, error }) => tracing::warn!(
                    worker = self.id,
                    port = i,
                    %iface,
                    %error,
                    "link back, but the port could not be opened on it; trying again"
                ),
            }
        }
        if back {
            self.announce();
        }
    }

    /// Fills `pollfds` with the descriptors of the ports whose link is up (their indexes in
    /// `ports`), then the stop signal's. Returns whether all those ports have one: only then
    /// can the worker sleep in poll(2) without missing frames.
    fn poll_set(
        &self,
        stop: &StopSignal,
        pollfds: &mut Vec<libc::pollfd>,
        ports: &mut Vec<usize>,
    ) -> bool {
        pollfds.clear();
        ports.clear();
        let mut all = true;
        for (i, p) in self.ports.iter().enumerate().filter(|(_, p)| p.link_up()) {
            match p.poll_fd() {
                Some(fd) => {
                    pollfds.push(libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
                    ports.push(i);
                }
                None => all = false,
            }
        }
        pollfds.push(libc::pollfd { fd: stop.fd(), events: libc::POLLIN, revents: 0 });
        all
    }

    /// Runs until `stop` is given, then publishes the final counters.
    pub fn run(&mut self, stop: &StopSignal) {
        self.announce();
        // Sized once: filling them allocates nothing.
        let mut pollfds: Vec<libc::pollfd> = Vec::with_capacity(self.ports.len() + 1);
        let mut poll_ports: Vec<usize> = Vec::with_capacity(self.ports.len());
        let mut empty = 0u32;
        let mut since_publish = 0u32;
        let mut nap_us = NAP_MIN_US;
        let mut links_checked_ns = 0u64;
        while !stop.is_set() {
            if self.handover >= HandoverStage::Pausing {
                // A hot restart: the next weir takes over these queues; nothing is received
                // until it has, or until it failed and this worker is asked to resume.
                self.serve_handover();
                if self.handover == HandoverStage::Paused {
                    std::thread::sleep(PAUSED_NAP);
                }
                continue;
            }
            let n = self.poll_once();
            self.serve_requests();
            if self.clock_ns.saturating_sub(links_checked_ns) >= LINK_CHECK_NS {
                links_checked_ns = self.clock_ns;
                self.check_links(None);
            }
            since_publish += 1;
            if n > 0 {
                empty = 0;
                nap_us = NAP_MIN_US;
                if since_publish >= 16 {
                    self.publish();
                    since_publish = 0;
                }
                continue;
            }
            empty = empty.saturating_add(1);
            if since_publish >= 1024 {
                self.publish();
                since_publish = 0;
            }
            if let IdlePolicy::Adaptive { empty_polls, sleep_ms } = self.idle {
                if empty >= empty_polls {
                    self.publish();
                    since_publish = 0;
                    let t0 = cycles::now();
                    // Sleeping in poll(2) is only safe when every queue can wake the worker.
                    let can_sleep = self.poll_set(stop, &mut pollfds, &mut poll_ports);
                    if !can_sleep {
                        // Nothing to wake us: nap, and keep `empty` so the next empty poll
                        // naps again, a little longer.
                        std::thread::sleep(std::time::Duration::from_micros(nap_us));
                        let cap = NAP_MAX_US.min(u64::from(sleep_ms) * 1000).max(NAP_MIN_US);
                        nap_us = (nap_us * 2).min(cap);
                    } else {
                        sleep_on(&mut pollfds, sleep_ms);
                        empty = 0;
                        // An error on a port's descriptor (its device went down or away)
                        // would wake every poll at once: look at that link now.
                        let failed = libc::POLLERR | libc::POLLHUP | libc::POLLNVAL;
                        for (pfd, &port) in pollfds.iter().zip(&poll_ports) {
                            if pfd.revents & failed != 0 {
                                self.check_links(Some(port));
                            }
                        }
                    }
                    self.clock_age = CLOCK_EVERY_POLLS;
                    self.counters.idle_cycles += cycles::now().wrapping_sub(t0);
                    self.counters.sleeps += 1;
                }
            }
        }
        if let Some(m) = self.pipeline.mesh_mut() {
            m.flush_counts();
        }
        self.publish();
    }

    /// Between bursts: answers what the control thread asked for (a page of the flow
    /// listing), if anything; one load when nothing was asked.
    #[inline]
    pub fn serve_requests(&mut self) {
        if self.stats.flow_desk.pending.load(Ordering::Acquire) {
            self.answer_flow_listing();
        }
        if self.handover != HandoverStage::Serving
            || self.stats.handover.ask.load(Ordering::Relaxed) != HandoverAsk::Nothing as u8
        {
            self.serve_handover();
        }
    }

    /// This worker's part in a hot restart (see [`HandoverAsk`]): takes up what is asked, and
    /// fills the next page if the control thread took the last one.
    #[cold]
    fn serve_handover(&mut self) {
        let desk = &self.stats.handover;
        match (desk.asked(), self.handover) {
            (HandoverAsk::Copy, HandoverStage::Serving) => {
                if let Some(m) = self.pipeline.mesh_mut() {
                    m.flows_mut().track_changes(true);
                }
                self.handover = HandoverStage::Copying;
                self.handover_cursor = 0;
                desk.page.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
            }
            (HandoverAsk::CatchUp, HandoverStage::Copied) => {
                self.handover = HandoverStage::CatchingUp;
                self.handover_cursor = 0;
            }
            (
                HandoverAsk::Pause,
                HandoverStage::Copying
                | HandoverStage::Copied
                | HandoverStage::CatchingUp
                | HandoverStage::CaughtUp,
            ) => {
                self.handover = HandoverStage::Pausing;
                self.handover_cursor = 0;
            }
            (HandoverAsk::Resume, stage) => {
                if let Some(m) = self.pipeline.mesh_mut() {
                    m.flows_mut().track_changes(false);
                }
                if stage != HandoverStage::Serving {
                    tracing::info!(worker = self.id, "hot restart abandoned: forwarding again");
                }
                self.handover = HandoverStage::Serving;
                desk.ask(HandoverAsk::Nothing);
                let mut page = desk.page.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                page.clear();
                return;
            }
            _ => {}
        }
        if !matches!(
            self.handover,
            HandoverStage::Copying | HandoverStage::CatchingUp | HandoverStage::Pausing
        ) {
            return;
        }
        let Ok(mut page) = desk.page.try_lock() else { return };
        if page.full {
            return;
        }
        let now = self.now_ns();
        let cursor = &mut self.handover_cursor;
        let mut walked = true;
        if let Some(m) = self.pipeline.mesh_mut() {
            let table = m.flows_mut();
            let page = &mut *page;
            if self.handover == HandoverStage::Copying {
                let end = (*cursor + HANDOVER_LOOK_PER_POLL).min(table.capacity());
                while *cursor < end && page.flows.len() < HANDOVER_PAGE {
                    let id = u32::try_from(*cursor).unwrap_or(u32::MAX);
                    if let Some(f) = table.carried(id, now) {
                        page.flows.push((id, f));
                    }
                    *cursor += 1;
                }
                walked = *cursor >= table.capacity();
            } else {
                // Room in both lists whatever the changes are (a change map word holds up to
                // 64): a bit drained is never dropped.
                let room = (page.flows.capacity() - page.flows.len())
                    .min(page.gone.capacity() - page.gone.len());
                walked =
                    table.drain_changes(
                        cursor,
                        room.saturating_sub(64),
                        now,
                        &mut |id, f| match f {
                            Some(f) if page.flows.len() < page.flows.capacity() => {
                                page.flows.push((id, f));
                            }
                            None if page.gone.len() < page.gone.capacity() => page.gone.push(id),
                            _ => {}
                        },
                    );
            }
        }
        if !walked && page.flows.is_empty() && page.gone.is_empty() {
            return;
        }
        if walked {
            self.handover = match self.handover {
                HandoverStage::Copying => HandoverStage::Copied,
                HandoverStage::CatchingUp => HandoverStage::CaughtUp,
                _ => {
                    page.queues = self.ports.iter().map(PacketIo::handover).collect();
                    page.neighbors = self.pipeline.learned_neighbors(now);
                    // The counters as they stand: the next weir goes on from them.
                    if let Some(m) = self.pipeline.mesh_mut() {
                        m.flush_counts();
                    }
                    self.publish();
                    HandoverStage::Paused
                }
            };
        }
        page.stage = self.handover;
        page.full = true;
    }

    /// The pipeline (for tests and stats).
    pub fn pipeline(&self) -> &Pipeline<P::Buf> {
        &self.pipeline
    }

    /// What this worker shares (counters, flow desk, capture ring).
    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }

    /// The ports (for tests).
    pub fn ports(&self) -> &[P] {
        &self.ports
    }

    /// The ports, writable (for tests and benchmarks that feed or drain them).
    pub fn ports_mut(&mut self) -> &mut [P] {
        &mut self.ports
    }
}

#[allow(unsafe_code)]
fn sleep_on(fds: &mut [libc::pollfd], timeout_ms: u32) {
    let timeout = i32::try_from(timeout_ms).unwrap_or(i32::MAX);
    // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd of the given length for the
    // duration of the call; poll only writes their `revents` fields.
    unsafe {
        libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout);
    }
}
