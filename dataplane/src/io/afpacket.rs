//! `AF_PACKET` backend: one raw packet socket bound to one interface, with a `TPACKET_V3`
//! receive ring and (by default) a transmit ring in one shared mapping.
//!
//! # Receive
//! The RX ring is `block_count` blocks of `block_size` bytes. The kernel fills one block at a
//! time with variable-size frames and hands the whole block to user space (block status
//! `TP_STATUS_USER`) when it is full or when `block_timeout_ms` has passed since the block was
//! opened. [`rx_burst`](PacketIo::rx_burst) walks blocks in ring order and frames inside a block
//! through `tp_next_offset`, copies each frame into a [`PoolBuf`] from the port's own
//! [`PoolCache`], and returns a block to the kernel (`TP_STATUS_KERNEL`) once all its frames are
//! consumed. A burst holds at most [`BURST`] frames while a block holds many, so the position
//! inside a partly consumed block is kept across calls.
//!
//! **Latency:** at low load a frame waits in the kernel's open block until the block timeout
//! retires it, so `block_timeout_ms` bounds the added latency (1 ms by default); the socket polls
//! readable only once a block has been retired. At high load blocks fill before the timeout.
//!
//! Every offset and length the kernel writes into the ring is bounds-checked against the block:
//! a frame that does not fit is dropped, a block whose frame chain leaves it is abandoned (its
//! remaining frames counted as drops). Nothing the ring holds can make this code panic.
//!
//! Frames the kernel received with an 802.1Q/802.1ad tag stripped (`TP_STATUS_VLAN_VALID`) get
//! the tag re-inserted after the MAC addresses, so the pipeline sees the frame as sent. Frames
//! whose L4 checksum a local sender left to offload (`TP_STATUS_CSUMNOTREADY`) are marked
//! [`RxMeta::l4_csum_partial`].
//!
//! Frames sent out of the interface (by anyone on this host, including other members of our
//! fanout group) are not received back: the socket sets `PACKET_IGNORE_OUTGOING` (and a fanout
//! group `PACKET_FANOUT_FLAG_IGNORE_OUTGOING`, since a fanout member's own hook is replaced by
//! the group's), and frames with `sll_pkttype == PACKET_OUTGOING` are skipped in any case for
//! kernels without those options.
//!
//! # Transmit
//! [`TxMode::Ring`]: a `PACKET_TX_RING` of 2048-byte slots after the RX ring in the same
//! mapping. A frame is copied to the slot at the ring head if the kernel has released it
//! (`TP_STATUS_AVAILABLE`; otherwise it is a `tx_dropped`), with `tp_len` set and the data at
//! offset `TPACKET3_HDRLEN - sizeof(struct sockaddr_ll)` (= `TPACKET_ALIGN(sizeof(struct
//! tpacket3_hdr))`, 48 bytes: the kernel's `tpacket_parse_header` without `PACKET_TX_HAS_OFF`),
//! not after the `sockaddr_ll` as on receive. Then `TP_STATUS_SEND_REQUEST` is set, and one
//! `sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0)` per burst makes the kernel send every requested
//! slot. A frame counts as sent once it is in the ring; if the kick fails (link down, socket
//! buffer full) the slots stay requested and go out with the next kick. `PACKET_LOSS` is set so
//! a slot the kernel rejects (e.g. longer than the MTU) is skipped instead of stalling the ring.
//!
//! [`TxMode::Sendmmsg`]: one `sendmmsg` per burst over `mmsghdr`/`iovec` arrays allocated at
//! open that point at the buffers' data. No TX ring is set up in this mode: with a TX ring the
//! kernel routes every `sendmsg` on the socket through the ring.
//!
//! # Statistics
//! The kernel's own drop counter (`PACKET_STATISTICS`, `tp_drops`: frames lost because the ring
//! was full) is read, and reset by the kernel, on each [`stats`](PacketIo::stats) call and folded
//! into `rx_dropped`; it is therefore as fresh as the last `stats()` call. The counter lives in
//! a `Cell`, which makes the port `Send` but not `Sync`, as a per-worker queue should be.
#![allow(unsafe_code)]

use super::sys;
use super::{LinkEvent, PacketIo, PortStats};
use crate::buf::{Batch, PacketBuf, RxMeta, BURST};
use crate::mempool::{Mempool, PoolBuf, PoolCache};
use std::cell::Cell;
use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// Bytes per TX ring slot (header and frame).
pub const TX_FRAME_SIZE: usize = 2048;
/// Offset of the frame data in a TX slot: `TPACKET3_HDRLEN - sizeof(struct sockaddr_ll)`.
const TX_DATA_OFFSET: usize = libc::TPACKET3_HDRLEN - size_of::<libc::sockaddr_ll>();
/// Longest frame a TX ring slot holds, in bytes (further limited to MTU + 18 at open).
pub const TX_MAX_FRAME_LEN: usize = TX_FRAME_SIZE - TX_DATA_OFFSET;
/// Nominal RX frame size given to the kernel; `TPACKET_V3` packs frames of any size into
/// blocks, but the request must still describe a consistent frame count.
const RX_NOMINAL_FRAME: u32 = 2048;
/// `TPACKET_V3` in `enum tpacket_versions`.
const TPACKET_V3: libc::c_int = 2;
/// `TPACKET_ALIGN(sizeof(struct tpacket3_hdr))`: where the `sockaddr_ll` sits in an RX frame.
const RX_SLL_OFFSET: usize = align16(size_of::<libc::tpacket3_hdr>());
/// Ethernet header length (destination, source, EtherType).
const ETH_HLEN: usize = 14;
/// Bytes of the MAC addresses, after which a VLAN tag goes.
const ETH_ALEN2: usize = 12;
/// One 802.1Q tag: TPID and TCI.
const VLAN_HLEN: usize = 4;
/// `ETH_P_ALL` in network byte order, as `sll_protocol` and `socket()` want it.
const ETH_P_ALL_BE: u16 = 0x0003u16.to_be();
/// The 802.1Q TPID, for tags whose TPID the kernel did not report.
const ETH_P_8021Q: u16 = 0x8100;

const fn align16(x: usize) -> usize {
    (x + libc::TPACKET_ALIGNMENT - 1) & !(libc::TPACKET_ALIGNMENT - 1)
}

/// Byte offsets of the ring header fields read or written here (native endian).
mod off {
    use std::mem::offset_of;
    /// `tpacket_block_desc.hdr.bh1` (the union's only member starts the union).
    const BH1: usize = offset_of!(libc::tpacket_block_desc, hdr);
    pub const BLOCK_STATUS: usize = BH1 + offset_of!(libc::tpacket_hdr_v1, block_status);
    pub const NUM_PKTS: usize = BH1 + offset_of!(libc::tpacket_hdr_v1, num_pkts);
    pub const FIRST_PKT: usize = BH1 + offset_of!(libc::tpacket_hdr_v1, offset_to_first_pkt);
    pub const NEXT: usize = offset_of!(libc::tpacket3_hdr, tp_next_offset);
    pub const SNAPLEN: usize = offset_of!(libc::tpacket3_hdr, tp_snaplen);
    pub const LEN: usize = offset_of!(libc::tpacket3_hdr, tp_len);
    pub const STATUS: usize = offset_of!(libc::tpacket3_hdr, tp_status);
    pub const MAC: usize = offset_of!(libc::tpacket3_hdr, tp_mac);
    const HV1: usize = offset_of!(libc::tpacket3_hdr, hv1);
    pub const VLAN_TCI: usize = HV1 + offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tci);
    pub const VLAN_TPID: usize = HV1 + offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tpid);
}

/// How frames are handed to the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TxMode {
    /// Copy into a mapped `PACKET_TX_RING` and kick it with one `sendto` per burst.
    #[default]
    Ring,
    /// One `sendmmsg` per burst straight from the buffers (no TX ring).
    Sendmmsg,
}

/// Settings of one [`AfPacketPort`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AfPacketConfig {
    /// Interface to bind to, e.g. `"eth0"`.
    pub iface: String,
    /// Bytes per RX block: a power of two and a multiple of the page size. Default 256 KiB
    /// (about 170 full-size frames).
    pub block_size: u32,
    /// Number of RX blocks. Default 64 (16 MiB of ring with the default block size).
    pub block_count: u32,
    /// Milliseconds after which the kernel hands over a partly filled RX block
    /// (`tp_retire_blk_tov`): the added latency at low load. 0 lets the kernel derive it from
    /// the link speed (several ms). Default 1.
    pub block_timeout_ms: u32,
    /// TX ring slots of [`TX_FRAME_SIZE`] bytes, rounded up to whole pages. Default 512.
    /// Unused with [`TxMode::Sendmmsg`].
    pub tx_frames: u32,
    /// How frames are sent. Default [`TxMode::Ring`].
    pub tx_mode: TxMode,
    /// `PACKET_FANOUT` group id: ports on the same interface with the same group share its
    /// traffic by flow hash (`PACKET_FANOUT_HASH`), one flow always to the same port. Groups are
    /// per network namespace. Default `None`.
    pub fanout: Option<u16>,
    /// Send without the interface's queueing discipline (`PACKET_QDISC_BYPASS`). Default true.
    pub qdisc_bypass: bool,
    /// Put the interface in promiscuous mode for as long as the port is open
    /// (`PACKET_MR_PROMISC` membership). Default true.
    pub promiscuous: bool,
}

impl Default for AfPacketConfig {
    fn default() -> Self {
        AfPacketConfig {
            iface: String::new(),
            block_size: 1 << 18,
            block_count: 64,
            block_timeout_ms: 1,
            tx_frames: 512,
            tx_mode: TxMode::Ring,
            fanout: None,
            qdisc_bypass: true,
            promiscuous: true,
        }
    }
}

impl AfPacketConfig {
    /// Defaults for interface `iface`.
    pub fn new(iface: impl Into<String>) -> Self {
        AfPacketConfig { iface: iface.into(), ..AfPacketConfig::default() }
    }
}

/// A shared mapping of the socket's rings; unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(fd: RawFd, len: usize) -> io::Result<Mapping> {
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_SHARED | libc::MAP_POPULATE;
        // SAFETY: no address hint, so the kernel picks fresh address space and no existing Rust
        // object is affected; `fd` is a packet socket whose rings total exactly `len` bytes.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(p.cast::<u8>())
            .map(|ptr| Mapping { ptr, len })
            .ok_or_else(|| io::Error::other("mmap returned null"))
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; the rings that point into the mapping
        // are fields of the same port and are never used after the port starts dropping.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Geometry of the RX ring at the start of the mapping.
struct RxRing {
    base: NonNull<u8>,
    block_size: usize,
    /// Number of blocks, at least 1.
    blocks: usize,
}

impl RxRing {
    /// Start of block `i` (taken modulo the block count, so always inside the ring).
    fn block_ptr(&self, i: usize) -> *mut u8 {
        self.base.as_ptr().wrapping_add((i % self.blocks) * self.block_size)
    }

    /// The status word of block `i`.
    fn status(&self, i: usize) -> &AtomicU32 {
        let p = self.block_ptr(i).wrapping_add(off::BLOCK_STATUS).cast::<u32>();
        // SAFETY: `p` is inside the mapping (block index reduced modulo the count, and the
        // status word lies within the block header) and 4-byte aligned (blocks are page
        // aligned, the field offset is 8). The mapping lives as long as the port that owns this
        // ring, which outlives `&self`. The kernel and this code access the word only as a
        // status flag, with barriers on the kernel side paired with Acquire/Release here.
        unsafe { AtomicU32::from_ptr(p) }
    }

    /// Block `i`'s bytes if the kernel has handed it to user space.
    fn user_block(&self, i: usize) -> Option<&[u8]> {
        if self.status(i).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
            return None;
        }
        // SAFETY: the block lies inside the mapping (see `status`), which outlives `&self`. Its
        // status is TP_STATUS_USER, read with Acquire after the kernel's write barrier, so the
        // kernel has finished writing it and will not write it again until `release` stores
        // TP_STATUS_KERNEL; `release` takes `&mut self`, so it cannot run while this shared
        // slice is alive. `u8` has no alignment or validity requirements.
        Some(unsafe { std::slice::from_raw_parts(self.block_ptr(i), self.block_size) })
    }

    /// Returns block `i` to the kernel.
    fn release(&mut self, i: usize) {
        self.status(i).store(libc::TP_STATUS_KERNEL, Ordering::Release);
    }
}

/// Where `rx_burst` stands in the RX ring.
#[derive(Default)]
struct RxPos {
    /// Block to read next (or being read).
    block: usize,
    /// Whether `block` has been handed over and its header read.
    open: bool,
    /// Frames of `block` not yet consumed.
    remaining: u32,
    /// Offset within `block` of the next frame.
    off: usize,
}

/// The fields of one RX frame header, read from the ring.
struct FrameHdr {
    next: u32,
    snaplen: u32,
    len: u32,
    status: u32,
    mac: u16,
    vlan_tci: u16,
    vlan_tpid: u16,
    pkttype: u8,
}

fn rd_u32(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(bytes.try_into().ok()?))
}

fn rd_u16(b: &[u8], at: usize) -> Option<u16> {
    let bytes = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes(bytes.try_into().ok()?))
}

impl FrameHdr {
    /// Reads the header at `off` in `block`; `None` if it does not fit.
    fn parse(block: &[u8], off: usize) -> Option<FrameHdr> {
        let h = block.get(off..off.checked_add(libc::TPACKET3_HDRLEN)?)?;
        Some(FrameHdr {
            next: rd_u32(h, off::NEXT)?,
            snaplen: rd_u32(h, off::SNAPLEN)?,
            len: rd_u32(h, off::LEN)?,
            status: rd_u32(h, off::STATUS)?,
            mac: rd_u16(h, off::MAC)?,
            vlan_tci: u16::try_from(rd_u32(h, off::VLAN_TCI)? & 0xffff).ok()?,
            vlan_tpid: rd_u16(h, off::VLAN_TPID)?,
            pkttype: *h.get(RX_SLL_OFFSET + offset_of!(libc::sockaddr_ll, sll_pkttype))?,
        })
    }
}

/// What to do with one RX frame.
enum RxOutcome {
    Deliver(PoolBuf),
    /// Not for us (our own or another host process's outgoing frame); not a drop.
    Skip,
    /// Longer than a buffer (or than the ring's frame, which cut it): counted apart, it is
    /// the sender's frame size, not weir's loss.
    Oversize,
    Drop,
}

/// Copies the frame described by `h` at `off` in `block` into a fresh buffer.
fn copy_frame(
    block: &[u8],
    off: usize,
    h: &FrameHdr,
    cache: &mut PoolCache,
    buf_cap: usize,
) -> RxOutcome {
    if h.pkttype == libc::PACKET_OUTGOING {
        return RxOutcome::Skip;
    }
    let mac = usize::from(h.mac);
    let Ok(snap) = usize::try_from(h.snaplen) else { return RxOutcome::Drop };
    let Some(data) = off
        .checked_add(mac)
        .and_then(|start| Some(start..start.checked_add(snap)?))
        .and_then(|r| block.get(r))
    else {
        return RxOutcome::Drop;
    };
    // Truncated by the ring (longer than a block): not the frame that was sent.
    if h.snaplen < h.len {
        return RxOutcome::Oversize;
    }
    let vlan = h.status & libc::TP_STATUS_VLAN_VALID != 0;
    let total = data.len() + if vlan { VLAN_HLEN } else { 0 };
    if total > buf_cap {
        return RxOutcome::Oversize;
    }
    if vlan && data.len() < ETH_ALEN2 {
        return RxOutcome::Drop;
    }
    let Some(mut buf) = cache.alloc() else { return RxOutcome::Drop };
    if buf.set_len(total).is_err() {
        return RxOutcome::Drop;
    }
    let out = buf.data_mut();
    if vlan {
        let tpid =
            if h.status & libc::TP_STATUS_VLAN_TPID_VALID != 0 { h.vlan_tpid } else { ETH_P_8021Q };
        let (macs, rest) = data.split_at(ETH_ALEN2);
        let (out_macs, out_rest) = out.split_at_mut(ETH_ALEN2);
        out_macs.copy_from_slice(macs);
        let (tag, payload) = out_rest.split_at_mut(VLAN_HLEN);
        tag[..2].copy_from_slice(&tpid.to_be_bytes());
        tag[2..].copy_from_slice(&h.vlan_tci.to_be_bytes());
        payload.copy_from_slice(rest);
    } else {
        out.copy_from_slice(data);
    }
    if h.status & libc::TP_STATUS_CSUMNOTREADY != 0 {
        buf.set_meta(RxMeta { l4_csum_partial: true });
    }
    RxOutcome::Deliver(buf)
}

/// Geometry and head of the TX ring, after the RX ring in the mapping.
struct TxRing {
    base: NonNull<u8>,
    block_size: usize,
    frames_per_block: usize,
    /// Number of slots, at least 1.
    frames: usize,
    /// Next slot to fill; the kernel consumes slots in the same order.
    head: usize,
}

impl TxRing {
    /// Start of slot `i` (taken modulo the slot count, so always inside the ring).
    fn slot_ptr(&self, i: usize) -> *mut u8 {
        let i = i % self.frames;
        let at = (i / self.frames_per_block) * self.block_size
            + (i % self.frames_per_block) * TX_FRAME_SIZE;
        self.base.as_ptr().wrapping_add(at)
    }

    /// The status word of slot `i`.
    fn status(&self, i: usize) -> &AtomicU32 {
        let p = self.slot_ptr(i).wrapping_add(off::STATUS).cast::<u32>();
        // SAFETY: `p` is inside the mapping (slot index reduced modulo the count; the field lies
        // in the slot header) and 4-byte aligned (slots start at multiples of 2048 in
        // page-aligned blocks; the field offset is 20). The mapping outlives `&self` (both
        // belong to the port). Both sides use the word only as a status flag, the kernel with
        // barriers paired with Acquire/Release here.
        unsafe { AtomicU32::from_ptr(p) }
    }

    /// Copies `frame` into the head slot and requests its sending; false if the kernel still
    /// owns the slot or the frame does not fit one.
    fn push(&mut self, frame: &[u8]) -> bool {
        if frame.len() > TX_MAX_FRAME_LEN {
            return false;
        }
        let Ok(len) = u32::try_from(frame.len()) else { return false };
        let status = self.status(self.head);
        if status.load(Ordering::Acquire) != libc::TP_STATUS_AVAILABLE {
            return false;
        }
        let slot = self.slot_ptr(self.head);
        // SAFETY: `slot` starts a TX_FRAME_SIZE-byte slot inside the mapping (see `status`); the
        // header fields written end at 24 and the data at TX_DATA_OFFSET + len <= TX_FRAME_SIZE
        // (checked above), so every write stays in the slot. The slot is TP_STATUS_AVAILABLE, so
        // the kernel neither reads (beyond the status word) nor writes it until the Release
        // store of TP_STATUS_SEND_REQUEST below. `frame` is a pool buffer, never ring memory,
        // so source and destination do not overlap. Unaligned writes need no alignment.
        unsafe {
            slot.wrapping_add(off::NEXT).cast::<u32>().write_unaligned(0);
            slot.wrapping_add(off::SNAPLEN).cast::<u32>().write_unaligned(len);
            slot.wrapping_add(off::LEN).cast::<u32>().write_unaligned(len);
            std::ptr::copy_nonoverlapping(
                frame.as_ptr(),
                slot.wrapping_add(TX_DATA_OFFSET),
                frame.len(),
            );
        }
        status.store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.head = (self.head + 1) % self.frames;
        true
    }
}

/// Message arrays for [`TxMode::Sendmmsg`], allocated once at open.
struct MmsgState {
    msgs: [libc::mmsghdr; BURST],
    iovs: [libc::iovec; BURST],
}

impl MmsgState {
    fn new() -> Box<MmsgState> {
        // SAFETY: `mmsghdr` is a C struct of integers and raw pointers, for which all-zero
        // bytes (null pointers, zero lengths and flags) are a valid value.
        let msgs: [libc::mmsghdr; BURST] = unsafe { std::mem::zeroed() };
        let iovs = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BURST];
        Box::new(MmsgState { msgs, iovs })
    }
}

enum Tx {
    Ring(TxRing),
    Mmsg(Box<MmsgState>),
}

/// The rings' sizes, as a configuration asks for them.
struct Geometry {
    block_size: usize,
    blocks: usize,
    rx_len: usize,
    rx_frames: u32,
    /// TX ring block size and slots per block.
    tx_block: usize,
    frames_per_block: usize,
    /// TX ring slots (a whole number of blocks), when there is a TX ring.
    tx_frames: Option<usize>,
    tx_len: usize,
}

impl Geometry {
    /// The geometry of `cfg`'s rings, or what is wrong with it.
    fn of(cfg: &AfPacketConfig) -> Result<Geometry, String> {
        let page = sys::page_size();
        let block_size = usize::try_from(cfg.block_size).map_err(|_| "block_size")?;
        if !block_size.is_power_of_two() || block_size < page {
            return Err("block_size must be a power of two of at least one page".into());
        }
        if cfg.block_count == 0 {
            return Err("block_count must be at least 1".into());
        }
        let blocks = usize::try_from(cfg.block_count).map_err(|_| "block_count")?;
        let rx_len = block_size.checked_mul(blocks).ok_or("RX ring size overflows")?;
        let rx_frames = (cfg.block_size / RX_NOMINAL_FRAME)
            .checked_mul(cfg.block_count)
            .ok_or("RX ring size overflows")?;
        // TX ring: blocks of one page (or one slot if pages are smaller than a slot).
        let tx_block = page.max(TX_FRAME_SIZE);
        let frames_per_block = tx_block / TX_FRAME_SIZE;
        let (tx_frames, tx_len) = match cfg.tx_mode {
            TxMode::Sendmmsg => (None, 0),
            TxMode::Ring => {
                if cfg.tx_frames == 0 {
                    return Err("tx_frames must be at least 1".into());
                }
                let frames = usize::try_from(cfg.tx_frames).map_err(|_| "tx_frames")?;
                let tx_blocks = frames.div_ceil(frames_per_block);
                let tx_len = tx_blocks.checked_mul(tx_block).ok_or("TX ring overflows")?;
                u32::try_from(tx_blocks * frames_per_block).map_err(|_| "TX ring size")?;
                (Some(tx_blocks * frames_per_block), tx_len)
            }
        };
        rx_len.checked_add(tx_len).ok_or("ring size overflows")?;
        Ok(Geometry {
            block_size,
            blocks,
            rx_len,
            rx_frames,
            tx_block,
            frames_per_block,
            tx_frames,
            tx_len,
        })
    }

    fn map_len(&self) -> usize {
        self.rx_len + self.tx_len
    }
}

/// One `AF_PACKET` socket on one interface, with its mapped rings. See the module docs.
pub struct AfPacketPort {
    // Field order is drop order: unmap the rings, then close the socket. Held for its `Drop`;
    // `rx` and `tx` point into it.
    _map: Mapping,
    fd: OwnedFd,
    rx: RxRing,
    pos: RxPos,
    tx: Tx,
    cache: PoolCache,
    /// Largest frame a pool buffer holds.
    buf_cap: usize,
    /// Largest frame the TX ring accepts: min(slot room, MTU + Ethernet header + one tag).
    max_tx_len: usize,
    ifindex: u32,
    mac: [u8; 6],
    stats: PortStats,
    /// Sum of the kernel's `tp_drops` read so far (the kernel resets it on each read).
    kernel_drops: Cell<u64>,
    /// What the port was opened with, to open it again on a device that returns as new.
    cfg: AfPacketConfig,
    pool: &'static Mempool,
    /// The device is gone or down (see [`PacketIo::check_link`]).
    down: bool,
}

// SAFETY: the raw pointers in `map`, `rx` and `tx` point into a mapping only this port can
// reach (the socket is not shared), so moving the port moves sole access with it; the kernel
// side synchronises through the status words with atomics, not thread identity. The pointers in
// the `mmsghdr`/`iovec` arrays are rewritten before every `sendmmsg` and never dereferenced by
// us. `PoolCache` and `Cell<u64>` are `Send`.
unsafe impl Send for AfPacketPort {}

impl AfPacketPort {
    /// Opens a socket on `cfg.iface`, sets up and maps its rings, and binds it. Received
    /// frames are copied into buffers from `pool`. Errors name the interface and the failing
    /// step. Needs `CAP_NET_RAW` (and `CAP_NET_ADMIN` for `qdisc_bypass`).
    pub fn open(cfg: &AfPacketConfig, pool: &'static Mempool) -> io::Result<Self> {
        let subject = format!("af_packet {}", cfg.iface);
        let ctx = |step: &str| {
            let subject = subject.as_str();
            let step = step.to_owned();
            move |e: io::Error| sys::context(e, subject, &step)
        };
        let invalid = |msg: &str| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{subject}: config: {msg}"))
        };

        let g = Geometry::of(cfg).map_err(|m| invalid(&m))?;
        let ifindex = sys::if_index(&cfg.iface).map_err(ctx("SIOCGIFINDEX"))?;
        let ifindex_c = libc::c_int::try_from(ifindex).map_err(|_| invalid("ifindex"))?;

        // Protocol 0: receive nothing until bound to the interface, so the ring never holds
        // frames from other interfaces.
        let flags = libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
        // SAFETY: plain socket(2) call with constant arguments; no pointers involved.
        let raw = sys::cvt(unsafe { libc::socket(libc::AF_PACKET, flags, 0) })
            .map_err(ctx("socket(AF_PACKET)"))?;
        // SAFETY: `raw` was just returned by socket(2), is open, and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let sfd = fd.as_raw_fd();
        let set = |name: libc::c_int, val: libc::c_int| {
            sys::setsockopt(sfd, libc::SOL_PACKET, name, &val)
        };

        set(libc::PACKET_VERSION, TPACKET_V3).map_err(ctx("PACKET_VERSION TPACKET_V3"))?;
        if cfg.tx_mode == TxMode::Ring {
            // Skip (rather than stall on) a TX slot the kernel rejects as malformed. Like the
            // version, this must be set before any ring exists (EBUSY after).
            set(libc::PACKET_LOSS, 1).map_err(ctx("PACKET_LOSS"))?;
        }
        if cfg.qdisc_bypass {
            set(libc::PACKET_QDISC_BYPASS, 1).map_err(ctx("PACKET_QDISC_BYPASS"))?;
        }
        // Unsupported (before Linux 4.20) is fine: outgoing frames are also filtered by
        // sll_pkttype in rx_burst.
        let _ = set(libc::PACKET_IGNORE_OUTGOING, 1);

        let u32_of = |v: usize| u32::try_from(v).map_err(|_| invalid("ring size"));
        let rx_req = libc::tpacket_req3 {
            tp_block_size: cfg.block_size,
            tp_block_nr: cfg.block_count,
            tp_frame_size: RX_NOMINAL_FRAME,
            tp_frame_nr: g.rx_frames,
            tp_retire_blk_tov: cfg.block_timeout_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        sys::setsockopt(sfd, libc::SOL_PACKET, libc::PACKET_RX_RING, &rx_req)
            .map_err(ctx("PACKET_RX_RING"))?;
        if let Some(frames) = g.tx_frames {
            let tx_req = libc::tpacket_req3 {
                tp_block_size: u32_of(g.tx_block)?,
                tp_block_nr: u32_of(frames / g.frames_per_block)?,
                tp_frame_size: u32_of(TX_FRAME_SIZE)?,
                tp_frame_nr: u32_of(frames)?,
                // Must be zero for a TX ring.
                tp_retire_blk_tov: 0,
                tp_sizeof_priv: 0,
                tp_feature_req_word: 0,
            };
            sys::setsockopt(sfd, libc::SOL_PACKET, libc::PACKET_TX_RING, &tx_req)
                .map_err(ctx("PACKET_TX_RING"))?;
        }
        let map = Mapping::new(sfd, g.map_len()).map_err(ctx("mmap rings"))?;

        let sll = libc::sockaddr_ll {
            sll_family: u16::try_from(libc::AF_PACKET).map_err(|_| invalid("AF_PACKET"))?,
            sll_protocol: ETH_P_ALL_BE,
            sll_ifindex: ifindex_c,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 0,
            sll_addr: [0; 8],
        };
        let sll_len = libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>())
            .map_err(|_| invalid("sockaddr_ll"))?;
        // SAFETY: `sll` is a valid sockaddr_ll and `sll_len` is its size; the kernel only reads
        // it during the call.
        sys::cvt(unsafe { libc::bind(sfd, std::ptr::from_ref(&sll).cast(), sll_len) })
            .map_err(ctx("bind"))?;

        if cfg.promiscuous {
            let mreq = libc::packet_mreq {
                mr_ifindex: ifindex_c,
                mr_type: u16::try_from(libc::PACKET_MR_PROMISC).map_err(|_| invalid("mreq"))?,
                mr_alen: 0,
                mr_address: [0; 8],
            };
            sys::setsockopt(sfd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)
                .map_err(ctx("PACKET_ADD_MEMBERSHIP PACKET_MR_PROMISC"))?;
        }

        if let Some(group) = cfg.fanout {
            // After bind: the kernel only lets a bound, running socket join a group.
            let arg = |flags: u32| {
                libc::c_int::try_from(u32::from(group) | (flags << 16))
                    .map_err(|_| invalid("fanout argument"))
            };
            let with_flag = libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_IGNORE_OUTGOING;
            if set(libc::PACKET_FANOUT, arg(with_flag)?).is_err() {
                // Kernels before 4.20 lack the flag; sll_pkttype filtering covers them.
                set(libc::PACKET_FANOUT, arg(libc::PACKET_FANOUT_HASH)?)
                    .map_err(ctx("PACKET_FANOUT"))?;
            }
        }
        let port = Self::attach(cfg, pool, fd, map, &g, ifindex)?;
        tracing::info!(
            iface = %cfg.iface,
            ifindex,
            rx_ring_bytes = g.rx_len,
            tx_ring_bytes = g.tx_len,
            tx_mode = ?cfg.tx_mode,
            fanout = ?cfg.fanout,
            "af_packet port open"
        );
        Ok(port)
    }

    /// Goes on with a socket another process opened with the same `cfg` and handed over (a
    /// hot restart): its rings are mapped again and read from `position`, where that process
    /// stopped; `stats` are the counters it had. The socket stays bound, in its fanout group,
    /// with the frames its ring holds.
    pub fn adopt(
        cfg: &AfPacketConfig,
        pool: &'static Mempool,
        fd: OwnedFd,
        position: super::QueuePosition,
        stats: PortStats,
    ) -> io::Result<Self> {
        let subject = format!("af_packet {}", cfg.iface);
        let g = Geometry::of(cfg).map_err(|m| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{subject}: config: {m}"))
        })?;
        let ifindex =
            sys::if_index(&cfg.iface).map_err(|e| sys::context(e, &subject, "SIOCGIFINDEX"))?;
        let map = Mapping::new(fd.as_raw_fd(), g.map_len())
            .map_err(|e| sys::context(e, &subject, "mmap handed-over rings"))?;
        let mut port = Self::attach(cfg, pool, fd, map, &g, ifindex)?;
        if let super::QueuePosition::AfPacket { block, open, remaining, offset, tx_head } = position
        {
            port.pos = RxPos {
                block: usize::try_from(block).unwrap_or(0) % g.blocks,
                open,
                remaining,
                off: usize::try_from(offset).unwrap_or(usize::MAX),
            };
            if let Tx::Ring(r) = &mut port.tx {
                r.head = usize::try_from(tx_head).unwrap_or(0) % r.frames;
            }
        }
        port.stats = stats;
        tracing::info!(iface = %cfg.iface, ifindex, "af_packet port taken over");
        Ok(port)
    }

    /// The port over a socket whose rings are set up and mapped as `g` says.
    fn attach(
        cfg: &AfPacketConfig,
        pool: &'static Mempool,
        fd: OwnedFd,
        map: Mapping,
        g: &Geometry,
        ifindex: u32,
    ) -> io::Result<Self> {
        let subject = format!("af_packet {}", cfg.iface);
        let mac =
            sys::if_mac(&cfg.iface).map_err(|e| sys::context(e, &subject, "SIOCGIFHWADDR"))?;
        let mtu = sys::if_mtu(&cfg.iface).map_err(|e| sys::context(e, &subject, "SIOCGIFMTU"))?;
        let rx = RxRing { base: map.ptr, block_size: g.block_size, blocks: g.blocks };
        let tx = match g.tx_frames {
            None => Tx::Mmsg(MmsgState::new()),
            Some(frames) => Tx::Ring(TxRing {
                // In bounds: rx_len < map_len when a TX ring exists.
                base: NonNull::new(map.ptr.as_ptr().wrapping_add(g.rx_len))
                    .ok_or_else(|| io::Error::other(format!("{subject}: TX ring address")))?,
                block_size: g.tx_block,
                frames_per_block: g.frames_per_block,
                frames,
                head: 0,
            }),
        };
        let max_tx_len = usize::try_from(mtu)
            .ok()
            .and_then(|m| m.checked_add(ETH_HLEN + VLAN_HLEN))
            .map_or(TX_MAX_FRAME_LEN, |m| m.min(TX_MAX_FRAME_LEN));
        Ok(AfPacketPort {
            _map: map,
            fd,
            rx,
            pos: RxPos::default(),
            tx,
            cache: PoolCache::new(pool),
            buf_cap: usize::from(pool.config().data_room),
            max_tx_len,
            ifindex,
            mac,
            stats: PortStats::default(),
            kernel_drops: Cell::new(0),
            cfg: cfg.clone(),
            pool,
            down: false,
        })
    }

    /// The interface's MAC address (read at open).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The interface's index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    fn tx_ring(&mut self, batch: &mut Batch<PoolBuf>) -> usize {
        let Tx::Ring(ring) = &mut self.tx else { return 0 };
        let mut queued = 0;
        for buf in batch.drain(..) {
            let len = buf.len();
            if len < ETH_HLEN || len > self.max_tx_len || !ring.push(buf.data()) {
                self.stats.tx_dropped += 1;
                continue;
            }
            queued += 1;
            self.stats.tx_bytes += len as u64;
        }
        if queued > 0 {
            // SAFETY: a zero-length sendto with no buffer and no address: the kernel reads no
            // user memory besides the ring it already mapped. Failure leaves the requested
            // slots for the next kick (see the module docs), so the result is not needed.
            unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                );
            }
        }
        self.stats.tx_packets += queued as u64;
        queued
    }

    fn tx_mmsg(&mut self, batch: &mut Batch<PoolBuf>) -> usize {
        let Tx::Mmsg(st) = &mut self.tx else { return 0 };
        let n = batch.len();
        for (iov, buf) in st.iovs.iter_mut().zip(batch.iter()) {
            *iov =
                libc::iovec { iov_base: buf.data().as_ptr().cast_mut().cast(), iov_len: buf.len() };
        }
        for (msg, iov) in st.msgs.iter_mut().zip(st.iovs.iter_mut()).take(n) {
            msg.msg_hdr.msg_name = std::ptr::null_mut();
            msg.msg_hdr.msg_namelen = 0;
            msg.msg_hdr.msg_iov = std::ptr::from_mut(iov);
            msg.msg_hdr.msg_iovlen = 1;
            msg.msg_hdr.msg_control = std::ptr::null_mut();
            msg.msg_hdr.msg_controllen = 0;
            msg.msg_hdr.msg_flags = 0;
        }
        let mut i = 0;
        let mut sent = 0;
        while i < n {
            let Ok(vlen) = libc::c_uint::try_from(n - i) else { break };
            let msgs = st.msgs[i..n].as_mut_ptr();
            // SAFETY: `msgs` points at the n - i = vlen initialised mmsghdrs msgs[i..n]; each
            // msg_iov points at one iovec of `st.iovs` (msg_iovlen 1), which points at the data
            // of a buffer in `batch`, borrowed and not freed until after this call. The kernel
            // reads the data and writes only the msg_len fields.
            let r = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs, vlen, libc::MSG_DONTWAIT) };
            match usize::try_from(r) {
                Ok(k) if k > 0 => {
                    let k = k.min(n - i);
                    for iov in &st.iovs[i..i + k] {
                        self.stats.tx_bytes += iov.iov_len as u64;
                    }
                    sent += k;
                    i += k;
                }
                _ => {
                    let errno = io::Error::last_os_error().raw_os_error();
                    if matches!(errno, Some(libc::EMSGSIZE | libc::EINVAL | libc::ENOBUFS)) {
                        // This frame was refused (too long, too short, dropped by the device):
                        // skip it and go on with the rest.
                        i += 1;
                    } else {
                        // Socket-wide (would block, link down, ...): the rest fails too.
                        break;
                    }
                }
            }
        }
        self.stats.tx_packets += sent as u64;
        self.stats.tx_dropped += (n - sent) as u64;
        batch.clear();
        sent
    }
}

impl PacketIo for AfPacketPort {
    type Buf = PoolBuf;

    fn rx_burst(&mut self, batch: &mut Batch<PoolBuf>) -> usize {
        let start = batch.len();
        let mut released = 0;
        // At most one lap of the ring per burst.
        while !batch.is_full() && released < self.rx.blocks {
            let Some(block) = self.rx.user_block(self.pos.block) else { break };
            if !self.pos.open {
                self.pos.open = true;
                match (rd_u32(block, off::NUM_PKTS), rd_u32(block, off::FIRST_PKT)) {
                    (Some(n), Some(first)) => {
                        self.pos.remaining = n;
                        self.pos.off = usize::try_from(first).unwrap_or(usize::MAX);
                    }
                    _ => self.pos.remaining = 0,
                }
            }
            while self.pos.remaining > 0 && !batch.is_full() {
                let Some(h) = FrameHdr::parse(block, self.pos.off) else {
                    // The frame chain left the block: abandon the rest of it.
                    self.stats.rx_dropped += u64::from(self.pos.remaining);
                    self.pos.remaining = 0;
                    break;
                };
                match copy_frame(block, self.pos.off, &h, &mut self.cache, self.buf_cap) {
                    RxOutcome::Deliver(buf) => {
                        self.stats.rx_bytes += buf.len() as u64;
                        batch.push(buf);
                    }
                    RxOutcome::Skip => {}
                    RxOutcome::Oversize => self.stats.rx_oversize += 1,
                    RxOutcome::Drop => self.stats.rx_dropped += 1,
                }
                self.pos.remaining -= 1;
                if self.pos.remaining > 0 {
                    let next = usize::try_from(h.next)
                        .ok()
                        .filter(|&n| n > 0)
                        .and_then(|n| self.pos.off.checked_add(n));
                    match next {
                        Some(o) => self.pos.off = o,
                        None => {
                            self.stats.rx_dropped += u64::from(self.pos.remaining);
                            self.pos.remaining = 0;
                        }
                    }
                }
            }
            if self.pos.remaining == 0 {
                self.rx.release(self.pos.block);
                self.pos.block = (self.pos.block + 1) % self.rx.blocks;
                self.pos.open = false;
                released += 1;
            }
        }
        let n = batch.len() - start;
        self.stats.rx_packets += n as u64;
        n
    }

    fn tx_burst(&mut self, batch: &mut Batch<PoolBuf>) -> usize {
        if batch.is_empty() {
            return 0;
        }
        if self.down {
            // No device to send on: not one failing system call per frame.
            self.stats.tx_dropped += batch.len() as u64;
            batch.clear();
            return 0;
        }
        match self.tx {
            Tx::Ring(_) => self.tx_ring(batch),
            Tx::Mmsg(_) => self.tx_mmsg(batch),
        }
    }

    /// The socket: polls readable once the kernel has handed over an RX block.
    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    fn link_up(&self) -> bool {
        !self.down
    }

    fn handover(&self) -> Option<super::QueueHandover> {
        let tx_head = match &self.tx {
            Tx::Ring(r) => u32::try_from(r.head).ok()?,
            Tx::Mmsg(_) => 0,
        };
        Some(super::QueueHandover {
            fd: Some(self.fd.try_clone().ok()?),
            position: super::QueuePosition::AfPacket {
                block: u32::try_from(self.pos.block).ok()?,
                open: self.pos.open,
                remaining: self.pos.remaining,
                offset: u32::try_from(self.pos.off).unwrap_or(u32::MAX),
                tx_head,
            },
            stats: self.stats(),
        })
    }

    /// Clears the socket's pending error (ENETDOWN when the device went down or away, which
    /// would otherwise keep `poll(2)` returning at once) and looks the device up by name: gone
    /// or not `IFF_UP` is down; back with the same index, the kernel binds the socket to it
    /// again by itself; back as a new device (a new index), the port is opened anew on it, and
    /// the device is given the MAC the old one had.
    fn check_link(&mut self) -> Option<LinkEvent> {
        let pending: libc::c_int =
            sys::getsockopt(self.fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_ERROR, 0).unwrap_or(0);
        let iface = self.cfg.iface.clone();
        let present = sys::if_index(&iface).and_then(|i| Ok((i, sys::if_flags(&iface)?)));
        let up = |flags: u32| flags & libc::IFF_UP.unsigned_abs() != 0;
        match present {
            Ok((index, flags)) if up(flags) => {
                if index == self.ifindex {
                    if !std::mem::replace(&mut self.down, false) {
                        return None;
                    }
                    return Some(LinkEvent::Up { iface, reopened: false });
                }
                // The hosts on the link know weir by the old device's MAC (and weir keeps
                // announcing it): the new device is given that address.
                if sys::if_mac(&iface).is_ok_and(|m| m != self.mac) {
                    if let Err(e) = sys::set_if_mac(&iface, self.mac) {
                        tracing::warn!(%iface, error = %e, "the returned device keeps its own MAC: \
                            frames to weir's reach it only if the port is promiscuous");
                    }
                }
                match AfPacketPort::open(&self.cfg, self.pool) {
                    Ok(mut fresh) => {
                        fresh.mac = self.mac;
                        fresh.stats = self.stats;
                        fresh.kernel_drops.set(self.kernel_drops.get());
                        *self = fresh;
                        Some(LinkEvent::Up { iface, reopened: true })
                    }
                    Err(e) => {
                        self.down = true;
                        Some(LinkEvent::ReopenFailed { iface, error: e.to_string() })
                    }
                }
            }
            _ if self.down => None,
            result => {
                self.down = true;
                let reason = match result {
                    Err(e) => e.to_string(),
                    Ok(_) if pending != 0 => {
                        format!("down ({})", io::Error::from_raw_os_error(pending))
                    }
                    Ok(_) => "down".to_owned(),
                };
                Some(LinkEvent::Down { iface, reason })
            }
        }
    }

    /// Port counters, with the kernel's ring-full drops (read and reset by this call) folded
    /// into `rx_dropped`.
    fn stats(&self) -> PortStats {
        let zero = libc::tpacket_stats_v3 { tp_packets: 0, tp_drops: 0, tp_freeze_q_cnt: 0 };
        if let Ok(k) =
            sys::getsockopt(self.fd.as_raw_fd(), libc::SOL_PACKET, libc::PACKET_STATISTICS, zero)
        {
            self.kernel_drops.set(self.kernel_drops.get() + u64::from(k.tp_drops));
        }
        let mut s = self.stats;
        s.rx_dropped += self.kernel_drops.get();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::sys::testnet::*;
    use std::collections::HashSet;
    use std::time::{Duration, Instant};

    const LIMIT: Duration = Duration::from_secs(2);
    const BURST32: u32 = 32;

    /// Receives through `port` until `pred` has accepted `want` frames or the limit passes,
    /// returning the accepted frames' bytes and metadata.
    fn receive(
        port: &mut AfPacketPort,
        want: usize,
        mut pred: impl FnMut(&[u8]) -> bool,
    ) -> Vec<(Vec<u8>, RxMeta)> {
        let mut got = Vec::new();
        let mut batch = Batch::new();
        let deadline = Instant::now() + LIMIT;
        while got.len() < want && Instant::now() < deadline {
            if port.rx_burst(&mut batch) == 0 {
                wait_readable(port.poll_fd().unwrap(), Duration::from_millis(20));
                continue;
            }
            for b in batch.drain(..) {
                if pred(b.data()) {
                    got.push((b.data().to_vec(), b.meta()));
                }
            }
        }
        got
    }

    /// Everything `pred` accepts that arrives through `port` within `window`.
    fn receive_for(
        port: &mut AfPacketPort,
        window: Duration,
        mut pred: impl FnMut(&[u8]) -> bool,
    ) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut batch = Batch::new();
        let deadline = Instant::now() + window;
        while Instant::now() < deadline {
            port.rx_burst(&mut batch);
            got.extend(batch.drain(..).filter(|b| pred(b.data())).map(|b| b.data().to_vec()));
            wait_readable(port.poll_fd().unwrap(), Duration::from_millis(20));
        }
        got
    }

    fn bufs(pool: &'static Mempool, frames: &[Vec<u8>]) -> Batch<PoolBuf> {
        let mut batch = Batch::new();
        for f in frames {
            let mut b = pool.alloc().unwrap();
            b.fill(f).unwrap();
            batch.push(b);
        }
        batch
    }

    #[test]
    fn rx_from_peer_and_tx_to_peer_both_modes() {
        in_private_netns("afpacket rx/tx", || {
            veth_pair("wa", "wb");
            let pool = test_pool(1024, 2048);
            let peer = RawSocket::bind("wb");
            let peer_mac = sys::if_mac("wb").unwrap();
            // With and without qdisc bypass (which skips the interface's packet taps).
            for (mode, qdisc_bypass) in [
                (TxMode::Ring, true),
                (TxMode::Ring, false),
                (TxMode::Sendmmsg, true),
                (TxMode::Sendmmsg, false),
            ] {
                let cfg =
                    AfPacketConfig { tx_mode: mode, qdisc_bypass, ..AfPacketConfig::new("wa") };
                let mut port = AfPacketPort::open(&cfg, pool).unwrap();
                assert_eq!(port.mac(), sys::if_mac("wa").unwrap());
                assert_eq!(port.ifindex(), sys::if_index("wa").unwrap());

                // 100 distinct frames b -> a, of varied sizes.
                let sent: Vec<Vec<u8>> = (0..100)
                    .map(|i| test_frame(port.mac(), peer_mac, i, (i * 13) as usize))
                    .collect();
                for f in &sent {
                    peer.send(f);
                }
                let got = receive(&mut port, 100, |f| test_seq(f).is_some());
                assert_eq!(got.len(), 100, "{mode:?}: received {} of 100", got.len());
                for (g, s) in got.iter().zip(&sent) {
                    assert!(&g.0 == s, "{mode:?}: frames match, in order");
                }

                // Three bursts a -> b (exercises slot reuse on the ring).
                let mut expect = Vec::new();
                for burst in 0..3u32 {
                    let frames: Vec<Vec<u8>> = (0..BURST32)
                        .map(|i| test_frame(peer_mac, port.mac(), 1000 + burst * 100 + i, 40))
                        .collect();
                    let mut batch = bufs(pool, &frames);
                    assert_eq!(port.tx_burst(&mut batch), BURST, "{mode:?}");
                    assert!(batch.is_empty());
                    expect.extend(frames);
                }
                let mut buf = [0u8; 2048];
                let deadline = Instant::now() + LIMIT;
                let mut received = Vec::new();
                while received.len() < expect.len() {
                    let Some(n) = peer.recv(&mut buf, deadline) else { break };
                    // Only this round's frames (the peer also sees the echo check's).
                    if test_seq(&buf[..n]).is_some_and(|s| (1000..2000).contains(&s)) {
                        received.push(buf[..n].to_vec());
                    }
                }
                assert_eq!(received.len(), expect.len(), "{mode:?}: peer got every frame");
                assert!(received == expect, "{mode:?}: frames match, in order");
                // Frames sent out of `wa`, by the port itself or by another socket on this
                // host, are not received back.
                let other = RawSocket::bind("wa");
                for seq in 2000..2010 {
                    other.send(&test_frame(peer_mac, port.mac(), seq, 10));
                }
                let echoed =
                    receive_for(&mut port, Duration::from_millis(200), |f| test_seq(f).is_some());
                assert!(echoed.is_empty(), "{mode:?}: outgoing frames echoed: {}", echoed.len());
                let st = port.stats();
                assert_eq!(st.tx_packets, 3 * BURST as u64);
                assert_eq!(st.tx_dropped, 0);
                assert!(st.rx_packets >= 100);
            }
        });
    }

    #[test]
    fn tx_ring_wraps_and_oversize_is_dropped() {
        in_private_netns("afpacket tx ring wrap", || {
            veth_pair("wa", "wb");
            let pool = test_pool(256, 2048);
            let peer = RawSocket::bind("wb");
            let peer_mac = sys::if_mac("wb").unwrap();
            // Four slots: ten bursts of three wrap the ring several times.
            let cfg = AfPacketConfig { tx_frames: 4, ..AfPacketConfig::new("wa") };
            let mut port = AfPacketPort::open(&cfg, pool).unwrap();
            let mut buf = [0u8; 2048];
            for burst in 0..10u32 {
                let frames: Vec<Vec<u8>> =
                    (0..3).map(|i| test_frame(peer_mac, port.mac(), burst * 10 + i, 100)).collect();
                let mut batch = bufs(pool, &frames);
                assert_eq!(port.tx_burst(&mut batch), 3);
                let deadline = Instant::now() + LIMIT;
                let mut got = 0;
                while got < 3 {
                    let Some(n) = peer.recv(&mut buf, deadline) else { break };
                    if let Some(seq) = test_seq(&buf[..n]) {
                        assert_eq!(&buf[..n], &frames[got][..], "seq {seq}");
                        got += 1;
                    }
                }
                assert_eq!(got, 3, "burst {burst}");
            }
            // Longer than MTU + 18: refused before it reaches the ring.
            let mut batch = bufs(pool, &[test_frame(peer_mac, port.mac(), 7, 1600)]);
            assert_eq!(port.tx_burst(&mut batch), 0);
            let st = port.stats();
            assert_eq!((st.tx_packets, st.tx_dropped), (30, 1));
        });
    }

    #[test]
    fn vlan_tag_is_reinserted() {
        in_private_netns("afpacket vlan", || {
            veth_pair("wa", "wb");
            let pool = test_pool(256, 2048);
            let peer = RawSocket::bind("wb");
            let peer_mac = sys::if_mac("wb").unwrap();
            let mut port = AfPacketPort::open(&AfPacketConfig::new("wa"), pool).unwrap();
            let mut sent = Vec::new();
            for (seq, tpid) in [(500, 0x8100u16), (501, 0x88a8)] {
                let inner = test_frame(port.mac(), peer_mac, seq, 20);
                let mut tagged = inner[..12].to_vec();
                tagged.extend_from_slice(&tpid.to_be_bytes());
                tagged.extend_from_slice(&(0x6000u16 | 42).to_be_bytes()); // PCP 3, VID 42
                tagged.extend_from_slice(&inner[12..]);
                peer.send(&tagged);
                sent.push(tagged);
            }
            let got = receive(&mut port, 2, |f| f.len() > 18 && f[16..18] == [0x88, 0xb5]);
            let got: Vec<Vec<u8>> = got.into_iter().map(|(f, _)| f).collect();
            assert_eq!(got, sent);
        });
    }

    #[test]
    fn locally_sent_udp_is_marked_checksum_partial() {
        in_private_netns("afpacket csum partial", || {
            veth_pair("wa", "wb");
            let pool = test_pool(256, 2048);
            let mut port = AfPacketPort::open(&AfPacketConfig::new("wa"), pool).unwrap();
            let mac = port.mac().map(|b| format!("{b:02x}")).join(":");
            ip(&["addr", "add", "198.18.0.2/24", "dev", "wb"]);
            ip(&[
                "neigh",
                "replace",
                "198.18.0.1",
                "lladdr",
                &mac,
                "dev",
                "wb",
                "nud",
                "permanent",
            ]);
            let sock = std::net::UdpSocket::bind("198.18.0.2:0").unwrap();
            sock.send_to(b"WEIR checksum", "198.18.0.1:9").unwrap();
            let got = receive(&mut port, 1, |f| f.len() > 34 && f[12..14] == [8, 0] && f[23] == 17);
            assert_eq!(got.len(), 1);
            assert!(got[0].1.l4_csum_partial, "veth sender leaves the UDP checksum to offload");
        });
    }

    #[test]
    fn fanout_splits_flows_without_loss_or_duplication() {
        in_private_netns("afpacket fanout", || {
            veth_pair("wa", "wb");
            let pool = test_pool(1024, 2048);
            let peer = RawSocket::bind("wb");
            let peer_mac = sys::if_mac("wb").unwrap();
            // No qdisc bypass: the members' own frames pass the packet taps, though the kernel
            // never loops a frame back to its sending socket or that socket's fanout group.
            let cfg = AfPacketConfig {
                fanout: Some(42),
                qdisc_bypass: false,
                ..AfPacketConfig::new("wa")
            };
            let mut p1 = AfPacketPort::open(&cfg, pool).unwrap();
            let mut p2 = AfPacketPort::open(&cfg, pool).unwrap();
            let mac = p1.mac();
            for seq in 0..200u32 {
                peer.send(&udp_frame(mac, peer_mac, seq * 7919, seq));
            }
            let mut seen: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
            let mut batch = Batch::new();
            let deadline = Instant::now() + LIMIT;
            while seen[0].len() + seen[1].len() < 200 && Instant::now() < deadline {
                let mut n = 0;
                for (k, port) in [&mut p1, &mut p2].into_iter().enumerate() {
                    n += port.rx_burst(&mut batch);
                    seen[k].extend(batch.drain(..).filter_map(|b| udp_seq(b.data())));
                }
                if n == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            let all: Vec<u32> = seen.iter().flatten().copied().collect();
            let unique: HashSet<u32> = all.iter().copied().collect();
            assert_eq!(all.len(), 200, "split {} + {}", seen[0].len(), seen[1].len());
            assert_eq!(unique, (0..200).collect::<HashSet<u32>>());
            assert!(!seen[0].is_empty() && !seen[1].is_empty(), "both members got flows");

            // Frames one member, or another socket on this host, sends out of the interface
            // reach neither member (PACKET_FANOUT_FLAG_IGNORE_OUTGOING).
            let frames: Vec<Vec<u8>> =
                (0..10).map(|i| udp_frame(peer_mac, mac, i * 31, 1000 + i)).collect();
            let mut batch = bufs(pool, &frames);
            assert_eq!(p1.tx_burst(&mut batch), 10);
            let other = RawSocket::bind("wa");
            for i in 0..10 {
                other.send(&udp_frame(peer_mac, mac, i * 37, 2000 + i));
            }
            let echo = |p: &mut AfPacketPort| {
                receive_for(p, Duration::from_millis(200), |f| udp_seq(f).is_some()).len()
            };
            assert_eq!((echo(&mut p1), echo(&mut p2)), (0, 0));
        });
    }

    #[test]
    fn oversize_frames_and_pool_exhaustion_are_counted_apart() {
        in_private_netns("afpacket drops", || {
            veth_pair("wa", "wb");
            // Only 8 buffers of 256 bytes.
            let pool = test_pool(8, 256);
            let peer = RawSocket::bind("wb");
            let peer_mac = sys::if_mac("wb").unwrap();
            let mut port = AfPacketPort::open(&AfPacketConfig::new("wa"), pool).unwrap();
            let mac = port.mac();
            // Too long for a buffer: dropped and counted as oversize; the next one arrives.
            peer.send(&test_frame(mac, peer_mac, 1, 600));
            peer.send(&test_frame(mac, peer_mac, 2, 10));
            let mut held = Vec::new();
            let mut batch = Batch::new();
            let deadline = Instant::now() + LIMIT;
            while held.is_empty() && Instant::now() < deadline {
                port.rx_burst(&mut batch);
                held.extend(batch.drain(..).filter(|b| test_seq(b.data()).is_some()));
                wait_readable(port.poll_fd().unwrap(), Duration::from_millis(20));
            }
            assert_eq!(held.len(), 1);
            assert_eq!(test_seq(held[0].data()), Some(2));
            assert_eq!((port.stats().rx_oversize, port.stats().rx_dropped), (1, 0));

            // Hold every buffer of the pool: 7 more frames take the rest, then 5 are dropped
            // (counted) rather than queued.
            for seq in 10..22 {
                peer.send(&test_frame(mac, peer_mac, seq, 10));
            }
            let deadline = Instant::now() + LIMIT;
            while port.stats().rx_dropped < 5 && Instant::now() < deadline {
                port.rx_burst(&mut batch);
                held.extend(batch.drain(..));
                wait_readable(port.poll_fd().unwrap(), Duration::from_millis(20));
            }
            assert_eq!(held.len(), 8);
            assert_eq!(port.stats().rx_dropped, 5);
            assert_eq!(port.stats().rx_packets, 8);
        });
    }

    #[test]
    fn kernel_ring_drops_are_folded_into_rx_dropped() {
        in_private_netns("afpacket kernel drops", || {
            veth_pair("wa", "wb");
            let pool = test_pool(512, 2048);
            let peer = RawSocket::bind("wb");
            let peer_mac = sys::if_mac("wb").unwrap();
            // A tiny ring (two one-page blocks) that 300 unread frames overflow.
            let cfg = AfPacketConfig {
                block_size: u32::try_from(sys::page_size()).unwrap(),
                block_count: 2,
                ..AfPacketConfig::new("wa")
            };
            let mut port = AfPacketPort::open(&cfg, pool).unwrap();
            for seq in 0..300 {
                peer.send(&test_frame(port.mac(), peer_mac, seq, 100));
            }
            std::thread::sleep(Duration::from_millis(50));
            let first = port.stats().rx_dropped;
            assert!(first > 0, "the kernel dropped frames for the full ring");
            // Read (and reset) by the kernel, accumulated by the port.
            assert_eq!(port.stats().rx_dropped, first);
            let got = receive_for(&mut port, Duration::from_millis(200), |f| test_seq(f).is_some());
            let st = port.stats();
            assert_eq!(st.rx_dropped + got.len() as u64, 300, "every frame received or counted");
            // The ring recovers once drained.
            peer.send(&test_frame(port.mac(), peer_mac, 999, 10));
            let got = receive(&mut port, 1, |f| test_seq(f) == Some(999));
            assert_eq!(got.len(), 1);
        });
    }

    #[test]
    fn open_errors_name_interface_and_step() {
        let pool = test_pool(8, 2048);
        let cfg = AfPacketConfig { block_size: 1000, ..AfPacketConfig::new("nosuch0") };
        let e = AfPacketPort::open(&cfg, pool).err().unwrap();
        assert!(e.to_string().contains("nosuch0"), "{e}");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        in_private_netns("afpacket open error", move || {
            let e = AfPacketPort::open(&AfPacketConfig::new("nosuch0"), pool).err().unwrap();
            let msg = e.to_string();
            assert!(msg.contains("nosuch0") && msg.contains("SIOCGIFINDEX"), "{msg}");
        });
    }
}
