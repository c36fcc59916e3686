//! Pipeline cost on the memory backend, and the IPv4 LPM choice.
//!
//! `pipeline/ipv4_forward_burst32`: one `poll_once` of a worker over two null ports: 32 frames
//! received (allocated and copied, as DPDK's net_null does), parsed, routed, neighbor-resolved,
//! TTL and checksum rewritten, MAC rewritten and sent (freed). Also prints cycles per packet
//! measured with the TSC over the same loop. `WEIR_BENCH_CAPTURE=rx` (or `tx`) then measures
//! what a capture whose filter matches none of the frames costs (see `capture_cost`).
//! `lpm/*`: DIR-24-8 against the `prefix-trie` crate on the same route set and addresses.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::lpm::Dir24_8;
use dataplane::testing::{null_router, udp4_frame};
use ipnet::Ipv4Net;
use prefix_trie::PrefixMap;
use std::hint::black_box;
use std::net::Ipv4Addr;

fn pipeline(c: &mut Criterion) {
    // Pinned like testpmd's forwarding lcore in null-anchor.sh (core 1), so both are measured
    // on the same core without migrations.
    if let Some(core) = core_affinity::get_core_ids().and_then(|ids| ids.into_iter().last()) {
        core_affinity::set_for_current(core);
    }
    let frames: Vec<Vec<u8>> = (0..32u16).map(|i| udp4_frame(1000 + i).to_vec()).collect();
    let mut worker = null_router(frames);
    // Cycles per packet over a fixed run: rx (buffer allocation and a 60-byte copy, as
    // net_null), the pipeline, tx (free), as testpmd's figure on net_null counts them.
    let rounds: u64 =
        std::env::var("WEIR_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(300_000);
    let mut samples = Vec::new();
    for _ in 0..5 {
        let t0 = dataplane::cycles::now();
        let mut packets = 0u64;
        for _ in 0..rounds {
            packets += worker.poll_once() as u64;
        }
        samples.push((dataplane::cycles::now() - t0) as f64 / packets as f64);
    }
    samples.sort_by(f64::total_cmp);
    println!(
        "pipeline ipv4_forward_burst32: median {:.1} cycles/packet (TSC; 5 runs: {:.1?})",
        samples[2], samples
    );
    assert_eq!(
        worker.pipeline().counters.forwarded,
        5 * rounds * 32,
        "every frame must be forwarded, or the figure measures drops"
    );
    if let Ok(dir) = std::env::var("WEIR_BENCH_CAPTURE") {
        capture_cost(&mut worker, &dir, rounds);
    }
    assert!(worker.stats().capture.take().is_none(), "the capture took a frame");
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(32));
    g.bench_function("ipv4_forward_burst32", |b| b.iter(|| black_box(worker.poll_once())));
    g.finish();
}

/// What an armed capture whose filter matches none of the frames (192.0.2.0/24) costs, on the
/// port's received (`rx`) or sent (`tx`) frames: runs of the same worker disarmed and armed,
/// taken in pairs so that the machine's drift between runs cancels; prints the median
/// difference.
fn capture_cost(
    worker: &mut dataplane::worker::Worker<
        dataplane::io::memory::NullPort,
        dataplane::mempool::PoolCache,
    >,
    dir: &str,
    rounds: u64,
) {
    use dataplane::capture::{CaptureFilter, Direction};
    let (port, direction) = match dir {
        "rx" => (0, Direction::Rx),
        "tx" => (1, Direction::Tx),
        other => panic!("WEIR_BENCH_CAPTURE: rx or tx, not {other}"),
    };
    let filter = CaptureFilter {
        port,
        direction,
        prefix: Some((std::net::IpAddr::from([192, 0, 2, 0]), 24)),
        l4_port: None,
        protocol: None,
        snaplen: 256,
    };
    let mut run = |armed: bool| {
        if armed {
            worker.stats().capture.arm(filter);
        } else {
            worker.stats().capture.disarm();
        }
        let t0 = dataplane::cycles::now();
        let mut packets = 0u64;
        for _ in 0..rounds / 4 {
            packets += worker.poll_once() as u64;
        }
        (dataplane::cycles::now() - t0) as f64 / packets as f64
    };
    let (mut off, mut on, mut diff) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..21 {
        let (a, b) = (run(false), run(true));
        off.push(a);
        on.push(b);
        diff.push(b - a);
    }
    worker.stats().capture.disarm();
    assert!(worker.stats().capture.take().is_none(), "the capture took a frame");
    for v in [&mut off, &mut on, &mut diff] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "capture armed ({dir}, matching nothing): disarmed median {:.1}, armed median {:.1}, \
         difference in pairs median {:+.1} cycles/packet (21 pairs)",
        off[10], on[10], diff[10]
    );
}

fn route_set() -> Vec<(Ipv4Net, u16)> {
    // 10 000 prefixes of mixed lengths (/8../32) over 198.18.0.0/15 and beyond, deterministic.
    let mut x = 0x1234_5678u32;
    (0..10_000u32)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let len = [8u8, 16, 20, 24, 24, 24, 28, 32][(x % 8) as usize];
            (Ipv4Net::new(Ipv4Addr::from(x), len).unwrap().trunc(), (i % 1000) as u16)
        })
        .collect()
}

fn lpm(c: &mut Criterion) {
    let routes = route_set();
    let dir = Dir24_8::build(&routes).unwrap();
    let mut trie = PrefixMap::<Ipv4Net, u16>::new();
    for &(n, h) in &routes {
        trie.insert(n, h);
    }
    let probes: Vec<Ipv4Addr> = routes.iter().map(|(n, _)| n.addr()).take(1024).collect();
    let mut g = c.benchmark_group("lpm");
    g.throughput(Throughput::Elements(probes.len() as u64));
    g.bench_function("dir24_8", |b| {
        b.iter(|| {
            let mut s = 0u32;
            for a in &probes {
                s += u32::from(dir.lookup(*a).unwrap_or(0));
            }
            black_box(s)
        })
    });
    g.bench_function("prefix_trie", |b| {
        b.iter(|| {
            let mut s = 0u32;
            for a in &probes {
                let host = Ipv4Net::new(*a, 32).unwrap();
                s += u32::from(trie.get_lpm(&host).map(|(_, h)| *h).unwrap_or(0));
            }
            black_box(s)
        })
    });
    g.finish();
}

criterion_group!(benches, pipeline, lpm);
criterion_main!(benches);
