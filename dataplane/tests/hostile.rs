//! What a hostile host on a link can send weir, one class at a time: spoofed neighbors,
//! martian addresses, reflection bait, broken options. Each case says what weir must do with
//! the frame (a drop under its reason, an answer, or forwarding) and that it goes on routing
//! the legitimate traffic afterwards.

use dataplane::buf::PacketBuf;
use dataplane::fib::Fib;
use dataplane::mempool::{Mempool, MempoolConfig, PoolBuf};
use dataplane::neigh::NeighborBus;
use dataplane::pipeline::{DropReason, Egress, Pipeline, PipelineConfig, Verdict};
use dataplane::testing::{
    arp_frame as arp, echo4_frame as ping4, icmp6_frame as icmp6, l4_frame_v4, router_ports,
    udp4_frame, CLIENT_MAC, PORT0_MAC, PORT1_MAC, SERVER_MAC,
};
use stack::checksum::checksum;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

const CLIENT: [u8; 4] = [198, 18, 1, 2];
const SERVER: [u8; 4] = [198, 18, 2, 2];
const WEIR0: [u8; 4] = [198, 18, 1, 1];
const WEIR1: [u8; 4] = [198, 18, 2, 1];
const ATTACKER_MAC: [u8; 6] = [0x02, 0xba, 0xd0, 0, 0, 0x66];
const SECOND: u64 = 1_000_000_000;

/// Keeps what weir sends, by port.
struct Sink {
    pool: &'static Mempool,
    sent: Vec<(u8, Vec<u8>)>,
}

impl Egress<PoolBuf> for Sink {
    fn send(&mut self, port: u8, pkt: PoolBuf) {
        self.sent.push((port, pkt.data().to_vec()));
    }
    fn alloc(&mut self) -> Option<PoolBuf> {
        self.pool.alloc()
    }
}

struct Rig {
    p: Pipeline<PoolBuf>,
    out: Sink,
    now: u64,
}

impl Rig {
    /// The two-port test router: the server (198.18.2.2, 2001:db8:2::2) is a static neighbor
    /// on port 1; the client (198.18.1.2) is learned.
    fn new() -> Rig {
        let pool =
            Mempool::new(MempoolConfig { buffers: 256, data_room: 2048, headroom: 64 }).unwrap();
        let fib = Arc::new(Fib::build(router_ports(1500), &[]).unwrap());
        let statics: Vec<(IpAddr, u8, [u8; 6])> = vec![
            ("198.18.2.2".parse().unwrap(), 1, SERVER_MAC),
            ("2001:db8:2::2".parse().unwrap(), 1, SERVER_MAC),
        ];
        let p = Pipeline::new(0, fib, NeighborBus::new(1, 4), PipelineConfig::default(), &statics);
        Rig { p, out: Sink { pool, sent: Vec::new() }, now: SECOND }
    }

    fn send(&mut self, frame: &[u8], port: u8) -> Verdict {
        let mut b = self.out.pool.alloc().unwrap();
        b.fill(frame).unwrap();
        self.now += 1000;
        let v = self.p.process(b, port, self.now, &mut self.out);
        self.p.maintain(self.now, &mut self.out);
        v
    }

    fn drops(&self, r: DropReason) -> u64 {
        self.p.counters.drops[r as usize]
    }

    /// Sends a legitimate datagram client → server and returns the MAC it left with.
    fn forwarded_to(&mut self) -> Option<[u8; 6]> {
        self.out.sent.clear();
        match self.send(&udp4_frame(7), 0) {
            Verdict::Forward(1) => {}
            v => panic!("legitimate traffic not forwarded: {v:?}"),
        }
        let (_, f) = self.out.sent.pop()?;
        f[0..6].try_into().ok()
    }

    /// Makes weir learn the client on port 0, by resolving it (an answer to weir's request).
    fn learn_client(&mut self, mac: [u8; 6]) {
        let to_client = udp4_frame_between_ports(SERVER, CLIENT);
        assert_eq!(self.send(&to_client, 1), Verdict::Held, "waits for ARP");
        assert!(
            self.out.sent.iter().any(|(port, f)| *port == 0 && f[12..14] == [0x08, 0x06]),
            "an ARP request went out"
        );
        let v = self.send(&arp(2, mac, CLIENT, PORT0_MAC, WEIR0), 0);
        assert_eq!(v, Verdict::Consumed);
        self.out.sent.clear();
    }
}

/// A UDP datagram from `src` (behind port 1) to `dst`, to port 1's MAC.
fn udp4_frame_between_ports(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut f = l4_frame_v4(src, 9, dst, 9, None);
    f[0..6].copy_from_slice(&PORT1_MAC);
    f[6..12].copy_from_slice(&SERVER_MAC);
    f
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// An unsolicited neighbor advertisement that `target` is at `mac`.
fn na(src: Ipv6Addr, target: Ipv6Addr, mac: [u8; 6], solicited: bool) -> Vec<u8> {
    let flags = 0x20 | if solicited { 0x40 } else { 0 };
    let mut icmp = vec![136, 0, 0, 0, flags, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&[2, 1]);
    icmp.extend_from_slice(&mac);
    let dst = if solicited { v6("2001:db8:1::1") } else { v6("ff02::1") };
    let mut f = icmp6(src, dst, 255, icmp);
    if !solicited {
        f[0..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    }
    f[6..12].copy_from_slice(&mac);
    f
}

#[test]
fn a_claim_for_another_ports_address_is_ignored_and_traffic_keeps_its_way() {
    let mut r = Rig::new();
    assert_eq!(r.forwarded_to(), Some(SERVER_MAC));
    // On the client's link: "198.18.2.2 is at me", as a reply to weir and as a gratuitous ARP.
    let reply = arp(2, ATTACKER_MAC, SERVER, PORT0_MAC, WEIR0);
    assert_eq!(r.send(&reply, 0), Verdict::Drop(DropReason::NeighborOffLink));
    let grat = arp(1, ATTACKER_MAC, SERVER, [0; 6], WEIR0);
    // A request to weir is still answered; only its claim is not believed.
    assert_eq!(r.send(&grat, 0), Verdict::Forward(0));
    assert_eq!(r.forwarded_to(), Some(SERVER_MAC), "the server's traffic was not hijacked");
    // The same for a learned neighbor (the server is static): 198.18.1.2 claimed on port 1.
    r.learn_client(CLIENT_MAC);
    let reply = arp(2, ATTACKER_MAC, CLIENT, PORT1_MAC, WEIR1);
    assert_eq!(r.send(&reply, 1), Verdict::Drop(DropReason::NeighborOffLink));
    assert_eq!(r.p.counters.neighbor_claims_ignored, 3);
    assert_eq!(r.drops(DropReason::NeighborOffLink), 2);
}

#[test]
fn claims_about_weirs_own_or_broadcast_addresses_are_ignored() {
    let mut r = Rig::new();
    for sip in [WEIR0, [198, 18, 1, 255], [198, 18, 1, 0]] {
        let reply = arp(2, ATTACKER_MAC, sip, PORT0_MAC, WEIR0);
        assert_eq!(r.send(&reply, 0), Verdict::Drop(DropReason::NeighborOffLink), "{sip:?}");
    }
}

#[test]
fn an_unsolicited_change_is_refused_probed_and_the_owner_keeps_its_entry() {
    let mut r = Rig::new();
    r.learn_client(CLIENT_MAC);
    r.now += 5 * SECOND;
    // On the client's own link, someone claims the client's address.
    let grat = arp(2, ATTACKER_MAC, CLIENT, PORT0_MAC, WEIR0);
    assert_eq!(r.send(&grat, 0), Verdict::Drop(DropReason::NeighborClaimRefused));
    // weir probes the MAC it knows, by unicast.
    let probe = r.out.sent.iter().find(|(_, f)| f[12..14] == [0x08, 0x06]).expect("a probe");
    assert_eq!(probe.0, 0);
    assert_eq!(probe.1[0..6], CLIENT_MAC, "unicast to the owner");
    assert_eq!(r.p.counters.neighbor_probes_sent, 1);
    // The owner answers: traffic to the client still goes to it, however often the claim
    // is repeated, and each repetition is counted.
    assert_eq!(r.send(&arp(2, CLIENT_MAC, CLIENT, PORT0_MAC, WEIR0), 0), Verdict::Consumed);
    for _ in 0..5 {
        assert_eq!(r.send(&grat, 0), Verdict::Drop(DropReason::NeighborClaimRefused));
    }
    r.out.sent.clear();
    assert_eq!(r.send(&udp4_frame_between_ports(SERVER, CLIENT), 1), Verdict::Forward(0));
    assert_eq!(r.out.sent.last().unwrap().1[0..6], CLIENT_MAC);
    assert_eq!(r.drops(DropReason::NeighborClaimRefused), 6);
    assert_eq!(r.p.counters.neighbor_probes_sent, 1, "probes are paced");
}

#[test]
fn an_owner_that_moved_is_found_again_through_its_probe_timing_out() {
    let mut r = Rig::new();
    r.learn_client(CLIENT_MAC);
    r.now += 5 * SECOND;
    let moved = [0x02, 0, 0, 0, 0, 0x77];
    // The new owner announces itself: refused, and the old MAC probed.
    assert_eq!(
        r.send(&arp(2, moved, CLIENT, PORT0_MAC, WEIR0), 0),
        Verdict::Drop(DropReason::NeighborClaimRefused)
    );
    // Nobody answers the probe: after it times out the entry is stale, the next packet to
    // the client goes out (to the old MAC) and weir asks by broadcast; the answer moves it.
    r.now += 2 * SECOND;
    r.out.sent.clear();
    assert_eq!(r.send(&udp4_frame_between_ports(SERVER, CLIENT), 1), Verdict::Forward(0));
    let asked = r.out.sent.iter().any(|(_, f)| f[12..14] == [0x08, 0x06] && f[0..6] == [0xff; 6]);
    assert!(asked, "a broadcast request");
    assert_eq!(r.send(&arp(2, moved, CLIENT, PORT0_MAC, WEIR0), 0), Verdict::Consumed);
    r.out.sent.clear();
    assert_eq!(r.send(&udp4_frame_between_ports(SERVER, CLIENT), 1), Verdict::Forward(0));
    assert_eq!(r.out.sent.last().unwrap().1[0..6], moved);
}

#[test]
fn static_neighbors_never_move_and_unsolicited_claims_create_nothing() {
    let mut r = Rig::new();
    // The server is static: even a claim on its own link, at a moment weir asked, is refused.
    let claim = arp(2, ATTACKER_MAC, SERVER, PORT1_MAC, WEIR1);
    assert_eq!(r.send(&claim, 1), Verdict::Drop(DropReason::NeighborClaimRefused));
    assert_eq!(r.forwarded_to(), Some(SERVER_MAC));
    // An on-link address weir never asked about is not learned from an unsolicited reply.
    let unknown = arp(2, ATTACKER_MAC, [198, 18, 1, 50], PORT0_MAC, WEIR0);
    assert_eq!(r.send(&unknown, 0), Verdict::Drop(DropReason::NeighborClaimRefused));
    assert_eq!(r.p.neighbors(), 2, "only the two static entries");
}

#[test]
fn an_unsolicited_advertisement_does_not_hijack_an_ipv6_neighbor() {
    let mut r = Rig::new();
    let server = v6("2001:db8:2::2");
    // On port 0, for the server's address on port 1.
    let f = na(v6("2001:db8:1::66"), server, ATTACKER_MAC, false);
    assert_eq!(r.send(&f, 0), Verdict::Drop(DropReason::NeighborOffLink));
    // On its own link, unsolicited, for an address weir does not know.
    let f = na(v6("2001:db8:1::66"), v6("2001:db8:1::66"), ATTACKER_MAC, false);
    assert_eq!(r.send(&f, 0), Verdict::Drop(DropReason::NeighborClaimRefused));
    assert_eq!(r.p.neighbors(), 2);
    // With the solicited flag, to weir's own address: perhaps another worker asked. It may
    // create the entry, as a request to weir would; it cannot move an existing one.
    let f = na(v6("2001:db8:1::66"), v6("2001:db8:1::66"), ATTACKER_MAC, true);
    assert_eq!(r.send(&f, 0), Verdict::Consumed);
    r.now += 5 * SECOND;
    let f = na(v6("2001:db8:1::66"), v6("2001:db8:1::66"), [0x02, 0, 0, 0, 0, 0x55], true);
    assert_eq!(r.send(&f, 0), Verdict::Drop(DropReason::NeighborClaimRefused));
}

#[test]
fn martian_sources_are_dropped_on_both_paths() {
    let mut r = Rig::new();
    for src in [
        [0, 0, 0, 0],
        [0, 1, 2, 3],
        [127, 0, 0, 1],
        [224, 0, 0, 5],
        [239, 255, 0, 1],
        [240, 0, 0, 1],
        [255, 255, 255, 255],
        WEIR0,
        WEIR1,
        [198, 18, 1, 255],
        [198, 18, 2, 255],
    ] {
        // A datagram the fast path would otherwise take, and a ping to weir.
        let f = l4_frame_v4(src, 1, SERVER, 9, None);
        assert_eq!(r.send(&f, 0), Verdict::Drop(DropReason::MartianSource), "{src:?} forwarded");
        assert_eq!(
            r.send(&ping4(src, WEIR0, false), 0),
            Verdict::Drop(DropReason::MartianSource),
            "{src:?} answered"
        );
    }
    for dst in [[0, 0, 0, 1], [127, 0, 0, 1], [240, 1, 1, 1]] {
        let f = l4_frame_v4(CLIENT, 1, dst, 9, None);
        assert_eq!(r.send(&f, 0), Verdict::Drop(DropReason::MartianDestination), "{dst:?}");
    }
    assert_eq!(r.forwarded_to(), Some(SERVER_MAC));
}

#[test]
fn martian_ipv6_sources_are_dropped() {
    let mut r = Rig::new();
    let server = v6("2001:db8:2::2");
    let echo = |id: u8| vec![128, 0, 0, 0, 0, id, 0, 1, 1, 2, 3, 4];
    for src in ["::1", "ff02::1", "ff05::2", "::ffff:198.18.1.2", "2001:db8:1::1", "2001:db8:2::1"]
    {
        let f = icmp6(v6(src), server, 64, echo(1));
        assert_eq!(r.send(&f, 0), Verdict::Drop(DropReason::MartianSource), "{src}");
    }
    // Unspecified and link-local sources may talk to weir, never through it.
    for src in ["::", "fe80::1"] {
        let f = icmp6(v6(src), server, 64, echo(2));
        assert_eq!(r.send(&f, 0), Verdict::Drop(DropReason::MartianSource), "{src}");
    }
    let f = icmp6(v6("fe80::1"), v6("2001:db8:1::1"), 64, echo(3));
    assert_eq!(r.send(&f, 0), Verdict::Forward(0), "a link-local host pings weir");
    for dst in ["::", "::1", "::ffff:198.18.2.2"] {
        let f = icmp6(v6("2001:db8:1::2"), v6(dst), 64, echo(4));
        assert_eq!(r.send(&f, 0), Verdict::Drop(DropReason::MartianDestination), "{dst}");
    }
}

#[test]
fn frames_from_impossible_macs_are_dropped_on_both_paths() {
    let mut r = Rig::new();
    for mac in [[0xff; 6], [0x01, 0, 0x5e, 0, 0, 1], [0x33, 0x33, 0, 0, 0, 1], [0; 6], PORT0_MAC] {
        let mut f = udp4_frame(9).to_vec();
        f[6..12].copy_from_slice(&mac);
        assert_eq!(r.send(&f, 0), Verdict::Drop(DropReason::BadSourceMac), "{mac:02x?}");
        let mut f = arp(1, CLIENT_MAC, CLIENT, [0; 6], WEIR0);
        f[6..12].copy_from_slice(&mac);
        assert_eq!(r.send(&f, 0), Verdict::Drop(DropReason::BadSourceMac), "ARP {mac:02x?}");
    }
    assert_eq!(r.drops(DropReason::BadSourceMac), 10);
    assert_eq!(r.forwarded_to(), Some(SERVER_MAC));
}

#[test]
fn reflection_bait_is_not_answered() {
    let mut r = Rig::new();
    // A bad checksum, IPv4 and IPv6.
    assert_eq!(r.send(&ping4(CLIENT, WEIR0, true), 0), Verdict::Drop(DropReason::BadIcmpChecksum));
    let mut f = icmp6(v6("2001:db8:1::2"), v6("2001:db8:1::1"), 64, vec![128, 0, 0, 0, 0, 1, 0, 1]);
    let last = f.len() - 1;
    f[last] ^= 0x40;
    assert_eq!(r.send(&f, 0), Verdict::Drop(DropReason::BadIcmpChecksum));
    // A directed broadcast, to weir's own link and through it.
    for dst in [[198, 18, 1, 255], [198, 18, 2, 255]] {
        let mut f = ping4(CLIENT, dst, false);
        f[0..6].copy_from_slice(&[0xff; 6]);
        assert_eq!(r.send(&f, 0), Verdict::Drop(DropReason::DirectedBroadcast), "{dst:?}");
        let f = ping4(CLIENT, dst, false);
        assert_eq!(r.send(&f, 0), Verdict::Drop(DropReason::DirectedBroadcast), "{dst:?}");
    }
    // Nothing was sent for any of them; a good ping is answered.
    assert!(r.out.sent.is_empty(), "{:?}", r.out.sent);
    assert_eq!(r.send(&ping4(CLIENT, WEIR0, false), 0), Verdict::Forward(0));
}

/// A UDP datagram client → server with `opts` after its IPv4 header.
fn with_options(opts: &[u8]) -> Vec<u8> {
    let base = udp4_frame(3);
    let mut f = base[..34].to_vec();
    f.extend_from_slice(opts);
    f.extend_from_slice(&base[34..]);
    f[14] = 0x40 | u8::try_from((20 + opts.len()) / 4).unwrap();
    let total = u16::from_be_bytes([f[16], f[17]]) + u16::try_from(opts.len()).unwrap();
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f[24..26].copy_from_slice(&[0, 0]);
    let ihl = 20 + opts.len();
    let c = checksum(&f[14..14 + ihl]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

#[test]
fn malformed_ipv4_options_get_a_parameter_problem() {
    let mut r = Rig::new();
    for (opts, pointer) in [
        (vec![0x44, 0, 0, 0], 20u8),
        (vec![1, 1, 148, 12, 0, 0, 0, 0], 22),
        (vec![7, 7, 2, 0, 0, 0, 0, 0], 22),
    ] {
        r.out.sent.clear();
        let v = r.send(&with_options(&opts), 0);
        assert_eq!(v, Verdict::Drop(DropReason::BadIpv4Options), "{opts:?}");
        let (port, err) = r.out.sent.pop().expect("a parameter problem");
        assert_eq!(port, 0);
        let p = stack::parse_frame(&err).unwrap();
        assert!(matches!(
            p.l4.unwrap().header,
            stack::L4::Icmpv4 { icmp_type: 12, icmp_code: 0, .. }
        ));
        assert_eq!(err[38], pointer, "{opts:?}");
        assert_eq!(err[30..34], CLIENT, "to the sender");
    }
    // Well-formed options are forwarded; source routes are not honoured.
    assert_eq!(r.send(&with_options(&[7, 7, 4, 0, 0, 0, 0, 0]), 0), Verdict::Forward(1));
    let lsrr = with_options(&[131, 7, 4, 198, 18, 2, 9, 0]);
    assert_eq!(r.send(&lsrr, 0), Verdict::Drop(DropReason::SourceRouted));
}

#[test]
fn a_tcp_data_offset_beyond_the_segment_is_named_as_such() {
    let mut r = Rig::new();
    let mut f = l4_frame_v4(CLIENT, 1000, SERVER, 80, Some(0x02));
    f[46] = 0xf0;
    assert_eq!(r.send(&f, 0), Verdict::Drop(DropReason::BadTcpDataOffset));
}
