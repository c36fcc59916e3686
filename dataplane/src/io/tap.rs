//! TAP backend: a kernel TAP netdev whose frames weir reads and writes through `/dev/net/tun`.
//!
//! [`create_tap`] creates (or attaches to) the device with `IFF_TAP | IFF_NO_PI` (whole Ethernet
//! frames, no packet-information prefix), adding `IFF_MULTI_QUEUE` when more than one queue is
//! asked for, and returns one nonblocking [`TapQueue`] per queue, meant one per worker. The
//! kernel spreads the frames it sends to the device over the queues by flow hash.
//!
//! The device is left as the caller finds it: down and without addresses when new. Its kernel
//! side (link state, addresses, routes, namespace) belongs to the operator or the test;
//! [`set_link_up`] is provided for the common case. The netdev may be moved to another network
//! namespace (`ip link set NAME netns NS`) after creation: the queues keep working, since they
//! never look the device up again.
//!
//! TAP has no batched interface: [`rx_burst`](PacketIo::rx_burst) does up to a batch's worth of
//! `readv`s (ending at `EAGAIN`) and [`tx_burst`](PacketIo::tx_burst) one `write` per frame, so
//! this backend costs a syscall per packet. It is meant for tests, development and modest rates.
//!
//! A frame longer than a pool buffer is dropped and counted: each read scatters into the buffer
//! plus one spare byte, so a read that fills the spare byte reveals a frame the kernel truncated
//! (a TAP read returns at most the bytes requested, never the frame's real length).
//!
//! A deleted device leaves the queue's descriptor detached: the port is down (not polled,
//! frames for it counted as `tx_dropped`) until a TAP device of the same name exists again,
//! which it attaches to ([`check_link`](PacketIo::check_link)).
#![allow(unsafe_code)]

use super::sys;
use super::{LinkEvent, PacketIo, PortStats};
use crate::buf::{Batch, PacketBuf, RxMeta, BURST};
use crate::mempool::{Mempool, PoolBuf, PoolCache};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

pub use super::sys::set_link_up;

/// The TUN/TAP clone device.
const TUN_DEVICE: &str = "/dev/net/tun";

/// Settings of a TAP device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapConfig {
    /// Device name (at most 15 bytes). An existing TAP device of that name is attached to; an
    /// empty name lets the kernel pick one (`tapN`), readable from [`TapQueue::name`].
    pub name: String,
    /// Number of queues, one per worker; at least 1. More than 1 creates a multi-queue device.
    pub queues: u16,
}

/// Creates the TAP device `cfg.name` (or attaches to it) with `cfg.queues` queues, in the calling
/// thread's network namespace. Received frames are copied into buffers from `pool`. Needs
/// `CAP_NET_ADMIN` (or ownership of a persistent device). Errors name the device and the step.
pub fn create_tap(cfg: &TapConfig, pool: &'static Mempool) -> io::Result<Vec<TapQueue>> {
    let subject = format!("tap {}", cfg.name);
    if cfg.queues == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{subject}: config: queues must be at least 1"),
        ));
    }
    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
    if cfg.queues > 1 {
        flags |= libc::IFF_MULTI_QUEUE;
    }
    let flags = libc::c_short::try_from(flags)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "TAP flags"))?;
    let mut name = cfg.name.clone();
    let mut queues = Vec::with_capacity(usize::from(cfg.queues));
    for q in 0..cfg.queues {
        let fd = attach(&name, flags, q)?;
        // The kernel writes back the name it used (it picks one for an empty name).
        name = fd.1;
        queues.push(TapQueue {
            fd: fd.0,
            name: name.clone(),
            flags,
            queue: q,
            down: false,
            detached: false,
            cache: PoolCache::new(pool),
            spare: None,
            stats: PortStats::default(),
        });
    }
    tracing::info!(name = %name, queues = cfg.queues, "tap device ready");
    Ok(queues)
}

/// Opens `/dev/net/tun` and attaches the descriptor to TAP device `name` as queue `q` (creating
/// the device if it does not exist). Returns the descriptor and the device's name.
fn attach(name: &str, flags: libc::c_short, q: u16) -> io::Result<(OwnedFd, String)> {
    let subject = format!("tap {name}");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(TUN_DEVICE)
        .map_err(|e| sys::context(e, &subject, "open /dev/net/tun"))?;
    let fd = OwnedFd::from(file);
    let mut req = sys::ifreq(name).map_err(|e| sys::context(e, &subject, "name"))?;
    req.ifr_ifru.ifru_flags = flags;
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq` (name and flags), and `req` is a
    // valid, exclusively borrowed `ifreq` for the duration of the call; `fd` is open.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, std::ptr::from_mut(&mut req)) };
    sys::cvt(r).map_err(|e| sys::context(e, &subject, &format!("TUNSETIFF (queue {q})")))?;
    Ok((fd, sys::ifreq_name(&req)))
}

/// Whether the descriptor is still attached to a device (`TUNGETIFF`): once the device is
/// deleted, it fails with `EBADFD`, as reads do, and `poll(2)` reports an error.
fn attached(fd: &OwnedFd) -> io::Result<(String, libc::c_short)> {
    let mut req = sys::ifreq("")?;
    // SAFETY: TUNGETIFF writes one `struct ifreq` (name and flags) into `req`, a valid,
    // exclusively borrowed `ifreq` for the duration of the call; `fd` is open.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETIFF, std::ptr::from_mut(&mut req)) };
    sys::cvt(r)?;
    // SAFETY: TUNGETIFF filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    Ok((sys::ifreq_name(&req), flags))
}

/// Goes on with the queues of a TAP device another process created and handed over (a hot
/// restart): `queues` are their descriptors, in queue order, with the counters each had. The
/// device lives on as long as one of them is open.
pub fn adopt_tap(
    queues: Vec<(OwnedFd, PortStats)>,
    pool: &'static Mempool,
) -> io::Result<Vec<TapQueue>> {
    let mut out = Vec::with_capacity(queues.len());
    for (q, (fd, stats)) in queues.into_iter().enumerate() {
        let (name, got) = attached(&fd)
            .map_err(|e| sys::context(e, "tap", &format!("TUNGETIFF on handed-over queue {q}")))?;
        // TUNGETIFF reports the device's flags with IFF_TUN_EXCL and friends: keep what
        // TUNSETIFF takes to attach again.
        let keep = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE;
        let flags = got & libc::c_short::try_from(keep).unwrap_or(0);
        out.push(TapQueue {
            fd,
            name,
            flags,
            queue: u16::try_from(q).unwrap_or(u16::MAX),
            down: false,
            detached: false,
            cache: PoolCache::new(pool),
            spare: None,
            stats,
        });
    }
    if let Some(q) = out.first() {
        tracing::info!(name = %q.name, queues = out.len(), "tap device taken over");
    }
    Ok(out)
}

/// One queue of a TAP device: frames the kernel sends to the device are received here, frames
/// sent here enter the kernel as if received by the device.
pub struct TapQueue {
    fd: OwnedFd,
    name: String,
    /// The `TUNSETIFF` flags, to attach again to a device of the same name.
    flags: libc::c_short,
    /// This queue's number on the device.
    queue: u16,
    /// The device is gone or down, as last logged (see [`PacketIo::check_link`]).
    down: bool,
    /// The device is gone: the descriptor is attached to nothing.
    detached: bool,
    cache: PoolCache,
    /// A buffer a previous read left unused (nothing to read), kept for the next one.
    spare: Option<PoolBuf>,
    stats: PortStats,
}

impl TapQueue {
    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame into `buf` (whose length is set to its capacity). `Ok(n)` with `n` up to
    /// capacity + 1, where capacity + 1 means the frame was longer than the buffer.
    fn read_into(&self, buf: &mut PoolBuf) -> io::Result<usize> {
        let cap = buf.capacity();
        buf.set_len(cap).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut overflow = [0u8; 1];
        let data = buf.data_mut();
        let iov = [
            libc::iovec { iov_base: data.as_mut_ptr().cast(), iov_len: data.len() },
            libc::iovec { iov_base: overflow.as_mut_ptr().cast(), iov_len: overflow.len() },
        ];
        // SAFETY: both iovecs describe memory exclusively borrowed for this call (`data` from
        // `buf`, `overflow` on the stack) and writable for their lengths; the count passed is
        // the array's length.
        let r = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
        usize::try_from(r).map_err(|_| io::Error::last_os_error())
    }

    /// Reads and discards one frame (no buffer to put it in). True if there was one.
    fn discard_one(&self) -> bool {
        let mut byte = [0u8; 1];
        // SAFETY: `byte` is writable for its length of 1; a TAP read consumes the whole frame
        // and copies at most that much.
        let r = unsafe { libc::read(self.fd.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
        r > 0
    }
}

impl PacketIo for TapQueue {
    type Buf = PoolBuf;

    fn rx_burst(&mut self, batch: &mut Batch<PoolBuf>) -> usize {
        if self.detached {
            return 0;
        }
        let start = batch.len();
        // Bounded: at most two batches' worth of reads, delivered or dropped.
        for _ in 0..2 * BURST {
            if batch.is_full() {
                break;
            }
            let Some(mut buf) = self.spare.take().or_else(|| self.cache.alloc()) else {
                // Pool exhausted: drop the frame rather than leave the queue to back up.
                if self.discard_one() {
                    self.stats.rx_dropped += 1;
                    continue;
                }
                break;
            };
            match self.read_into(&mut buf) {
                Ok(n) if n > 0 && n <= buf.capacity() => {
                    // Cannot fail: n is within capacity.
                    let _ = buf.set_len(n);
                    buf.set_meta(RxMeta::default());
                    self.stats.rx_bytes += n as u64;
                    batch.push(buf);
                }
                Ok(n) if n > 0 => {
                    // Longer than the buffer: truncated by the read, so dropped.
                    self.stats.rx_oversize += 1;
                    self.spare = Some(buf);
                }
                Ok(_) => {
                    self.spare = Some(buf);
                    break;
                }
                Err(e) => {
                    self.spare = Some(buf);
                    if e.kind() != io::ErrorKind::Interrupted {
                        // EAGAIN (queue empty) ends the burst, as does any device error.
                        break;
                    }
                }
            }
        }
        let n = batch.len() - start;
        self.stats.rx_packets += n as u64;
        n
    }

    /// One `write` per frame; a frame the device refuses (too short, too long, device gone) is
    /// counted in `tx_dropped`.
    fn tx_burst(&mut self, batch: &mut Batch<PoolBuf>) -> usize {
        if self.detached {
            // No device to send on: not one failing system call per frame.
            self.stats.tx_dropped += batch.len() as u64;
            batch.clear();
            return 0;
        }
        let mut sent = 0;
        for buf in batch.drain(..) {
            let data = buf.data();
            // SAFETY: `data` is readable for its length and borrowed for the whole call.
            let r = unsafe { libc::write(self.fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
            if usize::try_from(r).is_ok_and(|w| w == data.len()) {
                self.stats.tx_packets += 1;
                self.stats.tx_bytes += data.len() as u64;
                sent += 1;
            } else {
                self.stats.tx_dropped += 1;
            }
        }
        sent
    }

    /// The queue's descriptor: polls readable when a frame waits.
    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    fn handover(&self) -> Option<super::QueueHandover> {
        Some(super::QueueHandover {
            fd: Some(self.fd.try_clone().ok()?),
            position: super::QueuePosition::Stateless,
            stats: self.stats,
        })
    }

    fn stats(&self) -> PortStats {
        self.stats
    }

    /// Whether the queue is attached to a device. (One that is merely down stays polled: it
    /// wakes no one, and refuses sends cheaply, which are counted.)
    fn link_up(&self) -> bool {
        !self.detached
    }

    /// A deleted device detaches the queue's descriptor (which then polls as an error): the
    /// port is down until a TAP device of the same name exists again in weir's namespace
    /// (`ip tuntap add NAME mode tap`, with `multi_queue` for a multi-queue port), to which
    /// the queue attaches anew. While attached, the device's `IFF_UP` is its link where the
    /// device is visible (it may have been moved to another namespace: then it counts as up).
    fn check_link(&mut self) -> Option<LinkEvent> {
        let iface = self.name.clone();
        if let Err(e) = attached(&self.fd) {
            if !self.detached {
                self.down = true;
                self.detached = true;
                let reason = if e.raw_os_error() == Some(libc::EBADFD) {
                    "device deleted".to_owned()
                } else {
                    e.to_string()
                };
                return Some(LinkEvent::Down { iface, reason });
            }
            if sys::if_index(&self.name).is_err() {
                return None;
            }
            return match attach(&self.name, self.flags, self.queue) {
                Ok((fd, _)) => {
                    // A device that is still down is found so at the next check.
                    self.fd = fd;
                    self.down = false;
                    self.detached = false;
                    Some(LinkEvent::Up { iface, reopened: true })
                }
                Err(e) => Some(LinkEvent::ReopenFailed { iface, error: e.to_string() }),
            };
        }
        let down = sys::if_flags(&self.name).is_ok_and(|f| !is_up(f));
        match (std::mem::replace(&mut self.down, down), down) {
            (false, true) => Some(LinkEvent::Down { iface, reason: "down".to_owned() }),
            (true, false) => Some(LinkEvent::Up { iface, reopened: false }),
            _ => None,
        }
    }
}

fn is_up(flags: u32) -> bool {
    flags & libc::IFF_UP.unsigned_abs() != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::sys::testnet::*;
    use std::collections::HashSet;
    use std::time::{Duration, Instant};

    const LIMIT: Duration = Duration::from_secs(2);
    const OTHER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

    /// Sequence numbers per queue, and the frames by sequence number.
    type Received = (Vec<Vec<u32>>, Vec<(u32, Vec<u8>)>);

    /// Receives through `queues` until `want` frames matching `seq_of` arrived or the limit
    /// passed; returns the sequence numbers per queue and the frames by sequence number.
    fn receive(queues: &mut [TapQueue], want: usize, seq_of: fn(&[u8]) -> Option<u32>) -> Received {
        let mut per_queue = vec![Vec::new(); queues.len()];
        let mut frames = Vec::new();
        let mut batch = Batch::new();
        let deadline = Instant::now() + LIMIT;
        while frames.len() < want && Instant::now() < deadline {
            let mut n = 0;
            for (k, q) in queues.iter_mut().enumerate() {
                n += q.rx_burst(&mut batch);
                for b in batch.drain(..) {
                    if let Some(seq) = seq_of(b.data()) {
                        per_queue[k].push(seq);
                        frames.push((seq, b.data().to_vec()));
                    }
                }
            }
            if n == 0 {
                wait_readable(queues[0].poll_fd().unwrap(), Duration::from_millis(5));
            }
        }
        (per_queue, frames)
    }

    #[test]
    fn kernel_to_tap_and_back() {
        in_private_netns("tap rx/tx", || {
            let pool = test_pool(512, 2048);
            let cfg = TapConfig { name: "weirtap0".into(), queues: 1 };
            let mut queues = create_tap(&cfg, pool).unwrap();
            assert_eq!(queues.len(), 1);
            assert_eq!(queues[0].name(), "weirtap0");
            set_link_up("weirtap0").unwrap();
            let tap_mac = sys::if_mac("weirtap0").unwrap();
            let kernel = RawSocket::bind("weirtap0");

            // Kernel -> weir: frames the kernel sends out of the tap.
            let sent: Vec<Vec<u8>> =
                (0..50).map(|i| test_frame(OTHER_MAC, tap_mac, i, (i * 17) as usize)).collect();
            for f in &sent {
                kernel.send(f);
            }
            let (_, got) = receive(&mut queues, 50, test_seq);
            assert_eq!(got.len(), 50);
            for ((_, g), s) in got.iter().zip(&sent) {
                assert_eq!(g, s);
            }

            // weir -> kernel: frames written to the tap arrive as received by it.
            let frames: Vec<Vec<u8>> =
                (0..32u32).map(|i| test_frame(tap_mac, OTHER_MAC, 100 + i, 30)).collect();
            let mut batch = Batch::new();
            for f in &frames {
                let mut b = pool.alloc().unwrap();
                b.fill(f).unwrap();
                batch.push(b);
            }
            assert_eq!(queues[0].tx_burst(&mut batch), BURST);
            let mut buf = [0u8; 2048];
            let deadline = Instant::now() + LIMIT;
            let mut received = Vec::new();
            while received.len() < frames.len() {
                let Some(n) = kernel.recv(&mut buf, deadline) else { break };
                if test_seq(&buf[..n]).is_some() {
                    received.push(buf[..n].to_vec());
                }
            }
            assert_eq!(received, frames);
            let st = queues[0].stats();
            assert_eq!((st.rx_packets, st.tx_packets, st.tx_dropped), (50, 32, 0));
        });
    }

    #[test]
    fn multi_queue_spreads_flows_over_queues() {
        in_private_netns("tap multi-queue", || {
            let pool = test_pool(1024, 2048);
            let cfg = TapConfig { name: "weirmq0".into(), queues: 2 };
            let mut queues = create_tap(&cfg, pool).unwrap();
            assert_eq!(queues.len(), 2);
            assert!(queues.iter().all(|q| q.name() == "weirmq0"));
            set_link_up("weirmq0").unwrap();
            let tap_mac = sys::if_mac("weirmq0").unwrap();
            let kernel = RawSocket::bind("weirmq0");
            for seq in 0..200u32 {
                kernel.send(&udp_frame(OTHER_MAC, tap_mac, seq * 7919, seq));
            }
            let (per_queue, _) = receive(&mut queues, 200, udp_seq);
            let all: Vec<u32> = per_queue.iter().flatten().copied().collect();
            let unique: HashSet<u32> = all.iter().copied().collect();
            assert_eq!(all.len(), 200, "split {} + {}", per_queue[0].len(), per_queue[1].len());
            assert_eq!(unique, (0..200).collect::<HashSet<u32>>());
            assert!(per_queue.iter().all(|q| !q.is_empty()), "both queues got flows");
        });
    }

    #[test]
    fn oversize_frame_is_a_counted_drop() {
        in_private_netns("tap oversize", || {
            let pool = test_pool(64, 256);
            let cfg = TapConfig { name: "weirtap1".into(), queues: 1 };
            let mut queues = create_tap(&cfg, pool).unwrap();
            set_link_up("weirtap1").unwrap();
            let tap_mac = sys::if_mac("weirtap1").unwrap();
            let kernel = RawSocket::bind("weirtap1");
            kernel.send(&test_frame(OTHER_MAC, tap_mac, 1, 600));
            // Exactly the buffer's size still fits.
            let exact = test_frame(OTHER_MAC, tap_mac, 2, 256 - 22);
            assert_eq!(exact.len(), 256);
            kernel.send(&exact);
            let (_, got) = receive(&mut queues, 1, test_seq);
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].1, exact);
            assert_eq!((queues[0].stats().rx_oversize, queues[0].stats().rx_dropped), (1, 0));
        });
    }

    #[test]
    fn a_deleted_device_is_down_until_one_of_its_name_returns() {
        in_private_netns("tap link", || {
            let pool = test_pool(64, 2048);
            let cfg = TapConfig { name: "weirtap2".into(), queues: 1 };
            let mut queues = create_tap(&cfg, pool).unwrap();
            let q = &mut queues[0];
            let down =
                |reason: &str| LinkEvent::Down { iface: "weirtap2".into(), reason: reason.into() };
            assert_eq!(q.check_link(), Some(down("down")), "created down");
            set_link_up("weirtap2").unwrap();
            assert_eq!(
                q.check_link(),
                Some(LinkEvent::Up { iface: "weirtap2".into(), reopened: false })
            );
            assert_eq!(q.check_link(), None);
            ip(&["link", "del", "weirtap2"]);
            assert_eq!(q.check_link(), Some(down("device deleted")));
            assert!(!q.link_up());
            assert_eq!(q.check_link(), None, "gone: nothing new");
            // Sending meanwhile is counted, without a system call per frame.
            let mut batch = Batch::new();
            let mut b = pool.alloc().unwrap();
            b.fill(&test_frame(OTHER_MAC, OTHER_MAC, 1, 30)).unwrap();
            batch.push(b);
            assert_eq!(q.tx_burst(&mut batch), 0);
            assert_eq!(q.stats().tx_dropped, 1);
            // A device of that name again: attached anew, and frames flow.
            ip(&["tuntap", "add", "dev", "weirtap2", "mode", "tap"]);
            assert_eq!(
                q.check_link(),
                Some(LinkEvent::Up { iface: "weirtap2".into(), reopened: true })
            );
            set_link_up("weirtap2").unwrap();
            assert_eq!(q.check_link(), None);
            let tap_mac = sys::if_mac("weirtap2").unwrap();
            RawSocket::bind("weirtap2").send(&test_frame(OTHER_MAC, tap_mac, 7, 40));
            let (_, got) = receive(&mut queues, 1, test_seq);
            assert_eq!(got.len(), 1);
        });
    }

    #[test]
    fn zero_queues_is_an_error() {
        let pool = test_pool(8, 256);
        let e = create_tap(&TapConfig { name: "weirtap9".into(), queues: 0 }, pool).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("weirtap9"));
    }
}
