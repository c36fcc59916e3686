//! Packet capture from inside a worker: the frames a port received, sent or dropped (with the
//! drop's reason), copied into a bounded ring for the control thread, which writes them out
//! (as pcapng, in the admin API). Workers never touch files and never allocate: the ring's
//! slots are reserved at start-up and go round between a free queue and a full one.
//!
//! Disarmed, a capture costs a worker one relaxed load per received burst and per transmit
//! flush. Armed, each frame of the chosen port and direction is matched against the filter (an
//! address prefix, an L4 port, a protocol) and, if it matches and a slot is free, copied (up to
//! the snap length); a frame that finds no free slot is counted as lost.

use crossbeam_queue::ArrayQueue;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// The most bytes of a frame a capture keeps.
pub const SNAP_MAX: usize = 2048;

/// Which frames of a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Direction {
    /// As received, before anything is done to them.
    #[default]
    Rx,
    /// As sent, rewritten.
    Tx,
    /// As received, for the frames weir dropped (each with its reason).
    Dropped,
}

/// What to capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureFilter {
    /// The port, by index.
    pub port: u8,
    /// Which of its frames.
    pub direction: Direction,
    /// Frames from or to an address in this prefix (address, prefix length).
    pub prefix: Option<(IpAddr, u8)>,
    /// Frames from or to this TCP or UDP port.
    pub l4_port: Option<u16>,
    /// Frames of this IP protocol (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6).
    pub protocol: Option<u8>,
    /// Bytes kept of each frame (at most [`SNAP_MAX`]).
    pub snaplen: u16,
}

/// One captured frame.
pub struct Captured {
    /// When it was copied, nanoseconds since the Unix epoch.
    pub unix_ns: u64,
    /// Its length on the wire.
    pub original_len: u32,
    /// The bytes kept (`data[..kept]`).
    pub kept: u16,
    /// The drop reason's index (`DropReason as u8`) for dropped frames.
    pub reason: Option<u8>,
    /// The frame.
    pub data: [u8; SNAP_MAX],
}

/// A worker's capture point, shared with the control thread.
pub struct CaptureRing {
    armed: AtomicBool,
    filter: Mutex<Option<CaptureFilter>>,
    /// The worker's copy of the filter, refreshed when the generation changes.
    generation: AtomicU64,
    free: ArrayQueue<Box<Captured>>,
    full: ArrayQueue<Box<Captured>>,
    /// Frames that matched but found no free slot.
    pub lost: AtomicU64,
}

impl CaptureRing {
    /// A ring of `slots` frames (at least 1), reserved now.
    pub fn new(slots: usize) -> CaptureRing {
        let slots = slots.max(1);
        let free = ArrayQueue::new(slots);
        for _ in 0..slots {
            let _ = free.push(Box::new(Captured {
                unix_ns: 0,
                original_len: 0,
                kept: 0,
                reason: None,
                data: [0; SNAP_MAX],
            }));
        }
        CaptureRing {
            armed: AtomicBool::new(false),
            filter: Mutex::new(None),
            generation: AtomicU64::new(0),
            free,
            full: ArrayQueue::new(slots),
            lost: AtomicU64::new(0),
        }
    }

    /// Starts capturing what `filter` says (control thread).
    pub fn arm(&self, filter: CaptureFilter) {
        *self.filter.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(filter);
        self.generation.fetch_add(1, Ordering::Release);
        self.armed.store(true, Ordering::Release);
    }

    /// Stops capturing (control thread); frames already copied stay until taken.
    pub fn disarm(&self) {
        self.armed.store(false, Ordering::Release);
        *self.filter.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Whether a capture is armed: the one load a worker pays while none is.
    #[inline(always)]
    pub fn is_armed(&self) -> bool {
        self.armed.load(Ordering::Relaxed)
    }

    /// Takes a captured frame (control thread); give it back with [`recycle`](Self::recycle).
    pub fn take(&self) -> Option<Box<Captured>> {
        self.full.pop()
    }

    /// Returns a slot to the free queue.
    pub fn recycle(&self, slot: Box<Captured>) {
        let _ = self.free.push(slot);
    }
}

/// A filter as a worker applies it: the filter, and its tests made ready (masks computed)
/// so that a frame it does not want costs a few instructions.
#[derive(Clone, Copy, Debug)]
pub struct Armed {
    /// The filter.
    pub filter: CaptureFilter,
    /// Only the port and direction: every frame there matches.
    all: bool,
    /// The IPv4 prefix as (network, mask); `None` with a prefix of the other family.
    v4: Option<(u32, u32)>,
}

impl CaptureFilter {
    /// The filter made ready for a worker.
    pub fn armed(self) -> Armed {
        let all = self.prefix.is_none() && self.l4_port.is_none() && self.protocol.is_none();
        let v4 = match self.prefix {
            None => Some((0, 0)),
            Some((IpAddr::V4(n), len)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len.min(32))).unwrap_or(0);
                Some((u32::from(n) & mask, mask))
            }
            Some((IpAddr::V6(_), _)) => None,
        };
        Armed { filter: self, all, v4 }
    }
}

impl Armed {
    /// Whether the filter wants `frame`. Untagged IPv4 is tested here, inline; anything else
    /// out of line.
    #[inline(always)]
    pub fn matches(&self, frame: &[u8]) -> bool {
        if self.all {
            return true;
        }
        let Some(h) = frame.get(12..34) else { return false };
        if h[0] != 0x08 || h[1] != 0x00 {
            return matches_slow(&self.filter, frame);
        }
        if self.filter.protocol.is_some_and(|p| p != h[11]) {
            return false;
        }
        let Some((net, mask)) = self.v4 else { return false };
        let src = u32::from_be_bytes([h[14], h[15], h[16], h[17]]);
        let dst = u32::from_be_bytes([h[18], h[19], h[20], h[21]]);
        if src & mask != net && dst & mask != net {
            return false;
        }
        self.filter.l4_port.is_none() || matches_slow(&self.filter, frame)
    }
}

/// A worker's view of its ring: the filter it last read, refreshed when it changes.
#[derive(Default)]
pub struct CaptureTap {
    seen: u64,
    armed: Option<Armed>,
}

impl CaptureTap {
    /// The filter in force for `ring` (worker; locks only when the filter changed, which the
    /// control thread does once per capture).
    #[inline]
    pub fn filter(&mut self, ring: &CaptureRing) -> Option<Armed> {
        let g = ring.generation.load(Ordering::Acquire);
        if g != self.seen {
            self.refresh(ring, g);
        }
        self.armed
    }

    #[cold]
    fn refresh(&mut self, ring: &CaptureRing, generation: u64) {
        if let Ok(f) = ring.filter.try_lock() {
            self.armed = f.map(CaptureFilter::armed);
            self.seen = generation;
        }
    }
}

/// Copies `frame` into `ring` if `armed` wants it (worker, armed only).
#[inline(always)]
pub fn offer(ring: &CaptureRing, armed: &Armed, frame: &[u8], reason: Option<u8>) {
    if armed.matches(frame) {
        offer_matched(ring, armed.filter.snaplen, frame, reason);
    }
}

#[cold]
fn offer_matched(ring: &CaptureRing, snaplen: u16, frame: &[u8], reason: Option<u8>) {
    if let Some(mut slot) = copy(ring, snaplen, frame) {
        slot.reason = reason;
        keep(ring, slot);
    }
}

/// Stamps `slot` and hands it to the control thread (or back to the free queue, counted as
/// lost, should the full queue have no room).
fn keep(ring: &CaptureRing, mut slot: Box<Captured>) {
    slot.unix_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    if let Err(slot) = ring.full.push(slot) {
        let _ = ring.free.push(slot);
        ring.lost.fetch_add(1, Ordering::Relaxed);
    }
}

/// For a drop capture: a slot holding a copy of `frame` if `armed` wants it, before the
/// pipeline decides (and changes) it; [`settle`] keeps it if the frame was dropped.
#[inline(always)]
pub fn hold(ring: &CaptureRing, armed: &Armed, frame: &[u8]) -> Option<Box<Captured>> {
    if !armed.matches(frame) {
        return None;
    }
    copy(ring, armed.filter.snaplen, frame)
}

/// A free slot holding the first `snaplen` bytes of `frame`.
#[cold]
fn copy(ring: &CaptureRing, snaplen: u16, frame: &[u8]) -> Option<Box<Captured>> {
    let Some(mut slot) = ring.free.pop() else {
        ring.lost.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    let keep = frame.len().min(usize::from(snaplen)).min(SNAP_MAX);
    slot.data[..keep].copy_from_slice(&frame[..keep]);
    slot.kept = u16::try_from(keep).unwrap_or(0);
    slot.original_len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    Some(slot)
}

/// Keeps a held frame, with its drop reason, if it was dropped; frees the slot otherwise.
#[inline]
pub fn settle(ring: &CaptureRing, held: Option<Box<Captured>>, dropped: Option<u8>) {
    if let Some(slot) = held {
        settle_held(ring, slot, dropped);
    }
}

#[cold]
fn settle_held(ring: &CaptureRing, mut slot: Box<Captured>, dropped: Option<u8>) {
    let Some(reason) = dropped else {
        let _ = ring.free.push(slot);
        return;
    };
    slot.reason = Some(reason);
    keep(ring, slot);
}

/// Whether `frame` passes `filter`'s address, port and protocol tests (untagged IPv4 and IPv6;
/// anything else passes only a filter without them). Workers use [`Armed::matches`].
pub fn matches(filter: &CaptureFilter, frame: &[u8]) -> bool {
    filter.armed().matches(frame)
}

/// [`matches`] the long way: every family, the L4 port.
#[cold]
fn matches_slow(filter: &CaptureFilter, frame: &[u8]) -> bool {
    if filter.prefix.is_none() && filter.l4_port.is_none() && filter.protocol.is_none() {
        return true;
    }
    let Some(ether) = frame.get(12..14) else { return false };
    let (src, dst, proto, l4) = match ether {
        [0x08, 0x00] => {
            let Some(h) = frame.get(14..34) else { return false };
            let ihl = usize::from(h[0] & 0x0f) * 4;
            let a = |o: usize| IpAddr::from([h[o], h[o + 1], h[o + 2], h[o + 3]]);
            (a(12), a(16), h[9], 14 + ihl)
        }
        [0x86, 0xdd] => {
            let Some(h) = frame.get(14..54) else { return false };
            let a = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&h[o..o + 16]);
                IpAddr::from(b)
            };
            (a(8), a(24), h[6], 54)
        }
        _ => return false,
    };
    if filter.protocol.is_some_and(|p| p != proto) {
        return false;
    }
    if let Some((net, len)) = filter.prefix {
        if !in_prefix(src, net, len) && !in_prefix(dst, net, len) {
            return false;
        }
    }
    if let Some(port) = filter.l4_port {
        let ports = (proto == 6 || proto == 17).then(|| frame.get(l4..l4 + 4)).flatten();
        let Some(p) = ports else { return false };
        let (sp, dp) = (u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]]));
        if sp != port && dp != port {
            return false;
        }
    }
    true
}

fn in_prefix(a: IpAddr, net: IpAddr, len: u8) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len.min(32))).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len.min(128))).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::echo4_frame;

    fn filter() -> CaptureFilter {
        CaptureFilter {
            port: 0,
            direction: Direction::Rx,
            prefix: None,
            l4_port: None,
            protocol: None,
            snaplen: 64,
        }
    }

    #[test]
    fn filters_match_addresses_protocols_and_ports() {
        let f = echo4_frame([198, 18, 1, 2], [198, 18, 2, 2], false);
        assert!(matches(&filter(), &f));
        assert!(matches(&CaptureFilter { protocol: Some(1), ..filter() }, &f));
        assert!(!matches(&CaptureFilter { protocol: Some(6), ..filter() }, &f));
        assert!(!matches(&CaptureFilter { l4_port: Some(80), ..filter() }, &f));
        let wide = CaptureFilter { prefix: Some((IpAddr::from([198, 18, 0, 0]), 15)), ..filter() };
        assert!(matches(&wide, &f));
        let other = CaptureFilter { prefix: Some((IpAddr::from([192, 0, 2, 0]), 24)), ..filter() };
        assert!(!matches(&other, &f));
    }

    #[test]
    fn a_full_ring_counts_what_it_loses_and_slots_go_round() {
        let ring = CaptureRing::new(2);
        let f = echo4_frame([198, 18, 1, 2], [198, 18, 2, 2], false);
        for _ in 0..3 {
            offer(&ring, &filter().armed(), &f, Some(7));
        }
        assert_eq!(ring.lost.load(Ordering::Relaxed), 1);
        let a = ring.take().unwrap();
        let len = u32::try_from(f.len()).unwrap();
        assert_eq!(
            (usize::from(a.kept), a.original_len, a.reason),
            (f.len().min(64), len, Some(7))
        );
        assert_eq!(&a.data[..usize::from(a.kept)], &f[..usize::from(a.kept)]);
        ring.recycle(a);
        offer(&ring, &filter().armed(), &f, None);
        assert_eq!(ring.lost.load(Ordering::Relaxed), 1);
    }
}
