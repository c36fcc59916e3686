//! The pipeline over memory ports: forwarding, neighbor resolution, replies, drops, handoff.

use dataplane::buf::PacketBuf;
use dataplane::pipeline::DropReason;
use dataplane::ring::{Handoff, HandoffRing};
use dataplane::testing::{two_port_router, udp4_frame, PORT1_MAC, SERVER_MAC};
use std::sync::Arc;

#[test]
fn forwards_and_rewrites() {
    let (mut w, q, mut cache) = two_port_router(false);
    assert!(q[0].inject_bytes(&mut cache, &udp4_frame(7)));
    assert_eq!(w.poll_once(), 1);
    let out = q[1].take_sent().expect("forwarded");
    let f = out.data();
    assert_eq!(&f[0..6], &SERVER_MAC);
    assert_eq!(&f[6..12], &PORT1_MAC);
    assert_eq!(f[14 + 8], 63, "TTL decremented");
    assert_eq!(stack::checksum::checksum(&f[14..34]), 0, "IPv4 header checksum still valid");
}

#[test]
fn bad_checksum_is_a_counted_drop() {
    let (mut w, q, mut cache) = two_port_router(false);
    let mut f = udp4_frame(7);
    f[24] ^= 0xff;
    assert!(q[0].inject_bytes(&mut cache, &f));
    w.poll_once();
    assert!(q[1].take_sent().is_none());
    assert_eq!(w.pipeline().counters.drops[DropReason::BadIpv4Checksum as usize], 1);
}

#[test]
fn unresolved_next_hop_waits_for_arp() {
    let (mut w, q, mut cache) = two_port_router(false);
    // 198.18.2.3 is on port 1's network but has no static neighbor.
    let mut f = udp4_frame(7);
    f[14 + 19] = 3;
    f[24] = 0;
    f[25] = 0;
    let c = stack::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    assert!(q[0].inject_bytes(&mut cache, &f));
    w.poll_once();
    assert_eq!(w.pipeline().pending(), 1);
    let req = q[1].take_sent().expect("an ARP request");
    let parsed = stack::parse_frame(req.data()).unwrap();
    let stack::L3::Arp(arp) = parsed.l3 else { panic!("not ARP") };
    assert_eq!(arp.target_ip, std::net::Ipv4Addr::new(198, 18, 2, 3));
    // The neighbor answers; the held frame goes out with its MAC.
    let mut reply = [0u8; 64];
    let host = stack::MacAddr([2, 0, 0, 0, 0, 0x33]);
    let n = stack::arp::write_request(&mut reply, host, arp.target_ip, arp.sender_ip).unwrap();
    // Turn the request into a reply addressed to weir.
    let mut frame = reply[..n].to_vec();
    frame[0..6].copy_from_slice(&PORT1_MAC);
    frame[20..22].copy_from_slice(&2u16.to_be_bytes());
    frame[32..38].copy_from_slice(&PORT1_MAC);
    assert!(q[1].inject_bytes(&mut cache, &frame));
    w.poll_once();
    w.poll_once();
    let out = q[1].take_sent().expect("released after resolution");
    assert_eq!(&out.data()[0..6], &host.0);
    assert_eq!(w.pipeline().pending(), 0);
}

#[test]
fn handed_off_packets_are_processed_by_the_owner() {
    let (mut w, q, mut cache) = two_port_router(false);
    let ring = Arc::new(HandoffRing::new(64));
    w.set_handoff_inbox(Arc::clone(&ring));
    let mut b = cache.alloc().unwrap();
    b.fill(&udp4_frame(9)).unwrap();
    assert!(ring.enqueue(Handoff { pkt: b, in_port: 0, passes: 0 }).is_ok());
    assert_eq!(w.poll_once(), 1);
    assert_eq!(&q[1].take_sent().expect("forwarded").data()[0..6], &SERVER_MAC);
}
