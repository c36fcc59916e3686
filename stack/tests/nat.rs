//! NAT rewrites patch checksums incrementally to exactly what a full recomputation gives.
#![allow(clippy::too_many_arguments, clippy::cast_possible_truncation)] // test frame builder; IPv4 addresses are the low 32 bits

use proptest::prelude::*;
use stack::checksum::{checksum, l4_checksum_v4, l4_checksum_v6};
use stack::nat::{rewrite, translate_v4, SocketAddr, V4Deltas};
use stack::parse::{parse_frame, L3, L4};
use stack::PackedV4;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The checksum as sent: UDP sends a computed zero as all ones (RFC 768), zero meaning "none".
fn sent_checksum(c: u16, tcp: bool) -> u16 {
    if c == 0 && !tcp {
        0xffff
    } else {
        c
    }
}

/// An Ethernet frame with a TCP or UDP packet carrying `payload`, all checksums valid (a UDP
/// checksum of zero when `udp_zero` and IPv4).
fn frame(
    v6: bool,
    src: u128,
    dst: u128,
    sp: u16,
    dp: u16,
    tcp: bool,
    payload: &[u8],
    udp_zero: bool,
) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sp.to_be_bytes());
    l4.extend_from_slice(&dp.to_be_bytes());
    if tcp {
        l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        let len = u16::try_from(8 + payload.len()).unwrap();
        l4.extend_from_slice(&len.to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
    }
    l4.extend_from_slice(payload);
    let proto = if tcp { 6 } else { 17 };
    let at = if tcp { 16 } else { 6 };
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    if v6 {
        let (s, d) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
        let c = sent_checksum(l4_checksum_v6(s, d, proto, &l4), tcp);
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&u16::try_from(l4.len()).unwrap().to_be_bytes());
        f.extend_from_slice(&[proto, 64]);
        f.extend_from_slice(&s.octets());
        f.extend_from_slice(&d.octets());
    } else {
        let (s, d) = (Ipv4Addr::from(src as u32), Ipv4Addr::from(dst as u32));
        if !udp_zero || tcp {
            let c = sent_checksum(l4_checksum_v4(s, d, proto, &l4), tcp);
            l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&u16::try_from(20 + l4.len()).unwrap().to_be_bytes());
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&s.octets());
        ip[16..20].copy_from_slice(&d.octets());
        let c = checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&ip);
    }
    f.extend_from_slice(&l4);
    f
}

fn addr(v6: bool, x: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(x))
    } else {
        IpAddr::V4(Ipv4Addr::from(x as u32))
    }
}

proptest! {
    #[test]
    fn rewritten_packets_have_the_checksums_of_fresh_ones(
        v6 in any::<bool>(), tcp in any::<bool>(),
        src in any::<u128>(), dst in any::<u128>(), sp in any::<u16>(), dp in any::<u16>(),
        nsrc in any::<u128>(), ndst in any::<u128>(), nsp in any::<u16>(), ndp in any::<u16>(),
        which in 0u8..3, payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut f = frame(v6, src, dst, sp, dp, tcp, &payload, false);
        let p = parse_frame(&f).unwrap();
        let new_src = (which != 1).then_some(SocketAddr { addr: addr(v6, nsrc), port: nsp });
        let new_dst = (which != 0).then_some(SocketAddr { addr: addr(v6, ndst), port: ndp });
        rewrite(&mut f, &p, new_src, new_dst).unwrap();
        let (es, esp) = new_src.map_or((src, sp), |s| (nsrc, s.port));
        let (ed, edp) = new_dst.map_or((dst, dp), |d| (ndst, d.port));
        let mut expect = frame(v6, es, ed, esp, edp, tcp, &payload, false);
        // UDP sends a computed zero as all ones (RFC 768); an incremental update cannot yield
        // zero, so compare the two representations as equal.
        if !tcp {
            let at = f.len() - payload.len() - 2;
            if expect[at..at + 2] == [0, 0] { expect[at..at + 2].copy_from_slice(&[0xff, 0xff]); }
        }
        prop_assert_eq!(&f, &expect);
        // And the frame still parses (its IPv4 header checksum is checked there).
        let again = parse_frame(&f).unwrap();
        prop_assert!(matches!(again.l3, L3::Ipv4(_) | L3::Ipv6(_)));
    }

    #[test]
    fn an_ipv4_udp_checksum_of_zero_stays_zero(src in any::<u32>(), dst in any::<u32>(), nd in any::<u32>()) {
        let mut f = frame(false, u128::from(src), u128::from(dst), 1000, 53, false, b"q", true);
        let p = parse_frame(&f).unwrap();
        rewrite(&mut f, &p, None, Some(SocketAddr { addr: IpAddr::V4(Ipv4Addr::from(nd)), port: 5353 })).unwrap();
        let l4 = f.len() - 9;
        prop_assert_eq!(&f[l4 + 6..l4 + 8], &[0u8, 0][..]);
        prop_assert!(parse_frame(&f).is_ok());
    }
}

proptest! {
    #[test]
    fn the_precomputed_ipv4_translation_writes_what_the_general_rewrite_writes(
        tcp in any::<bool>(), src in any::<u32>(), dst in any::<u32>(), sp in any::<u16>(), dp in any::<u16>(),
        nsrc in any::<u32>(), ndst in any::<u32>(), nsp in any::<u16>(), ndp in any::<u16>(), which in 0u8..3,
        udp_zero in any::<bool>(),
    ) {
        let f = frame(false, u128::from(src), u128::from(dst), sp, dp, tcp, b"payload", udp_zero);
        let p = parse_frame(&f).unwrap();
        let site = stack::nat::NatSite::from_parsed(&p).unwrap();
        let new_src = (which != 1).then_some((Ipv4Addr::from(nsrc), nsp));
        let new_dst = (which != 0).then_some((Ipv4Addr::from(ndst), ndp));
        let proto = if tcp { 6 } else { 17 };
        let from = PackedV4::new(Ipv4Addr::from(src), sp, Ipv4Addr::from(dst), dp, proto);
        let (ts, tsp) = new_src.unwrap_or((Ipv4Addr::from(src), sp));
        let (td, tdp) = new_dst.unwrap_or((Ipv4Addr::from(dst), dp));
        let to = PackedV4::new(ts, tsp, td, tdp, proto);
        let deltas = V4Deltas::new(&from, &to, new_src.is_some(), new_dst.is_some());
        let mut a = f.clone();
        translate_v4(&mut a, tcp, &to, deltas).unwrap();
        let mut b = f.clone();
        let sa = |x: Option<(Ipv4Addr, u16)>| x.map(|(addr, port)| SocketAddr { addr: IpAddr::V4(addr), port });
        stack::nat::rewrite_at(&mut b, &site, sa(new_src), sa(new_dst)).unwrap();
        prop_assert_eq!(a, b);
    }

    #[test]
    fn a_reversed_packed_key_is_the_reply_key(
        src in any::<u32>(), dst in any::<u32>(), sp in any::<u16>(), dp in any::<u16>(), tcp in any::<bool>(),
    ) {
        let proto = if tcp { 6 } else { 17 };
        let k = PackedV4::new(Ipv4Addr::from(src), sp, Ipv4Addr::from(dst), dp, proto);
        let r = k.reversed();
        prop_assert_eq!(r, PackedV4::new(Ipv4Addr::from(dst), dp, Ipv4Addr::from(src), sp, proto));
        prop_assert_eq!(r.reversed(), k);
    }
}

#[test]
fn the_ipv4_translation_refuses_a_short_frame_untouched() {
    for tcp in [true, false] {
        let f = frame(false, 0xc612_0001, 0xc612_0002, 1000, 80, tcp, b"", false);
        let proto = if tcp { 6 } else { 17 };
        let from = PackedV4::new(
            Ipv4Addr::new(198, 18, 0, 1),
            1000,
            Ipv4Addr::new(198, 18, 0, 2),
            80,
            proto,
        );
        let to = PackedV4::new(
            Ipv4Addr::new(198, 18, 0, 9),
            8080,
            Ipv4Addr::new(198, 18, 0, 2),
            80,
            proto,
        );
        let deltas = V4Deltas::new(&from, &to, true, true);
        // Cut inside the L4 header, before its checksum ends.
        let csum_end = 34 + if tcp { 18 } else { 8 };
        for len in [33, 38, csum_end - 1] {
            let mut short = f[..len].to_vec();
            let before = short.clone();
            assert!(translate_v4(&mut short, tcp, &to, deltas).is_err(), "{len}");
            assert_eq!(short, before, "tcp {tcp}, cut at {len}");
        }
        let mut whole = f.clone();
        assert!(translate_v4(&mut whole, tcp, &to, deltas).is_ok());
        let p = parse_frame(&whole).unwrap();
        assert!(stack::l4::verify_l4_checksum(&whole, &p));
    }
}

#[test]
fn wrong_family_or_protocol_is_refused_untouched() {
    let mut f = frame(false, 1, 2, 3, 4, true, b"", false);
    let before = f.clone();
    let p = parse_frame(&f).unwrap();
    let v6 = SocketAddr { addr: "2001:db8::1".parse().unwrap(), port: 1 };
    assert!(rewrite(&mut f, &p, Some(v6), None).is_err());
    assert_eq!(f, before);
    let mut icmp = stack::fixtures::ICMPV4_ECHO_REQUEST.to_vec();
    let p = parse_frame(&icmp).unwrap();
    assert!(matches!(p.l4.unwrap().header, L4::Icmpv4 { .. }));
    let v4 = SocketAddr { addr: "198.18.0.1".parse().unwrap(), port: 1 };
    assert!(rewrite(&mut icmp, &p, Some(v4), None).is_err());
}
