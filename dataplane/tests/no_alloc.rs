//! The forwarding path allocates nothing per packet: a counting allocator around a burst loop
//! on the memory backend. Allocation counts are deterministic, so this is a test, not a bench.

#![allow(unsafe_code)] // a global allocator can only be written with unsafe
use dataplane::buf::PacketBuf;
use dataplane::testing::{two_port_router, udp4_frame, SERVER_MAC};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; only counts on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn forwarding_bursts_allocate_nothing() {
    let (mut worker, queues, mut cache) = two_port_router(false);
    let burst = |worker: &mut dataplane::worker::Worker<_, _>, cache: &mut _| {
        for i in 0..32u16 {
            assert!(queues[0].inject_bytes(cache, &udp4_frame(1000 + i)));
        }
        assert_eq!(worker.poll_once(), 32);
        let mut n = 0;
        while let Some(b) = queues[1].take_sent() {
            assert_eq!(&b.data()[0..6], &SERVER_MAC);
            n += 1;
        }
        assert_eq!(n, 32);
    };
    // Warm-up: first-touch work (thread-locals, lazily sized state) is not per packet.
    for _ in 0..4 {
        burst(&mut worker, &mut cache);
    }
    let before = ALLOCS.with(Cell::get);
    for _ in 0..1000 {
        burst(&mut worker, &mut cache);
    }
    let allocs = ALLOCS.with(Cell::get) - before;
    assert_eq!(allocs, 0, "{allocs} allocations in 32 000 forwarded packets");
    assert_eq!(worker.pipeline().counters.forwarded, 1004 * 32);
}

/// The same on DPDK mbufs and ports: two `net_ring` vdevs (what is sent on one comes back in on
/// it), the worker forwarding from one to the other.
#[cfg(feature = "dpdk")]
#[test]
fn forwarding_bursts_on_dpdk_ports_allocate_nothing() {
    use dataplane::buf::Batch;
    use dataplane::dpdk::{
        DpdkQueue, Eal, EalConfig, Mbuf, MbufPool, Port, PortSettings, SocketId,
    };
    use dataplane::io::PacketIo;
    use dataplane::testing::router_over;
    use dataplane::worker::Worker;

    let eal = Eal::init(&EalConfig {
        vdevs: vec!["net_ring0".into(), "net_ring1".into()],
        hugepages: false,
        memory_mb: Some(128),
        log_level: Some("error".into()),
        extra: vec!["--no-telemetry".into()],
        ..EalConfig::default()
    })
    .expect("EAL");
    let pool = MbufPool::create(eal, "noalloc", 1024, 0, 2048 + 128, SocketId::ANY).unwrap();
    let settings = PortSettings {
        queues: 1,
        rx_descriptors: 256,
        tx_descriptors: 256,
        rss: false,
        promiscuous: true,
        mtu: 1500,
        mac: None,
    };
    let (_p0, q0) = Port::open(eal, "net_ring0", &settings, pool).unwrap();
    let (_p1, q1) = Port::open(eal, "net_ring1", &settings, pool).unwrap();
    let mut worker = router_over(q0.into_iter().chain(q1).collect(), pool);
    let mut inject: Batch<Mbuf> = Batch::new();
    let mut out: Batch<Mbuf> = Batch::new();
    let mut burst = |worker: &mut Worker<DpdkQueue, &'static MbufPool>| {
        for i in 0..32u16 {
            let mut m = pool.alloc().expect("mbuf");
            m.fill(&udp4_frame(1000 + i)).unwrap();
            inject.push(m);
        }
        assert_eq!(worker.ports_mut()[0].tx_burst(&mut inject), 32);
        assert_eq!(worker.poll_once(), 32);
        assert_eq!(worker.ports_mut()[1].rx_burst(&mut out), 32);
        assert!(out.iter().all(|m| m.data()[0..6] == SERVER_MAC));
        out.clear();
    };
    for _ in 0..4 {
        burst(&mut worker);
    }
    let before = ALLOCS.with(Cell::get);
    for _ in 0..1000 {
        burst(&mut worker);
    }
    let allocs = ALLOCS.with(Cell::get) - before;
    assert_eq!(allocs, 0, "{allocs} allocations in 32 000 packets forwarded on DPDK ports");
    assert_eq!(worker.pipeline().counters.forwarded, 1004 * 32);
    assert_eq!(pool.in_use(), 0);
}
