//! Every frame gets exactly one verdict, whatever it contains: hostile and mutated frames go
//! through the whole pipeline without a panic, and the counters account for each of them.

use dataplane::fib::Fib;
use dataplane::mempool::{Mempool, MempoolConfig, PoolBuf};
use dataplane::neigh::NeighborBus;
use dataplane::pipeline::{DropReason, Egress, Pipeline, PipelineConfig, Verdict};
use dataplane::testing::{router_ports, udp4_frame, PORT0_MAC};
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
    let statics = [("198.18.2.2".parse().unwrap(), 1, [2, 0, 0, 0, 0, 0x22])];
    Pipeline::new(0, fib, NeighborBus::new(1, 4), PipelineConfig::default(), &statics)
}

fn seeds() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = stack::fixtures::ALL.iter().map(|(_, f)| f.to_vec()).collect();
    v.push(udp4_frame(5).to_vec());
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
            (0usize..12, proptest::collection::vec((0usize..128, any::<u8>()), 0..6), 0usize..40),
            1..40,
        ),
    ) {
        let pool = Mempool::new(MempoolConfig { buffers: 256, data_room: 2048, headroom: 64 }).unwrap();
        let mut p = pipeline();
        let mut out = Sink { pool, sent: 0 };
        let seeds = seeds();
        let (mut fwd, mut held, mut dropped, mut consumed) = (0u64, 0u64, 0u64, 0u64);
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
            match p.process(b, u8::from(i % 3 == 0), 1_000 + i as u64, &mut out) {
                Verdict::Forward(port) => { prop_assert!(port < 2); fwd += 1 }
                Verdict::Held => held += 1,
                Verdict::Drop(_) => dropped += 1,
                Verdict::Consumed => consumed += 1,
                Verdict::Handoff(_) => prop_assert!(false, "no mesh here, so no handoff"),
            }
        }
        prop_assert_eq!(fwd + held + dropped + consumed, frames.len() as u64);
        let c = &p.counters;
        let counted: u64 = c.drops.iter().sum::<u64>() - c.drops[DropReason::PoolExhausted as usize];
        prop_assert_eq!(counted, dropped);
        prop_assert_eq!(c.consumed, consumed);
        prop_assert_eq!(p.pending() as u64, held);
    }
}
