//! IEEE 802.1Q / 802.1ad VLAN tags.
//!
//! A tag sits where an Ethernet header's EtherType would be: a 16-bit TPID (which *is* that
//! EtherType, e.g. [`TPID_8021Q`]) followed by the 16-bit TCI and the next EtherType.
//! [`VlanTag`] views the 4 bytes *after* the TPID:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-----+-+-----------------------+-------------------------------+
//! | PCP |D|         VID           |     inner EtherType / TPID    |
//! +-----+-+-----------------------+-------------------------------+
//! ```

use super::{Error, EthernetProtocol, Field};

mod field {
    use super::Field;
    /// Tag control information: PCP (3 bits), DEI (1 bit), VID (12 bits).
    pub const TCI: Field = 0..2;
    /// The EtherType of what follows the tag (possibly another TPID).
    pub const ETHERTYPE: Field = 2..4;
}

/// Length in bytes of the part of a tag a [`VlanTag`] views (TCI + inner EtherType).
pub const HEADER_LEN: usize = 4;

/// TPID of an IEEE 802.1Q customer tag (C-tag).
pub const TPID_8021Q: u16 = 0x8100;
/// TPID of an IEEE 802.1ad service tag (S-tag, "QinQ").
pub const TPID_8021AD: u16 = 0x88a8;
/// Pre-standard QinQ TPID still emitted by some switches; treated as an S-tag.
pub const TPID_QINQ_LEGACY: u16 = 0x9100;

/// Largest VLAN id (0xfff is reserved, 0 means "priority tag only").
pub const VID_MAX: u16 = 0x0fff;

/// Whether `ethertype` is one of the TPIDs that introduce a VLAN tag
/// ([`TPID_8021Q`], [`TPID_8021AD`], [`TPID_QINQ_LEGACY`]).
#[inline]
pub const fn is_vlan_tpid(ethertype: u16) -> bool {
    matches!(ethertype, TPID_8021Q | TPID_8021AD | TPID_QINQ_LEGACY)
}

/// A read/write view of a VLAN tag's TCI and inner EtherType (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> VlanTag<T> {
        VlanTag { buffer }
    }

    /// Wraps a buffer and checks that it holds a whole tag ([`HEADER_LEN`] bytes).
    pub fn new_checked(buffer: T) -> Result<VlanTag<T>, Error> {
        let tag = Self::new_unchecked(buffer);
        tag.check_len()?;
        Ok(tag)
    }

    /// Checks that the buffer is at least [`HEADER_LEN`] bytes long. After this succeeds no
    /// accessor panics.
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

    /// The raw 16-bit tag control information.
    #[inline]
    pub fn tci(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::TCI];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Priority code point (IEEE 802.1p class, 0..=7).
    #[inline]
    pub fn pcp(&self) -> u8 {
        self.buffer.as_ref()[field::TCI.start] >> 5
    }

    /// Drop eligible indicator.
    #[inline]
    pub fn dei(&self) -> bool {
        self.buffer.as_ref()[field::TCI.start] & 0x10 != 0
    }

    /// VLAN identifier (0..=[`VID_MAX`]).
    #[inline]
    pub fn vid(&self) -> u16 {
        self.tci() & VID_MAX
    }

    /// The EtherType following the tag (another TPID for stacked tags).
    #[inline]
    pub fn ethertype(&self) -> EthernetProtocol {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        EthernetProtocol::from(u16::from_be_bytes([b[0], b[1]]))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    /// Sets the raw tag control information.
    #[inline]
    pub fn set_tci(&mut self, tci: u16) {
        self.buffer.as_mut()[field::TCI].copy_from_slice(&tci.to_be_bytes());
    }

    /// Sets the priority code point; only the low 3 bits of `pcp` are used.
    #[inline]
    pub fn set_pcp(&mut self, pcp: u8) {
        let tci = (self.tci() & 0x1fff) | (u16::from(pcp & 0x7) << 13);
        self.set_tci(tci);
    }

    /// Sets the drop eligible indicator.
    #[inline]
    pub fn set_dei(&mut self, dei: bool) {
        let tci = (self.tci() & !0x1000) | if dei { 0x1000 } else { 0 };
        self.set_tci(tci);
    }

    /// Sets the VLAN identifier; only the low 12 bits of `vid` are used.
    #[inline]
    pub fn set_vid(&mut self, vid: u16) {
        let tci = (self.tci() & !VID_MAX) | (vid & VID_MAX);
        self.set_tci(tci);
    }

    /// Sets the EtherType following the tag.
    #[inline]
    pub fn set_ethertype(&mut self, ethertype: EthernetProtocol) {
        let raw: u16 = ethertype.into();
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&raw.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        // PCP 5, DEI 1, VID 0x123, inner IPv4.
        let bytes = [0xb1, 0x23, 0x08, 0x00];
        let tag = VlanTag::new_checked(&bytes[..]).unwrap();
        assert_eq!(tag.pcp(), 5);
        assert!(tag.dei());
        assert_eq!(tag.vid(), 0x123);
        assert_eq!(tag.tci(), 0xb123);
        assert_eq!(tag.ethertype(), EthernetProtocol::Ipv4);
    }

    #[test]
    fn setters_keep_other_bits() {
        let mut bytes = [0u8; 4];
        let mut tag = VlanTag::new_unchecked(&mut bytes[..]);
        tag.set_vid(0xfff);
        tag.set_pcp(7);
        tag.set_dei(true);
        tag.set_ethertype(EthernetProtocol::Ipv6);
        assert_eq!(bytes, [0xff, 0xff, 0x86, 0xdd]);
        let mut tag = VlanTag::new_unchecked(&mut bytes[..]);
        tag.set_dei(false);
        tag.set_pcp(0);
        assert_eq!(tag.vid(), 0xfff);
        assert_eq!(bytes[..2], [0x0f, 0xff]);
    }

    #[test]
    fn short_buffer_rejected() {
        assert!(VlanTag::new_checked(&[0u8; 3][..]).is_err());
    }

    #[test]
    fn tpids() {
        assert!(is_vlan_tpid(0x8100));
        assert!(is_vlan_tpid(0x88a8));
        assert!(is_vlan_tpid(0x9100));
        assert!(!is_vlan_tpid(0x0800));
    }
}
