//! Typed views over header bytes.
//!
//! smoltcp's views and `Repr`s are re-exported where they fit (ARP, IPv4, IPv6, ICMPv4,
//! ICMPv6, TCP, UDP, NDISC); [`vlan`] and [`ether`] are ours, written in the same style:
//! a `struct View<T: AsRef<[u8]>> { buffer: T }`, field offsets in a private `mod field`,
//! `new_unchecked` / `new_checked` / `check_len`, getters on `AsRef`, setters on `AsMut`, and
//! the contract that after `check_len` succeeds no accessor panics.

pub mod ether;
pub mod vlan;

pub use ether::{EthernetHeader, MacAddr, ParseMacError};
pub use vlan::VlanTag;

/// smoltcp's total EtherType enum (`Ipv4`, `Arp`, `Ipv6`, `Unknown(u16)`), under its own name.
pub use smoltcp::wire::EthernetProtocol as EtherType;

pub use smoltcp::wire::{
    ArpHardware, ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame,
    EthernetProtocol, EthernetRepr, Icmpv4DstUnreachable, Icmpv4Message, Icmpv4Packet, Icmpv4Repr,
    Icmpv4TimeExceeded, Icmpv6DstUnreachable, Icmpv6Message, Icmpv6Packet, Icmpv6Repr,
    Icmpv6TimeExceeded, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, NdiscNeighborFlags,
    NdiscOption, NdiscOptionRepr, NdiscOptionType, NdiscRepr, TcpControl, TcpPacket, TcpRepr,
    TcpSeqNumber, UdpPacket, UdpRepr, ETHERNET_HEADER_LEN, IPV4_HEADER_LEN, IPV6_HEADER_LEN,
    TCP_HEADER_LEN, UDP_HEADER_LEN,
};

/// smoltcp's wire error: returned by `check_len` / `new_checked` when a buffer is too short.
pub use smoltcp::wire::Error;

/// A byte range of a header field, as in smoltcp.
pub(crate) type Field = core::ops::Range<usize>;
