//! Every frame gets exactly one verdict, whatever it contains: hostile and mutated frames go
//! through the whole pipeline without a panic, and the counters account for each of them.

use dataplane::fib::Fib;
use dataplane::mempool::{Mempool, MempoolConfig, PoolBuf};
use dataplane::neigh::NeighborBus;
use dataplane::pipeline::{Egress, Pipeline, PipelineConfig, Verdict};
use dataplane::testing::{
    arp_frame, counted_once, echo4_frame, icmp6_frame, l4_frame_v4, router_ports, udp4_frame,
    Tally, CLIENT_MAC, PORT0_MAC,
};
use proptest::prelude::*;
use std::sync::Arc;

struct Sink {
    pool: &'static Mempool,
    sent: usize,
}

impl Egress<PoolBuf> for Sink {
    fn send(&mut self, _port: u8, _pkt: PoolBuf) {
        self.sent += 1;
    }
    fn alloc(&mut self) -> Option<PoolBuf> {
        self.pool.alloc()
    }
}

fn pipeline() -> Pipeline<PoolBuf> {
    let ports = router_ports(1500);
    let fib = Arc::new(Fib::build(ports, &[]).unwrap());
    let statics = [
        ("198.18.2.2".parse().unwrap(), 1, [2, 0, 0, 0, 0, 0x22]),
        ("2001:db8:2::2".parse().unwrap(), 1, [2, 0, 0, 0, 0, 0x22]),
    ];
    Pipeline::new(0, fib, NeighborBus::new(1, 4), PipelineConfig::default(), &statics)
}

fn seeds() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = stack::fixtures::ALL.iter().map(|(_, f)| f.to_vec()).collect();
    v.push(udp4_frame(5).to_vec());
    // What this router answers, forwards on its general path, or holds.
    let weir6: std::net::Ipv6Addr = "2001:db8:1::1".parse().unwrap();
    let client6: std::net::Ipv6Addr = "2001:db8:1::2".parse().unwrap();
    v.push(echo4_frame([198, 18, 1, 2], [198, 18, 1, 1], false));
    v.push(arp_frame(1, CLIENT_MAC, [198, 18, 1, 2], [0; 6], [198, 18, 1, 1]));
    v.push(icmp6_frame(
        client6,
        "2001:db8:2::9".parse().unwrap(),
        64,
        vec![128, 0, 0, 0, 0, 1, 0, 1],
    ));
    v.push(icmp6_frame(client6, weir6, 64, vec![128, 0, 0, 0, 0, 1, 0, 1]));
    v.push(icmp6_frame(
        client6,
        "2001:db8:2::2".parse().unwrap(),
        64,
        vec![128, 0, 0, 0, 0, 2, 0, 1],
    ));
    let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(&weir6.octets());
    ns.extend_from_slice(&[1, 1]);
    ns.extend_from_slice(&CLIENT_MAC);
    v.push(icmp6_frame(client6, weir6, 255, ns));
    v.push(l4_frame_v4([198, 18, 1, 2], 1000, [198, 18, 2, 9], 80, Some(0x02)));
    v.push(l4_frame_v4([198, 18, 1, 2], 1000, [198, 18, 2, 2], 80, Some(0x02)));
    for f in &mut v {
        // Address every seed to weir's MAC so it gets past L2.
        f[0..6].copy_from_slice(&PORT0_MAC);
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]
    #[test]
    fn every_frame_gets_one_verdict(
        frames in proptest::collection::vec(
            (0usize..24, proptest::collection::vec((0usize..128, any::<u8>()), 0..6), 0usize..40),
            1..40,
        ),
    ) {
        let pool = Mempool::new(MempoolConfig { buffers: 256, data_room: 2048, headroom: 64 }).unwrap();
        let mut p = pipeline();
        let mut out = Sink { pool, sent: 0 };
        let seeds = seeds();
        for (i, (seed, edits, cut)) in frames.iter().enumerate() {
            let mut f = seeds[*seed % seeds.len()].clone();
            for &(at, v) in edits {
                if at < f.len() {
                    f[at] = v;
                }
            }
            f.truncate(f.len().saturating_sub(*cut));
            let mut b = pool.alloc().unwrap();
            b.fill(&f).unwrap();
            let before = Tally::of(&p);
            let v = p.process(b, u8::from(i % 3 == 0), 1_000 + i as u64, &mut out);
            if let Verdict::Forward(port) = v {
                prop_assert!(port < 2);
            }
            prop_assert!(!matches!(v, Verdict::Handoff(_)), "no mesh here, so no handoff");
            if let Err(e) = counted_once(&before, &Tally::of(&p), v) {
                prop_assert!(false, "frame {:02x?}: {}", f, e);
            }
        }
    }
}
