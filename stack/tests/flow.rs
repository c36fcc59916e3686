//! FlowKey: built from parsed fixtures; symmetric hashing (property-tested).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use stack::flow::{Family, FlowKey};
use stack::parse::parse_frame;
use stack::{checksum, fixtures, icmp};

fn key(frame: &[u8]) -> Option<FlowKey> {
    FlowKey::from_parsed(&parse_frame(frame).unwrap())
}

#[test]
fn tcp_key_fields() {
    let k = key(&fixtures::TCP_SYN).unwrap();
    assert_eq!(k.src(), IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)));
    assert_eq!(k.dst(), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 34)));
    assert_eq!((k.src_port(), k.dst_port(), k.proto()), (51234, 443, 6));
    assert_eq!(k.family(), Family::V4);
    let r = k.reversed();
    assert_eq!((r.src(), r.dst()), (k.dst(), k.src()));
    assert_eq!((r.src_port(), r.dst_port()), (443, 51234));
    assert_ne!(k, r);
    assert_eq!(k.symmetric_hash(), r.symmetric_hash());
}

#[test]
fn ipv6_keys_use_upper_layer_protocol() {
    let k = key(&fixtures::IPV6_HBH_FRAG_UDP).unwrap();
    assert_eq!(k.family(), Family::V6);
    assert_eq!(k.proto(), 17);
    assert_eq!((k.src_port(), k.dst_port()), (5353, 5353));
    assert_eq!(k.src(), IpAddr::V6("2001:db8::2".parse::<Ipv6Addr>().unwrap()));
}

#[test]
fn echo_request_and_reply_are_reversed_keys() {
    for request in [&fixtures::ICMPV4_ECHO_REQUEST[..], &fixtures::ICMPV6_ECHO_REQUEST[..]] {
        let k = key(request).unwrap();
        assert_ne!(k.src_port(), 0);
        assert_eq!(k.src_port(), k.dst_port());
        let mut reply = request.to_vec();
        let p = parse_frame(&reply).unwrap();
        let n = match p.ipv4() {
            Some(_) => icmp::echo_reply_in_place_v4(&mut reply, &p).unwrap(),
            None => icmp::echo_reply_in_place_v6(&mut reply, &p).unwrap(),
        };
        let r = key(&reply[..n]).unwrap();
        assert_eq!(r, k.reversed());
        assert_eq!(r.symmetric_hash(), k.symmetric_hash());
    }
}

#[test]
fn other_icmp_has_zero_ports() {
    let mut f = fixtures::ICMPV4_ECHO_REQUEST;
    // Turn it into a timestamp request (type 13), fixing the ICMP checksum.
    let c = checksum::update16(u16::from_be_bytes([f[36], f[37]]), 0x0800, 0x0d00);
    f[34] = 13;
    f[36..38].copy_from_slice(&c.to_be_bytes());
    let k = key(&f).unwrap();
    assert_eq!((k.src_port(), k.dst_port(), k.proto()), (0, 0, 1));
}

#[test]
fn arp_and_non_first_fragments_have_no_key() {
    assert_eq!(key(&fixtures::ARP_REQUEST), None);
    assert_eq!(key(&fixtures::IPV4_FRAGMENT_NONFIRST), None);
    let p = parse_frame(&fixtures::IPV4_FRAGMENT_NONFIRST).unwrap();
    let k = FlowKey::from_parsed_l3(&p).unwrap();
    assert_eq!((k.src_port(), k.dst_port(), k.proto()), (0, 0, 17));
    assert_eq!(FlowKey::from_parsed_l3(&parse_frame(&fixtures::ARP_REQUEST).unwrap()), None);
}

#[test]
fn seed_changes_hash() {
    let k = key(&fixtures::TCP_SYN).unwrap();
    assert_ne!(k.symmetric_hash_seeded(1), k.symmetric_hash_seeded(2));
    assert_eq!(k.symmetric_hash_seeded(1), k.symmetric_hash_seeded(1));
}

/// Builds an untagged IPv4 or IPv6 UDP/TCP frame with the given tuple (L4 checksum not
/// filled: parse_frame does not verify it).
fn frame(v6: bool, src: u128, dst: u128, sp: u16, dp: u16, tcp: bool) -> Vec<u8> {
    let l4_len = if tcp { 20 } else { 8 };
    let mut f = Vec::new();
    f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
    if v6 {
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, l4_len, if tcp { 6 } else { 17 }, 64]);
        f.extend_from_slice(&src.to_be_bytes());
        f.extend_from_slice(&dst.to_be_bytes());
    } else {
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[3] = 20 + l4_len;
        ip[8] = 64;
        ip[9] = if tcp { 6 } else { 17 };
        ip[12..16].copy_from_slice(&src.to_be_bytes()[12..]);
        ip[16..20].copy_from_slice(&dst.to_be_bytes()[12..]);
        let c = checksum::checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&ip);
    }
    f.extend_from_slice(&sp.to_be_bytes());
    f.extend_from_slice(&dp.to_be_bytes());
    if tcp {
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        f.extend_from_slice(&[0, 8, 0, 0]);
    }
    f
}

proptest! {
    #[test]
    fn symmetric_hash_is_symmetric(
        v6 in any::<bool>(), src in any::<u128>(), dst in any::<u128>(),
        sp in any::<u16>(), dp in any::<u16>(), tcp in any::<bool>(), seed in any::<u64>(),
    ) {
        let fwd = frame(v6, src, dst, sp, dp, tcp);
        let rev = frame(v6, dst, src, dp, sp, tcp);
        let k = key(&fwd).unwrap();
        let r = key(&rev).unwrap();
        prop_assert_eq!(r, k.reversed());
        prop_assert_eq!(k.reversed().reversed(), k);
        prop_assert_eq!(k.symmetric_hash(), r.symmetric_hash());
        prop_assert_eq!(k.symmetric_hash_seeded(seed), k.reversed().symmetric_hash_seeded(seed));
        prop_assert_eq!((k.src_port(), k.dst_port()), (sp, dp));
    }

    #[test]
    fn hash_distinguishes_ports(
        src in any::<u32>(),
        dst in any::<u32>(),
        sp in any::<u16>(),
        dp in 1u16..,
    ) {
        // Not a guarantee for a 32-bit hash, but with a good mixer a collision between these
        // two specific keys has probability 2^-32 per case.
        let a = key(&frame(false, u128::from(src), u128::from(dst), sp, dp, false)).unwrap();
        let b = key(&frame(false, u128::from(src), u128::from(dst), sp, dp - 1, false)).unwrap();
        prop_assert_ne!(a.symmetric_hash(), b.symmetric_hash());
    }
}

#[test]
fn a_rewritten_key_keeps_protocol_and_family() {
    let k = key(&fixtures::TCP_SYN).unwrap();
    let snat: IpAddr = "198.18.2.1".parse().unwrap();
    let ep: IpAddr = "198.18.2.10".parse().unwrap();
    let reply = k.rewritten(ep, 8080, snat, 40000).unwrap();
    assert_eq!(
        (reply.src(), reply.src_port(), reply.dst(), reply.dst_port()),
        (ep, 8080, snat, 40000)
    );
    assert_eq!((reply.proto(), reply.family()), (k.proto(), Family::V4));
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    assert!(k.rewritten(v6, 1, snat, 2).is_none(), "families do not mix");
}
