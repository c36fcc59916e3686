//! TCP segments weir writes itself: the reset that refuses a segment (RFC 9293 section 3.10.7).

use crate::checksum::{checksum, l4_checksum_v4, l4_checksum_v6};
use crate::error::BuildError;
use crate::parse::{Parsed, L3, L4};

/// TTL / hop limit of the resets weir sends.
const RST_TTL: u8 = 64;

/// TCP flags.
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// Turns the parsed TCP segment in `frame` into the reset that answers it, in place: MACs,
/// addresses and ports swapped; if the segment acknowledged something, `seq = its ack` and RST
/// alone, else `seq = 0`, `ack = its seq + its length` (SYN and FIN count one) and RST+ACK
/// (RFC 9293 section 3.10.7.1). Options and data are dropped. Returns the new frame length.
///
/// Errors: [`BuildError::UnexpectedPacket`] for anything but an unfragmented TCP segment
/// without IPv6 extension headers, or for a reset (a reset is never answered);
/// [`BuildError::BufferTooSmall`] for a frame shorter than its headers.
pub fn rst_reply_in_place(frame: &mut [u8], parsed: &Parsed) -> Result<usize, BuildError> {
    let Some(l4) = parsed.l4 else { return Err(BuildError::UnexpectedPacket) };
    let L4::Tcp { flags, header_len, .. } = l4.header else {
        return Err(BuildError::UnexpectedPacket);
    };
    if flags & RST != 0 {
        return Err(BuildError::UnexpectedPacket);
    }
    let l3 = usize::from(parsed.l3_offset);
    let l4o = usize::from(l4.l4_offset);
    let end = usize::from(parsed.l3_offset) + usize::from(parsed.l3_len);
    if frame.len() < end || l4o + usize::from(header_len) > end || l4o + 20 > frame.len() {
        return Err(BuildError::BufferTooSmall);
    }
    let seg_len = u32::try_from(end - l4o - usize::from(header_len)).unwrap_or(0)
        + u32::from(flags & SYN != 0)
        + u32::from(flags & FIN != 0);
    let word = |f: &[u8], at: usize| u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]]);
    let (seq, ack) = (word(frame, l4o + 4), word(frame, l4o + 8));
    let (new_seq, new_ack, new_flags) =
        if flags & ACK != 0 { (ack, 0, RST) } else { (0, seq.wrapping_add(seg_len), RST | ACK) };
    // Ethernet: back to the sender.
    let mut macs = [0u8; 12];
    macs.copy_from_slice(&frame[0..12]);
    frame[0..6].copy_from_slice(&macs[6..12]);
    frame[6..12].copy_from_slice(&macs[0..6]);
    // TCP header: ports swapped, a bare 20-byte header.
    let (sp, dp) = ([frame[l4o], frame[l4o + 1]], [frame[l4o + 2], frame[l4o + 3]]);
    let t = &mut frame[l4o..l4o + 20];
    t[0..2].copy_from_slice(&dp);
    t[2..4].copy_from_slice(&sp);
    t[4..8].copy_from_slice(&new_seq.to_be_bytes());
    t[8..12].copy_from_slice(&new_ack.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = new_flags;
    t[14..20].fill(0);
    match parsed.l3 {
        L3::Ipv4(ref ip) if !ip.is_fragment => {
            if l4o != l3 + 20 && l4o < l3 + 20 {
                return Err(BuildError::BufferTooSmall);
            }
            // Options go too: the reset is a 20-byte header and a 20-byte segment, moved up to
            // follow it.
            frame.copy_within(l4o..l4o + 20, l3 + 20);
            let h = &mut frame[l3..l3 + 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&40u16.to_be_bytes());
            h[6..8].fill(0);
            h[8] = RST_TTL;
            h[10..12].fill(0);
            let (mut s, mut d) = ([0u8; 4], [0u8; 4]);
            s.copy_from_slice(&h[12..16]);
            d.copy_from_slice(&h[16..20]);
            h[12..16].copy_from_slice(&d);
            h[16..20].copy_from_slice(&s);
            let c = checksum(h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            let c = l4_checksum_v4(ip.dst, ip.src, 6, &frame[l3 + 20..l3 + 40]);
            frame[l3 + 36..l3 + 38].copy_from_slice(&c.to_be_bytes());
            Ok(l3 + 40)
        }
        L3::Ipv6(ref ip) if !ip.is_fragment && l4o == l3 + 40 => {
            let h = &mut frame[l3..l3 + 40];
            h[4..6].copy_from_slice(&20u16.to_be_bytes());
            h[6] = 6;
            h[7] = RST_TTL;
            h[8..24].copy_from_slice(&ip.dst.octets());
            h[24..40].copy_from_slice(&ip.src.octets());
            let c = l4_checksum_v6(ip.dst, ip.src, 6, &frame[l4o..l4o + 20]);
            frame[l4o + 16..l4o + 18].copy_from_slice(&c.to_be_bytes());
            Ok(l4o + 20)
        }
        _ => Err(BuildError::UnexpectedPacket),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::TCP_SYN;
    use crate::parse::parse_frame;

    #[test]
    fn a_syn_is_answered_with_rst_ack() {
        let mut f = TCP_SYN.to_vec();
        let p = parse_frame(&f).unwrap();
        let (L3::Ipv4(ip), Some(l4)) = (p.l3, p.l4) else { panic!() };
        let L4::Tcp { src_port, dst_port, .. } = l4.header else { panic!() };
        let seq = u32::from_be_bytes(f[38..42].try_into().unwrap());
        let n = rst_reply_in_place(&mut f, &p).unwrap();
        f.truncate(n);
        assert_eq!(n, 14 + 40);
        let r = parse_frame(&f).unwrap();
        assert!(crate::l4::verify_l4_checksum(&f, &r));
        let (L3::Ipv4(rip), Some(rl4)) = (r.l3, r.l4) else { panic!() };
        assert_eq!((rip.src, rip.dst), (ip.dst, ip.src));
        let L4::Tcp { src_port: rs, dst_port: rd, flags, .. } = rl4.header else { panic!() };
        assert_eq!((rs, rd, flags), (dst_port, src_port, RST | ACK));
        assert_eq!(&f[34 + 4..34 + 8], &[0, 0, 0, 0]);
        assert_eq!(u32::from_be_bytes(f[34 + 8..34 + 12].try_into().unwrap()), seq.wrapping_add(1));
        assert_eq!(&f[0..6], &TCP_SYN[6..12]);
        // A reset is never answered.
        let p = parse_frame(&f).unwrap();
        assert_eq!(rst_reply_in_place(&mut f, &p), Err(BuildError::UnexpectedPacket));
    }
}
