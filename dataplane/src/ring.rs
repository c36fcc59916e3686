//! Bounded lock-free rings that hand packets from one worker to another.
//!
//! A flow belongs to one worker; a packet of it that arrives on another worker's queue is handed
//! to the owner through the owner's ring, tagged with the port it arrived on. Rings never grow:
//! what does not fit is returned to the sender, which drops and counts it.

use crate::buf::{Batch, BURST};
use crossbeam_queue::ArrayQueue;

/// A packet in transit between workers, with the port it was received on.
pub struct Handoff<B> {
    /// The packet.
    pub pkt: B,
    /// Its input port.
    pub in_port: u8,
    /// Workers that looked for its flow and did not find it (see
    /// [`crate::mesh::engine::MeshAction::Seek`]); 0 for a packet handed to its flow's owner.
    pub passes: u8,
}

/// A multi-producer, single-consumer ring of fixed capacity.
pub struct HandoffRing<B> {
    q: ArrayQueue<Handoff<B>>,
}

impl<B> HandoffRing<B> {
    /// A ring of `capacity` packets.
    pub fn new(capacity: usize) -> Self {
        HandoffRing { q: ArrayQueue::new(capacity.max(1)) }
    }

    /// Hands one packet over; gives it back when the ring is full.
    #[inline]
    pub fn enqueue(&self, h: Handoff<B>) -> Result<(), Handoff<B>> {
        self.q.push(h)
    }

    /// Takes up to one burst of handed-over packets into `out`; returns how many.
    #[inline]
    pub fn dequeue_burst(&self, out: &mut arrayvec::ArrayVec<Handoff<B>, BURST>) -> usize {
        let mut n = 0;
        while !out.is_full() {
            let Some(h) = self.q.pop() else { break };
            out.push(h);
            n += 1;
        }
        n
    }

    /// Packets waiting.
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// Whether the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// Capacity in packets.
    pub fn capacity(&self) -> usize {
        self.q.capacity()
    }
}

/// Drains `batch` into `ring`, returning what did not fit (for the caller to drop and count).
pub fn enqueue_batch<B>(ring: &HandoffRing<B>, in_port: u8, batch: &mut Batch<B>) -> Batch<B> {
    let mut rejected = Batch::new();
    for pkt in batch.drain(..) {
        if let Err(h) = ring.enqueue(Handoff { pkt, in_port, passes: 0 }) {
            rejected.push(h.pkt);
        }
    }
    rejected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_ring_gives_packets_back() {
        let ring = HandoffRing::new(2);
        let mut b: Batch<u32> = (0..5).collect();
        let rejected = enqueue_batch(&ring, 3, &mut b);
        assert_eq!(rejected.as_slice(), &[2, 3, 4]);
        let mut out = arrayvec::ArrayVec::new();
        assert_eq!(ring.dequeue_burst(&mut out), 2);
        assert_eq!(
            out.iter().map(|h| (h.pkt, h.in_port)).collect::<Vec<_>>(),
            vec![(0, 3), (1, 3)]
        );
    }

    #[test]
    fn many_producers_one_consumer_lose_nothing() {
        // Fewer under Miri, which interleaves the threads at every step.
        let per: u32 = if cfg!(miri) { 40 } else { 1000 };
        let ring = std::sync::Arc::new(HandoffRing::new(4096));
        let producers: Vec<_> = (0..4u32)
            .map(|p| {
                let r = std::sync::Arc::clone(&ring);
                std::thread::spawn(move || {
                    for i in 0..per {
                        let mut h = Handoff { pkt: p * per + i, in_port: 0, passes: 0 };
                        while let Err(back) = r.enqueue(h) {
                            h = back;
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        for t in producers {
            t.join().unwrap();
        }
        let mut seen = vec![false; 4 * per as usize];
        let mut out = arrayvec::ArrayVec::new();
        while ring.dequeue_burst(&mut out) > 0 {
            for h in out.drain(..) {
                assert!(!seen[h.pkt as usize]);
                seen[h.pkt as usize] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
    }
}
