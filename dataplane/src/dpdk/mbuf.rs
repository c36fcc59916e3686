//! `rte_mempool` of `rte_mbuf`s, and [`Mbuf`], the owning handle that is the pipeline's
//! [`PacketBuf`] on DPDK ports.
//!
//! weir keeps frames in one segment: ports are configured without scatter, received chains are
//! dropped (counted) at the queue, and the pipeline never builds one. An `Mbuf` therefore
//! reads and writes `buf_addr + data_off .. + data_len` directly, without calling into DPDK,
//! and keeps `pkt_len == data_len`.

use super::{DpdkError, Eal, SocketId};
use crate::buf::{Batch, BufError, PacketBuf, RxMeta};
use crate::worker::BufSource;
use dpdk_sys::{rte_mbuf, rte_mempool};
use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// A pool of mbufs (`rte_pktmbuf_pool_create`). It serves the process until it exits: mbufs in
/// flight (in NIC rings too) point at it, so it is never freed.
pub struct MbufPool {
    mp: NonNull<rte_mempool>,
    name: String,
    size: u32,
    data_room: u16,
    exhausted: AtomicU64,
}

// SAFETY: an rte_mempool is a multi-producer, multi-consumer structure made to be shared by
// threads (lcore caches are per thread), and the handle is only its address.
unsafe impl Send for MbufPool {}
// SAFETY: as above; all methods go through DPDK's thread-safe mempool API.
unsafe impl Sync for MbufPool {}

impl MbufPool {
    /// Creates a pool of `size` mbufs, each with `data_room` bytes for headroom and frame
    /// (`RTE_PKTMBUF_HEADROOM` of them in front), with a per-lcore cache of `cache` mbufs, in
    /// the memory of `socket`.
    pub fn create(
        _eal: &Eal,
        name: &str,
        size: u32,
        cache: u32,
        data_room: u16,
        socket: SocketId,
    ) -> Result<&'static MbufPool, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError {
            what: format!("mbuf pool name `{name}` contains a NUL byte"),
            errno: libc::EINVAL,
        })?;
        // SAFETY: the EAL is initialised (`_eal` proves it); the name is a valid C string that
        // DPDK copies; a NULL return is handled below.
        let mp = unsafe {
            dpdk_sys::rte_pktmbuf_pool_create(cname.as_ptr(), size, cache, 0, data_room, socket.0)
        };
        let mp = NonNull::new(mp).ok_or_else(|| {
            DpdkError::from_rte_errno(format!(
                "creating mbuf pool `{name}` ({size} mbufs of {data_room} bytes, cache {cache})"
            ))
        })?;
        Ok(Box::leak(Box::new(MbufPool {
            mp,
            name: name.to_owned(),
            size,
            data_room,
            exhausted: AtomicU64::new(0),
        })))
    }

    /// One mbuf with an empty frame, or `None` when the pool is empty (counted).
    #[inline]
    pub fn alloc(&'static self) -> Option<Mbuf> {
        // SAFETY: `mp` is a live pktmbuf pool; the call returns an mbuf we now own, or NULL.
        let m = unsafe { dpdk_sys::weir_rte_pktmbuf_alloc(self.mp.as_ptr()) };
        match NonNull::new(m) {
            Some(m) => Some(Mbuf(m)),
            None => {
                self.exhausted.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Appends `n` fresh mbufs to `out`, all or none; returns how many were appended.
    pub fn alloc_bulk(&'static self, out: &mut Batch<Mbuf>, n: usize) -> usize {
        let len = out.len();
        let n = n.min(out.remaining_capacity());
        if n == 0 {
            return 0;
        }
        // SAFETY: `out` has room for `n` more elements at `len`; Mbuf is a transparent
        // NonNull<rte_mbuf>, so the spare slots can receive mbuf pointers.
        let ret = unsafe {
            let spare = out.as_mut_ptr().add(len).cast::<*mut rte_mbuf>();
            // n <= BURST.
            let count = u32::try_from(n).unwrap_or(0);
            dpdk_sys::weir_rte_pktmbuf_alloc_bulk(self.mp.as_ptr(), spare, count)
        };
        if ret != 0 {
            self.exhausted.fetch_add(1, Ordering::Relaxed);
            return 0;
        }
        // SAFETY: the call succeeded, so the `n` slots after `len` now hold valid, non-null
        // mbufs that we own.
        unsafe { out.set_len(len + n) };
        n
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of mbufs in the pool.
    pub fn capacity(&self) -> u32 {
        self.size
    }

    /// Bytes per mbuf for headroom and frame.
    pub fn data_room(&self) -> u16 {
        self.data_room
    }

    /// Mbufs free right now (in the pool and in lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: `mp` is a live mempool; the call only reads counters.
        unsafe { dpdk_sys::rte_mempool_avail_count(self.mp.as_ptr()) }
    }

    /// Mbufs taken out (by ports, rings and weir).
    pub fn in_use(&self) -> u32 {
        // SAFETY: as above.
        unsafe { dpdk_sys::rte_mempool_in_use_count(self.mp.as_ptr()) }
    }

    /// Allocations weir asked for that found the pool empty. (Receive-side exhaustion is the
    /// port's `rx_nombuf`.)
    pub fn exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }

    pub(crate) fn as_ptr(&self) -> *mut rte_mempool {
        self.mp.as_ptr()
    }
}

impl BufSource<Mbuf> for &'static MbufPool {
    #[inline]
    fn alloc(&mut self) -> Option<Mbuf> {
        MbufPool::alloc(self)
    }
}

/// An owned, single-segment, unshared mbuf. Dropping it frees it to its pool.
#[repr(transparent)]
pub struct Mbuf(NonNull<rte_mbuf>);

// SAFETY: an Mbuf is the only handle to its mbuf (refcount 1, see the module docs); moving it to
// another thread moves that ownership, and DPDK frees an mbuf from any thread.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    /// `m` must be a valid direct mbuf from a pktmbuf pool, with one segment and a reference
    /// count of 1, owned by the caller, which gives that ownership up.
    #[inline]
    pub unsafe fn from_raw(m: NonNull<rte_mbuf>) -> Mbuf {
        Mbuf(m)
    }

    /// Gives up ownership (to a PMD's transmit queue, say) without freeing.
    #[inline]
    pub fn into_raw(self) -> NonNull<rte_mbuf> {
        let m = self.0;
        std::mem::forget(self);
        m
    }

    #[inline]
    pub(super) fn raw(&self) -> &rte_mbuf {
        // SAFETY: we own the mbuf (see the type's invariant), so its header is valid and not
        // written by anyone else while we hold `&self`.
        unsafe { self.0.as_ref() }
    }

    #[inline]
    fn raw_mut(&mut self) -> &mut rte_mbuf {
        // SAFETY: as in `raw`; `&mut self` makes this the only reference.
        unsafe { self.0.as_mut() }
    }

    /// Whether the mbuf is what an `Mbuf` may hold: one segment, not shared.
    #[inline]
    pub(crate) fn is_simple(m: &rte_mbuf) -> bool {
        m.nb_segs == 1 && m.refcnt == 1
    }

    /// Copies `bytes` in as the whole frame. Fails if they do not fit.
    pub fn fill(&mut self, bytes: &[u8]) -> Result<(), BufError> {
        self.set_len(bytes.len())?;
        self.data_mut().copy_from_slice(bytes);
        Ok(())
    }

    /// Bytes free in front of the frame.
    pub fn headroom(&self) -> usize {
        usize::from(self.raw().data_off)
    }

    /// The port DPDK received the frame on.
    pub fn port(&self) -> u16 {
        self.raw().port
    }

    /// The mbuf's offload flags.
    pub fn ol_flags(&self) -> u64 {
        self.raw().ol_flags
    }
}

const L4_CKSUM_MASK: u64 = dpdk_sys::RTE_MBUF_F_RX_L4_CKSUM_MASK as u64;
/// "The L4 checksum is not correct in the packet data, but the integrity of the L4 data is
/// verified": DPDK's word for a checksum the sender left for offload (virtio's NEEDS_CSUM).
const L4_CKSUM_NONE: u64 = dpdk_sys::RTE_MBUF_F_RX_L4_CKSUM_NONE as u64;

impl PacketBuf for Mbuf {
    #[inline]
    fn data(&self) -> &[u8] {
        let m = self.raw();
        // SAFETY: a single-segment mbuf's frame is data_len bytes at buf_addr + data_off, all
        // within its buffer (DPDK and every method here keep data_off + data_len <= buf_len),
        // and we own it.
        unsafe {
            std::slice::from_raw_parts(
                m.buf_addr.cast::<u8>().add(usize::from(m.data_off)),
                usize::from(m.data_len),
            )
        }
    }

    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        let m = self.raw_mut();
        // SAFETY: as in `data`; `&mut self` and refcount 1 make this the only reference.
        unsafe {
            std::slice::from_raw_parts_mut(
                m.buf_addr.cast::<u8>().add(usize::from(m.data_off)),
                usize::from(m.data_len),
            )
        }
    }

    #[inline]
    fn capacity(&self) -> usize {
        let m = self.raw();
        usize::from(m.buf_len.saturating_sub(m.data_off))
    }

    #[inline]
    fn set_len(&mut self, len: usize) -> Result<(), BufError> {
        if len > self.capacity() {
            return Err(BufError::NoRoom);
        }
        let len16 = u16::try_from(len).map_err(|_| BufError::NoRoom)?;
        let m = self.raw_mut();
        m.data_len = len16;
        m.pkt_len = u32::from(len16);
        Ok(())
    }

    #[inline]
    fn prepend(&mut self, n: usize) -> Result<(), BufError> {
        let n16 = u16::try_from(n).map_err(|_| BufError::NoRoom)?;
        let m = self.raw_mut();
        if n16 > m.data_off {
            return Err(BufError::NoRoom);
        }
        let len = m.data_len.checked_add(n16).ok_or(BufError::NoRoom)?;
        m.data_off -= n16;
        m.data_len = len;
        m.pkt_len = u32::from(len);
        Ok(())
    }

    #[inline]
    fn adj(&mut self, n: usize) -> Result<(), BufError> {
        let n16 = u16::try_from(n).map_err(|_| BufError::NoRoom)?;
        let m = self.raw_mut();
        if n16 > m.data_len {
            return Err(BufError::NoRoom);
        }
        m.data_off += n16;
        m.data_len -= n16;
        m.pkt_len = u32::from(m.data_len);
        Ok(())
    }

    #[inline]
    fn meta(&self) -> RxMeta {
        RxMeta { l4_csum_partial: self.raw().ol_flags & L4_CKSUM_MASK == L4_CKSUM_NONE }
    }

    #[inline]
    fn set_meta(&mut self, meta: RxMeta) {
        let m = self.raw_mut();
        m.ol_flags &= !L4_CKSUM_MASK;
        if meta.l4_csum_partial {
            m.ol_flags |= L4_CKSUM_NONE;
        }
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own the mbuf and give it back exactly once.
        unsafe { dpdk_sys::weir_rte_pktmbuf_free(self.0.as_ptr()) };
    }
}

impl std::fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mbuf").field("len", &self.raw().data_len).finish()
    }
}
