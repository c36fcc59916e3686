//! ARP, ICMP, ND, TTL and checksum-completion builders, checked by re-parsing their output
//! with parse_frame and, independently, with smoltcp's Reprs (which verify checksums).

use std::net::{Ipv4Addr, Ipv6Addr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpPacket, ArpRepr, EthernetFrame, Icmpv4Packet, Icmpv4Repr, Icmpv6Packet, Icmpv6Repr,
    IpAddress, Ipv4Packet, Ipv4Repr, Ipv6Packet, NdiscRepr,
};
use stack::icmp::{self, Icmpv4Error, Icmpv6Error};
use stack::parse::{parse_frame, L4};
use stack::wire::{ArpOperation, MacAddr};
use stack::{arp, checksum, fixtures, ipv4, ipv6, l4, nd, BuildError};

const OUR_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
const HOST_MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
const OUR_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const HOST_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn smoltcp_icmpv4(frame: &[u8], l3: usize) -> Icmpv4Repr<'_> {
    let ip = Ipv4Packet::new_checked(&frame[l3..]).unwrap();
    let caps = ChecksumCapabilities::default();
    Ipv4Repr::parse(&ip, &caps).expect("IPv4 header (and checksum) valid");
    let icmp = Icmpv4Packet::new_checked(&frame[l3 + ip.header_len() as usize..]).unwrap();
    Icmpv4Repr::parse(&icmp, &caps).expect("ICMP valid (checksum verified)")
}

fn smoltcp_icmpv6(frame: &[u8], l3: usize) -> Icmpv6Repr<'_> {
    let ip = Ipv6Packet::new_checked(&frame[l3..]).unwrap();
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let icmp = Icmpv6Packet::new_checked(&frame[l3 + 40..]).unwrap();
    Icmpv6Repr::parse(&src, &dst, &icmp, &ChecksumCapabilities::default())
        .expect("ICMPv6 valid (checksum verified)")
}

// ---------------------------------------------------------------- ARP

#[test]
fn arp_reply_in_place() {
    let mut f = fixtures::ARP_REQUEST;
    let p = parse_frame(&f).unwrap();
    let n = arp::write_reply(&mut f, &p, OUR_MAC, OUR_V4).unwrap();
    assert_eq!(n, 42);
    let eth = EthernetFrame::new_checked(&f[..n]).unwrap();
    assert_eq!(MacAddr::from(eth.dst_addr()), HOST_MAC);
    assert_eq!(MacAddr::from(eth.src_addr()), OUR_MAC);
    let repr = ArpRepr::parse(&ArpPacket::new_checked(&f[14..n]).unwrap()).unwrap();
    let ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr,
        source_protocol_addr,
        target_hardware_addr,
        target_protocol_addr,
    } = repr
    else {
        unreachable!()
    };
    assert_eq!(operation, ArpOperation::Reply);
    assert_eq!(MacAddr::from(source_hardware_addr), OUR_MAC);
    assert_eq!(source_protocol_addr, OUR_V4);
    assert_eq!(MacAddr::from(target_hardware_addr), HOST_MAC);
    assert_eq!(target_protocol_addr, HOST_V4);
}

#[test]
fn arp_reply_rejects_replies_and_short_frames() {
    let mut f = fixtures::ARP_REPLY;
    let p = parse_frame(&f).unwrap();
    assert_eq!(arp::write_reply(&mut f, &p, OUR_MAC, OUR_V4), Err(BuildError::UnexpectedPacket));
    let mut f = fixtures::ARP_REQUEST;
    let p = parse_frame(&f).unwrap();
    assert_eq!(
        arp::write_reply(&mut f[..41], &p, OUR_MAC, OUR_V4),
        Err(BuildError::BufferTooSmall)
    );
    let mut ping = fixtures::ICMPV4_ECHO_REQUEST;
    let p = parse_frame(&ping).unwrap();
    assert_eq!(arp::write_reply(&mut ping, &p, OUR_MAC, OUR_V4), Err(BuildError::UnexpectedPacket));
}

#[test]
fn arp_request_and_gratuitous() {
    let mut buf = [0u8; 64];
    let n = arp::write_request(&mut buf, OUR_MAC, OUR_V4, HOST_V4).unwrap();
    assert_eq!(n, arp::FRAME_LEN);
    let p = parse_frame(&buf[..n]).unwrap();
    let a = p.arp().unwrap();
    assert_eq!(a.operation, ArpOperation::Request);
    assert_eq!((a.sender_mac, a.sender_ip), (OUR_MAC, OUR_V4));
    assert_eq!((a.target_mac, a.target_ip), (MacAddr::ZERO, HOST_V4));
    assert_eq!(buf[..6], [0xff; 6]);
    // Identical to the captured fixture apart from padding and the swapped roles.
    let n = arp::write_request(&mut buf, HOST_MAC, HOST_V4, OUR_V4).unwrap();
    assert_eq!(buf[..n], fixtures::ARP_REQUEST[..n]);

    let n = arp::write_gratuitous(&mut buf, OUR_MAC, OUR_V4).unwrap();
    let g = parse_frame(&buf[..n]).unwrap();
    let a = g.arp().unwrap();
    assert_eq!((a.sender_ip, a.target_ip), (OUR_V4, OUR_V4));
    assert_eq!(a.sender_mac, OUR_MAC);
    assert_eq!(
        arp::write_request(&mut buf[..41], OUR_MAC, OUR_V4, HOST_V4),
        Err(BuildError::BufferTooSmall)
    );
}

// ---------------------------------------------------------------- ICMP echo

#[test]
fn echo_reply_v4() {
    let mut f = fixtures::ICMPV4_ECHO_REQUEST;
    let p = parse_frame(&f).unwrap();
    let n = icmp::echo_reply_in_place_v4(&mut f, &p).unwrap();
    assert_eq!(n, 98);
    assert_eq!(f[..6], HOST_MAC.0);
    assert_eq!(f[6..12], OUR_MAC.0);
    let r = parse_frame(&f[..n]).unwrap();
    let v4 = r.ipv4().unwrap();
    assert_eq!((v4.src, v4.dst), (OUR_V4, HOST_V4));
    assert_eq!(v4.ttl, icmp::DEFAULT_TTL);
    match smoltcp_icmpv4(&f, 14) {
        Icmpv4Repr::EchoReply { ident, seq_no, data } => {
            assert_eq!((ident, seq_no), (0x1c46, 1));
            assert_eq!(data, &fixtures::ICMPV4_ECHO_REQUEST[42..]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn echo_reply_v4_refusals() {
    // Broadcast destination MAC.
    let mut f = fixtures::ICMPV4_ECHO_REQUEST;
    f[..6].copy_from_slice(&[0xff; 6]);
    let p = parse_frame(&f).unwrap();
    assert_eq!(icmp::echo_reply_in_place_v4(&mut f, &p), Err(BuildError::NotUnicast));
    // Not an echo request.
    let mut f = fixtures::TCP_SYN;
    let p = parse_frame(&f).unwrap();
    assert_eq!(icmp::echo_reply_in_place_v4(&mut f, &p), Err(BuildError::UnexpectedPacket));
    let mut f = fixtures::ICMPV4_ECHO_REQUEST;
    let p = parse_frame(&f).unwrap();
    assert_eq!(icmp::echo_reply_in_place_v4(&mut f[..90], &p), Err(BuildError::BufferTooSmall));
}

#[test]
fn echo_reply_v6() {
    let mut f = fixtures::ICMPV6_ECHO_REQUEST;
    let p = parse_frame(&f).unwrap();
    let n = icmp::echo_reply_in_place_v6(&mut f, &p).unwrap();
    assert_eq!(n, 78);
    let r = parse_frame(&f[..n]).unwrap();
    let v = r.ipv6().unwrap();
    assert_eq!((v.src, v.dst), (v6("2001:db8::1"), v6("2001:db8::2")));
    assert_eq!(v.hop_limit, icmp::DEFAULT_TTL);
    match smoltcp_icmpv6(&f, 14) {
        Icmpv6Repr::EchoReply { ident, seq_no, data } => {
            assert_eq!((ident, seq_no), (0x1234, 1));
            assert_eq!(data, &fixtures::ICMPV6_ECHO_REQUEST[62..]);
        }
        other => panic!("{other:?}"),
    }
    // A multicast destination is refused.
    let mut f = fixtures::ICMPV6_ECHO_REQUEST;
    f[38] = 0xff;
    let p = parse_frame(&f).unwrap();
    assert_eq!(icmp::echo_reply_in_place_v6(&mut f, &p), Err(BuildError::NotUnicast));
}

// ---------------------------------------------------------------- TTL

#[test]
fn decrement_ttl_keeps_checksum_valid() {
    let mut f = fixtures::TCP_SYN;
    let mut expected = 64;
    while expected > 1 {
        expected -= 1;
        assert_eq!(ipv4::decrement_ttl(&mut f, 14), Ok(expected));
        let p = parse_frame(&f).expect("checksum still valid");
        assert_eq!(p.ipv4().unwrap().ttl, expected);
    }
    let before = f;
    assert_eq!(ipv4::decrement_ttl(&mut f, 14), Err(BuildError::TtlExpired));
    assert_eq!(f, before, "untouched on error");
    assert_eq!(ipv4::decrement_ttl(&mut f[..33], 14), Err(BuildError::BufferTooSmall));
    // Behind a VLAN tag.
    let mut f = fixtures::VLAN_UDP_DNS;
    assert_eq!(ipv4::decrement_ttl(&mut f, 18), Ok(63));
    assert!(parse_frame(&f).is_ok());
}

#[test]
fn decrement_hop_limit() {
    let mut f = fixtures::ICMPV6_ECHO_REQUEST;
    assert_eq!(ipv6::decrement_hop_limit(&mut f, 14), Ok(63));
    assert_eq!(parse_frame(&f).unwrap().ipv6().unwrap().hop_limit, 63);
    f[21] = 1;
    assert_eq!(ipv6::decrement_hop_limit(&mut f, 14), Err(BuildError::TtlExpired));
    assert_eq!(f[21], 1);
    assert_eq!(ipv6::decrement_hop_limit(&mut f[..53], 14), Err(BuildError::BufferTooSmall));
}

// ---------------------------------------------------------------- ICMP errors

#[test]
fn time_exceeded_v4_quotes_whole_small_packet() {
    let orig = fixtures::TCP_SYN;
    let p = parse_frame(&orig).unwrap();
    let mut out = [0u8; 1500];
    let n = icmp::write_error_v4(
        &mut out,
        &orig,
        &p,
        Icmpv4Error::TimeExceeded,
        OUR_V4,
        OUR_MAC,
        HOST_MAC,
    )
    .unwrap();
    assert_eq!(n, 14 + 20 + 8 + 60);
    let e = parse_frame(&out[..n]).unwrap();
    let v4 = e.ipv4().unwrap();
    assert_eq!((v4.src, v4.dst), (OUR_V4, Ipv4Addr::new(198, 18, 0, 2)));
    assert_eq!(v4.protocol, 1);
    assert_eq!(e.l4.unwrap().header, L4::Icmpv4 { icmp_type: 11, icmp_code: 0, ident: 0 });
    assert_eq!(out[42..n], orig[14..]);
    assert!(l4::verify_l4_checksum(&out[..n], &e));
    // smoltcp agrees on the message and checksum.
    assert!(matches!(smoltcp_icmpv4(&out, 14), Icmpv4Repr::TimeExceeded { .. }));
    // An ICMP error is never answered with another one.
    assert!(!icmp::may_send_icmp_error(&e, &out[..n]));
}

#[test]
fn frag_needed_v4_is_capped_at_576_and_carries_mtu() {
    // A 1500-byte IPv4 UDP packet.
    let mut orig = vec![0u8; 14 + 1500];
    orig[..14].copy_from_slice(&fixtures::TCP_SYN[..14]);
    let ip = &mut orig[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&1500u16.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&HOST_V4.octets());
    ip[16..20].copy_from_slice(&[192, 0, 2, 8]);
    let c = checksum::checksum(&ip[..20]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip[24..26].copy_from_slice(&1480u16.to_be_bytes());
    let p = parse_frame(&orig).unwrap();
    let mut out = [0u8; 2048];
    let n = icmp::write_error_v4(
        &mut out,
        &orig,
        &p,
        Icmpv4Error::FragNeeded { next_hop_mtu: 1400 },
        OUR_V4,
        OUR_MAC,
        HOST_MAC,
    )
    .unwrap();
    assert_eq!(n - 14, icmp::IPV4_ERROR_MAX_LEN);
    assert_eq!(out[34], 3);
    assert_eq!(out[35], 4);
    assert_eq!(u16::from_be_bytes([out[40], out[41]]), 1400);
    assert_eq!(out[42..n], orig[14..14 + 576 - 28]);
    let e = parse_frame(&out[..n]).unwrap();
    assert!(l4::verify_l4_checksum(&out[..n], &e));
    // A small output buffer shortens the quote but keeps header + 8 bytes.
    let mut small = [0u8; 14 + 28 + 28];
    let n = icmp::write_error_v4(
        &mut small,
        &orig,
        &p,
        Icmpv4Error::HostUnreachable,
        OUR_V4,
        OUR_MAC,
        HOST_MAC,
    )
    .unwrap();
    assert_eq!(n, small.len());
    let mut tiny = [0u8; 14 + 28 + 27];
    assert_eq!(
        icmp::write_error_v4(
            &mut tiny,
            &orig,
            &p,
            Icmpv4Error::NetUnreachable,
            OUR_V4,
            OUR_MAC,
            HOST_MAC
        ),
        Err(BuildError::BufferTooSmall)
    );
}

#[test]
fn icmpv4_error_codes() {
    let orig = fixtures::QINQ_UDP;
    let p = parse_frame(&orig).unwrap();
    let mut out = [0u8; 600];
    for (kind, t, c) in [
        (Icmpv4Error::TimeExceeded, 11, 0),
        (Icmpv4Error::NetUnreachable, 3, 0),
        (Icmpv4Error::HostUnreachable, 3, 1),
        (Icmpv4Error::ProtocolUnreachable, 3, 2),
        (Icmpv4Error::PortUnreachable, 3, 3),
        (Icmpv4Error::FragNeeded { next_hop_mtu: 9000 }, 3, 4),
        (Icmpv4Error::AdminProhibited, 3, 13),
        (Icmpv4Error::ParameterProblem { pointer: 22 }, 12, 0),
    ] {
        let n = icmp::write_error_v4(&mut out, &orig, &p, kind, OUR_V4, OUR_MAC, HOST_MAC).unwrap();
        // Padding of the original QinQ frame is not quoted.
        assert_eq!(n, 14 + 28 + 33);
        assert_eq!((out[34], out[35]), (t, c), "{kind:?}");
        if t == 12 {
            assert_eq!(out[38], 22, "the pointer is the first byte after the checksum");
        }
        assert_eq!(checksum::sum(&out[34..n]), 0xffff);
    }
}

#[test]
fn icmpv6_errors() {
    let orig = fixtures::ICMPV6_ECHO_REQUEST;
    let p = parse_frame(&orig).unwrap();
    let me = v6("2001:db8::fe");
    let mut out = [0u8; 1600];
    for (kind, t, c, rest) in [
        (Icmpv6Error::TimeExceeded, 3, 0, 0u32),
        (Icmpv6Error::NoRoute, 1, 0, 0),
        (Icmpv6Error::AdminProhibited, 1, 1, 0),
        (Icmpv6Error::AddressUnreachable, 1, 3, 0),
        (Icmpv6Error::PortUnreachable, 1, 4, 0),
        (Icmpv6Error::PacketTooBig { mtu: 1280 }, 2, 0, 1280),
    ] {
        let n = icmp::write_error_v6(&mut out, &orig, &p, kind, me, OUR_MAC, HOST_MAC).unwrap();
        assert_eq!(n, 14 + 48 + 64);
        let e = parse_frame(&out[..n]).unwrap();
        let ip = e.ipv6().unwrap();
        assert_eq!((ip.src, ip.dst), (me, v6("2001:db8::2")));
        assert_eq!((out[54], out[55]), (t, c));
        assert_eq!(u32::from_be_bytes([out[58], out[59], out[60], out[61]]), rest);
        assert_eq!(out[62..n], orig[14..]);
        assert!(l4::verify_l4_checksum(&out[..n], &e));
        assert!(!icmp::may_send_icmp_error(&e, &out[..n]));
    }
    // smoltcp parses the packet-too-big message and verifies its checksum.
    let n = icmp::write_error_v6(
        &mut out,
        &orig,
        &p,
        Icmpv6Error::PacketTooBig { mtu: 1400 },
        me,
        OUR_MAC,
        HOST_MAC,
    )
    .unwrap();
    assert!(matches!(smoltcp_icmpv6(&out[..n], 14), Icmpv6Repr::PktTooBig { mtu: 1400, .. }));
}

#[test]
fn icmpv6_error_capped_at_1280() {
    // A 1500-byte IPv6 UDP packet.
    let mut orig = vec![0u8; 14 + 1500];
    orig[..14].copy_from_slice(&fixtures::ICMPV6_ECHO_REQUEST[..14]);
    orig[14] = 0x60;
    orig[18..20].copy_from_slice(&1460u16.to_be_bytes());
    orig[20] = 17;
    orig[21] = 64;
    orig[22..38].copy_from_slice(&v6("2001:db8::2").octets());
    orig[38..54].copy_from_slice(&v6("2001:db8:1::9").octets());
    orig[58..60].copy_from_slice(&1460u16.to_be_bytes());
    let p = parse_frame(&orig).unwrap();
    let mut out = [0u8; 2000];
    let n = icmp::write_error_v6(
        &mut out,
        &orig,
        &p,
        Icmpv6Error::PacketTooBig { mtu: 1280 },
        v6("2001:db8::fe"),
        OUR_MAC,
        HOST_MAC,
    )
    .unwrap();
    assert_eq!(n - 14, icmp::IPV6_ERROR_MAX_LEN);
    let e = parse_frame(&out[..n]).unwrap();
    assert_eq!(usize::from(e.l3_len), 1280);
    assert!(l4::verify_l4_checksum(&out[..n], &e));
}

#[test]
fn may_send_icmp_error_rules() {
    let check = |f: &[u8]| icmp::may_send_icmp_error(&parse_frame(f).unwrap(), f);
    assert!(check(&fixtures::TCP_SYN));
    assert!(check(&fixtures::ICMPV4_ECHO_REQUEST), "echo is informational");
    assert!(check(&fixtures::ICMPV6_ECHO_REQUEST));
    assert!(check(&fixtures::IPV6_HBH_FRAG_UDP), "first fragments may be answered");
    assert!(!check(&fixtures::IPV4_FRAGMENT_NONFIRST));
    assert!(!check(&fixtures::ARP_REQUEST));
    // Multicast destination (NS to solicited-node, 33:33 MAC).
    assert!(!check(&fixtures::IPV6_NS));
    // Link-layer broadcast.
    let mut f = fixtures::TCP_SYN;
    f[..6].copy_from_slice(&[0xff; 6]);
    assert!(!check(&f));
    // IP-level limited broadcast / multicast destination, bad sources.
    for (at, addr) in [
        (30, [255, 255, 255, 255]),
        (30, [224, 0, 0, 251]),
        (26, [0, 0, 0, 0]),
        (26, [127, 0, 0, 1]),
        (26, [224, 1, 2, 3]),
        (26, [240, 0, 0, 1]),
    ] {
        let mut f = fixtures::TCP_SYN;
        let old = u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]]);
        f[at..at + 4].copy_from_slice(&addr);
        let c = u16::from_be_bytes([f[24], f[25]]);
        let c = checksum::update32(c, old, u32::from_be_bytes(addr));
        f[24..26].copy_from_slice(&c.to_be_bytes());
        assert!(!check(&f), "{addr:?} at {at}");
    }
    // An ICMPv4 error (destination unreachable) is not answered.
    let mut f = fixtures::ICMPV4_ECHO_REQUEST;
    f[34] = 3;
    assert!(!check(&f));
    // ICMPv6 errors (type < 128) and redirects are not answered.
    for t in [1u8, 2, 3, 4, 137] {
        let mut f = fixtures::ICMPV6_ECHO_REQUEST;
        f[54] = t;
        assert!(!check(&f), "type {t}");
    }
    // IPv6 unspecified source.
    let mut f = fixtures::ICMPV6_ECHO_REQUEST;
    f[22..38].fill(0);
    assert!(!check(&f));
}

// ---------------------------------------------------------------- ND

#[test]
fn parse_ns_fixture() {
    let p = parse_frame(&fixtures::IPV6_NS).unwrap();
    let ns = nd::parse_ns(&fixtures::IPV6_NS, &p).unwrap();
    assert_eq!(ns.target, v6("2001:db8::1"));
    assert_eq!(ns.source_ll, Some(HOST_MAC));
    assert!(!ns.is_dad);
    assert_eq!(nd::parse_na(&fixtures::IPV6_NS, &p), Err(nd::NdError::NotNd));
}

#[test]
fn parse_na_fixture() {
    let p = parse_frame(&fixtures::IPV6_NA).unwrap();
    let na = nd::parse_na(&fixtures::IPV6_NA, &p).unwrap();
    assert_eq!(na.target, v6("2001:db8::1"));
    assert_eq!(na.target_ll, Some(OUR_MAC));
    assert!(na.router && na.solicited && na.override_);
}

#[test]
fn nd_validation_errors() {
    let ns = |f: &[u8]| nd::parse_ns(f, &parse_frame(f).unwrap());
    // Hop limit not 255.
    let mut f = fixtures::IPV6_NS;
    f[21] = 64;
    assert_eq!(ns(&f), Err(nd::NdError::BadHopLimit));
    // Code not 0.
    let mut f = fixtures::IPV6_NS;
    f[55] = 1;
    assert_eq!(ns(&f), Err(nd::NdError::BadCode));
    // Bad checksum.
    let mut f = fixtures::IPV6_NS;
    f[85] ^= 0xff;
    assert_eq!(ns(&f), Err(nd::NdError::BadChecksum));
    // Option length 0 (fix the checksum so only the option is wrong).
    let mut f = fixtures::IPV6_NS;
    let old = u16::from_be_bytes([f[78], f[79]]);
    f[79] = 0;
    let c = checksum::update16(
        u16::from_be_bytes([f[56], f[57]]),
        old,
        u16::from_be_bytes([f[78], f[79]]),
    );
    f[56..58].copy_from_slice(&c.to_be_bytes());
    assert_eq!(ns(&f), Err(nd::NdError::BadOption));
    // Truncated: a 16-byte "NS".
    let mut f = fixtures::IPV6_NS[..70].to_vec();
    f[18..20].copy_from_slice(&16u16.to_be_bytes());
    assert_eq!(ns(&f), Err(nd::NdError::Truncated));
    // Multicast target.
    let mut out = [0u8; 128];
    let n = nd::write_ns(&mut out, OUR_MAC, v6("fe80::1"), v6("ff02::1")).unwrap();
    assert_eq!(ns(&out[..n]), Err(nd::NdError::MulticastTarget));
    // DAD NS (unspecified source) must not carry a source link-layer option.
    let n = nd::write_ns(&mut out, OUR_MAC, Ipv6Addr::UNSPECIFIED, v6("2001:db8::5")).unwrap();
    assert_eq!(ns(&out[..n]), Err(nd::NdError::BadSource));
    // An NS or NA from a multicast source: answering it would send a solicited NA to a group.
    for kind in [nd::NEIGHBOR_SOLICIT, nd::NEIGHBOR_ADVERT] {
        let n = nd::write_ns(&mut out, OUR_MAC, v6("ff02::1"), v6("2001:db8::5")).unwrap();
        out[54] = kind;
        let p = parse_frame(&out[..n]).unwrap();
        let c = stack::l4::fill_l4_checksum(&mut out[..n], &p);
        assert!(c.is_ok());
        let p = parse_frame(&out[..n]).unwrap();
        let got = if kind == nd::NEIGHBOR_SOLICIT {
            nd::parse_ns(&out[..n], &p).map(|_| ())
        } else {
            nd::parse_na(&out[..n], &p).map(|_| ())
        };
        assert_eq!(got, Err(nd::NdError::BadSource));
    }
    // NA with Solicited set to a multicast destination.
    let mut out = [0u8; 128];
    let n = nd::write_na(
        &mut out,
        OUR_MAC,
        v6("2001:db8::1"),
        MacAddr([0x33, 0x33, 0, 0, 0, 1]),
        v6("ff02::1"),
        v6("2001:db8::1"),
        true,
    )
    .unwrap();
    let p = parse_frame(&out[..n]).unwrap();
    assert_eq!(nd::parse_na(&out[..n], &p), Err(nd::NdError::SolicitedToMulticast));
}

#[test]
fn write_ns_matches_rfc4861() {
    let mut out = [0u8; 100];
    let me = v6("fe80::5054:ff:fe12:3456");
    let target = v6("2001:db8::abcd:1234");
    let n = nd::write_ns(&mut out, OUR_MAC, me, target).unwrap();
    assert_eq!(n, nd::FRAME_LEN);
    assert_eq!(out[..6], [0x33, 0x33, 0xff, 0xcd, 0x12, 0x34]);
    let p = parse_frame(&out[..n]).unwrap();
    let ip = p.ipv6().unwrap();
    assert_eq!(ip.dst, v6("ff02::1:ffcd:1234"));
    assert_eq!(ip.hop_limit, 255);
    let parsed = nd::parse_ns(&out[..n], &p).unwrap();
    assert_eq!(parsed.target, target);
    assert_eq!(parsed.source_ll, Some(OUR_MAC));
    // smoltcp agrees.
    match smoltcp_icmpv6(&out[..n], 14) {
        Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr, lladdr }) => {
            assert_eq!(target_addr, target);
            assert_eq!(lladdr.map(|l| l.as_bytes().to_vec()), Some(OUR_MAC.0.to_vec()));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(nd::write_ns(&mut out[..85], OUR_MAC, me, target), Err(BuildError::BufferTooSmall));
}

#[test]
fn write_na_answers_fixture_ns() {
    let p = parse_frame(&fixtures::IPV6_NS).unwrap();
    let ns = nd::parse_ns(&fixtures::IPV6_NS, &p).unwrap();
    let mut out = [0u8; 100];
    let n = nd::write_na(
        &mut out,
        OUR_MAC,
        ns.target,
        ns.source_ll.unwrap(),
        p.ipv6().unwrap().src,
        ns.target,
        true,
    )
    .unwrap();
    // Byte-identical to the independently built fixture NA.
    assert_eq!(out[..n], fixtures::IPV6_NA);
}

#[test]
fn solicited_node_addresses() {
    assert_eq!(nd::solicited_node(v6("2001:db8::1")), v6("ff02::1:ff00:1"));
    assert_eq!(nd::solicited_node(v6("fe80::5054:ff:fe12:3456")), v6("ff02::1:ff12:3456"));
    assert_eq!(
        nd::multicast_mac(v6("ff02::1:ff12:3456")),
        MacAddr([0x33, 0x33, 0xff, 0x12, 0x34, 0x56])
    );
}

// ---------------------------------------------------------------- L4 checksums

/// Replaces the TCP checksum of TCP_SYN by the pseudo-header sum (CHECKSUM_PARTIAL form).
fn partial_syn() -> [u8; 74] {
    let mut f = fixtures::TCP_SYN;
    let pseudo = checksum::pseudo_header_v4(
        Ipv4Addr::new(198, 18, 0, 2),
        Ipv4Addr::new(192, 0, 2, 34),
        6,
        40,
    );
    f[50..52].copy_from_slice(&pseudo.to_be_bytes());
    f
}

#[test]
fn complete_partial_tcp_checksum() {
    let mut f = partial_syn();
    let p = parse_frame(&f).unwrap();
    assert!(!l4::verify_l4_checksum(&f, &p));
    l4::complete_l4_checksum(&mut f, &p).unwrap();
    assert_eq!(f, fixtures::TCP_SYN);
    assert!(l4::verify_l4_checksum(&f, &p));
}

#[test]
fn complete_partial_udp_checksum_v6_and_padding() {
    // QinQ UDP over IPv4 with padding: padding must not enter the sum.
    let mut f = fixtures::QINQ_UDP;
    let p = parse_frame(&f).unwrap();
    let pseudo = checksum::pseudo_header_v4(
        Ipv4Addr::new(198, 19, 0, 2),
        Ipv4Addr::new(198, 19, 0, 1),
        17,
        13,
    );
    f[48..50].copy_from_slice(&pseudo.to_be_bytes());
    f[55..].fill(0xaa); // garbage padding
    l4::complete_l4_checksum(&mut f, &p).unwrap();
    assert_eq!(f[48..50], fixtures::QINQ_UDP[48..50]);
    assert!(l4::verify_l4_checksum(&f, &p));

    // UDP over IPv6 built by smoltcp, then re-completed from the partial form.
    let src = v6("2001:db8::2");
    let dst = v6("2001:db8::1");
    let mut frame = vec![0u8; 14 + 40 + 8 + 11];
    frame[12..14].copy_from_slice(&[0x86, 0xdd]);
    smoltcp::wire::Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: smoltcp::wire::IpProtocol::Udp,
        payload_len: 19,
        hop_limit: 64,
    }
    .emit(&mut Ipv6Packet::new_unchecked(&mut frame[14..54]));
    smoltcp::wire::UdpRepr { src_port: 1234, dst_port: 53 }.emit(
        &mut smoltcp::wire::UdpPacket::new_unchecked(&mut frame[54..]),
        &IpAddress::Ipv6(src),
        &IpAddress::Ipv6(dst),
        11,
        |b| b.copy_from_slice(b"hello world"),
        &ChecksumCapabilities::default(),
    );
    let good = frame.clone();
    let p = parse_frame(&frame).unwrap();
    assert!(l4::verify_l4_checksum(&frame, &p));
    let pseudo = checksum::pseudo_header_v6(src, dst, 17, 19);
    frame[60..62].copy_from_slice(&pseudo.to_be_bytes());
    l4::complete_l4_checksum(&mut frame, &p).unwrap();
    assert_eq!(frame, good);
    // fill_l4_checksum computes the same from garbage.
    frame[60..62].copy_from_slice(&[0x12, 0x34]);
    l4::fill_l4_checksum(&mut frame, &p).unwrap();
    assert_eq!(frame, good);
}

#[test]
fn complete_checksum_refusals() {
    let mut f = fixtures::ICMPV4_ECHO_REQUEST;
    let p = parse_frame(&f).unwrap();
    assert_eq!(l4::complete_l4_checksum(&mut f, &p), Err(BuildError::UnexpectedPacket));
    let mut f = fixtures::IPV6_HBH_FRAG_UDP;
    let p = parse_frame(&f).unwrap();
    assert_eq!(l4::complete_l4_checksum(&mut f, &p), Err(BuildError::Fragmented));
    let mut f = fixtures::TCP_SYN;
    let p = parse_frame(&f).unwrap();
    assert_eq!(l4::complete_l4_checksum(&mut f[..60], &p), Err(BuildError::BufferTooSmall));
}
