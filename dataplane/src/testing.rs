//! Test and benchmark fixtures: a two-port router over memory ports.

use crate::fib::{Fib, PortAddrs};
use crate::io::memory::{MemoryPort, MemoryQueues, NullPort};
use crate::io::PacketIo;
use crate::mempool::{Mempool, MempoolConfig, PoolCache};
use crate::neigh::NeighborBus;
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::worker::{BufSource, IdlePolicy, Worker, WorkerStats};
use std::net::IpAddr;
use std::sync::Arc;

/// MAC of port 0.
pub const PORT0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
/// MAC of port 1.
pub const PORT1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
/// MAC of the host behind port 1 (a static neighbor).
pub const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x22];
/// MAC of the host behind port 0.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x21];

/// A worker routing between two memory ports: 198.18.1.0/24 and 2001:db8:1::/64 on port 0,
/// 198.18.2.0/24 and 2001:db8:2::/64 on port 1, with 198.18.2.2 and 2001:db8:2::2 as static
/// neighbors on port 1. Returns the worker, the queues of both ports and a buffer cache.
pub fn two_port_router(
    discard_tx: bool,
) -> (Worker<MemoryPort, PoolCache>, [Arc<MemoryQueues>; 2], PoolCache) {
    let pool = Mempool::new(MempoolConfig { buffers: 4096, data_room: 2048, headroom: 128 })
        .expect("mempool");
    let pipeline = router_pipeline();
    let queues = [MemoryQueues::new(1024), MemoryQueues::new(1024)];
    let io = vec![
        MemoryPort::new(Arc::clone(&queues[0]), discard_tx),
        MemoryPort::new(Arc::clone(&queues[1]), discard_tx),
    ];
    let stats = Arc::new(WorkerStats::new(2));
    let worker = Worker::new(0, io, PoolCache::new(pool), pipeline, IdlePolicy::BusyPoll, stats);
    (worker, queues, PoolCache::new(pool))
}

/// The same router over two [`NullPort`]s: port 0 receives copies of `frames` on every poll,
/// port 1 receives nothing; what is sent is freed. For benchmarks.
pub fn null_router(frames: Vec<Vec<u8>>) -> Worker<NullPort, PoolCache> {
    null_router_with(frames, |p| p)
}

/// [`null_router`] with its pipeline changed by `customize` (a mesh attached, say).
pub fn null_router_with(
    frames: Vec<Vec<u8>>,
    customize: impl FnOnce(Pipeline<crate::mempool::PoolBuf>) -> Pipeline<crate::mempool::PoolBuf>,
) -> Worker<NullPort, PoolCache> {
    let pool = Mempool::new(MempoolConfig { buffers: 4096, data_room: 2048, headroom: 128 })
        .expect("mempool");
    let io = vec![NullPort::new(pool, frames), NullPort::new(pool, Vec::new())];
    let stats = Arc::new(WorkerStats::new(2));
    let pipeline = customize(router_pipeline());
    Worker::new(0, io, PoolCache::new(pool), pipeline, IdlePolicy::BusyPoll, stats)
}

/// The same router over any two ports and buffer source (DPDK queues, say).
pub fn router_over<P: PacketIo, S: BufSource<P::Buf>>(io: Vec<P>, source: S) -> Worker<P, S> {
    router_over_with(io, source, |p| p)
}

/// [`router_over`] with its pipeline changed by `customize` (a mesh attached, say).
pub fn router_over_with<P: PacketIo, S: BufSource<P::Buf>>(
    io: Vec<P>,
    source: S,
    customize: impl FnOnce(Pipeline<P::Buf>) -> Pipeline<P::Buf>,
) -> Worker<P, S> {
    let stats = Arc::new(WorkerStats::new(io.len()));
    Worker::new(0, io, source, customize(router_pipeline()), IdlePolicy::BusyPoll, stats)
}

/// The router's two ports: port 0 (198.18.1.1/24, 2001:db8:1::1/64) toward the clients and
/// port 1 (198.18.2.1/24, 2001:db8:2::1/64, MTU `port1_mtu`) toward the servers.
pub fn router_ports(port1_mtu: u16) -> Vec<PortAddrs> {
    vec![
        PortAddrs {
            mac: PORT0_MAC,
            ipv4: vec!["198.18.1.1/24".parse().expect("net")],
            ipv6: vec!["2001:db8:1::1/64".parse().expect("net")],
            mtu: 1500,
            mac_shared: false,
        },
        PortAddrs {
            mac: PORT1_MAC,
            ipv4: vec!["198.18.2.1/24".parse().expect("net")],
            ipv6: vec!["2001:db8:2::1/64".parse().expect("net")],
            mtu: port1_mtu,
            mac_shared: false,
        },
    ]
}

fn router_pipeline<B: crate::buf::PacketBuf>() -> Pipeline<B> {
    let fib = Arc::new(Fib::build(router_ports(1500), &[]).expect("fib"));
    let statics: Vec<(IpAddr, u8, [u8; 6])> = vec![
        ("198.18.2.2".parse().expect("ip"), 1, SERVER_MAC),
        ("2001:db8:2::2".parse().expect("ip"), 1, SERVER_MAC),
        ("198.18.1.2".parse().expect("ip"), 0, CLIENT_MAC),
    ];
    let bus = NeighborBus::new(1, 16);
    Pipeline::new(0, fib, bus, PipelineConfig::default(), &statics)
}

/// A 64-byte IPv4/UDP frame from the client (198.18.1.2) to the server (198.18.2.2) addressed
/// to port 0's MAC, with `sport` as UDP source port. Checksums are valid.
pub fn udp4_frame(sport: u16) -> [u8; 60] {
    udp4_frame_between(PORT0_MAC, CLIENT_MAC, [198, 18, 1, 2], [198, 18, 2, 2], sport)
}

/// The reverse: from the server (198.18.2.2) to the client (198.18.1.2), addressed to port 1's
/// MAC.
pub fn udp4_frame_to_client(sport: u16) -> [u8; 60] {
    udp4_frame_between(PORT1_MAC, SERVER_MAC, [198, 18, 2, 2], [198, 18, 1, 2], sport)
}

/// An IPv4 TCP (with these flags) or UDP (`tcp_flags` `None`, a 4-byte payload) frame with
/// valid checksums, from the client's MAC to port 0's.
pub fn l4_frame_v4(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, tcp_flags: Option<u8>) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sp.to_be_bytes());
    l4.extend_from_slice(&dp.to_be_bytes());
    let proto = match tcp_flags {
        Some(f) => {
            l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, f, 0xff, 0xff, 0, 0, 0, 0]);
            6
        }
        None => {
            l4.extend_from_slice(&[0, 12, 0, 0, b'p', b'i', b'n', b'g']);
            17
        }
    };
    let c = stack::checksum::l4_checksum_v4(
        std::net::Ipv4Addr::from(src),
        std::net::Ipv4Addr::from(dst),
        proto,
        &l4,
    );
    let at = if proto == 6 { 16 } else { 6 };
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    ipv4_frame(src, dst, proto, &l4)
}

/// An IPv4 packet of protocol `proto` carrying `payload` (its header checksum valid), from
/// the client's MAC to port 0's.
pub fn ipv4_frame(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    let total = u16::try_from(20 + payload.len()).unwrap_or(u16::MAX);
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = stack::checksum::checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = PORT0_MAC.to_vec();
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(payload);
    f
}

/// A 64-byte IPv4/UDP frame (60 bytes without the FCS) with valid checksums.
pub fn udp4_frame_between(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&46u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = stack::checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let udp = &mut f[34..60];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&9u16.to_be_bytes());
    udp[4..6].copy_from_slice(&26u16.to_be_bytes());
    f
}

/// What the pipeline's counters and its queue of waiting frames say of one frame, before and
/// after it was processed (and before any housekeeping).
#[derive(Clone, Debug)]
pub struct Tally {
    /// The counters.
    pub counters: crate::pipeline::PipelineCounters,
    /// Frames waiting for a neighbor.
    pub pending: usize,
}

impl Tally {
    /// The pipeline's state now.
    pub fn of<B: crate::buf::PacketBuf>(p: &Pipeline<B>) -> Tally {
        Tally { counters: p.counters.clone(), pending: p.pending() }
    }
}

/// Checks that the frame processed between `before` and `after` was counted once, under the
/// name of its verdict: a drop under its reason alone (a failed allocation for a reply weir
/// tried to build may come on top); a forwarded frame as forwarded or as a reply turned
/// around; a frame weir consumed as consumed; a held frame in the queue. Nothing else may
/// move those counters.
pub fn counted_once(
    before: &Tally,
    after: &Tally,
    verdict: crate::pipeline::Verdict,
) -> Result<(), String> {
    use crate::pipeline::{DropReason, Verdict};
    let (b, a) = (&before.counters, &after.counters);
    let pool = DropReason::PoolExhausted as usize;
    let drops: Vec<(DropReason, u64)> = DropReason::ALL
        .iter()
        .filter(|r| **r as usize != pool)
        .map(|r| (*r, a.drops[*r as usize] - b.drops[*r as usize]))
        .filter(|(_, d)| *d != 0)
        .collect();
    let forwarded = a.forwarded - b.forwarded;
    let replies = a.replies - b.replies;
    let consumed = a.consumed - b.consumed;
    // Held frames only ever join the queue while a frame is processed.
    let held = after.pending.checked_sub(before.pending).unwrap_or(usize::MAX);
    let ok = match verdict {
        Verdict::Drop(r) => drops == [(r, 1)] && forwarded == 0 && consumed == 0 && held == 0,
        Verdict::Forward(_) => drops.is_empty() && forwarded + replies == 1 && consumed == 0,
        Verdict::Consumed => drops.is_empty() && forwarded == 0 && consumed == 1 && held == 0,
        Verdict::Held => drops.is_empty() && forwarded == 0 && consumed == 0 && held == 1,
        Verdict::Handoff(_) => {
            drops.is_empty() && a.handed_off - b.handed_off == 1 && forwarded == 0
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{verdict:?} counted as: drops {drops:?}, forwarded {forwarded}, replies {replies}, \
             consumed {consumed}, held {held}"
        ))
    }
}

/// An Ethernet/IPv4 ARP packet: operation `op` (1 request, 2 reply), sender (`smac`, `sip`),
/// target (`tmac`, `tip`), in a broadcast frame from `smac`, padded to 60 bytes.
pub fn arp_frame(op: u16, smac: [u8; 6], sip: [u8; 4], tmac: [u8; 6], tip: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&smac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&smac);
    f.extend_from_slice(&sip);
    f.extend_from_slice(&tmac);
    f.extend_from_slice(&tip);
    f.resize(60, 0);
    f
}

/// An ICMP echo request from `src` to `dst` (client's MAC to port 0's), its checksum valid
/// unless `bad_checksum`.
pub fn echo4_frame(src: [u8; 4], dst: [u8; 4], bad_checksum: bool) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1, b'h', b'o', b's', b't'];
    let c = stack::checksum::checksum(&icmp) ^ u16::from(bad_checksum);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4_frame(src, dst, 1, &icmp)
}

/// An IPv6 packet from `src` to `dst` carrying ICMPv6 message `icmp` (its checksum filled
/// in), hop limit `hops`, from the client's MAC to port 0's.
pub fn icmp6_frame(
    src: std::net::Ipv6Addr,
    dst: std::net::Ipv6Addr,
    hops: u8,
    mut icmp: Vec<u8>,
) -> Vec<u8> {
    if icmp.len() >= 4 {
        icmp[2..4].copy_from_slice(&[0, 0]);
        let c = stack::checksum::l4_checksum_v6(src, dst, 58, &icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
    }
    let mut f = PORT0_MAC.to_vec();
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&u16::try_from(icmp.len()).unwrap_or(u16::MAX).to_be_bytes());
    f.extend_from_slice(&[58, hops]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&icmp);
    f
}
