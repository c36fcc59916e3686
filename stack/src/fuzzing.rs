//! The logic of the `parse_frame` fuzz target (`stack/fuzz/fuzz_targets/parse_frame.rs`),
//! kept here so ordinary tests can run it over the seed corpus without nightly Rust.

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::flow::FlowKey;
use crate::icmp::{self, Icmpv4Error, Icmpv6Error};
use crate::parse::{parse_frame, Parsed, L3, L4};
use crate::wire::{ArpOperation, MacAddr};
use crate::{arp, ipv4, ipv6, l4, nd};

const OUR_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc]);
const OUR_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const OUR_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe);

/// Parses `data` with [`parse_frame`] and, when that succeeds, runs everything that consumes
/// a [`Parsed`] on it — [`FlowKey`], the in-place builders (on a copy), the ICMP error and ND
/// builders — asserting the invariants that must hold for *every* input:
///
/// * `Parsed` offsets stay inside the frame;
/// * a flow key's symmetric hash equals its reversed key's;
/// * every frame a builder produces parses again, with the expected fields, and its checksums
///   verify; ICMP errors respect the RFC 1812 / RFC 4443 size limits.
///
/// Panics (that is the point: the fuzzer reports panics) when an invariant is broken.
pub fn check_frame(data: &[u8]) {
    let Ok(parsed) = parse_frame(data) else {
        return;
    };
    assert!(parsed.l3_end() <= data.len());
    assert_eq!(usize::from(parsed.l3_offset), 14 + 4 * usize::from(parsed.vlan_depth));
    if let Some(l4) = parsed.l4 {
        assert!(usize::from(l4.l4_offset) <= parsed.l3_end());
    }
    if let Some(off) = parsed.upper_layer_offset() {
        assert!(off <= parsed.l3_end());
    }
    if let Some(key) = FlowKey::from_parsed(&parsed) {
        assert_eq!(key.reversed().reversed(), key);
        assert_eq!(key.symmetric_hash(), key.reversed().symmetric_hash());
        assert_eq!(key.symmetric_hash_seeded(7), key.reversed().symmetric_hash_seeded(7));
    }
    let _ = FlowKey::from_parsed_l3(&parsed);
    let may_error = icmp::may_send_icmp_error(&parsed, data);
    match parsed.l3 {
        L3::Arp(_) => check_arp(data, &parsed),
        L3::Ipv4(_) => check_ipv4(data, &parsed, may_error),
        L3::Ipv6(_) => check_ipv6(data, &parsed, may_error),
    }
    check_l4_checksum(data, &parsed);
}

fn check_arp(data: &[u8], parsed: &Parsed) {
    let mut copy = data.to_vec();
    if let Ok(n) = arp::write_reply(&mut copy, parsed, OUR_MAC, OUR_V4) {
        let reply = parse_frame(&copy[..n]).expect("ARP reply parses");
        let info = reply.arp().expect("ARP");
        assert_eq!(info.operation, ArpOperation::Reply);
        assert_eq!(info.sender_mac, OUR_MAC);
        assert_eq!(info.sender_ip, OUR_V4);
        assert_eq!(reply.vlan_depth, parsed.vlan_depth);
    }
}

fn check_ipv4(data: &[u8], parsed: &Parsed, may_error: bool) {
    let Some(v4) = parsed.ipv4() else { return };
    let l3 = usize::from(parsed.l3_offset);

    let mut copy = data.to_vec();
    if let Ok(ttl) = ipv4::decrement_ttl(&mut copy, l3) {
        assert_eq!(ttl, v4.ttl - 1);
        let again = parse_frame(&copy).expect("decremented frame parses");
        assert_eq!(again.ipv4().map(|i| i.ttl), Some(ttl));
    }

    let mut copy = data.to_vec();
    if let Ok(n) = icmp::echo_reply_in_place_v4(&mut copy, parsed) {
        let reply = parse_frame(&copy[..n]).expect("echo reply parses");
        let r4 = reply.ipv4().expect("IPv4");
        assert_eq!((r4.src, r4.dst), (v4.dst, v4.src));
        assert!(matches!(reply.l4.map(|l| l.header), Some(L4::Icmpv4 { icmp_type: 0, .. })));
    }

    let mut out = [0u8; 1600];
    for kind in [
        Icmpv4Error::TimeExceeded,
        Icmpv4Error::PortUnreachable,
        Icmpv4Error::FragNeeded { next_hop_mtu: 1400 },
    ] {
        if let Ok(n) =
            icmp::write_error_v4(&mut out, data, parsed, kind, OUR_V4, OUR_MAC, MacAddr([2; 6]))
        {
            assert!(n - 14 <= icmp::IPV4_ERROR_MAX_LEN);
            let err = parse_frame(&out[..n]).expect("ICMP error parses");
            assert_eq!(err.ipv4().map(|i| i.dst), Some(v4.src));
            assert!(l4::verify_l4_checksum(&out[..n], &err));
            // An error about an error must never be sent.
            assert!(!icmp::may_send_icmp_error(&err, &out[..n]) || err.is_fragment());
        }
    }
    let _ = may_error;
}

fn check_ipv6(data: &[u8], parsed: &Parsed, may_error: bool) {
    let Some(v6) = parsed.ipv6() else { return };
    let l3 = usize::from(parsed.l3_offset);

    let mut copy = data.to_vec();
    if let Ok(hl) = ipv6::decrement_hop_limit(&mut copy, l3) {
        assert_eq!(hl, v6.hop_limit - 1);
        let again = parse_frame(&copy).expect("decremented frame parses");
        assert_eq!(again.ipv6().map(|i| i.hop_limit), Some(hl));
    }

    let mut copy = data.to_vec();
    if let Ok(n) = icmp::echo_reply_in_place_v6(&mut copy, parsed) {
        let reply = parse_frame(&copy[..n]).expect("echo reply parses");
        let r6 = reply.ipv6().expect("IPv6");
        assert_eq!((r6.src, r6.dst), (v6.dst, v6.src));
        assert!(matches!(reply.l4.map(|l| l.header), Some(L4::Icmpv6 { icmp_type: 129, .. })));
        // The incremental update keeps a valid checksum valid.
        assert_eq!(
            l4::verify_l4_checksum(&copy[..n], &reply),
            l4::verify_l4_checksum(data, parsed)
        );
    }

    let mut out = [0u8; 1600];
    for kind in [Icmpv6Error::TimeExceeded, Icmpv6Error::PacketTooBig { mtu: 1280 }] {
        if let Ok(n) =
            icmp::write_error_v6(&mut out, data, parsed, kind, OUR_V6, OUR_MAC, MacAddr([2; 6]))
        {
            assert!(n - 14 <= icmp::IPV6_ERROR_MAX_LEN);
            let err = parse_frame(&out[..n]).expect("ICMPv6 error parses");
            assert_eq!(err.ipv6().map(|i| i.dst), Some(v6.src));
            assert!(l4::verify_l4_checksum(&out[..n], &err));
            assert!(!icmp::may_send_icmp_error(&err, &out[..n]));
        }
    }
    let _ = may_error;

    if let Ok(ns) = nd::parse_ns(data, parsed) {
        let (dst_ip, solicited) = if ns.is_dad {
            (Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), false)
        } else {
            (v6.src, true)
        };
        let dst_mac = ns.source_ll.unwrap_or(MacAddr([2; 6]));
        let n = nd::write_na(&mut out, OUR_MAC, ns.target, dst_mac, dst_ip, ns.target, solicited)
            .expect("NA fits");
        let reply = parse_frame(&out[..n]).expect("NA parses");
        let na = nd::parse_na(&out[..n], &reply).expect("NA validates");
        assert_eq!(na.target, ns.target);
        assert_eq!(na.target_ll, Some(OUR_MAC));
        assert_eq!(na.solicited, solicited);
    }
    let _ = nd::parse_na(data, parsed);
}

fn check_l4_checksum(data: &[u8], parsed: &Parsed) {
    let mut copy = data.to_vec();
    if l4::fill_l4_checksum(&mut copy, parsed).is_ok() {
        assert!(l4::verify_l4_checksum(&copy, parsed));
    }
    let mut copy = data.to_vec();
    let _ = l4::complete_l4_checksum(&mut copy, parsed);
}
