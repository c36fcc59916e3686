//! Start-up: each backend's queues and buffers, the FIB and the pinned workers.

use super::{Buffers, Running};
use crate::config::{Backend, Config, IdlePolicyName, TxModeName};
use crate::translate::{mesh_engine, mesh_snapshot, mesh_snapshot_with, outlier_detector};
use anyhow::{bail, Context, Result};
use dataplane::fib::{Fib, PortAddrs, StaticRoute};
use dataplane::io::afpacket::{AfPacketConfig, AfPacketPort, TxMode};
use dataplane::io::tap::{create_tap, TapConfig, TapQueue};
use dataplane::io::{PacketIo, PortStats};
use dataplane::mempool::{Mempool, MempoolConfig, PoolBuf, PoolCache};
use dataplane::mesh::engine::SharedMesh;
use dataplane::mesh::health::OutlierDetector;
use dataplane::neigh::{NeighborBus, NeighborTimers};
use dataplane::pipeline::{Pipeline, PipelineConfig};
use dataplane::ring::HandoffRing;
use dataplane::worker::{BufSource, IdlePolicy, StopSignal, Worker, WorkerStats};
use ipnet::IpNet;
use std::any::Any;
use std::net::IpAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

/// One queue of one port, of either native backend.
pub enum NativeQueue {
    /// af_packet.
    AfPacket(AfPacketPort),
    /// TAP.
    Tap(TapQueue),
}

impl PacketIo for NativeQueue {
    type Buf = PoolBuf;

    #[inline]
    fn rx_burst(&mut self, batch: &mut dataplane::buf::Batch<PoolBuf>) -> usize {
        match self {
            NativeQueue::AfPacket(p) => p.rx_burst(batch),
            NativeQueue::Tap(p) => p.rx_burst(batch),
        }
    }

    #[inline]
    fn tx_burst(&mut self, batch: &mut dataplane::buf::Batch<PoolBuf>) -> usize {
        match self {
            NativeQueue::AfPacket(p) => p.tx_burst(batch),
            NativeQueue::Tap(p) => p.tx_burst(batch),
        }
    }

    fn poll_fd(&self) -> Option<std::os::fd::RawFd> {
        match self {
            NativeQueue::AfPacket(p) => p.poll_fd(),
            NativeQueue::Tap(p) => p.poll_fd(),
        }
    }

    fn stats(&self) -> PortStats {
        match self {
            NativeQueue::AfPacket(p) => p.stats(),
            NativeQueue::Tap(p) => p.stats(),
        }
    }

    fn check_link(&mut self) -> Option<dataplane::io::LinkEvent> {
        match self {
            NativeQueue::AfPacket(p) => p.check_link(),
            NativeQueue::Tap(p) => p.check_link(),
        }
    }

    fn link_up(&self) -> bool {
        match self {
            NativeQueue::AfPacket(p) => p.link_up(),
            NativeQueue::Tap(p) => p.link_up(),
        }
    }

    fn handover(&self) -> Option<dataplane::io::QueueHandover> {
        match self {
            NativeQueue::AfPacket(p) => p.handover(),
            NativeQueue::Tap(p) => p.handover(),
        }
    }
}

/// Starts the workers. Returns once every queue is open and every worker is running. Refuses
/// to start on an interface another weir holds (see [`crate::claim`]).
pub fn start(cfg: &Config) -> Result<Running> {
    start_within(cfg, std::time::Duration::ZERO)
}

/// [`start`], waiting up to `patience` for interfaces another weir holds to be let go: the
/// weir a takeover failed against has just died, and the kernel is closing its files.
pub fn start_within(cfg: &Config, patience: std::time::Duration) -> Result<Running> {
    let deadline = std::time::Instant::now() + patience;
    let claims = loop {
        match crate::claim::claim(&crate::config::host_interfaces(cfg)) {
            Ok(c) => break c,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!("{e:#}: trying again");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    };
    let mut running = match cfg.ports.first().map(|p| p.backend) {
        Some(Backend::Dpdk) => start_dpdk(cfg),
        _ => start_native(cfg),
    }?;
    running.claims = Some(claims);
    Ok(running)
}

/// The af_packet settings of port `i` of `cfg` on `iface`, for `workers` workers whose fanout
/// groups are numbered from `fanout_base`.
fn af_packet_config(cfg: &Config, i: usize, iface: &str, fanout_base: u16) -> AfPacketConfig {
    let a = &cfg.ports[i].af_packet;
    AfPacketConfig {
        iface: iface.to_owned(),
        block_size: a.block_bytes,
        block_count: a.blocks,
        block_timeout_ms: a.block_timeout_ms,
        tx_frames: a.tx_frames,
        tx_mode: match a.tx_mode {
            TxModeName::Ring => TxMode::Ring,
            TxModeName::Sendmmsg => TxMode::Sendmmsg,
        },
        fanout: (cfg.workers.len() > 1)
            .then(|| fanout_base.wrapping_add(u16::try_from(i).unwrap_or(0))),
        qdisc_bypass: a.qdisc_bypass,
        promiscuous: a.promiscuous,
    }
}

/// The MAC of TAP port `i` when the configuration gives none (locally administered).
fn tap_mac(i: u8) -> [u8; 6] {
    [0x02, 0x77, 0x65, 0x69, 0x72, i]
}

/// A running dataplane of native ports over `pool`; its outlier detection as `outliers` left
/// it, or blank.
fn native_running(
    cfg: &Config,
    spawned: Spawned,
    pool: &'static Mempool,
    claims: Option<crate::claim::InterfaceClaims>,
    outliers: Option<OutlierDetector>,
    macs: Vec<[u8; 6]>,
) -> Running {
    Running {
        stop: spawned.stop,
        threads: std::sync::Mutex::new(spawned.threads),
        stats: spawned.stats,
        port_names: cfg.ports.iter().map(|p| p.name.clone()).collect(),
        buffers: Buffers::Native(pool),
        outliers: std::sync::Mutex::new(
            outliers.unwrap_or_else(|| outlier_detector(cfg, &spawned.mesh.load())),
        ),
        mesh: spawned.mesh,
        claims,
        #[cfg(feature = "dpdk")]
        dpdk_ports: std::sync::Mutex::new(None),
        port_macs: macs,
    }
}

fn native_pool(cfg: &Config) -> Result<&'static Mempool> {
    Mempool::new(MempoolConfig {
        buffers: cfg.mempool.buffers,
        data_room: cfg.mempool.buffer_bytes,
        headroom: cfg.mempool.headroom_bytes,
    })
    .context("mempool")
}

fn start_native(cfg: &Config) -> Result<Running> {
    let workers = cfg.workers.len();
    let pool = native_pool(cfg)?;

    // Open every port's queues: queues[port][worker].
    let mut queues: Vec<Vec<NativeQueue>> = Vec::new();
    let mut macs = Vec::new();
    let fanout_base = u16::try_from(std::process::id() & 0x7fff).unwrap_or(1);
    for (i, p) in cfg.ports.iter().enumerate() {
        let iface = p.interface.clone().unwrap_or_else(|| p.name.clone());
        let (qs, mac) = match p.backend {
            Backend::AfPacket => {
                let mut qs = Vec::new();
                for _ in 0..workers {
                    let ac = af_packet_config(cfg, i, &iface, fanout_base);
                    let q = AfPacketPort::open(&ac, pool)
                        .with_context(|| format!("port `{}`: af_packet on `{iface}`", p.name))?;
                    qs.push(NativeQueue::AfPacket(q));
                }
                let mac = match (p.mac, qs.first()) {
                    (Some(m), _) => m,
                    (None, Some(NativeQueue::AfPacket(q))) => q.mac(),
                    (None, _) => {
                        bail!("port `{}`: no queue to read the MAC of `{iface}` from", p.name)
                    }
                };
                (qs, mac)
            }
            Backend::Tap => {
                let tc = TapConfig {
                    name: iface.clone(),
                    queues: u16::try_from(workers).context("too many workers")?,
                };
                let qs = create_tap(&tc, pool)
                    .with_context(|| format!("port `{}`: creating TAP `{iface}`", p.name))?;
                let idx = u8::try_from(i).unwrap_or(0);
                let mac = p.mac.unwrap_or_else(|| tap_mac(idx));
                (qs.into_iter().map(NativeQueue::Tap).collect(), mac)
            }
            Backend::Dpdk => bail!("port `{}`: DPDK and native ports cannot be mixed", p.name),
        };
        queues.push(qs);
        macs.push(mac);
    }
    let spawned = prepare_workers(cfg, &macs)?
        .spawn(cfg, queues, move |_| Ok((PoolCache::new(pool), Box::new(()) as Box<dyn Any>)))?;
    Ok(native_running(cfg, spawned, pool, None, None, macs))
}

/// Starts by taking over from the running weir `taker` speaks to: the flows it copies go into
/// the new workers' tables before they start, and the queues it hands over are where the new
/// workers go on from: its af_packet sockets and TAP queues, or, for DPDK ports (which cannot
/// be open in two processes), the same devices opened again once it let them go. The interface
/// locks come with them. Returns once the new workers run and the old weir was told.
pub fn start_taking_over(
    cfg: &Config,
    taker: &mut crate::handover::Taker,
) -> Result<Running, crate::handover::TakeoverError> {
    match cfg.ports.first().map(|p| p.backend) {
        Some(Backend::Dpdk) => start_taking_over_dpdk(cfg, taker),
        _ => start_taking_over_native(cfg, taker),
    }
}

/// What the old weir carried besides its flows and queues, put into `prepared` before its
/// workers start: the neighbors it learned (no next hop is resolved again, no frame waits on
/// one), the counters (worker, drop, service and loop counters go on from the old ones), and
/// its endpoints' passive health. Returns the outlier detection as the old weir left it.
fn carry_over<B: dataplane::buf::PacketBuf>(
    cfg: &Config,
    taker: &crate::handover::Taker,
    prepared: &mut Prepared<B>,
) -> Result<OutlierDetector> {
    for (p, ns) in prepared.pipelines.iter_mut().zip(&taker.neighbors) {
        for &(ip, mac, port) in ns {
            p.learn_neighbor(ip, mac, port);
        }
    }
    let snap = prepared.mesh.load();
    for (w, t) in taker.tallies.iter().enumerate() {
        let Some(p) = prepared.pipelines.get_mut(w) else { continue };
        let of = |m: &std::collections::BTreeMap<String, u64>, k: &str| m.get(k).copied();
        dataplane::worker::carry_counters(
            p,
            |name| of(&t.counters, name).unwrap_or(0),
            |r| of(&t.drops, r.as_str()).unwrap_or(0),
        );
        let Some(share) = prepared.mesh.workers.get(w) else { continue };
        for s in &t.services {
            let Some((_, svc)) = snap.service(s.vip, s.port, s.proto) else { continue };
            let Some(c) = share.services.get(usize::try_from(svc.id).unwrap_or(usize::MAX)) else {
                continue;
            };
            let mut v = dataplane::mesh::engine::ServiceTotals::default();
            for (name, n) in &s.counters {
                v.set(name, *n);
            }
            c.publish(&v);
        }
    }
    prepared.carried_loops = taker.tallies.iter().map(|t| t.counters.clone()).collect();
    // Ejected endpoints stay ejected for what was left of their time, and take no new flows
    // from the first packet.
    let mut outliers = outlier_detector(cfg, &snap);
    let ejected = super::restore_health(&taker.health, &snap, &mut outliers, &prepared.mesh.health);
    if ejected > 0 {
        let without = mesh_snapshot_with(cfg, Some(&snap), |id| !outliers.is_ejected(id))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        prepared.mesh.store(without);
        tracing::info!(ejected, "endpoints ejected by the running weir stay ejected");
    }
    Ok(outliers)
}

/// The queues the old weir handed over (`[worker][port]`), by port, then worker.
fn queues_by_port(
    cfg: &Config,
    received: Vec<Vec<crate::handover::ReceivedQueue>>,
) -> Result<Vec<Vec<crate::handover::ReceivedQueue>>> {
    let mut by_port: Vec<Vec<crate::handover::ReceivedQueue>> =
        cfg.ports.iter().map(|_| Vec::new()).collect();
    for qs in received {
        if qs.len() != by_port.len() {
            bail!("a worker's queues do not match the ports");
        }
        for (p, q) in qs.into_iter().enumerate() {
            by_port[p].push(q);
        }
    }
    for (p, qs) in cfg.ports.iter().zip(&by_port) {
        if qs.len() != cfg.workers.len() {
            bail!("port `{}`: a queue per worker is missing", p.name);
        }
    }
    Ok(by_port)
}

/// Once the new workers run: systemd and the old weir are told, and the log says so.
fn took_over(taker: &mut crate::handover::Taker, ports_reopened: Option<std::time::Duration>) {
    let cut = taker.cut_over_elapsed();
    // Under systemd this process is the service's main one from now on, and says so before
    // the old one exits (the unit needs `NotifyAccess=all`).
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::MainPid(std::process::id())])
    {
        tracing::warn!("telling systemd: {e}");
    }
    taker.running();
    let ms = |d: std::time::Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    tracing::info!(
        from_pid = taker.old_pid,
        flows = taker.carried,
        flows_not_taken = taker.refused,
        cut_over_ms = ms(cut),
        dpdk_ports_reopened_ms = ports_reopened.map(ms),
        "took over: the old weir's flows and queues are this one's"
    );
}

fn start_taking_over_native(
    cfg: &Config,
    taker: &mut crate::handover::Taker,
) -> Result<Running, crate::handover::TakeoverError> {
    use dataplane::io::tap::adopt_tap;
    let pool = native_pool(cfg)?;
    let mut macs = Vec::new();
    for (i, p) in cfg.ports.iter().enumerate() {
        let iface = p.interface.clone().unwrap_or_else(|| p.name.clone());
        let mac = match (p.mac, p.backend) {
            (Some(m), _) => m,
            (None, Backend::AfPacket) => dataplane::io::sys::if_mac(&iface)
                .with_context(|| format!("port `{}`: the MAC of `{iface}`", p.name))?,
            (None, _) => tap_mac(u8::try_from(i).unwrap_or(0)),
        };
        macs.push(mac);
    }
    let mut prepared = prepare_workers::<PoolBuf>(cfg, &macs)?;
    let received = taker.receive(&mut prepared.pipelines, || {})?;
    let outliers = carry_over(cfg, taker, &mut prepared)?;
    let mut queues: Vec<Vec<NativeQueue>> = Vec::new();
    for (i, (p, qs)) in cfg.ports.iter().zip(queues_by_port(cfg, received)?).enumerate() {
        let iface = p.interface.clone().unwrap_or_else(|| p.name.clone());
        let fd = |q: crate::handover::ReceivedQueue| {
            q.fd.map(|fd| (fd, q.position, q.stats)).ok_or_else(|| {
                std::io::Error::other("a queue came without its descriptor: not a native port")
            })
        };
        let opened = match p.backend {
            Backend::AfPacket => {
                let ac = af_packet_config(cfg, i, &iface, 0);
                qs.into_iter()
                    .map(|q| {
                        let (fd, position, stats) = fd(q)?;
                        AfPacketPort::adopt(&ac, pool, fd, position, stats)
                            .map(NativeQueue::AfPacket)
                    })
                    .collect::<std::io::Result<Vec<_>>>()
            }
            Backend::Tap => qs
                .into_iter()
                .map(|q| fd(q).map(|(fd, _, stats)| (fd, stats)))
                .collect::<std::io::Result<Vec<_>>>()
                .and_then(|fds| adopt_tap(fds, pool))
                .map(|v| v.into_iter().map(NativeQueue::Tap).collect()),
            Backend::Dpdk => {
                return Err(anyhow::anyhow!(
                    "port `{}`: DPDK and native ports cannot be mixed",
                    p.name
                )
                .into())
            }
        };
        queues.push(opened.with_context(|| format!("port `{}`: taking over", p.name))?);
    }
    // The commit: once this returns, the old weir will not forward again.
    taker.took()?;
    let claims = crate::claim::InterfaceClaims::adopt(std::mem::take(&mut taker.locks));
    let spawned = prepared
        .spawn(cfg, queues, move |_| Ok((PoolCache::new(pool), Box::new(()) as Box<dyn Any>)))?;
    took_over(taker, None);
    Ok(native_running(cfg, spawned, pool, Some(claims), Some(outliers), macs))
}

#[cfg(not(feature = "dpdk"))]
fn start_taking_over_dpdk(
    cfg: &Config,
    _taker: &mut crate::handover::Taker,
) -> Result<Running, crate::handover::TakeoverError> {
    Err(start_dpdk(cfg).err().unwrap_or_else(|| anyhow::anyhow!("no DPDK")).into())
}

/// A takeover on DPDK ports: the EAL and the mbuf pool come up beside the old weir's while it
/// still forwards (its EAL probing no device), and so do the `net_af_packet` ports; the flows
/// and the rest come over as for native ports; in the cut-over the old weir closes its other
/// ports and removes their devices, and this one probes and opens them again. That is the gap
/// a DPDK takeover has on such ports: from the old workers' pause to the new ones' first burst,
/// frames are not received (those in the old ports' receive queues are dropped with them). On
/// any error the ports this weir opened are let go again (the old weir takes them back, or
/// this one opens them again to start cold).
#[cfg(feature = "dpdk")]
fn start_taking_over_dpdk(
    cfg: &Config,
    taker: &mut crate::handover::Taker,
) -> Result<Running, crate::handover::TakeoverError> {
    let prefix = cfg
        .eal
        .file_prefix
        .as_deref()
        .map(|p| super::dpdk::successor_prefix(p, taker.eal_file_prefix.as_deref()));
    let (eal, pool) = dpdk_eal(cfg, true, prefix.clone())?;
    let mut ports = super::dpdk::DpdkPorts::new(eal, pool, cfg, prefix)?;
    match take_over_dpdk_ports(cfg, taker, eal, pool, &mut ports) {
        Ok((spawned, outliers, macs, claims)) => {
            Ok(dpdk_running(cfg, spawned, pool, ports, Some(claims), Some(outliers), macs))
        }
        Err(e) => {
            ports.let_all_go();
            Err(e)
        }
    }
}

/// What a DPDK takeover returns: the workers, the outlier detection, the port MACs, the
/// interface locks.
#[cfg(feature = "dpdk")]
type TakenOver = (Spawned, OutlierDetector, Vec<[u8; 6]>, crate::claim::InterfaceClaims);

/// [`start_taking_over_dpdk`] once the EAL is up, over `ports`.
#[cfg(feature = "dpdk")]
fn take_over_dpdk_ports(
    cfg: &Config,
    taker: &mut crate::handover::Taker,
    eal: &'static dataplane::dpdk::Eal,
    pool: &'static dataplane::dpdk::MbufPool,
    ports: &mut super::dpdk::DpdkPorts,
) -> Result<TakenOver, crate::handover::TakeoverError> {
    use dataplane::dpdk::Mbuf;
    // Ports a process can open beside another's: now, while the old weir forwards.
    let mut early = super::dpdk::PortQueues::new();
    ports
        .open(&mut early, super::dpdk::shared_between_processes)
        .context("opening the DPDK ports that can be open beside the running weir's")?;
    let beside = early.iter().filter(|q| q.is_some()).count();
    if beside > 0 {
        tracing::info!(
            ports = beside,
            "DPDK ports opened beside the running weir's (net_af_packet: each process has its \
             own sockets on the interface)"
        );
    }
    // The old weir's MACs: the other ports are not open here yet.
    if taker.macs.len() != cfg.ports.len() {
        return Err(anyhow::anyhow!(
            "the running weir gave {} port MACs for {} ports",
            taker.macs.len(),
            cfg.ports.len()
        )
        .into());
    }
    let macs: Vec<[u8; 6]> =
        cfg.ports.iter().zip(&taker.macs).map(|(p, m)| p.mac.unwrap_or(*m)).collect();
    let mut prepared = prepare_workers::<Mbuf>(cfg, &macs)?;
    // What the ports opened beside the old weir's received up to the cut-over, the old weir
    // forwarded: dropped just before its workers are asked to pause. What they receive from
    // then on is this weir's (the few frames the old workers still take before they pause go
    // twice, rather than any being lost).
    let mut drained = 0;
    let received =
        taker.receive(&mut prepared.pipelines, || drained = super::dpdk::drain(&mut early))?;
    let outliers = carry_over(cfg, taker, &mut prepared)?;
    let by_port = queues_by_port(cfg, received)?;
    if by_port.iter().flatten().any(|q| q.position != dataplane::io::QueuePosition::Reopened) {
        return Err(
            anyhow::anyhow!("the running weir handed over queues that are not DPDK's").into()
        );
    }
    let reopening = std::time::Instant::now();
    let mut queues = early;
    ports.open(&mut queues, |_| true).context("opening the DPDK ports the running weir let go")?;
    let reopened = reopening.elapsed();
    let mut queues: Vec<Vec<dataplane::dpdk::DpdkQueue>> =
        queues.into_iter().map(Option::unwrap_or_default).collect();
    for (qs, handed) in queues.iter_mut().zip(&by_port) {
        for (q, h) in qs.iter_mut().zip(handed) {
            q.carry_stats(h.stats);
        }
    }
    tracing::debug!(drained, "frames received beside the old weir dropped");
    for ((p, got), want) in cfg.ports.iter().zip(ports.macs()).zip(&macs) {
        if got.is_some_and(|m| m != *want) {
            tracing::warn!(port = %p.name, "the port came back with another MAC than it had");
        }
    }
    // The commit: once this returns, the old weir will not forward again.
    taker.took()?;
    let claims = crate::claim::InterfaceClaims::adopt(std::mem::take(&mut taker.locks));
    let spawned = prepared.spawn(cfg, queues, move |w| dpdk_worker(eal, pool, w))?;
    took_over(taker, Some(reopened));
    Ok((spawned, outliers, macs, claims))
}

#[cfg(not(feature = "dpdk"))]
fn start_dpdk(_cfg: &Config) -> Result<Running> {
    bail!(
        "this weir was built without DPDK (cargo feature `dpdk`): rebuild with it (the default) \
         to use `backend: dpdk`"
    )
}

/// The EAL for `cfg`'s DPDK ports (probing none of them when `probe_later`: a weir taking
/// over opens them after the cut-over) with runtime file prefix `prefix`, and the mbuf pool.
#[cfg(feature = "dpdk")]
fn dpdk_eal(
    cfg: &Config,
    probe_later: bool,
    prefix: Option<String>,
) -> Result<(&'static dataplane::dpdk::Eal, &'static dataplane::dpdk::MbufPool)> {
    use dataplane::dpdk::{mbuf_headroom, Eal, EalConfig, MbufPool, SocketId};
    let hugepages = cfg.eal.hugepages.unwrap_or_else(hugepages_free);
    let headroom = mbuf_headroom();
    // The control thread (and DPDK's own threads) stay off the cores the workers are pinned to
    // when there are other cores to run on.
    let allowed: Vec<usize> =
        core_affinity::get_core_ids().unwrap_or_default().iter().map(|c| c.id).collect();
    let pinned: Vec<usize> = cfg.workers.iter().filter_map(|w| w.core).collect();
    let mut control: Vec<usize> = allowed.iter().copied().filter(|c| !pinned.contains(c)).collect();
    if control.is_empty() {
        control = allowed;
    }
    let mbuf_bytes = u64::from(cfg.mempool.buffer_bytes) + u64::from(headroom) + 256;
    let default_mb = u64::from(cfg.mempool.buffers) * mbuf_bytes / (1 << 20) + 128;
    let eal_cfg = EalConfig {
        control_cpus: control,
        pci: cfg.ports.iter().filter(|p| p.is_pci()).filter_map(|p| p.device.clone()).collect(),
        vdevs: cfg.ports.iter().filter(|p| !p.is_pci()).filter_map(|p| p.device.clone()).collect(),
        hugepages,
        memory_mb: cfg
            .eal
            .memory_mb
            .or_else(|| (!hugepages).then(|| u32::try_from(default_mb).unwrap_or(u32::MAX))),
        file_prefix: prefix,
        driver_paths: cfg.eal.driver_paths.clone(),
        log_level: Some(cfg.eal.log_level.clone().unwrap_or_else(|| "notice".into())),
        extra: cfg.eal.args.clone(),
        probe_later,
    };
    // A process has one EAL and one pool, for good: a weir whose takeover failed after they
    // came up starts cold on them.
    static UP: std::sync::OnceLock<(&'static Eal, &'static MbufPool)> = std::sync::OnceLock::new();
    if let Some(up) = UP.get() {
        return Ok(*up);
    }
    let eal = Eal::init(&eal_cfg).context("starting DPDK")?;
    let data_room = cfg
        .mempool
        .buffer_bytes
        .checked_add(headroom)
        .context("mempool.buffer_bytes plus DPDK's headroom exceeds 65535")?;
    let pool = MbufPool::create(
        eal,
        "weir",
        cfg.mempool.buffers,
        cfg.mempool.cache_buffers,
        data_room,
        SocketId::ANY,
    )
    .with_context(|| {
        format!(
            "mbuf pool on {} (set eal.hugepages, eal.memory_mb or mempool.buffers)",
            if hugepages { "hugepages" } else { "normal pages" }
        )
    })?;
    tracing::info!(
        mbufs = cfg.mempool.buffers,
        bytes_each = data_room,
        hugepages,
        "mbuf pool on {}",
        if hugepages { "hugepages" } else { "normal pages (--no-huge)" }
    );
    Ok(*UP.get_or_init(|| (eal, pool)))
}

/// A DPDK worker's start, on its own thread: registered with the EAL (an lcore id, mempool
/// caches) for as long as it runs.
#[cfg(feature = "dpdk")]
fn dpdk_worker(
    eal: &'static dataplane::dpdk::Eal,
    pool: &'static dataplane::dpdk::MbufPool,
    w: usize,
) -> Result<(&'static dataplane::dpdk::MbufPool, Box<dyn Any>)> {
    let lcore =
        eal.register_thread().with_context(|| format!("worker {w}: registering with the EAL"))?;
    tracing::debug!(worker = w, lcore = lcore.lcore().0, "registered with the EAL");
    Ok((pool, Box::new(lcore) as Box<dyn Any>))
}

/// A running dataplane of DPDK ports; its outlier detection as `outliers` left it, or blank.
#[cfg(feature = "dpdk")]
fn dpdk_running(
    cfg: &Config,
    spawned: Spawned,
    pool: &'static dataplane::dpdk::MbufPool,
    ports: super::dpdk::DpdkPorts,
    claims: Option<crate::claim::InterfaceClaims>,
    outliers: Option<OutlierDetector>,
    macs: Vec<[u8; 6]>,
) -> Running {
    Running {
        stop: spawned.stop,
        threads: std::sync::Mutex::new(spawned.threads),
        stats: spawned.stats,
        port_names: cfg.ports.iter().map(|p| p.name.clone()).collect(),
        buffers: Buffers::Dpdk(pool),
        outliers: std::sync::Mutex::new(
            outliers.unwrap_or_else(|| outlier_detector(cfg, &spawned.mesh.load())),
        ),
        mesh: spawned.mesh,
        claims,
        dpdk_ports: std::sync::Mutex::new(Some(ports)),
        port_macs: macs,
    }
}

#[cfg(feature = "dpdk")]
fn start_dpdk(cfg: &Config) -> Result<Running> {
    let (eal, pool) = dpdk_eal(cfg, false, cfg.eal.file_prefix.clone())?;
    let mut ports = super::dpdk::DpdkPorts::new(eal, pool, cfg, cfg.eal.file_prefix.clone())?;
    let mut queues = super::dpdk::PortQueues::new();
    ports.open(&mut queues, |_| true)?;
    let queues: Vec<_> = queues.into_iter().map(Option::unwrap_or_default).collect();
    let macs: Vec<[u8; 6]> = ports.macs().into_iter().map(Option::unwrap_or_default).collect();
    let spawned =
        prepare_workers(cfg, &macs)?.spawn(cfg, queues, move |w| dpdk_worker(eal, pool, w))?;
    Ok(dpdk_running(cfg, spawned, pool, ports, None, None, macs))
}

/// Whether the system has hugepages reserved and free, of any size.
#[cfg(feature = "dpdk")]
fn hugepages_free() -> bool {
    let Ok(dir) = std::fs::read_dir("/sys/kernel/mm/hugepages") else { return false };
    dir.flatten().any(|e| {
        std::fs::read_to_string(e.path().join("free_hugepages"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    })
}

/// The workers, started.
struct Spawned {
    stop: Arc<StopSignal>,
    threads: Vec<JoinHandle<()>>,
    stats: Vec<Arc<WorkerStats>>,
    mesh: Arc<SharedMesh>,
}

/// The workers' pipelines, built and not yet running: a hot restart fills their flow tables
/// before they start.
pub(crate) struct Prepared<B: dataplane::buf::PacketBuf> {
    /// One per worker.
    pub pipelines: Vec<Pipeline<B>>,
    mesh: Arc<SharedMesh>,
    /// By worker: the loop counters to go on from (a hot restart), by name.
    carried_loops: Vec<std::collections::BTreeMap<String, u64>>,
}

/// Builds the FIB from the ports' addresses and MACs, the mesh, and one pipeline per worker.
pub(crate) fn prepare_workers<B: dataplane::buf::PacketBuf>(
    cfg: &Config,
    macs: &[[u8; 6]],
) -> Result<Prepared<B>> {
    let mut addrs = Vec::new();
    for (p, mac) in cfg.ports.iter().zip(macs) {
        let mut pa = PortAddrs {
            mac: *mac,
            ipv4: Vec::new(),
            ipv6: Vec::new(),
            mtu: p.mtu_bytes,
            mac_shared: p.device.as_deref().is_some_and(|d| d.starts_with("net_tap")),
        };
        for n in &p.addresses {
            match n {
                IpNet::V4(n) => pa.ipv4.push(*n),
                IpNet::V6(n) => pa.ipv6.push(*n),
            }
        }
        addrs.push(pa);
    }
    let port_index = |name: &str| -> Result<u8> {
        match cfg.ports.iter().position(|p| p.name == name) {
            Some(i) => Ok(u8::try_from(i)?),
            None => bail!("no port named `{name}`"),
        }
    };
    let mut routes = Vec::new();
    for r in &cfg.routes {
        routes.push(StaticRoute { prefix: r.prefix, port: port_index(&r.port)?, via: r.via });
    }
    let mut statics: Vec<(IpAddr, u8, [u8; 6])> = Vec::new();
    for n in &cfg.neighbors {
        statics.push((n.ip, port_index(&n.port)?, n.mac));
    }
    let fib = Arc::new(Fib::build(addrs, &routes).context("building the FIB")?);
    let snapshot = mesh_snapshot(cfg, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mesh =
        SharedMesh::new(snapshot, cfg.mesh.max_endpoints, cfg.mesh.max_services, cfg.workers.len());
    let bus = NeighborBus::new(cfg.workers.len(), cfg.neighbor.inbox_updates);
    let ms = 1_000_000u64;
    let pcfg = PipelineConfig {
        neighbor_capacity: cfg.neighbor.capacity_entries,
        pending_capacity: cfg.neighbor.pending_packets,
        neighbor_timers: NeighborTimers {
            stale_after_ns: cfg.neighbor.reachable_ms.saturating_mul(ms),
            expire_after_ns: cfg.neighbor.expire_ms.saturating_mul(ms),
            probe_timeout_ns: cfg.neighbor.retry_ms.saturating_mul(ms),
        },
        resolve_timeout_ns: cfg.neighbor.resolve_timeout_ms.saturating_mul(ms),
        resolve_retry_ns: cfg.neighbor.retry_ms.saturating_mul(ms),
        icmp_errors_per_sec: cfg.icmp.errors_per_sec,
        icmp_error_burst: cfg.icmp.burst,
    };
    let pipelines = (0..cfg.workers.len())
        .map(|w| {
            Pipeline::new(w, Arc::clone(&fib), Arc::clone(&bus), pcfg, &statics)
                .with_mesh(mesh_engine(cfg, w, &mesh))
        })
        .collect();
    Ok(Prepared { pipelines, mesh, carried_loops: Vec::new() })
}

impl<B: dataplane::buf::PacketBuf + Send + 'static> Prepared<B> {
    /// Starts one pinned worker per configured core over `queues[port][worker]`. `init` runs
    /// first on each worker's own thread and gives it its buffer source, and a guard that lives
    /// as long as the worker (an EAL registration, say). Returns once every worker has started,
    /// or the first worker's error.
    fn spawn<P, S, F>(self, cfg: &Config, queues: Vec<Vec<P>>, init: F) -> Result<Spawned>
    where
        P: PacketIo<Buf = B> + Send + 'static,
        S: BufSource<B> + 'static,
        F: Fn(usize) -> Result<(S, Box<dyn Any>)> + Send + Sync + 'static,
    {
        let workers = cfg.workers.len();
        let Prepared { pipelines, mesh, carried_loops } = self;
        let rings: Arc<[Arc<HandoffRing<B>>]> = (0..workers)
            .map(|_| Arc::new(HandoffRing::new(cfg.mesh.handoff_ring_packets)))
            .collect::<Vec<_>>()
            .into();
        let idle_of = |w: usize| match cfg.workers[w].idle.unwrap_or(cfg.idle.policy) {
            IdlePolicyName::BusyPoll => IdlePolicy::BusyPoll,
            IdlePolicyName::Adaptive => IdlePolicy::Adaptive {
                empty_polls: cfg.idle.empty_polls,
                sleep_ms: cfg.idle.sleep_ms,
            },
        };
        // Hand queue w of every port to worker w.
        let mut per_worker: Vec<Vec<P>> = (0..workers).map(|_| Vec::new()).collect();
        for qs in queues {
            for (w, q) in qs.into_iter().enumerate() {
                if let Some(mine) = per_worker.get_mut(w) {
                    mine.push(q);
                }
            }
        }
        let stop = Arc::new(StopSignal::new().context("the workers' stop signal")?);
        let init = Arc::new(init);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let mut threads = Vec::new();
        let mut stats = Vec::new();
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        for (w, (ports, pipeline)) in per_worker.into_iter().zip(pipelines).enumerate() {
            let st = Arc::new(WorkerStats::new(ports.len()));
            stats.push(Arc::clone(&st));
            let rings = Arc::clone(&rings);
            let core = cfg.workers[w].core;
            let idle = idle_of(w);
            let stop = Arc::clone(&stop);
            let init = Arc::clone(&init);
            let ready = ready_tx.clone();
            let carried = carried_loops.get(w).cloned();
            let core_id = core.and_then(|c| cores.iter().find(|id| id.id == c).copied());
            let h = std::thread::Builder::new()
                .name(format!("weir-worker-{w}"))
                .spawn(move || {
                    if let Some(id) = core_id {
                        if !core_affinity::set_for_current(id) {
                            tracing::warn!(worker = w, core = id.id, "could not pin worker");
                        }
                    }
                    let (source, _guard) = match init(w) {
                        Ok(v) => v,
                        Err(e) => {
                            let _ = ready.send(Err(format!("{e:#}")));
                            return;
                        }
                    };
                    tracing::info!(worker = w, core = ?core_id.map(|c| c.id), "worker started");
                    let mut worker = Worker::new(w, ports, source, pipeline, idle, st);
                    if let Some(c) = carried {
                        worker.carry_loop_counters(|name| c.get(name).copied().unwrap_or(0));
                    }
                    worker.set_handoff_rings(rings);
                    let _ = ready.send(Ok(()));
                    worker.run(&stop);
                })
                .context("spawning a worker")?;
            threads.push(h);
        }
        drop(ready_tx);
        let mut spawned = Spawned { stop, threads, stats, mesh };
        for _ in 0..workers {
            let outcome = ready_rx
                .recv_timeout(std::time::Duration::from_secs(30))
                .unwrap_or_else(|_| Err("a worker did not start within 30 s".into()));
            if let Err(e) = outcome {
                spawned.stop.stop();
                for h in spawned.threads.drain(..) {
                    let _ = h.join();
                }
                bail!("{e}");
            }
        }
        Ok(spawned)
    }
}
