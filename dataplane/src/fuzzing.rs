//! The logic of the `mesh_frames` fuzz target (`dataplane/fuzz/fuzz_targets/mesh_frames.rs`),
//! kept here so ordinary tests can run it over the seed corpus
//! (`dataplane/fuzz/corpus/mesh_frames/`) without nightly Rust.
//!
//! An input is a sequence of frames for a two-port pipeline with a [`MeshEngine`] in the path
//! (NAT, DNAT, DSR IP-in-IP and GUE, a cluster that resets its flows, an IPv6 service, a flow
//! table of eight flows evicting handshakes when full, timeouts of tens of milliseconds).
//! Each frame is a record:
//!
//! ```text
//! len_lo len_hi ctl tick bytes[len]
//! ```
//!
//! * `len`: little-endian, capped at [`MAX_FRAME`] and at what is left of the input;
//! * `ctl`: bit 0 the input port (0 toward the clients, 1 toward the endpoints); bits 1-2
//!   where the frame comes from ([`Source`]); bits 3-5 which of the last eight frames weir
//!   sent the derived sources start from (0 the latest);
//! * `tick`: how far the clock moves before the frame ([`advance_ns`]: 1 us to 3.25 s).
//!
//! Derived frames (a reply to what weir sent, an ICMP error about it, the previous frame
//! again) have `bytes` XORed over them, then their IPv4 header and L4 checksums made valid:
//! that is how an input answers a flow whose SNAT port weir picked at random in this run.

use crate::buf::PacketBuf;
use crate::fib::Fib;
use crate::mempool::{Mempool, MempoolConfig, PoolBuf};
use crate::mesh::engine::{MeshCounters, MeshEngine, MeshSettings, SharedMesh};
use crate::mesh::flow::{FlowTimeouts, WhenFull};
use crate::mesh::model::{
    proto, Balance, ClusterSpec, Encap, EndpointSpec, MeshCapacity, MeshSnapshot, Mode,
    OnEndpointGone, Policy, ServiceSpec,
};
use crate::neigh::NeighborBus;
use crate::pipeline::{Egress, Pipeline, PipelineConfig, PipelineCounters, Verdict};
use crate::testing::{counted_once, router_ports, Tally};
use stack::parse::{L3, L4};
use stack::{parse_frame, MacAddr, Parsed};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;

/// Longest frame an input record carries (a pool buffer's data room).
pub const MAX_FRAME: usize = 2048;

/// Bytes of a record's header: length (2), control, tick.
pub const RECORD_HEADER: usize = 4;

/// Frames weir sent that derived frames may start from.
pub const HISTORY: usize = 8;

/// The MAC of a host behind port 1 that weir does not know statically: it answers weir's ARP
/// requests and neighbor solicitations in derived replies.
pub const NEIGHBOR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x33];

/// Where the frame of a record comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The record's bytes, as they are.
    Literal,
    /// The answer of the host a frame weir sent went to: addresses and ports swapped, a SYN
    /// answered with SYN-ACK and anything else with ACK; an ARP request or neighbor
    /// solicitation answered from [`NEIGHBOR_MAC`]. The argument picks the frame (0 the
    /// latest weir sent).
    ReplyTo(u8),
    /// An ICMP error from the host a frame weir sent went to, quoting it: fragmentation
    /// needed (MTU 1280) over IPv4, packet too big (1280) over IPv6.
    IcmpErrorAbout(u8),
    /// The previous frame of the input again.
    Again,
}

/// One record of a fuzz input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// The input port, 0 or 1.
    pub port: u8,
    /// Where the frame comes from.
    pub source: Source,
    /// How far the clock moves before the frame (see [`advance_ns`]).
    pub tick: u8,
    /// The frame ([`Source::Literal`]), or the bytes XORed over the derived frame.
    pub bytes: &'a [u8],
}

/// Nanoseconds the clock moves for `tick`: 1 us plus `tick`² × 50 us, so small ticks are
/// fine-grained and the largest (3.25 s) outlast every flow and neighbor timeout.
pub fn advance_ns(tick: u8) -> u64 {
    let t = u64::from(tick);
    1_000 + t * t * 50_000
}

/// Splits a fuzz input into its records. A trailing header of fewer than
/// [`RECORD_HEADER`] bytes is ignored.
pub fn records(data: &[u8]) -> Vec<Record<'_>> {
    let mut out = Vec::new();
    let mut rest = data;
    while let [lo, hi, ctl, tick, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(MAX_FRAME).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        let which = (ctl >> 3) & 7;
        let source = match (ctl >> 1) & 3 {
            0 => Source::Literal,
            1 => Source::ReplyTo(which),
            2 => Source::IcmpErrorAbout(which),
            _ => Source::Again,
        };
        out.push(Record { port: ctl & 1, source, tick: *tick, bytes });
        rest = next;
    }
    out
}

/// Encodes records as [`records`] reads them (frames longer than [`MAX_FRAME`] are cut).
pub fn encode(records: &[Record<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        let bytes = &r.bytes[..r.bytes.len().min(MAX_FRAME)];
        let (kind, which) = match r.source {
            Source::Literal => (0, 0),
            Source::ReplyTo(i) => (1, i),
            Source::IcmpErrorAbout(i) => (2, i),
            Source::Again => (3, 0),
        };
        let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.push((r.port & 1) | (kind << 1) | ((which & 7) << 3));
        out.push(r.tick);
        out.extend_from_slice(bytes);
    }
    out
}

fn service(
    name: &str,
    vip: IpAddr,
    port: u16,
    proto: u8,
    mode: Mode,
    cluster: &str,
) -> ServiceSpec {
    ServiceSpec { name: name.into(), vip, port, proto, cluster: cluster.into(), mode }
}

fn cluster(name: &str, policy: Policy, addrs: &[IpAddr], gone: OnEndpointGone) -> ClusterSpec {
    ClusterSpec {
        name: name.into(),
        policy,
        maglev_table_size: None,
        on_endpoint_gone: gone,
        balance: Balance::default(),
        connect_timeout_ns: None,
        endpoints: addrs
            .iter()
            .map(|&addr| EndpointSpec {
                addr,
                port: 80,
                weight: 1,
                healthy: true,
                priority: 0,
                group: 0,
            })
            .collect(),
    }
}

/// The pipeline `dataplane/tests/mesh_total.rs` tests: the two-port router
/// ([`router_ports`], port 1 with an MTU of 1400) as worker 0 of two, with static neighbors
/// for the endpoints (198.18.2.2, 198.18.2.3, 2001:db8:2::2) and the client (198.18.1.2,
/// 2001:db8:1::2), and a mesh of six services: NAT 198.19.0.1:80/tcp, DNAT 198.19.0.2:53/udp,
/// DSR IP-in-IP 198.19.0.3:80/tcp, DSR GUE 198.19.0.4:80/tcp (port 6080), NAT to a cluster that
/// resets its flows 198.19.0.5:80/tcp, and NAT [2001:db8:19::1]:80/tcp. Eight flows, evicting
/// handshakes when full; SNAT ports 20000-20063; timeouts of 20 to 400 ms.
pub fn mesh_pipeline() -> Pipeline<PoolBuf> {
    let fib = fib();
    let v4 = |d: u8| IpAddr::from([198, 18, 2, d]);
    let v6 = |d: u16| IpAddr::from([0x2001, 0xdb8, 2, 0, 0, 0, 0, d]);
    let statics: Vec<(IpAddr, u8, [u8; 6])> = vec![
        (v4(2), 1, [2, 0, 0, 0, 0, 0x22]),
        (v4(3), 1, [2, 0, 0, 0, 0, 0x23]),
        (v6(2), 1, [2, 0, 0, 0, 0, 0x22]),
        (IpAddr::from([198, 18, 1, 2]), 0, [2, 0, 0, 0, 0, 0x10]),
        (IpAddr::from([0x2001, 0xdb8, 1, 0, 0, 0, 0, 2]), 0, [2, 0, 0, 0, 0, 0x10]),
    ];
    let vip = |d: u8| IpAddr::from([198, 19, 0, d]);
    let services = vec![
        service("nat", vip(1), 80, proto::TCP, Mode::Nat, "web"),
        service("dnat", vip(2), 53, proto::UDP, Mode::Dnat, "web"),
        service("ipip", vip(3), 80, proto::TCP, Mode::Dsr(Encap::IpIp), "web"),
        service("gue", vip(4), 80, proto::TCP, Mode::Dsr(Encap::Gue { port: 6080 }), "web"),
        service("reset", vip(5), 80, proto::TCP, Mode::Nat, "gone"),
        service(
            "v6",
            IpAddr::from([0x2001, 0xdb8, 0x19, 0, 0, 0, 0, 1]),
            80,
            proto::TCP,
            Mode::Nat,
            "web6",
        ),
    ];
    let clusters = vec![
        cluster("web", Policy::Maglev, &[v4(2), v4(3)], OnEndpointGone::Drain),
        cluster("gone", Policy::RoundRobin, &[v4(2)], OnEndpointGone::Reset),
        cluster("web6", Policy::LeastRequest, &[v6(2)], OnEndpointGone::Drain),
    ];
    let cap = MeshCapacity { services: 16, clusters: 16, endpoints: 64 };
    let snap = MeshSnapshot::build(&services, &clusters, cap, None, |_| true).expect("mesh");
    let settings = MeshSettings {
        flow_capacity: 8,
        timeouts: FlowTimeouts {
            syn_ns: 50_000_000,
            established_ns: 400_000_000,
            closing_ns: 20_000_000,
            datagram_ns: 100_000_000,
        },
        when_full: WhenFull::EvictEmbryonic,
        snat_ports: (20000, 20063),
        endpoints: 64,
        clusters: 16,
        reset_unknown: true,
        seek_unknown: false,
    };
    // Worker 0 of two: replies of the other worker's flows are handed off (and, with no ring
    // here, dropped and counted).
    let engine = MeshEngine::new(0, 2, &settings, SharedMesh::new(snap, 64, 64, 2));
    Pipeline::new(0, fib, NeighborBus::new(1, 4), PipelineConfig::default(), &statics)
        .with_mesh(engine)
}

/// The FIB of [`mesh_pipeline`]: [`router_ports`], port 1 with an MTU of 1400. Built once per
/// thread: it never changes, and its IPv4 table (2^24 entries) would cost more to build and
/// free than a whole run.
fn fib() -> Arc<Fib> {
    thread_local! {
        static FIB: Arc<Fib> = Arc::new(Fib::build(router_ports(1400), &[]).expect("fib"));
    }
    FIB.with(Arc::clone)
}

/// The buffers of this thread's runs: one pool per thread, made once (a pool lives for the
/// rest of the process, so one per run would leak a mapping each time).
fn pool() -> &'static Mempool {
    thread_local! {
        static POOL: &'static Mempool =
            Mempool::new(MempoolConfig { buffers: 512, data_room: 2048, headroom: 64 })
                .expect("mempool");
    }
    POOL.with(|p| *p)
}

/// An [`Egress`] that records what is sent and frees the buffers at once.
struct Recorder {
    pool: &'static Mempool,
    sent: Vec<(u8, Vec<u8>)>,
}

impl Egress<PoolBuf> for Recorder {
    fn send(&mut self, port: u8, pkt: PoolBuf) {
        self.sent.push((port, pkt.data().to_vec()));
    }
    fn alloc(&mut self) -> Option<PoolBuf> {
        self.pool.alloc()
    }
}

/// What a run did, for tests that check that seeds reach the mesh.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Frames processed.
    pub frames: usize,
    /// Frames weir sent.
    pub sent: usize,
    /// The pipeline's counters at the end.
    pub pipeline: PipelineCounters,
    /// The mesh's counters at the end.
    pub mesh: MeshCounters,
}

/// Runs `data` (see the module docs) through [`mesh_pipeline`] and checks, panicking when
/// one is broken:
///
/// * every frame gets one verdict, counted once ([`counted_once`]); a forwarded frame leaves
///   by port 0 or 1 and something is sent there; nothing is handed off (there is no ring);
/// * every frame weir sends, while processing a frame or in housekeeping, parses with
///   [`parse_frame`];
/// * an IP packet weir sends fits the MTU of its port, unless it is no longer than the frame
///   being answered (an echo turned around on the link it came by);
/// * when the frame processed parses and its L4 checksum verifies (or it has none: ARP,
///   fragments, other protocols), every TCP, UDP, ICMP or ICMPv6 packet weir sends for it
///   has a valid checksum: translations keep checksums valid, replies and errors are built
///   valid (weir does not verify checksums in transit, so nothing is claimed for a frame
///   that arrived with a bad one);
/// * the frames waiting for a neighbor stay within the pipeline's queue;
/// * no buffer leaks: once the pipeline (with its waiting frames) is dropped, every buffer
///   is back in the pool.
pub fn check_frames(data: &[u8]) {
    let _ = run_frames(data);
}

/// [`check_frames`], returning what the run did.
pub fn run_frames(data: &[u8]) -> Outcome {
    let pool = pool();
    Mempool::flush_thread_cache();
    let start = pool.available();
    let outcome = run(pool, data);
    Mempool::flush_thread_cache();
    assert_eq!(pool.available(), start, "buffers leaked");
    outcome
}

fn run(pool: &'static Mempool, data: &[u8]) -> Outcome {
    let mut p = mesh_pipeline();
    let pending_capacity = PipelineConfig::default().pending_capacity;
    let mut out = Recorder { pool, sent: Vec::new() };
    let mut history: VecDeque<Vec<u8>> = VecDeque::with_capacity(HISTORY);
    let mut previous: Vec<u8> = Vec::new();
    let mut now = 1_000u64;
    let mut outcome =
        Outcome { frames: 0, sent: 0, pipeline: p.counters.clone(), mesh: MeshCounters::default() };
    for rec in records(data) {
        now += advance_ns(rec.tick);
        let derived = match rec.source {
            Source::Literal => None,
            Source::ReplyTo(i) => history.get(usize::from(i)).and_then(|s| reply_to(s)),
            Source::IcmpErrorAbout(i) => {
                history.get(usize::from(i)).and_then(|s| icmp_error_about(s))
            }
            Source::Again => Some(previous.clone()),
        };
        let frame = match derived {
            Some(base) => edited(base, rec.bytes),
            None => rec.bytes.to_vec(),
        };
        let input = parse_frame(&frame).ok();
        let valid_input = input.as_ref().is_some_and(|parsed| {
            !checksummed(parsed) || stack::l4::verify_l4_checksum(&frame, parsed)
        });
        let input_l3_len = input.as_ref().map_or(0, |parsed| usize::from(parsed.l3_len));

        let mut buf = pool.alloc().expect("a free buffer: the pool is larger than can be held");
        buf.fill(&frame).expect("a frame of at most MAX_FRAME bytes fits a buffer");
        let before = Tally::of(&p);
        let verdict = p.process(buf, rec.port, now, &mut out);
        if let Err(e) = counted_once(&before, &Tally::of(&p), verdict) {
            panic!("frame {} ({:02x?}) on port {}: {e}", outcome.frames, frame, rec.port);
        }
        assert!(!matches!(verdict, Verdict::Handoff(_)), "handed off with no ring");
        if let Verdict::Forward(port) = verdict {
            assert!(port < 2, "forwarded to port {port}");
            assert!(
                out.sent.iter().any(|(p, _)| *p == port),
                "{verdict:?} but nothing sent on port {port}"
            );
        }
        for (port, sent) in out.sent.drain(..) {
            check_sent(port, &sent, Some((valid_input, input_l3_len)), &frame);
            outcome.sent += 1;
            remember(&mut history, sent);
        }
        p.maintain(now, &mut out);
        for (port, sent) in out.sent.drain(..) {
            check_sent(port, &sent, None, &frame);
            outcome.sent += 1;
            remember(&mut history, sent);
        }
        assert!(p.pending() <= pending_capacity, "{} frames waiting", p.pending());
        previous = frame;
        outcome.frames += 1;
    }
    outcome.pipeline = p.counters.clone();
    outcome.mesh = p.mesh().map(|m| m.counters).unwrap_or_default();
    outcome
}

fn remember(history: &mut VecDeque<Vec<u8>>, sent: Vec<u8>) {
    if history.len() == HISTORY {
        history.pop_back();
    }
    history.push_front(sent);
}

/// Whether the L4 checksum of `parsed` is one [`stack::l4::verify_l4_checksum`] checks.
fn checksummed(parsed: &Parsed) -> bool {
    !parsed.is_fragment()
        && matches!(
            parsed.l4.map(|l4| l4.header),
            Some(L4::Tcp { .. } | L4::Udp { .. } | L4::Icmpv4 { .. } | L4::Icmpv6 { .. })
        )
}

/// The invariants of a frame weir sent on `port`: it parses; it fits the port's MTU unless
/// it is no longer than the frame it answers; and, when it was sent for a frame whose own
/// checksum held (`cause`: whether it did, and its L3 length), its L4 checksum verifies.
fn check_sent(port: u8, sent: &[u8], cause: Option<(bool, usize)>, input: &[u8]) {
    assert!(port < 2, "sent on port {port}");
    let parsed = match parse_frame(sent) {
        Ok(p) => p,
        Err(e) => panic!(
            "weir sent a frame that does not parse ({e:?}) on port {port}: {sent:02x?}, \
             for {input:02x?}"
        ),
    };
    if matches!(parsed.l3, L3::Ipv4(_) | L3::Ipv6(_)) {
        let mtu = if port == 0 { 1500 } else { 1400 };
        let len = usize::from(parsed.l3_len);
        assert!(
            len <= mtu || cause.is_some_and(|(_, input_len)| len <= input_len),
            "weir sent a {len}-byte packet on port {port} (MTU {mtu}): {sent:02x?}, \
             for {input:02x?}"
        );
    }
    if cause.is_some_and(|(valid, _)| valid) && checksummed(&parsed) {
        assert!(
            stack::l4::verify_l4_checksum(sent, &parsed),
            "weir sent a bad L4 checksum on port {port}: {sent:02x?}, for {input:02x?}"
        );
    }
}

/// `base` with `edits` XORed over it (bytes past its end appended), cut to [`MAX_FRAME`],
/// its IPv4 header and L4 checksums then made valid.
fn edited(mut base: Vec<u8>, edits: &[u8]) -> Vec<u8> {
    for (i, e) in edits.iter().enumerate() {
        match base.get_mut(i) {
            Some(b) => *b ^= e,
            None => base.push(*e),
        }
    }
    base.truncate(MAX_FRAME);
    fix_checksums(&mut base);
    base
}

/// Makes the IPv4 header checksum of an untagged frame valid, then its L4 checksum if the
/// frame parses.
fn fix_checksums(f: &mut [u8]) {
    if f.get(12..14) == Some(&[0x08, 0x00]) && f.get(14).is_some_and(|v| v >> 4 == 4) {
        let ihl = usize::from(f[14] & 15) * 4;
        if ihl >= 20 && f.len() >= 14 + ihl {
            f[24..26].copy_from_slice(&[0, 0]);
            let c = stack::checksum::checksum(&f[14..14 + ihl]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
        }
    }
    if let Ok(parsed) = parse_frame(f) {
        let _ = stack::l4::fill_l4_checksum(f, &parsed);
    }
}

/// What the host a frame weir sent went to would answer (see [`Source::ReplyTo`]).
fn reply_to(sent: &[u8]) -> Option<Vec<u8>> {
    let parsed = parse_frame(sent).ok()?;
    let l3 = usize::from(parsed.l3_offset);
    let mut f = sent.get(..parsed.l3_end())?.to_vec();
    match parsed.l3 {
        L3::Arp(arp) => {
            let n = stack::arp::write_reply(&mut f, &parsed, MacAddr(NEIGHBOR_MAC), arp.target_ip)
                .ok()?;
            f.truncate(n);
            return Some(f);
        }
        L3::Ipv6(v6) => {
            if let Ok(ns) = stack::nd::parse_ns(sent, &parsed) {
                let mut out = vec![0u8; 128];
                let weir = MacAddr(sent.get(6..12)?.try_into().ok()?);
                let n = stack::nd::write_na(
                    &mut out,
                    MacAddr(NEIGHBOR_MAC),
                    ns.target,
                    ns.source_ll.unwrap_or(weir),
                    v6.src,
                    ns.target,
                    true,
                )
                .ok()?;
                out.truncate(n);
                return Some(out);
            }
            swap(&mut f, l3 + 8, l3 + 24, 16);
        }
        L3::Ipv4(_) => swap(&mut f, l3 + 12, l3 + 16, 4),
    }
    swap(&mut f, 0, 6, 6);
    if let Some(l4) = parsed.l4 {
        let at = usize::from(l4.l4_offset);
        match l4.header {
            L4::Tcp { flags, .. } => {
                swap(&mut f, at, at + 2, 2);
                const SYN: u8 = 0x02;
                const ACK: u8 = 0x10;
                f[at + 13] = if flags & (SYN | ACK) == SYN { SYN | ACK } else { ACK };
            }
            L4::Udp { .. } => swap(&mut f, at, at + 2, 2),
            _ => {}
        }
    }
    fix_checksums(&mut f);
    Some(f)
}

/// Swaps `f[a..a + n]` and `f[b..b + n]` (`a + n <= b`, both inside `f`).
fn swap(f: &mut [u8], a: usize, b: usize, n: usize) {
    let (head, tail) = f.split_at_mut(b);
    head[a..a + n].swap_with_slice(&mut tail[..n]);
}

/// An ICMP error from the host a frame weir sent went to, quoting it (see
/// [`Source::IcmpErrorAbout`]).
fn icmp_error_about(sent: &[u8]) -> Option<Vec<u8>> {
    let parsed = parse_frame(sent).ok()?;
    if parsed.vlan_depth != 0 {
        return None;
    }
    let l3 = usize::from(parsed.l3_offset);
    let mut f = Vec::with_capacity(sent.len() + 64);
    f.extend_from_slice(sent.get(6..12)?);
    f.extend_from_slice(sent.get(0..6)?);
    match parsed.l3 {
        L3::Arp(_) => return None,
        L3::Ipv4(v4) => {
            let ihl = usize::from(sent[l3] & 15) * 4;
            let quoted = sent.get(l3..(l3 + ihl + 8).min(parsed.l3_end()))?;
            let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x05, 0x00];
            icmp.extend_from_slice(quoted);
            let c = stack::checksum::checksum(&icmp);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            let total = u16::try_from(20 + icmp.len()).ok()?;
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip[8] = 64;
            ip[9] = 1;
            ip[12..16].copy_from_slice(&v4.dst.octets());
            ip[16..20].copy_from_slice(&v4.src.octets());
            let c = stack::checksum::checksum(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&[0x08, 0x00]);
            f.extend_from_slice(&ip);
            f.extend_from_slice(&icmp);
        }
        L3::Ipv6(v6) => {
            // The error may be at most 1280 bytes: 40 of header, 8 of ICMPv6, the quote.
            let quoted = sent.get(l3..parsed.l3_end().min(l3 + 1280 - 48))?;
            let mut icmp = vec![2, 0, 0, 0, 0, 0, 0x05, 0x00];
            icmp.extend_from_slice(quoted);
            let c = stack::checksum::l4_checksum_v6(v6.dst, v6.src, 58, &icmp);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&u16::try_from(icmp.len()).ok()?.to_be_bytes());
            f.extend_from_slice(&[58, 64]);
            f.extend_from_slice(&v6.dst.octets());
            f.extend_from_slice(&v6.src.octets());
            f.extend_from_slice(&icmp);
        }
    }
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let recs = [
            Record { port: 1, source: Source::ReplyTo(3), tick: 7, bytes: &[1, 2, 3] },
            Record { port: 0, source: Source::Literal, tick: 0, bytes: &[] },
            Record { port: 0, source: Source::IcmpErrorAbout(7), tick: 255, bytes: &[9; 70] },
            Record { port: 1, source: Source::Again, tick: 1, bytes: &[4] },
        ];
        assert_eq!(records(&encode(&recs)), recs);
        // A length beyond the input takes what is left; a short header is ignored.
        let r = records(&[200, 0, 0, 0, 1, 2, 3]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].bytes, [1, 2, 3]);
        assert!(records(&[1, 0, 0]).is_empty());
    }

    #[test]
    fn the_empty_input_and_garbage_pass() {
        check_frames(&[]);
        check_frames(&[0xff; 300]);
    }
}
