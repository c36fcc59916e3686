//! Replays the `mesh_frames` fuzz seed corpus (`dataplane/fuzz/corpus/mesh_frames/`) through
//! the fuzz target's logic, `dataplane::fuzzing::check_frames`, so the corpus is exercised on
//! stable Rust.
//!
//! `cargo test -p dataplane --test fuzz_corpus -- --ignored write_seed_corpus` regenerates the
//! seed files: flows opened to every VIP of `fuzzing::mesh_pipeline` followed by what the
//! endpoints answer (derived at replay time from what weir sent, so they find the SNAT port
//! weir picked in that run), ICMP errors about the flows, neighbor resolution, timeouts, and
//! the `stack` fixtures.

use dataplane::fuzzing::{check_frames, encode, run_frames, Record, Source};
use dataplane::pipeline::DropReason;
use dataplane::testing::{
    echo4_frame, icmp6_frame, ipv4_frame, l4_frame_v4, CLIENT_MAC, PORT0_MAC, PORT1_MAC,
};
use stack::checksum::{checksum, l4_checksum_v4, l4_checksum_v6};
use std::fs;
use std::net::Ipv6Addr;
use std::path::PathBuf;

const CLIENT: [u8; 4] = [198, 18, 1, 2];
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/mesh_frames")
}

fn vip(d: u8) -> [u8; 4] {
    [198, 19, 0, d]
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// A frame from the clients' side, as it is.
fn lit(frame: Vec<u8>) -> (u8, Source, u8, Vec<u8>) {
    (0, Source::Literal, 1, frame)
}

/// The same on port 1 (from the endpoints' side).
fn lit1(frame: Vec<u8>) -> (u8, Source, u8, Vec<u8>) {
    (1, Source::Literal, 1, frame)
}

/// The endpoint's answer to the `i`-th latest frame weir sent, arriving on port 1.
fn reply(i: u8) -> (u8, Source, u8, Vec<u8>) {
    (1, Source::ReplyTo(i), 1, Vec::new())
}

/// An ICMP error about the `i`-th latest frame weir sent, arriving on port 1.
fn icmp_error(i: u8) -> (u8, Source, u8, Vec<u8>) {
    (1, Source::IcmpErrorAbout(i), 1, Vec::new())
}

/// Moves the clock by `tick` (see `fuzzing::advance_ns`) before the frame.
fn after(tick: u8, mut r: (u8, Source, u8, Vec<u8>)) -> (u8, Source, u8, Vec<u8>) {
    r.2 = tick;
    r
}

fn encode_seed(records: &[(u8, Source, u8, Vec<u8>)]) -> Vec<u8> {
    let recs: Vec<Record<'_>> = records
        .iter()
        .map(|(port, source, tick, bytes)| Record {
            port: *port,
            source: *source,
            tick: *tick,
            bytes,
        })
        .collect();
    encode(&recs)
}

/// An IPv6 TCP segment with these flags and a valid checksum, to weir's port 0.
fn tcp6(src: Ipv6Addr, sp: u16, dst: Ipv6Addr, dp: u16, flags: u8) -> Vec<u8> {
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&sp.to_be_bytes());
    tcp.extend_from_slice(&dp.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    let c = l4_checksum_v6(src, dst, 6, &tcp);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    ipv6_frame(src, dst, 6, &tcp)
}

/// An IPv6 packet, from the client's MAC to port 0's.
fn ipv6_frame(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = PORT0_MAC.to_vec();
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    f.extend_from_slice(&[next, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(payload);
    f
}

/// An IPv6 UDP datagram with a valid checksum, to weir's port 0.
fn udp6(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    let mut udp = vec![0x9c, 0x40, 0, 53];
    udp.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let c = l4_checksum_v6(src, dst, 17, &udp);
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    ipv6_frame(src, dst, 17, &udp)
}

/// An IPv4 UDP datagram of `payload` bytes with a valid checksum, DF set as asked.
fn udp4(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, payload: usize, df: bool) -> Vec<u8> {
    let mut udp = Vec::new();
    udp.extend_from_slice(&sp.to_be_bytes());
    udp.extend_from_slice(&dp.to_be_bytes());
    udp.extend_from_slice(&u16::try_from(8 + payload).unwrap().to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend((0..payload).map(|i| u8::try_from(i % 251).unwrap()));
    let c = l4_checksum_v4(src.into(), dst.into(), 17, &udp);
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    let mut f = ipv4_frame(src, dst, 17, &udp);
    if df {
        f[20] = 0x40;
        fix_ip_checksum(&mut f);
    }
    f
}

fn fix_ip_checksum(f: &mut [u8]) {
    f[24..26].copy_from_slice(&[0, 0]);
    let c = checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

fn with_ttl(mut f: Vec<u8>, ttl: u8) -> Vec<u8> {
    f[22] = ttl;
    fix_ip_checksum(&mut f);
    f
}

/// The seeds, by name.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let client6 = v6("2001:db8:1::2");
    let vip6 = v6("2001:db8:19::1");
    let tcp = |sp: u16, d: u8, flags: u8| l4_frame_v4(CLIENT, sp, vip(d), 80, Some(flags));
    let mut seeds = vec![
        (
            "nat_tcp_connection",
            encode_seed(&[
                lit(tcp(40000, 1, SYN)),
                reply(0),
                lit(tcp(40000, 1, ACK)),
                reply(0),
                after(10, lit(tcp(40000, 1, FIN | ACK))),
                reply(0),
                after(40, lit(tcp(40000, 1, SYN))),
            ]),
        ),
        (
            "nat_tcp_icmp_errors",
            encode_seed(&[lit(tcp(40001, 1, SYN)), icmp_error(0), icmp_error(1), reply(2)]),
        ),
        (
            "nat_tcp_refused",
            encode_seed(&[
                lit(tcp(40002, 1, SYN)),
                (1, Source::ReplyTo(0), 1, {
                    // The endpoint answers RST|ACK: bytes XORed over the derived SYN-ACK.
                    let mut x = vec![0; 48];
                    x[47] = (SYN | ACK) ^ (RST | ACK);
                    x
                }),
            ]),
        ),
        (
            "dnat_udp",
            encode_seed(&[
                lit(l4_frame_v4(CLIENT, 5000, vip(2), 53, None)),
                reply(0),
                lit(l4_frame_v4(CLIENT, 5000, vip(2), 53, None)),
                reply(0),
                after(60, reply(1)),
            ]),
        ),
        (
            "dnat_udp_port_unreachable",
            encode_seed(&[
                lit(l4_frame_v4(CLIENT, 5001, vip(2), 53, None)),
                (1, Source::IcmpErrorAbout(0), 1, {
                    // Code 4 (fragmentation needed) XOR 7: code 3, port unreachable.
                    let mut x = vec![0; 36];
                    x[35] = 7;
                    x
                }),
            ]),
        ),
        (
            "dsr_ipip",
            encode_seed(&[
                lit(tcp(40003, 3, SYN)),
                lit(tcp(40003, 3, ACK)),
                icmp_error(0),
                lit(tcp(40003, 3, FIN | ACK)),
            ]),
        ),
        (
            "dsr_gue",
            encode_seed(&[lit(tcp(40004, 4, SYN)), lit(tcp(40004, 4, ACK)), icmp_error(0)]),
        ),
        (
            "reset_cluster",
            encode_seed(&[
                lit(tcp(40005, 5, SYN)),
                reply(0),
                lit(tcp(40005, 5, ACK)),
                lit(tcp(40005, 5, RST)),
            ]),
        ),
        (
            "ipv6_nat",
            encode_seed(&[
                lit(tcp6(client6, 40006, vip6, 80, SYN)),
                reply(0),
                lit(tcp6(client6, 40006, vip6, 80, ACK)),
                icmp_error(0),
                reply(1),
            ]),
        ),
        (
            "every_vip",
            encode_seed(&[
                lit(tcp(40010, 1, SYN)),
                reply(0),
                lit(l4_frame_v4(CLIENT, 5000, vip(2), 53, None)),
                reply(0),
                lit(tcp(40011, 3, SYN)),
                lit(tcp(40012, 4, SYN)),
                lit(tcp(40013, 5, SYN)),
                reply(0),
                lit(tcp6(client6, 40014, vip6, 80, SYN)),
                reply(0),
                icmp_error(1),
            ]),
        ),
        ("flow_table_full", {
            // Ten handshakes for a table of eight: the oldest are evicted.
            let mut r: Vec<_> = (0..10).map(|i| lit(tcp(41000 + i, 1, SYN))).collect();
            r.push(reply(0));
            r.push(reply(9));
            r.push(lit(tcp(41000, 1, ACK)));
            encode_seed(&r)
        }),
        (
            "flows_expire",
            encode_seed(&[
                lit(l4_frame_v4(CLIENT, 5002, vip(2), 53, None)),
                lit(tcp(40020, 1, SYN)),
                after(40, reply(0)),
                after(90, reply(1)),
                after(255, lit(tcp(40020, 1, ACK))),
            ]),
        ),
        (
            "other_workers_snat_ports",
            // Replies to SNAT ports with no flow here: worker 1's are handed off (and, with no
            // ring, dropped); worker 0's have no flow.
            encode_seed(
                &(20000..20004)
                    .map(|p| {
                        let mut f = l4_frame_v4([198, 18, 2, 2], 80, [198, 18, 2, 1], p, Some(ACK));
                        f[0..6].copy_from_slice(&PORT1_MAC);
                        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0x22]);
                        lit1(f)
                    })
                    .collect::<Vec<_>>(),
            ),
        ),
        (
            "arp_resolution",
            encode_seed(&[
                // 198.18.2.50 is on port 1 but not a static neighbor: held, ARP asked.
                lit(udp4(CLIENT, 6000, [198, 18, 2, 50], 7, 16, false)),
                lit(udp4(CLIENT, 6001, [198, 18, 2, 50], 7, 16, false)),
                reply(0),
                lit(udp4(CLIENT, 6002, [198, 18, 2, 50], 7, 16, false)),
                reply(0),
            ]),
        ),
        (
            "arp_unanswered",
            encode_seed(&[
                lit(udp4(CLIENT, 6003, [198, 18, 2, 51], 7, 16, false)),
                after(200, lit(udp4(CLIENT, 6004, [198, 18, 2, 51], 7, 16, false))),
                after(255, lit(udp4(CLIENT, 6005, [198, 18, 2, 52], 7, 16, false))),
            ]),
        ),
        (
            "ndp_resolution",
            encode_seed(&[
                lit(udp6(client6, v6("2001:db8:2::50"), b"hello")),
                reply(0),
                lit(udp6(client6, v6("2001:db8:2::50"), b"again")),
                reply(0),
            ]),
        ),
        (
            "local_and_ttl",
            encode_seed(&[
                lit(echo4_frame(CLIENT, [198, 18, 1, 1], false)),
                lit(echo4_frame(CLIENT, [198, 18, 1, 1], true)),
                lit(icmp6_frame(client6, v6("2001:db8:1::1"), 64, vec![128, 0, 0, 0, 0, 1, 0, 1])),
                lit(with_ttl(tcp(40030, 1, SYN), 1)),
                lit(with_ttl(l4_frame_v4(CLIENT, 5003, [198, 18, 2, 2], 9, None), 1)),
                lit(l4_frame_v4(CLIENT, 5004, [203, 0, 113, 9], 9, None)),
            ]),
        ),
        (
            "too_big",
            encode_seed(&[
                // 1450 bytes toward port 1's MTU of 1400: DF set, and not.
                lit(udp4(CLIENT, 5005, vip(2), 53, 1422, true)),
                lit(udp4(CLIENT, 5006, vip(2), 53, 1422, false)),
                lit(udp4(CLIENT, 5007, [198, 18, 2, 2], 9, 1422, true)),
                lit(udp4(CLIENT, 5000, vip(2), 53, 1370, true)),
            ]),
        ),
        (
            "bad_checksums",
            encode_seed(&[
                lit({
                    let mut f = tcp(40040, 1, SYN);
                    f[50] ^= 0xff;
                    f
                }),
                reply(0),
                lit({
                    let mut f = l4_frame_v4(CLIENT, 5000, vip(2), 53, None);
                    f[40..42].copy_from_slice(&[0, 0]);
                    f
                }),
                reply(0),
            ]),
        ),
    ];
    for port in [0u8, 1] {
        let recs: Vec<_> = stack::fixtures::ALL
            .iter()
            .map(|(_, f)| {
                let mut f = f.to_vec();
                f[0..6].copy_from_slice(if port == 0 { &PORT0_MAC } else { &PORT1_MAC });
                (port, Source::Literal, 1, f)
            })
            .collect();
        seeds.push((
            if port == 0 { "fixtures_port0" } else { "fixtures_port1" },
            encode_seed(&recs),
        ));
    }
    seeds
}

#[test]
#[ignore = "writes the seed corpus; run explicitly"]
fn write_seed_corpus() {
    let dir = corpus_dir();
    fs::create_dir_all(&dir).unwrap();
    for (name, data) in seeds() {
        fs::write(dir.join(format!("{name}.bin")), data).unwrap();
    }
}

/// The committed seeds are the ones `seeds` makes (regenerate them with `write_seed_corpus`).
#[test]
fn seeds_are_committed() {
    for (name, data) in seeds() {
        let path = corpus_dir().join(format!("{name}.bin"));
        let committed = fs::read(&path).unwrap_or_default();
        assert!(committed == data, "{} is missing or stale", path.display());
    }
}

#[test]
fn replay_seed_corpus() {
    let mut count = 0;
    for entry in fs::read_dir(corpus_dir()).expect("seed corpus directory exists") {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let data = fs::read(&path).unwrap();
        check_frames(&data);
        count += 1;
    }
    assert!(count >= 20, "seed corpus has only {count} files");
}

/// The seeds reach what they are meant to: flows opened to every VIP, replies and ICMP errors
/// translated back, neighbors resolved, frames timed out.
#[test]
fn the_seeds_reach_the_mesh() {
    for (name, data) in seeds() {
        let o = run_frames(&data);
        let (m, c) = (o.mesh, &o.pipeline);
        let drops = |r: DropReason| c.drops[r as usize];
        let ok = match name {
            "nat_tcp_connection" => m.flows_opened == 2 && m.reverse == 3 && m.connects_ok == 1,
            "nat_tcp_icmp_errors" => m.icmp_translated == 2,
            "nat_tcp_refused" => m.connects_failed == 1,
            "dnat_udp" => m.reverse == 2,
            "dnat_udp_port_unreachable" => m.icmp_translated == 1,
            "dsr_ipip" => m.flows_opened == 1 && m.forward == 3,
            "dsr_gue" => m.flows_opened == 1 && m.forward == 2,
            "reset_cluster" => m.flows_opened == 1 && m.reverse == 1,
            "ipv6_nat" => m.reverse == 2 && m.icmp_translated == 1,
            "every_vip" => m.flows_opened == 6 && m.reverse == 4 && m.icmp_translated == 1,
            // The segment of a flow the table had no room for is answered with a reset.
            "flow_table_full" => m.flows_opened == 10 && c.resets_sent == 1,
            "flows_expire" => drops(DropReason::NoFlow) + c.resets_sent == 2,
            "other_workers_snat_ports" => drops(DropReason::HandoffFull) >= 1,
            "arp_resolution" => c.resolutions_sent == 1 && c.consumed == 1 && c.forwarded == 4,
            "arp_unanswered" => drops(DropReason::NeighborTimeout) == 2,
            "ndp_resolution" => c.resolutions_sent == 1 && c.consumed == 1 && c.forwarded == 3,
            "local_and_ttl" => c.replies == 2 && drops(DropReason::TtlExceeded) == 1,
            "too_big" => {
                drops(DropReason::MtuExceeded) == 3 && c.icmp_errors == 2 && c.forwarded == 1
            }
            "bad_checksums" => m.forward == 2 && m.reverse == 2,
            _ => true,
        };
        let dropped: Vec<(DropReason, u64)> =
            DropReason::ALL.iter().map(|r| (*r, drops(*r))).filter(|(_, n)| *n != 0).collect();
        assert!(ok, "{name}: dropped {dropped:?}, {o:?}");
    }
}
