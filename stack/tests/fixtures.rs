//! parse_frame on real frames: every field checked against the fixture's known contents.

use std::net::{Ipv4Addr, Ipv6Addr};

use stack::fixtures;
use stack::parse::{parse_frame, tcp_flags, L3, L4};
use stack::wire::{ArpOperation, EthernetProtocol, MacAddr};

const ROUTER: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
const HOST: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);

#[test]
fn icmpv4_echo_request() {
    let p = parse_frame(&fixtures::ICMPV4_ECHO_REQUEST).unwrap();
    assert_eq!(p.vlan_depth, 0);
    assert_eq!(p.outer_vlan, None);
    assert_eq!(p.ethertype, EthernetProtocol::Ipv4);
    assert_eq!(p.l3_offset, 14);
    assert_eq!(p.l3_len, 84);
    let v4 = p.ipv4().unwrap();
    assert_eq!(v4.src, Ipv4Addr::new(198, 18, 1, 10));
    assert_eq!(v4.dst, Ipv4Addr::new(198, 18, 1, 1));
    assert_eq!(v4.header_len, 20);
    assert_eq!(v4.total_len, 84);
    assert_eq!(v4.ttl, 64);
    assert_eq!(v4.protocol, 1);
    assert_eq!(v4.ident, 0x4f3a);
    assert!(v4.dont_fragment);
    assert!(!v4.has_options && !v4.is_fragment && !v4.is_first_fragment);
    let l4 = p.l4.unwrap();
    assert_eq!(l4.l4_offset, 34);
    assert_eq!(l4.header, L4::Icmpv4 { icmp_type: 8, icmp_code: 0, ident: 0x1c46 });
}

#[test]
fn arp_request_with_padding() {
    let p = parse_frame(&fixtures::ARP_REQUEST).unwrap();
    assert_eq!(p.ethertype, EthernetProtocol::Arp);
    assert_eq!(p.l3_len, 28);
    assert_eq!(p.l4, None);
    let L3::Arp(arp) = p.l3 else { panic!("not ARP: {p:?}") };
    assert_eq!(arp.operation, ArpOperation::Request);
    assert_eq!(arp.sender_mac, HOST);
    assert_eq!(arp.sender_ip, Ipv4Addr::new(198, 18, 1, 10));
    assert_eq!(arp.target_mac, MacAddr::ZERO);
    assert_eq!(arp.target_ip, Ipv4Addr::new(198, 18, 1, 1));
}

#[test]
fn arp_reply() {
    let p = parse_frame(&fixtures::ARP_REPLY).unwrap();
    let arp = p.arp().unwrap();
    assert_eq!(arp.operation, ArpOperation::Reply);
    assert_eq!(arp.sender_mac, ROUTER);
    assert_eq!(arp.target_mac, HOST);
}

#[test]
fn ipv6_neighbor_solicitation() {
    let p = parse_frame(&fixtures::IPV6_NS).unwrap();
    assert_eq!(p.ethertype, EthernetProtocol::Ipv6);
    assert_eq!(p.l3_len, 72);
    let v6 = p.ipv6().unwrap();
    assert_eq!(v6.src, "fe80::42:acff:fe11:2".parse::<Ipv6Addr>().unwrap());
    assert_eq!(v6.dst, "ff02::1:ff00:1".parse::<Ipv6Addr>().unwrap());
    assert_eq!(v6.hop_limit, 255);
    assert_eq!(v6.payload_len, 32);
    assert_eq!(v6.next_header, 58);
    assert_eq!(v6.ext_headers, 0);
    assert_eq!(v6.l4_offset, 54);
    assert!(!v6.is_fragment);
    assert!(matches!(p.l4.unwrap().header, L4::Icmpv6 { icmp_type: 135, icmp_code: 0, .. }));
}

#[test]
fn tcp_syn_with_options() {
    let p = parse_frame(&fixtures::TCP_SYN).unwrap();
    let v4 = p.ipv4().unwrap();
    assert_eq!(v4.src, Ipv4Addr::new(198, 18, 0, 2));
    assert_eq!(v4.dst, Ipv4Addr::new(192, 0, 2, 34));
    assert_eq!(v4.protocol, 6);
    let l4 = p.l4.unwrap();
    assert_eq!(l4.l4_offset, 34);
    assert_eq!(
        l4.header,
        L4::Tcp { src_port: 51234, dst_port: 443, flags: tcp_flags::SYN, header_len: 40 }
    );
    assert_eq!(l4.header.ports(), Some((51234, 443)));
    assert_eq!(l4.header.protocol(), 6);
}

#[test]
fn vlan_udp_dns() {
    let p = parse_frame(&fixtures::VLAN_UDP_DNS).unwrap();
    assert_eq!(p.vlan_depth, 1);
    assert_eq!(p.outer_vlan, Some(100));
    assert_eq!(p.inner_vlan, None);
    assert_eq!(p.ethertype, EthernetProtocol::Ipv4);
    assert_eq!(p.l3_offset, 18);
    assert_eq!(usize::from(p.l3_len), fixtures::VLAN_UDP_DNS.len() - 18);
    let l4 = p.l4.unwrap();
    assert_eq!(l4.l4_offset, 38);
    assert_eq!(l4.header, L4::Udp { src_port: 53000, dst_port: 53, length: 37 });
}

#[test]
fn qinq_udp_ignores_padding() {
    let p = parse_frame(&fixtures::QINQ_UDP).unwrap();
    assert_eq!(p.vlan_depth, 2);
    assert_eq!(p.outer_vlan, Some(10));
    assert_eq!(p.inner_vlan, Some(20));
    assert_eq!(p.l3_offset, 22);
    // 20 IP + 8 UDP + 5 "hello"; the frame is padded to 60.
    assert_eq!(p.l3_len, 33);
    assert_eq!(p.l3_end(), 55);
    assert_eq!(fixtures::QINQ_UDP.len(), 60);
    assert_eq!(p.l4.unwrap().header.ports(), Some((4000, 5000)));
}

#[test]
fn icmpv6_echo_request() {
    let p = parse_frame(&fixtures::ICMPV6_ECHO_REQUEST).unwrap();
    let v6 = p.ipv6().unwrap();
    assert_eq!(v6.src, "2001:db8::2".parse::<Ipv6Addr>().unwrap());
    assert_eq!(v6.hop_limit, 64);
    assert_eq!(p.l4.unwrap().header, L4::Icmpv6 { icmp_type: 128, icmp_code: 0, ident: 0x1234 });
}

#[test]
fn ipv6_ext_headers_and_first_fragment() {
    let p = parse_frame(&fixtures::IPV6_HBH_FRAG_UDP).unwrap();
    let v6 = p.ipv6().unwrap();
    assert_eq!(v6.ext_headers, 2);
    assert_eq!(v6.next_header, 17);
    assert_eq!(v6.l4_offset, 14 + 40 + 8 + 8);
    assert!(v6.is_fragment);
    assert!(v6.is_first_fragment);
    assert!(!p.is_non_first_fragment());
    // The UDP length (1008) describes the whole datagram, not this fragment.
    assert_eq!(p.l4.unwrap().header, L4::Udp { src_port: 5353, dst_port: 5353, length: 1008 });
}

#[test]
fn ipv4_non_first_fragment_has_no_l4() {
    let p = parse_frame(&fixtures::IPV4_FRAGMENT_NONFIRST).unwrap();
    let v4 = p.ipv4().unwrap();
    assert!(v4.is_fragment);
    assert!(!v4.is_first_fragment);
    assert_eq!(v4.frag_offset, 185);
    assert!(p.is_non_first_fragment());
    assert_eq!(p.l4, None);
    assert_eq!(p.upper_layer_offset(), Some(34));
}

#[test]
fn every_fixture_parses() {
    for (name, frame) in fixtures::ALL {
        let p = parse_frame(frame).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(p.l3_end() <= frame.len(), "{name}");
    }
}
