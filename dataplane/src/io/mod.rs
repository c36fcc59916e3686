//! Packet I/O backends behind one burst interface.

pub mod afpacket;
pub mod memory;
pub mod sys;
pub mod tap;

use crate::buf::{Batch, PacketBuf};
use std::os::fd::RawFd;

crate::counters! {
    /// Counters a port keeps about itself, as its worker publishes them.
    pub struct SharedPortStats => PortStats {
        /// Frames received and handed to the pipeline.
        Counter rx_packets,
        /// Bytes of the frames received.
        Counter rx_bytes,
        /// Frames the port or kernel dropped before weir saw them (ring full, buffer pool
        /// empty).
        Counter rx_dropped,
        /// Frames longer than a packet buffer (`mempool.buffer_bytes`), dropped on receipt (in
        /// the drops as `oversize`).
        Counter rx_oversize,
        /// Frames handed to the kernel or device for sending.
        Counter tx_packets,
        /// Bytes of the frames sent.
        Counter tx_bytes,
        /// Frames that could not be sent (transmit ring full, send error) and were freed.
        Counter tx_dropped,
    }
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

    /// Looks at the port's link: called by its worker about once a second, and at once when
    /// `poll(2)` reports an error on [`poll_fd`](Self::poll_fd). A port whose device went
    /// away or down reports it, is not polled while it stays so, and takes the device back
    /// (reopened if it returned as a new one) when it returns. Returns a change, for the log.
    fn check_link(&mut self) -> Option<LinkEvent> {
        None
    }

    /// Whether the port's link carries frames now (see [`check_link`](Self::check_link)).
    fn link_up(&self) -> bool {
        true
    }

    /// What another process needs to go on with this queue where this one stopped (a hot
    /// restart): its descriptor, where it stands and its counters. `None`: this queue cannot
    /// be handed over. Only meaningful while nothing polls the queue.
    fn handover(&self) -> Option<QueueHandover> {
        None
    }
}

/// A queue as a hot restart hands it to the next process (see [`PacketIo::handover`]).
#[derive(Debug)]
pub struct QueueHandover {
    /// A duplicate of its descriptor, to send to the next process over a Unix socket; none for
    /// a queue the next process opens again ([`QueuePosition::Reopened`]).
    pub fd: Option<std::os::fd::OwnedFd>,
    /// Where reading and writing stand.
    pub position: QueuePosition,
    /// Its counters so far.
    pub stats: PortStats,
}

/// Where a queue's reading and writing stand, for the process that goes on with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueuePosition {
    /// Nothing to carry: each read and write is a system call (TAP).
    #[default]
    Stateless,
    /// Nothing is handed over: the next process opens the port again once this one let it go
    /// (a DPDK port cannot be open in two processes).
    Reopened,
    /// An af_packet socket's mapped rings.
    AfPacket {
        /// The RX block to read next, or being read.
        block: u32,
        /// Whether that block's header was read (it is partly consumed).
        open: bool,
        /// Its frames not yet read.
        remaining: u32,
        /// The offset of its next frame.
        offset: u32,
        /// The next TX slot to fill.
        tx_head: u32,
    },
}

/// A change of a port's link, as [`PacketIo::check_link`] found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// The device is gone or down; frames sent meanwhile are dropped and counted.
    Down {
        /// The interface.
        iface: String,
        /// Why, as the kernel said.
        reason: String,
    },
    /// The device is up again.
    Up {
        /// The interface.
        iface: String,
        /// Whether it came back as a new device, so the port was opened on it anew.
        reopened: bool,
    },
    /// Reopening the returned device failed; tried again at the next check.
    ReopenFailed {
        /// The interface.
        iface: String,
        /// The error.
        error: String,
    },
}
