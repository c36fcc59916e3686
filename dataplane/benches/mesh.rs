//! The L4 mesh's cost per packet on the memory backend, and how it scales.
//!
//! One worker over two null ports (as `pipeline`): port 0 receives UDP frames from clients to
//! service VIPs, which the mesh balances over a cluster of four endpoints (DNAT: parse, flow
//! lookup or insert, pick, rewrite with incremental checksums) and routes out of port 1. Each
//! scenario first sends every frame once (opening every flow), then measures TSC cycles per
//! packet over whole passes of its frames: with S services and F flows, frames go round-robin
//! over the F flows, spread over the S services.
//!
//! Prints one line per scenario: `mesh services=S flows=F mpps=M cycles_per_packet=C (median
//! of 5)`.
//! `WEIR_BENCH_FLOWS_MAX` caps the largest flow count (default 1 000 000); `WEIR_BENCH_ONLY=N`
//! runs only the N-th scenario (0 to 3; 4 is one IPv6 flow, which the IPv4 fast path does not
//! take).
//! `WEIR_BENCH_PACKETS` sets the least number of packets a round measures (300 000).
//! `WEIR_BENCH_SCRAPE=0` runs each poll as a worker's loop does (the control thread's requests
//! served between bursts, counters published every 16 polls); `WEIR_BENCH_SCRAPE=1` does the
//! same while a thread on another core does what the admin API does for a client that scrapes
//! `/metrics` and pages through `/flows` every 100 ms: it reads every counter (worker, port,
//! drop reason, service, endpoint) and asks the worker for the next page of 1000 flows.

use dataplane::mesh::engine::{MeshEngine, MeshSettings, SharedMesh};
use dataplane::mesh::flow::{FlowTimeouts, WhenFull};
use dataplane::mesh::model::{
    proto, Balance, ClusterSpec, EndpointSpec, MeshCapacity, MeshSnapshot, Mode, OnEndpointGone,
    Policy, ServiceSpec,
};
use dataplane::testing::{null_router_with, udp4_frame_between, CLIENT_MAC, PORT0_MAC};
use std::net::{IpAddr, Ipv6Addr};

fn vip(i: u32) -> [u8; 4] {
    [198, 19, u8::try_from((i >> 8) & 0xff).unwrap_or(0), u8::try_from(i & 0xff).unwrap_or(0)]
}

/// The IPv6 scenario's VIP.
const VIP6: [u16; 8] = [0x2001, 0xdb8, 0x19, 0, 0, 0, 0, 1];

/// A UDP datagram from the client (2001:db8:1::2) to the IPv6 VIP, port 80, checksum valid.
fn udp6_frame() -> Vec<u8> {
    let (src, dst) = (Ipv6Addr::from([0x2001, 0xdb8, 1, 0, 0, 0, 0, 2]), Ipv6Addr::from(VIP6));
    let mut udp = vec![0u8; 26];
    udp[0..2].copy_from_slice(&1024u16.to_be_bytes());
    udp[2..4].copy_from_slice(&80u16.to_be_bytes());
    udp[4..6].copy_from_slice(&26u16.to_be_bytes());
    let c = stack::checksum::l4_checksum_v6(src, dst, 17, &udp);
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    let mut f = PORT0_MAC.to_vec();
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 26, 17, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&udp);
    f
}

/// (cycles per packet, Mpps), each the median of 5 rounds. `v6`: one IPv6 service and flow
/// instead (`services` and `flows` must be 1).
fn scenario(services: u32, flows: u32, v6: bool) -> (f64, f64) {
    let svc: Vec<ServiceSpec> = (0..services)
        .map(|i| ServiceSpec {
            name: format!("s{i}"),
            vip: if v6 { IpAddr::from(VIP6) } else { IpAddr::from(vip(i)) },
            port: u16::try_from(80 + i / 65536).unwrap_or(80),
            proto: proto::UDP,
            cluster: "c".into(),
            mode: Mode::Dnat,
        })
        .collect();
    let cluster = ClusterSpec {
        name: "c".into(),
        policy: Policy::Maglev,
        maglev_table_size: None,
        on_endpoint_gone: OnEndpointGone::Drain,
        balance: Balance::default(),
        connect_timeout_ns: None,
        endpoints: (0..4)
            .map(|p| EndpointSpec {
                addr: if v6 {
                    IpAddr::from([0x2001, 0xdb8, 2, 0, 0, 0, 0, 2])
                } else {
                    IpAddr::from([198, 18, 2, 2])
                },
                port: 8000 + p,
                weight: 1,
                healthy: true,
                priority: 0,
                group: 0,
            })
            .collect(),
    };
    let cap = MeshCapacity { services: 1 << 20, clusters: 16, endpoints: 64 };
    let snap = MeshSnapshot::build(&svc, &[cluster], cap, None, |_| true).expect("mesh");
    // Counters for every service, as weir sizes them (the worker pays for counting them).
    let shared = SharedMesh::new(snap, 64, usize::try_from(services).unwrap_or(1), 1);
    let settings = MeshSettings {
        flow_capacity: usize::try_from(flows).unwrap_or(1)
            + usize::try_from(flows / 4).unwrap_or(0)
            + 64,
        timeouts: FlowTimeouts::default(),
        when_full: WhenFull::DropNew,
        snat_ports: (20000, 59999),
        endpoints: 64,
        clusters: 16,
        reset_unknown: true,
        seek_unknown: false,
    };
    let engine = MeshEngine::new(0, 1, &settings, std::sync::Arc::clone(&shared));
    // Flow i: client 198.18.128.0/17 address and port from i, to service i % S.
    let frames: Vec<Vec<u8>> = (0..flows)
        .map(|i| {
            let c = i / 60000;
            let src = [
                198,
                18,
                128 + u8::try_from((c >> 8) & 0x7f).unwrap_or(0),
                u8::try_from(c & 0xff).unwrap_or(0),
            ];
            let s = i % services;
            let mut f = udp4_frame_between(
                PORT0_MAC,
                CLIENT_MAC,
                src,
                vip(s),
                u16::try_from(1024 + i % 60000).unwrap_or(1024),
            )
            .to_vec();
            // Destination port: the service's (the frame's UDP checksum is 0, none).
            let dport = u16::try_from(80 + s / 65536).unwrap_or(80);
            f[36..38].copy_from_slice(&dport.to_be_bytes());
            f
        })
        .collect();
    let frames = if v6 { vec![udp6_frame()] } else { frames };
    let mut worker = null_router_with(frames, |p| p.with_mesh(engine));
    let passes = |n: u64| n.div_ceil(32);
    // Open every flow.
    for _ in 0..passes(u64::from(flows)) + 8 {
        worker.poll_once();
    }
    let opened = worker.pipeline().mesh().map_or(0, |m| m.counters.flows_opened);
    assert_eq!(opened, u64::from(flows), "every flow opened");
    // Measure over at least 300 000 packets (or `WEIR_BENCH_PACKETS`), whole passes.
    let least: u64 =
        std::env::var("WEIR_BENCH_PACKETS").ok().and_then(|v| v.parse().ok()).unwrap_or(300_000);
    let polls = passes(u64::from(flows)).max(least / 32);
    let mut samples = Vec::new();
    let mut rates = Vec::new();
    let control = std::env::var("WEIR_BENCH_SCRAPE").ok();
    // With a scraper: pairs of runs, one quiet and one scraped, so that the machine's drift
    // between runs cancels; the scraper thread lives through all of them and works only while
    // `scraping` is set.
    let scraping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = (control.as_deref() == Some("1")).then(|| {
        let stats = std::sync::Arc::clone(worker.stats());
        let shared = std::sync::Arc::clone(&shared);
        let (scraping, done) = (std::sync::Arc::clone(&scraping), std::sync::Arc::clone(&done));
        std::thread::spawn(move || scrape(&stats, &shared, &scraping, &done))
    });
    let runs = if scraper.is_some() { 30 } else { 5 };
    let mut scraped = Vec::new();
    let mut diffs = Vec::new();
    for run in 0..runs {
        let scrape_this = scraper.is_some() && run % 2 == 1;
        scraping.store(scrape_this, std::sync::atomic::Ordering::Relaxed);
        let t0 = dataplane::cycles::now();
        let wall = std::time::Instant::now();
        let mut packets = 0u64;
        if control.is_some() {
            for i in 0..polls {
                packets += worker.poll_once() as u64;
                worker.serve_requests();
                if i % 16 == 15 {
                    worker.publish();
                }
            }
        } else {
            for _ in 0..polls {
                packets += worker.poll_once() as u64;
            }
        }
        let cpp = (dataplane::cycles::now() - t0) as f64 / packets as f64;
        if scrape_this {
            diffs.push(cpp - samples.last().copied().unwrap_or(cpp));
            scraped.push(cpp);
        } else {
            samples.push(cpp);
            rates.push(packets as f64 / wall.elapsed().as_secs_f64() / 1e6);
        }
    }
    let c = &worker.pipeline().counters;
    let dropped: u64 = c.drops.iter().sum();
    assert_eq!(dropped, 0, "the figure must measure translation, not drops: {:?}", c.drops);
    assert_eq!(
        worker.pipeline().mesh().map_or(0, |m| m.flows().len()),
        usize::try_from(flows).unwrap_or(0)
    );
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(s) = scraper {
        let (scrapes, pages) = s.join().expect("scraper");
        assert!(scrapes > 0 && pages > 0, "the scraper did nothing");
        let mid = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (quiet, busy) = (mid(&mut samples.clone()), mid(&mut scraped));
        println!(
            "  scraped every 100 ms ({scrapes} scrapes, {pages} flow pages): quiet median \
             {quiet:.1}, scraped median {busy:.1}, difference in pairs median {:+.1} \
             cycles/packet ({:+.1}%)",
            mid(&mut diffs),
            100.0 * mid(&mut diffs.clone()) / quiet
        );
    }
    samples.sort_by(f64::total_cmp);
    rates.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], rates[rates.len() / 2])
}

/// What the admin API does for a client that scrapes `/metrics` and pages `/flows` every
/// 100 ms, on a core of its own, while `on` is set, until `done`: (scrapes, flow pages
/// answered).
fn scrape(
    stats: &dataplane::worker::WorkerStats,
    shared: &SharedMesh,
    on: &std::sync::atomic::AtomicBool,
    done: &std::sync::atomic::AtomicBool,
) -> (u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    if let Some(core) = core_affinity::get_core_ids().and_then(|ids| ids.into_iter().next()) {
        core_affinity::set_for_current(core);
    }
    let (mut scrapes, mut pages, mut cursor) = (0u64, 0u64, 0u32);
    while !done.load(Relaxed) {
        if !on.load(Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(1));
            continue;
        }
        let mut sum = 0u64;
        sum += stats.counters.values().map(|(_, v)| v).sum::<u64>();
        sum += stats.drops.iter().map(|d| d.load(Relaxed)).sum::<u64>();
        for p in stats.ports.iter() {
            sum += p.snapshot().values().map(|(_, v)| v).sum::<u64>();
        }
        let snap = shared.load();
        for s in &snap.service_list {
            sum += shared.service_totals(s.id).packets;
        }
        for e in snap.endpoints() {
            sum += shared.active_flows(e.id);
        }
        std::hint::black_box(sum);
        stats.flow_desk.ask(cursor, dataplane::worker::FLOW_PAGE_MAX, Default::default());
        let asked = std::time::Instant::now();
        while !done.load(Relaxed) && asked.elapsed() < std::time::Duration::from_secs(1) {
            if let Some((_, next)) = stats.flow_desk.answer() {
                pages += 1;
                cursor = next.unwrap_or(0);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        scrapes += 1;
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    (scrapes, pages)
}

fn main() {
    if let Some(core) = core_affinity::get_core_ids().and_then(|ids| ids.into_iter().last()) {
        core_affinity::set_for_current(core);
    }
    let max: u32 = std::env::var("WEIR_BENCH_FLOWS_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let only: Option<usize> = std::env::var("WEIR_BENCH_ONLY").ok().and_then(|v| v.parse().ok());
    let mut results = Vec::new();
    for (i, (services, flows)) in
        [(1, 1), (1000, 1000), (100_000, 100_000), (1, max)].into_iter().enumerate()
    {
        if only.is_some_and(|o| o != i) {
            continue;
        }
        let (cpp, mpps) = scenario(services, flows, false);
        println!(
            "mesh services={services} flows={flows} mpps={mpps:.2} cycles_per_packet={cpp:.1} (median)"
        );
        results.push(cpp);
    }
    if !results.is_empty() {
        let lo = results.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = results.iter().copied().fold(0.0, f64::max);
        println!("mesh scale: largest / smallest = {:.2}", hi / lo);
    }
    if only.is_none_or(|o| o == 4) {
        let (cpp, mpps) = scenario(1, 1, true);
        println!("mesh ipv6 services=1 flows=1 mpps={mpps:.2} cycles_per_packet={cpp:.1} (median)");
    }
}
