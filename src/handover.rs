//! Hot restart: a new weir takes over from the running one, and every flow survives.
//!
//! The running weir waits on the Unix socket `handover.socket` names. A new weir started with
//! a configuration that names the same socket finds it there, and the two speak this protocol:
//!
//! 1. `hello` (new → old): the protocol version, and what must not differ between the two
//!    configurations (the workers, the ports, the SNAT range: queues and flows go to the
//!    worker of the same number). The old one answers `welcome`, or `refuse` with the reason
//!    and changes nothing. With xDS configured, its client's session follows (`xds`: the
//!    resources held and in force, the versions): the new weir starts with the same services
//!    and clusters, and its stream resumes from those versions.
//! 2. The copy: each old worker copies its flow table out a page at a time between bursts,
//!    forwarding all the while, and notes which records change from then on. Pages go over as
//!    `flows` frames (binary records: keys, mode, state, nanoseconds left) and the new weir
//!    puts them into its own workers' tables, which are not running yet. Then, still
//!    forwarding, the records that changed during the copy go over the same way, and the xDS
//!    session again if it took an update meanwhile. `copied` ends it.
//! 3. The cut-over: the new weir sends `cut_over`; the old workers stop receiving (frames wait
//!    in the queues' rings), hand out what changed since the copy (flows again, and the ids of
//!    those that left), then each queue's position. The old weir sends `queues` (with the
//!    counters, the learned neighbors and every endpoint's passive health: ejections with the
//!    time left) and, over `SCM_RIGHTS`, the queues' descriptors (the same af_packet sockets
//!    and TAP queues), the interface locks, the admin listener and this socket's listener. DPDK
//!    ports have no descriptor to send: the old weir closes those the new one cannot open
//!    beside its own (see `run::dpdk`), and the new one opens them again. Then `paused`.
//! 4. The new weir maps the rings (or opens its DPDK ports) and sends `took`; the old weir
//!    answers `done`, after which it never forwards again; the new weir starts its workers
//!    where the old ones stopped and sends `running`; the old weir exits, closing nothing the
//!    new one uses.
//!
//! If the new weir goes away or times out before `done`, the old workers resume receiving
//! where they stopped (the frames that arrived meanwhile are in the rings), after the DPDK
//! ports it let go are opened again. If the old weir goes away before `paused`, the new one
//! starts cold and says so. A peer of another user is refused before it is read.
//!
//! Control messages are JSON; every frame is a kind byte, a 32-bit little-endian length and
//! the body. A version this weir does not speak is refused from the `version` field alone.

use crate::config::Config;
use anyhow::{anyhow, bail, Context, Result};
use dataplane::io::{PortStats, QueuePosition};
use dataplane::mesh::flow::{Flow, FlowState};
use dataplane::mesh::model::{Encap, Mode};
use dataplane::worker::{HandoverAsk, HandoverDesk, HandoverPage, HandoverStage};
use serde::{Deserialize, Serialize};
use stack::FlowKey;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// The protocol version this weir speaks.
pub const VERSION: u32 = 1;

/// Largest frame accepted, bytes (a page of flows is under 400 KiB; what a control plane's
/// xDS session holds may run to tens of MiB).
const MAX_FRAME: usize = 256 << 20;

/// Frame kinds.
const FRAME_JSON: u8 = 0;
const FRAME_FLOWS: u8 = 1;

/// Bytes of one flow record: id, family, protocol, both keys' addresses and ports, mode, GUE
/// port, state, nanoseconds left.
const RECORD_BYTES: usize = 4 + 1 + 1 + 36 + 36 + 1 + 2 + 1 + 8;

/// Descriptors per `SCM_RIGHTS` message (the kernel takes at most 253).
const FDS_PER_MESSAGE: usize = 200;

/// A control message.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "message", rename_all = "snake_case")]
enum Message {
    Hello {
        version: u32,
        pid: u32,
        workers: usize,
        /// The `ports` section, as JSON.
        ports: serde_json::Value,
        snat_ports: (u16, u16),
    },
    Refuse {
        reason: String,
    },
    Welcome {
        version: u32,
        pid: u32,
        flows: u64,
        /// The watchdog systemd expects of the service, microseconds (`WATCHDOG_USEC`), for
        /// the new weir to feed once it is the main process.
        watchdog_usec: Option<u64>,
        /// The xDS session follows (an `xds` message).
        #[serde(default)]
        xds: bool,
        /// Each port's MAC, by port number (a DPDK port's is known only once it is open, and
        /// the new weir opens it after the cut-over).
        #[serde(default)]
        macs: Vec<[u8; 6]>,
        /// The EAL's runtime file prefix, when one is configured: the new weir's EAL, up
        /// beside this one's until the cut-over, takes the other of the two.
        #[serde(default)]
        eal_file_prefix: Option<String>,
    },
    /// The xDS client's session: sent after `welcome`, and again before `queues` if it
    /// changed meanwhile.
    Xds {
        session: Box<crate::xds::client::CarriedSession>,
    },
    Copied,
    CutOver,
    Queues {
        /// By worker, then port.
        queues: Vec<Vec<HandedQueue>>,
        /// Descriptors that follow the queues': interface locks, then the admin listener if
        /// `admin`, then this socket's listener.
        locks: usize,
        admin: bool,
        /// Each worker's counters, by worker.
        tallies: Vec<WorkerTally>,
        /// The neighbors each worker learned (address, MAC, port), by worker.
        neighbors: Vec<Vec<(IpAddr, [u8; 6], u8)>>,
        /// Passive health: ejections and connect counts, by endpoint.
        #[serde(default)]
        health: Vec<crate::run::CarriedHealth>,
    },
    Paused,
    /// The new weir has mapped the rings and will start its workers once the old one
    /// commits.
    Took {
        /// From `cut_over` to now, microseconds.
        cut_over_us: u64,
    },
    /// The old weir commits: it will not forward again. (Before this, a failure makes it
    /// resume: it sends `resumed` if it can.)
    Done,
    /// The old weir gave up and forwards again.
    Resumed,
    /// The new weir's workers run and systemd was told: the old one may exit.
    Running,
}

/// The longest the old workers stay paused: past it they resume (forwarding stops while they
/// are paused, so a stalled successor must not hold them long).
const CUT_OVER_MAX: Duration = Duration::from_secs(2);

/// The most interface locks a handover carries.
const MAX_LOCKS: usize = 256;

/// The watchdog period systemd set for this process, microseconds, as sd_watchdog_enabled(3)
/// reads it.
pub fn watchdog_usec() -> Option<u64> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok().filter(|&u| u > 0)?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    Some(usec)
}

/// One worker's counters, by name, and its services' by VIP, port and protocol.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WorkerTally {
    /// [`dataplane::worker::WorkerCounters`], by name.
    pub counters: BTreeMap<String, u64>,
    /// Drops, by reason.
    pub drops: BTreeMap<String, u64>,
    /// Each service's counters on this worker.
    pub services: Vec<ServiceTally>,
}

/// One service's counters on one worker.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServiceTally {
    /// The service's VIP, port and protocol.
    pub vip: IpAddr,
    /// Its port.
    pub port: u16,
    /// Its IP protocol.
    pub proto: u8,
    /// [`dataplane::mesh::engine::ServiceCounters`], by name.
    pub counters: BTreeMap<String, u64>,
}

/// Worker `w`'s counters as it last published them.
fn tally(running: &crate::run::Running, w: usize) -> WorkerTally {
    let Some(st) = running.stats.get(w) else { return WorkerTally::default() };
    let names = |it: &mut dyn Iterator<Item = (&'static dataplane::counters::Info, u64)>| {
        it.map(|(i, v)| (i.name.to_owned(), v)).collect()
    };
    let drops = dataplane::pipeline::DropReason::ALL
        .iter()
        .zip(&st.drops)
        .map(|(r, v)| (r.as_str().to_owned(), v.load(std::sync::atomic::Ordering::Relaxed)))
        .collect();
    let services = running
        .service_counters(w)
        .into_iter()
        .map(|(vip, port, proto, t)| ServiceTally {
            vip,
            port,
            proto,
            counters: names(&mut t.values()),
        })
        .collect();
    WorkerTally { counters: names(&mut st.counters.values()), drops, services }
}

/// One queue's position and counters.
#[derive(Debug, Serialize, Deserialize)]
struct HandedQueue {
    position: Position,
    stats: BTreeMap<String, u64>,
}

/// [`QueuePosition`] on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Position {
    Stateless,
    Reopened,
    AfPacket { block: u32, open: bool, remaining: u32, offset: u32, tx_head: u32 },
}

impl From<QueuePosition> for Position {
    fn from(p: QueuePosition) -> Position {
        match p {
            QueuePosition::Stateless => Position::Stateless,
            QueuePosition::Reopened => Position::Reopened,
            QueuePosition::AfPacket { block, open, remaining, offset, tx_head } => {
                Position::AfPacket { block, open, remaining, offset, tx_head }
            }
        }
    }
}

impl From<Position> for QueuePosition {
    fn from(p: Position) -> QueuePosition {
        match p {
            Position::Stateless => QueuePosition::Stateless,
            Position::Reopened => QueuePosition::Reopened,
            Position::AfPacket { block, open, remaining, offset, tx_head } => {
                QueuePosition::AfPacket { block, open, remaining, offset, tx_head }
            }
        }
    }
}

/// A frame as received.
enum Frame {
    Message(Message),
    Flows { worker: usize, flows: Vec<(u32, Flow)>, gone: Vec<u32> },
}

/// The Unix socket between the two processes, with the deadline of the whole handover.
struct Channel {
    stream: UnixStream,
    deadline: Instant,
    /// `handover.timeout_ms`.
    timeout: Duration,
}

/// The peer closed the socket or reset it: it went away.
fn is_gone(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(e.kind(), K::UnexpectedEof | K::ConnectionReset | K::BrokenPipe)
}

impl Channel {
    fn new(stream: UnixStream, timeout: Duration) -> Channel {
        Channel { stream, deadline: Instant::now() + timeout, timeout }
    }

    /// Bounds the next read or write by what is left of the deadline.
    fn arm(&self) -> Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("the handover took longer than handover.timeout_ms");
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.set_write_timeout(Some(left))?;
        Ok(())
    }

    fn send_frame(&mut self, kind: u8, body: &[u8]) -> Result<()> {
        self.arm()?;
        let len = u32::try_from(body.len()).context("frame too long")?;
        let mut head = [0u8; 5];
        head[0] = kind;
        head[1..].copy_from_slice(&len.to_le_bytes());
        self.stream.write_all(&head)?;
        self.stream.write_all(body)?;
        Ok(())
    }

    fn recv_frame(&mut self) -> std::io::Result<(u8, Vec<u8>)> {
        self.arm().map_err(std::io::Error::other)?;
        let mut head = [0u8; 5];
        self.stream.read_exact(&mut head)?;
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > MAX_FRAME {
            return Err(std::io::Error::other(format!("a frame of {len} bytes: too long")));
        }
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body)?;
        Ok((head[0], body))
    }

    fn send(&mut self, m: &Message) -> Result<()> {
        self.send_frame(FRAME_JSON, &serde_json::to_vec(m)?)
    }

    /// The next frame, decoded.
    fn recv(&mut self) -> std::io::Result<Frame> {
        let (kind, body) = self.recv_frame()?;
        let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        match kind {
            FRAME_JSON => serde_json::from_slice(&body)
                .map(Frame::Message)
                .map_err(|e| bad(format!("a message that does not parse: {e}"))),
            FRAME_FLOWS => decode_flows(&body).map_err(bad),
            k => Err(bad(format!("a frame of unknown kind {k}"))),
        }
    }

    fn send_flows(&mut self, worker: usize, page: &HandoverPage) -> Result<()> {
        let mut body =
            Vec::with_capacity(10 + page.flows.len() * RECORD_BYTES + page.gone.len() * 4);
        body.extend_from_slice(&u16::try_from(worker)?.to_le_bytes());
        body.extend_from_slice(&u32::try_from(page.flows.len())?.to_le_bytes());
        body.extend_from_slice(&u32::try_from(page.gone.len())?.to_le_bytes());
        for (id, f) in &page.flows {
            encode_flow(&mut body, *id, f);
        }
        for id in &page.gone {
            body.extend_from_slice(&id.to_le_bytes());
        }
        self.send_frame(FRAME_FLOWS, &body)
    }

    /// Sends descriptors, a group per message, each with one byte of data.
    fn send_fds(&mut self, fds: &[BorrowedFd<'_>]) -> Result<()> {
        use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        for group in fds.chunks(FDS_PER_MESSAGE) {
            self.arm()?;
            let mut space =
                vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(group.len()))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !control.push(SendAncillaryMessage::ScmRights(group)) {
                bail!("descriptors do not fit their control message");
            }
            let sent = sendmsg(
                self.stream.as_fd(),
                &[std::io::IoSlice::new(&[1])],
                &mut control,
                SendFlags::NOSIGNAL,
            )
            .context("sending descriptors")?;
            if sent != 1 {
                bail!("sending descriptors: the byte with them was not sent");
            }
        }
        Ok(())
    }

    /// Receives `n` descriptors sent by [`send_fds`](Self::send_fds).
    fn recv_fds(&mut self, n: usize) -> std::io::Result<Vec<OwnedFd>> {
        use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
        let mut fds = Vec::with_capacity(n);
        while fds.len() < n {
            self.arm().map_err(std::io::Error::other)?;
            let want = (n - fds.len()).min(FDS_PER_MESSAGE);
            let mut space =
                vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(want))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let mut byte = [0u8; 1];
            let got = recvmsg(
                self.stream.as_fd(),
                &mut [std::io::IoSliceMut::new(&mut byte)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            )?;
            if got.bytes == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let before = fds.len();
            for m in control.drain() {
                if let RecvAncillaryMessage::ScmRights(r) = m {
                    fds.extend(r);
                }
            }
            if fds.len() == before {
                return Err(std::io::Error::other("a descriptor message without descriptors"));
            }
        }
        Ok(fds)
    }
}

fn put_addr(out: &mut Vec<u8>, a: IpAddr) {
    let mut o = [0u8; 16];
    match a {
        IpAddr::V4(v4) => o[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => o = v6.octets(),
    }
    out.extend_from_slice(&o);
}

fn encode_flow(out: &mut Vec<u8>, id: u32, f: &Flow) {
    let (fw, rv) = (&f.forward, &f.reverse);
    out.extend_from_slice(&id.to_le_bytes());
    out.push(if fw.src().is_ipv4() { 4 } else { 6 });
    out.push(fw.proto());
    for k in [fw, rv] {
        put_addr(out, k.src());
        put_addr(out, k.dst());
        out.extend_from_slice(&k.src_port().to_le_bytes());
        out.extend_from_slice(&k.dst_port().to_le_bytes());
    }
    let (mode, gue) = match f.mode {
        Mode::Nat => (0, 0),
        Mode::Dnat => (1, 0),
        Mode::Dsr(Encap::IpIp) => (2, 0),
        Mode::Dsr(Encap::Gue { port }) => (3, port),
    };
    out.push(mode);
    out.extend_from_slice(&gue.to_le_bytes());
    out.push(match f.state {
        FlowState::SynSent => 0,
        FlowState::SynReceived => 1,
        FlowState::Established => 2,
        FlowState::Closing => 3,
        FlowState::Datagram => 4,
    });
    out.extend_from_slice(&f.expires_ns.to_le_bytes());
}

/// Reads little-endian fields off the front of a slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or("a flows frame cut short")?;
        self.0 = rest;
        Ok(*head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    fn addr(&mut self, v4: bool) -> Result<IpAddr, String> {
        let o: [u8; 16] = self.take()?;
        Ok(if v4 { IpAddr::from([o[0], o[1], o[2], o[3]]) } else { IpAddr::from(o) })
    }
}

fn decode_flow(r: &mut Reader<'_>) -> Result<(u32, Flow), String> {
    let id = r.u32()?;
    let v4 = match r.u8()? {
        4 => true,
        6 => false,
        f => return Err(format!("flow {id}: address family {f}")),
    };
    let proto = r.u8()?;
    let mut keys = [None, None];
    for k in &mut keys {
        let (src, dst) = (r.addr(v4)?, r.addr(v4)?);
        let (sp, dp) = (r.u16()?, r.u16()?);
        *k = FlowKey::new(src, sp, dst, dp, proto);
    }
    let [Some(forward), Some(reverse)] = keys else {
        return Err(format!("flow {id}: keys of two families"));
    };
    let (mode, gue) = (r.u8()?, r.u16()?);
    let mode = match mode {
        0 => Mode::Nat,
        1 => Mode::Dnat,
        2 => Mode::Dsr(Encap::IpIp),
        3 => Mode::Dsr(Encap::Gue { port: gue }),
        m => return Err(format!("flow {id}: mode {m}")),
    };
    let state = match r.u8()? {
        0 => FlowState::SynSent,
        1 => FlowState::SynReceived,
        2 => FlowState::Established,
        3 => FlowState::Closing,
        4 => FlowState::Datagram,
        s => return Err(format!("flow {id}: state {s}")),
    };
    let expires_ns = r.u64()?;
    let flow =
        Flow { forward, reverse, endpoint: 0, mode, service: 0, checked: 0, state, expires_ns };
    Ok((id, flow))
}

fn decode_flows(body: &[u8]) -> Result<Frame, String> {
    let mut r = Reader(body);
    let worker = usize::from(r.u16()?);
    let n = usize::try_from(r.u32()?).map_err(|_| "flow count")?;
    let g = usize::try_from(r.u32()?).map_err(|_| "id count")?;
    if n.saturating_mul(RECORD_BYTES).saturating_add(g.saturating_mul(4)) != r.0.len() {
        return Err(format!("a flows frame of {} bytes for {n} flows and {g} ids", body.len()));
    }
    let mut flows = Vec::with_capacity(n);
    for _ in 0..n {
        flows.push(decode_flow(&mut r)?);
    }
    let mut gone = Vec::with_capacity(g);
    for _ in 0..g {
        gone.push(r.u32()?);
    }
    Ok(Frame::Flows { worker, flows, gone })
}

/// What must not differ between the running configuration and the one taking over, or why
/// it does.
fn compatible(
    cfg: &Config,
    workers: usize,
    ports: &serde_json::Value,
    snat_ports: (u16, u16),
) -> Result<(), String> {
    if workers != cfg.workers.len() {
        return Err(format!(
            "{workers} workers against {} running: each worker's queues and flows go to the \
             worker of the same number",
            cfg.workers.len()
        ));
    }
    if serde_json::to_value(&cfg.ports).ok().as_ref() != Some(ports) {
        return Err("`ports` differs from the running configuration: the queues handed over \
                    are those ports'"
            .into());
    }
    // DPDK devices a new process can open again and find as they were; a net_tap's TAP
    // interface, say, goes away with the port, and its addresses and namespace with it.
    let reopenable = |p: &crate::config::PortConfig| {
        p.backend != crate::config::Backend::Dpdk
            || p.is_pci()
            || p.device
                .as_deref()
                .is_some_and(|d| d.starts_with("net_af_packet") || d.starts_with("net_null"))
    };
    if let Some(p) = cfg.ports.iter().find(|p| !reopenable(p)) {
        return Err(format!(
            "port `{}` (DPDK `{}`) is not handed over: a takeover opens PCI NICs, net_af_packet \
             and net_null devices again, and this one's state goes with the port (a net_tap's \
             TAP interface, with its addresses and namespace); restart cold, or use weir's own \
             TAP ports (`backend: tap`), whose queues are handed over",
            p.name,
            p.device.as_deref().unwrap_or_default()
        ));
    }
    let running = (cfg.mesh.snat_port_first, cfg.mesh.snat_port_last);
    if snat_ports != running {
        return Err(format!(
            "mesh.snat_port_first..last {}..{} against {}..{} running: NAT flows' replies find \
             their worker by the SNAT port",
            snat_ports.0, snat_ports.1, running.0, running.1
        ));
    }
    Ok(())
}

/// What the old weir hands over besides its workers' queues.
pub struct Handing {
    /// The admin listener.
    pub admin: Option<OwnedFd>,
    /// The handover socket's listener, for the next restart.
    pub listener: OwnedFd,
    /// The xDS client's session and its bootstrap, when xDS is configured.
    pub xds: Option<(
        std::sync::Arc<std::sync::Mutex<crate::xds::client::Session>>,
        crate::config::XdsConfig,
    )>,
}

impl Handing {
    /// The xDS session's count of changes (cheap: nothing is copied).
    fn xds_changes(&self) -> Option<u64> {
        let (session, _) = self.xds.as_ref()?;
        Some(session.lock().unwrap_or_else(std::sync::PoisonError::into_inner).changes())
    }

    /// The xDS session as it stands, and its count of changes.
    fn xds_session(&self) -> Option<(crate::xds::client::CarriedSession, u64)> {
        let (session, bootstrap) = self.xds.as_ref()?;
        let s = session.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Some((s.carry(bootstrap), s.changes()))
    }
}

/// The old side: answers a new weir on `stream` and hands everything over. Returns the new
/// weir's pid once it has taken over (this weir then stops without closing anything the new
/// one uses); on any failure the workers forward again where they stopped, and the error
/// says why.
pub fn give(
    stream: UnixStream,
    running: &crate::run::Running,
    cfg: &Config,
    handing: &Handing,
) -> Result<u32> {
    let timeout = cfg.handover.as_ref().map_or(30_000, |h| h.timeout_ms);
    // The socket is its owner's only; should its mode be widened, another user's process
    // still gets nothing (it would receive the dataplane's sockets).
    let peer = rustix::net::sockopt::socket_peercred(&stream).context("the peer's credentials")?;
    let me = rustix::process::geteuid();
    let mut ch = Channel::new(stream, Duration::from_millis(timeout));
    if peer.uid != me && !peer.uid.is_root() {
        let reason = format!(
            "a takeover by uid {} refused: this weir runs as uid {}",
            peer.uid.as_raw(),
            me.as_raw()
        );
        let _ = ch.send(&Message::Refuse { reason: reason.clone() });
        bail!("{reason}");
    }
    let (kind, body) = ch.recv_frame().context("reading the new weir's hello")?;
    let hello: serde_json::Value = serde_json::from_slice(&body)
        .ok()
        .filter(|_| kind == FRAME_JSON)
        .ok_or_else(|| anyhow!("the first frame is not a hello"))?;
    let version = hello.get("version").and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(VERSION)) {
        let reason = format!(
            "handover protocol version {} is not this weir's ({VERSION})",
            version.map_or_else(|| "(none)".to_owned(), |v| v.to_string())
        );
        let _ = ch.send(&Message::Refuse { reason: reason.clone() });
        bail!("refused a takeover: {reason}");
    }
    let Ok(Message::Hello { pid, workers, ports, snat_ports, .. }) = serde_json::from_value(hello)
    else {
        let reason = "a hello that does not parse".to_owned();
        let _ = ch.send(&Message::Refuse { reason: reason.clone() });
        bail!("refused a takeover: {reason}");
    };
    if let Err(reason) = compatible(cfg, workers, &ports, snat_ports) {
        let _ = ch.send(&Message::Refuse { reason: reason.clone() });
        bail!("refused the takeover by pid {pid}: {reason}");
    }
    tracing::info!(pid, flows = running.flows(), "a new weir takes over: copying the flows");
    let xds = handing.xds_session();
    ch.send(&Message::Welcome {
        version: VERSION,
        pid: std::process::id(),
        flows: running.flows(),
        watchdog_usec: watchdog_usec(),
        xds: xds.is_some(),
        macs: running.port_macs.clone(),
        eal_file_prefix: running.eal_file_prefix(),
    })?;
    let xds_changes = match xds {
        Some((session, changes)) => {
            ch.send(&Message::Xds { session: Box::new(session) })?;
            Some(changes)
        }
        None => None,
    };
    let desks: Vec<&HandoverDesk> = running.stats.iter().map(|s| &s.handover).collect();
    let handed = hand_over(&mut ch, running, &desks, handing, xds_changes);
    if let Err(e) = &handed {
        // The successor is told (if it still listens) before the workers forward again: it
        // must not start its own on the same queues.
        ch.deadline = Instant::now() + Duration::from_secs(1);
        let _ = ch.send(&Message::Resumed);
        // DPDK ports let go for it are opened again first, once it let them go in turn (it
        // closes what it opened when it hears `resumed`, or when it goes away).
        if running.ports_let_go() {
            ch.deadline = Instant::now() + Duration::from_secs(5);
            while ch.recv_frame().is_ok() {}
        }
        drop(ch);
        if let Err(lost) = running.take_ports_back() {
            return Err(anyhow!(PortsLost(format!("{lost:#}")))
                .context(format!("takeover by pid {pid} failed ({e:#})")));
        }
        for d in &desks {
            d.ask(HandoverAsk::Resume);
        }
        // Back to forwarding before another successor may ask.
        let until = Instant::now() + Duration::from_secs(5);
        while desks.iter().any(|d| d.stage() != HandoverStage::Serving) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        tracing::warn!(pid, "takeover failed, forwarding again: {e:#}");
    }
    handed.map(|()| pid)
}

fn hand_over(
    ch: &mut Channel,
    running: &crate::run::Running,
    desks: &[&HandoverDesk],
    handing: &Handing,
    xds_changes: Option<u64>,
) -> Result<()> {
    for d in desks {
        d.ask(HandoverAsk::Copy);
    }
    pump(ch, desks, HandoverStage::Copied)?;
    // What changed during the copy goes over while the workers still forward, so that the
    // pause has only what changes during this pass left to hand out.
    for d in desks {
        d.ask(HandoverAsk::CatchUp);
    }
    pump(ch, desks, HandoverStage::CaughtUp)?;
    // What the xDS client took in during the copy, while the workers still forward.
    if handing.xds_changes() != xds_changes {
        if let Some((session, _)) = handing.xds_session() {
            ch.send(&Message::Xds { session: Box::new(session) })?;
        }
    }
    ch.send(&Message::Copied)?;
    match ch.recv().context("waiting for the cut-over")? {
        Frame::Message(Message::CutOver) => {}
        _ => bail!("expected the cut-over"),
    }
    let paused_at = Instant::now();
    ch.deadline = ch.deadline.min(paused_at + CUT_OVER_MAX);
    for d in desks {
        d.ask(HandoverAsk::Pause);
    }
    let (queues, neighbors) = pump(ch, desks, HandoverStage::Paused)?;
    let mut handed = Vec::new();
    let mut fds = Vec::new();
    for (w, qs) in queues.into_iter().enumerate() {
        let mut mine = Vec::new();
        for (p, q) in qs.into_iter().enumerate() {
            let q =
                q.ok_or_else(|| anyhow!("worker {w}'s queue of port {p} cannot be handed over"))?;
            mine.push(HandedQueue {
                position: q.position.into(),
                stats: q.stats.values().map(|(i, v)| (i.name.to_owned(), v)).collect(),
            });
            fds.extend(q.fd);
        }
        handed.push(mine);
    }
    let locks = running.claim_fds();
    let tallies = (0..desks.len()).map(|w| tally(running, w)).collect();
    ch.send(&Message::Queues {
        queues: handed,
        locks: locks.len(),
        admin: handing.admin.is_some(),
        tallies,
        neighbors,
        health: running.carried_health(),
    })?;
    let mut all: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
    all.extend(locks);
    all.extend(handing.admin.as_ref().map(AsFd::as_fd));
    all.push(handing.listener.as_fd());
    ch.send_fds(&all)?;
    // DPDK ports cannot be open in two processes: the new weir opens them once these are
    // closed, which is the gap in forwarding a DPDK takeover has.
    let (ports, took) = running.let_ports_go()?;
    if ports > 0 {
        let ms = format!("{:.1}", took.as_secs_f64() * 1000.0);
        tracing::info!(ports, ms, "DPDK ports let go");
        // The new weir probes and starts them before it can answer: the device's time, not
        // the pause's bound.
        ch.deadline = Instant::now() + ch.timeout;
    }
    ch.send(&Message::Paused)?;
    match ch.recv().context("waiting for the new weir to take over")? {
        Frame::Message(Message::Took { cut_over_us }) => {
            // The commit: from here on this weir never forwards again.
            ch.send(&Message::Done)?;
            tracing::info!(
                cut_over_us,
                paused_ms = paused_at.elapsed().as_millis(),
                "the new weir took over"
            );
        }
        _ => bail!("expected `took`"),
    }
    // Until the new weir runs and told systemd it is the main process (or goes away): an exit
    // before would look like the service's end.
    ch.deadline = Instant::now() + Duration::from_secs(2);
    let _ = ch.recv();
    Ok(())
}

/// Each worker's queues (by port) and learned neighbors, as its last page gave them.
type Paused = (Vec<Vec<Option<dataplane::io::QueueHandover>>>, Vec<Vec<(IpAddr, [u8; 6], u8)>>);

/// Takes the workers' pages and sends them until every worker has reached `stage`; returns
/// what each worker's last page held besides flows.
fn pump(ch: &mut Channel, desks: &[&HandoverDesk], stage: HandoverStage) -> Result<Paused> {
    let mut page = HandoverPage::new();
    let mut done = vec![false; desks.len()];
    let mut queues: Vec<_> = desks.iter().map(|_| Vec::new()).collect();
    let mut neighbors: Vec<_> = desks.iter().map(|_| Vec::new()).collect();
    while done.iter().any(|d| !d) {
        let mut took = false;
        for (w, d) in desks.iter().enumerate() {
            if done[w] {
                continue;
            }
            let Some(reached) = d.take(&mut page) else { continue };
            took = true;
            if !page.flows.is_empty() || !page.gone.is_empty() {
                ch.send_flows(w, &page)?;
            }
            if reached >= stage {
                done[w] = true;
                queues[w] = std::mem::take(&mut page.queues);
                neighbors[w] =
                    page.neighbors.drain(..).map(|(ip, mac, port, _)| (ip, mac, port)).collect();
            }
        }
        if !took {
            if Instant::now() >= ch.deadline {
                bail!("the workers did not hand out their flows within handover.timeout_ms");
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    Ok((queues, neighbors))
}

/// A takeover failed after this weir let its DPDK ports go, and they could not be opened
/// again: its workers have nothing to poll, and it must stop (to be started cold).
#[derive(Debug)]
pub struct PortsLost(pub String);

impl std::fmt::Display for PortsLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the DPDK ports let go could not be taken back: {}", self.0)
    }
}

impl std::error::Error for PortsLost {}

/// Why a takeover did not happen.
#[derive(Debug)]
pub enum TakeoverError {
    /// The running weir went away (or stopped answering) before it handed its queues over:
    /// start cold.
    OldGone(String),
    /// Anything else: this weir stops, the running one goes on forwarding.
    Failed(anyhow::Error),
}

impl std::fmt::Display for TakeoverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TakeoverError::OldGone(why) => write!(f, "the running weir went away: {why}"),
            TakeoverError::Failed(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for TakeoverError {}

impl From<anyhow::Error> for TakeoverError {
    fn from(e: anyhow::Error) -> Self {
        TakeoverError::Failed(e)
    }
}

/// An error on the socket: the old weir gone if it closed it, failed otherwise.
fn on_socket(e: std::io::Error, doing: &str) -> TakeoverError {
    if is_gone(&e)
        || matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
    {
        TakeoverError::OldGone(format!("{doing}: {e}"))
    } else {
        TakeoverError::Failed(anyhow!("{doing}: {e}"))
    }
}

/// One queue as the new weir receives it.
pub struct ReceivedQueue {
    /// Its descriptor (none for a port opened again: DPDK's).
    pub fd: Option<OwnedFd>,
    /// Where the old worker stopped.
    pub position: QueuePosition,
    /// Its counters so far.
    pub stats: PortStats,
}

/// The new side of a takeover, from the old weir's welcome to `took`.
pub struct Taker {
    ch: Channel,
    /// The old weir's pid.
    pub old_pid: u32,
    /// By worker: the old table's ids to the new table's, and back.
    ids: Vec<(HashMap<u32, u32>, HashMap<u32, u32>)>,
    /// The watchdog systemd expects of the service, microseconds (from the old weir).
    pub watchdog_usec: Option<u64>,
    cut_over: Option<Instant>,
    /// Flows taken over, and flows that could not be (the new table was full).
    pub carried: u64,
    /// Flows that could not be taken over (the new table was full).
    pub refused: u64,
    /// The interface locks, the admin listener and the handover listener, once received.
    pub locks: Vec<OwnedFd>,
    /// The admin listener.
    pub admin: Option<OwnedFd>,
    /// The handover socket's listener.
    pub listener: Option<OwnedFd>,
    /// The old workers' counters, by worker.
    pub tallies: Vec<WorkerTally>,
    /// The neighbors the old workers learned, by worker.
    pub neighbors: Vec<Vec<(IpAddr, [u8; 6], u8)>>,
    /// The old weir's passive health of its endpoints.
    pub health: Vec<crate::run::CarriedHealth>,
    /// Each port's MAC as the old weir has it, by port number.
    pub macs: Vec<[u8; 6]>,
    /// The old weir's EAL runtime file prefix, if one is configured.
    pub eal_file_prefix: Option<String>,
    /// The old weir's xDS session as it was when the takeover began.
    pub xds: Option<crate::xds::client::CarriedSession>,
    /// Its xDS session as the cut-over found it, if it changed during the copy.
    pub xds_update: Option<crate::xds::client::CarriedSession>,
}

impl Taker {
    /// Looks for a running weir on `cfg`'s handover socket and asks it to hand over. `None`
    /// when none listens there (nothing to take over: start as usual); an error when one
    /// refuses.
    pub fn connect(cfg: &Config) -> Result<Option<Taker>> {
        let Some(h) = &cfg.handover else { return Ok(None) };
        let stream = match UnixStream::connect(&h.socket) {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Ok(None)
            }
            Err(e) => {
                return Err(e).with_context(|| format!("handover.socket {}", h.socket.display()))
            }
        };
        let mut ch = Channel::new(stream, Duration::from_millis(h.timeout_ms));
        ch.send(&Message::Hello {
            version: VERSION,
            pid: std::process::id(),
            workers: cfg.workers.len(),
            ports: serde_json::to_value(&cfg.ports)?,
            snat_ports: (cfg.mesh.snat_port_first, cfg.mesh.snat_port_last),
        })?;
        let welcome = match ch.recv() {
            Ok(f) => f,
            Err(e) if is_gone(&e) => {
                tracing::warn!(
                    "the weir on handover.socket {} went away before answering ({e}): \
                     starting cold",
                    h.socket.display()
                );
                return Ok(None);
            }
            Err(e) => return Err(e).context("waiting for the running weir's welcome"),
        };
        match welcome {
            Frame::Message(Message::Welcome {
                pid,
                flows,
                watchdog_usec,
                xds,
                macs,
                eal_file_prefix,
                ..
            }) => {
                tracing::info!(pid, flows, "taking over from the running weir");
                let xds = if xds {
                    match ch.recv().context("receiving the running weir's xDS session")? {
                        Frame::Message(Message::Xds { session }) => Some(*session),
                        _ => bail!("the running weir sent something else than its xDS session"),
                    }
                } else {
                    None
                };
                Ok(Some(Taker {
                    ch,
                    old_pid: pid,
                    ids: (0..cfg.workers.len()).map(|_| Default::default()).collect(),
                    watchdog_usec,
                    cut_over: None,
                    carried: 0,
                    refused: 0,
                    locks: Vec::new(),
                    admin: None,
                    listener: None,
                    tallies: Vec::new(),
                    neighbors: Vec::new(),
                    health: Vec::new(),
                    macs,
                    eal_file_prefix,
                    xds,
                    xds_update: None,
                }))
            }
            Frame::Message(Message::Refuse { reason }) => {
                bail!("the running weir refused the takeover, and goes on forwarding: {reason}")
            }
            _ => bail!("the running weir answered the hello with something else"),
        }
    }

    /// Receives the flows into `pipelines` (one per worker, not running yet) and then, after
    /// the cut-over, the queues: `[worker][port]`. `before_cut_over` runs just before the old
    /// workers are asked to pause.
    pub fn receive<B: dataplane::buf::PacketBuf>(
        &mut self,
        pipelines: &mut [dataplane::pipeline::Pipeline<B>],
        before_cut_over: impl FnOnce(),
    ) -> Result<Vec<Vec<ReceivedQueue>>, TakeoverError> {
        let copy_began = Instant::now();
        loop {
            match self.ch.recv().map_err(|e| on_socket(e, "copying the flows"))? {
                Frame::Flows { worker, flows, gone } => {
                    self.apply(pipelines, worker, flows, &gone)?;
                }
                Frame::Message(Message::Xds { session }) => self.xds_update = Some(*session),
                Frame::Message(Message::Copied) => break,
                _ => return Err(anyhow!("unexpected message during the copy").into()),
            }
        }
        tracing::info!(
            flows = self.carried,
            ms = copy_began.elapsed().as_millis(),
            "flows copied; cutting over"
        );
        self.cut_over = Some(Instant::now());
        before_cut_over();
        self.send(&Message::CutOver, "cutting over")?;
        let (queues, locks, admin) = loop {
            match self.ch.recv().map_err(|e| on_socket(e, "cutting over"))? {
                Frame::Flows { worker, flows, gone } => {
                    self.apply(pipelines, worker, flows, &gone)?;
                }
                Frame::Message(Message::Queues {
                    queues,
                    locks,
                    admin,
                    tallies,
                    neighbors,
                    health,
                }) => {
                    self.tallies = tallies;
                    self.neighbors = neighbors;
                    self.health = health;
                    break (queues, locks, admin);
                }
                _ => return Err(anyhow!("unexpected message during the cut-over").into()),
            }
        };
        // DPDK queues come without a descriptor: the new weir opens their ports again.
        let reopened = |q: &HandedQueue| matches!(q.position, Position::Reopened);
        let count = queues.iter().flatten().filter(|q| !reopened(q)).count();
        if queues.len() != self.ids.len() || locks > MAX_LOCKS {
            return Err(anyhow!(
                "the running weir hands over {} workers' queues and {locks} locks",
                queues.len()
            )
            .into());
        }
        let mut fds = self
            .ch
            .recv_fds(count + locks + usize::from(admin) + 1)
            .map_err(|e| on_socket(e, "receiving the descriptors"))?
            .into_iter();
        let mut out = Vec::new();
        for qs in queues {
            let mut mine = Vec::new();
            for q in qs {
                let fd_follows = !reopened(&q);
                let mut stats = PortStats::default();
                for (name, v) in q.stats {
                    stats.set(&name, v);
                }
                let fd = if !fd_follows {
                    None
                } else {
                    Some(fds.next().ok_or_else(|| anyhow!("a queue's descriptor is missing"))?)
                };
                mine.push(ReceivedQueue { fd, position: q.position.into(), stats });
            }
            out.push(mine);
        }
        self.locks = fds.by_ref().take(locks).collect();
        self.admin = if admin { fds.next() } else { None };
        self.listener = fds.next();
        match self.ch.recv().map_err(|e| on_socket(e, "waiting for `paused`"))? {
            Frame::Message(Message::Paused) => Ok(out),
            _ => Err(anyhow!("expected `paused`").into()),
        }
    }

    /// Puts a page of old worker `worker`'s flows into the new worker's table: each replaces
    /// what its old id held before (and any flow that holds one of its keys: the old table
    /// moved it, and says where in this page or a later one); `gone` ids' flows are removed.
    fn apply<B: dataplane::buf::PacketBuf>(
        &mut self,
        pipelines: &mut [dataplane::pipeline::Pipeline<B>],
        worker: usize,
        flows: Vec<(u32, Flow)>,
        gone: &[u32],
    ) -> Result<()> {
        let (Some(p), Some((to_new, to_old))) =
            (pipelines.get_mut(worker), self.ids.get_mut(worker))
        else {
            bail!("flows of worker {worker}, which this weir does not have");
        };
        let Some(engine) = p.mesh_mut() else { return Ok(()) };
        // Removes the flow at new id `new` and its mapping.
        fn forget(
            engine: &mut dataplane::mesh::engine::MeshEngine,
            (to_new, to_old): (&mut HashMap<u32, u32>, &mut HashMap<u32, u32>),
            new: u32,
            carried: &mut u64,
        ) {
            if let Some(old) = to_old.remove(&new) {
                to_new.remove(&old);
            }
            engine.forget(new);
            *carried = carried.saturating_sub(1);
        }
        for old in gone.iter().copied().chain(flows.iter().map(|(id, _)| *id)) {
            if let Some(new) = to_new.get(&old).copied() {
                forget(engine, (to_new, to_old), new, &mut self.carried);
            }
        }
        for (old, flow) in flows {
            for key in [flow.forward, flow.reverse] {
                if let Some(new) = engine.flow_id(&key) {
                    forget(engine, (to_new, to_old), new, &mut self.carried);
                }
            }
            match engine.import(flow, 0) {
                Ok(new) => {
                    to_new.insert(old, new);
                    to_old.insert(new, old);
                    self.carried += 1;
                }
                Err(_) => self.refused += 1,
            }
        }
        Ok(())
    }

    /// Asks the old weir to commit: after this returns `Ok`, it will never forward again and
    /// the new workers may start. Returns the time from the cut-over to now.
    pub fn took(&mut self) -> Result<Duration, TakeoverError> {
        let cut = self.cut_over.map_or(Duration::ZERO, |t| t.elapsed());
        let cut_over_us = u64::try_from(cut.as_micros()).unwrap_or(u64::MAX);
        if let Err(e) = self.send(&Message::Took { cut_over_us }, "committing") {
            // The old weir may have given up (and said so) before it closed the socket.
            if let Ok(Frame::Message(Message::Resumed)) = self.ch.recv() {
                return Err(
                    anyhow!("the running weir gave up the takeover and forwards again").into()
                );
            }
            return Err(e);
        }
        match self.ch.recv() {
            Ok(Frame::Message(Message::Done)) => Ok(cut),
            Ok(Frame::Message(Message::Resumed)) => {
                Err(anyhow!("the running weir gave up the takeover and forwards again").into())
            }
            Ok(_) => Err(anyhow!("expected `done`").into()),
            // Gone without a word after `paused`: it died, and forwards nothing. Go on.
            Err(e) if is_gone(&e) => Ok(cut),
            Err(e) => Err(anyhow!("committing: {e}").into()),
        }
    }

    /// Time since the cut-over began.
    pub fn cut_over_elapsed(&self) -> Duration {
        self.cut_over.map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// Tells the old weir the new workers run (and systemd knows): it may exit.
    pub fn running(&mut self) {
        let _ = self.ch.send(&Message::Running);
    }

    /// Sends `m`; a socket the old weir closed means it went away.
    fn send(&mut self, m: &Message, doing: &str) -> Result<(), TakeoverError> {
        self.ch.send(m).map_err(|e| match e.downcast::<std::io::Error>() {
            Ok(io) => on_socket(io, doing),
            Err(e) => TakeoverError::Failed(e.context(doing.to_owned())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str, sp: u16, d: &str, dp: u16, proto: u8) -> FlowKey {
        FlowKey::new(s.parse().unwrap(), sp, d.parse().unwrap(), dp, proto).unwrap()
    }

    #[test]
    fn flow_records_round_trip_and_bad_ones_are_refused() {
        let flows = [
            Flow {
                forward: key("198.18.0.2", 40000, "198.18.100.1", 80, 6),
                reverse: key("198.18.1.2", 8080, "198.18.1.1", 20001, 6),
                endpoint: 7,
                mode: Mode::Nat,
                service: 3,
                checked: 9,
                state: FlowState::Established,
                expires_ns: 3_599_000_000_000,
            },
            Flow {
                forward: key("2001:db8::2", 5000, "2001:db8:100::1", 53, 17),
                reverse: key("2001:db8:1::2", 53, "2001:db8::2", 5000, 17),
                endpoint: 1,
                mode: Mode::Dsr(Encap::Gue { port: 6080 }),
                service: 0,
                checked: 0,
                state: FlowState::Datagram,
                expires_ns: 12,
            },
        ];
        let mut page = HandoverPage::new();
        page.flows = vec![(5, flows[0]), (70_000, flows[1])];
        page.gone = vec![1, 2, 3];
        let mut body = Vec::new();
        body.extend_from_slice(&3u16.to_le_bytes());
        body.extend_from_slice(&2u32.to_le_bytes());
        body.extend_from_slice(&3u32.to_le_bytes());
        for (id, f) in &page.flows {
            encode_flow(&mut body, *id, f);
        }
        for id in &page.gone {
            body.extend_from_slice(&id.to_le_bytes());
        }
        assert_eq!(body.len(), 10 + 2 * RECORD_BYTES + 12);
        let Ok(Frame::Flows { worker, flows: got, gone }) = decode_flows(&body) else {
            panic!("does not decode");
        };
        assert_eq!((worker, gone), (3, vec![1, 2, 3]));
        // Ids of endpoints, services and generations are each process's own: not carried.
        for ((id, f), (want_id, want)) in got.iter().zip(&page.flows) {
            assert_eq!(id, want_id);
            assert_eq!((f.forward, f.reverse, f.mode), (want.forward, want.reverse, want.mode));
            assert_eq!((f.state, f.expires_ns), (want.state, want.expires_ns));
        }
        // Cut short, a byte too many, an unknown mode: refused, never a panic.
        assert!(decode_flows(&body[..body.len() - 1]).is_err());
        let mut longer = body.clone();
        longer.push(0);
        assert!(decode_flows(&longer).is_err());
        let mut bad = body.clone();
        bad[10 + 4 + 2 + 72] = 9;
        assert!(decode_flows(&bad).is_err());
        for n in 0..body.len() {
            let _ = decode_flows(&body[..n]);
        }
    }
}
