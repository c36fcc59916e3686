//! The internet checksum (RFC 1071), pseudo-header sums (RFC 768, RFC 793, RFC 8200 §8.1) and
//! incremental updates (RFC 1624).
//!
//! Vocabulary used throughout:
//!
//! * a **sum** is the folded 16-bit ones'-complement sum of big-endian 16-bit words, *not*
//!   complemented ([`sum`], [`pseudo_header_v4`], [`add`]);
//! * a **checksum** is the complement of a sum, the value stored in a header ([`checksum`],
//!   [`finish`]). A region whose stored checksum is correct sums to `0xffff`.
//!
//! All values are host-order `u16`s holding the big-endian field value, i.e. what
//! `u16::from_be_bytes` reads from the header.

use core::net::{Ipv4Addr, Ipv6Addr};

/// Truncates to the low 16 bits. Used only on values already masked or folded below 2^16.
#[allow(clippy::cast_possible_truncation)]
#[inline(always)]
const fn low16(x: u64) -> u16 {
    x as u16
}

/// Folds a 64-bit accumulator of 16-bit words to a 16-bit ones'-complement sum (end-around
/// carry). The result is 0 only if `acc` is 0.
#[inline]
pub const fn fold(acc: u64) -> u16 {
    let acc = (acc >> 32) + (acc & 0xffff_ffff); // <= 2^33
    let acc = (acc >> 16) + (acc & 0xffff); // <= 2^17 + 2^16
    let acc = (acc >> 16) + (acc & 0xffff); // <= 2^16 + 1
    let acc = (acc >> 16) + (acc & 0xffff); // <= 0xffff
    low16(acc)
}

/// Ones'-complement addition of two sums (RFC 1071 §2(A): the sum is commutative and
/// associative, so sums of pieces can be combined).
#[inline]
pub const fn add(a: u16, b: u16) -> u16 {
    fold(a as u64 + b as u64)
}

/// The unfolded sum of `data` as big-endian 16-bit words in a 64-bit accumulator with
/// end-around carry. An odd final byte is padded with a zero low byte (RFC 1071).
#[inline]
fn accumulate(mut data: &[u8]) -> u64 {
    let mut acc: u64 = 0;
    // Ones'-complement sums can be computed on wider words and folded afterwards
    // (RFC 1071 §2(C)): 64-bit words with end-around carry.
    while let Some((chunk, rest)) = data.split_first_chunk::<32>() {
        for i in 0..4 {
            let mut w = [0u8; 8];
            w.copy_from_slice(&chunk[i * 8..i * 8 + 8]);
            let (s, carry) = acc.overflowing_add(u64::from_be_bytes(w));
            acc = s + u64::from(carry);
        }
        data = rest;
    }
    while let Some((chunk, rest)) = data.split_first_chunk::<8>() {
        let (s, carry) = acc.overflowing_add(u64::from_be_bytes(*chunk));
        acc = s + u64::from(carry);
        data = rest;
    }
    // At most 7 bytes left: add them as a zero-padded 64-bit word.
    if !data.is_empty() {
        let mut w = [0u8; 8];
        w[..data.len()].copy_from_slice(data);
        let (s, carry) = acc.overflowing_add(u64::from_be_bytes(w));
        acc = s + u64::from(carry);
    }
    acc
}

/// The folded ones'-complement sum of `data` (not complemented).
///
/// `data` is taken to start at an even offset of the checksummed region; an odd trailing
/// byte is padded with zero. To combine sums of several pieces with [`add`], every piece but
/// the last must have an even length.
#[inline]
pub fn sum(data: &[u8]) -> u16 {
    fold(accumulate(data))
}

/// The complement of a sum: the value to store in a checksum field.
#[inline]
pub const fn finish(sum: u16) -> u16 {
    !sum
}

/// The internet checksum of `data` (RFC 1071): `!sum(data)`. Compute it with the checksum
/// field zeroed, or verify a region by checking that [`sum`] of it is `0xffff`.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data))
}

/// Sum of the IPv4 pseudo-header (RFC 768, RFC 793 §3.1): source, destination, zero byte,
/// `protocol`, and `length`, the L4 length in bytes (header + payload).
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u16 {
    let acc = u64::from(u32::from(src))
        + u64::from(u32::from(dst))
        + u64::from(protocol)
        + u64::from(length);
    fold(acc)
}

/// Sum of the IPv6 pseudo-header (RFC 8200 §8.1): source, destination, the 32-bit
/// upper-layer packet `length` in bytes, three zero bytes and `next_header` (the upper-layer
/// protocol, not an extension header).
#[inline]
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, length: u32) -> u16 {
    let s = u128::from(src);
    let d = u128::from(dst);
    let mut acc: u64 = 0;
    for w in [s >> 64, s & u128::from(u64::MAX), d >> 64, d & u128::from(u64::MAX)] {
        let w = u64::try_from(w).unwrap_or(u64::MAX);
        acc += u64::from(fold(w));
    }
    fold(acc + u64::from(length) + u64::from(next_header))
}

/// The TCP/UDP/ICMPv6-style checksum of an IPv4 L4 `segment` (header + payload, with its
/// checksum field zeroed): `finish(pseudo + sum(segment))`. Lengths above 65535 are clamped
/// (they cannot occur in IPv4). UDP callers must store 0xffff when this returns 0 (RFC 768).
#[inline]
pub fn l4_checksum_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, segment: &[u8]) -> u16 {
    let len = u16::try_from(segment.len()).unwrap_or(u16::MAX);
    finish(add(pseudo_header_v4(src, dst, protocol, len), sum(segment)))
}

/// The IPv6 upper-layer checksum (RFC 8200 §8.1) of `segment` (checksum field zeroed).
/// UDP callers must store 0xffff when this returns 0.
#[inline]
pub fn l4_checksum_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, segment: &[u8]) -> u16 {
    let len = u32::try_from(segment.len()).unwrap_or(u32::MAX);
    finish(add(pseudo_header_v6(src, dst, next_header, len), sum(segment)))
}

/// Incrementally updates checksum `csum` after a 16-bit word of the covered data changed
/// from `old` to `new`.
///
/// RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`, where `HC` is the old checksum, `m` the old
/// and `m'` the new value of the word. Unlike eqn. 2 (`~(~HC + m' - m)`… RFC 1141), eqn. 3
/// never produces the `0x0000`/`0xffff` ambiguity bug: its result equals full recomputation
/// whenever the covered data is not all zero (always true for real headers).
///
/// The word must be 16-bit aligned relative to the start of the checksummed region. For an
/// unaligned byte, pass the aligned word containing it.
#[inline]
pub const fn update16(csum: u16, old: u16, new: u16) -> u16 {
    !fold(!csum as u64 + !old as u64 + new as u64)
}

/// [`update16`] for an aligned 32-bit field (an IPv4 address in an IPv4 header checksum or
/// in a TCP/UDP pseudo-header): both 16-bit halves at once.
#[inline]
pub const fn update32(csum: u16, old: u32, new: u32) -> u16 {
    let old_hi = low16((old >> 16) as u64);
    let old_lo = low16(old as u64);
    let new_hi = low16((new >> 16) as u64);
    let new_lo = low16(new as u64);
    !fold(!csum as u64 + !old_hi as u64 + !old_lo as u64 + new_hi as u64 + new_lo as u64)
}

/// What replacing the 32-bit field `old` by `new` adds to a ones'-complement sum, unfolded:
/// several such deltas may be added together (and to `!csum`) before one [`fold`]. Each is
/// below 2^18, so a u64 holds any number a header can need.
#[inline]
pub const fn delta32(old: u32, new: u32) -> u64 {
    let old = !old;
    (old >> 16) as u64 + (old & 0xffff) as u64 + (new >> 16) as u64 + (new & 0xffff) as u64
}

/// [`delta32`] for a 16-bit field.
#[inline]
pub const fn delta16(old: u16, new: u16) -> u64 {
    !old as u64 + new as u64
}

/// Applies a sum of deltas ([`delta32`], [`delta16`]) to the checksum `csum`.
#[inline]
pub const fn apply_delta(csum: u16, delta: u64) -> u16 {
    !fold(!csum as u64 + delta)
}

/// [`update16`] for an aligned 128-bit field (an IPv6 address in a TCP/UDP/ICMPv6
/// pseudo-header): `old` and `new` are the addresses as `u128::from(Ipv6Addr)`.
#[inline]
pub const fn update128(csum: u16, old: u128, new: u128) -> u16 {
    let mut acc = !csum as u64;
    let mut i = 0;
    while i < 8 {
        let shift = i * 16;
        acc += !low16(((old >> shift) & 0xffff) as u64) as u64;
        acc += low16(((new >> shift) & 0xffff) as u64) as u64;
        i += 1;
    }
    !fold(acc)
}

/// [`update32`] for an IPv4 address change.
#[inline]
pub fn update_ipv4_addr(csum: u16, old: Ipv4Addr, new: Ipv4Addr) -> u16 {
    update32(csum, u32::from(old), u32::from(new))
}

/// [`update128`] for an IPv6 address change.
#[inline]
pub fn update_ipv6_addr(csum: u16, old: Ipv6Addr, new: Ipv6Addr) -> u16 {
    update128(csum, u128::from(old), u128::from(new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Straightforward RFC 1071 reference: 16-bit words, u32 accumulator.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut acc: u64 = 0;
        for pair in data.chunks(2) {
            let hi = u64::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |b| u64::from(*b));
            acc += hi | lo;
        }
        while acc > 0xffff {
            acc = (acc >> 16) + (acc & 0xffff);
        }
        u16::try_from(acc).unwrap()
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        assert_eq!(sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), 0xddf2);
        assert_eq!(checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), !0xddf2);
    }

    #[test]
    fn known_ipv4_header() {
        // 45 00 00 73 00 00 40 00 40 11 ad 8d c6 12 00 01 c6 12 00 c7 (checksum ad8d):
        // UDP 198.18.0.1 -> 198.18.0.199.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xad, 0x8d, 0xc6, 0x12,
            0x00, 0x01, 0xc6, 0x12, 0x00, 0xc7,
        ];
        assert_eq!(sum(&h), 0xffff);
        let mut z = h;
        z[10] = 0;
        z[11] = 0;
        assert_eq!(checksum(&z), 0xad8d);
    }

    #[test]
    fn odd_and_empty() {
        assert_eq!(sum(&[]), 0);
        assert_eq!(sum(&[0xab]), 0xab00);
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn pseudo_v6_matches_bytes() {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "fe80::ffff:1:2".parse().unwrap();
        let mut bytes = [0u8; 40];
        bytes[..16].copy_from_slice(&src.octets());
        bytes[16..32].copy_from_slice(&dst.octets());
        bytes[32..36].copy_from_slice(&70_000u32.to_be_bytes());
        bytes[39] = 58;
        assert_eq!(pseudo_header_v6(src, dst, 58, 70_000), reference_sum(&bytes));
    }

    #[test]
    fn pseudo_v4_matches_bytes() {
        let src = Ipv4Addr::new(198, 18, 0, 1);
        let dst = Ipv4Addr::new(255, 255, 255, 254);
        let mut bytes = [0u8; 12];
        bytes[..4].copy_from_slice(&src.octets());
        bytes[4..8].copy_from_slice(&dst.octets());
        bytes[9] = 17;
        bytes[10..].copy_from_slice(&1500u16.to_be_bytes());
        assert_eq!(pseudo_header_v4(src, dst, 17, 1500), reference_sum(&bytes));
    }

    /// A random 20-byte IPv4-like header (version nibble set, so never all zero) with a
    /// correct checksum.
    fn header() -> impl Strategy<Value = [u8; 20]> {
        prop::array::uniform20(any::<u8>()).prop_map(|mut h| {
            h[0] = 0x45;
            h[10] = 0;
            h[11] = 0;
            let c = checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            h
        })
    }

    proptest! {
        #[test]
        fn fast_sum_matches_reference(data in prop::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(sum(&data), reference_sum(&data));
        }

        #[test]
        fn split_sums_combine(
            data in prop::collection::vec(any::<u8>(), 0..300),
            cut in 0usize..150,
        ) {
            let cut = (cut * 2).min(data.len() & !1);
            prop_assert_eq!(add(sum(&data[..cut]), sum(&data[cut..])), sum(&data));
        }

        #[test]
        fn update16_equals_recompute(h in header(), word in 0usize..10, new in any::<u16>()) {
            prop_assume!(word != 5); // the checksum field itself
            let csum = u16::from_be_bytes([h[10], h[11]]);
            let old = u16::from_be_bytes([h[2 * word], h[2 * word + 1]]);
            let mut m = h;
            m[2 * word..2 * word + 2].copy_from_slice(&new.to_be_bytes());
            m[10] = 0;
            m[11] = 0;
            prop_assert_eq!(update16(csum, old, new), checksum(&m));
        }

        #[test]
        fn update32_equals_recompute(h in header(), which in 0usize..2, new in any::<u32>()) {
            // Rewrite the source (12..16) or destination (16..20) address.
            let at = 12 + 4 * which;
            let csum = u16::from_be_bytes([h[10], h[11]]);
            let old = u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
            let mut m = h;
            m[at..at + 4].copy_from_slice(&new.to_be_bytes());
            m[10] = 0;
            m[11] = 0;
            let expected = checksum(&m);
            prop_assert_eq!(update32(csum, old, new), expected);
            prop_assert_eq!(
                update_ipv4_addr(csum, Ipv4Addr::from(old), Ipv4Addr::from(new)),
                expected
            );
        }

        #[test]
        fn update128_equals_recompute(
            payload in prop::collection::vec(any::<u8>(), 8..64),
            src in any::<u128>(),
            dst in any::<u128>(),
            new_src in any::<u128>(),
        ) {
            // A UDP-like segment over IPv6: rewrite the source address in the pseudo-header.
            let (src, dst, new_src) =
                (Ipv6Addr::from(src), Ipv6Addr::from(dst), Ipv6Addr::from(new_src));
            let before = l4_checksum_v6(src, dst, 17, &payload);
            let after = l4_checksum_v6(new_src, dst, 17, &payload);
            prop_assert_eq!(update_ipv6_addr(before, src, new_src), after);
            prop_assert_eq!(update128(before, u128::from(src), u128::from(new_src)), after);
        }

        #[test]
        fn stored_checksum_verifies(data in prop::collection::vec(any::<u8>(), 2..200)) {
            let mut d = data;
            d[0] = 0;
            d[1] = 0;
            let c = checksum(&d);
            d[..2].copy_from_slice(&c.to_be_bytes());
            prop_assert_eq!(sum(&d), 0xffff);
        }
    }
}
