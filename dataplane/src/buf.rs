//! Packet buffers and the fixed-capacity batches that carry them through a burst.
//!
//! The pipeline is generic over [`PacketBuf`], so the same code compiles to a straight-line loop
//! over weir's own pool buffers (native backends) and over DPDK mbufs (feature `dpdk`).

use arrayvec::ArrayVec;

/// Packets handled per burst: what one `rx_burst` returns at most.
pub const BURST: usize = 32;

/// An owned packet buffer. Dropping it returns its memory to the pool it came from.
///
/// The frame occupies `data()`; bytes before it (headroom) can be claimed with [`prepend`] for
/// encapsulation, and bytes at the front can be released with [`adj`].
///
/// [`prepend`]: PacketBuf::prepend
/// [`adj`]: PacketBuf::adj
pub trait PacketBuf: Send {
    /// The frame bytes.
    fn data(&self) -> &[u8];
    /// The frame bytes, writable.
    fn data_mut(&mut self) -> &mut [u8];
    /// Frame length in bytes.
    fn len(&self) -> usize {
        self.data().len()
    }
    /// Whether the frame is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Largest frame this buffer can hold from its current start, in bytes.
    fn capacity(&self) -> usize;
    /// Sets the frame length; fails (and changes nothing) beyond [`capacity`](Self::capacity).
    fn set_len(&mut self, len: usize) -> Result<(), BufError>;
    /// Grows the frame at the front by `n` bytes of headroom.
    fn prepend(&mut self, n: usize) -> Result<(), BufError>;
    /// Removes `n` bytes from the front of the frame.
    fn adj(&mut self, n: usize) -> Result<(), BufError>;
    /// Per-packet offload metadata from the receiving backend.
    fn meta(&self) -> RxMeta;
    /// Replaces the offload metadata (the pipeline clears it once it has acted on it).
    fn set_meta(&mut self, meta: RxMeta);
}

/// Offload state a backend reports with a received frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxMeta {
    /// The L4 checksum was left for the sender's NIC to fill in (a local sender on veth/TAP with
    /// tx checksum offload): the bytes in the checksum field are only the pseudo-header sum.
    pub l4_csum_partial: bool,
}

/// A buffer operation that would leave the buffer's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufError {
    /// Not enough tailroom or headroom.
    NoRoom,
}

/// A burst of packets: fixed capacity, reused across bursts, never allocates.
pub type Batch<B> = ArrayVec<B, BURST>;
