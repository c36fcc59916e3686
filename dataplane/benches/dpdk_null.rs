//! weir's IPv4 forwarding on DPDK ports: one worker between two `net_null` vdevs, the setup of
//! `../shared/bench/null-anchor.sh` (testpmd on `net_null0,size=64,copy=0` and `net_null1`).
//!
//! net_null hands over mbufs with 64 bytes of whatever the buffer held (copy=0) or of zeros
//! (copy=1); weir parses and routes what it receives, so each received mbuf is stamped with a
//! 60-byte IPv4/UDP frame first (port 0: client to server; port 1: server to client, so both
//! directions forward, as testpmd forwards both). The stamp is a 60-byte copy per packet that
//! testpmd with copy=0 does not do; testpmd with copy=1 copies 64 bytes per packet, and
//! `bench/run.sh` measures that too. Then the worker's own loop runs: rx burst, parse and
//! header checksum check, DIR-24-8 route, neighbor lookup, TTL and checksum update, MAC rewrite,
//! tx burst (net_null frees).
//!
//! Prints: `weir dpdk-null mpps=... cycles_per_packet=...` (median of 5 runs, TSC cycles).
//! `WEIR_BENCH_SECONDS` sets each run's length (default 2).

use dataplane::buf::{Batch, PacketBuf};
use dataplane::dpdk::{DpdkQueue, Eal, EalConfig, Mbuf, MbufPool, Port, PortSettings, SocketId};
use dataplane::io::{PacketIo, PortStats};
use dataplane::testing::{router_over, udp4_frame, udp4_frame_to_client};
use std::time::{Duration, Instant};

/// A net_null queue whose received mbufs carry a real frame.
struct Stamped {
    q: DpdkQueue,
    frame: [u8; 60],
}

impl PacketIo for Stamped {
    type Buf = Mbuf;

    #[inline]
    fn rx_burst(&mut self, batch: &mut Batch<Mbuf>) -> usize {
        let first = batch.len();
        let n = self.q.rx_burst(batch);
        for m in &mut batch[first..] {
            // Cannot fail: 60 bytes fit every mbuf of the pool. A fixed-size copy: four
            // vector stores, no memcpy call.
            let _ = m.set_len(60);
            if let Some(d) = m.data_mut().first_chunk_mut::<60>() {
                *d = self.frame;
            }
        }
        n
    }

    #[inline]
    fn tx_burst(&mut self, batch: &mut Batch<Mbuf>) -> usize {
        self.q.tx_burst(batch)
    }

    fn stats(&self) -> PortStats {
        self.q.stats()
    }
}

fn main() {
    // Pinned like testpmd's forwarding lcore in null-anchor.sh (core 1).
    let core = core_affinity::get_core_ids().and_then(|ids| ids.into_iter().last());
    let eal = Eal::init(&EalConfig {
        vdevs: vec!["net_null0,size=64,copy=0".into(), "net_null1,size=64,copy=0".into()],
        hugepages: false,
        memory_mb: Some(512),
        log_level: Some("notice".into()),
        extra: vec!["--no-telemetry".into()],
        ..EalConfig::default()
    })
    .expect("EAL");
    if let Some(core) = core {
        core_affinity::set_for_current(core);
    }
    let _lcore = eal.register_thread().expect("lcore");
    let pool = MbufPool::create(eal, "bench", 16384, 256, 2048 + 128, SocketId::ANY).unwrap();
    let settings = PortSettings {
        queues: 1,
        rx_descriptors: 1024,
        tx_descriptors: 1024,
        rss: false,
        promiscuous: true,
        mtu: 1500,
        mac: None,
    };
    let (_p0, q0) = Port::open(eal, "net_null0", &settings, pool).unwrap();
    let (_p1, q1) = Port::open(eal, "net_null1", &settings, pool).unwrap();
    let mut io = vec![
        Stamped { q: q0.into_iter().next().unwrap(), frame: udp4_frame(1000) },
        Stamped { q: q1.into_iter().next().unwrap(), frame: udp4_frame_to_client(1000) },
    ];
    let secs: u64 =
        std::env::var("WEIR_BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);

    // The same ports without the pipeline, each received burst sent out of the other port:
    // what receiving and sending cost through weir's queue wrapper (testpmd io's work), then
    // with the stamp added.
    for stamp in [false, true] {
        let mut batch: Batch<Mbuf> = Batch::new();
        let mut samples = Vec::new();
        for _ in 0..3 {
            let t0 = Instant::now();
            let c0 = dataplane::cycles::now();
            let mut packets = 0u64;
            while t0.elapsed() < Duration::from_secs(1) {
                for _ in 0..1024 {
                    for (from, to) in [(0, 1), (1, 0)] {
                        packets += if stamp {
                            io[from].rx_burst(&mut batch)
                        } else {
                            io[from].q.rx_burst(&mut batch)
                        } as u64;
                        io[to].q.tx_burst(&mut batch);
                    }
                }
            }
            samples.push((dataplane::cycles::now() - c0) as f64 / packets as f64);
        }
        samples.sort_by(f64::total_cmp);
        println!(
            "weir dpdk-null {} cycles_per_packet={:.1} (median of 3 runs of 1 s)",
            if stamp { "io+stamp" } else { "io" },
            samples[1]
        );
    }

    let mut worker = router_over(io, pool);

    let run = |worker: &mut dataplane::worker::Worker<Stamped, &'static MbufPool>, d: Duration| {
        let t0 = Instant::now();
        let c0 = dataplane::cycles::now();
        let mut packets = 0u64;
        while t0.elapsed() < d {
            for _ in 0..1024 {
                packets += worker.poll_once() as u64;
            }
        }
        let cycles = dataplane::cycles::now() - c0;
        let secs = t0.elapsed().as_secs_f64();
        (packets as f64 / secs / 1e6, cycles as f64 / packets as f64)
    };
    run(&mut worker, Duration::from_millis(500));
    let mut samples: Vec<(f64, f64)> =
        (0..5).map(|_| run(&mut worker, Duration::from_secs(secs))).collect();
    let c = &worker.pipeline().counters;
    let dropped: u64 = c.drops.iter().sum();
    assert_eq!(dropped, 0, "the figure must measure forwarding, not drops: {:?}", c.drops);
    samples.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (mpps, cpp) = samples[2];
    println!(
        "weir dpdk-null ipv4-forward mpps={mpps:.2} cycles_per_packet={cpp:.1} (median of 5 runs of {secs} s; \
         cycles/packet: {:.1?})",
        samples.iter().map(|s| s.1).collect::<Vec<_>>()
    );
}
