//! Every frame gets exactly one verdict with the mesh in the path too, whatever it contains:
//! flows are opened to NAT, DNAT and DSR services (IPv4 and IPv6), and then the endpoints'
//! replies and ICMP errors about those flows, the clients' next packets and the fixtures go
//! through the pipeline mutated and cut short, without a panic, each counted once.

use dataplane::mempool::{Mempool, MempoolConfig, PoolBuf};
use dataplane::pipeline::{Egress, Pipeline, Verdict};
use dataplane::testing::{
    counted_once, ipv4_frame, l4_frame_v4, Tally, CLIENT_MAC, PORT0_MAC, PORT1_MAC,
};
use proptest::prelude::*;
use stack::checksum::{checksum, l4_checksum_v6};
use std::net::{IpAddr, Ipv6Addr};

const CLIENT: [u8; 4] = [198, 18, 1, 2];
const ENDPOINT: [u8; 4] = [198, 18, 2, 2];

/// Records what is sent, so the test can answer it.
struct Sink {
    pool: &'static Mempool,
    sent: Vec<Vec<u8>>,
}

impl Egress<PoolBuf> for Sink {
    fn send(&mut self, _port: u8, pkt: PoolBuf) {
        use dataplane::buf::PacketBuf;
        if self.sent.len() < 64 {
            self.sent.push(pkt.data().to_vec());
        }
    }
    fn alloc(&mut self) -> Option<PoolBuf> {
        self.pool.alloc()
    }
}

/// The mesh pipeline the fuzz target drives too: NAT, DNAT, DSR (IP-in-IP, GUE), a resetting
/// cluster and an IPv6 service, as worker 0 of two, eight flows, short timeouts.
fn pipeline() -> Pipeline<PoolBuf> {
    dataplane::fuzzing::mesh_pipeline()
}

/// An IPv6 TCP SYN with a valid checksum, to weir's port 0.
fn syn6(src: Ipv6Addr, sp: u16, dst: Ipv6Addr, dp: u16) -> Vec<u8> {
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&sp.to_be_bytes());
    tcp.extend_from_slice(&dp.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    let c = l4_checksum_v6(src, dst, 6, &tcp);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    let mut f = PORT0_MAC.to_vec();
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[0x86, 0xdd]);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&u16::try_from(tcp.len()).unwrap().to_be_bytes());
    f.extend_from_slice(&[6, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&tcp);
    f
}

/// The answer to a frame weir sent: addresses and ports swapped (which keeps both checksums
/// valid), from the host it went to, to weir's port 1.
fn reply_to(sent: &[u8]) -> Option<Vec<u8>> {
    let mut f = sent.to_vec();
    if f.len() < 38 || f[12..14] != [0x08, 0x00] {
        return None;
    }
    f.copy_within(0..6, 6);
    f[0..6].copy_from_slice(&PORT1_MAC);
    let (src, dst) = (f[26..30].to_vec(), f[30..34].to_vec());
    f[26..30].copy_from_slice(&dst);
    f[30..34].copy_from_slice(&src);
    let ihl = usize::from(f[14] & 15) * 4;
    let l4 = 14 + ihl;
    if f.len() >= l4 + 4 {
        let (sp, dp) = (f[l4..l4 + 2].to_vec(), f[l4 + 2..l4 + 4].to_vec());
        f[l4..l4 + 2].copy_from_slice(&dp);
        f[l4 + 2..l4 + 4].copy_from_slice(&sp);
    }
    Some(f)
}

/// An ICMP error from the endpoint about a packet weir sent it: fragmentation needed (type 3
/// code 4, MTU 1280), quoting its IP header and 8 bytes, to weir's port 1.
fn icmp_error_about(sent: &[u8], code: u8) -> Option<Vec<u8>> {
    let ip = sent.get(14..)?;
    if sent.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let quoted = ip.get(..28)?;
    let mut icmp = vec![3, code, 0, 0, 0, 0, 0x05, 0x00];
    icmp.extend_from_slice(quoted);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = ipv4_frame(ENDPOINT, ip[12..16].try_into().ok()?, 1, &icmp);
    f[0..6].copy_from_slice(&PORT1_MAC);
    Some(f)
}

/// The flows' first packets (clients to VIPs), one IPv6.
fn openers() -> Vec<Vec<u8>> {
    const SYN: u8 = 0x02;
    let mut v = vec![
        l4_frame_v4(CLIENT, 40000, [198, 19, 0, 1], 80, Some(SYN)),
        l4_frame_v4(CLIENT, 40001, [198, 19, 0, 1], 80, Some(SYN)),
        l4_frame_v4(CLIENT, 5000, [198, 19, 0, 2], 53, None),
        l4_frame_v4(CLIENT, 40002, [198, 19, 0, 3], 80, Some(SYN)),
        l4_frame_v4(CLIENT, 40003, [198, 19, 0, 4], 80, Some(SYN)),
        l4_frame_v4(CLIENT, 40004, [198, 19, 0, 5], 80, Some(SYN)),
    ];
    v.push(syn6("2001:db8:1::2".parse().unwrap(), 40005, "2001:db8:19::1".parse().unwrap(), 80));
    v
}

/// The seeds: the openers, then what the endpoints would send back to the packets weir sent
/// for them (replies, and ICMP errors quoting them), and the fixtures; with the port each
/// arrives on.
fn seeds(sent: &[Vec<u8>]) -> Vec<(Vec<u8>, u8)> {
    let mut seeds: Vec<(Vec<u8>, u8)> = openers().into_iter().map(|f| (f, 0)).collect();
    for s in sent {
        seeds.extend(reply_to(s).map(|r| (r, 1)));
        seeds.extend(icmp_error_about(s, 4).map(|e| (e, 1)));
        seeds.extend(icmp_error_about(s, 3).map(|e| (e, 1)));
    }
    for (_, f) in stack::fixtures::ALL {
        let mut f = f.to_vec();
        f[0..6].copy_from_slice(&PORT0_MAC);
        seeds.push((f, 0));
    }
    seeds
}

/// The seeds are what they claim: unchanged, the openers open flows, and the replies and ICMP
/// errors are translated back.
#[test]
fn the_seeds_reach_the_mesh() {
    let pool = Mempool::new(MempoolConfig { buffers: 512, data_room: 2048, headroom: 64 }).unwrap();
    let mut p = pipeline();
    let mut out = Sink { pool, sent: Vec::new() };
    let mut now = 1_000;
    for f in openers() {
        let mut b = pool.alloc().unwrap();
        b.fill(&f).unwrap();
        now += 1000;
        assert!(matches!(p.process(b, 0, now, &mut out), Verdict::Forward(1)), "opener forwarded");
    }
    let sent = std::mem::take(&mut out.sent);
    for (f, port) in seeds(&sent).into_iter().filter(|(_, port)| *port == 1) {
        let mut b = pool.alloc().unwrap();
        b.fill(&f).unwrap();
        now += 1000;
        p.process(b, port, now, &mut out);
    }
    let m = p.mesh().unwrap().counters;
    assert_eq!(m.flows_opened, 7, "{m:?}");
    assert!(m.reverse >= 2, "replies of NAT and DNAT flows translated: {m:?}");
    assert!(m.icmp_translated >= 2, "ICMP errors about NAT and DNAT flows translated: {m:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]
    #[test]
    fn every_frame_gets_one_verdict_with_the_mesh(
        frames in proptest::collection::vec(
            (0usize..64, proptest::collection::vec((0usize..96, any::<u8>()), 0..5), 0usize..40, any::<bool>()),
            1..40,
        ),
    ) {
        let pool = Mempool::new(MempoolConfig { buffers: 512, data_room: 2048, headroom: 64 }).unwrap();
        let mut p = pipeline();
        let mut out = Sink { pool, sent: Vec::new() };
        let mut now = 1_000u64;
        // Open the flows; the translated packets tell what the endpoints would answer.
        for f in openers() {
            let mut b = pool.alloc().unwrap();
            b.fill(&f).unwrap();
            now += 1000;
            let before = Tally::of(&p);
            let v = p.process(b, 0, now, &mut out);
            prop_assert_eq!(v, Verdict::Forward(1), "an opener is forwarded");
            if let Err(e) = counted_once(&before, &Tally::of(&p), v) {
                prop_assert!(false, "opener {:02x?}: {}", f, e);
            }
        }
        let seeds = seeds(&out.sent);
        for (seed, edits, cut, other_port) in &frames {
            let (f, port) = &seeds[*seed % seeds.len()];
            let mut f = f.clone();
            for &(at, v) in edits {
                if at < f.len() {
                    f[at] = v;
                }
            }
            f.truncate(f.len().saturating_sub(*cut));
            let mut b = pool.alloc().unwrap();
            b.fill(&f).unwrap();
            now += 1000;
            let before = Tally::of(&p);
            let v = p.process(b, if *other_port { 1 - port } else { *port }, now, &mut out);
            if let Verdict::Forward(port) = v {
                prop_assert!(port < 2);
            }
            // No ring here: a handoff comes back and is dropped.
            prop_assert!(!matches!(v, Verdict::Handoff(_)));
            if let Err(e) = counted_once(&before, &Tally::of(&p), v) {
                prop_assert!(false, "frame {:02x?}: {}", f, e);
            }
            // 10 ms a frame: flows expire and the sweep runs as the case goes on.
            now += 10_000_000;
            p.maintain(now, &mut out);
        }
    }
}

/// (src, sport, dst, dport) of an IPv4 TCP/UDP frame weir sent, its checksums checked.
fn tuple(f: &[u8]) -> (IpAddr, u16, IpAddr, u16) {
    let p = stack::parse_frame(f).expect("weir sends what parses");
    assert!(stack::l4::verify_l4_checksum(f, &p), "L4 checksum");
    let stack::L3::Ipv4(ip) = p.l3 else { panic!("IPv4") };
    let (sp, dp) = match p.l4.unwrap().header {
        stack::L4::Tcp { src_port, dst_port, .. } | stack::L4::Udp { src_port, dst_port, .. } => {
            (src_port, dst_port)
        }
        _ => panic!("TCP or UDP"),
    };
    (IpAddr::V4(ip.src), sp, IpAddr::V4(ip.dst), dp)
}

/// A flow's first packet takes the general path, which opens the flow; its later packets, and
/// its replies, take the IPv4 fast path. Both must leave alike, checksums valid, a UDP
/// checksum of zero left zero.
#[test]
fn later_packets_of_a_flow_leave_as_the_first_did() {
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    let pool = Mempool::new(MempoolConfig { buffers: 64, data_room: 2048, headroom: 64 }).unwrap();
    let mut p = pipeline();
    let mut out = Sink { pool, sent: Vec::new() };
    let mut now = 1_000;
    let mut send = |p: &mut Pipeline<PoolBuf>, out: &mut Sink, f: &[u8], port: u8| -> Vec<u8> {
        let mut b = pool.alloc().unwrap();
        b.fill(f).unwrap();
        now += 1000;
        assert!(matches!(p.process(b, port, now, out), Verdict::Forward(_)), "forwarded");
        out.sent.pop().expect("sent")
    };
    let vip = IpAddr::from([198, 19, 0, 1]);
    let client = IpAddr::from(CLIENT);
    // NAT over TCP, both ways.
    let first =
        send(&mut p, &mut out, &l4_frame_v4(CLIENT, 40000, [198, 19, 0, 1], 80, Some(SYN)), 0);
    let later =
        send(&mut p, &mut out, &l4_frame_v4(CLIENT, 40000, [198, 19, 0, 1], 80, Some(ACK)), 0);
    assert_eq!(tuple(&later), tuple(&first));
    assert_ne!(tuple(&first).0, client, "NAT: the source is weir's");
    let back = send(&mut p, &mut out, &reply_to(&first).unwrap(), 1);
    assert_eq!(tuple(&back), (vip, 80, client, 40000));
    let back_again = send(&mut p, &mut out, &reply_to(&later).unwrap(), 1);
    assert_eq!(tuple(&back_again), (vip, 80, client, 40000));
    // DNAT over UDP, with a checksum and without one.
    let vip2 = IpAddr::from([198, 19, 0, 2]);
    for (port, zero) in [(5001u16, false), (5002, true)] {
        let mut dgram = l4_frame_v4(CLIENT, port, [198, 19, 0, 2], 53, None);
        if zero {
            dgram[40..42].copy_from_slice(&[0, 0]);
        }
        let first = send(&mut p, &mut out, &dgram, 0);
        let later = send(&mut p, &mut out, &dgram, 0);
        assert_eq!(tuple(&later), tuple(&first));
        assert_eq!((tuple(&first).0, tuple(&first).1), (client, port), "DNAT keeps the source");
        assert_eq!(later[40..42] == [0, 0], zero, "a zero UDP checksum stays zero, only it");
        let back = send(&mut p, &mut out, &reply_to(&later).unwrap(), 1);
        assert_eq!(tuple(&back), (vip2, 53, client, port));
        assert_eq!(back[40..42] == [0, 0], zero);
    }
    let m = p.mesh().unwrap().counters;
    assert_eq!((m.flows_opened, m.forward, m.reverse), (3, 6, 4), "{m:?}");
}
