//! Packet I/O backends behind one burst interface.

pub mod afpacket;
pub mod memory;
pub mod sys;
pub mod tap;

use crate::buf::{Batch, PacketBuf};
use std::os::fd::RawFd;

/// Counters a port keeps about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames received and handed to the pipeline.
    pub rx_packets: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// Frames the port or kernel dropped before weir saw them (ring full, buffer pool empty,
    /// frame longer than a buffer).
    pub rx_dropped: u64,
    /// Frames handed to the kernel or device for sending.
    pub tx_packets: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// Frames that could not be sent (tx ring full, send error) and were freed.
    pub tx_dropped: u64,
}

/// Burst packet I/O on one queue of one port.
///
/// Implementations never allocate per burst: received buffers come from a pool fixed at
/// start-up and batches are caller-owned and reused.
pub trait PacketIo {
    /// The buffer type this backend hands out and takes back.
    type Buf: PacketBuf;

    /// Receives up to `batch.remaining_capacity()` frames, appending them to `batch`.
    /// Returns how many were appended.
    fn rx_burst(&mut self, batch: &mut Batch<Self::Buf>) -> usize;

    /// Sends the frames in `batch`, leaving it empty. Frames that cannot be sent are freed and
    /// counted in `tx_dropped`. Returns how many were accepted.
    fn tx_burst(&mut self, batch: &mut Batch<Self::Buf>) -> usize;

    /// A descriptor that polls readable when frames wait, for the adaptive idle policy.
    fn poll_fd(&self) -> Option<RawFd> {
        None
    }

    /// This queue's counters.
    fn stats(&self) -> PortStats;
}
