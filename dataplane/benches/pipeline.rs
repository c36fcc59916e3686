//! Pipeline cost on the memory backend, and the IPv4 LPM choice.
//!
//! `pipeline/ipv4_forward_burst32`: 32 frames injected into a memory port, one `poll_once`
//! (parse, route, neighbor, TTL and checksum rewrite, MAC rewrite, tx), tx frames freed. Also
//! prints cycles per packet measured with the TSC over the same loop.
//! `lpm/*`: DIR-24-8 against the `prefix-trie` crate on the same route set and addresses.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dataplane::lpm::Dir24_8;
use dataplane::testing::{two_port_router, udp4_frame};
use ipnet::Ipv4Net;
use prefix_trie::PrefixMap;
use std::hint::black_box;
use std::net::Ipv4Addr;

fn pipeline(c: &mut Criterion) {
    let (mut worker, queues, mut cache) = two_port_router(true);
    let frames: Vec<[u8; 60]> = (0..32u16).map(|i| udp4_frame(1000 + i)).collect();
    // Cycles per packet over a fixed run, injection excluded.
    let mut cycles = 0u64;
    let rounds = 200_000u64;
    for _ in 0..rounds {
        for f in &frames {
            queues[0].inject_bytes(&mut cache, f);
        }
        let t0 = dataplane::cycles::now();
        worker.poll_once();
        cycles += dataplane::cycles::now() - t0;
    }
    println!(
        "pipeline ipv4_forward_burst32: {:.1} cycles/packet (TSC, injection excluded)",
        cycles as f64 / (rounds * 32) as f64
    );
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(32));
    g.bench_function("ipv4_forward_burst32", |b| {
        b.iter_batched(
            || {
                for f in &frames {
                    queues[0].inject_bytes(&mut cache, f);
                }
            },
            |()| black_box(worker.poll_once()),
            BatchSize::SmallInput,
        )
    });
    g.finish();
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
