//! One negative test per ParseError variant, each from a minimally broken valid frame.

use stack::checksum;
use stack::fixtures;
use stack::parse::{parse_frame, ParseError, MAX_FRAME_LEN};

/// Recomputes the IPv4 header checksum of the header at `l3` (after deliberate edits).
fn fix_ipv4_checksum(f: &mut [u8], l3: usize) {
    let ihl = usize::from(f[l3] & 0x0f) * 4;
    f[l3 + 10] = 0;
    f[l3 + 11] = 0;
    let c = checksum::checksum(&f[l3..l3 + ihl.max(20)]);
    f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
}

fn err(frame: &[u8]) -> ParseError {
    parse_frame(frame).expect_err("frame should be rejected")
}

fn ping() -> Vec<u8> {
    fixtures::ICMPV4_ECHO_REQUEST.to_vec()
}

fn v6() -> Vec<u8> {
    fixtures::ICMPV6_ECHO_REQUEST.to_vec()
}

/// An IPv6 frame with `chain` extension headers (each 8 bytes) before a UDP header.
fn v6_with_ext_chain(chain: &[u8]) -> Vec<u8> {
    let mut f = fixtures::ICMPV6_ECHO_REQUEST[..54].to_vec();
    let mut payload = Vec::new();
    for (i, &nh) in chain.iter().enumerate() {
        let next = chain.get(i + 1).copied().unwrap_or(17);
        match nh {
            44 => payload.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 1]),
            51 => payload.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]), // AH len 0: 8 bytes
            _ => payload.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]),
        }
    }
    payload.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
    f[20] = chain.first().copied().unwrap_or(17);
    let len = u16::try_from(payload.len()).unwrap();
    f[18..20].copy_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&payload);
    f
}

#[test]
fn truncated_ethernet() {
    assert_eq!(err(&[]), ParseError::TruncatedEthernet);
    assert_eq!(err(&ping()[..13]), ParseError::TruncatedEthernet);
}

#[test]
fn unknown_ethertype() {
    let mut f = ping();
    f[12..14].copy_from_slice(&[0x88, 0xcc]); // LLDP
    assert_eq!(err(&f), ParseError::UnknownEtherType);
    f[12..14].copy_from_slice(&[0x00, 0x40]); // 802.3 length
    assert_eq!(err(&f), ParseError::UnknownEtherType);
    // Behind a VLAN tag too.
    let mut f = fixtures::VLAN_UDP_DNS.to_vec();
    f[16..18].copy_from_slice(&[0x88, 0xcc]);
    assert_eq!(err(&f), ParseError::UnknownEtherType);
}

#[test]
fn vlan_too_deep() {
    // Three tags: 88a8, 8100, 8100.
    let mut f = fixtures::QINQ_UDP[..22].to_vec();
    f[20..22].copy_from_slice(&[0x81, 0x00]);
    f.extend_from_slice(&[0x00, 0x1e, 0x08, 0x00]);
    f.extend_from_slice(&fixtures::QINQ_UDP[22..]);
    assert_eq!(err(&f), ParseError::VlanTooDeep);
    // 0x9100 counts as a tag as well.
    f[12..14].copy_from_slice(&[0x91, 0x00]);
    assert_eq!(err(&f), ParseError::VlanTooDeep);
}

#[test]
fn truncated_vlan() {
    assert_eq!(err(&fixtures::VLAN_UDP_DNS[..17]), ParseError::TruncatedVlan);
    assert_eq!(err(&fixtures::QINQ_UDP[..20]), ParseError::TruncatedVlan);
}

#[test]
fn truncated_arp() {
    assert_eq!(err(&fixtures::ARP_REQUEST[..41]), ParseError::TruncatedArp);
}

#[test]
fn bad_arp() {
    for (at, value) in [(15, 6u8), (17, 0xdd), (18, 8), (19, 16), (21, 3)] {
        let mut f = fixtures::ARP_REQUEST.to_vec();
        f[at] = value;
        assert_eq!(err(&f), ParseError::BadArp, "byte {at} = {value}");
    }
}

#[test]
fn truncated_ipv4() {
    assert_eq!(err(&ping()[..33]), ParseError::TruncatedIpv4);
    // IHL 15 (60 bytes) but only 40 bytes after Ethernet.
    let mut f = ping()[..54].to_vec();
    f[14] = 0x4f;
    assert_eq!(err(&f), ParseError::TruncatedIpv4);
}

#[test]
fn bad_ip_version() {
    let mut f = ping();
    f[14] = 0x65;
    assert_eq!(err(&f), ParseError::BadIpVersion);
    let mut f = v6();
    f[14] = 0x40;
    assert_eq!(err(&f), ParseError::BadIpVersion);
}

#[test]
fn bad_ihl() {
    let mut f = ping();
    f[14] = 0x44;
    assert_eq!(err(&f), ParseError::BadIhl);
}

#[test]
fn bad_ipv4_total_length() {
    let mut f = ping();
    f[16..18].copy_from_slice(&19u16.to_be_bytes()); // below IHL*4
    fix_ipv4_checksum(&mut f, 14);
    assert_eq!(err(&f), ParseError::BadIpv4TotalLength);
    let mut f = ping();
    f[16..18].copy_from_slice(&85u16.to_be_bytes()); // one more than present
    fix_ipv4_checksum(&mut f, 14);
    assert_eq!(err(&f), ParseError::BadIpv4TotalLength);
}

#[test]
fn bad_ipv4_checksum() {
    let mut f = ping();
    f[24] ^= 0x01;
    assert_eq!(err(&f), ParseError::BadIpv4Checksum);
    let mut f = ping();
    f[22] = 63; // TTL changed without fixing the checksum
    assert_eq!(err(&f), ParseError::BadIpv4Checksum);
}

#[test]
fn truncated_ipv6() {
    assert_eq!(err(&v6()[..53]), ParseError::TruncatedIpv6);
}

#[test]
fn bad_ipv6_payload_length() {
    let mut f = v6();
    f[18..20].copy_from_slice(&25u16.to_be_bytes()); // 24 present
    assert_eq!(err(&f), ParseError::BadIpv6PayloadLength);
}

#[test]
fn ipv6_ext_chain_too_long() {
    let ok = v6_with_ext_chain(&[0, 60, 43, 60, 60, 60, 51, 60]);
    let p = parse_frame(&ok).unwrap();
    assert_eq!(p.ipv6().unwrap().ext_headers, 8);
    assert_eq!(p.ipv6().unwrap().next_header, 17);
    let too_long = v6_with_ext_chain(&[0, 60, 43, 60, 60, 60, 51, 60, 60]);
    assert_eq!(err(&too_long), ParseError::Ipv6ExtChainTooLong);
}

#[test]
fn truncated_ipv6_ext() {
    // Hop-by-hop header claims 24 bytes, the payload is 16.
    let mut f = v6_with_ext_chain(&[0]);
    f[55] = 2;
    assert_eq!(err(&f), ParseError::TruncatedIpv6Ext);
    // Fragment header announced with no bytes left.
    let mut f = v6()[..54].to_vec();
    f[18..20].copy_from_slice(&0u16.to_be_bytes());
    f[20] = 44;
    assert_eq!(err(&f), ParseError::TruncatedIpv6Ext);
}

#[test]
fn truncated_l4() {
    // TCP: 19 bytes of header.
    let mut f = fixtures::TCP_SYN[..53].to_vec();
    f[16..18].copy_from_slice(&39u16.to_be_bytes());
    fix_ipv4_checksum(&mut f, 14);
    assert_eq!(err(&f), ParseError::TruncatedL4);
    // ICMP: 7 bytes.
    let mut f = ping()[..41].to_vec();
    f[16..18].copy_from_slice(&27u16.to_be_bytes());
    fix_ipv4_checksum(&mut f, 14);
    assert_eq!(err(&f), ParseError::TruncatedL4);
    // ICMPv6: 4 bytes.
    let mut f = v6()[..58].to_vec();
    f[18..20].copy_from_slice(&4u16.to_be_bytes());
    assert_eq!(err(&f), ParseError::TruncatedL4);
    // UDP: 7 bytes, behind the padding of a QinQ frame (padding must not count).
    let mut f = fixtures::QINQ_UDP.to_vec();
    f[24..26].copy_from_slice(&27u16.to_be_bytes());
    fix_ipv4_checksum(&mut f, 22);
    assert_eq!(err(&f), ParseError::TruncatedL4);
}

#[test]
fn bad_l4_length() {
    let mut f = fixtures::QINQ_UDP.to_vec();
    let udp_len = 22 + 20 + 4;
    f[udp_len..udp_len + 2].copy_from_slice(&7u16.to_be_bytes());
    assert_eq!(err(&f), ParseError::BadL4Length);
    // 14 > 13 bytes of UDP in the IP packet, though the padded frame has more bytes.
    f[udp_len..udp_len + 2].copy_from_slice(&14u16.to_be_bytes());
    assert_eq!(err(&f), ParseError::BadL4Length);
}

#[test]
fn bad_tcp_data_offset() {
    let mut f = fixtures::TCP_SYN.to_vec();
    f[46] = 0x40;
    assert_eq!(err(&f), ParseError::BadTcpDataOffset);
    // Data offset 10 (40 bytes) but only 24 present: the offset is what is wrong.
    let mut f = fixtures::TCP_SYN[..58].to_vec();
    f[16..18].copy_from_slice(&44u16.to_be_bytes());
    fix_ipv4_checksum(&mut f, 14);
    assert_eq!(err(&f), ParseError::BadTcpDataOffset);
}

#[test]
fn frame_too_long() {
    let mut f = ping();
    f.resize(MAX_FRAME_LEN + 1, 0);
    assert_eq!(err(&f), ParseError::FrameTooLong);
    f.truncate(MAX_FRAME_LEN);
    assert!(parse_frame(&f).is_ok(), "padding up to the limit is fine");
}

#[test]
fn all_lists_every_variant_in_order_with_unique_names() {
    assert_eq!(ParseError::ALL.len(), ParseError::COUNT);
    for (i, e) in ParseError::ALL.iter().enumerate() {
        assert_eq!(*e as usize, i);
        assert_eq!(e.to_string(), e.as_str());
        assert!(e
            .as_str()
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()));
        for other in &ParseError::ALL[i + 1..] {
            assert_ne!(e.as_str(), other.as_str());
        }
    }
}

/// The ping fixture with `opts` (a multiple of 4 bytes) after its 20-byte IPv4 header.
fn ping_with_options(opts: &[u8]) -> Vec<u8> {
    assert_eq!(opts.len() % 4, 0);
    let base = ping();
    let mut f = base[..34].to_vec();
    f.extend_from_slice(opts);
    f.extend_from_slice(&base[34..]);
    f[14] = 0x40 | u8::try_from((20 + opts.len()) / 4).unwrap();
    let total = u16::from_be_bytes([f[16], f[17]]) + u16::try_from(opts.len()).unwrap();
    f[16..18].copy_from_slice(&total.to_be_bytes());
    fix_ipv4_checksum(&mut f, 14);
    f
}

fn option_problem(opts: &[u8]) -> Option<u8> {
    let p = parse_frame(&ping_with_options(opts)).expect("options do not fail the parse");
    p.ipv4().unwrap().option_problem
}

#[test]
fn well_formed_ipv4_options_pass() {
    // NOPs, router alert (148, length 4), end of list.
    assert_eq!(option_problem(&[1, 1, 148, 4, 0, 0, 0, 0]), None);
    // Record route with room for one address, pointer 4.
    assert_eq!(option_problem(&[7, 7, 4, 0, 0, 0, 0, 0]), None);
    // Anything after end of list is not looked at.
    assert_eq!(option_problem(&[0, 0xff, 0, 0]), None);
    let p = parse_frame(&ping_with_options(&[1, 1, 148, 4, 0, 0, 0, 0])).unwrap();
    assert!(!p.ipv4().unwrap().source_routed);
}

#[test]
fn malformed_ipv4_options_point_at_the_bad_byte() {
    // Length 0 on the first option: the pointer is the option's offset in the header.
    assert_eq!(option_problem(&[0x44, 0, 0, 0]), Some(20));
    // Length 1.
    assert_eq!(option_problem(&[1, 0x44, 1, 0]), Some(21));
    // Length running past the header (8 bytes of options, the option claims 12).
    assert_eq!(option_problem(&[1, 1, 148, 12, 0, 0, 0, 0]), Some(22));
    // A type byte with no length byte after it.
    assert_eq!(option_problem(&[1, 1, 1, 148]), Some(23));
    // Record route whose pointer (3) is below its minimum (4): the pointer's own offset.
    assert_eq!(option_problem(&[7, 7, 3, 0, 0, 0, 0, 0]), Some(22));
    // Timestamp with pointer 4 (minimum 5).
    assert_eq!(option_problem(&[68, 8, 4, 0, 0, 0, 0, 0]), Some(22));
}

#[test]
fn source_routes_are_flagged() {
    for kind in [131u8, 137] {
        let p = parse_frame(&ping_with_options(&[kind, 7, 4, 192, 0, 2, 1, 0])).unwrap();
        let v4 = p.ipv4().unwrap();
        assert!(v4.source_routed, "{kind}");
        assert_eq!(v4.option_problem, None, "{kind}");
    }
}
