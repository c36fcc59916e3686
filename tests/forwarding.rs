//! weir as a router between namespaces, with real clients: ping, iperf3, scapy.

mod common;

use common::{drop_count, exe, ready, ready_with_scapy, worker_sum, PY};
use weir::demo::{DemoBackend, Topology, CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6};

fn ping(ns: &weir::netns::Netns, six: bool, dst: &str) -> bool {
    let mut args = vec!["ping", "-c", "3", "-i", "0.2", "-W", "2"];
    if six {
        args.push("-6");
    }
    args.push(dst);
    let out = ns.run(&args).expect("ping runs");
    if !out.status.success() {
        eprintln!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status.success()
}

/// The demo topology with weir running on `backend` with `workers` workers.
fn running(backend: DemoBackend, workers: usize) -> Topology {
    let mut t = Topology::build(backend).unwrap();
    let cfg = t.config(workers, "");
    t.start(&exe(), &cfg).unwrap();
    t
}

fn ping_both_ways(backend: DemoBackend) {
    if !ready(&["ip", "ping"]) {
        return;
    }
    let mut t = running(backend, 1);
    assert!(ping(&t.client, false, SERVER_V4), "IPv4 client -> server\n{}", t.log());
    assert!(ping(&t.client, true, SERVER_V6), "IPv6 client -> server\n{}", t.log());
    assert!(ping(&t.server, false, CLIENT_V4), "IPv4 server -> client\n{}", t.log());
    assert!(ping(&t.server, true, CLIENT_V6), "IPv6 server -> client\n{}", t.log());
    assert!(ping(&t.client, false, "198.18.1.1"), "weir answers its own IPv4 address");
    assert!(ping(&t.client, true, "2001:db8:1::1"), "weir answers its own IPv6 address");
    let stats = t.stop().unwrap();
    // No static neighbors: every next hop was resolved by weir's own ARP requests and neighbor
    // solicitations, and the hosts resolved weir through its replies.
    assert!(worker_sum(&stats, "resolutions_sent") >= 2, "{stats}");
    assert!(worker_sum(&stats, "forwarded") >= 24, "{stats}");
    assert!(worker_sum(&stats, "replies") >= 6, "{stats}");
}

#[test]
fn ping_v4_v6_both_directions_af_packet() {
    ping_both_ways(DemoBackend::AfPacket);
}

#[test]
fn ping_v4_v6_both_directions_tap() {
    ping_both_ways(DemoBackend::Tap);
}

#[test]
fn ping_v4_v6_both_directions_dpdk_af_packet() {
    ping_both_ways(DemoBackend::DpdkAfPacket);
}

#[test]
fn ping_v4_v6_both_directions_dpdk_tap() {
    ping_both_ways(DemoBackend::DpdkTap);
}

fn iperf(backend: DemoBackend, workers: usize, streams: &str) -> serde_json::Value {
    let mut t = running(backend, workers);
    assert!(ping(&t.client, false, SERVER_V4), "{}", t.log());
    let mut server = t.server.spawn(&["iperf3", "-s", "-1", "-B", SERVER_V4]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = t
        .client
        .run(&[
            "timeout", "30", "iperf3", "-c", SERVER_V4, "-t", "3", "-i", "1", "-J", "-P", streams,
        ])
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        out.status.success(),
        "iperf3 failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        t.log()
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let received = report["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    assert!(received > 1_000_000, "only {received} bytes arrived");
    // Not stalled: every one-second interval moved data.
    for iv in report["intervals"].as_array().unwrap() {
        let bytes = iv["sum"]["bytes"].as_u64().unwrap_or(0);
        assert!(bytes > 0, "a stalled interval: {iv}");
    }
    let bps = report["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0);
    eprintln!("iperf3 through weir ({backend:?}, {workers} worker(s)): {:.0} Mbit/s", bps / 1e6);
    t.stop().unwrap()
}

#[test]
fn iperf3_tcp_through_af_packet() {
    if !ready(&["ip", "ping", "iperf3"]) {
        return;
    }
    let stats = iperf(DemoBackend::AfPacket, 1, "1");
    assert!(worker_sum(&stats, "forwarded") > 1000, "{stats}");
}

#[test]
fn iperf3_tcp_through_tap() {
    if !ready(&["ip", "ping", "iperf3"]) {
        return;
    }
    iperf(DemoBackend::Tap, 1, "1");
}

#[test]
fn iperf3_tcp_through_dpdk_af_packet() {
    if !ready(&["ip", "ping", "iperf3", "ethtool"]) {
        return;
    }
    let stats = iperf(DemoBackend::DpdkAfPacket, 1, "1");
    let dev = &stats["ports"]["client_side"]["device"];
    assert_eq!(dev["driver"], "net_af_packet", "{stats}");
    assert!(dev["ipackets"].as_u64().unwrap_or(0) > 1000, "DPDK's own counters: {stats}");
    assert!(stats["ports"]["client_side"]["rx_bytes"].as_u64().unwrap_or(0) > 1_000_000, "{stats}");
}

#[test]
fn iperf3_tcp_through_dpdk_tap() {
    if !ready(&["ip", "ping", "iperf3"]) {
        return;
    }
    let stats = iperf(DemoBackend::DpdkTap, 1, "1");
    assert_eq!(stats["ports"]["server_side"]["device"]["driver"], "net_tap", "{stats}");
}

fn both_workers_carry(stats: &serde_json::Value) {
    let workers = stats["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    for w in workers {
        assert!(w["forwarded"].as_u64().unwrap_or(0) > 100, "a worker carried nothing: {stats}");
    }
}

#[test]
fn two_workers_on_a_multi_queue_dpdk_vdev_both_carry_traffic() {
    if !ready(&["ip", "ping", "iperf3", "ethtool"]) {
        return;
    }
    // net_af_packet with qpairs=2: one queue pair per worker, spread by the kernel's fanout.
    let stats = iperf(DemoBackend::DpdkAfPacket, 2, "8");
    assert_eq!(stats["ports"]["client_side"]["device"]["queues"], 2, "{stats}");
    both_workers_carry(&stats);
}

#[test]
fn two_workers_with_fanout_both_carry_traffic() {
    if !ready(&["ip", "ping", "iperf3"]) {
        return;
    }
    let stats = iperf(DemoBackend::AfPacket, 2, "8");
    both_workers_carry(&stats);
}

fn scapy(t: &Topology, script: &str) -> String {
    let out = t.client.run(&[PY, "-c", script]).unwrap();
    assert!(out.status.success(), "scapy: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ttl_expiry_is_answered_with_time_exceeded() {
    if !ready_with_scapy(&["ip", "ping"]) {
        return;
    }
    let mut t = running(DemoBackend::AfPacket, 1);
    assert!(ping(&t.client, false, SERVER_V4));
    assert!(ping(&t.client, true, SERVER_V6));
    let script = format!(
        r#"
import logging; logging.getLogger("scapy").setLevel(logging.ERROR)
from scapy.all import IP, IPv6, UDP, ICMP, ICMPv6TimeExceeded, sr1, conf
conf.verb = 0
r = sr1(IP(dst="{SERVER_V4}", ttl=1)/UDP(dport=33434), timeout=3)
print("v4", r[IP].src if r else None, r[ICMP].type if r and ICMP in r else None, r[ICMP].code if r and ICMP in r else None)
r6 = sr1(IPv6(dst="{SERVER_V6}", hlim=1)/UDP(dport=33434), timeout=3)
print("v6", r6[IPv6].src if r6 else None, r6.haslayer(ICMPv6TimeExceeded) if r6 else None)
"#
    );
    let out = scapy(&t, &script);
    assert!(out.contains("v4 198.18.1.1 11 0"), "no ICMP time exceeded from weir: {out}");
    assert!(out.contains("v6 2001:db8:1::1 True"), "no ICMPv6 time exceeded from weir: {out}");
    let stats = t.stop().unwrap();
    assert!(drop_count(&stats, "ttl_exceeded") >= 2, "{stats}");
    assert!(worker_sum(&stats, "icmp_errors") >= 2, "{stats}");
}

#[test]
fn hostile_frames_are_counted_and_forwarding_goes_on() {
    if !ready_with_scapy(&["ip", "ping"]) {
        return;
    }
    let mut t = running(DemoBackend::AfPacket, 1);
    assert!(ping(&t.client, false, SERVER_V4));
    // Each frame goes to weir's MAC (learned by the ping above) on the client's link.
    let script = format!(
        r#"
import logging; logging.getLogger("scapy").setLevel(logging.ERROR)
from scapy.all import *
conf.verb = 0
gw = getmacbyip("198.18.1.1")
me = get_if_hwaddr("c0")
E = lambda t=0x0800: Ether(dst=gw, src=me, type=t)
good = IP(src="{CLIENT_V4}", dst="{SERVER_V4}")/UDP(sport=1234, dport=9)/Raw(b"x"*20)
raw = bytes(good)
def with_ip(b): return bytes(E()) + b
frames = {{
  "unknown_ether_type": bytes(E(0x88b5)/Raw(b"\x00"*46)),
  "truncated_ipv4": with_ip(raw[:12]),
  "bad_ip_version": with_ip(bytes([0x65]) + raw[1:]),
  "bad_ihl": with_ip(bytes([0x43]) + raw[1:]),
  "bad_ipv4_total_length": with_ip(raw[:2] + (2000).to_bytes(2, "big") + raw[4:]),
  "bad_ipv4_checksum": with_ip(raw[:10] + b"\x12\x34" + raw[12:]),
  "truncated_l4": bytes(E()/IP(src="{CLIENT_V4}", dst="{SERVER_V4}", proto=6)/Raw(b"\x00"*8)),
  "bad_l4_length": bytes(E()/IP(src="{CLIENT_V4}", dst="{SERVER_V4}")/UDP(sport=1, dport=9, len=4)/Raw(b"x"*8)),
  "vlan_tagged": bytes(Ether(dst=gw, src=me)/Dot1Q(vlan=5)/good),
  "vlan_too_deep": bytes(Ether(dst=gw, src=me)/Dot1AD(vlan=1)/Dot1Q(vlan=2)/Dot1Q(vlan=3)/good),
  "truncated_ipv6": bytes(E(0x86dd)/Raw(b"\x60" + b"\x00"*20)),
  "local_fragment": bytes(E()/IP(src="{CLIENT_V4}", dst="198.18.1.1", flags="MF", frag=0)/ICMP()/Raw(b"x"*40)),
  "not_our_mac": bytes(Ether(dst="02:00:00:00:00:99", src=me)/good),
}}
for name, f in frames.items():
    for _ in range(5):
        sendp(f, iface="c0")
# Valid but unusual: IP options and fragments in transit are forwarded, not dropped.
sendp(E()/IP(src="{CLIENT_V4}", dst="{SERVER_V4}", options=[IPOption_RR()])/UDP(sport=5, dport=9)/Raw(b"o"*10), iface="c0", count=3)
sendp(E()/IP(src="{CLIENT_V4}", dst="{SERVER_V4}", flags="MF", frag=0)/UDP(sport=5, dport=9)/Raw(b"f"*16), iface="c0", count=3)
print("sent", ",".join(frames))
"#
    );
    let out = scapy(&t, &script);
    let reasons: Vec<String> = out
        .trim()
        .strip_prefix("sent ")
        .unwrap_or_default()
        .split(',')
        .map(str::to_owned)
        .collect();
    assert!(reasons.len() >= 10, "{out}");
    // weir is still up and still forwarding.
    assert!(
        ping(&t.client, false, SERVER_V4),
        "forwarding stopped after hostile frames\n{}",
        t.log()
    );
    assert!(ping(&t.client, true, SERVER_V6));
    let stats = t.stop().unwrap();
    for r in &reasons {
        assert!(
            drop_count(&stats, r) >= 5,
            "drop reason `{r}` not counted 5 times: {}",
            stats["drops"]
        );
    }
    assert!(worker_sum(&stats, "forwarded") >= 6 + 12, "options/fragments not forwarded: {stats}");
}
