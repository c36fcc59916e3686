//! Traffic for the hot-restart benchmark (`bench/restart.sh`): many UDP flows at a steady rate
//! through a service, and a sink that counts what arrives and the longest silence.
//!
//!     restart_load send IFACE DST_MAC VIP PORT FLOWS FILL_PPS PPS SECONDS
//!     restart_load count IFACE PORT SECONDS
//!
//! `send` opens FLOWS flows (one datagram each, at FILL_PPS), then sends PPS datagrams a
//! second for SECONDS, one per flow in turn, from 198.18.128.0/17 (source port 1024 + i mod
//! 60 000, address 198.18.128.0 + i / 60 000) to VIP:PORT with destination MAC DST_MAC, out of
//! IFACE; prints `sent=N` (the stream's datagrams, after the fill, numbered from 0). `count`
//! counts the datagrams to PORT arriving on IFACE for SECONDS (or until SIGTERM) and prints
//! `received_fill=F received=N unique=U longest_gap_ms=G gaps_over_5ms=K`: the fill's and
//! the stream's datagrams apart, the stream's distinct numbers (N - U arrived twice; sent - U
//! were lost), and the silences of the stream, at the resolution of the socket's block timeout
//! (1 ms).
//!
//! Both use weir's own af_packet port (needs CAP_NET_RAW) and run in the namespaces the script
//! made; nothing leaves them.

use dataplane::buf::{Batch, PacketBuf};
use dataplane::io::afpacket::{AfPacketConfig, AfPacketPort, TxMode};
use dataplane::io::PacketIo;
use dataplane::mempool::{Mempool, MempoolConfig};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Flows per source address (source ports 1024 to 61 023).
const PORTS_PER_ADDR: u32 = 60_000;

fn pool() -> &'static Mempool {
    Mempool::new(MempoolConfig { buffers: 4096, data_room: 2048, headroom: 128 }).expect("pool")
}

fn port(iface: &str, pool: &'static Mempool) -> AfPacketPort {
    let cfg = AfPacketConfig {
        tx_mode: TxMode::Sendmmsg,
        block_timeout_ms: 1,
        ..AfPacketConfig::new(iface)
    };
    AfPacketPort::open(&cfg, pool).unwrap_or_else(|e| panic!("{iface}: {e}"))
}

/// IPv4 header checksum.
fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in h.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(0)
}

/// The most stream datagrams the sink tells apart by number.
const MAX_NUMBERED: usize = 1 << 26;

/// The datagram of flow `i`; its first payload byte says whether it opens the flow (0) or is
/// part of the stream (1), the next four its number in the stream.
fn frame(
    i: u32,
    stream: bool,
    number: u32,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    vip: Ipv4Addr,
    port: u16,
) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 128, 0)) + i / PORTS_PER_ADDR);
    let sport = u16::try_from(1024 + i % PORTS_PER_ADDR).unwrap_or(1024);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&46u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&vip.octets());
    let c = ip_checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let udp = &mut f[34..42];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&port.to_be_bytes());
    udp[4..6].copy_from_slice(&26u16.to_be_bytes());
    f[42] = u8::from(stream);
    f[43..47].copy_from_slice(&number.to_be_bytes());
    f
}

fn parse_mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s.split(':').map(|b| u8::from_str_radix(b, 16).expect("MAC")).collect();
    v.try_into().expect("a MAC of 6 bytes")
}

fn send(args: &[String]) {
    let [iface, dst_mac, vip, dport, flows, fill_pps, pps, seconds] = args else {
        eprintln!("usage: restart_load send IFACE DST_MAC VIP PORT FLOWS FILL_PPS PPS SECONDS");
        std::process::exit(2);
    };
    let pool = pool();
    let mut p = port(iface, pool);
    let (dst_mac, vip) = (parse_mac(dst_mac), vip.parse().expect("VIP"));
    let dport: u16 = dport.parse().expect("PORT");
    let flows: u32 = flows.parse().expect("FLOWS");
    let (fill_pps, pps): (u64, u64) = (fill_pps.parse().expect("PPS"), pps.parse().expect("PPS"));
    let seconds: u64 = seconds.parse().expect("SECONDS");
    let src_mac = p.mac();
    let mut next = 0u32;
    let mut batch = Batch::new();
    // Sends `n` datagrams at `rate` a second, flows in turn; returns how many went out.
    let mut run = |n: u64, rate: u64, stream: bool| -> u64 {
        let start = Instant::now();
        let mut sent = 0u64;
        while sent < n {
            let due = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
                / (1_000_000_000 / rate.max(1)).max(1);
            if sent >= due {
                std::thread::sleep(Duration::from_micros(50));
                continue;
            }
            while sent < due.min(n) && !batch.is_full() {
                let Some(mut b) = pool.alloc() else { break };
                let number = u32::try_from(sent).unwrap_or(u32::MAX);
                b.fill(&frame(next, stream, number, src_mac, dst_mac, vip, dport)).expect("fits");
                let _ = batch.try_push(b);
                next = (next + 1) % flows.max(1);
                sent += 1;
            }
            p.tx_burst(&mut batch);
        }
        sent
    };
    run(u64::from(flows), fill_pps, false);
    let sent = run(pps * seconds, pps, true);
    println!("sent={sent}");
}

fn count(args: &[String]) {
    let [iface, dport, seconds] = args else {
        eprintln!("usage: restart_load count IFACE PORT SECONDS");
        std::process::exit(2);
    };
    let dport: u16 = dport.parse().expect("PORT");
    let seconds: u64 = seconds.parse().expect("SECONDS");
    let term = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, std::sync::Arc::clone(&term))
        .expect("SIGTERM");
    let pool = pool();
    let mut p = port(iface, pool);
    let mut batch = Batch::new();
    let end = Instant::now() + Duration::from_secs(seconds);
    let (mut fill, mut received, mut last) = (0u64, 0u64, None::<Instant>);
    let (mut longest, mut over) = (0f64, 0u32);
    let (mut seen, mut unique) = (vec![false; MAX_NUMBERED], 0u64);
    while Instant::now() < end && !term.load(std::sync::atomic::Ordering::Relaxed) {
        if p.rx_burst(&mut batch) == 0 {
            std::thread::sleep(Duration::from_micros(100));
            continue;
        }
        let now = Instant::now();
        let mut ours = 0;
        for b in batch.drain(..) {
            let d = b.data();
            if d.len() > 42
                && d[12..14] == [8, 0]
                && d[23] == 17
                && d[36..38] == dport.to_be_bytes()
            {
                if d[42] == 1 {
                    ours += 1;
                    let n = u32::from_be_bytes([d[43], d[44], d[45], d[46]]);
                    if let Some(s) = seen.get_mut(usize::try_from(n).unwrap_or(usize::MAX)) {
                        unique += u64::from(!*s);
                        *s = true;
                    }
                } else {
                    fill += 1;
                }
            }
        }
        if ours > 0 {
            if let Some(t) = last {
                let gap = now.duration_since(t).as_secs_f64() * 1000.0;
                longest = f64::max(longest, gap);
                over += u32::from(gap > 5.0);
            }
            last = Some(now);
            received += ours;
        }
    }
    println!(
        "received_fill={fill} received={received} unique={unique} longest_gap_ms={longest:.1} \
         gaps_over_5ms={over}"
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("send") => send(&args[1..]),
        Some("count") => count(&args[1..]),
        _ => {
            eprintln!("usage: restart_load send|count …");
            std::process::exit(2);
        }
    }
}
