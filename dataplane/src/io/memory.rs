//! In-process port: frames pushed in by a test or benchmark come out of `rx_burst`, and frames
//! the pipeline sends are kept for inspection. Bounded both ways, like a real queue.

use super::{PacketIo, PortStats};
use crate::buf::{Batch, PacketBuf, BURST};
use crate::mempool::{PoolBuf, PoolCache};
use crossbeam_queue::ArrayQueue;
use std::sync::Arc;

/// The two queues of a memory port, shareable with the thread that feeds and drains it.
pub struct MemoryQueues {
    rx: ArrayQueue<PoolBuf>,
    tx: ArrayQueue<PoolBuf>,
}

impl MemoryQueues {
    /// Queues of `depth` frames each way.
    pub fn new(depth: usize) -> Arc<Self> {
        Arc::new(MemoryQueues { rx: ArrayQueue::new(depth), tx: ArrayQueue::new(depth) })
    }

    /// Offers a frame to the port's receive side; gives it back if the queue is full.
    pub fn inject(&self, buf: PoolBuf) -> Result<(), PoolBuf> {
        self.rx.push(buf)
    }

    /// Copies `frame` into a buffer from `cache` and offers it; false if no buffer or no room.
    pub fn inject_bytes(&self, cache: &mut PoolCache, frame: &[u8]) -> bool {
        let Some(mut b) = cache.alloc() else { return false };
        b.fill(frame).is_ok() && self.rx.push(b).is_ok()
    }

    /// Takes the next frame the pipeline sent.
    pub fn take_sent(&self) -> Option<PoolBuf> {
        self.tx.pop()
    }

    /// Frames sent and not yet taken.
    pub fn sent_len(&self) -> usize {
        self.tx.len()
    }
}

/// A port over [`MemoryQueues`].
pub struct MemoryPort {
    queues: Arc<MemoryQueues>,
    stats: PortStats,
    /// When set, sent frames are freed at once instead of kept (benchmarks).
    discard_tx: bool,
}

impl MemoryPort {
    /// A port over `queues`; with `discard_tx` sent frames are counted and freed.
    pub fn new(queues: Arc<MemoryQueues>, discard_tx: bool) -> Self {
        MemoryPort { queues, stats: PortStats::default(), discard_tx }
    }
}

impl PacketIo for MemoryPort {
    type Buf = PoolBuf;

    fn rx_burst(&mut self, batch: &mut Batch<PoolBuf>) -> usize {
        let mut n = 0;
        while !batch.is_full() {
            let Some(b) = self.queues.rx.pop() else { break };
            self.stats.rx_bytes += b.len() as u64;
            batch.push(b);
            n += 1;
        }
        self.stats.rx_packets += n as u64;
        n
    }

    fn tx_burst(&mut self, batch: &mut Batch<PoolBuf>) -> usize {
        let mut sent = 0;
        for b in batch.drain(..) {
            let len = b.len() as u64;
            if self.discard_tx || self.queues.tx.push(b).is_ok() {
                self.stats.tx_packets += 1;
                self.stats.tx_bytes += len;
                sent += 1;
            } else {
                self.stats.tx_dropped += 1;
            }
        }
        sent
    }

    fn stats(&self) -> PortStats {
        self.stats
    }
}

/// A port in the manner of DPDK's `net_null`: every `rx_burst` returns a full burst of fresh
/// buffers holding copies of the template frames (round-robin), and `tx_burst` frees what it is
/// given. The I/O costs only a buffer allocation, a copy and a free, so a benchmark over it
/// measures the pipeline.
pub struct NullPort {
    pool: &'static crate::mempool::Mempool,
    templates: Vec<Vec<u8>>,
    next: usize,
    stats: PortStats,
}

impl NullPort {
    /// A port that receives copies of `templates` forever. Templates longer than the pool's
    /// buffers are left out.
    pub fn new(pool: &'static crate::mempool::Mempool, mut templates: Vec<Vec<u8>>) -> Self {
        let room = usize::from(pool.config().data_room);
        templates.retain(|t| t.len() <= room);
        NullPort { pool, templates, next: 0, stats: PortStats::default() }
    }
}

impl PacketIo for NullPort {
    type Buf = PoolBuf;

    #[inline]
    fn rx_burst(&mut self, batch: &mut Batch<PoolBuf>) -> usize {
        if self.templates.is_empty() {
            return 0;
        }
        let first = batch.len();
        let n = self.pool.alloc_bulk(batch, BURST);
        for b in &mut batch[first..] {
            let t = &self.templates[self.next];
            self.next = if self.next + 1 == self.templates.len() { 0 } else { self.next + 1 };
            // Cannot fail: templates are checked against the buffer size in `new`.
            let _ = b.fill(t);
            self.stats.rx_bytes += t.len() as u64;
        }
        self.stats.rx_packets += n as u64;
        n
    }

    #[inline]
    fn tx_burst(&mut self, batch: &mut Batch<PoolBuf>) -> usize {
        let n = batch.len();
        for b in batch.iter() {
            self.stats.tx_bytes += b.len() as u64;
        }
        crate::mempool::Mempool::free_batch(batch);
        self.stats.tx_packets += n as u64;
        n
    }

    fn stats(&self) -> PortStats {
        self.stats
    }
}
