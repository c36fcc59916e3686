//! Property tests: frames emitted by smoltcp's Reprs parse back to the same fields, and
//! parse_frame (plus everything check_frame runs on its result) never panics on arbitrary
//! bytes or on mutations of valid frames.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetRepr, Icmpv4Packet, Icmpv4Repr,
    Icmpv6Packet, Icmpv6Repr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr,
    TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket, UdpRepr,
};
use stack::fixtures;
use stack::fuzzing::check_frame;
use stack::parse::{parse_frame, L4};
use stack::wire::{ArpOperation, EthernetProtocol, MacAddr};

#[derive(Debug, Clone, Copy)]
enum Upper {
    Udp { sp: u16, dp: u16 },
    Tcp { sp: u16, dp: u16, syn: bool },
    Echo { ident: u16, seq: u16 },
}

fn upper() -> impl Strategy<Value = Upper> {
    prop_oneof![
        (any::<u16>(), any::<u16>()).prop_map(|(sp, dp)| Upper::Udp { sp, dp }),
        (any::<u16>(), any::<u16>(), any::<bool>()).prop_map(|(sp, dp, syn)| Upper::Tcp {
            sp,
            dp,
            syn
        }),
        (any::<u16>(), any::<u16>()).prop_map(|(ident, seq)| Upper::Echo { ident, seq }),
    ]
}

fn l4_len(u: Upper, payload: usize) -> usize {
    match u {
        Upper::Udp { .. } | Upper::Echo { .. } => 8 + payload,
        Upper::Tcp { .. } => 20 + payload,
    }
}

/// Ethernet header + `vlans` tags (outermost first, 802.1ad then 802.1Q).
fn l2(ethertype: EthernetProtocol, vlans: &[u16]) -> Vec<u8> {
    let mut f = vec![0u8; 14];
    let tpid = |i: usize| {
        if i == 0 && vlans.len() == 2 {
            0x88a8u16
        } else {
            0x8100
        }
    };
    EthernetRepr {
        src_addr: EthernetAddress([2, 0, 0, 0, 0, 1]),
        dst_addr: EthernetAddress([2, 0, 0, 0, 0, 2]),
        ethertype: if vlans.is_empty() { ethertype } else { EthernetProtocol::Unknown(tpid(0)) },
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
    for (i, vid) in vlans.iter().enumerate() {
        f.extend_from_slice(&vid.to_be_bytes());
        let next: u16 = if i + 1 < vlans.len() { tpid(i + 1) } else { ethertype.into() };
        f.extend_from_slice(&next.to_be_bytes());
    }
    f
}

fn emit_l4(buf: &mut [u8], u: Upper, src: IpAddress, dst: IpAddress, payload: &[u8], v6: bool) {
    let caps = ChecksumCapabilities::default();
    match u {
        Upper::Udp { sp, dp } => UdpRepr { src_port: sp, dst_port: dp }.emit(
            &mut UdpPacket::new_unchecked(buf),
            &src,
            &dst,
            payload.len(),
            |b| b.copy_from_slice(payload),
            &caps,
        ),
        Upper::Tcp { sp, dp, syn } => TcpRepr {
            src_port: sp,
            dst_port: dp,
            control: if syn { TcpControl::Syn } else { TcpControl::None },
            seq_number: TcpSeqNumber(7),
            ack_number: None,
            window_len: 1000,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload,
        }
        .emit(&mut TcpPacket::new_unchecked(buf), &src, &dst, &caps),
        Upper::Echo { ident, seq } => {
            if v6 {
                let (IpAddress::Ipv6(s), IpAddress::Ipv6(d)) = (src, dst) else { unreachable!() };
                Icmpv6Repr::EchoRequest { ident, seq_no: seq, data: payload }.emit(
                    &s,
                    &d,
                    &mut Icmpv6Packet::new_unchecked(buf),
                    &caps,
                )
            } else {
                Icmpv4Repr::EchoRequest { ident, seq_no: seq, data: payload }
                    .emit(&mut Icmpv4Packet::new_unchecked(buf), &caps)
            }
        }
    }
}

fn proto(u: Upper, v6: bool) -> IpProtocol {
    match u {
        Upper::Udp { .. } => IpProtocol::Udp,
        Upper::Tcp { .. } => IpProtocol::Tcp,
        Upper::Echo { .. } if v6 => IpProtocol::Icmpv6,
        Upper::Echo { .. } => IpProtocol::Icmp,
    }
}

fn check_l4(parsed_l4: Option<stack::parse::L4Info>, u: Upper, offset: usize) {
    let l4 = parsed_l4.expect("L4 present");
    assert_eq!(usize::from(l4.l4_offset), offset);
    match (l4.header, u) {
        (L4::Udp { src_port, dst_port, .. }, Upper::Udp { sp, dp }) => {
            assert_eq!((src_port, dst_port), (sp, dp))
        }
        (L4::Tcp { src_port, dst_port, flags, header_len }, Upper::Tcp { sp, dp, syn }) => {
            assert_eq!((src_port, dst_port), (sp, dp));
            assert_eq!(flags & 0x02 != 0, syn);
            assert_eq!(header_len, 20);
        }
        (L4::Icmpv4 { icmp_type: 8, icmp_code: 0, ident }, Upper::Echo { ident: i, .. })
        | (L4::Icmpv6 { icmp_type: 128, icmp_code: 0, ident }, Upper::Echo { ident: i, .. }) => {
            assert_eq!(ident, i)
        }
        (got, want) => panic!("{got:?} for {want:?}"),
    }
}

fn vlans() -> impl Strategy<Value = Vec<u16>> {
    prop::collection::vec(0u16..4096, 0..=2)
}

proptest! {
    #[test]
    fn ipv4_emit_parse(
        src in any::<u32>(), dst in any::<u32>(), ttl in any::<u8>(), u in upper(),
        payload in prop::collection::vec(any::<u8>(), 0..64), vl in vlans(), pad in 0usize..40,
    ) {
        let (src, dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
        let mut f = l2(EthernetProtocol::Ipv4, &vl);
        let l3 = f.len();
        let len = l4_len(u, payload.len());
        f.resize(l3 + 20 + len, 0);
        let repr = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: proto(u, false),
            payload_len: len,
            hop_limit: ttl,
        };
        let caps = ChecksumCapabilities::default();
        repr.emit(&mut Ipv4Packet::new_unchecked(&mut f[l3..l3 + 20]), &caps);
        emit_l4(&mut f[l3 + 20..], u, IpAddress::Ipv4(src), IpAddress::Ipv4(dst), &payload, false);
        f.resize(f.len() + pad, 0);

        let p = parse_frame(&f).unwrap();
        prop_assert_eq!(usize::from(p.vlan_depth), vl.len());
        prop_assert_eq!(p.outer_vlan, vl.first().copied());
        prop_assert_eq!(p.inner_vlan, vl.get(1).copied());
        prop_assert_eq!(usize::from(p.l3_offset), l3);
        prop_assert_eq!(usize::from(p.l3_len), 20 + len);
        let v4 = p.ipv4().unwrap();
        prop_assert_eq!((v4.src, v4.dst, v4.ttl), (src, dst, ttl));
        prop_assert_eq!(v4.protocol, u8::from(proto(u, false)));
        prop_assert!(!v4.is_fragment);
        check_l4(p.l4, u, l3 + 20);
        prop_assert!(stack::l4::verify_l4_checksum(&f, &p));
        check_frame(&f);
    }

    #[test]
    fn ipv6_emit_parse(
        src in any::<u128>(), dst in any::<u128>(), hl in any::<u8>(), u in upper(),
        payload in prop::collection::vec(any::<u8>(), 0..64), vl in vlans(), pad in 0usize..40,
    ) {
        let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
        let mut f = l2(EthernetProtocol::Ipv6, &vl);
        let l3 = f.len();
        let len = l4_len(u, payload.len());
        f.resize(l3 + 40 + len, 0);
        Ipv6Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: proto(u, true),
            payload_len: len,
            hop_limit: hl,
        }
            .emit(&mut Ipv6Packet::new_unchecked(&mut f[l3..l3 + 40]));
        emit_l4(&mut f[l3 + 40..], u, IpAddress::Ipv6(src), IpAddress::Ipv6(dst), &payload, true);
        f.resize(f.len() + pad, 0);

        let p = parse_frame(&f).unwrap();
        prop_assert_eq!(usize::from(p.vlan_depth), vl.len());
        prop_assert_eq!(usize::from(p.l3_len), 40 + len);
        let v6 = p.ipv6().unwrap();
        prop_assert_eq!((v6.src, v6.dst, v6.hop_limit), (src, dst, hl));
        prop_assert_eq!(usize::from(v6.payload_len), len);
        prop_assert_eq!(v6.next_header, u8::from(proto(u, true)));
        prop_assert_eq!(usize::from(v6.l4_offset), l3 + 40);
        check_l4(p.l4, u, l3 + 40);
        prop_assert!(stack::l4::verify_l4_checksum(&f, &p));
        check_frame(&f);
    }

    #[test]
    fn arp_emit_parse(
        request in any::<bool>(), sm in any::<[u8; 6]>(), si in any::<u32>(),
        tm in any::<[u8; 6]>(), ti in any::<u32>(), vl in vlans(),
    ) {
        let mut f = l2(EthernetProtocol::Arp, &vl);
        let l3 = f.len();
        f.resize(l3 + 28, 0);
        ArpRepr::EthernetIpv4 {
            operation: if request { ArpOperation::Request } else { ArpOperation::Reply },
            source_hardware_addr: EthernetAddress(sm),
            source_protocol_addr: Ipv4Addr::from(si),
            target_hardware_addr: EthernetAddress(tm),
            target_protocol_addr: Ipv4Addr::from(ti),
        }
        .emit(&mut ArpPacket::new_unchecked(&mut f[l3..]));
        let p = parse_frame(&f).unwrap();
        let a = p.arp().unwrap();
        prop_assert_eq!(a.operation == ArpOperation::Request, request);
        prop_assert_eq!((a.sender_mac, a.sender_ip), (MacAddr(sm), Ipv4Addr::from(si)));
        prop_assert_eq!((a.target_mac, a.target_ip), (MacAddr(tm), Ipv4Addr::from(ti)));
        check_frame(&f);
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_frame(&data);
        check_frame(&data);
    }

    #[test]
    fn never_panics_on_ethernet_ip_prefixed_bytes(
        et in prop::sample::select(vec![0x0800u16, 0x86dd, 0x0806, 0x8100, 0x88a8, 0x9100]),
        first in any::<u8>(),
        data in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        // Random bodies behind a plausible EtherType reach the deeper parsers more often.
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        f.extend_from_slice(&et.to_be_bytes());
        f.push(first);
        f.extend_from_slice(&data);
        check_frame(&f);
    }

    #[test]
    fn never_panics_on_mutated_fixtures(
        which in 0..fixtures::ALL.len(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut f = fixtures::ALL[which].1.to_vec();
        for (i, b) in edits {
            let i = i.index(f.len());
            f[i] = b;
        }
        if truncate {
            let n = cut.index(f.len() + 1);
            f.truncate(n);
        }
        check_frame(&f);
    }
}

#[test]
fn check_frame_accepts_every_fixture() {
    for (_, f) in fixtures::ALL {
        check_frame(f);
    }
}
