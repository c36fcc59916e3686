//! The mesh engine on real frames: picks, translations both ways, flow states, drops.

use dataplane::mesh::engine::{MeshAction, MeshEngine, MeshSettings, Routes, SharedMesh};
use dataplane::mesh::flow::{FlowTimeouts, WhenFull};
use dataplane::mesh::model::{
    proto, Balance, ClusterSpec, EndpointSpec, MeshCapacity, MeshSnapshot, Mode, OnEndpointGone,
    Policy, ServiceSpec,
};
use dataplane::pipeline::DropReason;
use dataplane::testing::l4_frame_v4;
use stack::parse::{parse_frame, L3, L4};
use std::net::{IpAddr, Ipv4Addr};

const CLIENT: [u8; 4] = [198, 18, 1, 2];
const VIP: [u8; 4] = [198, 19, 0, 1];
const SNAT: [u8; 4] = [198, 18, 2, 1];
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const RST: u8 = 0x04;

/// (src, sport, dst, dport) of a frame, checking its checksums on the way.
fn tuple(f: &[u8]) -> (IpAddr, u16, IpAddr, u16) {
    let p = parse_frame(f).expect("valid after translation");
    assert!(stack::l4::verify_l4_checksum(f, &p), "L4 checksum");
    let L3::Ipv4(ip) = p.l3 else { panic!("IPv4") };
    let (sp, dp) = match p.l4.unwrap().header {
        L4::Tcp { src_port, dst_port, .. } | L4::Udp { src_port, dst_port, .. } => {
            (src_port, dst_port)
        }
        _ => panic!("TCP or UDP"),
    };
    (IpAddr::V4(ip.src), sp, IpAddr::V4(ip.dst), dp)
}

fn ep(last: u8, weight: u32) -> EndpointSpec {
    EndpointSpec {
        addr: IpAddr::from([198, 18, 2, last]),
        port: 8080,
        weight,
        healthy: true,
        priority: 0,
        group: 0,
    }
}

struct Rig {
    engine: MeshEngine,
    shared: std::sync::Arc<SharedMesh>,
    now: u64,
}

fn mesh(
    mode: Mode,
    policy: Policy,
    eps: Vec<EndpointSpec>,
    proto_: u8,
) -> (Vec<ServiceSpec>, Vec<ClusterSpec>) {
    (
        vec![ServiceSpec {
            name: "web".into(),
            vip: IpAddr::from(VIP),
            port: 80,
            proto: proto_,
            cluster: "web".into(),
            mode,
        }],
        vec![ClusterSpec {
            name: "web".into(),
            policy,
            maglev_table_size: None,
            endpoints: eps,
            on_endpoint_gone: OnEndpointGone::Drain,
            balance: Balance::default(),
            connect_timeout_ns: None,
        }],
    )
}

fn rig(
    mode: Mode,
    policy: Policy,
    eps: Vec<EndpointSpec>,
    capacity: usize,
    when_full: WhenFull,
) -> Rig {
    rig_with(mode, policy, eps, capacity, when_full, None)
}

fn rig_with(
    mode: Mode,
    policy: Policy,
    eps: Vec<EndpointSpec>,
    capacity: usize,
    when_full: WhenFull,
    connect_timeout_ns: Option<u64>,
) -> Rig {
    let (s, mut c) = mesh(mode, policy, eps, proto::TCP);
    c[0].connect_timeout_ns = connect_timeout_ns;
    let cap = MeshCapacity { services: 16, clusters: 16, endpoints: 64 };
    let snap = MeshSnapshot::build(&s, &c, cap, None, |_| true).unwrap();
    let shared = SharedMesh::new(snap, 64, 64, 1);
    let settings = MeshSettings {
        flow_capacity: capacity,
        timeouts: FlowTimeouts::default(),
        when_full,
        snat_ports: (20000, 29999),
        endpoints: 64,
        clusters: 16,
        reset_unknown: true,
        seek_unknown: false,
    };
    Rig { engine: MeshEngine::new(0, 1, &settings, std::sync::Arc::clone(&shared)), shared, now: 1 }
}

/// Routing as the engine sees it here: NAT flows come from SNAT, every port has this MTU.
struct TestRoutes(u16);

impl Routes for TestRoutes {
    fn source_toward(&self, _: IpAddr) -> Option<IpAddr> {
        Some(IpAddr::from(SNAT))
    }
    fn mtu_toward(&self, _: IpAddr) -> Option<u16> {
        Some(self.0)
    }
}

/// [`Rig::send`]'s answer for a translated frame (whose new destination it checked).
const TRANSLATED: MeshAction = MeshAction::Translated { dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED) };

impl Rig {
    fn send(&mut self, f: &mut [u8]) -> MeshAction {
        let p = parse_frame(f).unwrap();
        let local = matches!(p.l3, L3::Ipv4(ip) if ip.dst.octets() == SNAT);
        self.now += 1000;
        match self.engine.handle(f, &p, local, &TestRoutes(1500), self.now) {
            MeshAction::Translated { dst } => {
                assert_eq!(tuple(f).2, dst, "the engine reports the new destination");
                TRANSLATED
            }
            other => other,
        }
    }
}

#[test]
fn per_service_counters_and_active_flows_follow_the_flows() {
    let mut r = rig(Mode::Nat, Policy::Maglev, vec![ep(10, 1)], 64, WhenFull::DropNew);
    // Another id, in range but of no service: it counts nothing.
    let id = r.shared.load().service_list[0].id + 1;
    assert!(usize::try_from(id).unwrap() < r.engine.share().services.len());
    let svc = r.shared.load().service_list[0].id;
    let endpoint = r.shared.load().endpoints().next().unwrap().id;
    // One connection answered: SYN, SYN-ACK, ACK.
    let mut syn = l4_frame_v4(CLIENT, 40000, VIP, 80, Some(SYN));
    let len = syn.len() as u64;
    assert_eq!(r.send(&mut syn), TRANSLATED);
    let sport = tuple(&syn).1;
    let mut synack = l4_frame_v4([198, 18, 2, 10], 8080, SNAT, sport, Some(SYN | ACK));
    assert_eq!(r.send(&mut synack), TRANSLATED);
    let mut ack = l4_frame_v4(CLIENT, 40000, VIP, 80, Some(ACK));
    assert_eq!(r.send(&mut ack), TRANSLATED);
    // Another refused: SYN, RST.
    let mut syn2 = l4_frame_v4(CLIENT, 40001, VIP, 80, Some(SYN));
    assert_eq!(r.send(&mut syn2), TRANSLATED);
    let sport2 = tuple(&syn2).1;
    let mut rst = l4_frame_v4([198, 18, 2, 10], 8080, SNAT, sport2, Some(RST | ACK));
    assert_eq!(r.send(&mut rst), TRANSLATED);
    // Counted as they come, added to the service's counters at the next housekeeping.
    r.engine.flush_counts();
    let t = r.shared.service_totals(svc);
    assert_eq!((t.packets, t.bytes), (5, 5 * len));
    assert_eq!((t.flows_opened, t.flows_closed, t.flows_failed), (2, 0, 1));
    assert_eq!(r.shared.active_flows(endpoint), 2);
    assert_eq!(r.shared.service_totals(id), Default::default());
    // Both flows expire: closed, and no longer active on their endpoint.
    r.now += 10_000_000_000_000;
    for _ in 0..64 {
        r.now += 1_000_000_000;
        r.engine.maintain(r.now);
    }
    let t = r.shared.service_totals(svc);
    assert_eq!((t.flows_opened, t.flows_closed), (2, 2));
    assert_eq!(r.shared.active_flows(endpoint), 0);
}

#[test]
fn a_dsr_connection_is_answered_when_the_client_acknowledges() {
    let encap = Mode::Dsr(dataplane::mesh::model::Encap::IpIp);
    let mut r = rig(encap, Policy::Maglev, vec![ep(10, 1)], 64, WhenFull::DropNew);
    let svc = r.shared.load().service_list[0].id;
    let endpoint = r.shared.load().endpoints().next().unwrap().id;
    // The endpoint answers the client directly: weir sees the SYN, then the client's ACK.
    let mut syn = l4_frame_v4(CLIENT, 40000, VIP, 80, Some(SYN));
    assert!(matches!(r.send(&mut syn), MeshAction::Encapsulate { .. }));
    let mut ack = l4_frame_v4(CLIENT, 40000, VIP, 80, Some(ACK));
    assert!(matches!(r.send(&mut ack), MeshAction::Encapsulate { .. }));
    assert_eq!((r.engine.counters.connects_ok, r.engine.counters.connects_failed), (1, 0));
    // Expired idle, it is no failed connect, neither for its service nor for its endpoint.
    for _ in 0..64 {
        r.now += 1_000_000_000_000;
        r.engine.maintain(r.now);
    }
    let t = r.shared.service_totals(svc);
    assert_eq!((t.flows_opened, t.flows_closed, t.flows_failed), (1, 1, 0));
    assert_eq!(r.shared.health.totals(endpoint), (0, 1));
}

#[test]
fn nat_translates_both_ways() {
    let mut r = rig(Mode::Nat, Policy::Maglev, vec![ep(10, 1)], 64, WhenFull::DropNew);
    let mut syn = l4_frame_v4(CLIENT, 40000, VIP, 80, Some(SYN));
    assert_eq!(r.send(&mut syn), TRANSLATED);
    let (src, sport, dst, dport) = tuple(&syn);
    assert_eq!((src, dst, dport), (IpAddr::from(SNAT), IpAddr::from([198, 18, 2, 10]), 8080));
    assert!((20000..=29999).contains(&sport), "SNAT port {sport}");
    // The endpoint answers to the SNAT address and port: back to the client, from the VIP.
    let mut synack = l4_frame_v4([198, 18, 2, 10], 8080, SNAT, sport, Some(SYN | ACK));
    assert_eq!(r.send(&mut synack), TRANSLATED);
    assert_eq!(tuple(&synack), (IpAddr::from(VIP), 80, IpAddr::from(CLIENT), 40000));
    // The client's next packets take the same translation.
    let mut ack = l4_frame_v4(CLIENT, 40000, VIP, 80, Some(ACK));
    assert_eq!(r.send(&mut ack), TRANSLATED);
    assert_eq!(tuple(&ack), (src, sport, dst, dport));
    let c = r.engine.counters;
    assert_eq!((c.flows_opened, c.forward, c.reverse, c.connects_ok), (1, 2, 1, 1));
}

#[test]
fn dnat_rewrites_the_destination_only() {
    let mut r = rig(Mode::Dnat, Policy::RoundRobin, vec![ep(10, 1)], 64, WhenFull::DropNew);
    let mut syn = l4_frame_v4(CLIENT, 40001, VIP, 80, Some(SYN));
    assert_eq!(r.send(&mut syn), TRANSLATED);
    assert_eq!(tuple(&syn), (IpAddr::from(CLIENT), 40001, IpAddr::from([198, 18, 2, 10]), 8080));
    // The endpoint answers the client directly through weir, its gateway.
    let mut synack = l4_frame_v4([198, 18, 2, 10], 8080, CLIENT, 40001, Some(SYN | ACK));
    assert_eq!(r.send(&mut synack), TRANSLATED);
    assert_eq!(tuple(&synack), (IpAddr::from(VIP), 80, IpAddr::from(CLIENT), 40001));
}

#[test]
fn what_the_mesh_does_not_take_passes_or_drops_with_a_reason() {
    let mut r = rig(Mode::Nat, Policy::Maglev, vec![ep(10, 1)], 64, WhenFull::DropNew);
    // Not a VIP: ordinary routing.
    let mut f = l4_frame_v4(CLIENT, 1, [198, 18, 2, 99], 80, Some(SYN));
    assert_eq!(r.send(&mut f), MeshAction::Pass);
    // A VIP, but no service on that port.
    let mut f = l4_frame_v4(CLIENT, 1, VIP, 81, Some(SYN));
    assert_eq!(r.send(&mut f), MeshAction::Drop(DropReason::NoService));
    // Mid-connection TCP of an unknown NAT flow: a reset tells the client (a reset is never
    // answered, only dropped).
    let mut f = l4_frame_v4(CLIENT, 2, VIP, 80, Some(ACK));
    assert_eq!(r.send(&mut f), MeshAction::Reset);
    let mut f = l4_frame_v4(CLIENT, 2, VIP, 80, Some(RST | ACK));
    assert_eq!(r.send(&mut f), MeshAction::Drop(DropReason::NoFlow));
    // A reply to a SNAT port no flow uses.
    let mut f = l4_frame_v4([198, 18, 2, 10], 8080, SNAT, 20001, Some(ACK));
    assert_eq!(r.send(&mut f), MeshAction::Drop(DropReason::NoFlow));
    // No endpoint takes new flows.
    let mut r = rig(Mode::Nat, Policy::Maglev, vec![ep(10, 0)], 64, WhenFull::DropNew);
    let mut f = l4_frame_v4(CLIENT, 3, VIP, 80, Some(SYN));
    assert_eq!(r.send(&mut f), MeshAction::Drop(DropReason::NoEndpoint));
}

fn spread(policy: Policy) -> f64 {
    let mut r = rig(Mode::Dnat, policy, vec![ep(10, 95), ep(11, 5)], 200_000, WhenFull::DropNew);
    let mut canary = 0u32;
    for i in 0..100_000u32 {
        let client = [198, 18, 1, u8::try_from(2 + i / 60000).unwrap()];
        let mut f =
            l4_frame_v4(client, u16::try_from(1024 + i % 60000).unwrap(), VIP, 80, Some(SYN));
        assert_eq!(r.send(&mut f), TRANSLATED);
        if tuple(&f).2 == IpAddr::from([198, 18, 2, 11]) {
            canary += 1;
        }
    }
    f64::from(canary) / 100_000.0
}

#[test]
fn a_95_5_split_holds_within_a_point_over_100k_flows() {
    for policy in [Policy::Maglev, Policy::RoundRobin, Policy::Random, Policy::LeastRequest] {
        let share = spread(policy);
        let ok = if policy == Policy::LeastRequest {
            // Flows here never end, so least-request evens out active flows instead.
            share > 0.05
        } else {
            (share - 0.05).abs() <= 0.01
        };
        assert!(ok, "{policy:?}: {share:.4} of new flows to the 5 % endpoint");
    }
}

#[test]
fn a_syn_flood_is_refused_or_evicted_and_established_flows_carry_on() {
    for when_full in [WhenFull::DropNew, WhenFull::EvictEmbryonic] {
        let mut r = rig(Mode::Nat, Policy::Maglev, vec![ep(10, 1)], 8, when_full);
        // Two real connections.
        let mut ports = Vec::new();
        for cport in [50000u16, 50001] {
            let mut syn = l4_frame_v4(CLIENT, cport, VIP, 80, Some(SYN));
            assert_eq!(r.send(&mut syn), TRANSLATED);
            let sp = tuple(&syn).1;
            let mut synack = l4_frame_v4([198, 18, 2, 10], 8080, SNAT, sp, Some(SYN | ACK));
            assert_eq!(r.send(&mut synack), TRANSLATED);
            let mut ack = l4_frame_v4(CLIENT, cport, VIP, 80, Some(ACK));
            assert_eq!(r.send(&mut ack), TRANSLATED);
            ports.push(cport);
        }
        // A flood of SYNs from random sources fills the table; the endpoint answers some of
        // them, which makes them no less evictable: their sources never complete a handshake.
        for i in 0..3u32 {
            let src = [198, 18, 200, u8::try_from(i).unwrap()];
            let mut syn = l4_frame_v4(src, 1000, VIP, 80, Some(SYN));
            assert_eq!(r.send(&mut syn), TRANSLATED);
            let sp = tuple(&syn).1;
            let mut synack = l4_frame_v4([198, 18, 2, 10], 8080, SNAT, sp, Some(SYN | ACK));
            assert_eq!(r.send(&mut synack), TRANSLATED);
        }
        let mut dropped = 0;
        for i in 0..1000u32 {
            let src = [198, 18, u8::try_from(i % 250).unwrap(), u8::try_from(i / 250 + 3).unwrap()];
            let mut syn = l4_frame_v4(src, 1000, VIP, 80, Some(SYN));
            if r.send(&mut syn) == MeshAction::Drop(DropReason::FlowTableFull) {
                dropped += 1;
            }
        }
        assert_eq!(r.engine.flows().len(), 8);
        match when_full {
            WhenFull::DropNew => assert_eq!(dropped, 1000 - 3),
            WhenFull::EvictEmbryonic => {
                assert_eq!(dropped, 0);
                assert_eq!(r.engine.flows().stats.evicted, 1000 - 3);
            }
        }
        for cport in ports {
            let mut ack = l4_frame_v4(CLIENT, cport, VIP, 80, Some(ACK));
            assert_eq!(r.send(&mut ack), TRANSLATED, "{when_full:?}: established flow lost");
        }
    }
}

#[test]
fn flows_keep_their_endpoint_across_a_reload_and_drain_or_reset() {
    for gone in [OnEndpointGone::Drain, OnEndpointGone::Reset] {
        let mut r =
            rig(Mode::Dnat, Policy::RoundRobin, vec![ep(10, 1), ep(11, 1)], 64, WhenFull::DropNew);
        let mut to = Vec::new();
        for cport in 0..10u16 {
            let mut syn = l4_frame_v4(CLIENT, 30000 + cport, VIP, 80, Some(SYN));
            assert_eq!(r.send(&mut syn), TRANSLATED);
            to.push(tuple(&syn).2);
        }
        // Endpoint .10 is removed; .12 added.
        let (s, mut c) =
            mesh(Mode::Dnat, Policy::RoundRobin, vec![ep(11, 1), ep(12, 1)], proto::TCP);
        c[0].on_endpoint_gone = gone;
        let cap = MeshCapacity { services: 16, clusters: 16, endpoints: 64 };
        let prev = r.shared.load();
        r.shared.store(MeshSnapshot::build(&s, &c, cap, Some(&prev), |_| true).unwrap());
        r.engine.maintain(r.now);
        for (cport, was) in (0..10u16).zip(&to) {
            let mut ack = l4_frame_v4(CLIENT, 30000 + cport, VIP, 80, Some(ACK));
            let got = r.send(&mut ack);
            if *was == IpAddr::from([198, 18, 2, 10]) && gone == OnEndpointGone::Reset {
                assert_eq!(got, MeshAction::Reset, "the client is told with a reset");
            } else {
                assert_eq!(got, TRANSLATED);
                assert_eq!(tuple(&ack).2, *was, "a flow changed endpoint");
            }
        }
    }
}

#[test]
fn udp_flows_translate_both_ways() {
    let (s, c) = mesh(Mode::Nat, Policy::Maglev, vec![ep(10, 1)], proto::UDP);
    let cap = MeshCapacity { services: 16, clusters: 16, endpoints: 64 };
    let shared =
        SharedMesh::new(MeshSnapshot::build(&s, &c, cap, None, |_| true).unwrap(), 64, 64, 1);
    let settings = MeshSettings {
        flow_capacity: 64,
        timeouts: FlowTimeouts::default(),
        when_full: WhenFull::DropNew,
        snat_ports: (20000, 29999),
        endpoints: 64,
        clusters: 16,
        reset_unknown: true,
        seek_unknown: false,
    };
    let mut r = Rig {
        engine: MeshEngine::new(0, 1, &settings, std::sync::Arc::clone(&shared)),
        shared,
        now: 1,
    };
    let mut q = l4_frame_v4(CLIENT, 5353, VIP, 80, None);
    assert_eq!(r.send(&mut q), TRANSLATED);
    let (_, sport, dst, dport) = tuple(&q);
    let IpAddr::V4(dst) = dst else { panic!() };
    let mut a = l4_frame_v4(dst.octets(), dport, SNAT, sport, None);
    assert_eq!(r.send(&mut a), TRANSLATED);
    assert_eq!(tuple(&a), (IpAddr::from(VIP), 80, IpAddr::from(CLIENT), 5353));
}

#[test]
fn a_new_connection_on_an_ended_ones_port_is_opened_afresh() {
    let mut r = rig(Mode::Nat, Policy::Maglev, vec![ep(10, 1)], 64, WhenFull::DropNew);
    let mut syn = l4_frame_v4(CLIENT, 41000, VIP, 80, Some(SYN));
    assert_eq!(r.send(&mut syn), TRANSLATED);
    let sport = tuple(&syn).1;
    let mut synack = l4_frame_v4([198, 18, 2, 10], 8080, SNAT, sport, Some(SYN | ACK));
    assert_eq!(r.send(&mut synack), TRANSLATED);
    let mut ack = l4_frame_v4(CLIENT, 41000, VIP, 80, Some(ACK));
    assert_eq!(r.send(&mut ack), TRANSLATED);
    // The server closes, the client closes.
    let mut fin = l4_frame_v4([198, 18, 2, 10], 8080, SNAT, sport, Some(0x01 | ACK));
    assert_eq!(r.send(&mut fin), TRANSLATED);
    let mut fin2 = l4_frame_v4(CLIENT, 41000, VIP, 80, Some(0x01 | ACK));
    assert_eq!(r.send(&mut fin2), TRANSLATED);
    // Same client port, new connection: a new flow with its own SNAT port.
    let mut again = l4_frame_v4(CLIENT, 41000, VIP, 80, Some(SYN));
    assert_eq!(r.send(&mut again), TRANSLATED);
    assert_ne!(tuple(&again).1, sport, "the old flow's SNAT port is not reused");
    assert_eq!(r.engine.counters.flows_opened, 2);
}

#[test]
fn a_packet_too_big_for_the_way_to_its_endpoint_is_left_untranslated() {
    let mut r = rig(Mode::Nat, Policy::Maglev, vec![ep(10, 1)], 64, WhenFull::DropNew);
    let mut f = l4_frame_v4(CLIENT, 7000, VIP, 80, Some(SYN));
    let p = parse_frame(&f).unwrap();
    let before = f.clone();
    // A 40-byte segment on a path of MTU 39.
    let tcp_flow = r.engine.handle(&mut f, &p, false, &TestRoutes(39), 5);
    assert_eq!(tcp_flow, MeshAction::TooBig { mtu: 39 });
    assert_eq!(f, before, "the sender's own packet is quoted in the error");
}

#[test]
fn an_unanswered_syn_is_a_failed_connect_and_an_answer_resets_the_run() {
    let mut r = rig(Mode::Dnat, Policy::Maglev, vec![ep(10, 1)], 64, WhenFull::DropNew);
    let failures = |r: &Rig| (0..64).map(|id| r.shared.health.totals(id).0).sum::<u64>();
    let runs = |r: &Rig| (0..64).map(|id| r.shared.health.run(id)).max().unwrap_or(0);
    // Two SYNs the endpoint never answers: when their handshakes time out (5 s by default)
    // and the sweep finds them, each is a failed connect.
    for cport in [41000, 41001] {
        let mut syn = l4_frame_v4(CLIENT, cport, VIP, 80, Some(SYN));
        assert_eq!(r.send(&mut syn), TRANSLATED);
    }
    // A second on, the sweep has looked at every record, and no handshake has timed out.
    r.now += 1_000_000_000;
    r.engine.maintain(r.now);
    assert_eq!(failures(&r), 0, "nothing has timed out yet");
    assert_eq!(r.engine.flows().len(), 2);
    r.now += 5_000_000_000;
    r.engine.maintain(r.now);
    assert_eq!(r.engine.counters.connects_failed, 2);
    assert_eq!((failures(&r), runs(&r)), (2, 2));
    assert!(r.engine.flows().is_empty(), "the unanswered handshakes are gone");
    // A handshake the endpoint answers ends the run of failures.
    let mut syn = l4_frame_v4(CLIENT, 41002, VIP, 80, Some(SYN));
    assert_eq!(r.send(&mut syn), TRANSLATED);
    let mut synack = l4_frame_v4([198, 18, 2, 10], 8080, CLIENT, 41002, Some(SYN | ACK));
    assert_eq!(r.send(&mut synack), TRANSLATED);
    assert_eq!(r.engine.counters.connects_ok, 1);
    assert_eq!(runs(&r), 0);
}

#[test]
fn a_clusters_connect_timeout_runs_from_the_first_syn() {
    let mut r = rig_with(
        Mode::Dnat,
        Policy::Maglev,
        vec![ep(10, 1)],
        64,
        WhenFull::DropNew,
        Some(2_000_000_000),
    );
    // The snapshot's settings are taken up at the first housekeeping.
    r.engine.maintain(r.now);
    let mut syn = l4_frame_v4(CLIENT, 41000, VIP, 80, Some(SYN));
    assert_eq!(r.send(&mut syn), TRANSLATED);
    // The client retransmits its SYN 1.5 s on: the deadline stays 2 s from the first.
    r.now += 1_500_000_000;
    let mut again = l4_frame_v4(CLIENT, 41000, VIP, 80, Some(SYN));
    assert_eq!(r.send(&mut again), TRANSLATED);
    assert_eq!(r.engine.flows().len(), 1, "the same flow");
    r.now += 400_000_000;
    r.engine.maintain(r.now);
    assert_eq!(r.engine.counters.connects_failed, 0, "1.9 s: not yet");
    // Past 2 s (and the sweep's pace), well before the mesh's 5 s.
    r.now += 1_000_000_000;
    r.engine.maintain(r.now);
    assert_eq!(r.engine.counters.connects_failed, 1);
    assert!(r.engine.flows().is_empty());
}

/// The SNAT ports one start hands out: each different from the last until the range has gone
/// round, and starting somewhere else on every start, so that a restarted weir does not meet
/// its predecessor's 4-tuples still in the endpoints' TIME_WAIT.
#[test]
fn snat_ports_start_at_random_and_do_not_repeat_within_a_round() {
    let first_ports: Vec<u16> = (0..4)
        .map(|_| {
            let mut r = rig(Mode::Nat, Policy::Maglev, vec![ep(10, 1)], 20_000, WhenFull::DropNew);
            let mut seen = std::collections::HashSet::new();
            let mut first = None;
            for i in 0..2000u16 {
                let mut syn = l4_frame_v4(CLIENT, 30000 + i, VIP, 80, Some(SYN));
                assert_eq!(r.send(&mut syn), TRANSLATED);
                let sport = tuple(&syn).1;
                assert!(seen.insert(sport), "SNAT port {sport} handed out twice in 2000 flows");
                first.get_or_insert(sport);
            }
            first.unwrap()
        })
        .collect();
    let distinct: std::collections::HashSet<_> = first_ports.iter().collect();
    assert!(distinct.len() > 1, "four starts began at the same port: {first_ports:?}");
}

/// An endpoint that answers a SYN with a bare ACK still holds the 4-tuple: counted as a
/// collision, not as a connect that worked nor as one that failed.
#[test]
fn a_challenge_ack_is_a_collision_not_a_connect() {
    let mut r = rig(Mode::Nat, Policy::Maglev, vec![ep(10, 1)], 64, WhenFull::DropNew);
    let mut syn = l4_frame_v4(CLIENT, 40000, VIP, 80, Some(SYN));
    assert_eq!(r.send(&mut syn), TRANSLATED);
    let sport = tuple(&syn).1;
    let mut ack = l4_frame_v4([198, 18, 2, 10], 8080, SNAT, sport, Some(ACK));
    assert_eq!(r.send(&mut ack), TRANSLATED);
    let c = r.engine.counters;
    assert_eq!((c.snat_collisions, c.connects_ok, c.connects_failed), (1, 0, 0), "{c:?}");
}

/// While a worker evicts handshakes for a flood of new flows, handshakes that fail are not
/// held against their endpoint; once the flood is a handshake timeout past, they are again.
#[test]
fn failures_during_evictions_are_not_held_against_the_endpoint() {
    let mut r = rig(Mode::Nat, Policy::Maglev, vec![ep(10, 1)], 4, WhenFull::EvictEmbryonic);
    let id = r.shared.load().endpoints().next().unwrap().id;
    // A flood: more SYNs than the table holds, so handshakes are evicted.
    for i in 0..16u16 {
        let mut syn = l4_frame_v4([198, 18, 1, 100], 1000 + i, VIP, 80, Some(SYN));
        assert_eq!(r.send(&mut syn), TRANSLATED);
    }
    r.engine.maintain(r.now);
    // The endpoint resets one of the flood's handshakes.
    let mut syn = l4_frame_v4(CLIENT, 40001, VIP, 80, Some(SYN));
    assert_eq!(r.send(&mut syn), TRANSLATED);
    let mut rst = l4_frame_v4([198, 18, 2, 10], 8080, SNAT, tuple(&syn).1, Some(RST | ACK));
    assert_eq!(r.send(&mut rst), TRANSLATED);
    assert_eq!(r.shared.health.run(id), 0, "not judged during the flood");
    assert_eq!(r.engine.counters.connects_failed_unjudged, 1);
    r.engine.maintain(r.now);
    // A minute passes, a poll every millisecond: the flood's handshakes expire unanswered,
    // unjudged too. After it, a reset handshake counts again.
    for _ in 0..60_000 {
        r.now += 1_000_000;
        r.engine.maintain(r.now);
    }
    assert_eq!(r.shared.health.run(id), 0, "{:?}", r.engine.counters);
    let mut syn = l4_frame_v4(CLIENT, 40002, VIP, 80, Some(SYN));
    assert_eq!(r.send(&mut syn), TRANSLATED);
    let mut rst = l4_frame_v4([198, 18, 2, 10], 8080, SNAT, tuple(&syn).1, Some(RST | ACK));
    assert_eq!(r.send(&mut rst), TRANSLATED);
    assert_eq!(r.shared.health.run(id), 1, "{:?}", r.engine.counters);
}

#[test]
fn a_segment_of_another_workers_nat_flow_is_looked_for_there_before_any_reset() {
    // Two workers sharing one mesh; the connection opened on worker 0.
    let (s, c) = mesh(Mode::Nat, Policy::Maglev, vec![ep(10, 1)], proto::TCP);
    let cap = MeshCapacity { services: 16, clusters: 16, endpoints: 64 };
    let snap = MeshSnapshot::build(&s, &c, cap, None, |_| true).unwrap();
    let shared = SharedMesh::new(snap, 64, 64, 2);
    let settings = MeshSettings {
        flow_capacity: 64,
        timeouts: FlowTimeouts::default(),
        when_full: WhenFull::DropNew,
        snat_ports: (20000, 29999),
        endpoints: 64,
        clusters: 16,
        reset_unknown: true,
        seek_unknown: true,
    };
    let mut w: Vec<MeshEngine> =
        (0..2).map(|i| MeshEngine::new(i, 2, &settings, std::sync::Arc::clone(&shared))).collect();
    let routes = TestRoutes(1500);
    let send = |e: &mut MeshEngine, f: &mut [u8], now: u64| {
        let p = parse_frame(f).unwrap();
        e.handle(f, &p, false, &routes, now)
    };
    let mut syn = l4_frame_v4(CLIENT, 40000, VIP, 80, Some(SYN));
    assert!(matches!(send(&mut w[0], &mut syn, 10), MeshAction::Translated { .. }));
    // A segment of it reaches worker 1 (the port rolled it over to another queue): worker 1
    // has no flow for it and passes it on rather than resetting the connection.
    let mut ack = l4_frame_v4(CLIENT, 40000, VIP, 80, Some(ACK));
    assert_eq!(send(&mut w[1], &mut ack.clone(), 20), MeshAction::Seek(0));
    // Worker 0, told one worker looked already, finds it and translates it.
    w[0].set_seeking(1);
    assert!(matches!(send(&mut w[0], &mut ack, 30), MeshAction::Translated { .. }));
    w[0].set_seeking(0);
    // A connection no worker has: the last one to look resets it.
    let mut lost = l4_frame_v4(CLIENT, 40001, VIP, 80, Some(ACK));
    assert_eq!(send(&mut w[0], &mut lost.clone(), 40), MeshAction::Seek(1));
    w[1].set_seeking(1);
    assert_eq!(send(&mut w[1], &mut lost.clone(), 50), MeshAction::Reset);
    // Ports that keep a flow on one queue (weir's own, a NIC's RSS) do not need it: the
    // worker that has no flow resets at once.
    let mut one = MeshEngine::new(1, 2, &MeshSettings { seek_unknown: false, ..settings }, shared);
    let p = parse_frame(&lost).unwrap();
    assert_eq!(one.handle(&mut lost, &p, false, &routes, 60), MeshAction::Reset);
}
