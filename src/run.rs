//! Starting the dataplane from a configuration: the mempool, the ports' queues, the FIB and one
//! pinned worker per configured core; stopping it and reporting its counters.

use crate::config::{Backend, Config, IdlePolicyName, TxModeName};
use anyhow::{bail, Context, Result};
use dataplane::fib::{Fib, PortAddrs, StaticRoute};
use dataplane::io::afpacket::{AfPacketConfig, AfPacketPort, TxMode};
use dataplane::io::tap::{create_tap, TapConfig, TapQueue};
use dataplane::io::{PacketIo, PortStats};
use dataplane::mempool::{Mempool, MempoolConfig, PoolBuf, PoolCache};
use dataplane::mesh::engine::{MeshEngine, MeshSettings, SharedMesh};
use dataplane::mesh::health::{OutlierDetector, OutlierSettings};
use dataplane::mesh::model::MeshSnapshot;
use dataplane::neigh::{NeighborBus, NeighborTimers};
use dataplane::pipeline::{DropReason, Pipeline, PipelineConfig};
use dataplane::ring::HandoffRing;
use dataplane::worker::{BufSource, IdlePolicy, StopSignal, Worker, WorkerStats};
use ipnet::IpNet;
use std::any::Any;
use std::net::IpAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

/// The path of the first field where `a` and `b` differ (`ports[1].mtu_bytes`), if any.
pub fn first_difference(a: &serde_json::Value, b: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let (va, vb) = (x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null));
                first_difference(va, vb).map(|p| {
                    if p.is_empty() {
                        k.clone()
                    } else if p.starts_with('[') {
                        format!("{k}{p}")
                    } else {
                        format!("{k}.{p}")
                    }
                })
            })
        }
        (Value::Array(x), Value::Array(y)) => (0..x.len().max(y.len())).find_map(|i| {
            let (va, vb) = (x.get(i).unwrap_or(&Value::Null), y.get(i).unwrap_or(&Value::Null));
            first_difference(va, vb).map(|p| {
                if p.is_empty() || p.starts_with('[') {
                    format!("[{i}]{p}")
                } else {
                    format!("[{i}].{p}")
                }
            })
        }),
        _ => (a != b).then(String::new),
    }
}

/// What a reload from `old` to `new` changes in the mesh, for the log: services added, removed
/// or changed; endpoints added, removed, reweighted or their health changed, by cluster.
pub fn mesh_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let svc = |s: &crate::config::ServiceConfig| {
        format!(
            "{} {}:{}/{} -> {} ({})",
            s.name,
            s.vip,
            s.port,
            lower(&s.protocol),
            s.cluster,
            lower(&s.mode)
        )
    };
    for s in &new.services {
        match old.services.iter().find(|o| o.name == s.name) {
            None => out.push(format!("service added: {}", svc(s))),
            Some(o) if o != s => out.push(format!("service changed: {} (was {})", svc(s), svc(o))),
            Some(_) => {}
        }
    }
    for o in old.services.iter().filter(|o| !new.services.iter().any(|s| s.name == o.name)) {
        out.push(format!("service removed: {}", svc(o)));
    }
    for c in &new.clusters {
        let before = old.clusters.iter().find(|o| o.name == c.name);
        if before.is_none() {
            out.push(format!("cluster added: {} ({} endpoints)", c.name, c.endpoints.len()));
        }
        let old_eps = before.map(|b| b.endpoints.as_slice()).unwrap_or_default();
        for e in &c.endpoints {
            let addr = std::net::SocketAddr::new(e.address, e.port);
            match old_eps.iter().find(|o| o.address == e.address && o.port == e.port) {
                None if before.is_some() => {
                    out.push(format!("{}: endpoint added: {addr} weight {}", c.name, e.weight));
                }
                Some(o) if o.weight != e.weight => out.push(format!(
                    "{}: endpoint {addr} reweighted {} -> {}",
                    c.name, o.weight, e.weight
                )),
                Some(o) if o.healthy != e.healthy => out.push(format!(
                    "{}: endpoint {addr} {}",
                    c.name,
                    if e.healthy { "healthy" } else { "unhealthy (out of service)" }
                )),
                _ => {}
            }
        }
        for o in old_eps {
            if !c.endpoints.iter().any(|e| e.address == o.address && e.port == o.port) {
                let addr = std::net::SocketAddr::new(o.address, o.port);
                out.push(format!("{}: endpoint removed: {addr}", c.name));
            }
        }
    }
    for o in old.clusters.iter().filter(|o| !new.clusters.iter().any(|c| c.name == o.name)) {
        out.push(format!("cluster removed: {}", o.name));
    }
    out
}

/// A configuration enum as the file spells it.
fn lower(v: &impl std::fmt::Debug) -> String {
    format!("{v:?}").to_lowercase()
}

/// The services of `cfg` and their endpoints, one line each, for the log at start.
pub fn mesh_lines(cfg: &Config) -> Vec<String> {
    cfg.services
        .iter()
        .map(|s| {
            let eps: Vec<String> = cfg
                .clusters
                .iter()
                .find(|c| c.name == s.cluster)
                .map(|c| {
                    c.endpoints
                        .iter()
                        .map(|e| {
                            let mut t = format!(
                                "{} w{}",
                                std::net::SocketAddr::new(e.address, e.port),
                                e.weight
                            );
                            if !e.healthy {
                                t.push_str(" (out of service)");
                            }
                            t
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "service {} {}:{}/{} {} -> cluster {}: {}",
                s.name,
                s.vip,
                s.port,
                lower(&s.protocol),
                lower(&s.mode),
                s.cluster,
                eps.join(", ")
            )
        })
        .collect()
}

/// A worker's loop counters at one moment (see [`Running::runtime_counters`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuntimeCounters {
    /// Loop iterations.
    pub polls: u64,
    /// Iterations that received frames.
    pub bursts: u64,
    /// Frames received.
    pub packets: u64,
    /// Cycles in iterations that received or sent frames.
    pub busy_cycles: u64,
    /// Cycles in empty iterations and asleep.
    pub idle_cycles: u64,
    /// Sleeps in `poll(2)`.
    pub sleeps: u64,
}

impl RuntimeCounters {
    /// What happened between `since` and `self`, as JSON.
    pub fn window_json(&self, since: &RuntimeCounters, worker: usize) -> serde_json::Value {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let (polls, bursts, packets) = (
            d(self.polls, since.polls),
            d(self.bursts, since.bursts),
            d(self.packets, since.packets),
        );
        let (busy, idle) =
            (d(self.busy_cycles, since.busy_cycles), d(self.idle_cycles, since.idle_cycles));
        let ratio = |a: u64, b: u64| if b > 0 { a as f64 / b as f64 } else { 0.0 };
        serde_json::json!({
            "worker": worker, "polls": polls, "bursts": bursts, "packets": packets,
            "packets_per_burst": ratio(packets, bursts),
            "cycles_per_packet": ratio(busy, packets),
            "busy_cycles": busy, "idle_cycles": idle,
            "busy_share": ratio(busy, busy + idle),
            "sleeps": d(self.sleeps, since.sleeps),
        })
    }
}

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
}

/// The buffers the ports receive into.
enum Buffers {
    /// weir's own pool (af_packet, TAP).
    Native(&'static Mempool),
    /// A DPDK mbuf pool.
    #[cfg(feature = "dpdk")]
    Dpdk(&'static dataplane::dpdk::MbufPool),
}

/// A running dataplane.
pub struct Running {
    stop: Arc<StopSignal>,
    threads: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// Per-worker counters.
    pub stats: Vec<Arc<WorkerStats>>,
    /// Port names, by port number.
    pub port_names: Vec<String>,
    buffers: Buffers,
    /// The mesh configuration the workers share.
    mesh: Arc<SharedMesh>,
    /// Passive outlier detection (control thread only).
    outliers: std::sync::Mutex<OutlierDetector>,
    /// The locks on the interfaces, held while running.
    claims: Option<crate::claim::InterfaceClaims>,
    /// DPDK ports, by port number: stopped and closed when `Running` drops, after the workers.
    #[cfg(feature = "dpdk")]
    dpdk_ports: Vec<dataplane::dpdk::Port>,
}

/// Starts the workers. Returns once every queue is open and every worker is running. Refuses
/// to start on an interface another weir holds (see [`crate::claim`]).
pub fn start(cfg: &Config) -> Result<Running> {
    let claims = crate::claim::claim(&crate::config::host_interfaces(cfg))?;
    let mut running = match cfg.ports.first().map(|p| p.backend) {
        Some(Backend::Dpdk) => start_dpdk(cfg),
        _ => start_native(cfg),
    }?;
    running.claims = Some(claims);
    Ok(running)
}

fn start_native(cfg: &Config) -> Result<Running> {
    let workers = cfg.workers.len();
    let pool = Mempool::new(MempoolConfig {
        buffers: cfg.mempool.buffers,
        data_room: cfg.mempool.buffer_bytes,
        headroom: cfg.mempool.headroom_bytes,
    })
    .context("mempool")?;

    // Open every port's queues: queues[port][worker].
    let mut queues: Vec<Vec<NativeQueue>> = Vec::new();
    let mut macs = Vec::new();
    let fanout_base = u16::try_from(std::process::id() & 0x7fff).unwrap_or(1);
    for (i, p) in cfg.ports.iter().enumerate() {
        let iface = p.interface.clone().unwrap_or_else(|| p.name.clone());
        let (qs, mac) = match p.backend {
            Backend::AfPacket => {
                let a = &p.af_packet;
                let mut qs = Vec::new();
                for _ in 0..workers {
                    let ac = AfPacketConfig {
                        iface: iface.clone(),
                        block_size: a.block_bytes,
                        block_count: a.blocks,
                        block_timeout_ms: a.block_timeout_ms,
                        tx_frames: a.tx_frames,
                        tx_mode: match a.tx_mode {
                            TxModeName::Ring => TxMode::Ring,
                            TxModeName::Sendmmsg => TxMode::Sendmmsg,
                        },
                        fanout: (workers > 1)
                            .then(|| fanout_base.wrapping_add(u16::try_from(i).unwrap_or(0))),
                        qdisc_bypass: a.qdisc_bypass,
                        promiscuous: a.promiscuous,
                    };
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
                let mac = p.mac.unwrap_or([0x02, 0x77, 0x65, 0x69, 0x72, idx]);
                (qs.into_iter().map(NativeQueue::Tap).collect(), mac)
            }
            Backend::Dpdk => bail!("port `{}`: DPDK and native ports cannot be mixed", p.name),
        };
        queues.push(qs);
        macs.push(mac);
    }
    let spawned = spawn_workers(cfg, queues, &macs, move |_| {
        Ok((PoolCache::new(pool), Box::new(()) as Box<dyn Any>))
    })?;
    Ok(Running {
        stop: spawned.stop,
        threads: std::sync::Mutex::new(spawned.threads),
        stats: spawned.stats,
        port_names: cfg.ports.iter().map(|p| p.name.clone()).collect(),
        buffers: Buffers::Native(pool),
        mesh: spawned.mesh,
        outliers: std::sync::Mutex::new(outlier_detector(cfg)),
        claims: None,
        #[cfg(feature = "dpdk")]
        dpdk_ports: Vec::new(),
    })
}

#[cfg(not(feature = "dpdk"))]
fn start_dpdk(_cfg: &Config) -> Result<Running> {
    bail!(
        "this weir was built without DPDK (cargo feature `dpdk`): rebuild with it (the default) \
         to use `backend: dpdk`"
    )
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

#[cfg(feature = "dpdk")]
fn start_dpdk(cfg: &Config) -> Result<Running> {
    use dataplane::dpdk::{mbuf_headroom, Eal, EalConfig, MbufPool, Port, PortSettings, SocketId};
    let workers = cfg.workers.len();
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
        file_prefix: cfg.eal.file_prefix.clone(),
        driver_paths: cfg.eal.driver_paths.clone(),
        log_level: Some(cfg.eal.log_level.clone().unwrap_or_else(|| "notice".into())),
        extra: cfg.eal.args.clone(),
    };
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
    let mut ports = Vec::new();
    let mut queues = Vec::new();
    let mut macs = Vec::new();
    for p in &cfg.ports {
        let device = p.device.as_deref().unwrap_or_default();
        let settings = PortSettings {
            queues: u16::try_from(workers).context("too many workers")?,
            rx_descriptors: p.dpdk.rx_descriptors,
            tx_descriptors: p.dpdk.tx_descriptors,
            rss: p.dpdk.rss,
            promiscuous: p.dpdk.promiscuous,
            mtu: p.mtu_bytes,
            mac: p.mac,
        };
        let (port, qs) = Port::open(eal, device, &settings, pool)
            .with_context(|| format!("port `{}`", p.name))?;
        macs.push(port.mac());
        ports.push(port);
        queues.push(qs);
    }
    let spawned = spawn_workers(cfg, queues, &macs, move |w| {
        let lcore = eal
            .register_thread()
            .with_context(|| format!("worker {w}: registering with the EAL"))?;
        tracing::debug!(worker = w, lcore = lcore.lcore().0, "registered with the EAL");
        Ok((pool, Box::new(lcore) as Box<dyn Any>))
    })?;
    Ok(Running {
        stop: spawned.stop,
        threads: std::sync::Mutex::new(spawned.threads),
        stats: spawned.stats,
        port_names: cfg.ports.iter().map(|p| p.name.clone()).collect(),
        buffers: Buffers::Dpdk(pool),
        mesh: spawned.mesh,
        outliers: std::sync::Mutex::new(outlier_detector(cfg)),
        claims: None,
        dpdk_ports: ports,
    })
}

/// A DPDK port's own view: driver, link, `rte_eth_stats`, and the extended counters that are
/// not zero.
#[cfg(feature = "dpdk")]
fn device_json(port: &dataplane::dpdk::Port) -> serde_json::Value {
    use serde_json::json;
    let st = port.stats().unwrap_or_default();
    let xstats: serde_json::Map<String, serde_json::Value> = port
        .xstats()
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, v)| *v != 0)
        .map(|(k, v)| (k, json!(v)))
        .collect();
    json!({
        "driver": port.driver(),
        "link": port.link().to_string(),
        "queues": port.queues(),
        "rss": port.rss(),
        "ipackets": st.ipackets, "opackets": st.opackets, "ibytes": st.ibytes,
        "obytes": st.obytes, "imissed": st.imissed, "ierrors": st.ierrors,
        "oerrors": st.oerrors, "rx_nombuf": st.rx_nombuf,
        "xstats": xstats,
    })
}

/// The mesh snapshot a configuration describes; endpoint ids carry over from `previous`.
pub fn mesh_snapshot(
    cfg: &Config,
    previous: Option<&MeshSnapshot>,
) -> Result<MeshSnapshot, dataplane::mesh::model::MeshError> {
    mesh_snapshot_with(cfg, previous, |_| true)
}

/// [`mesh_snapshot`], with `healthy(id)` saying which endpoints passive checks keep in service.
fn mesh_snapshot_with(
    cfg: &Config,
    previous: Option<&MeshSnapshot>,
    healthy: impl Fn(u32) -> bool,
) -> Result<MeshSnapshot, dataplane::mesh::model::MeshError> {
    use crate::config::{GoneName, ModeName, PolicyName, ProtocolName};
    use dataplane::mesh::model::{
        proto, ClusterSpec, Encap, EndpointSpec, MeshCapacity, Mode, OnEndpointGone, Policy,
        ServiceSpec,
    };
    let services: Vec<ServiceSpec> = cfg
        .services
        .iter()
        .map(|s| ServiceSpec {
            name: s.name.clone(),
            vip: s.vip,
            port: s.port,
            proto: match s.protocol {
                ProtocolName::Tcp => proto::TCP,
                ProtocolName::Udp => proto::UDP,
            },
            cluster: s.cluster.clone(),
            mode: match s.mode {
                ModeName::Nat => Mode::Nat,
                ModeName::Dnat => Mode::Dnat,
                ModeName::Dsr => Mode::Dsr(match s.encap {
                    crate::config::EncapName::Ipip => Encap::IpIp,
                    crate::config::EncapName::Gue => Encap::Gue { port: s.gue_port },
                }),
            },
        })
        .collect();
    let clusters: Vec<ClusterSpec> = cfg
        .clusters
        .iter()
        .map(|c| ClusterSpec {
            name: c.name.clone(),
            policy: match c.policy {
                PolicyName::Maglev => Policy::Maglev,
                PolicyName::RoundRobin => Policy::RoundRobin,
                PolicyName::Random => Policy::Random,
                PolicyName::LeastRequest => Policy::LeastRequest,
            },
            maglev_table_size: c.maglev_table_size,
            on_endpoint_gone: match c.on_endpoint_gone {
                GoneName::Drain => OnEndpointGone::Drain,
                GoneName::Reset => OnEndpointGone::Reset,
            },
            endpoints: c
                .endpoints
                .iter()
                .map(|e| EndpointSpec {
                    addr: e.address,
                    port: e.port,
                    weight: e.weight,
                    healthy: e.healthy,
                })
                .collect(),
        })
        .collect();
    let cap = MeshCapacity {
        services: cfg.mesh.max_services,
        clusters: cfg.mesh.max_clusters,
        endpoints: cfg.mesh.max_endpoints,
    };
    MeshSnapshot::build(&services, &clusters, cap, previous, healthy)
}

fn outlier_detector(cfg: &Config) -> OutlierDetector {
    let m = &cfg.mesh;
    OutlierDetector::new(
        OutlierSettings {
            consecutive_failures: m.outlier_consecutive_failures,
            base_ejection: std::time::Duration::from_millis(m.outlier_base_ejection_ms),
            max_ejection: std::time::Duration::from_millis(m.outlier_max_ejection_ms),
            max_ejection_percent: m.outlier_max_ejection_percent,
        },
        m.max_endpoints,
    )
}

/// A worker's mesh engine for `cfg`.
fn mesh_engine(cfg: &Config, worker: usize, shared: &Arc<SharedMesh>) -> MeshEngine {
    use dataplane::mesh::flow::{FlowTimeouts, WhenFull};
    let m = &cfg.mesh;
    let ms = 1_000_000u64;
    let settings = MeshSettings {
        flow_capacity: m.flows_per_worker,
        timeouts: FlowTimeouts {
            syn_ns: m.tcp_syn_timeout_ms.saturating_mul(ms),
            established_ns: m.tcp_established_timeout_ms.saturating_mul(ms),
            closing_ns: m.tcp_closing_timeout_ms.saturating_mul(ms),
            datagram_ns: m.udp_timeout_ms.saturating_mul(ms),
        },
        when_full: match m.when_full {
            crate::config::WhenFullName::DropNew => WhenFull::DropNew,
            crate::config::WhenFullName::EvictEmbryonic => WhenFull::EvictEmbryonic,
        },
        snat_ports: (m.snat_port_first, m.snat_port_last),
        endpoints: m.max_endpoints,
        clusters: m.max_clusters,
        reset_unknown: m.unknown_segment == crate::config::UnknownSegmentName::Reset,
    };
    let workers = u16::try_from(cfg.workers.len()).unwrap_or(u16::MAX);
    MeshEngine::new(u16::try_from(worker).unwrap_or(0), workers, &settings, Arc::clone(shared))
}

/// The workers, started.
struct Spawned {
    stop: Arc<StopSignal>,
    threads: Vec<JoinHandle<()>>,
    stats: Vec<Arc<WorkerStats>>,
    mesh: Arc<SharedMesh>,
}

/// Builds the FIB from the ports' addresses and MACs, then starts one pinned worker per
/// configured core over `queues[port][worker]`. `init` runs first on each worker's own thread and
/// gives it its buffer source, and a guard that lives as long as the worker (an EAL
/// registration, say). Returns once every worker has started, or the first worker's error.
fn spawn_workers<P, S, F>(
    cfg: &Config,
    queues: Vec<Vec<P>>,
    macs: &[[u8; 6]],
    init: F,
) -> Result<Spawned>
where
    P: PacketIo + Send + 'static,
    S: BufSource<P::Buf> + 'static,
    F: Fn(usize) -> Result<(S, Box<dyn Any>)> + Send + Sync + 'static,
{
    let workers = cfg.workers.len();
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
    let rings: Arc<[Arc<HandoffRing<P::Buf>>]> = (0..workers)
        .map(|_| Arc::new(HandoffRing::new(cfg.mesh.handoff_ring_packets)))
        .collect::<Vec<_>>()
        .into();
    let bus = NeighborBus::new(workers, cfg.neighbor.inbox_updates);
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
    let idle_of = |w: usize| match cfg.workers[w].idle.unwrap_or(cfg.idle.policy) {
        IdlePolicyName::BusyPoll => IdlePolicy::BusyPoll,
        IdlePolicyName::Adaptive => {
            IdlePolicy::Adaptive { empty_polls: cfg.idle.empty_polls, sleep_ms: cfg.idle.sleep_ms }
        }
    };

    // Hand queue w of every port to worker w.
    let mut per_worker: Vec<Vec<P>> = (0..workers).map(|_| Vec::new()).collect();
    for qs in queues {
        for (w, q) in qs.into_iter().enumerate() {
            per_worker[w].push(q);
        }
    }
    let stop = Arc::new(StopSignal::new().context("the workers' stop signal")?);
    let init = Arc::new(init);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let mut threads = Vec::new();
    let mut stats = Vec::new();
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    for (w, ports) in per_worker.into_iter().enumerate() {
        let st = Arc::new(WorkerStats::new(ports.len()));
        stats.push(Arc::clone(&st));
        let pipeline = Pipeline::new(w, Arc::clone(&fib), Arc::clone(&bus), pcfg, &statics)
            .with_mesh(mesh_engine(cfg, w, &mesh));
        let rings = Arc::clone(&rings);
        let core = cfg.workers[w].core;
        let idle = idle_of(w);
        let stop = Arc::clone(&stop);
        let init = Arc::clone(&init);
        let ready = ready_tx.clone();
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

impl Drop for Running {
    fn drop(&mut self) {
        // Ports (DPDK's) close after this, with no worker left polling them.
        self.stop();
    }
}

impl Running {
    /// Applies the mesh part of a new configuration (services, clusters, endpoints): validated
    /// first, in effect at each worker's next poll; flows keep their endpoints. Anything else
    /// that differs from the running configuration is refused: it needs a restart.
    pub fn reload(&self, running: &Config, new: &Config) -> Result<String> {
        let mut a = running.clone();
        let mut b = new.clone();
        for c in [&mut a, &mut b] {
            c.services.clear();
            c.clusters.clear();
        }
        if a != b {
            let field = first_difference(
                &serde_json::to_value(&a).unwrap_or_default(),
                &serde_json::to_value(&b).unwrap_or_default(),
            )
            .unwrap_or_default();
            bail!(
                "`{field}` differs from the running configuration: only services and clusters \
                 change without a restart"
            );
        }
        let previous = self.mesh.load();
        let outliers = self.outliers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let snap = mesh_snapshot_with(new, Some(&previous), |id| !outliers.is_ejected(id))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let changes = mesh_changes(running, new);
        let summary = format!(
            "{} services, {} clusters, {} endpoints (generation {}){}",
            snap.service_list.len(),
            snap.clusters.len(),
            snap.endpoints().count(),
            snap.generation,
            if changes.is_empty() {
                "; no change".to_owned()
            } else {
                format!("; {}", changes.join("; "))
            }
        );
        self.mesh.store(snap);
        Ok(summary)
    }

    /// Passive health: ejects endpoints whose connects keep failing and brings back those whose
    /// ejection is over, rebuilding the mesh from `cfg` when that changes who takes new flows.
    /// Logs each ejection (cluster, endpoint, failures in a row, for how long) and each return.
    /// Returns whether anything changed.
    pub fn check_health(&self, cfg: &Config) -> bool {
        let mut outliers = self.outliers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let previous = self.mesh.load();
        let clusters = || -> Vec<Vec<u32>> {
            previous.clusters.iter().map(|c| c.member_ids().collect()).collect()
        };
        let before: Vec<(u32, bool, u32)> = previous
            .endpoints()
            .map(|e| (e.id, outliers.is_ejected(e.id), self.mesh.health.run(e.id)))
            .collect();
        let now = std::time::Instant::now();
        if !outliers.check(&self.mesh.health, now, clusters) {
            return false;
        }
        let Ok(snap) = mesh_snapshot_with(cfg, Some(&previous), |id| !outliers.is_ejected(id))
        else {
            return false;
        };
        for (id, was, failures) in before {
            let Some(e) = previous.endpoint(id) else { continue };
            let endpoint = format!("{}:{}", e.addr, e.port);
            let cluster = cfg
                .clusters
                .iter()
                .find(|c| c.endpoints.iter().any(|x| x.address == e.addr && x.port == e.port))
                .map_or("?", |c| c.name.as_str());
            match (was, outliers.is_ejected(id)) {
                (false, true) => tracing::warn!(
                    cluster,
                    %endpoint,
                    consecutive_failures = failures,
                    ejected_for_ms = outliers
                        .ejected_until(id)
                        .map_or(0, |t| t.saturating_duration_since(now).as_millis()),
                    ejections = outliers.ejections(id),
                    "endpoint ejected: its connects keep failing"
                ),
                (true, false) => tracing::info!(
                    cluster,
                    %endpoint,
                    "endpoint back from ejection: it takes new flows again"
                ),
                _ => {}
            }
        }
        self.mesh.store(snap);
        true
    }

    /// Per-endpoint health and load, for the report.
    fn endpoints_json(&self) -> serde_json::Value {
        use serde_json::json;
        let snap = self.mesh.load();
        let outliers = self.outliers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let list: Vec<_> = snap
            .endpoints()
            .map(|e| {
                let (failures, successes) = self.mesh.health.totals(e.id);
                json!({
                    "address": e.addr.to_string(), "port": e.port, "weight": e.weight,
                    "ejected": outliers.is_ejected(e.id), "ejections": outliers.ejections(e.id),
                    "connects_failed": failures, "connects_ok": successes,
                    "active_flows": self.mesh.active_flows(e.id),
                })
            })
            .collect();
        json!(list)
    }

    /// Stops the workers and waits for them; their final counters are then in `stats`.
    pub fn stop(&self) {
        self.stop.stop();
        let mut threads = self.threads.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for h in threads.drain(..) {
            let _ = h.join();
        }
    }

    /// Starts (or ends) draining: new flows are refused, existing ones carry on.
    pub fn set_draining(&self, on: bool) {
        self.mesh.draining.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether weir drains.
    pub fn draining(&self) -> bool {
        self.mesh.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Flows in the workers' tables, as last published.
    pub fn flows(&self) -> u64 {
        self.stats.iter().map(|w| w.counters.flows.load(std::sync::atomic::Ordering::Relaxed)).sum()
    }

    /// The mesh the workers use.
    pub fn mesh_snapshot(&self) -> Arc<MeshSnapshot> {
        self.mesh.load()
    }

    /// The generation of the mesh the workers use (each reload and ejection makes one).
    pub fn generation(&self) -> u64 {
        self.mesh.load().generation
    }

    /// Per cluster of `cfg` (the running configuration), its endpoints: configured weight and
    /// health, whether they take new flows, outlier state, and their handshake counters.
    pub fn clusters_json(&self, cfg: &Config) -> serde_json::Value {
        use serde_json::json;
        let snap = self.mesh.load();
        let outliers = self.outliers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        let clusters: Vec<_> = cfg
            .clusters
            .iter()
            .map(|c| {
                let live = snap.clusters.iter().find(|l| l.name == c.name);
                let endpoints: Vec<_> = c
                    .endpoints
                    .iter()
                    .map(|e| {
                        let id = snap
                            .endpoints()
                            .find(|x| x.addr == e.address && x.port == e.port)
                            .map(|x| x.id);
                        let eligible = live.is_some_and(|l| {
                            l.eligible.iter().any(|x| x.addr == e.address && x.port == e.port)
                        });
                        let (failed, ok) = id.map_or((0, 0), |id| self.mesh.health.totals(id));
                        let returns_in_ms = id
                            .and_then(|id| outliers.ejected_until(id))
                            .map(|t| t.saturating_duration_since(now).as_millis());
                        json!({
                            "address": e.address.to_string(), "port": e.port,
                            "weight": e.weight, "healthy": e.healthy,
                            "takes_new_flows": eligible,
                            "ejected": id.is_some_and(|id| outliers.is_ejected(id)),
                            "ejections": id.map_or(0, |id| outliers.ejections(id)),
                            "returns_in_ms": returns_in_ms,
                            "connects_ok": ok, "connects_failed": failed,
                            "active_flows": id.map_or(0, |id| self.mesh.active_flows(id)),
                        })
                    })
                    .collect();
                json!({"name": c.name, "policy": c.policy, "endpoints": endpoints})
            })
            .collect();
        json!({"generation": snap.generation, "clusters": clusters})
    }

    /// The services of `cfg` as the workers have them.
    pub fn services_json(&self, cfg: &Config) -> serde_json::Value {
        use serde_json::json;
        let snap = self.mesh.load();
        let services: Vec<_> = cfg
            .services
            .iter()
            .map(|s| {
                let live = snap.service_list.iter().find(|x| x.name == s.name);
                let mut j = json!({
                    "name": s.name, "vip": s.vip.to_string(), "port": s.port,
                    "protocol": s.protocol, "cluster": s.cluster, "mode": s.mode,
                    "active": live.is_some(),
                });
                if let Some(live) = live {
                    service_counters(&mut j, &self.mesh.service_totals(live.id));
                }
                j
            })
            .collect();
        json!({"generation": snap.generation, "services": services})
    }

    /// Per worker, its loop counters now (VPP's `show runtime`): the admin API keeps windows
    /// of them.
    pub fn runtime_counters(&self) -> Vec<RuntimeCounters> {
        use std::sync::atomic::Ordering::Relaxed;
        self.stats
            .iter()
            .map(|w| RuntimeCounters {
                polls: w.counters.polls.load(Relaxed),
                bursts: w.counters.bursts.load(Relaxed),
                packets: w.counters.packets.load(Relaxed),
                busy_cycles: w.counters.busy_cycles.load(Relaxed),
                idle_cycles: w.counters.idle_cycles.load(Relaxed),
                sleeps: w.counters.sleeps.load(Relaxed),
            })
            .collect()
    }

    /// Counters as JSON: per port (summed over workers), per worker, drops by reason.
    pub fn report_json(&self) -> serde_json::Value {
        use serde_json::json;
        use std::sync::atomic::Ordering::Relaxed;
        let mut ports = serde_json::Map::new();
        for (i, name) in self.port_names.iter().enumerate() {
            let mut t = PortStats::default();
            for w in &self.stats {
                if let Some(p) = w.ports.get(i) {
                    t.add(&p.snapshot());
                }
            }
            let p: serde_json::Map<_, _> =
                t.values().map(|(info, v)| (info.name.to_owned(), json!(v))).collect();
            ports.insert(name.clone(), serde_json::Value::Object(p));
        }
        let mut drops = serde_json::Map::new();
        // Frames a port dropped for their size never reach a worker's pipeline: they are
        // counted under the pipeline's reason here.
        let oversize: u64 = self
            .stats
            .iter()
            .flat_map(|w| w.ports.iter())
            .map(|p| p.rx_oversize.load(Relaxed))
            .sum();
        // Frames a DPDK device refused never reach weir at all: its count.
        #[cfg(feature = "dpdk")]
        let rx_errors: u64 =
            self.dpdk_ports.iter().filter_map(|p| p.stats().ok()).map(|s| s.ierrors).sum();
        #[cfg(not(feature = "dpdk"))]
        let rx_errors = 0u64;
        for &r in DropReason::ALL {
            let mut n: u64 = self.stats.iter().map(|w| w.drops[r as usize].load(Relaxed)).sum();
            match r {
                DropReason::Oversize => n += oversize,
                DropReason::RxErrors => n += rx_errors,
                _ => {}
            }
            if n > 0 {
                drops.insert(r.as_str().to_owned(), json!(n));
            }
        }
        let workers: Vec<_> = self
            .stats
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let mut j = serde_json::Map::new();
                j.insert("worker".into(), json!(i));
                for (info, v) in w.counters.values() {
                    j.insert(info.name.into(), json!(v));
                }
                let c = &w.counters;
                let (packets, bursts) = (c.packets.load(Relaxed), c.bursts.load(Relaxed));
                let busy = c.busy_cycles.load(Relaxed);
                let ratio = |a: u64, b: u64| if b > 0 { a as f64 / b as f64 } else { 0.0 };
                j.insert("avg_burst".into(), json!(ratio(packets, bursts)));
                j.insert("cycles_per_packet".into(), json!(ratio(busy, packets)));
                j.insert(
                    "drops".into(),
                    json!(w.drops.iter().map(|d| d.load(Relaxed)).sum::<u64>()),
                );
                serde_json::Value::Object(j)
            })
            .collect();
        #[cfg(feature = "dpdk")]
        for (name, port) in self.port_names.iter().zip(&self.dpdk_ports) {
            if let Some(p) = ports.get_mut(name) {
                let dev = device_json(port);
                // DPDK queues count frames; the device counts bytes.
                p["rx_bytes"] = dev["ibytes"].clone();
                p["tx_bytes"] = dev["obytes"].clone();
                p["device"] = dev;
            }
        }
        let mempool = match self.buffers {
            Buffers::Native(pool) => json!({
                "kind": "native", "buffers": pool.capacity(), "hugepages": pool.hugepages(),
                "exhausted": pool.exhausted(), "available": pool.available(),
            }),
            #[cfg(feature = "dpdk")]
            Buffers::Dpdk(pool) => json!({
                "kind": "dpdk", "buffers": pool.capacity(), "exhausted": pool.exhausted(),
                "available": pool.available(), "in_use": pool.in_use(),
            }),
        };
        let snap = self.mesh.load();
        let services: Vec<_> = snap
            .service_list
            .iter()
            .map(|s| {
                let mut j = json!({
                    "name": s.name, "vip": s.vip.to_string(), "port": s.port,
                    "protocol": dataplane::mesh::model::proto_name(s.proto),
                });
                service_counters(&mut j, &self.mesh.service_totals(s.id));
                j
            })
            .collect();
        json!({
            "ports": ports, "workers": workers, "drops": drops, "mempool": mempool,
            "services": services, "endpoints": self.endpoints_json(),
        })
    }

    /// Counters as a human-readable table.
    pub fn report_text(&self) -> String {
        report_text(&self.report_json())
    }
}

/// Adds a service's counters to its JSON: each declared counter, and its active flows.
fn service_counters(j: &mut serde_json::Value, t: &dataplane::mesh::engine::ServiceTotals) {
    for (info, v) in t.values() {
        j[info.name] = serde_json::json!(v);
    }
    j["flows_active"] = serde_json::json!(t.flows_opened.saturating_sub(t.flows_closed));
}

/// Counters as a human-readable table, from their JSON ([`Running::report_json`], or `/stats`
/// of the admin API).
pub fn report_text(j: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<12} {:>12} {:>10} {:>12} {:>10}",
        "port", "rx_packets", "rx_drop", "tx_packets", "tx_drop"
    );
    if let Some(ports) = j["ports"].as_object() {
        for (name, p) in ports {
            let n = |k: &str| p[k].as_u64().unwrap_or(0);
            let _ = writeln!(
                s,
                "{:<12} {:>12} {:>10} {:>12} {:>10}",
                name,
                n("rx_packets"),
                n("rx_dropped"),
                n("tx_packets"),
                n("tx_dropped")
            );
        }
    }
    let _ = writeln!(
        s,
        "\n{:<7} {:>10} {:>8} {:>10} {:>9} {:>10} {:>8} {:>8}",
        "worker", "packets", "bursts", "avg_burst", "cyc/pkt", "forwarded", "replies", "drops"
    );
    if let Some(ws) = j["workers"].as_array() {
        for w in ws {
            let n = |k: &str| w[k].as_u64().unwrap_or(0);
            let f = |k: &str| w[k].as_f64().unwrap_or(0.0);
            let _ = writeln!(
                s,
                "{:<7} {:>10} {:>8} {:>10.1} {:>9.0} {:>10} {:>8} {:>8}",
                n("worker"),
                n("packets"),
                n("bursts"),
                f("avg_burst"),
                f("cycles_per_packet"),
                n("forwarded"),
                n("replies"),
                n("drops")
            );
        }
    }
    let _ = writeln!(s, "\ndrops by reason:");
    match j["drops"].as_object() {
        Some(d) if !d.is_empty() => {
            for (k, v) in d {
                let _ = writeln!(s, "  {k:<26} {v}");
            }
        }
        _ => {
            let _ = writeln!(s, "  (none)");
        }
    }
    if let Some(ports) = j["ports"].as_object() {
        let devices: Vec<_> =
            ports.iter().filter_map(|(n, p)| Some((n, p.get("device")?))).collect();
        if !devices.is_empty() {
            let _ = writeln!(
                s,
                "\n{:<12} {:<14} {:<20} {:>11} {:>11} {:>8} {:>8} {:>8} {:>9}",
                "device",
                "driver",
                "link",
                "ipackets",
                "opackets",
                "imissed",
                "ierrors",
                "oerrors",
                "rx_nombuf"
            );
            for (name, d) in devices {
                let n = |k: &str| d[k].as_u64().unwrap_or(0);
                let _ = writeln!(
                    s,
                    "{:<12} {:<14} {:<20} {:>11} {:>11} {:>8} {:>8} {:>8} {:>9}",
                    name,
                    d["driver"].as_str().unwrap_or("?"),
                    d["link"].as_str().unwrap_or("?"),
                    n("ipackets"),
                    n("opackets"),
                    n("imissed"),
                    n("ierrors"),
                    n("oerrors"),
                    n("rx_nombuf")
                );
            }
        }
    }
    if let Some(ws) = j["workers"].as_array() {
        let sum = |k: &str| ws.iter().map(|w| w[k].as_u64().unwrap_or(0)).sum::<u64>();
        if sum("flows_opened") > 0 {
            let _ = writeln!(
                    s,
                    "\nmesh: {} flows live, {} opened, {} expired, {} evicted; {} packets translated to \
                     endpoints, {} back; {} handed to their flow's worker",
                    sum("flows"),
                    sum("flows_opened"),
                    sum("flows_expired"),
                    sum("flows_evicted"),
                    sum("mesh_forward"),
                    sum("mesh_reverse"),
                    sum("handed_off")
                );
        }
    }
    if let Some(eps) = j["endpoints"].as_array().filter(|e| !e.is_empty()) {
        let _ = writeln!(
            s,
            "\n{:<28} {:>6} {:>8} {:>11} {:>11} {:>9}",
            "endpoint", "weight", "ejected", "connects_ok", "failed", "ejections"
        );
        for e in eps {
            let n = |k: &str| e[k].as_u64().unwrap_or(0);
            let _ = writeln!(
                s,
                "{:<28} {:>6} {:>8} {:>11} {:>11} {:>9}",
                format!("{}:{}", e["address"].as_str().unwrap_or("?"), n("port")),
                n("weight"),
                if e["ejected"].as_bool().unwrap_or(false) { "yes" } else { "no" },
                n("connects_ok"),
                n("connects_failed"),
                n("ejections")
            );
        }
    }
    let m = &j["mempool"];
    let n = |k: &str| m[k].as_u64().unwrap_or(0);
    let _ = match m["kind"].as_str() {
        Some("dpdk") => writeln!(
            s,
            "\nmbuf pool: {} mbufs, {} free, {} allocation failures",
            n("buffers"),
            n("available"),
            n("exhausted")
        ),
        _ => writeln!(
            s,
            "\nmempool: {} buffers on {} pages, {} allocation failures",
            n("buffers"),
            if m["hugepages"].as_bool().unwrap_or(false) { "2 MiB huge" } else { "normal" },
            n("exhausted")
        ),
    };
    s
}
