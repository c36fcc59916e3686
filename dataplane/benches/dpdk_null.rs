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
//! Prints: `weir dpdk-null ... mpps=... cycles_per_packet=...` (median of 5 runs, TSC cycles):
//! the queue wrapper alone, with the stamp, IPv4 forwarding, and L4 DNAT translation both ways
//! (on two more net_null vdevs).
//! `WEIR_BENCH_SECONDS` sets each run's length (default 2).

use dataplane::buf::{Batch, PacketBuf};
use dataplane::dpdk::{DpdkQueue, Eal, EalConfig, Mbuf, MbufPool, Port, PortSettings, SocketId};
use dataplane::io::{PacketIo, PortStats};
use dataplane::mesh::engine::{MeshEngine, MeshSettings, SharedMesh};
use dataplane::mesh::flow::{FlowTimeouts, WhenFull};
use dataplane::mesh::model::{
    proto, Balance, ClusterSpec, EndpointSpec, MeshCapacity, MeshSnapshot, Mode, OnEndpointGone,
    Policy, ServiceSpec,
};
use dataplane::testing::{
    router_over, router_over_with, udp4_frame, udp4_frame_between, udp4_frame_to_client,
    CLIENT_MAC, PORT0_MAC, PORT1_MAC, SERVER_MAC,
};
use std::net::IpAddr;
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
        vdevs: (0..4).map(|i| format!("net_null{i},size=64,copy=0")).collect(),
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

    // The L4 mesh on two more net_null ports, both directions as testpmd 5tswap: port 2
    // receives a client's datagrams to a DNAT service (198.19.0.1:80, one endpoint,
    // 198.18.2.2:8000), port 3 the endpoint's replies to the client; each is translated and
    // routed out of the other port.
    let svc = ServiceSpec {
        name: "s".into(),
        vip: IpAddr::from([198, 19, 0, 1]),
        port: 80,
        proto: proto::UDP,
        cluster: "c".into(),
        mode: Mode::Dnat,
    };
    let cluster = ClusterSpec {
        name: "c".into(),
        policy: Policy::Maglev,
        maglev_table_size: None,
        on_endpoint_gone: OnEndpointGone::Drain,
        balance: Balance::default(),
        connect_timeout_ns: None,
        endpoints: vec![EndpointSpec {
            addr: IpAddr::from([198, 18, 2, 2]),
            port: 8000,
            weight: 1,
            healthy: true,
            priority: 0,
            group: 0,
        }],
    };
    let cap = MeshCapacity { services: 16, clusters: 16, endpoints: 16 };
    let shared = SharedMesh::new(
        MeshSnapshot::build(&[svc], &[cluster], cap, None, |_| true).unwrap(),
        16,
        16,
        1,
    );
    let ms = MeshSettings {
        flow_capacity: 1024,
        timeouts: FlowTimeouts::default(),
        when_full: WhenFull::DropNew,
        snat_ports: (20000, 59999),
        endpoints: 16,
        clusters: 16,
        reset_unknown: true,
        seek_unknown: false,
    };
    let engine = MeshEngine::new(0, 1, &ms, shared);
    let with_ports = |mut f: [u8; 60], sport: u16, dport: u16| {
        // UDP checksum 0 (none): ports can be set as they are.
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    };
    let to_vip = with_ports(
        udp4_frame_between(PORT0_MAC, CLIENT_MAC, [198, 18, 1, 2], [198, 19, 0, 1], 1000),
        1000,
        80,
    );
    let reply = with_ports(
        udp4_frame_between(PORT1_MAC, SERVER_MAC, [198, 18, 2, 2], [198, 18, 1, 2], 8000),
        8000,
        1000,
    );
    let (_p2, q2) = Port::open(eal, "net_null2", &settings, pool).unwrap();
    let (_p3, q3) = Port::open(eal, "net_null3", &settings, pool).unwrap();
    let io = vec![
        Stamped { q: q2.into_iter().next().unwrap(), frame: to_vip },
        Stamped { q: q3.into_iter().next().unwrap(), frame: reply },
    ];
    let mut worker = router_over_with(io, pool, |p| p.with_mesh(engine));
    run(&mut worker, Duration::from_millis(500));
    let mut samples: Vec<(f64, f64)> =
        (0..5).map(|_| run(&mut worker, Duration::from_secs(secs))).collect();
    let c = &worker.pipeline().counters;
    let dropped: u64 = c.drops.iter().sum();
    assert_eq!(dropped, 0, "the figure must measure translation, not drops: {:?}", c.drops);
    let m = worker.pipeline().mesh().map(|m| m.counters).unwrap_or_default();
    assert!(m.forward > 0 && m.reverse > 0, "both directions translated: {m:?}");
    samples.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (mpps, cpp) = samples[2];
    println!(
        "weir dpdk-null l4-dnat mpps={mpps:.2} cycles_per_packet={cpp:.1} (median of 5 runs of {secs} s; \
         cycles/packet: {:.1?})",
        samples.iter().map(|s| s.1).collect::<Vec<_>>()
    );
}

/// Polls `worker` for `d`: (Mpps, TSC cycles per packet).
fn run(
    worker: &mut dataplane::worker::Worker<Stamped, &'static MbufPool>,
    d: Duration,
) -> (f64, f64) {
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
}
