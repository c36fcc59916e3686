//! A pool of fixed-size packet buffers carved from one memory region.
//!
//! The region is mapped once at start-up, from 2 MiB hugepages when the system has them reserved
//! and from normal pages otherwise (the choice is logged and exported by [`Mempool::hugepages`]).
//! Free buffers are slot indices on a lock-free bounded queue. Each thread (each worker) keeps a
//! cache of up to [`THREAD_CACHE`] free slots of one pool, moved to and from the shared queue in
//! bulk, so the common allocation and free touch no shared cache line and no atomic — the
//! per-lcore mempool cache of DPDK. Slots parked in a thread's cache are not in
//! [`Mempool::available`]; a thread returns them when it exits or calls
//! [`Mempool::flush_thread_cache`]. Exhaustion is a `None` from `alloc`, counted in
//! [`Mempool::exhausted`]: the pool never blocks and never grows.
#![allow(unsafe_code)]

use crate::buf::{BufError, PacketBuf, RxMeta};
use arrayvec::ArrayVec;
use crossbeam_queue::ArrayQueue;
use std::cell::RefCell;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// Size of a hugepage the pool maps when it can, in bytes.
const HUGEPAGE: usize = 2 << 20;
/// Slots are aligned to a cache line so no two buffers share one.
const CACHE_LINE: usize = 64;
/// Free slots a thread keeps for itself at most.
pub const THREAD_CACHE: usize = 128;
/// How many slots a thread cache moves from or to the shared queue at a time.
const CACHE_BULK: usize = 32;

/// A thread's private free slots, all of one pool.
struct ThreadCache {
    pool: Option<&'static Mempool>,
    slots: ArrayVec<u32, THREAD_CACHE>,
}

impl ThreadCache {
    fn flush(&mut self, keep: usize) {
        if let Some(pool) = self.pool {
            while self.slots.len() > keep {
                if let Some(i) = self.slots.pop() {
                    // Cannot fail: the queue has room for every slot of the pool.
                    let _ = pool.free.push(i);
                }
            }
        }
    }

    /// Makes this cache serve `pool`, returning another pool's slots first.
    #[inline]
    fn bind(&mut self, pool: &'static Mempool) {
        if !self.pool.is_some_and(|p| std::ptr::eq(p, pool)) {
            self.flush(0);
            self.pool = Some(pool);
        }
    }
}

impl Drop for ThreadCache {
    fn drop(&mut self) {
        self.flush(0);
    }
}

thread_local! {
    static CACHE: RefCell<ThreadCache> =
        const { RefCell::new(ThreadCache { pool: None, slots: ArrayVec::new_const() }) };
}

/// Sizing of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MempoolConfig {
    /// Number of buffers.
    pub buffers: u32,
    /// Bytes of frame data a buffer holds (after its headroom).
    pub data_room: u16,
    /// Bytes reserved in front of each frame for encapsulation headers.
    pub headroom: u16,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig { buffers: 8192, data_room: 2048, headroom: 128 }
    }
}

/// A fixed set of packet buffers in one mapped region. Lives for the rest of the process
/// (buffers in flight hold a `'static` reference to it).
pub struct Mempool {
    base: NonNull<u8>,
    map_len: usize,
    stride: usize,
    cfg: MempoolConfig,
    free: ArrayQueue<u32>,
    hugepages: bool,
    exhausted: AtomicU64,
}

// SAFETY: the region is only reached through `PoolBuf`s, and each slot index is owned by at most
// one `PoolBuf` at a time (it is taken off the free queue to create one and put back when that
// one drops), so sharing the pool between threads shares no slot.
unsafe impl Sync for Mempool {}
// SAFETY: as above; the raw base pointer is just the region's address.
unsafe impl Send for Mempool {}

impl Mempool {
    /// Maps the region and fills the free queue. The pool is leaked: it serves the process until
    /// it exits, which is what lets buffers refer to it without reference counting.
    pub fn new(cfg: MempoolConfig) -> io::Result<&'static Mempool> {
        if cfg.buffers == 0 || cfg.data_room < 64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a mempool needs at least one buffer of at least 64 bytes",
            ));
        }
        let slot = usize::from(cfg.headroom) + usize::from(cfg.data_room);
        let stride = slot.div_ceil(CACHE_LINE) * CACHE_LINE;
        let count = cfg.buffers as usize;
        let len = stride
            .checked_mul(count)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "mempool size overflows"))?;
        let (base, map_len, hugepages) = map_region(len)?;
        if hugepages {
            tracing::info!(buffers = count, bytes = map_len, "mempool on 2 MiB hugepages");
        } else {
            tracing::info!(
                buffers = count,
                bytes = map_len,
                "mempool on normal pages (no hugepages reserved)"
            );
        }
        let free = ArrayQueue::new(count);
        for i in 0..cfg.buffers {
            // Cannot fail: the queue was sized for exactly this many.
            let _ = free.push(i);
        }
        let pool =
            Mempool { base, map_len, stride, cfg, free, hugepages, exhausted: AtomicU64::new(0) };
        Ok(Box::leak(Box::new(pool)))
    }

    /// Takes one buffer, empty, with the configured headroom in front, from this thread's
    /// cache (refilled in bulk from the shared queue). `None` (and a count in
    /// [`exhausted`](Self::exhausted)) when none is free.
    #[inline]
    pub fn alloc(&'static self) -> Option<PoolBuf> {
        let idx = CACHE
            .try_with(|c| {
                let mut c = c.borrow_mut();
                c.bind(self);
                if c.slots.is_empty() {
                    for _ in 0..CACHE_BULK {
                        match self.free.pop() {
                            Some(i) => c.slots.push(i),
                            None => break,
                        }
                    }
                }
                c.slots.pop()
            })
            // The thread is exiting and its cache is gone: use the shared queue.
            .unwrap_or_else(|_| self.free.pop());
        match idx {
            Some(idx) => Some(self.buf(idx)),
            None => {
                self.exhausted.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Returns a freed slot: to this thread's cache when it serves this pool (or is empty),
    /// else to the shared queue.
    #[inline]
    fn release(&'static self, idx: u32) {
        let cached = CACHE
            .try_with(|c| {
                let mut c = c.borrow_mut();
                match c.pool {
                    Some(p) if std::ptr::eq(p, self) => {}
                    _ if c.slots.is_empty() => c.pool = Some(self),
                    _ => return false,
                }
                if c.slots.is_full() {
                    c.flush(THREAD_CACHE - CACHE_BULK);
                }
                c.slots.push(idx);
                true
            })
            .unwrap_or(false);
        if !cached {
            // Cannot fail: the queue has room for every slot of the pool.
            let _ = self.free.push(idx);
        }
    }

    /// Allocates up to `n` buffers into `out` (bounded by its free room) with one visit to the
    /// thread cache. Returns how many were added; fewer than asked (counted in
    /// [`exhausted`](Self::exhausted)) when the pool runs dry.
    #[inline]
    pub fn alloc_bulk(&'static self, out: &mut crate::buf::Batch<PoolBuf>, n: usize) -> usize {
        let want = n.min(out.remaining_capacity());
        let got = CACHE
            .try_with(|c| {
                let mut c = c.borrow_mut();
                c.bind(self);
                let mut got = 0;
                while got < want {
                    if c.slots.is_empty() {
                        for _ in 0..CACHE_BULK {
                            match self.free.pop() {
                                Some(i) => c.slots.push(i),
                                None => break,
                            }
                        }
                    }
                    let Some(idx) = c.slots.pop() else { break };
                    out.push(self.buf(idx));
                    got += 1;
                }
                got
            })
            .unwrap_or(0);
        if got < want {
            self.exhausted.fetch_add(1, Ordering::Relaxed);
        }
        got
    }

    /// Frees every buffer in `batch` with one visit to the thread cache.
    #[inline]
    pub fn free_batch(batch: &mut crate::buf::Batch<PoolBuf>) {
        let done = CACHE.try_with(|c| {
            let mut c = c.borrow_mut();
            for b in batch.drain(..) {
                let b = std::mem::ManuallyDrop::new(b);
                match c.pool {
                    Some(p) if std::ptr::eq(p, b.pool) => {}
                    _ if c.slots.is_empty() => c.pool = Some(b.pool),
                    _ => {
                        // Cannot fail: the queue has room for every slot of the pool.
                        let _ = b.pool.free.push(b.idx);
                        continue;
                    }
                }
                if c.slots.is_full() {
                    c.flush(THREAD_CACHE - CACHE_BULK);
                }
                c.slots.push(b.idx);
            }
        });
        if done.is_err() {
            batch.clear();
        }
    }

    /// Returns this thread's cached free slots to the shared queue.
    pub fn flush_thread_cache() {
        let _ = CACHE.try_with(|c| c.borrow_mut().flush(0));
    }

    fn buf(&'static self, idx: u32) -> PoolBuf {
        PoolBuf { pool: self, idx, start: self.cfg.headroom, len: 0, meta: RxMeta::default() }
    }

    /// Buffers currently free in the shared queue (not counting those in thread caches).
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Total number of buffers.
    pub fn capacity(&self) -> usize {
        self.cfg.buffers as usize
    }

    /// Whether the region is backed by hugepages.
    pub fn hugepages(&self) -> bool {
        self.hugepages
    }

    /// Allocations that found the pool empty.
    pub fn exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }

    /// The sizing this pool was created with.
    pub fn config(&self) -> MempoolConfig {
        self.cfg
    }

    fn slot_ptr(&self, idx: u32) -> *mut u8 {
        debug_assert!(idx < self.cfg.buffers);
        // SAFETY: idx < buffers, so idx * stride lies inside the mapping of stride * buffers
        // bytes, and the product cannot overflow (checked when the pool was created).
        unsafe { self.base.as_ptr().add(idx as usize * self.stride) }
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: base/map_len are exactly what mmap returned; pools are leaked, so this only
        // runs if one is ever dropped explicitly, when no buffer can refer to it any more.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.map_len);
        }
    }
}

fn map_region(len: usize) -> io::Result<(NonNull<u8>, usize, bool)> {
    let huge_len = len.div_ceil(HUGEPAGE) * HUGEPAGE;
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    // Miri models plain anonymous private mappings only: under it, no hugepages, no prefault.
    let flags = if cfg!(miri) {
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS
    } else {
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE
    };
    let p = if cfg!(miri) {
        libc::MAP_FAILED
    } else {
        // SAFETY: an anonymous private mapping with no address hint touches no existing
        // memory.
        unsafe {
            libc::mmap(std::ptr::null_mut(), huge_len, prot, flags | libc::MAP_HUGETLB, -1, 0)
        }
    };
    if p != libc::MAP_FAILED {
        if let Some(nn) = NonNull::new(p.cast::<u8>()) {
            return Ok((nn, huge_len, true));
        }
    }
    // SAFETY: as above, without hugepages.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0) };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast::<u8>())
        .map(|nn| (nn, len, false))
        .ok_or_else(|| io::Error::other("mmap returned null"))
}

/// One buffer of a [`Mempool`]. Owns its slot; dropping it returns the slot to the pool.
pub struct PoolBuf {
    pool: &'static Mempool,
    idx: u32,
    /// Offset of the frame's first byte within the slot.
    start: u16,
    len: u16,
    meta: RxMeta,
}

impl PoolBuf {
    fn slot_len(&self) -> usize {
        usize::from(self.pool.cfg.headroom) + usize::from(self.pool.cfg.data_room)
    }

    /// Copies `bytes` in as the whole frame. Fails if they do not fit.
    pub fn fill(&mut self, bytes: &[u8]) -> Result<(), BufError> {
        self.set_len(bytes.len())?;
        self.data_mut().copy_from_slice(bytes);
        Ok(())
    }

    /// The pool this buffer belongs to.
    pub fn pool(&self) -> &'static Mempool {
        self.pool
    }
}

impl PacketBuf for PoolBuf {
    fn data(&self) -> &[u8] {
        // SAFETY: this PoolBuf exclusively owns slot `idx` (see `Mempool`'s Sync impl), and
        // start + len <= slot_len <= stride is kept by every method that changes them.
        unsafe {
            std::slice::from_raw_parts(
                self.pool.slot_ptr(self.idx).add(usize::from(self.start)),
                usize::from(self.len),
            )
        }
    }

    fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`; `&mut self` makes this the only live reference to the slot.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.pool.slot_ptr(self.idx).add(usize::from(self.start)),
                usize::from(self.len),
            )
        }
    }

    fn capacity(&self) -> usize {
        self.slot_len() - usize::from(self.start)
    }

    fn set_len(&mut self, len: usize) -> Result<(), BufError> {
        if len > self.capacity() {
            return Err(BufError::NoRoom);
        }
        // Fits: capacity() < u16::MAX because headroom and data_room are u16 and their sum is
        // checked below by `try_from`.
        self.len = u16::try_from(len).map_err(|_| BufError::NoRoom)?;
        Ok(())
    }

    fn prepend(&mut self, n: usize) -> Result<(), BufError> {
        let n16 = u16::try_from(n).map_err(|_| BufError::NoRoom)?;
        if n16 > self.start {
            return Err(BufError::NoRoom);
        }
        let len = self.len.checked_add(n16).ok_or(BufError::NoRoom)?;
        self.start -= n16;
        self.len = len;
        Ok(())
    }

    fn adj(&mut self, n: usize) -> Result<(), BufError> {
        let n16 = u16::try_from(n).map_err(|_| BufError::NoRoom)?;
        if n16 > self.len {
            return Err(BufError::NoRoom);
        }
        self.start += n16;
        self.len -= n16;
        Ok(())
    }

    fn meta(&self) -> RxMeta {
        self.meta
    }

    fn set_meta(&mut self, meta: RxMeta) {
        self.meta = meta;
    }
}

impl Drop for PoolBuf {
    #[inline]
    fn drop(&mut self) {
        self.pool.release(self.idx);
    }
}

impl std::fmt::Debug for PoolBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBuf").field("idx", &self.idx).field("len", &self.len).finish()
    }
}

/// A worker's handle for allocating from a pool through its thread cache.
pub struct PoolCache {
    pool: &'static Mempool,
}

impl PoolCache {
    /// A handle on `pool`.
    pub fn new(pool: &'static Mempool) -> Self {
        PoolCache { pool }
    }

    /// Takes one buffer; `None` (counted by the pool) when the pool is exhausted.
    #[inline]
    pub fn alloc(&mut self) -> Option<PoolBuf> {
        self.pool.alloc()
    }

    /// The pool behind this handle.
    pub fn pool(&self) -> &'static Mempool {
        self.pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> &'static Mempool {
        Mempool::new(MempoolConfig { buffers: 4, data_room: 256, headroom: 32 }).unwrap()
    }

    #[test]
    fn exhaustion_is_counted_and_drop_returns() {
        let pool = small();
        let bufs: Vec<_> = (0..4).map(|_| pool.alloc().unwrap()).collect();
        assert!(pool.alloc().is_none());
        assert_eq!(pool.exhausted(), 1);
        drop(bufs);
        Mempool::flush_thread_cache();
        assert_eq!(pool.available(), 4);
    }

    #[test]
    fn buffers_do_not_overlap() {
        let pool = small();
        let mut a = pool.alloc().unwrap();
        let mut b = pool.alloc().unwrap();
        a.fill(&[0xaa; 256]).unwrap();
        b.fill(&[0xbb; 256]).unwrap();
        assert!(a.data().iter().all(|&x| x == 0xaa));
        assert!(b.data().iter().all(|&x| x == 0xbb));
        assert_eq!(a.fill(&[0; 257]), Err(BufError::NoRoom));
    }

    #[test]
    fn headroom_prepend_and_adj() {
        let pool = small();
        let mut a = pool.alloc().unwrap();
        a.fill(&[1, 2, 3]).unwrap();
        a.prepend(32).unwrap();
        assert_eq!(a.len(), 35);
        assert_eq!(&a.data()[32..], &[1, 2, 3]);
        assert_eq!(a.prepend(1), Err(BufError::NoRoom));
        a.adj(34).unwrap();
        assert_eq!(a.data(), &[3]);
        assert_eq!(a.adj(2), Err(BufError::NoRoom));
    }

    #[test]
    fn thread_cache_refills_in_bulk_and_returns() {
        let pool =
            Mempool::new(MempoolConfig { buffers: 300, data_room: 128, headroom: 0 }).unwrap();
        let b = pool.alloc().unwrap();
        assert_eq!(pool.available(), 300 - CACHE_BULK);
        drop(b);
        // Freed into the cache, not the shared queue.
        assert_eq!(pool.available(), 300 - CACHE_BULK);
        let all: Vec<_> = (0..300).map(|_| pool.alloc().unwrap()).collect();
        assert!(pool.alloc().is_none());
        drop(all);
        // The cache holds at most THREAD_CACHE; the rest went back in bulk.
        assert!(pool.available() >= 300 - THREAD_CACHE);
        Mempool::flush_thread_cache();
        assert_eq!(pool.available(), 300);
    }

    #[test]
    fn slots_freed_on_another_thread_come_back() {
        let pool =
            Mempool::new(MempoolConfig { buffers: 64, data_room: 128, headroom: 0 }).unwrap();
        let bufs: Vec<_> = (0..64).map(|_| pool.alloc().unwrap()).collect();
        std::thread::spawn(move || drop(bufs)).join().unwrap();
        // That thread's cache was returned when it exited.
        Mempool::flush_thread_cache();
        assert_eq!(pool.available(), 64);
    }

    #[test]
    fn bulk_alloc_and_free_account_for_every_slot() {
        let pool =
            Mempool::new(MempoolConfig { buffers: 40, data_room: 128, headroom: 0 }).unwrap();
        let mut a = crate::buf::Batch::new();
        let mut b = crate::buf::Batch::new();
        assert_eq!(pool.alloc_bulk(&mut a, 32), 32);
        assert_eq!(pool.alloc_bulk(&mut b, 32), 8);
        assert_eq!(pool.exhausted(), 1);
        Mempool::free_batch(&mut a);
        Mempool::free_batch(&mut b);
        assert!(a.is_empty() && b.is_empty());
        Mempool::flush_thread_cache();
        assert_eq!(pool.available(), 40);
    }

    #[test]
    fn a_thread_serving_two_pools_loses_nothing() {
        let a = Mempool::new(MempoolConfig { buffers: 64, data_room: 128, headroom: 0 }).unwrap();
        let b = Mempool::new(MempoolConfig { buffers: 64, data_room: 128, headroom: 0 }).unwrap();
        for _ in 0..10 {
            let x: Vec<_> = (0..40).map(|_| a.alloc().unwrap()).collect();
            let y: Vec<_> = (0..40).map(|_| b.alloc().unwrap()).collect();
            drop(x);
            drop(y);
        }
        Mempool::flush_thread_cache();
        assert_eq!(a.available() + b.available(), 128);
    }
}
