//! A hostile host on the client's link, with scapy: every class of frame a gateway must not be
//! fooled by, sent to weir on its af_packet port. Each case has what weir must make of it (a
//! drop under a named reason, an answer, or forwarding), and weir must still forward
//! afterwards, to the right host.

mod common;

use common::{drop_count, exe, ready_with_scapy, worker_sum, PY};
use weir::demo::{DemoBackend, Topology, SERVER_V4, SERVER_V6};

fn ping(t: &Topology, six: bool, dst: &str) -> bool {
    let mut args = vec!["ping", "-c", "2", "-i", "0.2", "-W", "2"];
    if six {
        args.push("-6");
    }
    args.push(dst);
    t.client.run(&args).unwrap().status.success()
}

fn scapy(t: &Topology, script: &str) -> String {
    let out = t.client.run(&[PY, "-c", script]).unwrap();
    assert!(out.status.success(), "scapy: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Frames by the drop reason weir must count them under. Each is sent `REPEAT` times from
/// the client's namespace on its link to weir (`gw`: weir's MAC, `me`: the client's).
const CASES: &str = r#"
E = lambda t=0x0800, src=None: Ether(dst=gw, src=src or me, type=t)
good = IP(src=CLIENT, dst=SERVER)/UDP(sport=1234, dport=9)/Raw(b"x"*20)
raw = bytes(good)
def with_ip(b): return bytes(E()) + b
def v6(src=CLIENT6, dst=SERVER6, nh=17, hlim=64): return IPv6(src=src, dst=dst, hlim=hlim)
udp6 = lambda: UDP(sport=1, dport=9)/Raw(b"y"*8)
# A neighbor solicitation whose option has length 0 (RFC 4861 4.6: discard), checksum valid.
ns_zero_opt = bytes(E(0x86dd)/IPv6(src=CLIENT6, dst=WEIR6, hlim=255)/ICMPv6ND_NS(tgt=WEIR6)/Raw(b"\x01\x00" + b"\x00"*6))
def fix_v6_len(b):
    # the IPv6 payload length after appending bytes by hand
    b = bytearray(b); b[18:20] = (len(b) - 54).to_bytes(2, "big"); return bytes(b)
cases = {
  # Neighbour spoofing.
  "neighbor_off_link": [
    bytes(Ether(dst=gw, src=me)/ARP(op=2, psrc=SERVER, hwsrc=me, pdst=WEIR, hwdst=gw)),
    bytes(E(0x86dd)/IPv6(src=CLIENT6, dst="ff02::1", hlim=255)/ICMPv6ND_NA(tgt=SERVER6, R=0, S=0, O=1)/ICMPv6NDOptDstLLAddr(lladdr=me)),
  ],
  "neighbor_claim_refused": [
    bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src="02:66:66:66:66:66")/ARP(op=2, psrc=CLIENT, hwsrc="02:66:66:66:66:66", pdst=WEIR, hwdst="ff:ff:ff:ff:ff:ff")),
  ],
  # Packets a router must not forward or answer.
  "martian_source": [bytes(E()/IP(src=s, dst=SERVER)/UDP(dport=9)) for s in
      ["0.0.0.0", "127.0.0.1", "224.0.0.5", "255.255.255.255", "240.0.0.1", WEIR, "198.18.1.255"]]
    + [bytes(E()/IP(src="198.18.1.255", dst=WEIR)/ICMP())]
    + [bytes(E(0x86dd)/IPv6(src=s, dst=SERVER6)/UDP(dport=9)) for s in ["::1", "ff02::1", "::ffff:198.18.1.2", "fe80::1", "2001:db8:1::1"]],
  "martian_destination": [bytes(E()/IP(src=CLIENT, dst=d)/UDP(dport=9)) for d in ["127.0.0.1", "0.1.2.3"]]
    + [bytes(E(0x86dd)/IPv6(src=CLIENT6, dst=d)/UDP(dport=9)) for d in ["::1", "::ffff:198.18.2.2"]],
  "bad_source_mac": [bytes(E(src=s)/IP(src=CLIENT, dst=SERVER)/UDP(dport=9)) for s in
      ["ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "00:00:00:00:00:00", gw] if s != me],
  "bad_icmp_checksum": [bytes(E()/IP(src=CLIENT, dst=WEIR)/ICMP(chksum=0x1234)),
      bytes(E(0x86dd)/IPv6(src=CLIENT6, dst=WEIR6)/ICMPv6EchoRequest(cksum=0x1234))],
  "directed_broadcast": [bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=me)/IP(src=CLIENT, dst="198.18.1.255")/ICMP()),
      bytes(E()/IP(src=CLIENT, dst="198.18.2.255")/ICMP())],
  "bad_ipv4_options": [bytes(E()/IP(src=CLIENT, dst=SERVER, options=[IPOption(b"\x44\x00\x00\x00")])/UDP(dport=9)),
      bytes(E()/IP(src=CLIENT, dst=SERVER, options=[IPOption(b"\x01\x01\x94\x0c")])/UDP(dport=9))],
  "source_routed": [bytes(E()/IP(src=CLIENT, dst=SERVER, options=[IPOption_LSRR(routers=["198.18.2.9"])])/UDP(dport=9))],
  # Every frame counted under its own name: truncations at each header boundary. (A frame
  # shorter than an Ethernet header cannot be sent on a veth, and the kernel drops a cut VLAN
  # tag before any packet socket sees it: the memory-backend tests have those two.)
  "truncated_arp": [bytes(Ether(dst=gw, src=me, type=0x0806)) + bytes(ARP())[:20]],
  "truncated_ipv4": [with_ip(raw[:12])],
  "truncated_ipv6": [bytes(E(0x86dd)) + bytes(v6()/udp6())[:30]],
  "truncated_ipv6_ext": [fix_v6_len(bytes(E(0x86dd)/IPv6(src=CLIENT6, dst=SERVER6, nh=60)) + b"\x11\x05\x00\x00")],
  "truncated_l4": [bytes(E()/IP(src=CLIENT, dst=SERVER, proto=6)/Raw(b"\x00"*8)),
      bytes(E()/IP(src=CLIENT, dst=SERVER, proto=17)/Raw(b"\x00"*4)),
      bytes(E()/IP(src=CLIENT, dst=WEIR, proto=1)/Raw(b"\x08\x00"))],
  "bad_tcp_data_offset": [bytes(E()/IP(src=CLIENT, dst=SERVER)/TCP(dport=80, dataofs=15)/Raw(b"z"*8))],
  "bad_ipv4_checksum": [with_ip(raw[:10] + b"\x12\x34" + raw[12:])],
  "bad_l4_length": [bytes(E()/IP(src=CLIENT, dst=SERVER)/UDP(dport=9, len=4)/Raw(b"x"*8))],
  "vlan_tagged": [bytes(Ether(dst=gw, src=me)/Dot1Q(vlan=5)/good)],
  "vlan_too_deep": [bytes(Ether(dst=gw, src=me)/Dot1AD(vlan=1)/Dot1Q(vlan=2)/Dot1Q(vlan=3)/good)],
  "local_fragment": [bytes(E()/IP(src=CLIENT, dst=WEIR, flags="MF", frag=0)/ICMP()/Raw(b"x"*40))],
  "ipv6_ext_chain_too_long": [bytes(E(0x86dd)/IPv6(src=CLIENT6, dst=SERVER6)/(IPv6ExtHdrDestOpt()/IPv6ExtHdrDestOpt()/IPv6ExtHdrDestOpt()/IPv6ExtHdrDestOpt()/IPv6ExtHdrDestOpt()/IPv6ExtHdrDestOpt()/IPv6ExtHdrDestOpt()/IPv6ExtHdrDestOpt()/IPv6ExtHdrDestOpt())/udp6())],
  "bad_ndp": [ns_zero_opt],
  "unknown_ether_type": [bytes(E(0x88b5)/Raw(b"\x00"*46))],
  "oversize": [bytes(E()/IP(src=CLIENT, dst=SERVER)/UDP(sport=7, dport=9)/Raw(b"o"*4000))],
}
"#;

const REPEAT: usize = 3;

#[test]
fn hostile_frames_on_af_packet_ports() {
    hostile_frames_get_their_verdicts_and_weir_goes_on(DemoBackend::AfPacket);
}

#[test]
fn hostile_frames_on_tap_ports() {
    hostile_frames_get_their_verdicts_and_weir_goes_on(DemoBackend::Tap);
}

#[test]
fn hostile_frames_on_dpdk_af_packet_ports() {
    hostile_frames_get_their_verdicts_and_weir_goes_on(DemoBackend::DpdkAfPacket);
}

#[test]
fn hostile_frames_on_dpdk_tap_ports() {
    hostile_frames_get_their_verdicts_and_weir_goes_on(DemoBackend::DpdkTap);
}

fn hostile_frames_get_their_verdicts_and_weir_goes_on(backend: DemoBackend) {
    if !ready_with_scapy(&["ip", "ping"]) {
        return;
    }
    let mut t = Topology::build(backend).unwrap();
    let cfg = t.config(1, "");
    t.start(&exe(), &cfg).unwrap();
    // Jumbo frames on the client's link: weir's buffers hold 2048 bytes, so 4000-byte frames
    // reach it and must be counted as oversize.
    t.client.exec(&["ip", "link", "set", "c0", "mtu", "9000"]).unwrap();
    if backend.veth() {
        t.weir.exec(&["ip", "link", "set", "w0", "mtu", "9000"]).unwrap();
    }
    assert!(ping(&t, false, SERVER_V4) && ping(&t, true, SERVER_V6), "{}", t.log());
    let script = format!(
        r#"
import logging; logging.getLogger("scapy").setLevel(logging.ERROR)
from scapy.all import *
from scapy.layers.inet6 import *
conf.verb = 0
CLIENT, SERVER, WEIR = "198.18.1.2", "{SERVER_V4}", "198.18.1.1"
CLIENT6, SERVER6, WEIR6 = "2001:db8:1::2", "{SERVER_V6}", "2001:db8:1::1"
gw = getmacbyip(WEIR)
me = get_if_hwaddr("c0")
{CASES}
s = conf.L2socket(iface="c0")
for name, frames in cases.items():
    for f in frames:
        for _ in range({REPEAT}):
            s.send(f)
s.close()
# Answers weir must and must not give.
pp = srp1(Ether(dst=gw, src=me)/IP(src=CLIENT, dst=SERVER, options=[IPOption(b"\x44\x00\x00\x00")])/UDP(dport=9), iface="c0", timeout=2)
print("param_problem", pp[ICMP].type if pp and ICMP in pp else None, bytes(pp[ICMP])[4] if pp and ICMP in pp else None)
bad = srp1(Ether(dst=gw, src=me)/IP(src=CLIENT, dst=WEIR)/ICMP(chksum=0x1234), iface="c0", timeout=1)
print("bad_checksum_answered", bad is not None)
bc = srp1(Ether(dst="ff:ff:ff:ff:ff:ff", src=me)/IP(src=CLIENT, dst="198.18.1.255")/ICMP(), iface="c0", timeout=1)
print("broadcast_answered", bc is not None)
ok = srp1(Ether(dst=gw, src=me)/IP(src=CLIENT, dst=WEIR)/ICMP(), iface="c0", timeout=2)
print("good_answered", ok is not None)
print("counts", ",".join(f"{{k}}={{len(v)}}" for k, v in cases.items()))
"#
    );
    let out = scapy(&t, &script);
    assert!(out.contains("param_problem 12 20"), "no parameter problem pointing at byte 20: {out}");
    assert!(out.contains("bad_checksum_answered False"), "{out}");
    assert!(out.contains("broadcast_answered False"), "{out}");
    assert!(out.contains("good_answered True"), "{out}");
    // weir still forwards, to the real server: a hijacked entry would lose these.
    assert!(ping(&t, false, SERVER_V4), "IPv4 forwarding stopped\n{}", t.log());
    assert!(ping(&t, true, SERVER_V6), "IPv6 forwarding stopped\n{}", t.log());
    let stats = t.stop().unwrap();
    let counts = out.lines().find_map(|l| l.strip_prefix("counts ")).expect("counts");
    let (mut checked, mut unseen) = (0, 0);
    for kv in counts.trim().split(',') {
        let (case, n) = kv.split_once('=').unwrap();
        let reason = match (backend, case) {
            // The driver refuses the frame: the device's counter.
            (DemoBackend::DpdkTap, "oversize") => "rx_errors",
            // The driver hands over its first 2 KiB: shorter than its IPv4 header says.
            (DemoBackend::DpdkAfPacket, "oversize") => "bad_ipv4_total_length",
            // The kernel reassembles for the driver's socket: a lone fragment never arrives.
            (DemoBackend::DpdkAfPacket, "local_fragment") => {
                unseen += 1;
                continue;
            }
            _ => case,
        };
        let n: u64 = n.parse().unwrap();
        let want = n * REPEAT as u64;
        let got = drop_count(&stats, reason);
        assert!(got >= want, "`{reason}`: {got} counted, {want} sent: {stats:#}\n{}", t.log());
        checked += 1;
    }
    assert_eq!(checked + unseen, 24, "{counts}");
    // The parameter problems and the ignored claims are counted too.
    assert!(worker_sum(&stats, "icmp_errors") >= 1, "{stats}");
    assert!(worker_sum(&stats, "neighbor_claims_ignored") >= 3 * REPEAT as u64, "{stats}");
}

/// Unusual but valid frames are forwarded, not dropped: IP options that are well formed, and
/// fragments in transit.
#[test]
fn unusual_but_valid_frames_are_forwarded() {
    if !ready_with_scapy(&["ip", "ping"]) {
        return;
    }
    let mut t = Topology::build(DemoBackend::AfPacket).unwrap();
    let cfg = t.config(1, "");
    t.start(&exe(), &cfg).unwrap();
    assert!(ping(&t, false, SERVER_V4));
    let script = format!(
        r#"
import logging; logging.getLogger("scapy").setLevel(logging.ERROR)
from scapy.all import *
conf.verb = 0
gw = getmacbyip("198.18.1.1")
me = get_if_hwaddr("c0")
E = lambda: Ether(dst=gw, src=me)
s = conf.L2socket(iface="c0")
for f in [
    E()/IP(src="198.18.1.2", dst="{SERVER_V4}", options=[IPOption_RR()])/UDP(sport=5, dport=9)/Raw(b"o"*10),
    E()/IP(src="198.18.1.2", dst="{SERVER_V4}", options=[IPOption_Router_Alert()])/UDP(sport=5, dport=9),
    E()/IP(src="198.18.1.2", dst="{SERVER_V4}", flags="MF", frag=0)/UDP(sport=5, dport=9)/Raw(b"f"*16),
    E()/IP(src="198.18.1.2", dst="{SERVER_V4}", frag=2)/Raw(b"g"*16),
]:
    for _ in range(3):
        s.send(f)
s.close()
"#
    );
    scapy(&t, &script);
    let stats = t.stop().unwrap();
    // Two pings (two echo requests each way) plus the twelve frames.
    assert!(worker_sum(&stats, "forwarded") >= 4 + 12, "{stats}");
    assert_eq!(drop_count(&stats, "bad_ipv4_options"), 0, "{stats}");
}
