//! Ethernet II headers: the [`MacAddr`] newtype and the [`EthernetHeader`] fast-path view.
//!
//! ```text
//! +-------------------+-------------------+-----------+
//! | destination (6)   | source (6)        | type (2)  |
//! +-------------------+-------------------+-----------+
//! ```
//!
//! smoltcp's `EthernetFrame` covers the same bytes; this view adds [`MacAddr`]-typed accessors
//! and in-place helpers used when answering or forwarding a frame.

use core::fmt;
use core::str::FromStr;

use super::{Error, EthernetAddress, EthernetProtocol, Field};

mod field {
    use super::Field;
    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
}

/// Length in bytes of an untagged Ethernet II header.
pub const HEADER_LEN: usize = 14;

/// Smallest Ethernet frame without the FCS (IEEE 802.3: 64 bytes including the 4-byte FCS).
pub const MIN_FRAME_LEN: usize = 60;

/// A 48-bit IEEE 802 MAC address.
///
/// Displays and parses as six lowercase-hex octets separated by colons: `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The broadcast address `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// The all-zero address, used as the unknown target hardware address in ARP requests.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The six octets.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Whether this is the broadcast address.
    pub const fn is_broadcast(&self) -> bool {
        matches!(self.0, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
    }

    /// Whether the I/G bit is set (multicast, which includes broadcast).
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Whether the I/G bit is clear (an individual address).
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// Whether the U/L bit is set (a locally administered address).
    pub const fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(octets: [u8; 6]) -> Self {
        MacAddr(octets)
    }
}

impl From<MacAddr> for [u8; 6] {
    fn from(mac: MacAddr) -> Self {
        mac.0
    }
}

impl From<EthernetAddress> for MacAddr {
    fn from(addr: EthernetAddress) -> Self {
        MacAddr(addr.0)
    }
}

impl From<MacAddr> for EthernetAddress {
    fn from(mac: MacAddr) -> Self {
        EthernetAddress(mac.0)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Why a string is not a MAC address in `aa:bb:cc:dd:ee:ff` form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseMacError;

impl fmt::Display for ParseMacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid MAC address (expected aa:bb:cc:dd:ee:ff)")
    }
}

impl std::error::Error for ParseMacError {}

impl FromStr for MacAddr {
    type Err = ParseMacError;

    /// Parses exactly six colon-separated octets of exactly two hex digits each
    /// (either case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for slot in &mut out {
            let part = parts.next().ok_or(ParseMacError)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ParseMacError);
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| ParseMacError)?;
        }
        if parts.next().is_some() {
            return Err(ParseMacError);
        }
        Ok(MacAddr(out))
    }
}

/// A read/write view of an Ethernet II header (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetHeader<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> EthernetHeader<T> {
        EthernetHeader { buffer }
    }

    /// Wraps a buffer and checks it holds a whole header ([`HEADER_LEN`] bytes).
    pub fn new_checked(buffer: T) -> Result<EthernetHeader<T>, Error> {
        let header = Self::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
    }

    /// Checks the buffer is at least [`HEADER_LEN`] bytes. After this succeeds no accessor
    /// panics.
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error)
        } else {
            Ok(())
        }
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC address.
    #[inline]
    pub fn dst(&self) -> MacAddr {
        MacAddr(read6(&self.buffer.as_ref()[field::DESTINATION]))
    }

    /// Source MAC address.
    #[inline]
    pub fn src(&self) -> MacAddr {
        MacAddr(read6(&self.buffer.as_ref()[field::SOURCE]))
    }

    /// The EtherType field (a TPID if the frame is VLAN-tagged).
    #[inline]
    pub fn ethertype(&self) -> EthernetProtocol {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        EthernetProtocol::from(u16::from_be_bytes([b[0], b[1]]))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetHeader<T> {
    /// Sets the destination MAC address.
    #[inline]
    pub fn set_dst(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&mac.0);
    }

    /// Sets the source MAC address.
    #[inline]
    pub fn set_src(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&mac.0);
    }

    /// Sets the EtherType field.
    #[inline]
    pub fn set_ethertype(&mut self, ethertype: EthernetProtocol) {
        let raw: u16 = ethertype.into();
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&raw.to_be_bytes());
    }

    /// Swaps source and destination addresses (for answering a frame in place).
    #[inline]
    pub fn swap_addrs(&mut self) {
        let (dst, rest) = self.buffer.as_mut().split_at_mut(6);
        dst.swap_with_slice(&mut rest[..6]);
    }
}

fn read6(b: &[u8]) -> [u8; 6] {
    let mut out = [0u8; 6];
    out.copy_from_slice(b);
    out
}

/// The destination MAC of `frame`, or `None` if it is shorter than 6 bytes.
#[inline]
pub fn dst_mac(frame: &[u8]) -> Option<MacAddr> {
    frame.first_chunk::<6>().map(|b| MacAddr(*b))
}

/// The source MAC of `frame`, or `None` if it is shorter than 12 bytes.
#[inline]
pub fn src_mac(frame: &[u8]) -> Option<MacAddr> {
    frame.get(6..)?.first_chunk::<6>().map(|b| MacAddr(*b))
}

/// Rewrites both MAC addresses of `frame` (the forwarding rewrite). Returns [`Error`] if the
/// frame is shorter than 12 bytes, leaving it untouched.
#[inline]
pub fn set_macs(frame: &mut [u8], src: MacAddr, dst: MacAddr) -> Result<(), Error> {
    let Some(macs) = frame.first_chunk_mut::<12>() else {
        return Err(Error);
    };
    macs[..6].copy_from_slice(&dst.0);
    macs[6..].copy_from_slice(&src.0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_display_roundtrip() {
        let mac: MacAddr = "aa:BB:0c:dd:ee:0f".parse().unwrap();
        assert_eq!(mac.0, [0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0x0f]);
        assert_eq!(mac.to_string(), "aa:bb:0c:dd:ee:0f");
    }

    #[test]
    fn mac_parse_rejects() {
        for s in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb:cc:dd:ee:f",
            "aa:bb:cc:dd:ee:fff",
            "aa-bb-cc-dd-ee-ff",
            "aa:bb:cc:dd:ee:gg",
            "+a:bb:cc:dd:ee:ff",
        ] {
            assert_eq!(s.parse::<MacAddr>(), Err(ParseMacError), "{s:?}");
        }
    }

    #[test]
    fn mac_classes() {
        assert!(MacAddr::BROADCAST.is_broadcast());
        assert!(MacAddr::BROADCAST.is_multicast());
        let mcast = MacAddr([0x33, 0x33, 0, 0, 0, 1]);
        assert!(mcast.is_multicast() && !mcast.is_broadcast());
        let uni = MacAddr([0x02, 0, 0, 0, 0, 1]);
        assert!(uni.is_unicast() && uni.is_local());
    }

    #[test]
    fn header_view() {
        let mut frame = [0u8; 14];
        let mut h = EthernetHeader::new_checked(&mut frame[..]).unwrap();
        h.set_dst(MacAddr([1, 2, 3, 4, 5, 6]));
        h.set_src(MacAddr([7, 8, 9, 10, 11, 12]));
        h.set_ethertype(EthernetProtocol::Arp);
        h.swap_addrs();
        assert_eq!(h.dst(), MacAddr([7, 8, 9, 10, 11, 12]));
        assert_eq!(h.src(), MacAddr([1, 2, 3, 4, 5, 6]));
        assert_eq!(h.ethertype(), EthernetProtocol::Arp);
        assert_eq!(frame[12..], [0x08, 0x06]);
        assert_eq!(src_mac(&frame), Some(MacAddr([1, 2, 3, 4, 5, 6])));
        assert_eq!(dst_mac(&frame[..5]), None);
        assert!(EthernetHeader::new_checked(&frame[..13]).is_err());
        set_macs(&mut frame, MacAddr::ZERO, MacAddr::BROADCAST).unwrap();
        assert_eq!(frame[..12], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0]);
        assert!(set_macs(&mut frame[..11], MacAddr::ZERO, MacAddr::ZERO).is_err());
    }
}
