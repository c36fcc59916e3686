//! DPDK without hardware: the EAL once per test process (`--no-huge --no-pci --in-memory`),
//! `net_ring` vdevs (a transmit on queue q comes back on receive queue q) and a small private
//! mbuf pool per test.
#![cfg(feature = "dpdk")]

use dataplane::buf::{Batch, BufError, PacketBuf, RxMeta};
use dataplane::dpdk::{Eal, EalConfig, Mbuf, MbufPool, Port, PortSettings, SocketId};
use dataplane::io::PacketIo;
use dataplane::testing::{router_over, udp4_frame, PORT1_MAC, SERVER_MAC};
use std::sync::atomic::{AtomicU32, Ordering};

/// The vdevs every test in this process can use: one loopback ring port per test that opens a
/// port (a port is opened once).
const RINGS: usize = 6;

fn eal_config() -> EalConfig {
    EalConfig {
        vdevs: (0..RINGS).map(|i| format!("net_ring{i}")).collect(),
        hugepages: false,
        memory_mb: Some(256),
        log_level: Some("error".into()),
        extra: vec!["--no-telemetry".into()],
        ..EalConfig::default()
    }
}

fn eal() -> &'static Eal {
    Eal::init(&eal_config()).expect("EAL")
}

/// A private pool for one test.
fn pool(size: u32) -> &'static MbufPool {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!("test{}", N.fetch_add(1, Ordering::Relaxed));
    MbufPool::create(eal(), &name, size, 0, 2048 + 128, SocketId::ANY).expect("pool")
}

fn settings(queues: u16) -> PortSettings {
    PortSettings {
        queues,
        rx_descriptors: 256,
        tx_descriptors: 256,
        rss: true,
        promiscuous: true,
        mtu: 1500,
        mac: None,
    }
}

#[test]
fn the_eal_created_the_ring_vdevs_from_its_driver_directory() {
    let eal = eal();
    // net_ring is a separate shared library in Debian's DPDK, loaded from its driver directory
    // at EAL start: the port exists only if that worked. (Other tests close theirs, so the
    // count of available ports is not checked.)
    assert!(eal.ports_available() >= 1);
    let (port, _queues) = Port::open(eal, "net_ring5", &settings(1), pool(256)).unwrap();
    assert_eq!(port.driver(), "net_ring");
    let err = Port::open(eal, "net_nothing0", &settings(1), pool(256)).unwrap_err();
    assert!(err.to_string().contains("no DPDK port named `net_nothing0`"), "{err}");
    assert!(eal.args().iter().any(|a| a == "--no-huge"));
    // Initialising again with the same arguments returns the same EAL; other arguments fail.
    assert!(std::ptr::eq(eal, Eal::init(&eal_config()).unwrap()));
    let other = EalConfig { memory_mb: Some(128), ..eal_config() };
    let err = Eal::init(&other).unwrap_err();
    assert!(err.to_string().contains("already initialised"), "{err}");
}

#[test]
fn an_mbuf_is_a_packet_buffer_and_returns_to_its_pool() {
    let pool = pool(16);
    assert_eq!(pool.in_use(), 0);
    let mut m = pool.alloc().expect("mbuf");
    assert_eq!(pool.in_use(), 1);
    assert!(m.is_empty());
    let headroom = m.headroom();
    assert_eq!(headroom, 128, "RTE_PKTMBUF_HEADROOM");
    m.fill(&udp4_frame(7)).unwrap();
    assert_eq!(m.data(), &udp4_frame(7)[..]);
    // Prepend into the headroom and strip it again.
    m.prepend(20).unwrap();
    assert_eq!(m.len(), 80);
    assert_eq!(&m.data()[20..], &udp4_frame(7)[..]);
    m.adj(20).unwrap();
    assert_eq!(m.data(), &udp4_frame(7)[..]);
    // Bounds hold, and a failed operation changes nothing.
    assert_eq!(m.prepend(headroom + 1), Err(BufError::NoRoom));
    assert_eq!(m.adj(61), Err(BufError::NoRoom));
    assert_eq!(m.set_len(m.capacity() + 1), Err(BufError::NoRoom));
    assert_eq!(m.data(), &udp4_frame(7)[..]);
    assert_eq!(m.capacity(), 2048);
    m.set_meta(RxMeta { l4_csum_partial: true });
    assert!(m.meta().l4_csum_partial);
    m.set_meta(RxMeta::default());
    assert!(!m.meta().l4_csum_partial);
    drop(m);
    assert_eq!(pool.in_use(), 0, "dropping an Mbuf frees it");
}

#[test]
fn bulk_allocation_is_all_or_nothing_and_exhaustion_is_counted() {
    let pool = pool(40);
    let mut a: Batch<Mbuf> = Batch::new();
    assert_eq!(pool.alloc_bulk(&mut a, 32), 32);
    let mut b: Batch<Mbuf> = Batch::new();
    assert_eq!(pool.alloc_bulk(&mut b, 32), 0, "only 8 left");
    assert!(b.is_empty());
    assert_eq!(pool.exhausted(), 1);
    assert_eq!(pool.alloc_bulk(&mut b, 8), 8);
    assert!(pool.alloc().is_none());
    assert_eq!(pool.exhausted(), 2);
    drop(a);
    drop(b);
    assert_eq!(pool.available(), 40);
}

fn frames(n: u16) -> Batch<Mbuf> {
    let pool = pool(64);
    let mut b = Batch::new();
    for i in 0..n {
        let mut m = pool.alloc().unwrap();
        m.fill(&udp4_frame(1000 + i)).unwrap();
        b.push(m);
    }
    b
}

#[test]
fn a_ring_port_sends_and_receives_bursts_in_order() {
    let pool = pool(512);
    let (port, mut queues) = Port::open(eal(), "net_ring0", &settings(1), pool).unwrap();
    assert_eq!(port.driver(), "net_ring");
    assert!(port.link().up);
    let q = &mut queues[0];
    let mut out = frames(20);
    assert_eq!(q.tx_burst(&mut out), 20);
    assert!(out.is_empty());
    let mut back: Batch<Mbuf> = Batch::new();
    assert_eq!(q.rx_burst(&mut back), 20);
    for (i, m) in back.iter().enumerate() {
        assert_eq!(m.data(), &udp4_frame(1000 + u16::try_from(i).unwrap())[..], "frame {i}");
    }
    let s = q.stats();
    assert_eq!((s.tx_packets, s.rx_packets, s.tx_dropped, s.rx_dropped), (20, 20, 0, 0));
    // Bytes are the device's to count (reading every frame's length costs cycles per packet);
    // net_ring counts only frames.
    assert_eq!((s.tx_bytes, s.rx_bytes), (0, 0));
    let dev = port.stats().unwrap();
    assert_eq!((dev.ipackets, dev.opackets), (20, 20));
    assert!(port.xstats().unwrap().iter().any(|(name, _)| name == "rx_good_packets"));
}

#[test]
fn each_queue_pair_carries_its_own_frames() {
    let pool = pool(512);
    let (port, mut queues) = Port::open(eal(), "net_ring1", &settings(2), pool).unwrap();
    assert_eq!(port.queues(), 2);
    assert_eq!(queues.len(), 2);
    let mut a = frames(3);
    let mut b = frames(5);
    queues[0].tx_burst(&mut a);
    queues[1].tx_burst(&mut b);
    let mut back: Batch<Mbuf> = Batch::new();
    assert_eq!(queues[1].rx_burst(&mut back), 5);
    back.clear();
    assert_eq!(queues[0].rx_burst(&mut back), 3);
}

#[test]
fn a_full_transmit_queue_drops_and_counts_the_rest() {
    let pool = pool(512);
    let mut s = settings(1);
    // net_ring's ring holds what was sent until it is received: fill it.
    s.tx_descriptors = 64;
    let (_port, mut queues) = Port::open(eal(), "net_ring2", &s, pool).unwrap();
    let q = &mut queues[0];
    let mut sent = 0;
    for _ in 0..40 {
        let mut b = frames(32);
        sent += q.tx_burst(&mut b);
        assert!(b.is_empty(), "unsent frames are freed, not left in the batch");
    }
    let st = q.stats();
    assert_eq!(st.tx_packets, sent as u64);
    assert_eq!(st.tx_packets + st.tx_dropped, 40 * 32);
    assert!(st.tx_dropped > 0, "the ring never filled: {st:?}");
    // Drain: everything the ring took comes back, and every mbuf returns to the pool.
    let mut got = 0;
    let mut back: Batch<Mbuf> = Batch::new();
    loop {
        back.clear();
        let n = q.rx_burst(&mut back);
        if n == 0 {
            break;
        }
        got += n;
    }
    assert_eq!(got, sent);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn the_pipeline_forwards_on_mbufs() {
    let pool = pool(1024);
    let (_p0, q0) = Port::open(eal(), "net_ring3", &settings(1), pool).unwrap();
    let (_p1, q1) = Port::open(eal(), "net_ring4", &settings(1), pool).unwrap();
    let io = q0.into_iter().chain(q1).collect();
    let mut worker = router_over(io, pool);
    // Frames sent on port 0's ring come back in on port 0: the worker receives them there,
    // routes them out of port 1, whose ring brings them back for the test to read.
    let mut batch = Batch::new();
    for i in 0..32u16 {
        let mut m = pool.alloc().unwrap();
        m.fill(&udp4_frame(2000 + i)).unwrap();
        batch.push(m);
    }
    assert_eq!(worker.ports_mut()[0].tx_burst(&mut batch), 32);
    assert_eq!(worker.poll_once(), 32);
    let mut out: Batch<Mbuf> = Batch::new();
    assert_eq!(worker.ports_mut()[1].rx_burst(&mut out), 32);
    for m in &out {
        let f = m.data();
        assert_eq!(&f[0..6], &SERVER_MAC);
        assert_eq!(&f[6..12], &PORT1_MAC);
        assert_eq!(f[14 + 8], 63, "TTL decremented");
        assert_eq!(stack::checksum::checksum(&f[14..34]), 0, "IPv4 checksum valid");
    }
    assert_eq!(worker.pipeline().counters.forwarded, 32);
    drop(out);
    drop(worker);
    assert_eq!(pool.in_use(), 0, "every mbuf went back to the pool");
}
